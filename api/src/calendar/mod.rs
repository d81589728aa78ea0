//! `/api/v1/events`: calendar events with attendees, RSVPs, reminders and RFC 5545 recurrence
//! (see [`rrule`]); listing a range expands series into occurrences, applying cancelled
//! (EXDATE) and edited single occurrences. `/api/v1/calendar`: a private iCalendar feed per user.
//!
//! An event is visible to its organizer, its attendees and the non-guest members of its team.
//! The organizer and team admins edit it; attendees answer with an RSVP. Reminders are durable
//! jobs ([`crate::jobs`]) that notify the organizer and every attendee who has not declined.

mod ics;
mod rrule;

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveTime, Utc};
use chrono_tz::Tz;
use convene_auth::{OpaqueToken, hash_token};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{AnyConnection, FromRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, Origin};
use crate::db::{Db, new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::jobs::{self, NewJob};
use crate::notifications::{self, Kind, NewNotification};
use crate::state::AppState;
use crate::teams::{Role, member_role};
use crate::time::from_ms;
use crate::validate;

pub(crate) use rrule::Rule;

/// The widest range one listing expands.
const MAX_RANGE_DAYS: i64 = 366;
const MAX_ATTENDEES: usize = 200;
const MAX_REMINDERS: usize = 5;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event, update_event, delete_event))
        .routes(routes!(set_rsvp))
        .routes(routes!(edit_occurrence, cancel_occurrence))
}

pub(crate) fn feed_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_feed)).routes(routes!(feed))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventType {
    Meeting,
    Deadline,
    Reminder,
    Other,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Meeting => "meeting",
            Self::Deadline => "deadline",
            Self::Reminder => "reminder",
            Self::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Rsvp {
    Pending,
    Accepted,
    Declined,
    Tentative,
}

impl Rsvp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Tentative => "tentative",
        }
    }
}

#[derive(Debug, Clone, FromRow)]
pub(crate) struct EventRow {
    pub(crate) id: String,
    pub(crate) team_id: Option<String>,
    pub(crate) organizer: Option<String>,
    pub(crate) title: String,
    description: String,
    location: String,
    event_type: String,
    starts_at: i64,
    ends_at: i64,
    time_zone: String,
    all_day: i64,
    rrule: Option<String>,
    pub(crate) room_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

const EVENT_COLUMNS: &str = "e.id, e.team_id, e.organizer, e.title, e.description, e.location, e.event_type, \
    e.starts_at, e.ends_at, e.time_zone, e.all_day, e.rrule, e.room_id, e.created_at, e.updated_at";

/// Events `$1` may see: organizer, attendee, or non-guest member of the event's team.
const VISIBLE: &str = "(e.organizer = $1 \
    OR EXISTS (SELECT 1 FROM event_attendees a WHERE a.event_id = e.id AND a.user_id = $1) \
    OR EXISTS (SELECT 1 FROM team_members m WHERE m.team_id = e.team_id AND m.user_id = $1 AND m.role <> 'guest'))";

#[derive(Debug, Clone, Serialize, ToSchema, FromRow)]
pub(crate) struct Attendee {
    user_id: String,
    #[schema(value_type = Rsvp)]
    rsvp: String,
}

/// One occurrence of a series, cancelled or changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Exception {
    /// The start the occurrence has in the series.
    original_start: DateTime<Utc>,
    cancelled: bool,
    title: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct ExceptionRow {
    original_start: i64,
    cancelled: i64,
    title: Option<String>,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
}

impl From<&ExceptionRow> for Exception {
    fn from(r: &ExceptionRow) -> Self {
        Self {
            original_start: from_ms(r.original_start),
            cancelled: r.cancelled != 0,
            title: r.title.clone(),
            starts_at: r.starts_at.map(from_ms),
            ends_at: r.ends_at.map(from_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Event {
    id: String,
    team_id: Option<String>,
    /// The user who scheduled it.
    organizer: Option<String>,
    title: String,
    description: String,
    location: String,
    #[schema(value_type = EventType)]
    event_type: String,
    /// The first occurrence.
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    /// IANA zone the event repeats in.
    time_zone: String,
    all_day: bool,
    /// RFC 5545 RRULE value, e.g. `FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10`.
    rrule: Option<String>,
    /// The meeting room, for meetings.
    room_id: Option<String>,
    attendees: Vec<Attendee>,
    /// Minutes before each occurrence a reminder is sent.
    reminders: Vec<i64>,
    exceptions: Vec<Exception>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// A calendar entry in a listed range: one occurrence of an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Occurrence {
    event_id: String,
    /// Identifies the occurrence within its series (for single-occurrence edits).
    original_start: DateTime<Utc>,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    title: String,
    location: String,
    #[schema(value_type = EventType)]
    event_type: String,
    all_day: bool,
    time_zone: String,
    team_id: Option<String>,
    room_id: Option<String>,
    recurring: bool,
    /// This occurrence was edited on its own.
    modified: bool,
}

/// When an event happens, validated.
struct Schedule {
    starts_at: i64,
    ends_at: i64,
    tz: Tz,
    all_day: bool,
    rule: Option<Rule>,
}

impl Schedule {
    fn new(
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        time_zone: &str,
        all_day: bool,
        rrule: Option<&str>,
    ) -> ApiResult<Self> {
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| ApiError::field("time_zone", "must be an IANA time zone such as Europe/Paris"))?;
        // Bounded years keep series expansion bounded (a daily rule from year 1 would not be).
        if !(1970..=9999).contains(&chrono::Datelike::year(&starts_at)) {
            return Err(ApiError::field("starts_at", "must be between 1970 and 9999"));
        }
        let (mut start, mut end) = (starts_at, ends_at);
        if all_day {
            // Whole local days: midnight to midnight (the end exclusive, at least one day).
            let midnight =
                |t: DateTime<Utc>| rrule::resolve(tz, t.with_timezone(&tz).date_naive().and_time(NaiveTime::MIN));
            start = midnight(start);
            let last = midnight(end);
            end = if last > start {
                last
            } else {
                midnight(start + Duration::hours(36))
            };
        }
        if end < start {
            return Err(ApiError::field("ends_at", "must not be before starts_at"));
        }
        if end - start > Duration::days(MAX_RANGE_DAYS) {
            return Err(ApiError::field("ends_at", "an event lasts at most a year"));
        }
        let rule = match rrule.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => Some(Rule::parse(r).map_err(|e| ApiError::field("rrule", e))?),
            None => None,
        };
        Ok(Self {
            starts_at: start.timestamp_millis(),
            ends_at: end.timestamp_millis(),
            tz,
            all_day,
            rule,
        })
    }

    /// The end of the last occurrence; `None` for a series without end.
    fn series_end(&self) -> Option<i64> {
        match &self.rule {
            None => Some(self.ends_at),
            Some(rule) if rule.is_finite() => {
                let start = from_ms(self.starts_at).with_timezone(&self.tz);
                let last = rule
                    .occurrences(start, None)
                    .last()
                    .map_or(self.starts_at, DateTime::timestamp_millis);
                Some(last + (self.ends_at - self.starts_at))
            }
            Some(_) => None,
        }
    }
}

/// Expands `event` into its occurrences overlapping `[from, to)`, exceptions applied.
fn expand(event: &EventRow, exceptions: &[ExceptionRow], from: i64, to: i64) -> Vec<Occurrence> {
    let duration = event.ends_at - event.starts_at;
    let tz: Tz = event.time_zone.parse().unwrap_or(Tz::UTC);
    let rule = event.rrule.as_deref().and_then(|r| Rule::parse(r).ok());
    let originals: Vec<i64> = match &rule {
        Some(rule) => rule
            .occurrences(from_ms(event.starts_at).with_timezone(&tz), Some(from_ms(to)))
            .iter()
            .map(DateTime::timestamp_millis)
            .collect(),
        None => vec![event.starts_at],
    };
    let by_start: HashMap<i64, &ExceptionRow> = exceptions.iter().map(|x| (x.original_start, x)).collect();
    originals
        .into_iter()
        .filter_map(|original| {
            let exception = by_start.get(&original);
            if exception.is_some_and(|x| x.cancelled != 0) {
                return None;
            }
            let starts_at = exception.and_then(|x| x.starts_at).unwrap_or(original);
            let ends_at = exception.and_then(|x| x.ends_at).unwrap_or(starts_at + duration);
            // Zero-length events (deadlines) belong to the range they start in.
            let overlaps = starts_at < to && (ends_at > from || (ends_at == starts_at && starts_at >= from));
            overlaps.then(|| Occurrence {
                event_id: event.id.clone(),
                original_start: from_ms(original),
                starts_at: from_ms(starts_at),
                ends_at: from_ms(ends_at),
                title: exception
                    .and_then(|x| x.title.clone())
                    .unwrap_or_else(|| event.title.clone()),
                location: event.location.clone(),
                event_type: event.event_type.clone(),
                all_day: event.all_day != 0,
                time_zone: event.time_zone.clone(),
                team_id: event.team_id.clone(),
                room_id: event.room_id.clone(),
                recurring: rule.is_some(),
                modified: exception.is_some(),
            })
        })
        .collect()
}

async fn exceptions_of(db: &Db, event_id: &str) -> ApiResult<Vec<ExceptionRow>> {
    Ok(sqlx::query_as(
        "SELECT original_start, cancelled, title, starts_at, ends_at FROM event_exceptions \
         WHERE event_id = $1 ORDER BY original_start",
    )
    .bind(event_id)
    .fetch_all(db.pool())
    .await?)
}

/// What creating an event (or a meeting) takes, already deserialized.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEvent {
    pub(crate) title: String,
    pub(crate) description: Option<String>,
    pub(crate) location: Option<String>,
    /// Default `other` (`meeting` for meetings).
    pub(crate) event_type: Option<EventType>,
    pub(crate) team_id: Option<String>,
    pub(crate) starts_at: DateTime<Utc>,
    pub(crate) ends_at: DateTime<Utc>,
    /// IANA zone (default `UTC`); recurrences keep their local time in it.
    pub(crate) time_zone: Option<String>,
    #[serde(default)]
    pub(crate) all_day: bool,
    pub(crate) rrule: Option<String>,
    /// User ids; they must belong to the event's team (guests included).
    #[serde(default)]
    pub(crate) attendees: Vec<String>,
    /// Minutes before each occurrence (0-40320), at most 5.
    #[serde(default)]
    pub(crate) reminders: Vec<i64>,
}

/// Checks who may create the event and who may attend it.
async fn authorize_new(state: &AppState, user_id: &str, req: &CreateEvent) -> ApiResult<()> {
    if let Some(team) = &req.team_id
        && member_role(&state.db, team, user_id).await? == Role::Guest
    {
        return Err(ApiError::Forbidden("guests cannot schedule team events"));
    }
    check_attendees(&state.db, req.team_id.as_deref(), user_id, &req.attendees).await?;
    check_reminders(&req.reminders)
}

async fn check_attendees(db: &Db, team_id: Option<&str>, organizer: &str, attendees: &[String]) -> ApiResult<()> {
    if attendees.len() > MAX_ATTENDEES {
        return Err(ApiError::field("attendees", format!("at most {MAX_ATTENDEES}")));
    }
    for user in attendees {
        let ok = match team_id {
            Some(team) => member_role(db, team, user).await.is_ok(),
            None => user == organizer,
        };
        if !ok {
            return Err(ApiError::field(
                "attendees",
                format!("{user} is not a member of the event's team"),
            ));
        }
    }
    Ok(())
}

fn check_reminders(reminders: &[i64]) -> ApiResult<()> {
    if reminders.len() > MAX_REMINDERS || reminders.iter().any(|m| !(0..=40_320).contains(m)) {
        return Err(ApiError::field("reminders", "at most 5 values of 0-40320 minutes"));
    }
    Ok(())
}

/// Validates and stores a new event on `conn` (the caller's transaction); returns its id.
/// Call [`schedule_reminders`] after commit.
pub(crate) async fn insert_event(
    conn: &mut AnyConnection,
    state: &AppState,
    organizer: &str,
    req: CreateEvent,
    default_type: EventType,
    room_id: Option<&str>,
) -> ApiResult<String> {
    authorize_new(state, organizer, &req).await?;
    let title = validate::name("title", &req.title, 200)?;
    let description = validate::text("description", req.description.as_deref(), 10_000)?.unwrap_or_default();
    let location = validate::text("location", req.location.as_deref(), 500)?.unwrap_or_default();
    let time_zone = req.time_zone.as_deref().unwrap_or("UTC");
    let schedule = Schedule::new(req.starts_at, req.ends_at, time_zone, req.all_day, req.rrule.as_deref())?;
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO calendar_events (id, team_id, organizer, title, description, location, event_type, starts_at, \
         ends_at, time_zone, all_day, rrule, series_end, room_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(&id)
    .bind(&req.team_id)
    .bind(organizer)
    .bind(&title)
    .bind(&description)
    .bind(&location)
    .bind(req.event_type.unwrap_or(default_type).as_str())
    .bind(schedule.starts_at)
    .bind(schedule.ends_at)
    .bind(schedule.tz.name())
    .bind(i64::from(schedule.all_day))
    .bind(schedule.rule.as_ref().map(ToString::to_string))
    .bind(schedule.series_end())
    .bind(room_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    replace_attendees(conn, &id, organizer, &req.attendees).await?;
    replace_reminders(conn, &id, &req.reminders).await?;
    Ok(id)
}

/// Sets the attendee list, keeping the RSVPs of those who stay. The organizer attends.
async fn replace_attendees(
    conn: &mut AnyConnection,
    event_id: &str,
    organizer: &str,
    users: &[String],
) -> ApiResult<()> {
    let mut keep: Vec<&str> = users.iter().map(String::as_str).collect();
    keep.push(organizer);
    keep.sort_unstable();
    keep.dedup();
    let existing: Vec<(String,)> = sqlx::query_as("SELECT user_id FROM event_attendees WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(&mut *conn)
        .await?;
    for (user,) in &existing {
        if !keep.contains(&user.as_str()) {
            sqlx::query("DELETE FROM event_attendees WHERE event_id = $1 AND user_id = $2")
                .bind(event_id)
                .bind(user)
                .execute(&mut *conn)
                .await?;
        }
    }
    for user in keep {
        let rsvp = if user == organizer {
            Rsvp::Accepted
        } else {
            Rsvp::Pending
        };
        sqlx::query(
            "INSERT INTO event_attendees (event_id, user_id, rsvp) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id, user_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(user)
        .bind(rsvp.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn replace_reminders(conn: &mut AnyConnection, event_id: &str, minutes: &[i64]) -> ApiResult<()> {
    sqlx::query("DELETE FROM event_reminders WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    let mut minutes = minutes.to_vec();
    minutes.sort_unstable();
    minutes.dedup();
    for m in minutes {
        sqlx::query("INSERT INTO event_reminders (event_id, minutes_before) VALUES ($1, $2)")
            .bind(event_id)
            .bind(m)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn event_row(db: &Db, id: &str) -> ApiResult<Option<EventRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM calendar_events e WHERE e.id = $1"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?)
}

/// The event if `user_id` may see it (404 otherwise), and whether it may edit it.
pub(crate) async fn access(db: &Db, id: &str, user_id: &str) -> ApiResult<(EventRow, bool)> {
    let row: EventRow = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM calendar_events e WHERE e.id = $2 AND {VISIBLE}"
    ))
    .bind(user_id)
    .bind(id)
    .fetch_optional(db.pool())
    .await?
    .ok_or(ApiError::NotFound("event"))?;
    let organizer = row.organizer.as_deref() == Some(user_id);
    let admin = match &row.team_id {
        Some(team) => member_role(db, team, user_id).await.is_ok_and(Role::can_manage),
        None => false,
    };
    Ok((row, organizer || admin))
}

async fn full_event(db: &Db, row: EventRow) -> ApiResult<Event> {
    let attendees: Vec<Attendee> =
        sqlx::query_as("SELECT user_id, rsvp FROM event_attendees WHERE event_id = $1 ORDER BY user_id")
            .bind(&row.id)
            .fetch_all(db.pool())
            .await?;
    let reminders: Vec<(i64,)> =
        sqlx::query_as("SELECT minutes_before FROM event_reminders WHERE event_id = $1 ORDER BY minutes_before")
            .bind(&row.id)
            .fetch_all(db.pool())
            .await?;
    let exceptions = exceptions_of(db, &row.id).await?;
    Ok(Event {
        id: row.id,
        team_id: row.team_id,
        organizer: row.organizer,
        title: row.title,
        description: row.description,
        location: row.location,
        event_type: row.event_type,
        starts_at: from_ms(row.starts_at),
        ends_at: from_ms(row.ends_at),
        time_zone: row.time_zone,
        all_day: row.all_day != 0,
        rrule: row.rrule,
        room_id: row.room_id,
        attendees,
        reminders: reminders.into_iter().map(|(m,)| m).collect(),
        exceptions: exceptions.iter().map(Exception::from).collect(),
        created_at: from_ms(row.created_at),
        updated_at: from_ms(row.updated_at),
    })
}

/// The event as a client sees it.
pub(crate) async fn load_event(db: &Db, id: &str) -> ApiResult<Event> {
    let row = event_row(db, id).await?.ok_or(ApiError::NotFound("event"))?;
    full_event(db, row).await
}

/// Schedule an event.
#[utoipa::path(post, path = "", tag = "calendar", security(("bearer" = [])), request_body = CreateEvent,
    responses((status = 201, body = Event), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_event(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateEvent>,
) -> ApiResult<(StatusCode, AppJson<Event>)> {
    let mut tx = state.db.pool().begin().await?;
    let id = insert_event(&mut tx, &state, &auth.user_id, req, EventType::Other, None).await?;
    tx.commit().await?;
    schedule_reminders(&state, &id).await?;
    Ok((StatusCode::CREATED, AppJson(load_event(&state.db, &id).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    /// Range start (RFC 3339).
    from: DateTime<Utc>,
    /// Range end (RFC 3339), at most 366 days after `from`.
    to: DateTime<Utc>,
    /// Only this team's events.
    team_id: Option<String>,
    /// Only events of this type.
    event_type: Option<EventType>,
}

/// A listing range in unix milliseconds, validated.
pub(crate) fn bounds(from: DateTime<Utc>, to: DateTime<Utc>) -> ApiResult<(i64, i64)> {
    if to <= from {
        return Err(ApiError::field("to", "must be after from"));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::field("to", "a range spans at most 366 days"));
    }
    Ok((from.timestamp_millis(), to.timestamp_millis()))
}

/// Occurrences of the events `user_id` may see within `[from, to)`, in start order.
pub(crate) async fn occurrences_in(
    db: &Db,
    user_id: &str,
    from: i64,
    to: i64,
    team_id: Option<&str>,
    event_type: Option<EventType>,
) -> ApiResult<Vec<Occurrence>> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM calendar_events e WHERE {VISIBLE} AND e.starts_at < $3 \
         AND (e.series_end IS NULL OR e.series_end >= $2) AND ($4 = '' OR e.team_id = $4) \
         AND ($5 = '' OR e.event_type = $5) ORDER BY e.starts_at, e.id"
    ))
    .bind(user_id)
    .bind(from)
    .bind(to)
    .bind(team_id.unwrap_or(""))
    .bind(event_type.map_or("", EventType::as_str))
    .fetch_all(db.pool())
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        let exceptions = if row.rrule.is_some() {
            exceptions_of(db, &row.id).await?
        } else {
            Vec::new()
        };
        out.extend(expand(row, &exceptions, from, to));
    }
    out.sort_by(|a, b| a.starts_at.cmp(&b.starts_at).then_with(|| a.event_id.cmp(&b.event_id)));
    Ok(out)
}

/// The caller's calendar for a range: every occurrence of the events it may see.
#[utoipa::path(get, path = "", tag = "calendar", security(("bearer" = [])), params(RangeQuery),
    responses((status = 200, body = Vec<Occurrence>), (status = 400, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<RangeQuery>,
) -> ApiResult<AppJson<Vec<Occurrence>>> {
    let (from, to) = bounds(q.from, q.to)?;
    Ok(AppJson(
        occurrences_in(&state.db, &auth.user_id, from, to, q.team_id.as_deref(), q.event_type).await?,
    ))
}

/// An event with its attendees, reminders and exceptions.
#[utoipa::path(get, path = "/{event_id}", tag = "calendar", security(("bearer" = [])),
    responses((status = 200, body = Event), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_event(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Event>> {
    let (row, _) = access(&state.db, &id, &auth.user_id).await?;
    Ok(AppJson(full_event(&state.db, row).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateEvent {
    title: Option<String>,
    description: Option<String>,
    location: Option<String>,
    event_type: Option<EventType>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    time_zone: Option<String>,
    all_day: Option<bool>,
    /// `null` makes the event non-recurring.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    rrule: Option<Option<String>>,
    /// Replaces the attendee list (RSVPs of those who stay are kept).
    attendees: Option<Vec<String>>,
    reminders: Option<Vec<i64>>,
}

/// Change an event (organizer and team admins).
#[utoipa::path(patch, path = "/{event_id}", tag = "calendar", security(("bearer" = [])), request_body = UpdateEvent,
    responses((status = 200, body = Event), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn update_event(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<UpdateEvent>,
) -> ApiResult<AppJson<Event>> {
    let (row, may_edit) = access(&state.db, &id, &auth.user_id).await?;
    if !may_edit {
        return Err(ApiError::Forbidden(
            "only the organizer and team admins may change an event",
        ));
    }
    let title = match &req.title {
        Some(t) => validate::name("title", t, 200)?,
        None => row.title.clone(),
    };
    let description = match &req.description {
        Some(d) => validate::text("description", Some(d), 10_000)?.unwrap_or_default(),
        None => row.description.clone(),
    };
    let location = match &req.location {
        Some(l) => validate::text("location", Some(l), 500)?.unwrap_or_default(),
        None => row.location.clone(),
    };
    let rrule = match &req.rrule {
        Some(r) => r.clone(),
        None => row.rrule.clone(),
    };
    let schedule = Schedule::new(
        req.starts_at.unwrap_or_else(|| from_ms(row.starts_at)),
        req.ends_at.unwrap_or_else(|| from_ms(row.ends_at)),
        req.time_zone.as_deref().unwrap_or(&row.time_zone),
        req.all_day.unwrap_or(row.all_day != 0),
        rrule.as_deref(),
    )?;
    let organizer = row.organizer.clone().unwrap_or_else(|| auth.user_id.clone());
    if let Some(attendees) = &req.attendees {
        check_attendees(&state.db, row.team_id.as_deref(), &organizer, attendees).await?;
    }
    if let Some(reminders) = &req.reminders {
        check_reminders(reminders)?;
    }
    let mut tx = state.db.pool().begin().await?;
    sqlx::query(
        "UPDATE calendar_events SET title = $1, description = $2, location = $3, event_type = $4, starts_at = $5, \
         ends_at = $6, time_zone = $7, all_day = $8, rrule = $9, series_end = $10, updated_at = $11 WHERE id = $12",
    )
    .bind(&title)
    .bind(&description)
    .bind(&location)
    .bind(
        req.event_type
            .map_or_else(|| row.event_type.clone(), |t| t.as_str().to_owned()),
    )
    .bind(schedule.starts_at)
    .bind(schedule.ends_at)
    .bind(schedule.tz.name())
    .bind(i64::from(schedule.all_day))
    .bind(schedule.rule.as_ref().map(ToString::to_string))
    .bind(schedule.series_end())
    .bind(now_ms())
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    if let Some(attendees) = &req.attendees {
        replace_attendees(&mut tx, &id, &organizer, attendees).await?;
    }
    if let Some(reminders) = &req.reminders {
        replace_reminders(&mut tx, &id, reminders).await?;
    }
    tx.commit().await?;
    schedule_reminders(&state, &id).await?;
    Ok(AppJson(load_event(&state.db, &id).await?))
}

/// Delete an event and all its occurrences (organizer and team admins).
#[utoipa::path(delete, path = "/{event_id}", tag = "calendar", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_event(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (row, may_edit) = access(&state.db, &id, &auth.user_id).await?;
    if !may_edit {
        return Err(ApiError::Forbidden(
            "only the organizer and team admins may delete an event",
        ));
    }
    delete(&state, &id).await?;
    record_deletion(&state, &origin, &auth.user_id, &row, "event.deleted").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts the deletion of the event `row` by `actor` on the record: in its team's audit log, or
/// the actor's own for a personal event.
pub(crate) async fn record_deletion(
    state: &AppState,
    origin: &Origin,
    actor: &str,
    row: &EventRow,
    action: &'static str,
) -> ApiResult<()> {
    let mut event = audit::Event::new(action, Some(actor), "event", &row.id)
        .metadata(json!({ "title": row.title, "room_id": row.room_id }));
    if let Some(team) = &row.team_id {
        event = event.team(team);
    }
    audit::record(state.db.pool(), origin, event).await
}

/// Deletes an event with its pending reminders.
pub(crate) async fn delete(state: &AppState, id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM calendar_events WHERE id = $1")
        .bind(id)
        .execute(state.db.pool())
        .await?;
    jobs::cancel(state, &format!("reminder:{id}:")).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRsvp {
    rsvp: Rsvp,
}

/// Answer an invitation (attendees).
#[utoipa::path(put, path = "/{event_id}/rsvp", tag = "calendar", security(("bearer" = [])), request_body = SetRsvp,
    responses((status = 200, body = Event), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn set_rsvp(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
    AppJson(req): AppJson<SetRsvp>,
) -> ApiResult<AppJson<Event>> {
    access(&state.db, &id, &auth.user_id).await?;
    let updated = sqlx::query("UPDATE event_attendees SET rsvp = $1 WHERE event_id = $2 AND user_id = $3")
        .bind(req.rsvp.as_str())
        .bind(&id)
        .bind(&auth.user_id)
        .execute(state.db.pool())
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::Forbidden("only attendees answer invitations"));
    }
    Ok(AppJson(load_event(&state.db, &id).await?))
}

/// The series' occurrence that originally starts at `original`, or 404.
async fn occurrence_of(state: &AppState, auth: &AuthUser, id: &str, original: &str) -> ApiResult<(EventRow, i64)> {
    let (row, may_edit) = access(&state.db, id, &auth.user_id).await?;
    if !may_edit {
        return Err(ApiError::Forbidden(
            "only the organizer and team admins may change an event",
        ));
    }
    let original = DateTime::parse_from_rfc3339(original)
        .map_err(|_| ApiError::BadRequest("the occurrence is named by its RFC 3339 start".to_owned()))?
        .timestamp_millis();
    let exists = expand(&row, &[], original, original + 1)
        .iter()
        .any(|o| o.original_start.timestamp_millis() == original);
    if row.rrule.is_none() || !exists {
        return Err(ApiError::NotFound("occurrence"));
    }
    Ok((row, original))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditOccurrence {
    title: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
}

/// Change one occurrence of a series (organizer and team admins).
#[utoipa::path(put, path = "/{event_id}/occurrences/{original_start}", tag = "calendar", security(("bearer" = [])),
    request_body = EditOccurrence,
    responses((status = 200, body = Event), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn edit_occurrence(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((id, original)): AppPath<(String, String)>,
    AppJson(req): AppJson<EditOccurrence>,
) -> ApiResult<AppJson<Event>> {
    let (row, original) = occurrence_of(&state, &auth, &id, &original).await?;
    let title = req
        .title
        .as_deref()
        .map(|t| validate::name("title", t, 200))
        .transpose()?;
    let starts_at = req.starts_at.map(|t| t.timestamp_millis());
    let ends_at = match (req.ends_at, starts_at) {
        (Some(e), _) => Some(e.timestamp_millis()),
        (None, Some(s)) => Some(s + (row.ends_at - row.starts_at)),
        (None, None) => None,
    };
    if ends_at.unwrap_or(i64::MAX) < starts_at.unwrap_or(original) {
        return Err(ApiError::field("ends_at", "must not be before starts_at"));
    }
    sqlx::query(
        "INSERT INTO event_exceptions (event_id, original_start, cancelled, title, starts_at, ends_at) \
         VALUES ($1, $2, 0, $3, $4, $5) ON CONFLICT (event_id, original_start) DO UPDATE SET cancelled = 0, \
         title = excluded.title, starts_at = excluded.starts_at, ends_at = excluded.ends_at",
    )
    .bind(&id)
    .bind(original)
    .bind(title)
    .bind(starts_at)
    .bind(ends_at)
    .execute(state.db.pool())
    .await?;
    schedule_reminders(&state, &id).await?;
    Ok(AppJson(load_event(&state.db, &id).await?))
}

/// Cancel one occurrence of a series (an EXDATE; organizer and team admins).
#[utoipa::path(delete, path = "/{event_id}/occurrences/{original_start}", tag = "calendar", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn cancel_occurrence(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((id, original)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let (_, original) = occurrence_of(&state, &auth, &id, &original).await?;
    sqlx::query(
        "INSERT INTO event_exceptions (event_id, original_start, cancelled) VALUES ($1, $2, 1) \
         ON CONFLICT (event_id, original_start) DO UPDATE SET cancelled = 1, title = NULL, starts_at = NULL, \
         ends_at = NULL",
    )
    .bind(&id)
    .bind(original)
    .execute(state.db.pool())
    .await?;
    schedule_reminders(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// (Re)plans the event's reminders: for each `minutes_before`, one durable job at the next
/// occurrence whose reminder time is still ahead.
pub(crate) async fn schedule_reminders(state: &AppState, event_id: &str) -> ApiResult<()> {
    jobs::cancel(state, &format!("reminder:{event_id}:")).await?;
    let Some(row) = event_row(&state.db, event_id).await? else {
        return Ok(());
    };
    let minutes: Vec<(i64,)> = sqlx::query_as("SELECT minutes_before FROM event_reminders WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(state.db.pool())
        .await?;
    if minutes.is_empty() {
        return Ok(());
    }
    let exceptions = exceptions_of(&state.db, event_id).await?;
    let now = now_ms();
    let horizon = now + Duration::days(MAX_RANGE_DAYS + 28).num_milliseconds();
    let upcoming = expand(&row, &exceptions, now, horizon);
    for (m,) in minutes {
        let lead = m * 60_000;
        let Some(next) = upcoming.iter().find(|o| o.starts_at.timestamp_millis() - lead > now) else {
            continue;
        };
        jobs::enqueue(
            state,
            NewJob {
                kind: jobs::Kind::EventReminder,
                payload: json!({
                    "event_id": event_id,
                    "original_start": next.original_start.timestamp_millis(),
                    "starts_at": next.starts_at.timestamp_millis(),
                    "minutes_before": m,
                }),
                run_at: next.starts_at.timestamp_millis() - lead,
                dedupe_key: Some(format!("reminder:{event_id}:{m}")),
                max_attempts: 5,
            },
        )
        .await?;
    }
    Ok(())
}

/// The job behind a reminder: notifies the organizer and every attendee who has not declined,
/// then plans the next occurrence's reminder.
pub(crate) async fn fire_reminder(state: &AppState, payload: &Value) -> Result<(), String> {
    let event_id = payload["event_id"].as_str().ok_or("no event_id")?;
    let starts_at = payload["starts_at"].as_i64().ok_or("no starts_at")?;
    let minutes = payload["minutes_before"].as_i64().ok_or("no minutes_before")?;
    let row = event_row(&state.db, event_id).await.map_err(|e| e.to_string())?;
    let Some(row) = row else {
        return Ok(());
    };
    let exceptions = exceptions_of(&state.db, event_id).await.map_err(|e| e.to_string())?;
    let still_on = expand(&row, &exceptions, starts_at, starts_at + 1)
        .iter()
        .any(|o| o.starts_at.timestamp_millis() == starts_at);
    if still_on {
        let recipients: Vec<(String,)> =
            sqlx::query_as("SELECT user_id FROM event_attendees WHERE event_id = $1 AND rsvp <> 'declined'")
                .bind(event_id)
                .fetch_all(state.db.pool())
                .await
                .map_err(|e| e.to_string())?;
        let when = from_ms(starts_at).with_timezone(&row.time_zone.parse::<Tz>().unwrap_or(Tz::UTC));
        let message = if minutes == 0 {
            format!("Starting now ({})", when.format("%Y-%m-%d %H:%M %Z"))
        } else {
            format!("Starts in {minutes} min ({})", when.format("%Y-%m-%d %H:%M %Z"))
        };
        let mut tx = state.db.pool().begin().await.map_err(|e| e.to_string())?;
        let mut created = Vec::new();
        for (user,) in &recipients {
            let n = notifications::insert(
                &mut tx,
                NewNotification {
                    user_id: user,
                    team_id: row.team_id.as_deref(),
                    kind: Kind::Info,
                    reason: "reminder",
                    title: row.title.clone(),
                    message: message.clone(),
                    channel_id: None,
                    message_id: None,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
            created.push(n);
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        for n in &created {
            notifications::publish_created(state, n);
        }
    }
    schedule_reminders(state, event_id).await.map_err(|e| e.to_string())
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Feed {
    /// The feed's address; anyone holding it can read the calendar. Creating a new one revokes it.
    url: String,
}

/// Create (or replace) the caller's private iCalendar feed address.
#[utoipa::path(post, path = "/feed", tag = "calendar", security(("bearer" = [])),
    responses((status = 201, body = Feed)))]
async fn create_feed(State(state): State<AppState>, auth: AuthUser) -> ApiResult<(StatusCode, AppJson<Feed>)> {
    let token = OpaqueToken::generate();
    sqlx::query(
        "INSERT INTO calendar_feeds (user_id, token_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at",
    )
    .bind(&auth.user_id)
    .bind(token.hash())
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    let url = format!(
        "{}/api/v1/calendar/{}.ics",
        state.config.public_url.trim_end_matches('/'),
        token.as_str()
    );
    Ok((StatusCode::CREATED, AppJson(Feed { url })))
}

/// A user's calendar as iCalendar (RFC 5545), for calendar apps. The token is the credential.
#[utoipa::path(get, path = "/{feed}", tag = "calendar",
    params(("feed" = String, Path, description = "`{token}.ics`")),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = convene_proto::ErrorBody)))]
async fn feed(State(state): State<AppState>, AppPath(file): AppPath<String>) -> ApiResult<Response> {
    let token = file.strip_suffix(".ics").ok_or(ApiError::NotFound("calendar feed"))?;
    let user: Option<(String,)> = sqlx::query_as("SELECT user_id FROM calendar_feeds WHERE token_hash = $1")
        .bind(hash_token(token))
        .fetch_optional(state.db.pool())
        .await?;
    let (user_id,) = user.ok_or(ApiError::NotFound("calendar feed"))?;
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM calendar_events e WHERE {VISIBLE} ORDER BY e.starts_at, e.id LIMIT 2000"
    ))
    .bind(&user_id)
    .fetch_all(state.db.pool())
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let exceptions = if row.rrule.is_some() {
            exceptions_of(&state.db, &row.id).await?
        } else {
            Vec::new()
        };
        events.push((row, exceptions));
    }
    let host = state
        .config
        .public_url
        .split("://")
        .nth(1)
        .unwrap_or("convene")
        .trim_end_matches('/')
        .to_owned();
    let body = ics::calendar(&events, &host, Utc::now());
    Ok((
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn row(rrule: Option<&str>) -> EventRow {
        let start = Tz::UTC
            .with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
            .single()
            .map(|t| t.timestamp_millis());
        let start = start.unwrap_or_default();
        EventRow {
            id: "e".into(),
            team_id: None,
            organizer: None,
            title: "Standup".into(),
            description: String::new(),
            location: String::new(),
            event_type: "meeting".into(),
            starts_at: start,
            ends_at: start + 900_000,
            time_zone: "UTC".into(),
            all_day: 0,
            rrule: rrule.map(str::to_owned),
            room_id: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn exceptions_cancel_and_move_occurrences() {
        let event = row(Some("FREQ=DAILY;COUNT=3"));
        let day = 86_400_000;
        let exceptions = [
            ExceptionRow {
                original_start: event.starts_at + day,
                cancelled: 1,
                title: None,
                starts_at: None,
                ends_at: None,
            },
            ExceptionRow {
                original_start: event.starts_at + 2 * day,
                cancelled: 0,
                title: Some("Moved".into()),
                starts_at: Some(event.starts_at + 2 * day + 3_600_000),
                ends_at: None,
            },
        ];
        let occ = expand(&event, &exceptions, event.starts_at, event.starts_at + 10 * day);
        assert_eq!(occ.len(), 2);
        assert_eq!(occ[1].title, "Moved");
        assert_eq!(occ[1].ends_at - occ[1].starts_at, Duration::minutes(15));
    }
}
