//! `/api/v1/analytics/meetings/{id}`: a meeting's live sessions, who attended when, minutes and
//! peak concurrency, recorded from the media plane's room events ([`record`]), and packet loss,
//! bitrate and round-trip time per participant and for the meeting, summed from the media plane's
//! quality samples ([`record_quality`]).

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
use crate::webhooks::{EventType, QualitySample, RoomEvent};

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

/// Adds one quality sample to its participant's row for the room's open session (samples of a
/// room without one, such as a room unknown to the database, are dropped).
pub(crate) async fn record_quality(state: &AppState, q: &QualitySample) -> Result<(), sqlx::Error> {
    let Some(session) = open_session(state, &q.room_id).await? else {
        return Ok(());
    };
    #[allow(clippy::cast_precision_loss)] // windows of seconds
    let loss_ms = q.loss * q.window_ms as f64;
    let (rtt_sum, rtt_samples) = q.rtt_ms.map_or((0, 0), |r| (r, 1));
    sqlx::query(
        "INSERT INTO room_quality (session_id, participant_id, measured_ms, bytes_up, bytes_down, loss_ms, \
         max_loss, rtt_ms_sum, rtt_samples, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (session_id, participant_id) DO UPDATE SET \
         measured_ms = room_quality.measured_ms + excluded.measured_ms, \
         bytes_up = room_quality.bytes_up + excluded.bytes_up, \
         bytes_down = room_quality.bytes_down + excluded.bytes_down, \
         loss_ms = room_quality.loss_ms + excluded.loss_ms, \
         max_loss = CASE WHEN excluded.max_loss > room_quality.max_loss \
                    THEN excluded.max_loss ELSE room_quality.max_loss END, \
         rtt_ms_sum = room_quality.rtt_ms_sum + excluded.rtt_ms_sum, \
         rtt_samples = room_quality.rtt_samples + excluded.rtt_samples, \
         updated_at = excluded.updated_at",
    )
    .bind(&session)
    .bind(&q.participant)
    .bind(q.window_ms)
    .bind(q.bytes_up)
    .bind(q.bytes_down)
    .bind(loss_ms)
    .bind(q.max_loss)
    .bind(rtt_sum)
    .bind(rtt_samples)
    .bind(q.at)
    .execute(state.db.pool())
    .await?;
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

/// Connection figures summed over the time the media plane measured.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub(crate) struct QualitySummary {
    /// Participant-minutes measured (a few seconds per participant may be missing at the end).
    measured_minutes: f64,
    /// Mean packet loss (the worse direction of each participant), 0.0 ..= 1.0.
    mean_loss: f64,
    /// Worst one-second loss seen.
    max_loss: f64,
    /// Mean bitrate from a participant (what it published), kbit/s.
    mean_bitrate_up_kbps: f64,
    /// Mean bitrate to a participant (what it received), kbit/s.
    mean_bitrate_down_kbps: f64,
    /// Mean round-trip time, when the clients' reports allowed measuring one.
    mean_rtt_ms: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ParticipantQuality {
    participant_id: String,
    display_name: Option<String>,
    #[serde(flatten)]
    summary: QualitySummary,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MeetingAnalytics {
    meeting_id: String,
    room_id: String,
    sessions: Vec<SessionStats>,
    unique_participants: usize,
    participant_minutes: f64,
    /// Loss and bitrate over all participants and sessions; absent until something was measured.
    quality: Option<QualitySummary>,
    /// The same per participant (over all sessions), most loss first.
    participant_quality: Vec<ParticipantQuality>,
}

#[derive(FromRow, Default, Clone)]
struct QualityRow {
    participant_id: String,
    display_name: Option<String>,
    measured_ms: i64,
    bytes_up: i64,
    bytes_down: i64,
    loss_ms: f64,
    max_loss: f64,
    rtt_ms_sum: i64,
    rtt_samples: i64,
}

impl QualityRow {
    fn add(&mut self, o: &QualityRow) {
        self.measured_ms += o.measured_ms;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
        self.loss_ms += o.loss_ms;
        self.max_loss = self.max_loss.max(o.max_loss);
        self.rtt_ms_sum += o.rtt_ms_sum;
        self.rtt_samples += o.rtt_samples;
    }

    #[allow(clippy::cast_precision_loss)] // sums far below 2^52
    fn summary(&self) -> QualitySummary {
        let ms = self.measured_ms.max(1) as f64;
        QualitySummary {
            measured_minutes: self.measured_ms as f64 / 60_000.0,
            mean_loss: self.loss_ms / ms,
            max_loss: self.max_loss,
            // bytes × 8 / ms = kbit/s
            mean_bitrate_up_kbps: self.bytes_up as f64 * 8.0 / ms,
            mean_bitrate_down_kbps: self.bytes_down as f64 * 8.0 / ms,
            mean_rtt_ms: (self.rtt_samples > 0).then(|| self.rtt_ms_sum as f64 / self.rtt_samples as f64),
        }
    }
}

/// Sums quality rows (one per participant and session) per participant and for the meeting.
fn quality(rows: &[QualityRow]) -> (Option<QualitySummary>, Vec<ParticipantQuality>) {
    let mut total = QualityRow::default();
    let mut by_participant: Vec<QualityRow> = Vec::new();
    for row in rows {
        total.add(row);
        match by_participant
            .iter_mut()
            .find(|p| p.participant_id == row.participant_id)
        {
            Some(p) => p.add(row),
            None => by_participant.push(row.clone()),
        }
    }
    let mut participants: Vec<ParticipantQuality> = by_participant
        .into_iter()
        .map(|p| ParticipantQuality {
            summary: p.summary(),
            participant_id: p.participant_id,
            display_name: p.display_name,
        })
        .collect();
    participants.sort_by(|a, b| b.summary.mean_loss.total_cmp(&a.summary.mean_loss));
    ((total.measured_ms > 0).then(|| total.summary()), participants)
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
    let quality_rows: Vec<QualityRow> = sqlx::query_as(
        "SELECT q.participant_id, u.display_name, q.measured_ms, q.bytes_up, q.bytes_down, q.loss_ms, q.max_loss, \
         q.rtt_ms_sum, q.rtt_samples FROM room_quality q JOIN room_sessions s ON s.id = q.session_id \
         LEFT JOIN users u ON u.id = q.participant_id WHERE s.room_id = $1 ORDER BY s.started_at, q.participant_id",
    )
    .bind(&room_id)
    .fetch_all(state.db.pool())
    .await?;
    let (quality, participant_quality) = quality(&quality_rows);
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
        quality,
        participant_quality,
    }))
}

#[cfg(test)]
mod tests {
    use super::{QualityRow, peak, quality};

    #[test]
    fn quality_sums_per_participant_and_meeting() {
        let row = |who: &str, ms, up, down, loss: f64, max_loss, rtt: Option<i64>| QualityRow {
            participant_id: who.to_owned(),
            display_name: None,
            measured_ms: ms,
            bytes_up: up,
            bytes_down: down,
            loss_ms: loss * ms as f64,
            max_loss,
            rtt_ms_sum: rtt.unwrap_or(0),
            rtt_samples: i64::from(rtt.is_some()),
        };
        assert_eq!(quality(&[]).0, None);
        let rows = [
            // alice in two sessions: 60 s at 1 % then 60 s at 3 %; bob 120 s clean.
            row("alice", 60_000, 7_500_000, 0, 0.01, 0.05, Some(40)),
            row("bob", 120_000, 0, 15_000_000, 0.0, 0.0, None),
            row("alice", 60_000, 0, 0, 0.03, 0.10, Some(60)),
        ];
        let (total, people) = quality(&rows);
        let total = total.unwrap();
        assert!((total.measured_minutes - 4.0).abs() < 1e-9);
        assert!((total.mean_loss - 0.01).abs() < 1e-9, "{}", total.mean_loss);
        assert!((total.max_loss - 0.10).abs() < 1e-9);
        assert!((total.mean_bitrate_up_kbps - 250.0).abs() < 1e-9);
        assert_eq!(total.mean_rtt_ms, Some(50.0));
        assert_eq!(people.len(), 2);
        assert_eq!(people[0].participant_id, "alice", "most loss first");
        assert!((people[0].summary.mean_loss - 0.02).abs() < 1e-9);
        assert!((people[0].summary.mean_bitrate_up_kbps - 500.0).abs() < 1e-9);
        assert!((people[1].summary.mean_bitrate_down_kbps - 1000.0).abs() < 1e-9);
        assert_eq!(people[1].summary.mean_rtt_ms, None);
    }

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
