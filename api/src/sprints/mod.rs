//! Sprints: `/api/v1/projects/{project_id}/sprints` and `/api/v1/sprints/{sprint_id}`.
//!
//! A sprint is planned, then started (at most one active sprint per project, enforced by a
//! partial unique index), then completed: its unfinished tasks (not in a `done` column) go
//! back to the backlog or into a planned sprint. Tasks in no sprint are the backlog.
//!
//! Burndown: every change to a task of an active sprint rewrites that sprint's snapshot of
//! the day (one upsert computed from the tasks in the same statement), so each day's row is
//! the sprint's state after the last change of that day, and a day without changes carries
//! the previous day's values.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AuthUser};
use crate::projects::activity::{Change, Diff, record, record_on_pool};
use crate::projects::{self, Access, date_text, parse_date, text_enum};
use crate::state::AppState;
use crate::tasks;
use crate::time::from_ms;
use crate::validate;

/// Routes under `/api/v1/projects`.
pub(crate) fn project_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_sprints, create_sprint))
}

/// Routes under `/api/v1/sprints`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_sprint, update_sprint, delete_sprint))
        .routes(routes!(add_tasks))
        .routes(routes!(remove_task))
        .routes(routes!(start_sprint))
        .routes(routes!(complete_sprint))
        .routes(routes!(burndown))
}

text_enum!(
    SprintStatus { Planned = "planned", Active = "active", Completed = "completed" }
);

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Rewrites today's burndown snapshot of `sprint_id` if it is active (a no-op otherwise).
pub(crate) async fn record_snapshot(db: &Db, sprint_id: &str) -> ApiResult<()> {
    // SUM over BIGINT is NUMERIC in PostgreSQL; the casts keep every column a BIGINT.
    sqlx::query(
        "INSERT INTO sprint_snapshots (sprint_id, day, total_tasks, remaining_tasks, total_points, remaining_points) \
         SELECT s.id, $2, CAST(COUNT(t.id) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN c.category <> 'done' THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(t.estimate), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN c.category <> 'done' THEN t.estimate ELSE 0 END), 0) AS BIGINT) \
         FROM sprints s LEFT JOIN tasks t ON t.sprint_id = s.id AND t.archived_at IS NULL \
         LEFT JOIN board_columns c ON c.id = t.column_id \
         WHERE s.id = $1 AND s.status = 'active' GROUP BY s.id \
         ON CONFLICT (sprint_id, day) DO UPDATE SET total_tasks = excluded.total_tasks, \
         remaining_tasks = excluded.remaining_tasks, total_points = excluded.total_points, \
         remaining_points = excluded.remaining_points",
    )
    .bind(sprint_id)
    .bind(today().format("%Y-%m-%d").to_string())
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Rewrites the snapshots of the active sprints with tasks in `column_id` (after the column
/// changed category).
pub(crate) async fn refresh_for_column(db: &Db, column_id: &str) -> ApiResult<()> {
    let sprints: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT t.sprint_id FROM tasks t JOIN sprints s ON s.id = t.sprint_id \
         WHERE t.column_id = $1 AND s.status = 'active'",
    )
    .bind(column_id)
    .fetch_all(db.pool())
    .await?;
    for (sprint,) in sprints {
        record_snapshot(db, &sprint).await?;
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Sprint {
    id: String,
    project_id: String,
    name: String,
    goal: Option<String>,
    start_date: NaiveDate,
    end_date: NaiveDate,
    status: SprintStatus,
    /// Tasks in the sprint (archived ones included).
    task_count: i64,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct SprintRow {
    id: String,
    project_id: String,
    name: String,
    goal: Option<String>,
    start_date: String,
    end_date: String,
    status: String,
    task_count: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<SprintRow> for Sprint {
    type Error = ApiError;
    fn try_from(r: SprintRow) -> ApiResult<Self> {
        let date = |d: String| parse_date(Some(d))?.ok_or(ApiError::Internal("sprint without date".to_owned()));
        Ok(Self {
            start_date: date(r.start_date)?,
            end_date: date(r.end_date)?,
            status: SprintStatus::parse(&r.status)?,
            id: r.id,
            project_id: r.project_id,
            name: r.name,
            goal: r.goal,
            task_count: r.task_count,
            started_at: r.started_at.map(from_ms),
            completed_at: r.completed_at.map(from_ms),
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        })
    }
}

const SPRINT_SELECT: &str = "SELECT s.id, s.project_id, s.name, s.goal, s.start_date, s.end_date, s.status, \
     (SELECT COUNT(*) FROM tasks t WHERE t.sprint_id = s.id) AS task_count, \
     s.started_at, s.completed_at, s.created_at, s.updated_at FROM sprints s";

async fn load_sprint(db: &Db, sprint_id: &str) -> ApiResult<Sprint> {
    sqlx::query_as::<_, SprintRow>(&format!("{SPRINT_SELECT} WHERE s.id = $1"))
        .bind(sprint_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("sprint"))?
        .try_into()
}

/// The sprint and the caller's access to its project (404 for outsiders and unknown sprints).
async fn sprint_access(db: &Db, sprint_id: &str, user_id: &str) -> ApiResult<(Sprint, Access)> {
    let sprint = load_sprint(db, sprint_id).await?;
    let access = projects::access(db, &sprint.project_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("sprint"))?;
    Ok((sprint, access))
}

fn check_dates(start: NaiveDate, end: NaiveDate) -> ApiResult<()> {
    if end < start {
        Err(ApiError::field("end_date", "must not be before start_date"))
    } else {
        Ok(())
    }
}

/// The project's sprints, oldest first.
#[utoipa::path(get, path = "/{project_id}/sprints", tag = "sprints", security(("bearer" = [])),
    responses((status = 200, body = Vec<Sprint>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_sprints(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
) -> ApiResult<AppJson<Vec<Sprint>>> {
    projects::access(&state.db, &project_id, &auth.user_id).await?;
    let rows: Vec<SprintRow> = sqlx::query_as(&format!("{SPRINT_SELECT} WHERE s.project_id = $1 ORDER BY s.id"))
        .bind(&project_id)
        .fetch_all(state.db.pool())
        .await?;
    Ok(AppJson(
        rows.into_iter().map(Sprint::try_from).collect::<ApiResult<_>>()?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSprint {
    name: String,
    goal: Option<String>,
    start_date: NaiveDate,
    end_date: NaiveDate,
}

/// Plan a sprint (members and above).
#[utoipa::path(post, path = "/{project_id}/sprints", tag = "sprints", security(("bearer" = [])),
    request_body = CreateSprint,
    responses((status = 201, body = Sprint), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_sprint(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppJson(req): AppJson<CreateSprint>,
) -> ApiResult<(StatusCode, AppJson<Sprint>)> {
    let access = projects::access(&state.db, &project_id, &auth.user_id).await?;
    access.require_write()?;
    let name = validate::name("name", &req.name, 100)?;
    let goal = validate::text("goal", req.goal.as_deref(), 2000)?;
    check_dates(req.start_date, req.end_date)?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO sprints (id, project_id, name, goal, start_date, end_date, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7, $7)",
    )
    .bind(&id)
    .bind(&project_id)
    .bind(&name)
    .bind(&goal)
    .bind(date_text(Some(req.start_date)))
    .bind(date_text(Some(req.end_date)))
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    let change = Change::new("created", "sprint", &id).field("name", None, Some(name.clone()));
    record_on_pool(&state.db, &project_id, &auth.user_id, &[change]).await?;
    let sprint = load_sprint(&state.db, &id).await?;
    projects::publish(&state, &access.team_id, "sprint.created", json!(sprint)).await?;
    Ok((StatusCode::CREATED, AppJson(sprint)))
}

/// A sprint.
#[utoipa::path(get, path = "/{sprint_id}", tag = "sprints", security(("bearer" = [])),
    responses((status = 200, body = Sprint), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_sprint(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
) -> ApiResult<AppJson<Sprint>> {
    Ok(AppJson(sprint_access(&state.db, &sprint_id, &auth.user_id).await?.0))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSprint {
    name: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    goal: Option<Option<String>>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
}

/// Rename a sprint, change its goal or dates (members and above).
#[utoipa::path(patch, path = "/{sprint_id}", tag = "sprints", security(("bearer" = [])), request_body = UpdateSprint,
    responses((status = 200, body = Sprint), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_sprint(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
    AppJson(req): AppJson<UpdateSprint>,
) -> ApiResult<AppJson<Sprint>> {
    let (current, access) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    access.require_write()?;
    let name = match &req.name {
        Some(n) => validate::name("name", n, 100)?,
        None => current.name.clone(),
    };
    let goal = match &req.goal {
        Some(g) => validate::text("goal", g.as_deref(), 2000)?,
        None => current.goal.clone(),
    };
    let start = req.start_date.unwrap_or(current.start_date);
    let end = req.end_date.unwrap_or(current.end_date);
    check_dates(start, end)?;
    let mut diff = Diff::new(Change::new("updated", "sprint", &sprint_id));
    diff.field("name", Some(current.name), Some(name.clone()));
    diff.field("goal", current.goal, goal.clone());
    let day = |d: NaiveDate| date_text(Some(d));
    diff.field("start_date", day(current.start_date), day(start));
    diff.field("end_date", day(current.end_date), day(end));
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "UPDATE sprints SET name = $1, goal = $2, start_date = $3, end_date = $4, updated_at = $5 WHERE id = $6",
    )
    .bind(&name)
    .bind(&goal)
    .bind(date_text(Some(start)))
    .bind(date_text(Some(end)))
    .bind(now_ms())
    .bind(&sprint_id)
    .execute(&mut *tx)
    .await?;
    record(&mut tx, &current.project_id, &auth.user_id, &diff.changes).await?;
    tx.commit().await?;
    let sprint = load_sprint(&state.db, &sprint_id).await?;
    projects::publish(&state, &access.team_id, "sprint.updated", json!(sprint)).await?;
    Ok(AppJson(sprint))
}

/// Delete a sprint; its tasks return to the backlog (members and above).
#[utoipa::path(delete, path = "/{sprint_id}", tag = "sprints", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_sprint(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (sprint, access) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    access.require_write()?;
    let (project, actor) = (&sprint.project_id, &auth.user_id);
    let moved = move_tasks(
        &state.db,
        project,
        actor,
        "WHERE sprint_id = $2",
        &sprint_id,
        Some(&sprint_id),
        None,
    )
    .await?;
    sqlx::query("DELETE FROM sprints WHERE id = $1")
        .bind(&sprint_id)
        .execute(state.db.pool())
        .await?;
    let change = Change::new("deleted", "sprint", &sprint_id).field("name", Some(sprint.name.clone()), None);
    record_on_pool(&state.db, project, actor, &[change]).await?;
    publish_tasks(&state, &access, &moved).await?;
    projects::publish(&state, &access.team_id, "sprint.deleted", json!({ "id": sprint_id })).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets `sprint_id` of the tasks selected by `condition` (in which `$2` is `selector`) from
/// `from` to `to`, records it for each task as done by `actor`, and returns their ids.
async fn move_tasks(
    db: &Db,
    project_id: &str,
    actor: &str,
    condition: &str,
    selector: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> ApiResult<Vec<String>> {
    let mut tx = db.pool().begin().await?;
    let ids: Vec<(String,)> = sqlx::query_as(&format!(
        "UPDATE tasks SET sprint_id = $1, version = version + 1, updated_at = $3 {condition} RETURNING id"
    ))
    .bind(to)
    .bind(selector)
    .bind(now_ms())
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
    let changes: Vec<Change> = ids
        .iter()
        .map(|id| {
            Change::on_task("updated", "task", id, id).field(
                "sprint_id",
                from.map(str::to_owned),
                to.map(str::to_owned),
            )
        })
        .collect();
    record(&mut tx, project_id, actor, &changes).await?;
    tx.commit().await?;
    Ok(ids)
}

async fn publish_tasks(state: &AppState, access: &Access, ids: &[String]) -> ApiResult<()> {
    let audience = access.audience(&state.db).await?;
    for id in ids {
        let task = tasks::load_task(&state.db, id).await?;
        state
            .events
            .publish(audience.iter().map(String::as_str), "task.updated", &json!(task));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SprintTasks {
    /// Tasks of the sprint's project.
    task_ids: Vec<String>,
}

/// Put tasks into the sprint, taking them from the backlog or another sprint (members and above).
#[utoipa::path(post, path = "/{sprint_id}/tasks", tag = "sprints", security(("bearer" = [])), request_body = SprintTasks,
    responses((status = 200, body = Sprint), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn add_tasks(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
    AppJson(req): AppJson<SprintTasks>,
) -> ApiResult<AppJson<Sprint>> {
    let (sprint, access) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    access.require_write()?;
    if sprint.status == SprintStatus::Completed {
        return Err(ApiError::conflict(
            "sprint_completed",
            "a completed sprint takes no tasks",
        ));
    }
    if req.task_ids.is_empty() || req.task_ids.len() > 500 {
        return Err(ApiError::field("task_ids", "give 1-500 task ids"));
    }
    let mut previous = Vec::new();
    let mut from = Vec::new();
    for id in &req.task_ids {
        let found: Option<(Option<String>,)> =
            sqlx::query_as("SELECT sprint_id FROM tasks WHERE id = $1 AND project_id = $2")
                .bind(id)
                .bind(&sprint.project_id)
                .fetch_optional(state.db.pool())
                .await?;
        match found {
            Some((Some(other),)) if other == sprint_id => {}
            Some((old,)) => {
                previous.extend(old.clone());
                from.push((id, old));
            }
            None => {
                return Err(ApiError::field(
                    "task_ids",
                    "every task must belong to the sprint's project",
                ));
            }
        }
    }
    let mut moved = Vec::new();
    for (id, old) in from {
        let (project, actor) = (&sprint.project_id, &auth.user_id);
        let to = Some(sprint_id.as_str());
        moved.extend(move_tasks(&state.db, project, actor, "WHERE id = $2", id, old.as_deref(), to).await?);
    }
    previous.sort();
    previous.dedup();
    for other in previous.iter().chain([&sprint_id]) {
        record_snapshot(&state.db, other).await?;
    }
    publish_tasks(&state, &access, &moved).await?;
    Ok(AppJson(load_sprint(&state.db, &sprint_id).await?))
}

/// Take a task out of the sprint, back to the backlog (members and above).
#[utoipa::path(delete, path = "/{sprint_id}/tasks/{task_id}", tag = "sprints", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn remove_task(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((sprint_id, task_id)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (sprint, access) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    access.require_write()?;
    let mut tx = state.db.pool().begin().await?;
    let ids: Vec<(String,)> = sqlx::query_as(
        "UPDATE tasks SET sprint_id = NULL, version = version + 1, updated_at = $1 \
         WHERE id = $2 AND sprint_id = $3 RETURNING id",
    )
    .bind(now_ms())
    .bind(&task_id)
    .bind(&sprint_id)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Err(ApiError::NotFound("task in this sprint"));
    }
    let change =
        Change::on_task("updated", "task", &task_id, &task_id).field("sprint_id", Some(sprint_id.clone()), None);
    record(&mut tx, &sprint.project_id, &auth.user_id, &[change]).await?;
    tx.commit().await?;
    record_snapshot(&state.db, &sprint_id).await?;
    publish_tasks(&state, &access, &[task_id]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartSprint {
    /// Overrides the planned start date.
    start_date: Option<NaiveDate>,
}

/// Start a planned sprint (members and above); a project runs one sprint at a time.
#[utoipa::path(post, path = "/{sprint_id}/start", tag = "sprints", security(("bearer" = [])), request_body = StartSprint,
    responses((status = 200, body = Sprint), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn start_sprint(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
    AppJson(req): AppJson<StartSprint>,
) -> ApiResult<AppJson<Sprint>> {
    let (sprint, access) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    access.require_write()?;
    let start = req.start_date.unwrap_or(sprint.start_date);
    check_dates(start, sprint.end_date)?;
    let started = sqlx::query(
        "UPDATE sprints SET status = 'active', start_date = $1, started_at = $2, updated_at = $2 \
         WHERE id = $3 AND status = 'planned'",
    )
    .bind(date_text(Some(start)))
    .bind(now_ms())
    .bind(&sprint_id)
    .execute(state.db.pool())
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => ApiError::conflict("sprint_running", "the project already has an active sprint"),
        other => other,
    })?;
    if started.rows_affected() == 0 {
        return Err(ApiError::conflict("not_planned", "only a planned sprint can start"));
    }
    let change = Change::new("started", "sprint", &sprint_id);
    record_on_pool(&state.db, &sprint.project_id, &auth.user_id, &[change]).await?;
    record_snapshot(&state.db, &sprint_id).await?;
    let sprint = load_sprint(&state.db, &sprint_id).await?;
    projects::publish(&state, &access.team_id, "sprint.started", json!(sprint)).await?;
    Ok(AppJson(sprint))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteSprint {
    /// A planned sprint of the project for the unfinished tasks; absent or null: the backlog.
    move_unfinished_to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CompletedSprint {
    sprint: Sprint,
    /// The unfinished tasks that left the sprint.
    moved_task_ids: Vec<String>,
}

/// Complete the active sprint (members and above): unfinished tasks (not in a `done` column)
/// go to the backlog or to the named planned sprint.
#[utoipa::path(post, path = "/{sprint_id}/complete", tag = "sprints", security(("bearer" = [])),
    request_body = CompleteSprint,
    responses((status = 200, body = CompletedSprint), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn complete_sprint(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
    AppJson(req): AppJson<CompleteSprint>,
) -> ApiResult<AppJson<CompletedSprint>> {
    let (sprint, access) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    access.require_write()?;
    if let Some(next) = &req.move_unfinished_to {
        let ok = load_sprint(&state.db, next)
            .await
            .is_ok_and(|n| n.project_id == sprint.project_id && n.status == SprintStatus::Planned);
        if !ok {
            return Err(ApiError::field(
                "move_unfinished_to",
                "must be a planned sprint of the same project",
            ));
        }
    }
    // The final state is the last snapshot; after completion the sprint records no more.
    record_snapshot(&state.db, &sprint_id).await?;
    let completed = sqlx::query(
        "UPDATE sprints SET status = 'completed', completed_at = $1, updated_at = $1 WHERE id = $2 AND status = 'active'",
    )
    .bind(now_ms())
    .bind(&sprint_id)
    .execute(state.db.pool())
    .await?;
    if completed.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "not_active",
            "only an active sprint can be completed",
        ));
    }
    let change = Change::new("completed", "sprint", &sprint_id);
    record_on_pool(&state.db, &sprint.project_id, &auth.user_id, &[change]).await?;
    let moved = move_tasks(
        &state.db,
        &sprint.project_id,
        &auth.user_id,
        "WHERE sprint_id = $2 AND column_id IN (SELECT id FROM board_columns WHERE category <> 'done')",
        &sprint_id,
        Some(&sprint_id),
        req.move_unfinished_to.as_deref(),
    )
    .await?;
    publish_tasks(&state, &access, &moved).await?;
    let sprint = load_sprint(&state.db, &sprint_id).await?;
    projects::publish(&state, &access.team_id, "sprint.completed", json!(sprint)).await?;
    Ok(AppJson(CompletedSprint {
        sprint,
        moved_task_ids: moved,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BurndownDay {
    date: NaiveDate,
    total_tasks: i64,
    remaining_tasks: i64,
    total_points: i64,
    remaining_points: i64,
    /// The straight line from the first day's total points to zero on the end date.
    ideal_points: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Burndown {
    sprint_id: String,
    /// The sprint's name.
    name: String,
    status: SprintStatus,
    start_date: NaiveDate,
    end_date: NaiveDate,
    /// One entry per day from the start date to the end date (or today, or completion,
    /// whichever is first); empty before the sprint starts.
    days: Vec<BurndownDay>,
}

/// One entry per day from `start` through the later of `until` and the last snapshot, never
/// past `end`. Each day shows the last snapshot taken on or before it; days before the first
/// snapshot show the first.
fn burndown_days(
    start: NaiveDate,
    end: NaiveDate,
    until: NaiveDate,
    snapshots: &[(NaiveDate, [i64; 4])],
) -> Vec<BurndownDay> {
    let Some(&(_, first)) = snapshots.first() else {
        return Vec::new();
    };
    let last_snapshot = snapshots.last().map_or(start, |s| s.0);
    let last_day = until.max(last_snapshot).min(end);
    let span = (end - start).num_days().max(1) as f64;
    let mut values = first;
    let mut next = snapshots.iter().peekable();
    let mut days = Vec::new();
    let mut date = start;
    while date <= last_day {
        while let Some(&&(day, v)) = next.peek() {
            if day > date {
                break;
            }
            values = v;
            next.next();
        }
        let elapsed = (date - start).num_days() as f64;
        days.push(BurndownDay {
            date,
            total_tasks: values[0],
            remaining_tasks: values[1],
            total_points: values[2],
            remaining_points: values[3],
            ideal_points: (first[2] as f64 * (1.0 - elapsed / span)).max(0.0),
        });
        match date.succ_opt() {
            Some(d) => date = d,
            None => break,
        }
    }
    days
}

/// The sprint's daily burndown.
#[utoipa::path(get, path = "/{sprint_id}/burndown", tag = "sprints", security(("bearer" = [])),
    responses((status = 200, body = Burndown), (status = 404, body = convene_proto::ErrorBody)))]
async fn burndown(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(sprint_id): AppPath<String>,
) -> ApiResult<AppJson<Burndown>> {
    let (sprint, _) = sprint_access(&state.db, &sprint_id, &auth.user_id).await?;
    Ok(AppJson(burndown_of(&state.db, sprint).await?))
}

/// The burndown of the project's active sprint, else of its most recently started one; `None`
/// when no sprint has started.
pub(crate) async fn project_burndown(db: &Db, project_id: &str) -> ApiResult<Option<Burndown>> {
    let id: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM sprints WHERE project_id = $1 AND status <> 'planned' \
         ORDER BY CASE WHEN status = 'active' THEN 0 ELSE 1 END, started_at DESC, id DESC LIMIT 1",
    )
    .bind(project_id)
    .fetch_optional(db.pool())
    .await?;
    match id {
        Some((id,)) => Ok(Some(burndown_of(db, load_sprint(db, &id).await?).await?)),
        None => Ok(None),
    }
}

async fn burndown_of(db: &Db, sprint: Sprint) -> ApiResult<Burndown> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT day, total_tasks, remaining_tasks, total_points, remaining_points FROM sprint_snapshots \
         WHERE sprint_id = $1 ORDER BY day",
    )
    .bind(&sprint.id)
    .fetch_all(db.pool())
    .await?;
    let snapshots = rows
        .into_iter()
        .map(|(day, a, b, c, d)| Ok((parse_date(Some(day))?.unwrap_or_default(), [a, b, c, d])))
        .collect::<ApiResult<Vec<_>>>()?;
    let until = sprint.completed_at.map_or_else(today, |t| t.date_naive());
    let days = burndown_days(sprint.start_date, sprint.end_date, until, &snapshots);
    Ok(Burndown {
        sprint_id: sprint.id,
        name: sprint.name,
        status: sprint.status,
        start_date: sprint.start_date,
        end_date: sprint.end_date,
        days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn days_carry_the_last_snapshot_forward() {
        let snapshots = [(d("2026-03-02"), [4, 4, 10, 10]), (d("2026-03-04"), [4, 2, 10, 6])];
        let days = burndown_days(d("2026-03-01"), d("2026-03-05"), d("2026-03-04"), &snapshots);
        let remaining: Vec<_> = days.iter().map(|b| (b.date, b.remaining_points)).collect();
        assert_eq!(
            remaining,
            [
                (d("2026-03-01"), 10),
                (d("2026-03-02"), 10),
                (d("2026-03-03"), 10),
                (d("2026-03-04"), 6)
            ]
        );
        assert_eq!(days[0].ideal_points, 10.0);
        assert_eq!(days[2].ideal_points, 5.0);
        // Never past the end date, and nothing before the sprint starts.
        assert_eq!(
            burndown_days(d("2026-03-01"), d("2026-03-02"), d("2026-04-01"), &snapshots).len(),
            2
        );
        assert!(burndown_days(d("2026-03-01"), d("2026-03-05"), d("2026-03-04"), &[]).is_empty());
    }
}
