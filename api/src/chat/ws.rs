//! `GET /ws/chat/{channel_id}`: the live events of one channel, for anyone who can see it
//! (public-channel readers who are not members included). First frame
//! `{"type": "hello", "channel_id"}`, then `{"type", "data"}` frames as on `/ws/events` but
//! without sequence numbers: after a reconnect, catch up with `GET .../messages?after=`.
//! The stream closes when the channel is deleted or the user is removed from it (4004), and
//! when the client falls more than 256 events behind (4008).

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::{ChannelKind, access};
use crate::error::ApiError;
use crate::events::{CLOSE_SLOW_CONSUMER, close, sized};
use crate::extract::AuthUser;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/ws/chat/{channel_id}", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct Params {
    access_token: Option<String>,
}

const CLOSE_GONE: u16 = 4004;

async fn upgrade(
    State(state): State<AppState>,
    Path(channel_id): Path<String>,
    Query(params): Query<Params>,
    ws: WebSocketUpgrade,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let user = AuthUser::for_websocket(&state, request, params.access_token.as_deref()).await?;
    let access = access(&state.db, &channel_id, &user.user_id).await?;
    let public = access.kind == ChannelKind::Public;
    Ok(sized(ws)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(socket, state, user.user_id, channel_id, public)))
}

async fn serve(mut socket: WebSocket, state: AppState, user_id: String, channel_id: String, public: bool) {
    let mut live = state.chat.subscribe_channel(&channel_id);
    let hello = json!({ "type": "hello", "channel_id": channel_id }).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let mut ping = tokio::time::interval(Duration::from_secs(25));
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(event) => {
                    let revoked = event.ends_stream_of(&user_id, public);
                    if socket.send(Message::Text(event.text)).await.is_err() {
                        return;
                    }
                    if revoked {
                        close(&mut socket, CLOSE_GONE, "channel deleted or membership ended").await;
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    close(&mut socket, CLOSE_SLOW_CONSUMER, "slow consumer; reconnect and catch up").await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            () = state.shutdown.cancelled() => {
                close(&mut socket, axum::extract::ws::close_code::AWAY, "server shutting down").await;
                return;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}
