//! `/api/v1/meetings`: scheduling a meeting creates its calendar event (type `meeting`) and its
//! room in one transaction. The organizer is the room's host (the `admin` grant); team members
//! and the meeting's attendees (guests included) join through `POST /api/v1/rooms/{id}/join`.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::Origin;
use crate::calendar::{self, CreateEvent, Event, EventType, Occurrence};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::rooms;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schedule_meeting, list_meetings))
        .routes(routes!(get_meeting, cancel_meeting))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ScheduleMeeting {
    /// The meeting's event: `team_id` is required; `event_type` is `meeting`.
    #[serde(flatten)]
    event: CreateEvent,
    /// New joiners wait in a lobby until a host admits them.
    #[serde(default)]
    lobby: bool,
}

/// Schedule a meeting: its calendar event and its room (team members and admins).
#[utoipa::path(post, path = "", tag = "meetings", security(("bearer" = [])), request_body = ScheduleMeeting,
    responses((status = 201, body = Event), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn schedule_meeting(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<ScheduleMeeting>,
) -> ApiResult<(StatusCode, AppJson<Event>)> {
    let Some(team_id) = req.event.team_id.clone() else {
        return Err(ApiError::field("team_id", "a meeting belongs to a team"));
    };
    if req.event.event_type.is_some_and(|t| t != EventType::Meeting) {
        return Err(ApiError::field("event_type", "a meeting's event type is `meeting`"));
    }
    let mut tx = state.db.pool().begin().await?;
    let room_name = req.event.title.trim().chars().take(100).collect::<String>();
    let room_id = rooms::insert_meeting_room(&mut tx, &team_id, &room_name, &auth.user_id, req.lobby).await?;
    let id = calendar::insert_event(
        &mut tx,
        &state,
        &auth.user_id,
        req.event,
        EventType::Meeting,
        Some(&room_id),
    )
    .await?;
    tx.commit().await?;
    calendar::schedule_reminders(&state, &id).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(calendar::load_event(&state.db, &id).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct MeetingRange {
    /// Range start (RFC 3339).
    from: DateTime<Utc>,
    /// Range end (RFC 3339), at most 366 days after `from`.
    to: DateTime<Utc>,
    team_id: Option<String>,
}

/// The caller's meetings in a range, recurrences expanded.
#[utoipa::path(get, path = "", tag = "meetings", security(("bearer" = [])), params(MeetingRange),
    responses((status = 200, body = Vec<Occurrence>), (status = 400, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn list_meetings(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<MeetingRange>,
) -> ApiResult<AppJson<Vec<Occurrence>>> {
    let (from, to) = calendar::bounds(q.from, q.to)?;
    Ok(AppJson(
        calendar::occurrences_in(
            &state.db,
            &auth.user_id,
            from,
            to,
            q.team_id.as_deref(),
            Some(EventType::Meeting),
        )
        .await?,
    ))
}

/// The meeting's event and room if the caller may see it.
async fn meeting(state: &AppState, id: &str, user_id: &str) -> ApiResult<(calendar::EventRow, bool)> {
    let (row, may_edit) = calendar::access(&state.db, id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("meeting"))?;
    if row.room_id.is_none() {
        return Err(ApiError::NotFound("meeting"));
    }
    Ok((row, may_edit))
}

/// A meeting: its event, attendees and room id.
#[utoipa::path(get, path = "/{meeting_id}", tag = "meetings", security(("bearer" = [])),
    responses((status = 200, body = Event), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_meeting(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<Event>> {
    meeting(&state, &id, &auth.user_id).await?;
    Ok(AppJson(calendar::load_event(&state.db, &id).await?))
}

/// Cancel a meeting: its event and room go, a live session ends (organizer and team admins).
#[utoipa::path(delete, path = "/{meeting_id}", tag = "meetings", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn cancel_meeting(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let (row, may_edit) = meeting(&state, &id, &auth.user_id).await?;
    if !may_edit {
        return Err(ApiError::Forbidden(
            "only the organizer and team admins may cancel a meeting",
        ));
    }
    calendar::delete(&state, &id).await?;
    if let Some(room_id) = &row.room_id {
        rooms::delete(&state, room_id).await?;
    }
    calendar::record_deletion(&state, &origin, &auth.user_id, &row, "meeting.cancelled").await?;
    Ok(StatusCode::NO_CONTENT)
}
