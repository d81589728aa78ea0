//! `/api/v1/files`: team files. Uploads are multipart, streamed to disk under
//! `<data dir>/files/<id>` (never a name the client chose) while their SHA-256 is computed and
//! their size checked against `--max-upload-size` (413) and the team's quota (409). The content
//! type is sniffed from the bytes, not taken from the client. Downloads support single byte
//! ranges and send a sanitized `Content-Disposition: attachment`.
//!
//! Rules: team members see, list and download a team's files (others get 404); members,
//! admins and owners upload (guests only read); the uploader or an admin deletes.

pub(crate) mod range;

use std::path::PathBuf;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::FromRow;
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, Event, Origin};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::teams::{self, Role};
use crate::validate;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    // The upload enforces its own limit while streaming; the global 1 MiB body limit is for JSON.
    let upload = OpenApiRouter::new()
        .routes(routes!(upload_file))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes(routes!(list_files))
        .routes(routes!(usage))
        .routes(routes!(get_file, delete_file))
        .routes(routes!(download_file))
        .merge(upload)
}

/// Where file `id`'s content lives.
pub(crate) fn blob_path(data_dir: &std::path::Path, id: &str) -> PathBuf {
    data_dir.join("files").join(id)
}

/// Ids of a team's files, to remove their contents once the team is deleted.
pub(crate) async fn team_file_ids<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Any>,
    team_id: &str,
) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM files WHERE team_id = $1")
        .bind(team_id)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Removes stored contents of files whose rows are gone (after a team or account deletion).
pub(crate) async fn remove_blobs(data_dir: &std::path::Path, ids: &[String]) {
    for id in ids {
        if let Err(e) = tokio::fs::remove_file(blob_path(data_dir, id)).await {
            tracing::warn!(error = %e, file_id = %id, "file content not removed");
        }
    }
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct FileInfo {
    pub(crate) id: String,
    pub(crate) team_id: String,
    pub(crate) project_id: Option<String>,
    pub(crate) task_id: Option<String>,
    /// Display name (path components and control characters removed).
    pub(crate) name: String,
    /// Sniffed from the content.
    pub(crate) content_type: String,
    pub(crate) size: i64,
    /// Hex SHA-256 of the content.
    pub(crate) sha256: String,
    pub(crate) uploaded_by: Option<String>,
    #[schema(value_type = chrono::DateTime<chrono::Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    pub(crate) created_at: i64,
}

pub(crate) const FILE_SELECT: &str = "SELECT id, team_id, project_id, task_id, name, content_type, size, sha256, \
     uploaded_by, created_at FROM files";

/// File `id` and the caller's role in its team; 404 for non-members.
async fn load_file(db: &Db, id: &str, user_id: &str) -> ApiResult<(FileInfo, Role)> {
    let file: FileInfo = sqlx::query_as(&format!("{FILE_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("file"))?;
    let role = teams::member_role(db, &file.team_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("file"))?;
    Ok((file, role))
}

/// A display name from a client's file name: the last path component, without control
/// characters, at most 255 characters.
fn clean_name(raw: Option<&str>) -> String {
    let last = raw.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    let name = name.trim();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "file".to_owned()
    } else {
        name.to_owned()
    }
}

/// The content type of a file that starts with `head`.
fn sniff(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_owned();
    }
    // A cut in the middle of a multi-byte character at the end of `head` is still text.
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    if !head.is_empty() && text && !head.contains(&0) {
        "text/plain; charset=utf-8".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    team_id: String,
    project_id: Option<String>,
    task_id: Option<String>,
}

/// The multipart form of an upload.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the multipart form in the OpenAPI document only")]
pub(crate) struct UploadForm {
    /// The file; its name is kept for display, its content type is sniffed.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    file: String,
}

const SNIFF_BYTES: usize = 8192;

/// Upload a file to a team (multipart field `file`), streamed to disk.
#[utoipa::path(post, path = "/upload", tag = "files", security(("bearer" = [])), params(UploadQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, body = FileInfo), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 413, body = convene_proto::ErrorBody), (status = 415, body = convene_proto::ErrorBody)))]
async fn upload_file(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<UploadQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, AppJson<FileInfo>)> {
    let role = teams::member_role(&state.db, &q.team_id, &auth.user_id).await?;
    if role == Role::Guest {
        return Err(ApiError::Forbidden("guests may not upload files"));
    }
    let project_id = validate::text("project_id", q.project_id.as_deref(), 64)?;
    let task_id = validate::text("task_id", q.task_id.as_deref(), 64)?;
    // A file attached to a project or task must belong to that team's work; the task, if given,
    // decides the project.
    let project_id = match &task_id {
        Some(task) => {
            let found: Option<(String,)> = sqlx::query_as(
                "SELECT t.project_id FROM tasks t JOIN projects p ON p.id = t.project_id WHERE t.id = $1 AND p.team_id = $2",
            )
            .bind(task)
            .bind(&q.team_id)
            .fetch_optional(state.db.pool())
            .await?;
            let (task_project,) = found.ok_or_else(|| ApiError::field("task_id", "no such task in this team"))?;
            if project_id.as_ref().is_some_and(|p| p != &task_project) {
                return Err(ApiError::field("project_id", "the task belongs to another project"));
            }
            Some(task_project)
        }
        None => project_id,
    };
    if let Some(project) = &project_id {
        let found: Option<(String,)> = sqlx::query_as("SELECT id FROM projects WHERE id = $1 AND team_id = $2")
            .bind(project)
            .bind(&q.team_id)
            .fetch_optional(state.db.pool())
            .await?;
        found.ok_or_else(|| ApiError::field("project_id", "no such project in this team"))?;
    }
    let mut multipart = multipart
        .map_err(|_| ApiError::UnsupportedMediaType("expected `Content-Type: multipart/form-data`".to_owned()))?;
    // No overall limit on the body (the global request timeout skips this route,
    // `LONG_BODY_ROUTES`), but a stalled client is cut off.
    let stall = state.config.request_timeout;
    let mut field = loop {
        let next = tokio::time::timeout(stall, multipart.next_field()).await;
        match next.map_err(|_| ApiError::RequestTimeout)?.map_err(multipart_error)? {
            Some(f) if f.name() == Some("file") => break f,
            Some(_) => {}
            None => return Err(ApiError::field("file", "required")),
        }
    };
    let name = clean_name(field.file_name());
    let used = team_usage(&state.db, &q.team_id).await?;
    let room = state.config.team_storage_quota.saturating_sub(used);
    let limit = state.config.max_upload_size;

    let id = new_id();
    let dir = state.config.data_dir.join("files");
    tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
    let mut pending = Unfinished(dir.join(format!("{id}.part")));
    let mut out = tokio::fs::File::create(&pending.0).await.map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut size: u64 = 0;
    while let Some(chunk) = tokio::time::timeout(stall, field.chunk())
        .await
        .map_err(|_| ApiError::RequestTimeout)?
        .map_err(multipart_error)?
    {
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        if size > room {
            return Err(quota_exceeded());
        }
        if head.len() < SNIFF_BYTES {
            let take = chunk.len().min(SNIFF_BYTES - head.len());
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(io_error)?;
    }
    out.flush().await.map_err(io_error)?;
    out.sync_all().await.map_err(io_error)?;
    drop(out);
    let file = FileInfo {
        id,
        team_id: q.team_id,
        project_id,
        task_id,
        name,
        content_type: sniff(&head),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        sha256: format!("{:x}", hasher.finalize()),
        uploaded_by: Some(auth.user_id),
        created_at: now_ms(),
    };
    let blob = blob_path(&state.config.data_dir, &file.id);
    tokio::fs::rename(&pending.0, &blob).await.map_err(io_error)?;
    pending.0 = blob;
    // The quota check and the insert are one statement, so concurrent uploads cannot both
    // squeeze under it.
    let done = sqlx::query(&format!(
        "INSERT INTO files (id, team_id, project_id, task_id, name, content_type, size, sha256, uploaded_by, \
         created_at) SELECT $1, $2, $3, $4, $5, $6, CAST($7 AS BIGINT), $8, $9, CAST($10 AS BIGINT) \
         WHERE {} + CAST($7 AS BIGINT) <= CAST($11 AS BIGINT)",
        team_bytes("$2")
    ))
    .bind(&file.id)
    .bind(&file.team_id)
    .bind(&file.project_id)
    .bind(&file.task_id)
    .bind(&file.name)
    .bind(&file.content_type)
    .bind(file.size)
    .bind(&file.sha256)
    .bind(&file.uploaded_by)
    .bind(file.created_at)
    .bind(i64::try_from(state.config.team_storage_quota).unwrap_or(i64::MAX))
    .execute(state.db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(quota_exceeded());
    }
    pending.keep();
    Ok((StatusCode::CREATED, AppJson(file)))
}

/// A file being written: removed when dropped, so a failed upload, or one whose client went
/// away mid-stream (the handler is dropped), leaves nothing behind.
struct Unfinished(PathBuf);

impl Unfinished {
    fn keep(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(error = %e, "unfinished upload not removed");
        }
    }
}

pub(crate) fn quota_exceeded() -> ApiError {
    ApiError::conflict("quota_exceeded", "the team's storage quota would be exceeded")
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("file storage: {e}"))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest(e.body_text())
    }
}

/// SQL for the bytes the team `param` (a bind parameter) stores: its files and its rooms'
/// recordings.
fn team_bytes(param: &str) -> String {
    format!(
        "((SELECT COALESCE(SUM(size), 0) FROM files WHERE team_id = {param}) + \
         (SELECT COALESCE(SUM(r.size_bytes), 0) FROM recordings r JOIN rooms m ON m.id = r.room_id \
          WHERE m.team_id = {param}))"
    )
}

/// Bytes the team stores (files and recordings), against its storage quota.
pub(crate) async fn team_usage(db: &Db, team_id: &str) -> ApiResult<u64> {
    let (used,): (i64,) = sqlx::query_as(&format!("SELECT CAST({} AS BIGINT)", team_bytes("$1")))
        .bind(team_id)
        .fetch_one(db.pool())
        .await?;
    Ok(u64::try_from(used).unwrap_or(0))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    team_id: String,
    /// Only files of this project.
    project_id: Option<String>,
    /// Only files of this task.
    task_id: Option<String>,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// A team's files, oldest first; optionally those of one project or task.
#[utoipa::path(get, path = "", tag = "files", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Page<FileInfo>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_files(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<AppJson<Page<FileInfo>>> {
    teams::member_role(&state.db, &q.team_id, &auth.user_id).await?;
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    };
    let rows: Vec<FileInfo> = sqlx::query_as(&format!(
        "{FILE_SELECT} WHERE team_id = $1 AND (CAST($2 AS TEXT) IS NULL OR project_id = $2) \
         AND (CAST($3 AS TEXT) IS NULL OR task_id = $3) AND id > $4 ORDER BY id LIMIT $5"
    ))
    .bind(&q.team_id)
    .bind(&q.project_id)
    .bind(&q.task_id)
    .bind(page.after())
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(Page::from_rows(rows, page.limit(), |f| f.id.clone())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    team_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Usage {
    /// Files and recordings of the team's rooms.
    used_bytes: u64,
    quota_bytes: u64,
    max_upload_bytes: u64,
}

/// How much of its storage quota a team uses.
#[utoipa::path(get, path = "/usage", tag = "files", security(("bearer" = [])), params(UsageQuery),
    responses((status = 200, body = Usage), (status = 404, body = convene_proto::ErrorBody)))]
async fn usage(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<UsageQuery>,
) -> ApiResult<AppJson<Usage>> {
    teams::member_role(&state.db, &q.team_id, &auth.user_id).await?;
    Ok(AppJson(Usage {
        used_bytes: team_usage(&state.db, &q.team_id).await?,
        quota_bytes: state.config.team_storage_quota,
        max_upload_bytes: state.config.max_upload_size,
    }))
}

/// A file's metadata.
#[utoipa::path(get, path = "/{id}", tag = "files", security(("bearer" = [])),
    responses((status = 200, body = FileInfo), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_file(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<FileInfo>> {
    Ok(AppJson(load_file(&state.db, &id, &auth.user_id).await?.0))
}

/// Delete a file (its uploader, or a team admin or owner).
#[utoipa::path(delete, path = "/{id}", tag = "files", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_file(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (file, role) = load_file(&state.db, &id, &auth.user_id).await?;
    if !role.can_manage() && file.uploaded_by.as_deref() != Some(auth.user_id.as_str()) {
        return Err(ApiError::Forbidden(
            "only the uploader or a team admin may delete a file",
        ));
    }
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("DELETE FROM files WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let event = Event::new("file.deleted", Some(&auth.user_id), "file", &id)
        .team(&file.team_id)
        .metadata(serde_json::json!({ "name": file.name, "size": file.size }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    remove_blobs(&state.config.data_dir, &[id]).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `attachment` with an ASCII fallback name and the exact name in RFC 8187 form.
fn content_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// Download a file's content; honours a single `Range: bytes=` range (206, or 416).
#[utoipa::path(get, path = "/{id}/download", tag = "files", security(("bearer" = [])),
    responses((status = 200, description = "The content", content_type = "application/octet-stream"),
              (status = 206, description = "The requested range"),
              (status = 404, body = convene_proto::ErrorBody), (status = 416, body = convene_proto::ErrorBody)))]
async fn download_file(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (file, _) = load_file(&state.db, &id, &auth.user_id).await?;
    let size = u64::try_from(file.size).unwrap_or(0);
    let blob = tokio::fs::File::open(blob_path(&state.config.data_dir, &file.id))
        .await
        .map_err(io_error)?;
    let content_type =
        HeaderValue::from_str(&file.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut res = range::respond(blob, size, &headers, content_type, content_disposition(&file.name))
        .await
        .map_err(io_error)?;
    if res.status().is_success() {
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox; default-src 'none'"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
            h.insert(header::ETAG, v);
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_paths() {
        assert_eq!(clean_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_name(Some("..\\..\\boot.ini")), "boot.ini");
        assert_eq!(clean_name(Some("..")), "file");
        assert_eq!(clean_name(Some("a\u{0}b\nc.txt")), "abc.txt");
        assert_eq!(clean_name(None), "file");
    }

    #[test]
    fn dispositions_are_quoted_safely() {
        let v = content_disposition("a\"b\\c ü.txt");
        assert_eq!(
            v.to_str().unwrap(),
            "attachment; filename=\"a_b_c _.txt\"; filename*=UTF-8''a%22b%5Cc%20%C3%BC.txt"
        );
    }

    #[test]
    fn content_types_come_from_the_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff("héllo".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\0\x01\x02"), "application/octet-stream");
        assert_eq!(sniff(b""), "application/octet-stream");
    }
}
