//! Comments on a task: members write, authors edit, authors and team admins delete. Each
//! change is published as `task.comment.created|updated|deleted`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::task_access;
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::projects;
use crate::projects::activity::{Change, record};
use crate::state::AppState;
use crate::time::from_ms;
use crate::validate;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_comments, create_comment))
        .routes(routes!(update_comment, delete_comment))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Comment {
    id: String,
    task_id: String,
    author_id: Option<String>,
    /// Markdown.
    body: String,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct CommentRow {
    id: String,
    task_id: String,
    author_id: Option<String>,
    body: String,
    created_at: i64,
    edited_at: Option<i64>,
}

impl From<CommentRow> for Comment {
    fn from(r: CommentRow) -> Self {
        Self {
            id: r.id,
            task_id: r.task_id,
            author_id: r.author_id,
            body: r.body,
            created_at: from_ms(r.created_at),
            edited_at: r.edited_at.map(from_ms),
        }
    }
}

const COMMENT_SELECT: &str = "SELECT id, task_id, author_id, body, created_at, edited_at FROM task_comments";

async fn load_comment(db: &Db, task_id: &str, comment_id: &str) -> ApiResult<Comment> {
    let row: CommentRow = sqlx::query_as(&format!("{COMMENT_SELECT} WHERE id = $1 AND task_id = $2"))
        .bind(comment_id)
        .bind(task_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("comment"))?;
    Ok(row.into())
}

fn body(raw: &str) -> ApiResult<String> {
    validate::text("body", Some(raw), 20_000)?.ok_or_else(|| ApiError::field("body", "must not be empty"))
}

/// The task's comments, oldest first.
#[utoipa::path(get, path = "/{task_id}/comments", tag = "tasks", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<Comment>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_comments(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<Comment>>> {
    task_access(&state.db, &task_id, &auth.user_id).await?;
    let rows: Vec<CommentRow> = sqlx::query_as(&format!(
        "{COMMENT_SELECT} WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(&task_id)
    .bind(page.after())
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    let comments = rows.into_iter().map(Comment::from).collect();
    Ok(AppJson(Page::from_rows(comments, page.limit(), |c: &Comment| {
        c.id.clone()
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommentBody {
    /// Markdown, up to 20000 characters.
    body: String,
}

/// Comment on a task (members and above).
#[utoipa::path(post, path = "/{task_id}/comments", tag = "tasks", security(("bearer" = [])), request_body = CommentBody,
    responses((status = 201, body = Comment), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_comment(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppJson(req): AppJson<CommentBody>,
) -> ApiResult<(StatusCode, AppJson<Comment>)> {
    let (task, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let text = body(&req.body)?;
    let id = new_id();
    sqlx::query("INSERT INTO task_comments (id, task_id, author_id, body, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(&task_id)
        .bind(&auth.user_id)
        .bind(&text)
        .bind(now_ms())
        .execute(state.db.pool())
        .await?;
    let comment = load_comment(&state.db, &task_id, &id).await?;
    let change = Change::on_task("created", "comment", &id, &task_id).field("body", None, Some(text));
    record(
        &mut *state.db.pool().acquire().await?,
        &task.project_id,
        &auth.user_id,
        &[change],
    )
    .await?;
    projects::publish(&state, &access.team_id, "task.comment.created", json!(comment)).await?;
    Ok((StatusCode::CREATED, AppJson(comment)))
}

/// Edit your own comment.
#[utoipa::path(patch, path = "/{task_id}/comments/{comment_id}", tag = "tasks", security(("bearer" = [])),
    request_body = CommentBody,
    responses((status = 200, body = Comment), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_comment(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((task_id, comment_id)): AppPath<(String, String)>,
    AppJson(req): AppJson<CommentBody>,
) -> ApiResult<AppJson<Comment>> {
    let (task, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    let current = load_comment(&state.db, &task_id, &comment_id).await?;
    if current.author_id.as_deref() != Some(auth.user_id.as_str()) {
        return Err(ApiError::Forbidden("only the author may edit a comment"));
    }
    access.require_write()?;
    let text = body(&req.body)?;
    sqlx::query("UPDATE task_comments SET body = $1, edited_at = $2 WHERE id = $3")
        .bind(&text)
        .bind(now_ms())
        .bind(&comment_id)
        .execute(state.db.pool())
        .await?;
    let comment = load_comment(&state.db, &task_id, &comment_id).await?;
    let change = Change::on_task("updated", "comment", &comment_id, &task_id).field(
        "body",
        Some(current.body),
        Some(comment.body.clone()),
    );
    record(
        &mut *state.db.pool().acquire().await?,
        &task.project_id,
        &auth.user_id,
        &[change],
    )
    .await?;
    projects::publish(&state, &access.team_id, "task.comment.updated", json!(comment)).await?;
    Ok(AppJson(comment))
}

/// Delete a comment (its author, or a team admin or owner).
#[utoipa::path(delete, path = "/{task_id}/comments/{comment_id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_comment(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((task_id, comment_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (task, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    let current = load_comment(&state.db, &task_id, &comment_id).await?;
    let own = current.author_id.as_deref() == Some(auth.user_id.as_str());
    if !own && !access.role.can_manage() {
        return Err(ApiError::Forbidden(
            "only the author or a team admin may delete a comment",
        ));
    }
    sqlx::query("DELETE FROM task_comments WHERE id = $1")
        .bind(&comment_id)
        .execute(state.db.pool())
        .await?;
    let data = json!({ "id": comment_id, "task_id": task_id });
    let change = Change::on_task("deleted", "comment", &comment_id, &task_id);
    record(
        &mut *state.db.pool().acquire().await?,
        &task.project_id,
        &auth.user_id,
        &[change],
    )
    .await?;
    projects::publish(&state, &access.team_id, "task.comment.deleted", data).await?;
    Ok(StatusCode::NO_CONTENT)
}
