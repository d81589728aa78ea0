//! `/api/v1/me`: the caller's data under the GDPR.
//!
//! **Export** (`POST /me/export`) starts a job that writes a zip archive: `data.json` (profile,
//! sessions, the audit entries the user is the actor of, team memberships, chat messages and reactions the user wrote, notifications, tasks
//! the user created or is assigned to, task comments the user wrote, time entries, focus
//! sessions, interruptions and goals, notes and note versions the user wrote, metadata of files
//! the user uploaded; times in unix milliseconds) and `files/<id>-<name>` with those files'
//! content. Nothing authored by others is included. `GET /me/exports/{id}` shows progress, an
//! `export.ready` event announces the end, `GET /me/exports/{id}/download` returns the archive.
//!
//! **Deletion** (`DELETE /me`, password confirmation). Erased: the user row (e-mail, username,
//! name, profile, password hash), sessions and refresh tokens (every token dies at once), team
//! and channel memberships, reactions, mentions, notifications of the user, notifications of
//! others that quote the user's name (about the user's messages), invitations addressed to the
//! user's e-mail, task assignments, time entries, focus sessions and goals, export archives,
//! and teams where the user was the only member (with their files and projects). Anonymized
//! (kept, author set to null): messages, task comments, tasks and projects created, activity
//! entries, notes and note versions, files uploaded to teams that live on, channels, rooms and
//! invites created, and security audit entries (which also lose their IP and user agent). A
//! sole owner of a team that has other members must transfer ownership first (409).

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use convene_auth::verify_password;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::{Column, FromRow, Row};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, Event, Origin};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AuthUser};
use crate::files;
use crate::state::AppState;
use crate::time::from_ms;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_export))
        .routes(routes!(get_export))
        .routes(routes!(download_export))
        .routes(routes!(delete_me))
}

fn exports_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("exports")
}

fn archive_path(data_dir: &Path, id: &str) -> PathBuf {
    exports_dir(data_dir).join(format!("{id}.zip"))
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Export {
    id: String,
    /// `pending`, `ready` or `failed`.
    status: String,
    /// 0-100.
    progress: i64,
    /// Archive size in bytes, once ready.
    size: Option<i64>,
    #[schema(value_type = chrono::DateTime<chrono::Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    created_at: i64,
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    #[serde(serialize_with = "serialize_opt_ms")]
    finished_at: Option<i64>,
}

fn serialize_opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&ms.map(from_ms), s)
}

async fn load_export(db: &Db, id: &str, user_id: &str) -> ApiResult<Export> {
    sqlx::query_as(
        "SELECT id, status, progress, size, created_at, finished_at FROM data_exports WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(ApiError::NotFound("export"))
}

/// Start an export of everything about the caller; returns the job.
#[utoipa::path(post, path = "/export", tag = "gdpr", security(("bearer" = [])),
    responses((status = 202, body = Export), (status = 409, body = convene_proto::ErrorBody)))]
async fn start_export(State(state): State<AppState>, auth: AuthUser) -> ApiResult<(StatusCode, AppJson<Export>)> {
    let running: Option<(String,)> =
        sqlx::query_as("SELECT id FROM data_exports WHERE user_id = $1 AND status = 'pending'")
            .bind(&auth.user_id)
            .fetch_optional(state.db.pool())
            .await?;
    if running.is_some() {
        return Err(ApiError::conflict(
            "export_in_progress",
            "an export is already being prepared",
        ));
    }
    let id = new_id();
    sqlx::query(
        "INSERT INTO data_exports (id, user_id, status, progress, created_at) VALUES ($1, $2, 'pending', 0, $3)",
    )
    .bind(&id)
    .bind(&auth.user_id)
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    let job = load_export(&state.db, &id, &auth.user_id).await?;
    let (task_state, user_id) = (state.clone(), auth.user_id);
    tokio::spawn(async move {
        let outcome = run_export(&task_state, &id, &user_id).await;
        let (status, size) = match outcome {
            Ok(size) => ("ready", Some(size)),
            Err(e) => {
                tracing::error!(error = %e, export_id = %id, "export failed");
                ("failed", None)
            }
        };
        let saved = sqlx::query(
            "UPDATE data_exports SET status = $1, progress = 100, size = $2, finished_at = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(size)
        .bind(now_ms())
        .bind(&id)
        .execute(task_state.db.pool())
        .await;
        match saved {
            // The account was deleted meanwhile: its archive must not outlive it.
            Ok(done) if done.rows_affected() == 0 => {
                let _ = tokio::fs::remove_file(archive_path(&task_state.config.data_dir, &id)).await;
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, export_id = %id, "export state not saved"),
        }
        task_state.events.publish(
            [user_id.as_str()],
            &format!("export.{status}"),
            &json!({ "id": id, "status": status }),
        );
    });
    Ok((StatusCode::ACCEPTED, AppJson(job)))
}

/// Rows of `sql` (with `$1` = the user) as JSON objects, columns as they are stored.
async fn rows(db: &Db, sql: &str, user_id: &str) -> ApiResult<Value> {
    let rows = sqlx::query(sql).bind(user_id).fetch_all(db.pool()).await?;
    let objects = rows
        .iter()
        .map(|row| {
            let mut obj = Map::new();
            for col in row.columns() {
                let i = col.ordinal();
                let v = if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                    json!(v)
                } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                    json!(v)
                } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                    json!(v)
                } else {
                    Value::Null
                };
                obj.insert(col.name().to_owned(), v);
            }
            Value::Object(obj)
        })
        .collect();
    Ok(Value::Array(objects))
}

async fn set_progress(db: &Db, id: &str, progress: i64) -> ApiResult<()> {
    sqlx::query("UPDATE data_exports SET progress = $1 WHERE id = $2")
        .bind(progress)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Gathers the user's data and writes the archive; returns its size.
async fn run_export(state: &AppState, id: &str, user_id: &str) -> ApiResult<i64> {
    let db = &state.db;
    let q = |sql: &'static str| rows(db, sql, user_id);
    let data = json!({
        "format": "convene-export/1",
        "exported_at": now_ms(),
        "profile": q("SELECT id, email, username, display_name, bio, location, timezone, avatar_url, company_name, \
                      created_at, updated_at FROM users WHERE id = $1").await?,
        "sessions": q("SELECT id, created_at, revoked_at FROM sessions WHERE user_id = $1 ORDER BY id").await?,
        "security_log": q("SELECT id, team_id, action, target_type, target_id, metadata, ip, user_agent, created_at \
                           FROM audit_log WHERE actor_id = $1 ORDER BY id").await?,
        "teams": q("SELECT m.team_id, t.name, m.role, m.joined_at FROM team_members m JOIN teams t ON t.id = m.team_id \
                    WHERE m.user_id = $1 ORDER BY m.team_id").await?,
        "channels": q("SELECT channel_id, joined_at, notify, muted FROM chat_members WHERE user_id = $1 \
                       ORDER BY channel_id").await?,
        "messages": q("SELECT id, channel_id, body, reply_to, created_at, edited_at FROM chat_messages \
                       WHERE author_id = $1 AND deleted_at IS NULL ORDER BY id").await?,
        "reactions": q("SELECT message_id, emoji, created_at FROM chat_reactions WHERE user_id = $1 \
                        ORDER BY created_at").await?,
        "notifications": q("SELECT id, kind, reason, title, message, read_at, created_at FROM notifications \
                            WHERE user_id = $1 ORDER BY id").await?,
        "focus_sessions": q("SELECT id, team_id, task_id, focus_type, phase, planned_minutes, status, started_at, \
                             paused_ms, ended_at, focus_ms, notes FROM focus_sessions WHERE user_id = $1 ORDER BY id").await?,
        "focus_interruptions": q("SELECT i.session_id, i.reason, i.created_at FROM focus_interruptions i \
                                  JOIN focus_sessions s ON s.id = i.session_id WHERE s.user_id = $1 ORDER BY i.id").await?,
        "focus_goals": q("SELECT day, target_minutes FROM focus_goals WHERE user_id = $1 ORDER BY day").await?,
        "notes": q("SELECT id, team_id, project_id, title, body, version, created_at, updated_at FROM notes \
                    WHERE created_by = $1 ORDER BY id").await?,
        "note_versions": q("SELECT note_id, version, title, body, edited_at FROM note_versions WHERE edited_by = $1 \
                            ORDER BY note_id, version").await?,
        "tasks_created": q("SELECT id, project_id, number, title, description, priority, due_date, created_at, \
                            updated_at FROM tasks WHERE created_by = $1 ORDER BY id").await?,
        "task_assignments": q("SELECT task_id FROM task_assignees WHERE user_id = $1 ORDER BY task_id").await?,
        "task_comments": q("SELECT id, task_id, body, created_at, edited_at FROM task_comments \
                            WHERE author_id = $1 ORDER BY id").await?,
        "time_entries": q("SELECT id, task_id, started_at, ended_at, note, created_at FROM time_entries \
                           WHERE user_id = $1 ORDER BY id").await?,
        "files": q("SELECT id, team_id, project_id, task_id, name, content_type, size, sha256, created_at FROM files \
                    WHERE uploaded_by = $1 ORDER BY id").await?,
    });
    set_progress(db, id, 50).await?;
    let data_dir = state.config.data_dir.clone();
    let archive = archive_path(&data_dir, id);
    let size = tokio::task::spawn_blocking(move || write_archive(&data_dir, &archive, &data))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("export archive: {e}")))?;
    Ok(i64::try_from(size).unwrap_or(i64::MAX))
}

fn write_archive(
    data_dir: &Path,
    archive: &Path,
    data: &Value,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    std::fs::create_dir_all(exports_dir(data_dir))?;
    let part = archive.with_extension("part");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&part)?);
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zip.start_file("data.json", options)?;
    zip.write_all(&serde_json::to_vec_pretty(data)?)?;
    for file in data["files"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (file["id"].as_str(), file["name"].as_str()) else {
            continue;
        };
        // Stored names are already free of path separators; the id keeps them unique.
        zip.start_file(format!("files/{id}-{name}"), options)?;
        let mut content = std::fs::File::open(files::blob_path(data_dir, id))?;
        std::io::copy(&mut content, &mut zip)?;
    }
    zip.finish()?;
    std::fs::rename(&part, archive)?;
    Ok(std::fs::metadata(archive)?.len())
}

/// An export job of the caller.
#[utoipa::path(get, path = "/exports/{id}", tag = "gdpr", security(("bearer" = [])),
    responses((status = 200, body = Export), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_export(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Export>> {
    Ok(AppJson(load_export(&state.db, &id, &auth.user_id).await?))
}

/// The archive of a finished export (zip); 409 while it is being written.
#[utoipa::path(get, path = "/exports/{id}/download", tag = "gdpr", security(("bearer" = [])),
    responses((status = 200, description = "The archive", content_type = "application/zip"),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn download_export(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<Response> {
    let job = load_export(&state.db, &id, &auth.user_id).await?;
    if job.status != "ready" {
        return Err(ApiError::conflict(
            "export_not_ready",
            format!("the export is {}", job.status),
        ));
    }
    let file = tokio::fs::File::open(archive_path(&state.config.data_dir, &id))
        .await
        .map_err(|e| ApiError::Internal(format!("export archive: {e}")))?;
    let mut res = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    if let Some(size) = job.size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"convene-export-{id}.zip\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteMe {
    /// The account's password, as confirmation.
    password: String,
}

/// Delete the caller's account: personal data erased, authored content anonymized, every token
/// revoked. 409 while the caller is the only owner of a team with other members.
#[utoipa::path(delete, path = "", tag = "gdpr", security(("bearer" = [])), request_body = DeleteMe,
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody)))]
async fn delete_me(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<DeleteMe>,
) -> ApiResult<StatusCode> {
    let user = auth.user_id;
    let (hash, email): (String, String) = sqlx::query_as("SELECT password_hash, email FROM users WHERE id = $1")
        .bind(&user)
        .fetch_one(state.db.pool())
        .await?;
    let password = req.password;
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash).unwrap_or(false))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !matches {
        return Err(ApiError::Forbidden("the password does not match"));
    }
    // Teams the user owns alone: with other members they need a new owner first; without, they go.
    let owned: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT t.id, t.name, (SELECT COUNT(*) FROM team_members o WHERE o.team_id = t.id AND o.user_id <> $1) \
         FROM teams t JOIN team_members m ON m.team_id = t.id AND m.user_id = $1 AND m.role = 'owner' \
         WHERE NOT EXISTS (SELECT 1 FROM team_members x WHERE x.team_id = t.id AND x.role = 'owner' AND x.user_id <> $1)",
    )
    .bind(&user)
    .fetch_all(state.db.pool())
    .await?;
    let blocking: Vec<&str> = owned.iter().filter(|t| t.2 > 0).map(|t| t.1.as_str()).collect();
    if !blocking.is_empty() {
        return Err(ApiError::conflict(
            "sole_owner",
            format!("transfer ownership of these teams first: {}", blocking.join(", ")),
        ));
    }
    let mut tx = state.db.pool().begin().await?;
    let mut blobs = Vec::new();
    for (team_id, _, _) in &owned {
        blobs.extend(files::team_file_ids(&mut *tx, team_id).await?);
        sqlx::query("DELETE FROM teams WHERE id = $1")
            .bind(team_id)
            .execute(&mut *tx)
            .await?;
    }
    let exports: Vec<(String,)> = sqlx::query_as("SELECT id FROM data_exports WHERE user_id = $1")
        .bind(&user)
        .fetch_all(&mut *tx)
        .await?;
    // Others' notifications about the user's messages carry the user's name in their title.
    sqlx::query("DELETE FROM notifications WHERE message_id IN (SELECT id FROM chat_messages WHERE author_id = $1)")
        .bind(&user)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM team_invites WHERE email = $1")
        .bind(&email)
        .execute(&mut *tx)
        .await?;
    // The deletion is on record without anyone's name on it: the foreign key nulls the actor,
    // and the account's events lose their IP and user agent.
    audit::anonymize(&mut *tx, &user).await?;
    let event = Event::new("account.deleted", Some(&user), "user", &user);
    audit::record(&mut *tx, &Origin::default(), event).await?;
    // Cascades erase what is the user's; authored content keeps its row with the author nulled.
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(&user)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    files::remove_blobs(&state.config.data_dir, &blobs).await;
    for (id,) in exports {
        let _ = tokio::fs::remove_file(archive_path(&state.config.data_dir, &id)).await;
    }
    tracing::info!("account deleted");
    Ok(StatusCode::NO_CONTENT)
}
