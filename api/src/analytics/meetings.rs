//! `/api/v1/analytics/meetings/{id}`: a meeting's live sessions, who attended when, minutes and
//! peak concurrency, recorded from the media plane's room events ([`record`]).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::calendar;
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AuthUser};
use crate::state::AppState;
use crate::time::from_ms;
use crate::webhooks::{EventType, RoomEvent};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(meeting_analytics))
}

/// The open session of `room_id`, if any.
async fn open_session(state: &AppState, room_id: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM room_sessions WHERE room_id = $1 AND ended_at IS NULL ORDER BY started_at DESC LIMIT 1",
    )
    .bind(room_id)
    .fetch_optional(state.db.pool())
    .await?;
    Ok(row.map(|(id,)| id))
}

async fn start_session(state: &AppState, room_id: &str, at: i64) -> Result<String, sqlx::Error> {
    let id = new_id();
    sqlx::query("INSERT INTO room_sessions (id, room_id, started_at) VALUES ($1, $2, $3)")
        .bind(&id)
        .bind(room_id)
        .bind(at)
        .execute(state.db.pool())
        .await?;
    Ok(id)
}

/// Records one room event (rooms unknown to the database are ignored by the caller).
pub(crate) async fn record(state: &AppState, event: &RoomEvent) -> Result<(), sqlx::Error> {
    let room = event.room_id.as_str();
    match (event.kind, event.participant.as_deref()) {
        (EventType::RoomStarted, _) => {
            // A session left open by a crash ends where the new one starts.
            finish(state, room, event.at).await?;
            start_session(state, room, event.at).await?;
        }
        (EventType::ParticipantJoined, Some(participant)) => {
            let session = match open_session(state, room).await? {
                Some(id) => id,
                None => start_session(state, room, event.at).await?,
            };
            sqlx::query(
                "INSERT INTO room_attendance (id, session_id, participant_id, joined_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(new_id())
            .bind(&session)
            .bind(participant)
            .bind(event.at)
            .execute(state.db.pool())
            .await?;
        }
        (EventType::ParticipantLeft, Some(participant)) => {
            sqlx::query(
                "UPDATE room_attendance SET left_at = $1 WHERE participant_id = $2 AND left_at IS NULL \
                 AND session_id IN (SELECT id FROM room_sessions WHERE room_id = $3)",
            )
            .bind(event.at)
            .bind(participant)
            .bind(room)
            .execute(state.db.pool())
            .await?;
        }
        (EventType::RoomFinished, _) => finish(state, room, event.at).await?,
        _ => {}
    }
    Ok(())
}

async fn finish(state: &AppState, room_id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE room_attendance SET left_at = $1 WHERE left_at IS NULL \
         AND session_id IN (SELECT id FROM room_sessions WHERE room_id = $2 AND ended_at IS NULL)",
    )
    .bind(at)
    .bind(room_id)
    .execute(state.db.pool())
    .await?;
    sqlx::query("UPDATE room_sessions SET ended_at = $1 WHERE room_id = $2 AND ended_at IS NULL")
        .bind(at)
        .bind(room_id)
        .execute(state.db.pool())
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Attendance {
    participant_id: String,
    /// The user's display name, when the participant is a user.
    display_name: Option<String>,
    joined_at: DateTime<Utc>,
    /// Absent while still in the room.
    left_at: Option<DateTime<Utc>>,
    /// Whole and partial minutes present (until now for those still in).
    minutes: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionStats {
    id: String,
    started_at: DateTime<Utc>,
    /// Absent while the session is live.
    ended_at: Option<DateTime<Utc>>,
    /// Most participants present at once.
    peak_concurrency: usize,
    participants: Vec<Attendance>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MeetingAnalytics {
    meeting_id: String,
    room_id: String,
    sessions: Vec<SessionStats>,
    unique_participants: usize,
    participant_minutes: f64,
}

#[derive(FromRow)]
struct AttendanceRow {
    session_id: String,
    participant_id: String,
    display_name: Option<String>,
    joined_at: i64,
    left_at: Option<i64>,
}

/// Most intervals overlapping at one instant; a leave at the same instant as a join counts first.
fn peak(intervals: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = intervals.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    edges.sort_unstable();
    let (mut now, mut best) = (0_i32, 0_i32);
    for (_, delta) in edges {
        now += delta;
        best = best.max(now);
    }
    usize::try_from(best).unwrap_or(0)
}

/// Sessions, attendance, minutes and peak concurrency of a meeting (its organizer and team admins).
#[utoipa::path(get, path = "/meetings/{meeting_id}", tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = MeetingAnalytics), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn meeting_analytics(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(id): AppPath<String>,
) -> ApiResult<AppJson<MeetingAnalytics>> {
    let (row, may_edit) = calendar::access(&state.db, &id, &auth.user_id)
        .await
        .map_err(|_| ApiError::NotFound("meeting"))?;
    let room_id = row.room_id.ok_or(ApiError::NotFound("meeting"))?;
    if !may_edit {
        return Err(ApiError::Forbidden(
            "only the organizer and team admins see a meeting's analytics",
        ));
    }
    let sessions: Vec<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT id, started_at, ended_at FROM room_sessions WHERE room_id = $1 ORDER BY started_at, id")
            .bind(&room_id)
            .fetch_all(state.db.pool())
            .await?;
    let attendance: Vec<AttendanceRow> = sqlx::query_as(
        "SELECT a.session_id, a.participant_id, u.display_name, a.joined_at, a.left_at FROM room_attendance a \
         JOIN room_sessions s ON s.id = a.session_id LEFT JOIN users u ON u.id = a.participant_id \
         WHERE s.room_id = $1 ORDER BY a.joined_at, a.id",
    )
    .bind(&room_id)
    .fetch_all(state.db.pool())
    .await?;
    let now = now_ms();
    let mut unique = std::collections::HashSet::new();
    let mut total = 0.0;
    let sessions = sessions
        .into_iter()
        .map(|(sid, started_at, ended_at)| {
            let rows: Vec<&AttendanceRow> = attendance.iter().filter(|a| a.session_id == sid).collect();
            let intervals: Vec<(i64, i64)> = rows.iter().map(|a| (a.joined_at, a.left_at.unwrap_or(now))).collect();
            let participants = rows
                .iter()
                .map(|a| {
                    unique.insert(a.participant_id.clone());
                    #[allow(clippy::cast_precision_loss)] // durations far below 2^52 ms
                    let minutes = (a.left_at.unwrap_or(now) - a.joined_at) as f64 / 60_000.0;
                    total += minutes;
                    Attendance {
                        participant_id: a.participant_id.clone(),
                        display_name: a.display_name.clone(),
                        joined_at: from_ms(a.joined_at),
                        left_at: a.left_at.map(from_ms),
                        minutes,
                    }
                })
                .collect();
            SessionStats {
                id: sid,
                started_at: from_ms(started_at),
                ended_at: ended_at.map(from_ms),
                peak_concurrency: peak(&intervals),
                participants,
            }
        })
        .collect();
    Ok(AppJson(MeetingAnalytics {
        meeting_id: id,
        room_id,
        sessions,
        unique_participants: unique.len(),
        participant_minutes: total,
    }))
}

#[cfg(test)]
mod tests {
    use super::peak;

    #[test]
    fn peak_concurrency() {
        assert_eq!(peak(&[]), 0);
        assert_eq!(peak(&[(0, 10), (5, 15), (12, 20)]), 2);
        assert_eq!(
            peak(&[(0, 10), (10, 20)]),
            1,
            "a leave and a join at once do not overlap"
        );
        assert_eq!(peak(&[(0, 30), (5, 15), (6, 7)]), 3);
    }
}
