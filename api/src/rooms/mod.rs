//! `/api/v1/rooms`: a team's video rooms, their live state, and join tokens.
//!
//! Team members (not guests) create rooms and join any room of their team; guests join only the
//! rooms they are invited to. The creator and team admins are hosts: they get the `admin` and
//! `record` grants, invite guests and delete the room (which ends its live session).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use convene_auth::{JoinGrant, RoomGrants};
use convene_proto::{IceServer, LiveRoom};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{self, Event, Origin};
use crate::db::{new_id, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AppPath, AppQuery, AuthUser};
use crate::pagination::{Page, PageQuery};
use crate::state::AppState;
use crate::teams::{Role, member_role};
use crate::time::from_ms;
use crate::validate;

mod moderation;

/// The media plane as the rooms API sees it: live state and the power to end a session.
/// Implemented by the signaling layer over the SFU; absent when media is disabled.
pub trait MediaRooms: Send + Sync + 'static {
    fn live(&self, room_id: &str) -> BoxFuture<'_, LiveRoom>;
    /// Ends the room's live session: every participant is removed.
    fn close(&self, room_id: &str) -> BoxFuture<'_, ()>;
    /// Removes one participant (a host's decision); `false` when it is not in the room.
    fn remove(&self, room_id: &str, participant_id: &str) -> BoxFuture<'_, bool>;
    /// Stops forwarding one of a participant's tracks; `false` when there is no such track.
    fn mute(&self, room_id: &str, participant_id: &str, track_id: &str) -> BoxFuture<'_, bool>;
    /// While locked, only hosts may enter the live session (join tokens issued earlier included).
    fn set_locked(&self, room_id: &str, locked: bool);
    /// Starts recording the live session into `dir` (files per track plus `manifest.json`);
    /// everyone in the room is told. `started_at_ms` (unix ms) goes into the manifest.
    fn start_recording(
        &self,
        room_id: &str,
        recording_id: &str,
        dir: std::path::PathBuf,
        started_at_ms: i64,
    ) -> BoxFuture<'_, Result<(), RecordingRefused>>;
    /// Stops the room's recording and waits for its files to be finalized; `None` when none ran.
    fn stop_recording(&self, room_id: &str) -> BoxFuture<'_, Option<RecordingEnded>>;
}

/// Why the media plane did not start a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingRefused {
    /// Nobody is in the room.
    NotLive,
    /// A recording of the room runs already.
    AlreadyRecording,
    /// The media plane is stopping.
    Unavailable,
}

/// A recording the media plane finished (stopped, or its room emptied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingEnded {
    pub recording_id: String,
    pub duration_ms: u64,
    /// Why writing failed, if it did.
    pub error: Option<String>,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_room, list_rooms))
        .routes(routes!(get_room, delete_room))
        .routes(routes!(join_room))
        .routes(routes!(invite_guest))
        .merge(moderation::router())
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Room {
    id: String,
    team_id: String,
    name: String,
    max_participants: Option<i64>,
    /// Seconds an emptied live session is kept before it is closed.
    empty_timeout_s: i64,
    created_by: Option<String>,
    created_at: DateTime<Utc>,
    /// Only hosts may join.
    locked: bool,
    /// Joiners wait until a host admits them.
    lobby: bool,
    /// Who is in the room now (only on `GET /rooms/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<LiveRoom>,
}

#[derive(FromRow)]
struct RoomRow {
    id: String,
    team_id: String,
    name: String,
    max_participants: Option<i64>,
    empty_timeout_s: i64,
    created_by: Option<String>,
    created_at: i64,
    locked: i64,
    lobby: i64,
}

impl From<RoomRow> for Room {
    fn from(r: RoomRow) -> Self {
        Self {
            id: r.id,
            team_id: r.team_id,
            name: r.name,
            max_participants: r.max_participants,
            empty_timeout_s: r.empty_timeout_s,
            created_by: r.created_by,
            created_at: from_ms(r.created_at),
            locked: r.locked != 0,
            lobby: r.lobby != 0,
            live: None,
        }
    }
}

const ROOM_COLUMNS: &str =
    "id, team_id, name, max_participants, empty_timeout_s, created_by, created_at, locked, lobby";

/// The caller's standing in a room: 404 unless it may see the room at all.
struct Access {
    room: RoomRow,
    host: bool,
}

/// Who the caller is for a room: its team and whether the caller is a host. Non-members (and
/// guests not invited) get 404, as for every room endpoint.
pub(crate) async fn room_access(state: &AppState, room_id: &str, user_id: &str) -> ApiResult<(String, bool)> {
    let a = access(state, room_id, user_id).await?;
    Ok((a.room.team_id, a.host))
}

async fn access(state: &AppState, room_id: &str, user_id: &str) -> ApiResult<Access> {
    let room: RoomRow = sqlx::query_as(&format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE id = $1"))
        .bind(room_id)
        .fetch_optional(state.db.pool())
        .await?
        .ok_or(ApiError::NotFound("room"))?;
    let role = member_role(&state.db, &room.team_id, user_id)
        .await
        .map_err(|_| ApiError::NotFound("room"))?;
    if role == Role::Guest {
        // Guests enter rooms they are invited to, and the rooms of meetings they attend.
        let invited: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM room_guests WHERE room_id = $1 AND user_id = $2 UNION ALL \
             SELECT 1 FROM calendar_events e JOIN event_attendees a ON a.event_id = e.id \
             WHERE e.room_id = $1 AND a.user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(state.db.pool())
        .await?;
        if invited.is_none() {
            return Err(ApiError::NotFound("room"));
        }
    }
    let host = role.can_manage() || room.created_by.as_deref() == Some(user_id);
    Ok(Access { room, host })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoom {
    name: String,
    team_id: String,
    /// 1-1000; absent for no limit.
    max_participants: Option<i64>,
    /// 0-86400 seconds (default 300).
    empty_timeout_s: Option<i64>,
}

/// Create a room in a team (members, admins and owners).
#[utoipa::path(post, path = "", tag = "rooms", security(("bearer" = [])), request_body = CreateRoom,
    responses((status = 201, body = Room), (status = 403, body = convene_proto::ErrorBody),
              (status = 404, body = convene_proto::ErrorBody), (status = 422, body = convene_proto::ErrorBody)))]
async fn create_room(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<CreateRoom>,
) -> ApiResult<(StatusCode, AppJson<Room>)> {
    let role = member_role(&state.db, &req.team_id, &auth.user_id).await?;
    if role == Role::Guest {
        return Err(ApiError::Forbidden("guests cannot create rooms"));
    }
    let name = validate::name("name", &req.name, 100)?;
    if req.max_participants.is_some_and(|m| !(1..=1000).contains(&m)) {
        return Err(ApiError::field("max_participants", "must be between 1 and 1000"));
    }
    let empty_timeout_s = req.empty_timeout_s.unwrap_or(300);
    if !(0..=86_400).contains(&empty_timeout_s) {
        return Err(ApiError::field("empty_timeout_s", "must be between 0 and 86400"));
    }
    let now = now_ms();
    let row = RoomRow {
        id: new_id(),
        team_id: req.team_id,
        name,
        max_participants: req.max_participants,
        empty_timeout_s,
        created_by: Some(auth.user_id),
        created_at: now,
        locked: 0,
        lobby: 0,
    };
    sqlx::query(
        "INSERT INTO rooms (id, team_id, name, max_participants, empty_timeout_s, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.id)
    .bind(&row.team_id)
    .bind(&row.name)
    .bind(row.max_participants)
    .bind(row.empty_timeout_s)
    .bind(&row.created_by)
    .bind(now)
    .bind(now)
    .execute(state.db.pool())
    .await?;
    Ok((StatusCode::CREATED, AppJson(row.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRooms {
    /// Only this team's rooms.
    team_id: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

/// Rooms the caller may join, oldest first.
#[utoipa::path(get, path = "", tag = "rooms", security(("bearer" = [])), params(ListRooms),
    responses((status = 200, body = Page<Room>)))]
async fn list_rooms(
    State(state): State<AppState>,
    auth: AuthUser,
    AppQuery(q): AppQuery<ListRooms>,
) -> ApiResult<AppJson<Page<Room>>> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    };
    let rows: Vec<RoomRow> = sqlx::query_as(&format!(
        "SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.id > $2 AND ($3 = '' OR r.team_id = $3) AND EXISTS ( \
           SELECT 1 FROM team_members m WHERE m.team_id = r.team_id AND m.user_id = $1 AND (m.role <> 'guest' \
             OR EXISTS (SELECT 1 FROM room_guests g WHERE g.room_id = r.id AND g.user_id = $1) \
             OR EXISTS (SELECT 1 FROM calendar_events e JOIN event_attendees a ON a.event_id = e.id \
               WHERE e.room_id = r.id AND a.user_id = $1))) \
         ORDER BY r.id LIMIT $4"
    ))
    .bind(&auth.user_id)
    .bind(page.after())
    .bind(q.team_id.as_deref().unwrap_or(""))
    .bind(page.limit() + 1)
    .fetch_all(state.db.pool())
    .await?;
    let rooms = rows.into_iter().map(Room::from).collect();
    Ok(AppJson(Page::from_rows(rooms, page.limit(), |r: &Room| r.id.clone())))
}

/// A room with who is in it now.
#[utoipa::path(get, path = "/{room_id}", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = Room), (status = 404, body = convene_proto::ErrorBody)))]
async fn get_room(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
) -> ApiResult<AppJson<Room>> {
    let a = access(&state, &room_id, &auth.user_id).await?;
    let live = match &state.media {
        Some(media) => media.live(&room_id).await,
        None => LiveRoom::default(),
    };
    Ok(AppJson(Room {
        live: Some(live),
        ..a.room.into()
    }))
}

/// Delete a room and end its live session for everyone (hosts).
#[utoipa::path(delete, path = "/{room_id}", tag = "rooms", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody)))]
async fn delete_room(
    State(state): State<AppState>,
    auth: AuthUser,
    origin: Origin,
    AppPath(room_id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let access = access(&state, &room_id, &auth.user_id).await?;
    if !access.host {
        return Err(ApiError::Forbidden(
            "only the room's creator and team admins may delete it",
        ));
    }
    delete(&state, &room_id).await?;
    let event = Event::new("room.deleted", Some(&auth.user_id), "room", &room_id)
        .team(&access.room.team_id)
        .metadata(serde_json::json!({ "name": access.room.name }));
    audit::record(state.db.pool(), &origin, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything a client needs to enter the room's media session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JoinInfo {
    /// Room join token (JWT) for the `join` message of the signaling WebSocket.
    token: String,
    /// The signaling WebSocket.
    ws_url: String,
    ice_servers: Vec<IceServer>,
    room_id: String,
    participant_id: String,
    expires_in: i64,
    /// The meeting's chat channel (`/api/v1/chat/channels/{id}/messages`); joining makes the
    /// caller a member.
    chat_channel_id: String,
}

/// Get a join token for a room the caller may enter. In a room with a lobby, non-hosts get
/// `202` and wait until a host admits them (a `lobby.admitted` event), then ask again.
#[utoipa::path(post, path = "/{room_id}/join", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = JoinInfo), (status = 202, body = moderation::LobbyWait),
              (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody),
              (status = 409, body = convene_proto::ErrorBody)))]
async fn join_room(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
) -> ApiResult<Response> {
    let a = access(&state, &room_id, &auth.user_id).await?;
    if !a.host {
        if a.room.locked != 0 {
            return Err(ApiError::conflict("room_locked", "the room is locked by its hosts"));
        }
        if a.room.lobby != 0 && !moderation::pass_lobby(&state, &a.room, &auth.user_id).await? {
            return Ok((StatusCode::ACCEPTED, AppJson(moderation::LobbyWait::waiting())).into_response());
        }
    }
    let (name,): (String,) = sqlx::query_as("SELECT display_name FROM users WHERE id = $1")
        .bind(&auth.user_id)
        .fetch_one(state.db.pool())
        .await?;
    let mut grants = RoomGrants::participant();
    grants.admin = a.host;
    grants.record = a.host;
    let now = now_ms() / 1000;
    let ttl = state.config.join_token_ttl_secs;
    let token = state
        .join_tokens
        .issue(
            JoinGrant {
                participant: auth.user_id.clone(),
                name,
                room: room_id.clone(),
                grants,
                max_participants: a.room.max_participants.and_then(|m| u32::try_from(m).ok()),
            },
            now,
            ttl,
        )
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let chat_channel_id = crate::chat::room_channel(&state, &room_id, &a.room.team_id, &auth.user_id).await?;
    Ok(AppJson(JoinInfo {
        chat_channel_id,
        token,
        ws_url: signal_url(&state.config.public_url),
        ice_servers: state.config.ice.servers_for(&auth.user_id, now),
        room_id,
        participant_id: auth.user_id,
        expires_in: ttl,
    })
    .into_response())
}

/// Creates a meeting's room on `conn` (the caller's transaction); the organizer is its host.
pub(crate) async fn insert_meeting_room(
    conn: &mut sqlx::AnyConnection,
    team_id: &str,
    name: &str,
    organizer: &str,
    lobby: bool,
) -> ApiResult<String> {
    let id = new_id();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO rooms (id, team_id, name, max_participants, empty_timeout_s, created_by, created_at, updated_at, \
         lobby) VALUES ($1, $2, $3, NULL, 300, $4, $5, $5, $6)",
    )
    .bind(&id)
    .bind(team_id)
    .bind(name)
    .bind(organizer)
    .bind(now)
    .bind(i64::from(lobby))
    .execute(conn)
    .await?;
    Ok(id)
}

/// Deletes a room and ends its live session.
pub(crate) async fn delete(state: &AppState, room_id: &str) -> ApiResult<()> {
    // Recordings go with the room: a running one is stopped first, then the files are removed.
    crate::recordings::delete_for_room(state, room_id).await?;
    sqlx::query("DELETE FROM rooms WHERE id = $1")
        .bind(room_id)
        .execute(state.db.pool())
        .await?;
    if let Some(media) = &state.media {
        media.close(room_id).await;
    }
    Ok(())
}

fn signal_url(public_url: &str) -> String {
    let base = public_url
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| public_url.strip_prefix("http://").map(|rest| format!("ws://{rest}")))
        .unwrap_or_else(|| public_url.to_owned());
    format!("{base}/ws/signal")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteGuest {
    user_id: String,
}

/// Let one of the team's guests into this room (hosts).
#[utoipa::path(post, path = "/{room_id}/guests", tag = "rooms", security(("bearer" = [])), request_body = InviteGuest,
    responses((status = 204), (status = 403, body = convene_proto::ErrorBody), (status = 404, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn invite_guest(
    State(state): State<AppState>,
    auth: AuthUser,
    AppPath(room_id): AppPath<String>,
    AppJson(req): AppJson<InviteGuest>,
) -> ApiResult<StatusCode> {
    let a = access(&state, &room_id, &auth.user_id).await?;
    if !a.host {
        return Err(ApiError::Forbidden("only hosts may invite guests"));
    }
    if member_role(&state.db, &a.room.team_id, &req.user_id).await.ok() != Some(Role::Guest) {
        return Err(ApiError::field("user_id", "must be a guest of the room's team"));
    }
    sqlx::query(
        "INSERT INTO room_guests (room_id, user_id, invited_by, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(&room_id)
    .bind(&req.user_id)
    .bind(&auth.user_id)
    .bind(now_ms())
    .execute(state.db.pool())
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::signal_url;

    #[test]
    fn signal_urls_follow_the_public_scheme() {
        assert_eq!(
            signal_url("https://meet.example.com"),
            "wss://meet.example.com/ws/signal"
        );
        assert_eq!(signal_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws/signal");
    }
}
