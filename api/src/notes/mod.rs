//! `/api/v1/notes`: markdown notes of a team (optionally of one of its projects), with their
//! edit history: each edit keeps the replaced version, the newest `KEPT_VERSIONS` of them.
//!
//! Rules: team members read (others get 404); members, admins and owners write (guests only
//! read); the author or an admin deletes. `base_version` on an edit guards against lost updates.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::teams::{self, Role};
use crate::validate;

/// Earlier versions kept per note.
const KEPT_VERSIONS: i64 = 20;
const MAX_BODY: usize = 100_000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_note, list_notes))
        .routes(routes!(get_note, update_note, delete_note))
        .routes(routes!(list_versions))
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Note {
    pub(crate) id: String,
    pub(crate) team_id: String,
    pub(crate) project_id: Option<String>,
    pub(crate) title: String,
    /// Markdown.
    pub(crate) body: String,
    /// Starts at 1, grows with every edit.
    pub(crate) version: i64,
    pub(crate) created_by: Option<String>,
    pub(crate) updated_by: Option<String>,
    #[schema(value_type = chrono::DateTime<chrono::Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    pub(crate) created_at: i64,
    #[schema(value_type = chrono::DateTime<chrono::Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    pub(crate) updated_at: i64,
}

pub(crate) const NOTE_SELECT: &str = "SELECT id, team_id, project_id, title, body, version, created_by, updated_by, \
     created_at, updated_at FROM notes";

fn write_role(role: Role) -> ApiResult<()> {
    if role == Role::Guest {
        Err(ApiError::Forbidden("guests may not write notes"))
    } else {
        Ok(())
    }
}

/// Note `id` and the caller's role in its team; 404 for non-members.
async fn load_note(db: &Db, id: &str, user_id: &str) -> ApiResult<(Note, Role)> {
    let note: Note = sqlx::query_as(&format!("{NOTE_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("note"))?;
    let role = teams::member_role(db, &note.team_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("note"))?;
    Ok((note, role))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateNote {
    team_id: String,
    project_id: Option<String>,
    title: String,
    #[serde(default)]
    body: String,
}

fn check_body(body: &str) -> ApiResult<()> {
    if body.chars().count() > MAX_BODY {
        return Err(ApiError::field("body", format!("at most {MAX_BODY} characters")));
    }
    Ok(())
}

/// Write a note in a team (members, admins, owners).
#[utoipa::path(post, path = "", tag = "notes", security(("bearer" = [])), request_body = CreateNote,
    responses((status = 201, body = Note), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_note(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateNote>,
) -> ApiResult<(StatusCode, AppJson<Note>)> {
    write_role(teams::member_role(&state.db, &req.team_id, &auth.user_id).await?)?;
    let title = validate::name("title", &req.title, 200)?;
    check_body(&req.body)?;
    let project_id = validate::text("project_id", req.project_id.as_deref(), 64)?;
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO notes (id, team_id, project_id, title, body, version, created_by, updated_by, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $7)",
    )
    .bind(&id)
    .bind(&req.team_id)
    .bind(&project_id)
    .bind(&title)
    .bind(&req.body)
    .bind(&auth.user_id)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    Ok((
        StatusCode::CREATED,
        AppJson(load_note(&state.db, &id, &auth.user_id).await?.0),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    team_id: String,
    /// Only notes of this project.
    project_id: Option<String>,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// A team's notes, oldest first.
#[utoipa::path(get, path = "", tag = "notes", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Page<Note>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_notes(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListQuery>,
) -> ApiResult<AppJson<Page<Note>>> {
    teams::member_role(&state.db, &q.team_id, &auth.user_id).await?;
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    };
    let rows: Vec<Note> = sqlx::query_as(&format!(
        "{NOTE_SELECT} WHERE team_id = $1 AND (CAST($2 AS TEXT) IS NULL OR project_id = $2) AND id > $3 \
         ORDER BY id LIMIT $4"
    ))
    .bind(&q.team_id)
    .bind(&q.project_id)
    .bind(page.after())
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(Page::from_rows(rows, page.limit(), |n| n.id.clone())))
}

/// A note.
#[utoipa::path(get, path = "/{id}", tag = "notes", security(("bearer" = [])),
    responses((status = 200, body = Note), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_note(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Note>> {
    Ok(AppJson(load_note(&state.db, &id, &auth.user_id).await?.0))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateNote {
    title: Option<String>,
    body: Option<String>,
    /// The version the edit is based on; a newer stored version makes this a 409.
    base_version: Option<i64>,
}

/// Edit a note; the replaced version goes to its history.
#[utoipa::path(patch, path = "/{id}", tag = "notes", security(("bearer" = [])), request_body = UpdateNote,
    responses((status = 200, body = Note), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn update_note(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<UpdateNote>,
) -> ApiResult<AppJson<Note>> {
    let (note, role) = load_note(&state.db, &id, &auth.user_id).await?;
    write_role(role)?;
    let title = match &req.title {
        Some(t) => validate::name("title", t, 200)?,
        None => note.title.clone(),
    };
    let body = req.body.clone().unwrap_or_else(|| note.body.clone());
    check_body(&body)?;
    let stale = || ApiError::conflict("version_conflict", "the note was edited meanwhile; reload it");
    if req.base_version.is_some_and(|v| v != note.version) {
        return Err(stale());
    }
    let now = now_ms();
    let mut tx = state.db.pool().begin().await?;
    // Bumping the version only from the one read makes concurrent edits a 409, not a lost update.
    let done = sqlx::query(
        "UPDATE notes SET title = $1, body = $2, version = version + 1, updated_by = $3, updated_at = $4 \
         WHERE id = $5 AND version = $6",
    )
    .bind(&title)
    .bind(&body)
    .bind(&auth.user_id)
    .bind(now)
    .bind(&id)
    .bind(note.version)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(stale());
    }
    sqlx::query(
        "INSERT INTO note_versions (note_id, version, title, body, edited_by, edited_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(note.version)
    .bind(&note.title)
    .bind(&note.body)
    .bind(&note.updated_by)
    .bind(note.updated_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM note_versions WHERE note_id = $1 AND version <= $2")
        .bind(&id)
        .bind(note.version - KEPT_VERSIONS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(AppJson(load_note(&state.db, &id, &auth.user_id).await?.0))
}

/// Delete a note (its author, or a team admin or owner).
#[utoipa::path(delete, path = "/{id}", tag = "notes", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_note(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (note, role) = load_note(&state.db, &id, &auth.user_id).await?;
    if !role.can_manage() && note.created_by.as_deref() != Some(auth.user_id.as_str()) {
        return Err(ApiError::Forbidden("only the author or a team admin may delete a note"));
    }
    sqlx::query("DELETE FROM notes WHERE id = $1")
        .bind(&id)
        .execute(state.db.pool())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct NoteVersion {
    version: i64,
    title: String,
    body: String,
    edited_by: Option<String>,
    #[schema(value_type = chrono::DateTime<chrono::Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    edited_at: i64,
}

/// A note's earlier versions, newest first (the last 20 are kept).
#[utoipa::path(get, path = "/{id}/versions", tag = "notes", security(("bearer" = [])),
    responses((status = 200, body = Vec<NoteVersion>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Vec<NoteVersion>>> {
    load_note(&state.db, &id, &auth.user_id).await?;
    Ok(AppJson(
        sqlx::query_as(
            "SELECT version, title, body, edited_by, edited_at FROM note_versions WHERE note_id = $1 \
             ORDER BY version DESC",
        )
        .bind(&id)
        .fetch_all(state.db.pool())
        .await?,
    ))
}
