//! The activity feed: every change to a project, its boards, columns, sprints and tasks,
//! recorded as actor, verb, entity, field, old and new value and time, and read newest first
//! at `GET /api/v1/projects/{project_id}/activity` and `GET /api/v1/tasks/{task_id}/activity`.
//!
//! Rows outlive what they describe (a deleted task keeps its history until its project goes).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, new_id, now_ms};
use crate::error::ApiResult;
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::time::from_ms;

/// Routes under `/api/v1/projects`.
pub(crate) fn project_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(project_activity))
}

/// Routes under `/api/v1/tasks`.
pub(crate) fn task_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(task_activity))
}

/// One change to record.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) verb: &'static str,
    pub(crate) entity: &'static str,
    pub(crate) entity_id: String,
    /// The task the change belongs to, if any (the task itself, or its comment, subtask...).
    pub(crate) task_id: Option<String>,
    pub(crate) field: Option<&'static str>,
    pub(crate) old: Option<String>,
    pub(crate) new: Option<String>,
}

impl Change {
    pub(crate) fn new(verb: &'static str, entity: &'static str, entity_id: &str) -> Self {
        Self {
            verb,
            entity,
            entity_id: entity_id.to_owned(),
            task_id: None,
            field: None,
            old: None,
            new: None,
        }
    }

    /// A change of a task or of something belonging to it.
    pub(crate) fn on_task(verb: &'static str, entity: &'static str, entity_id: &str, task_id: &str) -> Self {
        Self {
            task_id: Some(task_id.to_owned()),
            ..Self::new(verb, entity, entity_id)
        }
    }

    pub(crate) fn field(mut self, field: &'static str, old: Option<String>, new: Option<String>) -> Self {
        self.field = Some(field);
        self.old = old;
        self.new = new;
        self
    }
}

/// The `updated` changes of one entity: one per field whose value differs (values as displayed
/// text), each a copy of `base` with the field.
pub(crate) struct Diff {
    base: Change,
    pub(crate) changes: Vec<Change>,
}

impl Diff {
    pub(crate) fn new(base: Change) -> Self {
        Self {
            base,
            changes: Vec::new(),
        }
    }

    pub(crate) fn field(&mut self, field: &'static str, old: Option<String>, new: Option<String>) {
        if old != new {
            self.changes.push(self.base.clone().field(field, old, new));
        }
    }
}

/// Records `changes` by `actor` in `project_id`'s feed, on `conn` (preferably the transaction
/// that made the change, so the two commit together).
pub(crate) async fn record(
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    actor: &str,
    changes: &[Change],
) -> ApiResult<()> {
    let now = now_ms();
    for c in changes {
        sqlx::query(
            "INSERT INTO activity (id, project_id, task_id, actor_id, verb, entity, entity_id, field, old_value, \
             new_value, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new_id())
        .bind(project_id)
        .bind(&c.task_id)
        .bind(actor)
        .bind(c.verb)
        .bind(c.entity)
        .bind(&c.entity_id)
        .bind(c.field)
        .bind(&c.old)
        .bind(&c.new)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// [`record`] on a connection of its own: for a change made outside a transaction.
pub(crate) async fn record_on_pool(db: &Db, project_id: &str, actor: &str, changes: &[Change]) -> ApiResult<()> {
    record(&mut *db.pool().acquire().await?, project_id, actor, changes).await
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActivityEntry {
    id: String,
    project_id: String,
    task_id: Option<String>,
    /// Who made the change (absent once the account is deleted).
    actor_id: Option<String>,
    /// `created`, `updated`, `moved`, `deleted`, `started`, `completed`...
    verb: String,
    /// `project`, `board`, `column`, `task`, `subtask`, `comment`, `relation`, `sprint`.
    entity: String,
    entity_id: String,
    /// The field changed, for `updated` and `moved`.
    field: Option<String>,
    old_value: Option<String>,
    new_value: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ActivityRow {
    id: String,
    project_id: String,
    task_id: Option<String>,
    actor_id: Option<String>,
    verb: String,
    entity: String,
    entity_id: String,
    field: Option<String>,
    old_value: Option<String>,
    new_value: Option<String>,
    created_at: i64,
}

impl From<ActivityRow> for ActivityEntry {
    fn from(r: ActivityRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            task_id: r.task_id,
            actor_id: r.actor_id,
            verb: r.verb,
            entity: r.entity,
            entity_id: r.entity_id,
            field: r.field,
            old_value: r.old_value,
            new_value: r.new_value,
            created_at: from_ms(r.created_at),
        }
    }
}

/// Newest first: `after` is the oldest id of the previous page.
async fn feed(db: &Db, column: &str, value: &str, page: &PageQuery) -> ApiResult<Page<ActivityEntry>> {
    let sql = format!(
        "SELECT id, project_id, task_id, actor_id, verb, entity, entity_id, field, old_value, new_value, created_at \
         FROM activity WHERE {column} = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3"
    );
    let rows: Vec<ActivityRow> = sqlx::query_as(&sql)
        .bind(value)
        .bind(page.after())
        .bind(page.limit() + 1)
        .fetch_all(db.pool())
        .await?;
    let entries = rows.into_iter().map(ActivityEntry::from).collect();
    Ok(Page::from_rows(entries, page.limit(), |e: &ActivityEntry| e.id.clone()))
}

/// Everything that happened in a project, newest first.
#[utoipa::path(get, path = "/{project_id}/activity", tag = "projects", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ActivityEntry>), (status = 404, body = convene_proto::ErrorBody)))]
async fn project_activity(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<ActivityEntry>>> {
    super::access(&state.db, &project_id, &auth.user_id).await?;
    Ok(AppJson(feed(&state.db, "project_id", &project_id, &page).await?))
}

/// Everything that happened to a task (and its comments, subtasks and relations), newest first.
#[utoipa::path(get, path = "/{task_id}/activity", tag = "tasks", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<ActivityEntry>), (status = 404, body = convene_proto::ErrorBody)))]
async fn task_activity(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<ActivityEntry>>> {
    crate::tasks::task_access(&state.db, &task_id, &auth.user_id).await?;
    Ok(AppJson(feed(&state.db, "task_id", &task_id, &page).await?))
}
