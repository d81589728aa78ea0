//! `/api/v1/analytics`: dashboards computed on request from the source data (focus sessions,
//! chat messages, notes, files), never from counters kept on the side.
//!
//! Team and project overviews are for the team's members, admins and owners (guests get 403,
//! outsiders 404). Meetings have their own report (`meetings.rs`), fed by the media plane's room
//! events.
//! Sprint burndown lives with sprints (`/api/v1/sprints/{id}/burndown`); the project overview
//! includes the current sprint's. Meeting minutes come from the rooms' attendance.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::projects;
use crate::sprints;
use crate::state::AppState;
use crate::teams::{self, Role};
use crate::timer::{self, DayRange, Days, SessionFacts};

mod meetings;

pub(crate) use meetings::{record, record_quality};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(meetings::router())
        .routes(routes!(project_overview))
        .routes(routes!(team_overview))
        .routes(routes!(my_overview))
}

#[derive(Debug, Serialize, ToSchema, Default, Clone)]
pub(crate) struct DayActivity {
    /// `YYYY-MM-DD`.
    day: String,
    focus_minutes: i64,
    focus_sessions: i64,
    messages: i64,
}

fn day_series(days: &Days) -> BTreeMap<i64, DayActivity> {
    (days.first..=days.last)
        .map(|d| {
            (
                d,
                DayActivity {
                    day: timer::format_day(d),
                    ..DayActivity::default()
                },
            )
        })
        .collect()
}

fn bounds(days: &Days) -> (i64, i64) {
    (
        days.first * 86_400_000 - days.offset_ms,
        (days.last + 1) * 86_400_000 - days.offset_ms,
    )
}

#[derive(FromRow)]
struct MessageCount {
    user_id: Option<String>,
    day: i64,
    messages: i64,
}

/// Messages per author and day in `days`: by `user_id`, or in team `team_id`'s channels.
async fn message_counts(
    db: &Db,
    user_id: Option<&str>,
    team_id: Option<&str>,
    days: &Days,
) -> ApiResult<Vec<MessageCount>> {
    let (start, end) = bounds(days);
    Ok(sqlx::query_as(
        "SELECT m.author_id AS user_id, (m.created_at + $1) / 86400000 AS day, COUNT(*) AS messages \
         FROM chat_messages m JOIN chat_channels c ON c.id = m.channel_id \
         WHERE m.deleted_at IS NULL AND m.created_at >= $2 AND m.created_at < $3 \
         AND (CAST($4 AS TEXT) IS NULL OR m.author_id = $4) AND (CAST($5 AS TEXT) IS NULL OR c.team_id = $5) \
         GROUP BY m.author_id, (m.created_at + $1) / 86400000",
    )
    .bind(days.offset_ms)
    .bind(start)
    .bind(end)
    .bind(user_id)
    .bind(team_id)
    .fetch_all(db.pool())
    .await?)
}

#[derive(Debug, Serialize, ToSchema, Default)]
pub(crate) struct MemberActivity {
    user_id: String,
    username: String,
    display_name: String,
    role: String,
    focus_minutes: i64,
    focus_sessions: i64,
    messages: i64,
    notes_written: i64,
    files_uploaded: i64,
    tasks_created: i64,
    /// Tasks the member moved into a done column.
    tasks_completed: i64,
    /// Minutes (and fractions) the member spent in the team's rooms within the range.
    meeting_minutes: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TeamOverview {
    team_id: String,
    from: String,
    to: String,
    /// Focus sessions tagged with this team.
    focus_minutes: i64,
    focus_sessions: i64,
    /// Messages in the team's channels.
    messages: i64,
    notes: i64,
    files: i64,
    file_bytes: i64,
    tasks_created: i64,
    tasks_completed: i64,
    /// Minutes people spent in the team's rooms within the range, summed over participants
    /// (until now for those still in), as `GET /analytics/meetings/{id}` counts them.
    meeting_minutes: f64,
    members: Vec<MemberActivity>,
    days: Vec<DayActivity>,
}

/// Focus, meetings, messages, tasks, notes and files of a team per member, and focus and
/// messages per day (default: 30 days).
#[utoipa::path(get, path = "/teams/{id}/overview", tag = "analytics", security(("bearer" = [])), params(DayRange),
    responses((status = 200, body = TeamOverview), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn team_overview(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(team_id): AppPath<String>,
    AppQuery(range): AppQuery<DayRange>,
) -> ApiResult<AppJson<TeamOverview>> {
    if teams::member_role(&state.db, &team_id, &auth.user_id).await? == Role::Guest {
        return Err(ApiError::Forbidden("guests do not see team analytics"));
    }
    let days = range.resolve(30)?;
    let (start, end) = bounds(&days);
    let now = now_ms();
    let members: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT m.user_id, u.username, u.display_name, m.role FROM team_members m JOIN users u ON u.id = m.user_id \
         WHERE m.team_id = $1 ORDER BY u.username",
    )
    .bind(&team_id)
    .fetch_all(state.db.pool())
    .await?;
    let mut by_member: BTreeMap<String, MemberActivity> = members
        .into_iter()
        .map(|(user_id, username, display_name, role)| {
            (
                user_id.clone(),
                MemberActivity {
                    user_id,
                    username,
                    display_name,
                    role,
                    ..MemberActivity::default()
                },
            )
        })
        .collect();
    let mut series = day_series(&days);
    let (mut focus_ms, mut focus_sessions) = (0, 0);
    let mut member_ms: BTreeMap<String, i64> = BTreeMap::new();
    for s in timer::sessions_in(&state.db, None, Some(&team_id), &days).await? {
        if !s.is_work() {
            continue;
        }
        let ms = SessionFacts::from(&s).focus_at(now);
        focus_ms += ms;
        focus_sessions += 1;
        if let Some(d) = series.get_mut(&timer::day_of(s.started_at, days.offset_ms)) {
            d.focus_minutes += ms;
            d.focus_sessions += 1;
        }
        *member_ms.entry(s.user_id.clone()).or_default() += ms;
        if let Some(m) = by_member.get_mut(&s.user_id) {
            m.focus_sessions += 1;
        }
    }
    for (user, ms) in member_ms {
        if let Some(m) = by_member.get_mut(&user) {
            m.focus_minutes = ms / 60_000;
        }
    }
    let mut messages = 0;
    for c in message_counts(&state.db, None, Some(&team_id), &days).await? {
        messages += c.messages;
        if let Some(d) = series.get_mut(&c.day) {
            d.messages += c.messages;
        }
        if let Some(m) = c.user_id.as_ref().and_then(|u| by_member.get_mut(u)) {
            m.messages += c.messages;
        }
    }
    let notes: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT created_by, COUNT(*) FROM notes WHERE team_id = $1 AND created_at >= $2 AND created_at < $3 \
         GROUP BY created_by",
    )
    .bind(&team_id)
    .bind(start)
    .bind(end)
    .fetch_all(state.db.pool())
    .await?;
    let files: Vec<(Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT uploaded_by, COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM files WHERE team_id = $1 \
         AND created_at >= $2 AND created_at < $3 GROUP BY uploaded_by",
    )
    .bind(&team_id)
    .bind(start)
    .bind(end)
    .fetch_all(state.db.pool())
    .await?;
    let tasks_created: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT t.created_by, COUNT(*) FROM tasks t JOIN projects p ON p.id = t.project_id WHERE p.team_id = $1 \
         AND t.created_at >= $2 AND t.created_at < $3 GROUP BY t.created_by",
    )
    .bind(&team_id)
    .bind(start)
    .bind(end)
    .fetch_all(state.db.pool())
    .await?;
    let tasks_completed: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT a.actor_id, COUNT(*) FROM activity a JOIN projects p ON p.id = a.project_id \
         JOIN board_columns c ON c.id = a.new_value WHERE p.team_id = $1 AND a.verb = 'moved' \
         AND a.field = 'column_id' AND c.category = 'done' AND a.created_at >= $2 AND a.created_at < $3 \
         GROUP BY a.actor_id",
    )
    .bind(&team_id)
    .bind(start)
    .bind(end)
    .fetch_all(state.db.pool())
    .await?;
    for (user, n) in &tasks_created {
        if let Some(m) = user.as_ref().and_then(|u| by_member.get_mut(u)) {
            m.tasks_created = *n;
        }
    }
    for (user, n) in &tasks_completed {
        if let Some(m) = user.as_ref().and_then(|u| by_member.get_mut(u)) {
            m.tasks_completed = *n;
        }
    }
    for (user, n) in &notes {
        if let Some(m) = user.as_ref().and_then(|u| by_member.get_mut(u)) {
            m.notes_written = *n;
        }
    }
    for (user, n, _) in &files {
        if let Some(m) = user.as_ref().and_then(|u| by_member.get_mut(u)) {
            m.files_uploaded = *n;
        }
    }
    let meeting_ms = meeting_ms(&state.db, &team_id, start, end.min(now), now).await?;
    for (user, ms) in &meeting_ms {
        if let Some(m) = by_member.get_mut(user) {
            m.meeting_minutes = minutes(*ms);
        }
    }
    Ok(AppJson(TeamOverview {
        team_id,
        from: timer::format_day(days.first),
        to: timer::format_day(days.last),
        focus_minutes: focus_ms / 60_000,
        focus_sessions,
        messages,
        notes: notes.iter().map(|n| n.1).sum(),
        files: files.iter().map(|f| f.1).sum(),
        file_bytes: files.iter().map(|f| f.2).sum(),
        tasks_created: tasks_created.iter().map(|t| t.1).sum(),
        tasks_completed: tasks_completed.iter().map(|t| t.1).sum(),
        meeting_minutes: minutes(meeting_ms.values().sum()),
        members: by_member.into_values().collect(),
        days: series
            .into_values()
            .map(|mut d| {
                d.focus_minutes /= 60_000;
                d
            })
            .collect(),
    }))
}

#[allow(clippy::cast_precision_loss, reason = "durations far below 2^52 ms")]
fn minutes(ms: i64) -> f64 {
    ms as f64 / 60_000.0
}

/// Milliseconds each participant spent in team `team_id`'s rooms between `start` and `end`,
/// from the attendance the media plane's room events recorded (an open attendance lasts until
/// `now`). Participants are user ids for signed-in users.
async fn meeting_ms(db: &Db, team_id: &str, start: i64, end: i64, now: i64) -> ApiResult<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT a.participant_id, a.joined_at, a.left_at FROM room_attendance a \
         JOIN room_sessions s ON s.id = a.session_id JOIN rooms r ON r.id = s.room_id \
         WHERE r.team_id = $1 AND a.joined_at < $3 AND (a.left_at IS NULL OR a.left_at > $2)",
    )
    .bind(team_id)
    .bind(start)
    .bind(end)
    .fetch_all(db.pool())
    .await?;
    let mut by_participant = BTreeMap::new();
    for (participant, joined, left) in rows {
        let ms = left.unwrap_or(now).min(end) - joined.max(start);
        *by_participant.entry(participant).or_default() += ms.max(0);
    }
    Ok(by_participant)
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MyOverview {
    from: String,
    to: String,
    focus_minutes: i64,
    focus_sessions: i64,
    completed_sessions: i64,
    interruptions: i64,
    /// Days with a goal, and of those the ones where it was met.
    goal_days: i64,
    goals_met: i64,
    messages: i64,
    days: Vec<DayActivity>,
}

/// The caller's focus and messages per day (default: 30 days).
#[utoipa::path(get, path = "/users/me", tag = "analytics", security(("bearer" = [])), params(DayRange),
    responses((status = 200, body = MyOverview), (status = 422, body = convene_proto::ErrorBody)))]
async fn my_overview(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(range): AppQuery<DayRange>,
) -> ApiResult<AppJson<MyOverview>> {
    let days = range.resolve(30)?;
    let sessions = timer::sessions_in(&state.db, Some(&auth.user_id), None, &days).await?;
    let goals: Vec<(String, i64)> =
        sqlx::query_as("SELECT day, target_minutes FROM focus_goals WHERE user_id = $1 AND day >= $2 AND day <= $3")
            .bind(&auth.user_id)
            .bind(timer::format_day(days.first))
            .bind(timer::format_day(days.last))
            .fetch_all(state.db.pool())
            .await?;
    let facts: Vec<SessionFacts> = sessions.iter().map(SessionFacts::from).collect();
    let stats = timer::day_stats(&facts, &goals.into_iter().collect(), &days, now_ms());
    let mut series = day_series(&days);
    for (d, s) in (days.first..=days.last).zip(&stats) {
        if let Some(a) = series.get_mut(&d) {
            a.focus_minutes = s.focus_minutes;
            a.focus_sessions = s.sessions;
        }
    }
    let mut messages = 0;
    for c in message_counts(&state.db, Some(&auth.user_id), None, &days).await? {
        messages += c.messages;
        if let Some(d) = series.get_mut(&c.day) {
            d.messages += c.messages;
        }
    }
    Ok(AppJson(MyOverview {
        from: timer::format_day(days.first),
        to: timer::format_day(days.last),
        focus_minutes: stats.iter().map(|s| s.focus_ms).sum::<i64>() / 60_000,
        focus_sessions: stats.iter().map(|s| s.sessions).sum(),
        completed_sessions: stats.iter().map(|s| s.completed_sessions).sum(),
        interruptions: stats.iter().map(|s| s.interruptions).sum(),
        goal_days: stats.iter().filter(|s| s.goal_minutes.is_some()).count() as i64,
        goals_met: stats.iter().filter(|s| s.goal_met == Some(true)).count() as i64,
        messages,
        days: series.into_values().collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct ColumnCount {
    column_id: String,
    name: String,
    /// `backlog`, `todo`, `in_progress` or `done`.
    category: String,
    tasks: i64,
}

#[derive(Debug, Serialize, ToSchema, FromRow)]
pub(crate) struct PriorityCount {
    priority: String,
    tasks: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WeekCount {
    /// Monday of the week, `YYYY-MM-DD` (UTC).
    week: String,
    completed: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProjectOverview {
    project_id: String,
    /// Open (not archived) tasks.
    tasks: i64,
    by_column: Vec<ColumnCount>,
    by_priority: Vec<PriorityCount>,
    /// Tasks past their due date and not in a done column.
    overdue: i64,
    /// Tasks moved into a done column, per week, the last `weeks` weeks.
    completed_per_week: Vec<WeekCount>,
    /// Mean time from creation to the last move into a done column, of the tasks done now.
    average_cycle_hours: Option<f64>,
    /// The burndown of the active sprint, else of the most recently started one (absent when
    /// no sprint has started): the same series as `GET /sprints/{id}/burndown`.
    burndown: Option<sprints::Burndown>,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeeksQuery {
    /// Weeks of completions to report, 1-52 (default 8).
    weeks: Option<i64>,
}

/// Tasks of a project by column and priority, overdue, completed per week and cycle time.
#[utoipa::path(get, path = "/projects/{id}/overview", tag = "analytics", security(("bearer" = [])),
    params(WeeksQuery),
    responses((status = 200, body = ProjectOverview), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn project_overview(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(project_id): AppPath<String>,
    AppQuery(q): AppQuery<WeeksQuery>,
) -> ApiResult<AppJson<ProjectOverview>> {
    if projects::access(&state.db, &project_id, &auth.user_id).await?.role == Role::Guest {
        return Err(ApiError::Forbidden("guests do not see project analytics"));
    }
    let weeks = q.weeks.unwrap_or(8);
    if !(1..=52).contains(&weeks) {
        return Err(ApiError::field("weeks", "must be between 1 and 52"));
    }
    let db = state.db.pool();
    let by_column: Vec<ColumnCount> = sqlx::query_as(
        "SELECT c.id AS column_id, c.name, c.category, \
         (SELECT COUNT(*) FROM tasks t WHERE t.column_id = c.id AND t.archived_at IS NULL) AS tasks \
         FROM board_columns c JOIN boards b ON b.id = c.board_id WHERE b.project_id = $1 ORDER BY b.id, c.rank",
    )
    .bind(&project_id)
    .fetch_all(db)
    .await?;
    let by_priority: Vec<PriorityCount> = sqlx::query_as(
        "SELECT priority, COUNT(*) AS tasks FROM tasks WHERE project_id = $1 AND archived_at IS NULL \
         GROUP BY priority ORDER BY priority",
    )
    .bind(&project_id)
    .fetch_all(db)
    .await?;
    let now = now_ms();
    let today = timer::format_day(timer::day_of(now, 0));
    let (overdue,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tasks t JOIN board_columns c ON c.id = t.column_id \
         WHERE t.project_id = $1 AND t.archived_at IS NULL AND t.due_date < $2 AND c.category <> 'done'",
    )
    .bind(&project_id)
    .bind(&today)
    .fetch_one(db)
    .await?;
    // Moves into a done column, from the activity feed.
    let done_moves: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.task_id, a.created_at FROM activity a JOIN board_columns c ON c.id = a.new_value \
         WHERE a.project_id = $1 AND a.verb = 'moved' AND a.field = 'column_id' AND c.category = 'done' \
         AND a.task_id IS NOT NULL ORDER BY a.created_at",
    )
    .bind(&project_id)
    .fetch_all(db)
    .await?;
    let done_now: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.id, t.created_at FROM tasks t JOIN board_columns c ON c.id = t.column_id \
         WHERE t.project_id = $1 AND c.category = 'done'",
    )
    .bind(&project_id)
    .fetch_all(db)
    .await?;
    const WEEK: i64 = 7 * 86_400_000;
    // 1970-01-01 was a Thursday: weeks start on Mondays, 3 days later.
    let monday = |at: i64| (at - 4 * 86_400_000).div_euclid(WEEK) * WEEK + 4 * 86_400_000;
    let this_week = monday(now);
    let mut per_week: BTreeMap<i64, i64> = (0..weeks).map(|w| (this_week - w * WEEK, 0)).collect();
    let mut last_done: BTreeMap<&str, i64> = BTreeMap::new();
    for (task, at) in &done_moves {
        if let Some(n) = per_week.get_mut(&monday(*at)) {
            *n += 1;
        }
        last_done.insert(task.as_str(), *at);
    }
    let cycles: Vec<i64> = done_now
        .iter()
        .filter_map(|(task, created)| last_done.get(task.as_str()).map(|done| done - created))
        .collect();
    let average_cycle_hours =
        (!cycles.is_empty()).then(|| cycles.iter().sum::<i64>() as f64 / cycles.len() as f64 / 3_600_000.0);
    let burndown = sprints::project_burndown(&state.db, &project_id).await?;
    Ok(AppJson(ProjectOverview {
        project_id,
        tasks: by_column.iter().map(|c| c.tasks).sum(),
        by_column,
        by_priority,
        overdue,
        completed_per_week: per_week
            .into_iter()
            .map(|(week, completed)| WeekCount {
                week: timer::format_day(week.div_euclid(86_400_000)),
                completed,
            })
            .collect(),
        average_cycle_hours,
        burndown,
    }))
}
