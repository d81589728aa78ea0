//! Time tracking: entries on tasks (`/api/v1/tasks/{task_id}/time-entries`), logged by hand
//! (start and end, or a duration) or with a running timer (`/api/v1/tasks/{task_id}/timer`,
//! `/api/v1/timer`), edited and deleted by their owner (`/api/v1/time-entries/{entry_id}`),
//! and summed in `GET /api/v1/reports/time` by day, user, task or project, as JSON or CSV.
//!
//! A running timer is an entry without an end; a partial unique index allows one per user,
//! so two starts racing each other cannot both succeed.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
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
use crate::tasks::task_access;
use crate::teams::{Role, member_role};
use crate::time::from_ms;
use crate::validate;

/// Routes under `/api/v1/tasks`.
pub(crate) fn task_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_entries, create_entry))
        .routes(routes!(start_timer))
}

/// Routes under `/api/v1/time-entries`.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(update_entry, delete_entry))
}

/// Routes under `/api/v1/timer`.
pub(crate) fn timer_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(running_timer))
        .routes(routes!(stop_timer))
}

/// Routes under `/api/v1/reports`.
pub(crate) fn reports_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(time_report))
}

/// The longest single entry: a week.
const MAX_ENTRY_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TimeEntry {
    id: String,
    user_id: String,
    task_id: String,
    task_key: String,
    project_id: String,
    started_at: DateTime<Utc>,
    /// Absent while the timer runs.
    ended_at: Option<DateTime<Utc>>,
    /// Whole seconds; absent while the timer runs.
    duration_seconds: Option<i64>,
    note: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct EntryRow {
    id: String,
    user_id: String,
    task_id: String,
    key_prefix: String,
    number: i64,
    project_id: String,
    started_at: i64,
    ended_at: Option<i64>,
    note: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<EntryRow> for TimeEntry {
    fn from(r: EntryRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            task_id: r.task_id,
            task_key: format!("{}-{}", r.key_prefix, r.number),
            project_id: r.project_id,
            started_at: from_ms(r.started_at),
            ended_at: r.ended_at.map(from_ms),
            duration_seconds: r.ended_at.map(|e| (e - r.started_at) / 1000),
            note: r.note,
            created_at: from_ms(r.created_at),
            updated_at: from_ms(r.updated_at),
        }
    }
}

const ENTRY_SELECT: &str = "SELECT e.id, e.user_id, e.task_id, p.key_prefix, t.number, t.project_id, e.started_at, \
     e.ended_at, e.note, e.created_at, e.updated_at \
     FROM time_entries e JOIN tasks t ON t.id = e.task_id JOIN projects p ON p.id = t.project_id";

async fn load_entry(db: &Db, entry_id: &str) -> ApiResult<TimeEntry> {
    let row: EntryRow = sqlx::query_as(&format!("{ENTRY_SELECT} WHERE e.id = $1"))
        .bind(entry_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("time entry"))?;
    Ok(row.into())
}

/// The caller's own entry: 404 when the caller cannot see its task, 403 when it is someone else's.
async fn own_entry(db: &Db, entry_id: &str, user_id: &str) -> ApiResult<TimeEntry> {
    let entry = load_entry(db, entry_id).await?;
    task_access(db, &entry.task_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("time entry"))?;
    if entry.user_id != user_id {
        return Err(ApiError::Forbidden("only the owner may change a time entry"));
    }
    Ok(entry)
}

fn span(started: i64, ended: i64) -> ApiResult<()> {
    if ended <= started {
        return Err(ApiError::field("ended_at", "must be after started_at"));
    }
    if ended - started > MAX_ENTRY_MS {
        return Err(ApiError::field("ended_at", "an entry may span at most 7 days"));
    }
    Ok(())
}

fn timer_conflict(e: sqlx::Error) -> ApiError {
    match ApiError::from(e) {
        ApiError::Conflict { .. } => {
            ApiError::conflict("timer_running", "you already have a running timer; stop it first")
        }
        other => other,
    }
}

/// The task's time entries, oldest first.
#[utoipa::path(get, path = "/{task_id}/time-entries", tag = "time", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<TimeEntry>), (status = 404, body = convene_proto::ErrorBody)))]
async fn list_entries(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppQuery(page): AppQuery<PageQuery>,
) -> ApiResult<AppJson<Page<TimeEntry>>> {
    task_access(&state.db, &task_id, &auth.user_id).await?;
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "{ENTRY_SELECT} WHERE e.task_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3"
    ))
    .bind(&task_id)
    .bind(page.after())
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    let entries = rows.into_iter().map(TimeEntry::from).collect();
    Ok(AppJson(Page::from_rows(entries, page.limit(), |e: &TimeEntry| {
        e.id.clone()
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEntry {
    /// With `ended_at`, or with `duration_minutes` (then the entry starts here).
    started_at: Option<DateTime<Utc>>,
    /// With `started_at`, or with `duration_minutes` (then the entry ends here; default now).
    ended_at: Option<DateTime<Utc>>,
    /// 1-10080 minutes.
    duration_minutes: Option<i64>,
    note: Option<String>,
}

/// Log time on a task by hand (members and above).
#[utoipa::path(post, path = "/{task_id}/time-entries", tag = "time", security(("bearer" = [])), request_body = CreateEntry,
    responses((status = 201, body = TimeEntry), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_entry(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppJson(req): AppJson<CreateEntry>,
) -> ApiResult<(StatusCode, AppJson<TimeEntry>)> {
    let (_, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let note = validate::text("note", req.note.as_deref(), 2000)?;
    let (started, ended) = match (req.started_at, req.ended_at, req.duration_minutes) {
        (Some(s), Some(e), None) => (s.timestamp_millis(), e.timestamp_millis()),
        (start, end, Some(minutes)) if start.is_none() || end.is_none() => {
            if !(1..=MAX_ENTRY_MS / 60_000).contains(&minutes) {
                return Err(ApiError::field("duration_minutes", "must be 1-10080"));
            }
            let d = Duration::minutes(minutes).num_milliseconds();
            match start {
                Some(s) => (s.timestamp_millis(), s.timestamp_millis() + d),
                None => {
                    let e = end.map_or_else(now_ms, |e| e.timestamp_millis());
                    (e - d, e)
                }
            }
        }
        _ => {
            return Err(ApiError::field(
                "duration_minutes",
                "give started_at and ended_at, or duration_minutes with at most one of them",
            ));
        }
    };
    span(started, ended)?;
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO time_entries (id, user_id, task_id, started_at, ended_at, note, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(&auth.user_id)
    .bind(&task_id)
    .bind(started)
    .bind(ended)
    .bind(&note)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    Ok((StatusCode::CREATED, AppJson(load_entry(&state.db, &id).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimerNote {
    note: Option<String>,
}

/// Start a timer on a task (members and above); each user runs at most one.
#[utoipa::path(post, path = "/{task_id}/timer", tag = "time", security(("bearer" = [])), request_body = TimerNote,
    responses((status = 201, body = TimeEntry), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 409, body = convene_proto::ErrorBody)))]
async fn start_timer(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(task_id): AppPath<String>,
    AppJson(req): AppJson<TimerNote>,
) -> ApiResult<(StatusCode, AppJson<TimeEntry>)> {
    let (_, access) = task_access(&state.db, &task_id, &auth.user_id).await?;
    access.require_write()?;
    let note = validate::text("note", req.note.as_deref(), 2000)?;
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO time_entries (id, user_id, task_id, started_at, note, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $4, $4)",
    )
    .bind(&id)
    .bind(&auth.user_id)
    .bind(&task_id)
    .bind(now)
    .bind(&note)
    .execute(state.db.pool())
    .await
    .map_err(timer_conflict)?;
    Ok((StatusCode::CREATED, AppJson(load_entry(&state.db, &id).await?)))
}

async fn running_id(db: &Db, user_id: &str) -> ApiResult<String> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM time_entries WHERE user_id = $1 AND ended_at IS NULL")
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    row.map(|(id,)| id).ok_or(ApiError::NotFound("running timer"))
}

/// The caller's running timer.
#[utoipa::path(get, path = "", tag = "time", security(("bearer" = [])),
    responses((status = 200, body = TimeEntry), (status = 404, body = convene_proto::ErrorBody)))]
async fn running_timer(State(state): State<AppState>, auth: AuthUser) -> ApiResult<AppJson<TimeEntry>> {
    let id = running_id(&state.db, &auth.user_id).await?;
    Ok(AppJson(load_entry(&state.db, &id).await?))
}

/// Stop the caller's running timer, optionally replacing its note.
#[utoipa::path(post, path = "/stop", tag = "time", security(("bearer" = [])), request_body = TimerNote,
    responses((status = 200, body = TimeEntry), (status = 404, body = convene_proto::ErrorBody)))]
async fn stop_timer(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<TimerNote>,
) -> ApiResult<AppJson<TimeEntry>> {
    let note = validate::text("note", req.note.as_deref(), 2000)?;
    let now = now_ms();
    // A timer stops at least a second after it started, so its duration is never zero.
    let stopped: Option<(String,)> = sqlx::query_as(
        "UPDATE time_entries SET ended_at = CASE WHEN started_at + 1000 > $1 THEN started_at + 1000 ELSE $1 END, \
         note = COALESCE($2, note), updated_at = $1 WHERE user_id = $3 AND ended_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(&note)
    .bind(&auth.user_id)
    .fetch_optional(state.db.pool())
    .await?;
    let (id,) = stopped.ok_or(ApiError::NotFound("running timer"))?;
    Ok(AppJson(load_entry(&state.db, &id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateEntry {
    started_at: Option<DateTime<Utc>>,
    /// Only for a stopped entry; stop a running one with `POST /api/v1/timer/stop`.
    ended_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    note: Option<Option<String>>,
}

/// Edit your own time entry.
#[utoipa::path(patch, path = "/{entry_id}", tag = "time", security(("bearer" = [])), request_body = UpdateEntry,
    responses((status = 200, body = TimeEntry), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_entry(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(entry_id): AppPath<String>,
    AppJson(req): AppJson<UpdateEntry>,
) -> ApiResult<AppJson<TimeEntry>> {
    let current = own_entry(&state.db, &entry_id, &auth.user_id).await?;
    let started = req.started_at.unwrap_or(current.started_at).timestamp_millis();
    let ended = match (req.ended_at, current.ended_at) {
        (Some(_), None) => {
            return Err(ApiError::field(
                "ended_at",
                "stop a running timer with /api/v1/timer/stop",
            ));
        }
        (new, old) => new.or(old).map(|e| e.timestamp_millis()),
    };
    match ended {
        Some(e) => span(started, e)?,
        None if started > now_ms() => {
            return Err(ApiError::field(
                "started_at",
                "a running timer cannot start in the future",
            ));
        }
        None => {}
    }
    let note = match &req.note {
        Some(n) => validate::text("note", n.as_deref(), 2000)?,
        None => current.note,
    };
    sqlx::query("UPDATE time_entries SET started_at = $1, ended_at = $2, note = $3, updated_at = $4 WHERE id = $5")
        .bind(started)
        .bind(ended)
        .bind(&note)
        .bind(now_ms())
        .bind(&entry_id)
        .execute(state.db.pool())
        .await?;
    Ok(AppJson(load_entry(&state.db, &entry_id).await?))
}

/// Delete your own time entry.
#[utoipa::path(delete, path = "/{entry_id}", tag = "time", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_entry(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(entry_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    own_entry(&state.db, &entry_id, &auth.user_id).await?;
    sqlx::query("DELETE FROM time_entries WHERE id = $1")
        .bind(&entry_id)
        .execute(state.db.pool())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupBy {
    Day,
    User,
    Task,
    Project,
}

impl GroupBy {
    fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::User => "user",
            Self::Task => "task",
            Self::Project => "project",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReportFormat {
    Json,
    Csv,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportQuery {
    team_id: String,
    project_id: Option<String>,
    user_id: Option<String>,
    /// First day (UTC) of entries counted, by start time.
    from: Option<NaiveDate>,
    /// Last day (UTC), inclusive.
    to: Option<NaiveDate>,
    /// Default `day`.
    group_by: Option<GroupBy>,
    /// `json` (default) or `csv`.
    format: Option<ReportFormat>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReportRow {
    /// The day (`YYYY-MM-DD`), user id, task id or project id.
    key: String,
    /// The day, username, task key and title, or project name.
    label: String,
    entries: i64,
    seconds: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TimeReport {
    group_by: GroupBy,
    rows: Vec<ReportRow>,
    total_entries: i64,
    total_seconds: i64,
}

#[derive(FromRow)]
struct ReportEntry {
    user_id: String,
    username: String,
    task_id: String,
    key_prefix: String,
    number: i64,
    title: String,
    project_id: String,
    project_name: String,
    started_at: i64,
    ended_at: i64,
}

fn csv_field(v: &str) -> String {
    // Quote always; a leading formula character is defused so spreadsheets show text.
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_owned()
    };
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// Time logged in a team (finished entries), grouped by day, user, task or project; team
/// members and above. `format=csv` answers a CSV file with the same rows.
#[utoipa::path(get, path = "/time", tag = "time", security(("bearer" = [])), params(ReportQuery),
    responses((status = 200, description = "The report, as JSON or (format=csv) CSV",
               content((TimeReport = "application/json"), (String = "text/csv"))),
              (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn time_report(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ReportQuery>,
) -> ApiResult<Response> {
    if member_role(&state.db, &q.team_id, &auth.user_id).await? < Role::Member {
        return Err(ApiError::Forbidden("guests cannot see the team's time report"));
    }
    let mut sql = "SELECT e.user_id, u.username, e.task_id, p.key_prefix, t.number, t.title, p.id AS project_id, \
         p.name AS project_name, e.started_at, e.ended_at \
         FROM time_entries e JOIN tasks t ON t.id = e.task_id JOIN projects p ON p.id = t.project_id \
         JOIN users u ON u.id = e.user_id WHERE p.team_id = $1 AND e.ended_at IS NOT NULL"
        .to_owned();
    let mut texts = vec![q.team_id.clone()];
    let mut times = Vec::new();
    if let Some(p) = &q.project_id {
        texts.push(p.clone());
        sql.push_str(&format!(" AND p.id = ${}", texts.len()));
    }
    if let Some(u) = &q.user_id {
        texts.push(u.clone());
        sql.push_str(&format!(" AND e.user_id = ${}", texts.len()));
    }
    let day_ms = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis());
    if let Some(from) = q.from {
        times.push((" AND e.started_at >= ", day_ms(from)));
    }
    if let Some(to) = q.to {
        times.push((" AND e.started_at < ", day_ms(to) + 24 * 3600 * 1000));
    }
    for (i, (clause, _)) in times.iter().enumerate() {
        sql.push_str(&format!("{clause}${}", texts.len() + i + 1));
    }
    let mut query = sqlx::query_as::<_, ReportEntry>(&sql);
    for t in texts {
        query = query.bind(t);
    }
    for (_, ms) in times {
        query = query.bind(ms);
    }
    let entries = query.fetch_all(state.db.pool()).await?;
    let group_by = q.group_by.unwrap_or(GroupBy::Day);
    let mut groups: BTreeMap<String, ReportRow> = BTreeMap::new();
    let (mut total_entries, mut total_seconds) = (0, 0);
    for e in entries {
        let seconds = (e.ended_at - e.started_at) / 1000;
        let (key, label) = match group_by {
            GroupBy::Day => {
                let day = from_ms(e.started_at).date_naive().format("%Y-%m-%d").to_string();
                (day.clone(), day)
            }
            GroupBy::User => (e.user_id, e.username),
            GroupBy::Task => (e.task_id, format!("{}-{} {}", e.key_prefix, e.number, e.title)),
            GroupBy::Project => (e.project_id, e.project_name),
        };
        let row = groups.entry(key.clone()).or_insert(ReportRow {
            key,
            label,
            entries: 0,
            seconds: 0,
        });
        row.entries += 1;
        row.seconds += seconds;
        total_entries += 1;
        total_seconds += seconds;
    }
    let rows: Vec<ReportRow> = groups.into_values().collect();
    if q.format == Some(ReportFormat::Csv) {
        let mut csv = format!("{},label,entries,seconds\r\n", group_by.as_str());
        for r in &rows {
            csv.push_str(&format!(
                "{},{},{},{}\r\n",
                csv_field(&r.key),
                csv_field(&r.label),
                r.entries,
                r.seconds
            ));
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"time-report.csv\""),
            ],
            csv,
        )
            .into_response());
    }
    Ok(AppJson(TimeReport {
        group_by,
        rows,
        total_entries,
        total_seconds,
    })
    .into_response())
}
