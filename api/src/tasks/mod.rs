//! Tasks: `/api/v1/projects/{project_id}/tasks` (create, filtered keyset listing) and
//! `/api/v1/tasks/{task_id}` (read, edit, archive, delete), with assignees, labels, subtasks,
//! comments and relations.
//!
//! Each task has a readable key (`WEB-42`): the number comes from the project's counter,
//! taken with one `UPDATE ... RETURNING` inside the creating transaction, so concurrent
//! creates never share a number. Every change bumps the task's `version`; edits and moves may
//! name the version they expect and get 409 with the current task when it is stale. Every
//! change is published to the team's members as `task.created`, `task.updated`,
//! `task.moved` or `task.deleted`.

mod comments;
mod details;
mod labels;

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use convene_proto::ErrorDetail;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, Event, Origin};
use crate::boards::{self, PLACEMENT_ATTEMPTS, is_key_collision, placement_failed};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::notifications::{self, NewNotification};
use crate::pagination::Page;
use crate::projects::activity::{self, Change, Diff, record};
use crate::projects::{self, Access, archived_at, date_text, parse_date, text_enum};
use crate::sprints;
use crate::state::AppState;
use crate::time::from_ms;
use crate::timesheets;
use crate::validate;

pub(crate) use details::TaskDetail;

/// Tells `users` (never the actor) about a task through the notification system: an in-app
/// notification, pushed in real time.
pub(crate) async fn notify(
    state: &AppState,
    team_id: &str,
    users: &[String],
    actor: &str,
    reason: &'static str,
    title: String,
    message: String,
) -> ApiResult<()> {
    let mut conn = state.db.pool().acquire().await?;
    for user in users.iter().filter(|u| *u != actor) {
        let n = notifications::insert(
            &mut conn,
            NewNotification {
                user_id: user,
                team_id: Some(team_id),
                kind: notifications::Kind::Info,
                reason,
                title: title.clone(),
                message: message.clone(),
                channel_id: None,
                message_id: None,
            },
        )
        .await?;
        notifications::publish_created(state, &n);
    }
    Ok(())
}

/// Routes under `/api/v1/projects`.
pub(crate) fn project_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_task, list_tasks))
}

/// Routes under `/api/v1/tasks`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_task, update_task, delete_task))
        .merge(details::router())
        .merge(comments::router())
        .merge(timesheets::task_router())
        .merge(activity::task_router())
}

/// Routes under `/api/v1/labels`.
pub(crate) fn labels_router() -> OpenApiRouter<AppState> {
    labels::router()
}

text_enum!(
    Priority { Low = "low", Medium = "medium", High = "high", Urgent = "urgent" }
);

#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Task {
    pub(crate) id: String,
    /// Readable key: the project's prefix and the task's number, such as `WEB-42`.
    key: String,
    number: i64,
    pub(crate) project_id: String,
    board_id: String,
    pub(crate) column_id: String,
    pub(crate) sprint_id: Option<String>,
    title: String,
    /// Markdown.
    description: Option<String>,
    priority: Priority,
    assignee_ids: Vec<String>,
    label_ids: Vec<String>,
    start_date: Option<NaiveDate>,
    due_date: Option<NaiveDate>,
    /// Story points.
    estimate: Option<i64>,
    /// Ordering key within the column.
    pub(crate) rank: String,
    /// Incremented by every change; pass it back as `expected_version`.
    pub(crate) version: i64,
    archived: bool,
    archived_at: Option<DateTime<Utc>>,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Task {
    /// Readable key such as `WEB-42`.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

#[derive(FromRow)]
struct TaskRow {
    id: String,
    key_prefix: String,
    number: i64,
    project_id: String,
    board_id: String,
    column_id: String,
    sprint_id: Option<String>,
    title: String,
    description: Option<String>,
    priority: String,
    start_date: Option<String>,
    due_date: Option<String>,
    estimate: Option<i64>,
    rank: String,
    version: i64,
    archived_at: Option<i64>,
    created_by: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TaskRow> for Task {
    type Error = ApiError;
    fn try_from(r: TaskRow) -> ApiResult<Self> {
        Ok(Self {
            key: format!("{}-{}", r.key_prefix, r.number),
            priority: Priority::parse(&r.priority)?,
            start_date: parse_date(r.start_date)?,
            due_date: parse_date(r.due_date)?,
            archived: r.archived_at.is_some(),
            archived_at: r.archived_at.map(from_ms),
            id: r.id,
            number: r.number,
            project_id: r.project_id,
            board_id: r.board_id,
            column_id: r.column_id,
            sprint_id: r.sprint_id,
            title: r.title,
            description: r.description,
            assignee_ids: Vec::new(),
            label_ids: Vec::new(),
            estimate: r.estimate,
            rank: r.rank,
            version: r.version,
            created_by: r.created_by,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        })
    }
}

const TASK_SELECT: &str = "SELECT t.id, p.key_prefix, t.number, t.project_id, c.board_id, t.column_id, \
     t.sprint_id, t.title, t.description, t.priority, t.start_date, t.due_date, t.estimate, t.rank, t.version, \
     t.archived_at, t.created_by, t.created_at, t.updated_at \
     FROM tasks t JOIN projects p ON p.id = t.project_id JOIN board_columns c ON c.id = t.column_id";

/// `$first, $first+1, ...` for `n` bind parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns rows into tasks with their assignees and labels (two queries for the whole batch).
async fn complete(db: &Db, rows: Vec<TaskRow>) -> ApiResult<Vec<Task>> {
    let mut tasks = rows.into_iter().map(Task::try_from).collect::<ApiResult<Vec<_>>>()?;
    if tasks.is_empty() {
        return Ok(tasks);
    }
    let index: HashMap<String, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
    let ids = placeholders(1, tasks.len());
    for (sql, is_label) in [
        (
            format!("SELECT task_id, user_id FROM task_assignees WHERE task_id IN ({ids}) ORDER BY user_id"),
            false,
        ),
        (
            format!("SELECT task_id, label_id FROM task_labels WHERE task_id IN ({ids}) ORDER BY label_id"),
            true,
        ),
    ] {
        let mut q = sqlx::query_as::<_, (String, String)>(&sql);
        for t in &tasks {
            q = q.bind(t.id.clone());
        }
        for (task_id, other) in q.fetch_all(db.pool()).await? {
            if let Some(&i) = index.get(&task_id) {
                let list = if is_label {
                    &mut tasks[i].label_ids
                } else {
                    &mut tasks[i].assignee_ids
                };
                list.push(other);
            }
        }
    }
    Ok(tasks)
}

pub(crate) async fn load_task(db: &Db, task_id: &str) -> ApiResult<Task> {
    let row: TaskRow = sqlx::query_as(&format!("{TASK_SELECT} WHERE t.id = $1"))
        .bind(task_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("task"))?;
    complete(db, vec![row]).await?.pop().ok_or(ApiError::NotFound("task"))
}

/// The unarchived tasks of a board, in column order.
pub(crate) async fn board_tasks(db: &Db, board_id: &str) -> ApiResult<Vec<Task>> {
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "{TASK_SELECT} WHERE c.board_id = $1 AND t.archived_at IS NULL ORDER BY t.rank"
    ))
    .bind(board_id)
    .fetch_all(db.pool())
    .await?;
    complete(db, rows).await
}

/// The task and the caller's access to its project (404 for outsiders and unknown tasks).
pub(crate) async fn task_access(db: &Db, task_id: &str, user_id: &str) -> ApiResult<(Task, Access)> {
    let task = load_task(db, task_id).await?;
    let access = projects::access(db, &task.project_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("task"))?;
    Ok((task, access))
}

/// 409 body of a stale `expected_version`: the error and the task as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct VersionConflict {
    error: ErrorDetail,
    task: Task,
}

/// A task handler's failure: any API error, or a stale version answered with the current task.
#[derive(Debug)]
pub(crate) enum TaskError {
    Api(ApiError),
    Stale(Box<Task>),
}

impl From<ApiError> for TaskError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<sqlx::Error> for TaskError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for TaskError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Stale(task) => {
                let body = VersionConflict {
                    error: ErrorDetail {
                        code: "version_conflict".to_owned(),
                        message: "the task changed since that version; the current task is attached".to_owned(),
                        fields: Default::default(),
                    },
                    task: *task,
                };
                (StatusCode::CONFLICT, axum::Json(body)).into_response()
            }
        }
    }
}

/// Checks that every id is a member of the team (assignees) and returns them deduplicated.
async fn team_users(db: &Db, team_id: &str, ids: &[String]) -> ApiResult<Vec<String>> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    if ids.len() > 50 {
        return Err(ApiError::field("assignee_ids", "at most 50 assignees"));
    }
    for id in &ids {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT user_id FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(team_id)
                .bind(id)
                .fetch_optional(db.pool())
                .await?;
        if found.is_none() {
            return Err(ApiError::field(
                "assignee_ids",
                "every assignee must be a member of the team",
            ));
        }
    }
    Ok(ids)
}

/// Checks that every id is a label of the team and returns them deduplicated.
async fn team_labels(db: &Db, team_id: &str, ids: &[String]) -> ApiResult<Vec<String>> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    if ids.len() > 50 {
        return Err(ApiError::field("label_ids", "at most 50 labels"));
    }
    for id in &ids {
        let found: Option<(String,)> = sqlx::query_as("SELECT id FROM labels WHERE team_id = $1 AND id = $2")
            .bind(team_id)
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
        if found.is_none() {
            return Err(ApiError::field("label_ids", "every label must belong to the team"));
        }
    }
    Ok(ids)
}

/// A sprint of the project that still takes tasks.
async fn open_sprint(db: &Db, project_id: &str, sprint_id: &str) -> ApiResult<()> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM sprints WHERE id = $1 AND project_id = $2 AND status <> 'completed'")
            .bind(sprint_id)
            .bind(project_id)
            .fetch_optional(db.pool())
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::field("sprint_id", "must be a planned or active sprint of the project"))
}

async fn replace_links(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    task_id: &str,
    assignees: Option<&[String]>,
    labels: Option<&[String]>,
) -> ApiResult<()> {
    if let Some(users) = assignees {
        sqlx::query("DELETE FROM task_assignees WHERE task_id = $1")
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
        for user in users {
            sqlx::query("INSERT INTO task_assignees (task_id, user_id) VALUES ($1, $2)")
                .bind(task_id)
                .bind(user)
                .execute(&mut **tx)
                .await?;
        }
    }
    if let Some(labels) = labels {
        sqlx::query("DELETE FROM task_labels WHERE task_id = $1")
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
        for label in labels {
            sqlx::query("INSERT INTO task_labels (task_id, label_id) VALUES ($1, $2)")
                .bind(task_id)
                .bind(label)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

fn estimate(v: Option<i64>) -> ApiResult<Option<i64>> {
    match v {
        Some(e) if !(0..=10_000).contains(&e) => Err(ApiError::field("estimate", "must be 0-10000 points")),
        other => Ok(other),
    }
}

fn check_dates(start: Option<NaiveDate>, due: Option<NaiveDate>) -> ApiResult<()> {
    match (start, due) {
        (Some(s), Some(d)) if d < s => Err(ApiError::field("due_date", "must not be before start_date")),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTask {
    title: String,
    /// Markdown.
    description: Option<String>,
    /// Default: the first column of the project's first board.
    column_id: Option<String>,
    /// Default: `medium`.
    priority: Option<Priority>,
    #[serde(default)]
    assignee_ids: Vec<String>,
    #[serde(default)]
    label_ids: Vec<String>,
    start_date: Option<NaiveDate>,
    due_date: Option<NaiveDate>,
    estimate: Option<i64>,
    /// A planned or active sprint; default: the backlog (no sprint).
    sprint_id: Option<String>,
}

/// Create a task (members and above); it goes last in its column.
#[utoipa::path(post, path = "/{project_id}/tasks", tag = "tasks", security(("bearer" = [])), request_body = CreateTask,
    responses((status = 201, body = Task), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_task(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppJson(req): AppJson<CreateTask>,
) -> ApiResult<(StatusCode, AppJson<Task>)> {
    let access = projects::access(&state.db, &project_id, &auth.user_id).await?;
    access.require_write()?;
    let title = validate::name("title", &req.title, 300)?;
    let description = validate::text("description", req.description.as_deref(), 100_000)?;
    let estimate = estimate(req.estimate)?;
    check_dates(req.start_date, req.due_date)?;
    let column_id = match &req.column_id {
        Some(c) => {
            let found: Option<(String,)> = sqlx::query_as(
                "SELECT c.id FROM board_columns c JOIN boards b ON b.id = c.board_id \
                 WHERE c.id = $1 AND b.project_id = $2",
            )
            .bind(c)
            .bind(&project_id)
            .fetch_optional(state.db.pool())
            .await?;
            found
                .ok_or_else(|| ApiError::field("column_id", "is not a column of this project"))?
                .0
        }
        None => {
            let first: Option<(String,)> = sqlx::query_as(
                "SELECT c.id FROM board_columns c WHERE c.board_id = \
                 (SELECT MIN(b.id) FROM boards b WHERE b.project_id = $1) ORDER BY c.rank LIMIT 1",
            )
            .bind(&project_id)
            .fetch_optional(state.db.pool())
            .await?;
            first
                .ok_or_else(|| ApiError::field("column_id", "the project has no column; give one"))?
                .0
        }
    };
    let assignees = team_users(&state.db, &access.team_id, &req.assignee_ids).await?;
    let labels = team_labels(&state.db, &access.team_id, &req.label_ids).await?;
    if let Some(s) = &req.sprint_id {
        open_sprint(&state.db, &project_id, s).await?;
    }
    let new = NewTask {
        id: new_id(),
        project_id,
        column_id,
        title,
        description,
        estimate,
        assignees,
        labels,
        creator: auth.user_id,
    };
    let mut attempt = 0;
    loop {
        match insert_task(&state.db, &new, &req).await {
            Err(e) if is_key_collision(&e) && attempt + 1 < PLACEMENT_ATTEMPTS => attempt += 1,
            other => break other.map_err(placement_failed)?,
        }
    }
    let task = load_task(&state.db, &new.id).await?;
    if let Some(s) = &task.sprint_id {
        sprints::record_snapshot(&state.db, s).await?;
    }
    let what = format!("created {} \u{201c}{}\u{201d}", task.key, task.title);
    projects::publish_task_change(
        &state,
        &access.team_id,
        &task.project_id,
        &new.creator,
        "task.created",
        json!(task),
        &what,
    )
    .await?;
    let (title, key) = (format!("Assigned to you: {}", task.title), task.key.clone());
    notify(
        &state,
        &access.team_id,
        &task.assignee_ids,
        &new.creator,
        "assigned",
        title,
        key,
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(task)))
}

/// A validated task to insert (the rest comes from the request as given).
struct NewTask {
    id: String,
    project_id: String,
    column_id: String,
    title: String,
    description: Option<String>,
    estimate: Option<i64>,
    assignees: Vec<String>,
    labels: Vec<String>,
    creator: String,
}

/// Inserts the task with the project's next number, last in its column.
async fn insert_task(db: &Db, new: &NewTask, req: &CreateTask) -> ApiResult<()> {
    let now = now_ms();
    let mut tx = db.pool().begin().await?;
    // The counter row is locked until commit, so numbers are unique and gap-free per project.
    let (next,): (i64,) = sqlx::query_as(
        "UPDATE projects SET next_task_number = next_task_number + 1 WHERE id = $1 RETURNING next_task_number",
    )
    .bind(&new.project_id)
    .fetch_one(&mut *tx)
    .await?;
    let (last,): (Option<String>,) = sqlx::query_as("SELECT MAX(rank) FROM tasks WHERE column_id = $1")
        .bind(&new.column_id)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO tasks (id, project_id, number, column_id, sprint_id, title, description, priority, \
         start_date, due_date, estimate, rank, version, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14)",
    )
    .bind(&new.id)
    .bind(&new.project_id)
    .bind(next - 1)
    .bind(&new.column_id)
    .bind(&req.sprint_id)
    .bind(&new.title)
    .bind(&new.description)
    .bind(req.priority.unwrap_or(Priority::Medium).as_str())
    .bind(date_text(req.start_date))
    .bind(date_text(req.due_date))
    .bind(new.estimate)
    .bind(boards::rank::between(last.as_deref(), None))
    .bind(&new.creator)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    replace_links(&mut tx, &new.id, Some(&new.assignees), Some(&new.labels)).await?;
    let created = Change::on_task("created", "task", &new.id, &new.id);
    record(&mut tx, &new.project_id, &new.creator, &[created]).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskQuery {
    /// Tasks assigned to this user.
    assignee_id: Option<String>,
    /// Tasks carrying this label.
    label_id: Option<String>,
    column_id: Option<String>,
    priority: Option<Priority>,
    /// A sprint's id, or `backlog` for tasks in no sprint.
    sprint_id: Option<String>,
    /// Due on or after this date.
    due_from: Option<NaiveDate>,
    /// Due on or before this date.
    due_to: Option<NaiveDate>,
    /// Words in the title or description (case-insensitive for ASCII).
    q: Option<String>,
    /// Include archived tasks (default false).
    #[serde(default)]
    include_archived: bool,
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
}

/// The project's tasks in creation order, filtered, in keyset pages.
#[utoipa::path(get, path = "/{project_id}/tasks", tag = "tasks", security(("bearer" = [])), params(TaskQuery),
    responses((status = 200, body = Page<Task>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_tasks(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppQuery(q): AppQuery<TaskQuery>,
) -> ApiResult<AppJson<Page<Task>>> {
    projects::access(&state.db, &project_id, &auth.user_id).await?;
    let limit = i64::from(q.limit.unwrap_or(50).clamp(1, 200));
    let mut sql = format!("{TASK_SELECT} WHERE t.project_id = $1 AND t.id > $2");
    let mut args = vec![project_id, q.after.clone().unwrap_or_default()];
    if q.sprint_id.as_deref() == Some("backlog") {
        sql.push_str(" AND t.sprint_id IS NULL");
    }
    if !q.include_archived {
        sql.push_str(" AND t.archived_at IS NULL");
    }
    let mut filter = |clause: &str, value: String| {
        args.push(value);
        sql.push_str(&clause.replace("$?", &format!("${}", args.len())));
    };
    if let Some(a) = &q.assignee_id {
        filter(
            " AND EXISTS (SELECT 1 FROM task_assignees a WHERE a.task_id = t.id AND a.user_id = $?)",
            a.clone(),
        );
    }
    if let Some(l) = &q.label_id {
        filter(
            " AND EXISTS (SELECT 1 FROM task_labels l WHERE l.task_id = t.id AND l.label_id = $?)",
            l.clone(),
        );
    }
    if let Some(c) = &q.column_id {
        filter(" AND t.column_id = $?", c.clone());
    }
    if let Some(p) = q.priority {
        filter(" AND t.priority = $?", p.as_str().to_owned());
    }
    if let Some(s) = q.sprint_id.as_deref().filter(|s| *s != "backlog") {
        filter(" AND t.sprint_id = $?", s.to_owned());
    }
    if let Some(d) = q.due_from {
        filter(" AND t.due_date >= $?", d.format("%Y-%m-%d").to_string());
    }
    if let Some(d) = q.due_to {
        filter(" AND t.due_date <= $?", d.format("%Y-%m-%d").to_string());
    }
    if let Some(text) = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        let escaped = text
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        filter(
            " AND (LOWER(t.title) LIKE $? ESCAPE '\\' OR LOWER(COALESCE(t.description, '')) LIKE $? ESCAPE '\\')",
            format!("%{escaped}%"),
        );
    }
    sql.push_str(&format!(" ORDER BY t.id LIMIT ${}", args.len() + 1));
    let mut query = sqlx::query_as::<_, TaskRow>(&sql);
    for a in args {
        query = query.bind(a);
    }
    let rows = query.bind(limit + 1).fetch_all(state.db.pool()).await?;
    let tasks = complete(&state.db, rows).await?;
    Ok(AppJson(Page::from_rows(tasks, limit, |t| t.id.clone())))
}

/// A task with its subtasks and relations.
#[utoipa::path(get, path = "/{task_id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, body = TaskDetail), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_task(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
) -> ApiResult<AppJson<TaskDetail>> {
    let (task, _) = task_access(&state.db, &task_id, &auth.user_id).await?;
    Ok(AppJson(details::detail(&state.db, task).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateTask {
    title: Option<String>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    priority: Option<Priority>,
    /// Replaces the assignees.
    assignee_ids: Option<Vec<String>>,
    /// Replaces the labels.
    label_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    start_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<NaiveDate>)]
    due_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<i64>)]
    estimate: Option<Option<i64>>,
    /// A planned or active sprint, or `null` for the backlog.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    sprint_id: Option<Option<String>>,
    /// Archive (true) or restore (false).
    archived: Option<bool>,
    /// Apply only if the task still has this version (else 409 with the current task).
    expected_version: Option<i64>,
}

/// Edit, archive or restore a task (members and above). Columns and order change through
/// the board's move endpoint.
#[utoipa::path(patch, path = "/{task_id}", tag = "tasks", security(("bearer" = [])), request_body = UpdateTask,
    responses((status = 200, body = Task), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = VersionConflict),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn update_task(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppJson(req): AppJson<UpdateTask>,
) -> Result<AppJson<Task>, TaskError> {
    let (current, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let expected = req.expected_version.unwrap_or(current.version);
    if expected != current.version {
        return Err(TaskError::Stale(Box::new(current)));
    }
    let title = match &req.title {
        Some(t) => validate::name("title", t, 300)?,
        None => current.title.clone(),
    };
    let description = match &req.description {
        Some(d) => validate::text("description", d.as_deref(), 100_000)?,
        None => current.description.clone(),
    };
    let start_date = req.start_date.unwrap_or(current.start_date);
    let due_date = req.due_date.unwrap_or(current.due_date);
    check_dates(start_date, due_date)?;
    let estimate = estimate(req.estimate.unwrap_or(current.estimate))?;
    let sprint_id = req.sprint_id.clone().unwrap_or_else(|| current.sprint_id.clone());
    if let Some(s) = &sprint_id
        && current.sprint_id.as_ref() != Some(s)
    {
        open_sprint(&state.db, &current.project_id, s).await?;
    }
    let assignees = match &req.assignee_ids {
        Some(ids) => Some(team_users(&state.db, &access.team_id, ids).await?),
        None => None,
    };
    let labels = match &req.label_ids {
        Some(ids) => Some(team_labels(&state.db, &access.team_id, ids).await?),
        None => None,
    };
    let now = now_ms();
    let archived_at = archived_at(req.archived, current.archived_at, now);
    let priority = req.priority.unwrap_or(current.priority);
    let mut diff = Diff::new(Change::on_task("updated", "task", &task_id, &task_id));
    diff.field("title", Some(current.title.clone()), Some(title.clone()));
    diff.field("description", current.description.clone(), description.clone());
    let text = |p: Priority| Some(p.as_str().to_owned());
    diff.field("priority", text(current.priority), text(priority));
    diff.field("start_date", date_text(current.start_date), date_text(start_date));
    diff.field("due_date", date_text(current.due_date), date_text(due_date));
    let number = |e: Option<i64>| e.map(|e| e.to_string());
    diff.field("estimate", number(current.estimate), number(estimate));
    diff.field("sprint_id", current.sprint_id.clone(), sprint_id.clone());
    let flag = |a: bool| Some(a.to_string());
    diff.field("archived", flag(current.archived), flag(archived_at.is_some()));
    let list = |ids: &[String]| Some(ids.join(","));
    if let Some(a) = &assignees {
        diff.field("assignee_ids", list(&current.assignee_ids), list(a));
    }
    if let Some(l) = &labels {
        diff.field("label_ids", list(&current.label_ids), list(l));
    }
    let mut tx = state.db.pool().begin().await?;
    let updated = sqlx::query(
        "UPDATE tasks SET title = $1, description = $2, priority = $3, start_date = $4, due_date = $5, \
         estimate = $6, sprint_id = $7, archived_at = $8, version = version + 1, updated_at = $9 \
         WHERE id = $10 AND version = $11",
    )
    .bind(&title)
    .bind(&description)
    .bind(priority.as_str())
    .bind(date_text(start_date))
    .bind(date_text(due_date))
    .bind(estimate)
    .bind(&sprint_id)
    .bind(archived_at)
    .bind(now)
    .bind(&task_id)
    .bind(expected)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        drop(tx);
        return Err(TaskError::Stale(Box::new(load_task(&state.db, &task_id).await?)));
    }
    replace_links(&mut tx, &task_id, assignees.as_deref(), labels.as_deref()).await?;
    record(&mut tx, &current.project_id, &auth.user_id, &diff.changes).await?;
    tx.commit().await?;
    let task = load_task(&state.db, &task_id).await?;
    for sprint in [&current.sprint_id, &task.sprint_id].into_iter().flatten() {
        sprints::record_snapshot(&state.db, sprint).await?;
    }
    let fields: Vec<&str> = diff.changes.iter().filter_map(|c| c.field).collect();
    let what = if fields.is_empty() {
        format!("updated {}", task.key)
    } else {
        format!("updated {} ({})", task.key, fields.join(", "))
    };
    projects::publish_task_change(
        &state,
        &access.team_id,
        &task.project_id,
        &auth.user_id,
        "task.updated",
        json!(task),
        &what,
    )
    .await?;
    let added: Vec<String> = task
        .assignee_ids
        .iter()
        .filter(|u| !current.assignee_ids.contains(u))
        .cloned()
        .collect();
    let (title, key) = (format!("Assigned to you: {}", task.title), task.key.clone());
    notify(&state, &access.team_id, &added, &auth.user_id, "assigned", title, key).await?;
    Ok(AppJson(task))
}

/// Delete a task with its subtasks, comments, relations and time entries (members and above).
#[utoipa::path(delete, path = "/{task_id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_task(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(task_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (task, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let mut tx = state.db.pool().begin().await?;
    sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(&task_id)
        .execute(&mut *tx)
        .await?;
    let gone = Change::on_task("deleted", "task", &task_id, &task_id).field("title", Some(task.title.clone()), None);
    record(&mut tx, &task.project_id, &auth.user_id, &[gone]).await?;
    let event = Event::new("task.deleted", Some(&auth.user_id), "task", &task_id)
        .team(&access.team_id)
        .metadata(json!({ "key": task.key, "title": task.title, "project_id": task.project_id }));
    audit::record(&mut *tx, &origin, event).await?;
    tx.commit().await?;
    if let Some(s) = &task.sprint_id {
        sprints::record_snapshot(&state.db, s).await?;
    }
    let data = json!({ "id": task.id, "project_id": task.project_id, "column_id": task.column_id });
    let what = format!("deleted {} \u{201c}{}\u{201d}", task.key, task.title);
    projects::publish_task_change(
        &state,
        &access.team_id,
        &task.project_id,
        &auth.user_id,
        "task.deleted",
        data,
        &what,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Records `changes` to a task's parts (subtasks, relations, comments) by `actor` and
/// publishes `task.updated` for the task.
async fn touched(state: &AppState, access: &Access, actor: &str, task_id: &str, changes: &[Change]) -> ApiResult<()> {
    let task = load_task(&state.db, task_id).await?;
    if !changes.is_empty() {
        let mut conn = state.db.pool().acquire().await?;
        record(&mut conn, &task.project_id, actor, changes).await?;
    }
    let what = format!("updated {}", task.key);
    projects::publish_task_change(
        state,
        &access.team_id,
        &task.project_id,
        actor,
        "task.updated",
        json!(task),
        &what,
    )
    .await
}
