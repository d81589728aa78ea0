//! Presence: a user is focusing while a focus session of theirs runs (a work phase, not
//! paused), else online while at least one `/ws/events` stream is open, idle when they say so
//! (`PUT /api/v1/chat/presence`), offline otherwise. Changes go out as `presence.changed` to
//! everyone who shares a team or a DM with the user. Focus comes from the sessions table, so it
//! survives restarts and is the same on every node.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::realtime::Status;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::extract::{AppJson, AuthUser};
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_presence, set_presence))
}

/// The other users who may see `user_id`'s presence.
async fn audience(db: &Db, user_id: &str) -> ApiResult<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT b.user_id FROM team_members a JOIN team_members b ON b.team_id = a.team_id WHERE a.user_id = $1 \
         UNION SELECT y.user_id FROM chat_members x JOIN chat_channels c ON c.id = x.channel_id AND c.kind = 'dm' \
         JOIN chat_members y ON y.channel_id = x.channel_id WHERE x.user_id = $1",
    )
    .bind(user_id)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).filter(|id| id != user_id).collect())
}

/// The users among `users` with a running focus session (work phase).
async fn focusing(db: &Db, users: &[String]) -> ApiResult<Vec<String>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let list = (1..=users.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT user_id FROM focus_sessions WHERE status = 'running' AND phase = 'work' AND user_id IN ({list})"
    );
    let mut q = sqlx::query_as::<_, (String,)>(&sql);
    for u in users {
        q = q.bind(u);
    }
    Ok(q.fetch_all(db.pool()).await?.into_iter().map(|(id,)| id).collect())
}

/// `status` (from the connections) unless the user is focusing.
async fn effective(db: &Db, user_id: &str, status: Status) -> ApiResult<Status> {
    let user = [user_id.to_owned()];
    Ok(if focusing(db, &user).await?.is_empty() {
        status
    } else {
        Status::Focusing
    })
}

/// Called by the timer when `user_id` starts, pauses, resumes or stops a focus session.
pub(crate) async fn focus_changed(state: &AppState, user_id: &str) {
    announce(state, user_id, state.chat.status(user_id)).await;
}

async fn announce(state: &AppState, user_id: &str, status: Status) {
    let status = match effective(&state.db, user_id, status).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "focus state unavailable");
            status
        }
    };
    match audience(&state.db, user_id).await {
        Ok(users) => state.events.publish(
            users.iter().map(String::as_str),
            "presence.changed",
            &json!({ "user_id": user_id, "status": status }),
        ),
        Err(e) => tracing::warn!(error = %e, "presence audience unavailable"),
    }
}

/// Called by `/ws/events` when a stream of `user_id` opens.
pub(crate) async fn socket_opened(state: &AppState, user_id: &str) {
    if let Some(status) = state.chat.socket_opened(user_id) {
        announce(state, user_id, status).await;
    }
}

/// Called by `/ws/events` when a stream of `user_id` ends.
pub(crate) async fn socket_closed(state: &AppState, user_id: &str) {
    if let Some(status) = state.chat.socket_closed(user_id) {
        announce(state, user_id, status).await;
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserPresence {
    user_id: String,
    status: Status,
}

/// The presence of the caller and everyone who shares a team or a DM with them.
#[utoipa::path(get, path = "/presence", tag = "chat", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserPresence>)))]
async fn get_presence(State(state): State<AppState>, auth: AuthUser) -> ApiResult<AppJson<Vec<UserPresence>>> {
    let mut users = audience(&state.db, &auth.user_id).await?;
    users.push(auth.user_id.clone());
    users.sort();
    let focusing = focusing(&state.db, &users).await?;
    Ok(AppJson(
        users
            .into_iter()
            .map(|user_id| UserPresence {
                status: if focusing.contains(&user_id) {
                    Status::Focusing
                } else {
                    state.chat.status(&user_id)
                },
                user_id,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPresence {
    /// `online` or `idle`; offline follows from closing every event stream.
    status: Status,
}

/// Mark the caller idle or back online; needs an open `/ws/events` stream (409 otherwise).
#[utoipa::path(put, path = "/presence", tag = "chat", security(("bearer" = [])), request_body = SetPresence,
    responses((status = 204), (status = 409, body = convene_proto::ErrorBody),
              (status = 422, body = convene_proto::ErrorBody)))]
async fn set_presence(
    State(state): State<AppState>,
    auth: AuthUser,
    AppJson(req): AppJson<SetPresence>,
) -> ApiResult<StatusCode> {
    let idle = match req.status {
        Status::Online => false,
        Status::Idle => true,
        Status::Offline | Status::Focusing => {
            return Err(ApiError::field("status", "must be online or idle"));
        }
    };
    let changed = state
        .chat
        .set_idle(&auth.user_id, idle)
        .map_err(|()| ApiError::conflict("not_connected", "open /ws/events first"))?;
    if let Some(status) = changed {
        announce(&state, &auth.user_id, status).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
