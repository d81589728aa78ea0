//! `/api/v1/timer`: focus sessions (pomodoro, custom, deep work) with pause/resume,
//! interruptions and notes; daily goals; per-day stats computed from the sessions.
//!
//! The server's clock is authoritative: clients send intentions (start, pause, stop), never
//! times. A user has at most one open session (a unique index enforces it; a second start is a
//! 409). Every change goes to the user's other devices as `timer.*` events on `/ws/events`, and
//! to their teammates as `focus.changed`, so teams see who is focusing.

mod clock;
mod stats;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(crate) use clock::{Clock, day_of};
pub(crate) use stats::{DayStats, SessionFacts, day_stats, format_day, parse_day};

use clock::{Invalid, Phase, next_phase};

use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::teams;
use crate::time::from_ms;
use crate::validate;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_session))
        .routes(routes!(current_session))
        .routes(routes!(list_sessions))
        .routes(routes!(get_session, update_session))
        .routes(routes!(pause_session))
        .routes(routes!(resume_session))
        .routes(routes!(stop_session))
        .routes(routes!(add_interruption))
        .routes(routes!(list_goals))
        .routes(routes!(set_goal))
        .routes(routes!(get_stats))
        .routes(routes!(focusing))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FocusType {
    Pomodoro,
    Custom,
    DeepWork,
}

impl FocusType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pomodoro => "pomodoro",
            Self::Custom => "custom",
            Self::DeepWork => "deep_work",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PhaseName {
    Work,
    ShortBreak,
    LongBreak,
}

impl From<Phase> for PhaseName {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Work => Self::Work,
            Phase::ShortBreak => Self::ShortBreak,
            Phase::LongBreak => Self::LongBreak,
        }
    }
}

impl From<PhaseName> for Phase {
    fn from(p: PhaseName) -> Self {
        match p {
            PhaseName::Work => Self::Work,
            PhaseName::ShortBreak => Self::ShortBreak,
            PhaseName::LongBreak => Self::LongBreak,
        }
    }
}

/// A focus session as the server's clock sees it now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FocusSession {
    id: String,
    team_id: Option<String>,
    task_id: Option<String>,
    /// `pomodoro`, `custom` or `deep_work`.
    focus_type: String,
    /// `work`, `short_break` or `long_break` (always `work` outside pomodoro).
    phase: String,
    planned_minutes: i64,
    /// `running`, `paused`, `completed` (ended after the planned time) or `cancelled`.
    status: String,
    started_at: DateTime<Utc>,
    paused_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// Focus time so far (pauses excluded).
    focus_ms: i64,
    paused_ms: i64,
    /// Planned time left (0 once reached).
    remaining_ms: i64,
    /// When the planned time is reached if the session keeps running.
    ends_at: Option<DateTime<Utc>>,
    interruptions: i64,
    notes: Option<String>,
    /// The server's clock when this was computed; clients count down from it.
    server_time: DateTime<Utc>,
}

#[derive(FromRow, Clone)]
pub(crate) struct SessionRow {
    pub(crate) id: String,
    pub(crate) user_id: String,
    pub(crate) team_id: Option<String>,
    pub(crate) task_id: Option<String>,
    pub(crate) focus_type: String,
    pub(crate) phase: String,
    pub(crate) planned_minutes: i64,
    pub(crate) status: String,
    pub(crate) started_at: i64,
    pub(crate) paused_at: Option<i64>,
    pub(crate) paused_ms: i64,
    pub(crate) ended_at: Option<i64>,
    pub(crate) notes: Option<String>,
    pub(crate) interruptions: i64,
}

/// Columns of [`SessionRow`], from `focus_sessions s`.
pub(crate) const SESSION_SELECT: &str = "SELECT s.id, s.user_id, s.team_id, s.task_id, s.focus_type, s.phase, \
     s.planned_minutes, s.status, s.started_at, s.paused_at, s.paused_ms, s.ended_at, s.notes, \
     (SELECT COUNT(*) FROM focus_interruptions i WHERE i.session_id = s.id) AS interruptions \
     FROM focus_sessions s";

impl SessionRow {
    pub(crate) fn clock(&self) -> Clock {
        Clock {
            started_at: self.started_at,
            paused_at: self.paused_at,
            paused_ms: self.paused_ms,
            ended_at: self.ended_at,
        }
    }

    pub(crate) fn is_work(&self) -> bool {
        self.phase == Phase::Work.as_str()
    }

    fn view(self, now: i64) -> FocusSession {
        let clock = self.clock();
        let focus_ms = clock.focus_ms(now);
        let planned_ms = self.planned_minutes * 60_000;
        let remaining_ms = (planned_ms - focus_ms).max(0);
        let running = self.ended_at.is_none() && self.paused_at.is_none();
        FocusSession {
            focus_ms,
            remaining_ms,
            ends_at: running.then(|| from_ms(now + remaining_ms)),
            paused_ms: self.paused_ms + self.paused_at.map_or(0, |p| (now - p).max(0)),
            id: self.id,
            team_id: self.team_id,
            task_id: self.task_id,
            focus_type: self.focus_type,
            phase: self.phase,
            planned_minutes: self.planned_minutes,
            status: self.status,
            started_at: from_ms(self.started_at),
            paused_at: self.paused_at.map(from_ms),
            ended_at: self.ended_at.map(from_ms),
            interruptions: self.interruptions,
            notes: self.notes,
            server_time: from_ms(now),
        }
    }
}

/// The caller's session `id`, or 404 (other users' sessions do not exist for the caller).
async fn load_session(db: &Db, id: &str, user_id: &str) -> ApiResult<SessionRow> {
    sqlx::query_as(&format!("{SESSION_SELECT} WHERE s.id = $1 AND s.user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or(ApiError::NotFound("session"))
}

/// Tells the user's devices, and their teammates whether they are focusing.
async fn announce(state: &AppState, kind: &str, row: &SessionRow, now: i64) {
    let focusing = row.ended_at.is_none() && row.paused_at.is_none() && row.is_work();
    let view = row.clone().view(now);
    state
        .events
        .publish([row.user_id.as_str()], kind, &json!({ "session": view }));
    match teammates(&state.db, &row.user_id).await {
        Ok(users) => state.events.publish(
            users.iter().map(String::as_str),
            "focus.changed",
            &json!({ "user_id": row.user_id, "focusing": focusing, "ends_at": if focusing { view.ends_at } else { None } }),
        ),
        Err(e) => tracing::warn!(error = %e, "focus audience unavailable"),
    }
    if matches!(
        kind,
        "timer.started" | "timer.paused" | "timer.resumed" | "timer.stopped"
    ) {
        crate::chat::focus_changed(state, &row.user_id).await;
    }
}

async fn teammates(db: &Db, user_id: &str) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT b.user_id FROM team_members a JOIN team_members b ON b.team_id = a.team_id \
         WHERE a.user_id = $1 AND b.user_id <> $1",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

fn invalid(e: Invalid) -> ApiError {
    match e {
        Invalid::NotRunning => ApiError::conflict("not_running", "the session is not running"),
        Invalid::NotPaused => ApiError::conflict("not_paused", "the session is not paused"),
        Invalid::Ended => ApiError::conflict("session_ended", "the session has ended"),
    }
}

/// Stores a transition of `before` to `after`; a concurrent change makes it a 409.
async fn save_clock(db: &Db, before: &SessionRow, after: Clock, status: &str, now: i64) -> ApiResult<()> {
    let focus_ms = after.ended_at.map(|end| after.focus_ms(end));
    let done = sqlx::query(
        "UPDATE focus_sessions SET status = $1, paused_at = $2, paused_ms = $3, ended_at = $4, focus_ms = $5, \
         updated_at = $6 WHERE id = $7 AND status = $8 AND paused_ms = $9 AND ended_at IS NULL",
    )
    .bind(status)
    .bind(after.paused_at)
    .bind(after.paused_ms)
    .bind(after.ended_at)
    .bind(focus_ms)
    .bind(now)
    .bind(&before.id)
    .bind(&before.status)
    .bind(before.paused_ms)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "session_changed",
            "the session changed meanwhile; reload it",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartSession {
    focus_type: FocusType,
    /// Minutes planned, 1-480; defaults to the phase length for pomodoro (25/5/15) and is
    /// required otherwise.
    planned_minutes: Option<i64>,
    /// Pomodoro only; by default the server picks the next phase of the cycle.
    phase: Option<PhaseName>,
    team_id: Option<String>,
    task_id: Option<String>,
    notes: Option<String>,
}

async fn pomodoro_history(db: &Db, user_id: &str) -> ApiResult<Vec<(Phase, bool)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT phase, status FROM focus_sessions WHERE user_id = $1 AND focus_type = 'pomodoro' \
         AND ended_at IS NOT NULL ORDER BY started_at DESC, id DESC LIMIT 32",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(phase, status)| Phase::parse(&phase).map(|p| (p, status == "completed")))
        .collect())
}

/// Start a focus session now; 409 while another session of the caller is open.
#[utoipa::path(post, path = "/sessions/start", tag = "timer", security(("bearer" = [])), request_body = StartSession,
    responses((status = 201, body = FocusSession), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn start_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<StartSession>,
) -> ApiResult<(StatusCode, AppJson<FocusSession>)> {
    if let Some(team_id) = &req.team_id {
        teams::member_role(&state.db, team_id, &auth.user_id).await?;
    }
    let phase = match (req.focus_type, req.phase) {
        (FocusType::Pomodoro, Some(p)) => Phase::from(p),
        (FocusType::Pomodoro, None) => next_phase(&pomodoro_history(&state.db, &auth.user_id).await?).0,
        (_, Some(PhaseName::Work) | None) => Phase::Work,
        (_, Some(_)) => return Err(ApiError::field("phase", "breaks belong to pomodoro sessions")),
    };
    let planned = match (req.planned_minutes, req.focus_type) {
        (Some(m), _) => m,
        (None, FocusType::Pomodoro) => phase.default_minutes(),
        (None, _) => return Err(ApiError::field("planned_minutes", "required")),
    };
    if !(1..=480).contains(&planned) {
        return Err(ApiError::field("planned_minutes", "must be between 1 and 480"));
    }
    let task_id = validate::text("task_id", req.task_id.as_deref(), 64)?;
    let notes = validate::text("notes", req.notes.as_deref(), 4000)?;
    let now = now_ms();
    let id = new_id();
    sqlx::query(
        "INSERT INTO focus_sessions (id, user_id, team_id, task_id, focus_type, phase, planned_minutes, status, \
         started_at, paused_ms, notes, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, 0, $9, $8)",
    )
    .bind(&id)
    .bind(&auth.user_id)
    .bind(&req.team_id)
    .bind(&task_id)
    .bind(req.focus_type.as_str())
    .bind(phase.as_str())
    .bind(planned)
    .bind(now)
    .bind(&notes)
    .execute(state.db.pool())
    .await
    .map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => {
            ApiError::conflict("session_open", "another session is already open; stop it first")
        }
        other => other,
    })?;
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    announce(&state, "timer.started", &row, now).await;
    Ok((StatusCode::CREATED, AppJson(row.view(now))))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Current {
    /// The open (running or paused) session, if any.
    session: Option<FocusSession>,
    /// What a pomodoro started now would be.
    next_pomodoro_phase: PhaseName,
    /// Completed work sessions in the current pomodoro cycle (a long break comes after 4).
    pomodoro_cycle_position: usize,
    server_time: DateTime<Utc>,
}

/// The caller's open session and the pomodoro cycle state.
#[utoipa::path(get, path = "/sessions/current", tag = "timer", security(("bearer" = [])),
    responses((status = 200, body = Current)))]
async fn current_session(State(state): State<AppState>, auth: AuthUser) -> ApiResult<AppJson<Current>> {
    let row: Option<SessionRow> =
        sqlx::query_as(&format!("{SESSION_SELECT} WHERE s.user_id = $1 AND s.ended_at IS NULL"))
            .bind(&auth.user_id)
            .fetch_optional(state.db.pool())
            .await?;
    let (phase, position) = next_phase(&pomodoro_history(&state.db, &auth.user_id).await?);
    let now = now_ms();
    Ok(AppJson(Current {
        session: row.map(|r| r.view(now)),
        next_pomodoro_phase: phase.into(),
        pomodoro_cycle_position: position,
        server_time: from_ms(now),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionQuery {
    /// Items per page, 1-200 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    after: Option<String>,
    /// Only sessions started at or after this time.
    from: Option<DateTime<Utc>>,
    /// Only sessions started before this time.
    to: Option<DateTime<Utc>>,
}

/// The caller's sessions, oldest first.
#[utoipa::path(get, path = "/sessions", tag = "timer", security(("bearer" = [])), params(SessionQuery),
    responses((status = 200, body = Page<FocusSession>), (status = 400, body = convene_proto::ErrorBody)))]
async fn list_sessions(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<SessionQuery>,
) -> ApiResult<AppJson<Page<FocusSession>>> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    };
    let rows: Vec<SessionRow> = sqlx::query_as(&format!(
        "{SESSION_SELECT} WHERE s.user_id = $1 AND s.id > $2 AND s.started_at >= $3 AND s.started_at < $4 \
         ORDER BY s.id LIMIT $5"
    ))
    .bind(&auth.user_id)
    .bind(page.after())
    .bind(q.from.map_or(i64::MIN, |t| t.timestamp_millis()))
    .bind(q.to.map_or(i64::MAX, |t| t.timestamp_millis()))
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    let now = now_ms();
    let items = rows.into_iter().map(|r| r.view(now)).collect();
    Ok(AppJson(Page::from_rows(items, page.limit(), |s: &FocusSession| {
        s.id.clone()
    })))
}

/// One of the caller's sessions.
#[utoipa::path(get, path = "/sessions/{id}", tag = "timer", security(("bearer" = [])),
    responses((status = 200, body = FocusSession), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<FocusSession>> {
    Ok(AppJson(
        load_session(&state.db, &id, &auth.user_id).await?.view(now_ms()),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateSession {
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    notes: Option<Option<String>>,
}

/// Change a session's notes (also after it ended).
#[utoipa::path(patch, path = "/sessions/{id}", tag = "timer", security(("bearer" = [])), request_body = UpdateSession,
    responses((status = 200, body = FocusSession), (status = 404, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn update_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<UpdateSession>,
) -> ApiResult<AppJson<FocusSession>> {
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    let notes = match &req.notes {
        Some(n) => validate::text("notes", n.as_deref(), 4000)?,
        None => row.notes.clone(),
    };
    let now = now_ms();
    sqlx::query("UPDATE focus_sessions SET notes = $1, updated_at = $2 WHERE id = $3")
        .bind(&notes)
        .bind(now)
        .bind(&id)
        .execute(state.db.pool())
        .await?;
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    announce(&state, "timer.updated", &row, now).await;
    Ok(AppJson(row.view(now)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PauseSession {
    /// Why: a pause is an interruption and is counted as one.
    reason: Option<String>,
}

async fn record_interruption(db: &Db, session_id: &str, reason: Option<&str>, now: i64) -> ApiResult<()> {
    let reason = validate::text("reason", reason, 500)?;
    sqlx::query("INSERT INTO focus_interruptions (id, session_id, reason, created_at) VALUES ($1, $2, $3, $4)")
        .bind(new_id())
        .bind(session_id)
        .bind(&reason)
        .bind(now)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Pause a running session; counts as an interruption.
#[utoipa::path(post, path = "/sessions/{id}/pause", tag = "timer", security(("bearer" = [])), request_body = PauseSession,
    responses((status = 200, body = FocusSession), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody)))]
async fn pause_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<PauseSession>,
) -> ApiResult<AppJson<FocusSession>> {
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    let now = now_ms();
    let mut clock = row.clock();
    clock.pause(now).map_err(invalid)?;
    validate::text("reason", req.reason.as_deref(), 500)?;
    save_clock(&state.db, &row, clock, "paused", now).await?;
    record_interruption(&state.db, &id, req.reason.as_deref(), now).await?;
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    announce(&state, "timer.paused", &row, now).await;
    Ok(AppJson(row.view(now)))
}

/// Resume a paused session.
#[utoipa::path(post, path = "/sessions/{id}/resume", tag = "timer", security(("bearer" = [])),
    responses((status = 200, body = FocusSession), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody)))]
async fn resume_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<FocusSession>> {
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    let now = now_ms();
    let mut clock = row.clock();
    clock.resume(now).map_err(invalid)?;
    save_clock(&state.db, &row, clock, "running", now).await?;
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    announce(&state, "timer.resumed", &row, now).await;
    Ok(AppJson(row.view(now)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopSession {
    /// Abandon the session: it counts as cancelled even if the planned time was reached.
    #[serde(default)]
    cancel: bool,
    /// Replaces the session's notes when given.
    notes: Option<String>,
}

/// End a session. It is `completed` when its focus time reached the planned time.
#[utoipa::path(post, path = "/sessions/{id}/stop", tag = "timer", security(("bearer" = [])), request_body = StopSession,
    responses((status = 200, body = FocusSession), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody)))]
async fn stop_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<StopSession>,
) -> ApiResult<AppJson<FocusSession>> {
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    let notes = validate::text("notes", req.notes.as_deref(), 4000)?;
    let now = now_ms();
    let mut clock = row.clock();
    let focus_ms = clock.stop(now).map_err(invalid)?;
    let status = if !req.cancel && focus_ms >= row.planned_minutes * 60_000 {
        "completed"
    } else {
        "cancelled"
    };
    save_clock(&state.db, &row, clock, status, now).await?;
    if notes.is_some() {
        sqlx::query("UPDATE focus_sessions SET notes = $1 WHERE id = $2")
            .bind(&notes)
            .bind(&id)
            .execute(state.db.pool())
            .await?;
    }
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    announce(&state, "timer.stopped", &row, now).await;
    Ok(AppJson(row.view(now)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddInterruption {
    reason: Option<String>,
}

/// Log an interruption of an open session without pausing it.
#[utoipa::path(post, path = "/sessions/{id}/interruptions", tag = "timer", security(("bearer" = [])),
    request_body = AddInterruption,
    responses((status = 201, body = FocusSession), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody)))]
async fn add_interruption(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<AddInterruption>,
) -> ApiResult<(StatusCode, AppJson<FocusSession>)> {
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    if row.ended_at.is_some() {
        return Err(invalid(Invalid::Ended));
    }
    let now = now_ms();
    record_interruption(&state.db, &id, req.reason.as_deref(), now).await?;
    let row = load_session(&state.db, &id, &auth.user_id).await?;
    announce(&state, "timer.interrupted", &row, now).await;
    Ok((StatusCode::CREATED, AppJson(row.view(now))))
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Goal {
    /// `YYYY-MM-DD`.
    day: String,
    target_minutes: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DayRange {
    /// First day, `YYYY-MM-DD` (default: 6 days before `to`).
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today).
    to: Option<String>,
    /// The caller's offset from UTC in minutes, for day boundaries (default 0).
    tz_offset_minutes: Option<i64>,
}

/// Resolved day range: first and last day (days since the epoch) and the offset in ms.
pub(crate) struct Days {
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) offset_ms: i64,
}

impl DayRange {
    pub(crate) fn resolve(&self, default_days: i64) -> ApiResult<Days> {
        let offset = self.tz_offset_minutes.unwrap_or(0);
        if !(-14 * 60..=14 * 60).contains(&offset) {
            return Err(ApiError::field("tz_offset_minutes", "must be between -840 and 840"));
        }
        let offset_ms = offset * 60_000;
        let last = match &self.to {
            Some(d) => parse_day("to", d)?,
            None => day_of(now_ms(), offset_ms),
        };
        let first = match &self.from {
            Some(d) => parse_day("from", d)?,
            None => last - (default_days - 1),
        };
        if first > last || last - first >= 366 {
            return Err(ApiError::field("from", "the range must be 1 to 366 days, from <= to"));
        }
        Ok(Days { first, last, offset_ms })
    }
}

/// The caller's daily goals in a range of days.
#[utoipa::path(get, path = "/goals", tag = "timer", security(("bearer" = [])), params(DayRange),
    responses((status = 200, body = Vec<Goal>), (status = 422, body = convene_proto::ErrorBody)))]
async fn list_goals(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(range): AppQuery<DayRange>,
) -> ApiResult<AppJson<Vec<Goal>>> {
    let days = range.resolve(7)?;
    Ok(AppJson(
        sqlx::query_as(
            "SELECT day, target_minutes FROM focus_goals WHERE user_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(&auth.user_id)
        .bind(format_day(days.first))
        .bind(format_day(days.last))
        .fetch_all(state.db.pool())
        .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetGoal {
    /// Focus minutes aimed for that day, 0-1440.
    target_minutes: i64,
}

/// Set the caller's focus goal for a day (`YYYY-MM-DD`).
#[utoipa::path(put, path = "/goals/{day}", tag = "timer", security(("bearer" = [])), request_body = SetGoal,
    responses((status = 200, body = Goal), (status = 422, body = convene_proto::ErrorBody)))]
async fn set_goal(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(day): AppPath<String>,
    AppJson(req): AppJson<SetGoal>,
) -> ApiResult<AppJson<Goal>> {
    let day = format_day(parse_day("day", &day)?);
    if !(0..=1440).contains(&req.target_minutes) {
        return Err(ApiError::field("target_minutes", "must be between 0 and 1440"));
    }
    sqlx::query(
        "INSERT INTO focus_goals (user_id, day, target_minutes, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, day) DO UPDATE SET target_minutes = $3, updated_at = $4",
    )
    .bind(&auth.user_id)
    .bind(&day)
    .bind(req.target_minutes)
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    Ok(AppJson(Goal {
        day,
        target_minutes: req.target_minutes,
    }))
}

/// Loads `user_id`'s sessions started in `days` (with `team_id`, only those tagged with it).
pub(crate) async fn sessions_in(
    db: &Db,
    user_id: Option<&str>,
    team_id: Option<&str>,
    days: &Days,
) -> ApiResult<Vec<SessionRow>> {
    let start = days.first * 86_400_000 - days.offset_ms;
    let end = (days.last + 1) * 86_400_000 - days.offset_ms;
    Ok(sqlx::query_as(&format!(
        "{SESSION_SELECT} WHERE (CAST($1 AS TEXT) IS NULL OR s.user_id = $1) AND (CAST($2 AS TEXT) IS NULL OR s.team_id = $2) \
         AND s.started_at >= $3 AND s.started_at < $4 ORDER BY s.started_at"
    ))
    .bind(user_id)
    .bind(team_id)
    .bind(start)
    .bind(end)
    .fetch_all(db.pool())
    .await?)
}

/// Per-day focus stats of the caller, computed from their sessions (and goals).
#[utoipa::path(get, path = "/stats", tag = "timer", security(("bearer" = [])), params(DayRange),
    responses((status = 200, body = Vec<DayStats>), (status = 422, body = convene_proto::ErrorBody)))]
async fn get_stats(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(range): AppQuery<DayRange>,
) -> ApiResult<AppJson<Vec<DayStats>>> {
    let days = range.resolve(7)?;
    let sessions = sessions_in(&state.db, Some(&auth.user_id), None, &days).await?;
    let goals: Vec<Goal> =
        sqlx::query_as("SELECT day, target_minutes FROM focus_goals WHERE user_id = $1 AND day >= $2 AND day <= $3")
            .bind(&auth.user_id)
            .bind(format_day(days.first))
            .bind(format_day(days.last))
            .fetch_all(state.db.pool())
            .await?;
    let goals = goals.into_iter().map(|g| (g.day, g.target_minutes)).collect();
    let facts: Vec<SessionFacts> = sessions.iter().map(SessionFacts::from).collect();
    Ok(AppJson(day_stats(&facts, &goals, &days, now_ms())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct FocusingQuery {
    team_id: String,
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct Focusing {
    user_id: String,
    session_id: String,
    focus_type: String,
    #[schema(value_type = DateTime<Utc>)]
    #[serde(serialize_with = "crate::time::serialize_ms")]
    started_at: i64,
    planned_minutes: i64,
}

/// The team's members who are focusing now (a running work session).
#[utoipa::path(get, path = "/focusing", tag = "timer", security(("bearer" = [])), params(FocusingQuery),
    responses((status = 200, body = Vec<Focusing>), (status = 404, body = convene_proto::ErrorBody)))]
async fn focusing(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<FocusingQuery>,
) -> ApiResult<AppJson<Vec<Focusing>>> {
    teams::member_role(&state.db, &q.team_id, &auth.user_id).await?;
    Ok(AppJson(
        sqlx::query_as(
            "SELECT s.user_id, s.id AS session_id, s.focus_type, s.started_at, s.planned_minutes \
             FROM focus_sessions s JOIN team_members m ON m.user_id = s.user_id AND m.team_id = $1 \
             WHERE s.status = 'running' AND s.phase = 'work' ORDER BY s.user_id",
        )
        .bind(&q.team_id)
        .fetch_all(state.db.pool())
        .await?,
    ))
}
