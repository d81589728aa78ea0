//! Host moderation of a room: lock it, put joiners in a lobby and admit or deny them, mute a
//! participant's track, remove a participant, end the live session for everyone. Hosts are the
//! room's creator (a meeting's organizer) and team admins: whoever gets the `admin` grant.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Access, Room, RoomRow, access};
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AuthUser};
use crate::state::AppState;
use crate::time::from_ms;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(update_moderation))
        .routes(routes!(end_session))
        .routes(routes!(remove_participant))
        .routes(routes!(mute_participant))
        .routes(routes!(list_lobby))
        .routes(routes!(decide_lobby))
}

/// The answer to a join request while the room's lobby holds the caller.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LobbyWait {
    /// Always `waiting`: ask again after a `lobby.admitted` event.
    status: &'static str,
}

impl LobbyWait {
    pub(super) fn waiting() -> Self {
        Self { status: "waiting" }
    }
}

/// Whether `user_id` may pass the room's lobby; queues it (and tells the room's creator) when new.
pub(super) async fn pass_lobby(state: &AppState, room: &RoomRow, user_id: &str) -> ApiResult<bool> {
    let entry: Option<(String,)> = sqlx::query_as("SELECT state FROM room_lobby WHERE room_id = $1 AND user_id = $2")
        .bind(&room.id)
        .bind(user_id)
        .fetch_optional(state.db.pool())
        .await?;
    match entry.as_ref().map(|(s,)| s.as_str()) {
        Some("admitted") => Ok(true),
        Some("denied") => Err(ApiError::Forbidden("a host declined to let you in")),
        Some(_) => Ok(false),
        None => {
            sqlx::query(
                "INSERT INTO room_lobby (room_id, user_id, state, created_at) VALUES ($1, $2, 'waiting', $3) \
                 ON CONFLICT (room_id, user_id) DO NOTHING",
            )
            .bind(&room.id)
            .bind(user_id)
            .bind(now_ms())
            .execute(state.db.pool())
            .await?;
            if let Some(creator) = &room.created_by {
                state.events.publish(
                    [creator.as_str()],
                    "lobby.waiting",
                    &json!({ "room_id": room.id, "user_id": user_id }),
                );
            }
            Ok(false)
        }
    }
}

async fn host(state: &AppState, room_id: &str, user_id: &str) -> ApiResult<Access> {
    let a = access(state, room_id, user_id).await?;
    if a.host {
        Ok(a)
    } else {
        Err(ApiError::Forbidden("only hosts may moderate the room"))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateModeration {
    /// Only hosts may join while locked; participants already in stay.
    locked: Option<bool>,
    /// New joiners wait until a host admits them.
    lobby: Option<bool>,
}

/// Lock the room or turn its lobby on or off (hosts).
#[utoipa::path(patch, path = "/{room_id}/moderation", tag = "rooms", security(("bearer" = [])),
    request_body = UpdateModeration,
    responses((status = 200, body = Room), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn update_moderation(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
    AppJson(req): AppJson<UpdateModeration>,
) -> ApiResult<AppJson<Room>> {
    let mut room = host(&state, &room_id, &auth.user_id).await?.room;
    if let Some(locked) = req.locked {
        room.locked = i64::from(locked);
    }
    if let Some(lobby) = req.lobby {
        room.lobby = i64::from(lobby);
    }
    sqlx::query("UPDATE rooms SET locked = $1, lobby = $2, updated_at = $3 WHERE id = $4")
        .bind(room.locked)
        .bind(room.lobby)
        .bind(now_ms())
        .bind(&room_id)
        .execute(state.db.pool())
        .await?;
    if let Some(media) = &state.media {
        media.set_locked(&room_id, room.locked != 0);
    }
    Ok(AppJson(room.into()))
}

/// End the live session for everyone; the room stays (hosts).
#[utoipa::path(post, path = "/{room_id}/end", tag = "rooms", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn end_session(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    host(&state, &room_id, &auth.user_id).await?;
    if let Some(media) = &state.media {
        media.close(&room_id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a participant from the live session (hosts). It may join again unless the room is
/// locked or its lobby holds it.
#[utoipa::path(delete, path = "/{room_id}/participants/{participant_id}", tag = "rooms", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn remove_participant(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((room_id, participant)): AppPath<(String, String)>,
) -> ApiResult<StatusCode> {
    host(&state, &room_id, &auth.user_id).await?;
    let removed = match &state.media {
        Some(media) => media.remove(&room_id, &participant).await,
        None => false,
    };
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("participant"))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MuteTrack {
    /// The track (as listed in the room's live state).
    track_id: String,
}

/// Mute one of a participant's tracks: it is no longer forwarded (hosts).
#[utoipa::path(post, path = "/{room_id}/participants/{participant_id}/mute", tag = "rooms", security(("bearer" = [])),
    request_body = MuteTrack,
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn mute_participant(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((room_id, participant)): AppPath<(String, String)>,
    AppJson(req): AppJson<MuteTrack>,
) -> ApiResult<StatusCode> {
    host(&state, &room_id, &auth.user_id).await?;
    let muted = match &state.media {
        Some(media) => media.mute(&room_id, &participant, &req.track_id).await,
        None => false,
    };
    if muted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("track"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LobbyEntry {
    user_id: String,
    display_name: String,
    waiting_since: DateTime<Utc>,
}

/// Who waits in the lobby, longest-waiting first (hosts).
#[utoipa::path(get, path = "/{room_id}/lobby", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = Vec<LobbyEntry>), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody)))]
async fn list_lobby(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
) -> ApiResult<AppJson<Vec<LobbyEntry>>> {
    host(&state, &room_id, &auth.user_id).await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT l.user_id, u.display_name, l.created_at FROM room_lobby l JOIN users u ON u.id = l.user_id \
         WHERE l.room_id = $1 AND l.state = 'waiting' ORDER BY l.created_at, l.user_id",
    )
    .bind(&room_id)
    .fetch_all(state.db.pool())
    .await?;
    Ok(AppJson(
        rows.into_iter()
            .map(|(user_id, display_name, since)| LobbyEntry {
                user_id,
                display_name,
                waiting_since: from_ms(since),
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LobbyDecision {
    /// `true` lets the user in; `false` turns it away.
    admit: bool,
}

/// Admit or deny someone waiting in the lobby (hosts). The user is told with a
/// `lobby.admitted` or `lobby.denied` event.
#[utoipa::path(put, path = "/{room_id}/lobby/{user_id}", tag = "rooms", security(("bearer" = [])),
    request_body = LobbyDecision,
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn decide_lobby(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath((room_id, user_id)): AppPath<(String, String)>,
    AppJson(req): AppJson<LobbyDecision>,
) -> ApiResult<StatusCode> {
    host(&state, &room_id, &auth.user_id).await?;
    let decision = if req.admit { "admitted" } else { "denied" };
    let updated = sqlx::query("UPDATE room_lobby SET state = $1 WHERE room_id = $2 AND user_id = $3")
        .bind(decision)
        .bind(&room_id)
        .bind(&user_id)
        .execute(state.db.pool())
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ApiError::NotFound("lobby entry"));
    }
    state.events.publish(
        [user_id.as_str()],
        &format!("lobby.{decision}"),
        &json!({ "room_id": room_id }),
    );
    Ok(StatusCode::NO_CONTENT)
}
