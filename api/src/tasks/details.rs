//! A task's subtasks (a checklist of title + done) and its relations to other tasks of the
//! team: `blocks` / `blocked_by`, `relates_to`, `duplicates` / `duplicated_by`. A relation is
//! stored once, in its active form (`blocked_by` is `blocks` read from the other end).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Task, task_access, touched};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AuthUser};
use crate::projects::activity::{Change, Diff, record};
use crate::projects::text_enum;
use crate::state::AppState;
use crate::time::from_ms;
use crate::validate;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subtask))
        .routes(routes!(update_subtask, delete_subtask))
        .routes(routes!(create_relation))
        .routes(routes!(delete_relation))
}

text_enum!(
    /// A relation as seen from one task.
    RelationKind {
        Blocks = "blocks",
        BlockedBy = "blocked_by",
        RelatesTo = "relates_to",
        Duplicates = "duplicates",
        DuplicatedBy = "duplicated_by",
    }
);

impl RelationKind {
    /// The stored form: (active kind, whether this task is the source).
    fn stored(self) -> (Self, bool) {
        match self {
            Self::BlockedBy => (Self::Blocks, false),
            Self::DuplicatedBy => (Self::Duplicates, false),
            other => (other, true),
        }
    }

    /// The kind as seen from the target's end.
    fn reversed(self) -> Self {
        match self {
            Self::Blocks => Self::BlockedBy,
            Self::BlockedBy => Self::Blocks,
            Self::Duplicates => Self::DuplicatedBy,
            Self::DuplicatedBy => Self::Duplicates,
            Self::RelatesTo => Self::RelatesTo,
        }
    }
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Subtask {
    id: String,
    title: String,
    #[serde(serialize_with = "serialize_flag")]
    #[schema(value_type = bool)]
    done: i64,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    created_at: i64,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    updated_at: i64,
}

fn serialize_flag<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(*v != 0)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Relation {
    id: String,
    /// Seen from the task it is listed under.
    kind: RelationKind,
    /// The other task.
    task_id: String,
    task_key: String,
    task_title: String,
    created_at: DateTime<Utc>,
}

/// A relation row read from either end.
#[derive(FromRow)]
struct RelationRow {
    id: String,
    kind: String,
    /// 1 when the task read is the stored source.
    outgoing: i64,
    other_id: String,
    key_prefix: String,
    number: i64,
    title: String,
    created_at: i64,
}

/// A task with its subtasks and relations.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskDetail {
    #[serde(flatten)]
    task: Task,
    subtasks: Vec<Subtask>,
    relations: Vec<Relation>,
}

pub(super) async fn detail(db: &Db, task: Task) -> ApiResult<TaskDetail> {
    let subtasks: Vec<Subtask> =
        sqlx::query_as("SELECT id, title, done, created_at, updated_at FROM subtasks WHERE task_id = $1 ORDER BY id")
            .bind(&task.id)
            .fetch_all(db.pool())
            .await?;
    let rows: Vec<RelationRow> = sqlx::query_as(
        "SELECT r.id, r.kind, 1 AS outgoing, o.id AS other_id, p.key_prefix, o.number, o.title, r.created_at \
         FROM task_relations r JOIN tasks o ON o.id = r.target_id JOIN projects p ON p.id = o.project_id \
         WHERE r.source_id = $1 \
         UNION ALL \
         SELECT r.id, r.kind, 0, o.id, p.key_prefix, o.number, o.title, r.created_at \
         FROM task_relations r JOIN tasks o ON o.id = r.source_id JOIN projects p ON p.id = o.project_id \
         WHERE r.target_id = $1 \
         ORDER BY 1",
    )
    .bind(&task.id)
    .fetch_all(db.pool())
    .await?;
    let relations = rows
        .into_iter()
        .map(|r| {
            let kind = RelationKind::parse(&r.kind)?;
            Ok(Relation {
                id: r.id,
                kind: if r.outgoing == 1 { kind } else { kind.reversed() },
                task_id: r.other_id,
                task_key: format!("{}-{}", r.key_prefix, r.number),
                task_title: r.title,
                created_at: from_ms(r.created_at),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(TaskDetail {
        task,
        subtasks,
        relations,
    })
}

async fn load_subtask(db: &Db, task_id: &str, subtask_id: &str) -> ApiResult<Subtask> {
    sqlx::query_as("SELECT id, title, done, created_at, updated_at FROM subtasks WHERE id = $1 AND task_id = $2")
        .bind(subtask_id)
        .bind(task_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("subtask"))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSubtask {
    title: String,
}

/// Add a subtask (members and above).
#[utoipa::path(post, path = "/{task_id}/subtasks", tag = "tasks", security(("bearer" = [])), request_body = CreateSubtask,
    responses((status = 201, body = Subtask), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_subtask(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppJson(req): AppJson<CreateSubtask>,
) -> ApiResult<(StatusCode, AppJson<Subtask>)> {
    let (_, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let title = validate::name("title", &req.title, 300)?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO subtasks (id, task_id, title, done, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $4)",
    )
    .bind(&id)
    .bind(&task_id)
    .bind(&title)
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    let change = Change::on_task("created", "subtask", &id, &task_id).field("title", None, Some(title));
    touched(&state, &access, &auth.user_id, &task_id, &[change]).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(load_subtask(&state.db, &task_id, &id).await?),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSubtask {
    title: Option<String>,
    done: Option<bool>,
}

/// Rename a subtask or tick it off (members and above).
#[utoipa::path(patch, path = "/{task_id}/subtasks/{subtask_id}", tag = "tasks", security(("bearer" = [])),
    request_body = UpdateSubtask,
    responses((status = 200, body = Subtask), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_subtask(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((task_id, subtask_id)): AppPath<(String, String)>,
    AppJson(req): AppJson<UpdateSubtask>,
) -> ApiResult<AppJson<Subtask>> {
    let (_, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let current = load_subtask(&state.db, &task_id, &subtask_id).await?;
    let title = match &req.title {
        Some(t) => validate::name("title", t, 300)?,
        None => current.title.clone(),
    };
    let done = req.done.map_or(current.done, i64::from);
    let mut diff = Diff::new(Change::on_task("updated", "subtask", &subtask_id, &task_id));
    diff.field("title", Some(current.title), Some(title.clone()));
    let flag = |d: i64| Some((d != 0).to_string());
    diff.field("done", flag(current.done), flag(done));
    sqlx::query("UPDATE subtasks SET title = $1, done = $2, updated_at = $3 WHERE id = $4")
        .bind(&title)
        .bind(done)
        .bind(now_ms())
        .bind(&subtask_id)
        .execute(state.db.pool())
        .await?;
    touched(&state, &access, &auth.user_id, &task_id, &diff.changes).await?;
    Ok(AppJson(load_subtask(&state.db, &task_id, &subtask_id).await?))
}

/// Delete a subtask (members and above).
#[utoipa::path(delete, path = "/{task_id}/subtasks/{subtask_id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_subtask(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((task_id, subtask_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (_, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let deleted = sqlx::query("DELETE FROM subtasks WHERE id = $1 AND task_id = $2")
        .bind(&subtask_id)
        .bind(&task_id)
        .execute(state.db.pool())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(ApiError::NotFound("subtask"));
    }
    let change = Change::on_task("deleted", "subtask", &subtask_id, &task_id);
    touched(&state, &access, &auth.user_id, &task_id, &[change]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRelation {
    /// Seen from this task: `blocks` means this task blocks the other.
    kind: RelationKind,
    /// Another task of the same team.
    task_id: String,
}

/// Relate the task to another task of the team (members and above).
#[utoipa::path(post, path = "/{task_id}/relations", tag = "tasks", security(("bearer" = [])),
    request_body = CreateRelation,
    responses((status = 201, body = TaskDetail), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn create_relation(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppJson(req): AppJson<CreateRelation>,
) -> ApiResult<(StatusCode, AppJson<TaskDetail>)> {
    let (_, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    if req.task_id == task_id {
        return Err(ApiError::field("task_id", "a task cannot relate to itself"));
    }
    let same_team = match task_access(&state.db, &req.task_id, &auth.user_id).await {
        Ok((_, other)) => other.team_id == access.team_id,
        Err(_) => false,
    };
    if !same_team {
        return Err(ApiError::field("task_id", "must be a task of the same team"));
    }
    let (kind, outgoing) = req.kind.stored();
    let (source, target) = if outgoing {
        (&task_id, &req.task_id)
    } else {
        (&req.task_id, &task_id)
    };
    // `relates_to` is symmetric: one row whichever end created it.
    let (source, target) = if kind == RelationKind::RelatesTo && source > target {
        (target, source)
    } else {
        (source, target)
    };
    let relation_id = new_id();
    sqlx::query(
        "INSERT INTO task_relations (id, source_id, target_id, kind, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&relation_id)
    .bind(source)
    .bind(target)
    .bind(kind.as_str())
    .bind(&auth.user_id)
    .bind(now_ms())
    .execute(state.db.pool())
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::conflict("already_related", "the tasks are already related so"),
        other => other,
    })?;
    let change = Change::on_task("created", "relation", &relation_id, &task_id).field(
        req.kind.as_str(),
        None,
        Some(req.task_id.clone()),
    );
    touched(&state, &access, &auth.user_id, &task_id, &[change]).await?;
    touched(&state, &access, &auth.user_id, &req.task_id, &[]).await?;
    let (task, _) = task_access(&state.db, &task_id, &auth.user_id).await?;
    Ok((StatusCode::CREATED, AppJson(detail(&state.db, task).await?)))
}

/// Remove a relation of the task (members and above).
#[utoipa::path(delete, path = "/{task_id}/relations/{relation_id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_relation(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((task_id, relation_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (task, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let other: Option<(String, String)> = sqlx::query_as(
        "DELETE FROM task_relations WHERE id = $1 AND (source_id = $2 OR target_id = $2) \
         RETURNING source_id, target_id",
    )
    .bind(&relation_id)
    .bind(&task_id)
    .fetch_optional(state.db.pool())
    .await?;
    let (source, target) = other.ok_or(ApiError::NotFound("relation"))?;
    let change = Change::on_task("deleted", "relation", &relation_id, &task_id);
    let mut conn = state.db.pool().acquire().await?;
    record(&mut conn, &task.project_id, &auth.user_id, &[change]).await?;
    drop(conn);
    touched(&state, &access, &auth.user_id, &source, &[]).await?;
    touched(&state, &access, &auth.user_id, &target, &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}
