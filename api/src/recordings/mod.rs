//! Room recordings: hosts start and stop them, everyone who may join the room lists them and
//! downloads their files.
//!
//! The media plane writes the files (`convene-recorder`, one per track plus `manifest.json`)
//! into `<data dir>/recordings/<id>/`; this module keeps the row (status, times), tells people
//! (`room.recording_*` on `/ws/events`, `recording_*` webhooks) and serves the files. A file is
//! only ever found through the manifest's list of names, never by a path from the request.
//!
//! Status: `recording` → `finished` (stopped, the room emptied, or the server shut down), or
//! `failed` (the recorder could not write). A recording still `recording` when the server
//! starts was cut short by a crash: it becomes `interrupted`; its files are kept and play up to
//! the crash.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use convene_proto::recording::{MANIFEST, Manifest, MediaKind};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::files::range;
use crate::pagination::Page;
use crate::rooms::{RecordingEnded, RecordingRefused, room_access};
use crate::state::AppState;
use crate::time::from_ms;
use crate::webhooks::{EventType, RoomEvent};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_recording))
        .routes(routes!(list_recordings))
        .routes(routes!(get_recording, delete_recording))
        .routes(routes!(stop_recording))
        .routes(routes!(download_file))
}

#[derive(Debug, Clone, FromRow)]
struct Row {
    id: String,
    room_id: String,
    started_by: Option<String>,
    status: String,
    error: Option<String>,
    started_at: i64,
    ended_at: Option<i64>,
    duration_ms: Option<i64>,
}

const COLUMNS: &str = "id, room_id, started_by, status, error, started_at, ended_at, duration_ms";

/// A recording.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Recording {
    id: String,
    room_id: String,
    started_by: Option<String>,
    /// `recording`, `finished`, `interrupted` (the server died while recording) or `failed`.
    status: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// Length so far (while recording) or in total.
    duration_ms: i64,
    /// The files (only on `GET /recordings/{id}`): one per recorded track, plus the manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<RecordingFile>>,
}

/// One file of a recording.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RecordingFile {
    /// Download it at `/api/v1/recordings/{id}/files/{name}`.
    name: String,
    size: u64,
    /// Absent for `manifest.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    track: Option<FileTrack>,
}

/// The track a file holds, from the manifest.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FileTrack {
    participant_id: String,
    participant_name: String,
    track_id: String,
    /// `audio` or `video`.
    kind: String,
    /// `camera`, `microphone`, `screen`, `screen_audio`.
    source: String,
    /// `opus` (Ogg) or `vp8` (WebM).
    codec: String,
    /// When the file starts, from the recording's start; lines tracks up.
    start_offset_ms: u64,
    /// When it ends (absent while recording or after a crash).
    end_offset_ms: Option<u64>,
}

impl Row {
    fn into_recording(self, files: Option<Vec<RecordingFile>>) -> Recording {
        let duration_ms = match (self.status.as_str(), self.duration_ms) {
            ("recording", _) | (_, None) => now_ms() - self.started_at,
            (_, Some(d)) => d,
        };
        Recording {
            id: self.id,
            room_id: self.room_id,
            started_by: self.started_by,
            status: self.status,
            error: self.error,
            started_at: from_ms(self.started_at),
            ended_at: self.ended_at.map(from_ms),
            duration_ms: duration_ms.max(0),
            files,
        }
    }
}

fn dir_of(state: &AppState, id: &str) -> PathBuf {
    state.config.data_dir.join("recordings").join(id)
}

async fn load(state: &AppState, id: &str) -> ApiResult<Row> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM recordings WHERE id = $1"))
        .bind(id)
        .fetch_optional(state.db.pool())
        .await?
        .ok_or(ApiError::NotFound("recording"))
}

/// The recording and the caller's (team, host) for its room; 404 for those who may not join it.
async fn load_visible(state: &AppState, id: &str, user_id: &str) -> ApiResult<(Row, String, bool)> {
    let row = load(state, id).await?;
    let (team, host) = room_access(state, &row.room_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("recording"))?;
    Ok((row, team, host))
}

/// Tells the room's audience and the team's webhooks.
async fn announce(state: &AppState, team_id: &str, kind: EventType, row: &Row) {
    let event = RoomEvent {
        kind,
        room_id: row.room_id.clone(),
        participant: None,
        at: now_ms(),
    };
    let data = json!({ "room_id": row.room_id, "recording_id": row.id, "status": row.status });
    if let Err(e) = crate::webhooks::publish_live(state, team_id, &event, &data).await {
        tracing::warn!(error = %e, "publishing recording activity failed");
    }
    if let Err(e) = crate::webhooks::emit(state, team_id, kind, data).await {
        tracing::warn!(error = %e, "queueing recording webhooks failed");
    }
}

/// Start recording the room's live session (hosts). Everyone in the room is told.
#[utoipa::path(post, path = "/rooms/{room_id}/recordings", tag = "recordings", security(("bearer" = [])),
    responses((status = 201, body = Recording), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody),
              (status = 409, description = "`already_recording`, `room_not_live` (nobody in it), `media_disabled` or \
                `quota_exceeded` (the team's files and recordings fill its storage quota)",
               body = convene_proto::ErrorBody)))]
async fn start_recording(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
) -> ApiResult<(StatusCode, AppJson<Recording>)> {
    let (team, host) = room_access(&state, &room_id, &auth.user_id).await?;
    if !host {
        return Err(ApiError::Forbidden("only hosts may record the room"));
    }
    let media = state.media.clone().ok_or_else(|| ApiError::Conflict {
        code: "media_disabled",
        message: "this server runs without the media plane".into(),
    })?;
    // A recording's size is known only once it ends: a team already at its quota may not start one.
    if crate::files::team_usage(&state.db, &team).await? >= state.config.team_storage_quota {
        return Err(crate::files::quota_exceeded());
    }
    let already = || ApiError::Conflict {
        code: "already_recording",
        message: "the room is being recorded already".into(),
    };
    let id = new_id();
    let started_at = now_ms();
    // The partial unique index makes this the one running recording of the room.
    sqlx::query(
        "INSERT INTO recordings (id, room_id, started_by, status, started_at) VALUES ($1, $2, $3, 'recording', $4)",
    )
    .bind(&id)
    .bind(&room_id)
    .bind(&auth.user_id)
    .bind(started_at)
    .execute(state.db.pool())
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => already(),
        other => other,
    })?;
    let dir = dir_of(&state, &id);
    let started = match tokio::fs::create_dir_all(&dir).await {
        Ok(()) => media
            .start_recording(&room_id, &id, dir.clone(), started_at)
            .await
            .map_err(|refused| match refused {
                RecordingRefused::AlreadyRecording => already(),
                RecordingRefused::NotLive => ApiError::Conflict {
                    code: "room_not_live",
                    message: "nobody is in the room".into(),
                },
                RecordingRefused::Unavailable => ApiError::Conflict {
                    code: "media_unavailable",
                    message: "the media plane is stopping".into(),
                },
            }),
        Err(e) => Err(ApiError::Internal(format!("recording storage: {e}"))),
    };
    if let Err(e) = started {
        sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(&id)
            .execute(state.db.pool())
            .await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        return Err(e);
    }
    let row = load(&state, &id).await?;
    announce(&state, &team, EventType::RecordingStarted, &row).await;
    Ok((StatusCode::CREATED, AppJson(row.into_recording(None))))
}

/// Marks a recording the media plane finished; idempotent (the stop request and the recorder's
/// own report may both arrive). Tells people once.
pub async fn finished(state: &AppState, ended: RecordingEnded) -> ApiResult<()> {
    let status = if ended.error.is_some() { "failed" } else { "finished" };
    let done = sqlx::query(
        "UPDATE recordings SET status = $1, error = $2, ended_at = $3, duration_ms = $4 \
         WHERE id = $5 AND status = 'recording'",
    )
    .bind(status)
    .bind(&ended.error)
    .bind(now_ms())
    .bind(i64::try_from(ended.duration_ms).unwrap_or(i64::MAX))
    .bind(&ended.recording_id)
    .execute(state.db.pool())
    .await?;
    // The size is set again on every report: the recorder's own comes after its files are done.
    record_size(state, &ended.recording_id).await?;
    if done.rows_affected() == 1 {
        let row = load(state, &ended.recording_id).await?;
        let team: Option<(String,)> = sqlx::query_as("SELECT team_id FROM rooms WHERE id = $1")
            .bind(&row.room_id)
            .fetch_optional(state.db.pool())
            .await?;
        if let Some((team,)) = team {
            announce(state, &team, EventType::RecordingFinished, &row).await;
        }
    }
    Ok(())
}

/// Stops every running recording and waits for its files (graceful shutdown).
pub async fn stop_all(state: &AppState) {
    let running: Result<Vec<Row>, _> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM recordings WHERE status = 'recording'"))
            .fetch_all(state.db.pool())
            .await;
    for row in running.unwrap_or_default() {
        if let Err(e) = stop(state, &row).await {
            tracing::warn!(error = %e, "stopping a recording at shutdown failed");
        }
    }
}

async fn stop(state: &AppState, row: &Row) -> ApiResult<()> {
    let ended = match &state.media {
        Some(media) => media.stop_recording(&row.room_id).await,
        None => None,
    };
    // `None`: the room ended meanwhile (its report finishes the row) or the media plane is gone.
    let ended = ended.unwrap_or_else(|| RecordingEnded {
        recording_id: row.id.clone(),
        duration_ms: u64::try_from(now_ms() - row.started_at).unwrap_or(0),
        error: None,
    });
    finished(state, ended).await
}

/// Stops the room's running recording and removes the files of all its recordings (the room is
/// being deleted; its rows go with it).
pub(crate) async fn delete_for_room(state: &AppState, room_id: &str) -> ApiResult<()> {
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM recordings WHERE room_id = $1"))
        .bind(room_id)
        .fetch_all(state.db.pool())
        .await?;
    for row in rows {
        if row.status == "recording" {
            stop(state, &row).await?;
        }
        if let Err(e) = tokio::fs::remove_dir_all(dir_of(state, &row.id)).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "removing a recording's files failed");
        }
    }
    Ok(())
}

/// Marks recordings cut short by a crash as `interrupted`; their duration is taken from the
/// files' last write. Run at startup, before the media plane.
pub async fn mark_interrupted(state: &AppState) -> ApiResult<()> {
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM recordings WHERE status = 'recording'"))
        .fetch_all(state.db.pool())
        .await?;
    for row in rows {
        let last_write = last_write_ms(&dir_of(state, &row.id)).await.unwrap_or(row.started_at);
        sqlx::query(
            "UPDATE recordings SET status = 'interrupted', ended_at = $1, duration_ms = $2 \
             WHERE id = $3 AND status = 'recording'",
        )
        .bind(last_write)
        .bind((last_write - row.started_at).max(0))
        .bind(&row.id)
        .execute(state.db.pool())
        .await?;
        record_size(state, &row.id).await?;
        tracing::warn!(recording = %row.id, "recording interrupted by a restart; files kept");
    }
    Ok(())
}

/// Stores the bytes of the recording's files (its share of the team's storage quota).
async fn record_size(state: &AppState, id: &str) -> ApiResult<()> {
    let mut size: u64 = 0;
    if let Ok(mut entries) = tokio::fs::read_dir(dir_of(state, id)).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            size += e.metadata().await.map_or(0, |m| if m.is_file() { m.len() } else { 0 });
        }
    }
    sqlx::query("UPDATE recordings SET size_bytes = $1 WHERE id = $2")
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(id)
        .execute(state.db.pool())
        .await?;
    Ok(())
}

async fn last_write_ms(dir: &Path) -> Option<i64> {
    let mut entries = tokio::fs::read_dir(dir).await.ok()?;
    let mut last = None;
    while let Ok(Some(e)) = entries.next_entry().await {
        let modified = e.metadata().await.ok()?.modified().ok()?;
        let ms = i64::try_from(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()?;
        last = last.max(Some(ms));
    }
    last
}

/// Stop the room's recording (hosts); answers once the files are finalized.
#[utoipa::path(post, path = "/recordings/{id}/stop", tag = "recordings", security(("bearer" = [])),
    responses((status = 200, body = Recording), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody),
              (status = 409, description = "`not_recording`: it ended already", body = convene_proto::ErrorBody)))]
async fn stop_recording(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Recording>> {
    let (row, _, host) = load_visible(&state, &id, &auth.user_id).await?;
    if !host {
        return Err(ApiError::Forbidden("only hosts may stop a recording"));
    }
    if row.status != "recording" {
        return Err(ApiError::Conflict {
            code: "not_recording",
            message: format!("the recording is {}", row.status),
        });
    }
    stop(&state, &row).await?;
    let row = load(&state, &id).await?;
    let files = files(&state, &row).await;
    Ok(AppJson(row.into_recording(Some(files))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRecordings {
    /// The room whose recordings to list.
    room: String,
    limit: Option<u32>,
    after: Option<String>,
}

/// A room's recordings, oldest first (anyone who may join the room).
#[utoipa::path(get, path = "/recordings", tag = "recordings", security(("bearer" = [])), params(ListRecordings),
    responses((status = 200, body = Page<Recording>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_recordings(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListRecordings>,
) -> ApiResult<AppJson<Page<Recording>>> {
    room_access(&state, &q.room, &auth.user_id).await?;
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM recordings WHERE room_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(&q.room)
    .bind(q.after.as_deref().unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(state.db.pool())
    .await?;
    let page = Page::from_rows(rows, limit, |r| r.id.clone());
    Ok(AppJson(Page {
        items: page.items.into_iter().map(|r| r.into_recording(None)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// A recording with its files and their sizes (anyone who may join the room).
#[utoipa::path(get, path = "/recordings/{id}", tag = "recordings", security(("bearer" = [])),
    responses((status = 200, body = Recording), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_recording(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Recording>> {
    let (row, _, _) = load_visible(&state, &id, &auth.user_id).await?;
    let files = files(&state, &row).await;
    Ok(AppJson(row.into_recording(Some(files))))
}

/// Delete a finished recording and its files (hosts).
#[utoipa::path(delete, path = "/recordings/{id}", tag = "recordings", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody),
              (status = 409, description = "`recording`: stop it first", body = convene_proto::ErrorBody)))]
async fn delete_recording(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (row, _, host) = load_visible(&state, &id, &auth.user_id).await?;
    if !host {
        return Err(ApiError::Forbidden("only hosts may delete a recording"));
    }
    if row.status == "recording" {
        return Err(ApiError::Conflict {
            code: "recording",
            message: "stop the recording first".into(),
        });
    }
    sqlx::query("DELETE FROM recordings WHERE id = $1 AND status <> 'recording'")
        .bind(&id)
        .execute(state.db.pool())
        .await?;
    if let Err(e) = tokio::fs::remove_dir_all(dir_of(&state, &id)).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, "removing a recording's files failed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The manifest's files with their current sizes, then the manifest itself.
async fn files(state: &AppState, row: &Row) -> Vec<RecordingFile> {
    let dir = dir_of(state, &row.id);
    let manifest = read_manifest(&dir).await;
    let mut out = Vec::new();
    for t in manifest.map(|m| m.tracks).unwrap_or_default() {
        let size = tokio::fs::metadata(dir.join(&t.file)).await.map_or(0, |m| m.len());
        out.push(RecordingFile {
            name: t.file,
            size,
            track: Some(FileTrack {
                participant_id: t.participant_id,
                participant_name: t.participant_name,
                track_id: t.track_id,
                kind: match t.kind {
                    MediaKind::Audio => "audio",
                    MediaKind::Video => "video",
                }
                .to_owned(),
                source: t.source,
                codec: t.codec,
                start_offset_ms: t.start_offset_ms,
                end_offset_ms: t.end_offset_ms,
            }),
        });
    }
    if let Ok(m) = tokio::fs::metadata(dir.join(MANIFEST)).await {
        out.push(RecordingFile {
            name: MANIFEST.to_owned(),
            size: m.len(),
            track: None,
        });
    }
    out
}

async fn read_manifest(dir: &Path) -> Option<Manifest> {
    let bytes = tokio::fs::read(dir.join(MANIFEST)).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Download one of a recording's files (anyone who may join the room); honours a single
/// `Range: bytes=` range (206, or 416). Only names the recording lists are served.
#[utoipa::path(get, path = "/recordings/{id}/files/{name}", tag = "recordings", security(("bearer" = [])),
    responses((status = 200, description = "The file", content_type = "application/octet-stream"),
              (status = 206, description = "The requested range"),
              (status = 404, body = convene_proto::ErrorBody), (status = 416, body = convene_proto::ErrorBody)))]
async fn download_file(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((id, name)): AppPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (row, _, _) = load_visible(&state, &id, &auth.user_id).await?;
    let dir = dir_of(&state, &row.id);
    let listed = name == MANIFEST
        || read_manifest(&dir)
            .await
            .is_some_and(|m| m.tracks.iter().any(|t| t.file == name));
    if !listed {
        return Err(ApiError::NotFound("file"));
    }
    let file = tokio::fs::File::open(dir.join(&name))
        .await
        .map_err(|_| ApiError::NotFound("file"))?;
    let size = file.metadata().await.map_err(io_error)?.len();
    let content_type = match Path::new(&name).extension().and_then(|e| e.to_str()) {
        Some("ogg") => "audio/ogg",
        Some("webm") => "video/webm",
        _ => "application/json",
    };
    // Names are track ids and fixed extensions: nothing to escape.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    range::respond(
        file,
        size,
        &headers,
        HeaderValue::from_static(content_type),
        disposition,
    )
    .await
    .map_err(io_error)
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::Internal(format!("recording storage: {e}"))
}
