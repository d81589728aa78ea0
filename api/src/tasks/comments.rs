//! Comments on a task: members write, authors edit, authors and team admins delete. Each
//! change is published as `task.comment.created|updated|deleted`. `@username` mentions of team
//! members are resolved when the comment is written and carried as user ids (for the
//! notification system to act on).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Task, task_access};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::projects::activity::{Change, record_on_pool};
use crate::projects::{self, Access};
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
    /// Team members `@username`-mentioned in the body, as user ids.
    mentions: Vec<String>,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct CommentRow {
    id: String,
    task_id: String,
    author_id: Option<String>,
    body: String,
    mentions: String,
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
            mentions: r
                .mentions
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            created_at: from_ms(r.created_at),
            edited_at: r.edited_at.map(from_ms),
        }
    }
}

const COMMENT_SELECT: &str = "SELECT id, task_id, author_id, body, mentions, created_at, edited_at FROM task_comments";

async fn load_comment(db: &Db, task_id: &str, comment_id: &str) -> ApiResult<Comment> {
    let row: CommentRow = sqlx::query_as(&format!("{COMMENT_SELECT} WHERE id = $1 AND task_id = $2"))
        .bind(comment_id)
        .bind(task_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("comment"))?;
    Ok(row.into())
}

/// The usernames written as `@name` in `body`: a mention starts a word (so e-mail addresses
/// are not mentions) and drops a trailing `.` ending a sentence. At most 20, deduplicated.
fn mentioned_usernames(body: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let mut names = Vec::new();
    let mut prev = ' ';
    for (i, c) in body.char_indices() {
        if c == '@' && !prev.is_alphanumeric() {
            let rest = &body[i + 1..];
            let end = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches('.').to_ascii_lowercase();
            if (3..=32).contains(&name.len()) && !names.contains(&name) {
                names.push(name);
            }
        }
        prev = c;
    }
    names.truncate(20);
    names
}

/// The mentioned usernames that belong to members of `team_id`, as a stored id list.
async fn mentions(db: &Db, team_id: &str, body: &str) -> ApiResult<String> {
    let mut ids = Vec::new();
    for name in mentioned_usernames(body) {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT u.id FROM users u JOIN team_members m ON m.user_id = u.id AND m.team_id = $1 \
             WHERE u.username = $2",
        )
        .bind(team_id)
        .bind(&name)
        .fetch_optional(db.pool())
        .await?;
        ids.extend(found.map(|(id,)| id));
    }
    Ok(ids.join(","))
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
    let excerpt: String = text.chars().take(200).collect();
    let id = new_id();
    let mentioned = mentions(&state.db, &access.team_id, &text).await?;
    sqlx::query(
        "INSERT INTO task_comments (id, task_id, author_id, body, mentions, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&task_id)
    .bind(&auth.user_id)
    .bind(&text)
    .bind(&mentioned)
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    let comment = load_comment(&state.db, &task_id, &id).await?;
    let change = Change::on_task("created", "comment", &id, &task_id).field("body", None, Some(text));
    announce(&state, &task, &access, &auth, change, json!(comment)).await?;
    let mentioned_users: Vec<String> = mentioned
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    let title = format!("You were mentioned on {}", task.title);
    super::notify(
        &state,
        &access.team_id,
        &mentioned_users,
        &auth.user_id,
        "mention",
        title,
        excerpt,
    )
    .await?;
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
    let mentioned = mentions(&state.db, &access.team_id, &text).await?;
    sqlx::query("UPDATE task_comments SET body = $1, mentions = $2, edited_at = $3 WHERE id = $4")
        .bind(&text)
        .bind(&mentioned)
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
    announce(&state, &task, &access, &auth, change, json!(comment)).await?;
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
    announce(&state, &task, &access, &auth, change, data).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records `change` (to a comment on `task`, by `auth`) in the activity feed and publishes it as
/// `task.comment.<its verb>` with `data`, also to the project channel.
async fn announce(
    state: &AppState,
    task: &Task,
    access: &Access,
    auth: &AuthUser,
    change: Change,
    data: serde_json::Value,
) -> ApiResult<()> {
    let kind = format!("task.comment.{}", change.verb);
    let what = match change.verb {
        "created" => "commented on",
        "updated" => "edited a comment on",
        _ => "deleted a comment on",
    };
    record_on_pool(&state.db, &task.project_id, &auth.user_id, &[change]).await?;
    let what = format!("{what} {}", task.key);
    projects::publish_task_change(
        state,
        &access.team_id,
        &task.project_id,
        &auth.user_id,
        &kind,
        data,
        &what,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::mentioned_usernames;

    #[test]
    fn mentions_start_a_word() {
        assert_eq!(
            mentioned_usernames("@Alice and @bob.smith. cc:@carol, mail dave@example.com @al @bob.smith"),
            ["alice", "bob.smith", "carol"]
        );
        assert!(mentioned_usernames("no mentions @ all").is_empty());
    }
}
