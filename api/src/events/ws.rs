//! `GET /ws/events`: the authenticated event stream.
//!
//! Browsers cannot set headers on WebSockets, so the access token may also come as
//! `?access_token=`; the query string never reaches the logs (spans carry the route only).
//! Resume with `?last_seq=N&epoch=E` from the last `hello`/event received.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::Subscription;
use crate::error::ApiError;
use crate::extract::AuthUser;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/ws/events", get(upgrade))
}

#[derive(Debug, Deserialize)]
struct Params {
    access_token: Option<String>,
    last_seq: Option<u64>,
    epoch: Option<String>,
}

/// Close code for a client that fell too far behind (RFC 6455 §7.4.2: 4000-4999 private use).
pub(crate) const CLOSE_SLOW_CONSUMER: u16 = 4008;

/// Read buffer of every server WebSocket (`/ws/events`, `/ws/chat`, `/ws/signal`). tungstenite
/// allocates its read buffer per socket at once (128 KiB by default) and zero-fills all of its
/// free capacity before each read, so every open socket kept 128 KiB resident. Client messages
/// are small (SDP offers, the largest, are a few KiB); a larger frame is still read, in more
/// reads into a buffer that grows for it.
pub const READ_BUFFER: usize = 4 * 1024;

/// Sizes an upgrade's buffers for many mostly idle sockets (see [`READ_BUFFER`]). The write
/// buffer needs no limit of its own: every send is flushed, so it holds one message at most.
pub fn sized(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER)
}

/// Sends a close frame; the socket may already be gone.
pub(crate) async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn upgrade(
    State(state): State<AppState>,
    Query(params): Query<Params>,
    ws: WebSocketUpgrade,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let user = AuthUser::for_websocket(&state, request, params.access_token.as_deref()).await?;
    let resume = match (params.last_seq, params.epoch) {
        (Some(seq), Some(epoch)) => Some((seq, epoch)),
        (Some(seq), None) => Some((seq, String::new())),
        _ => None,
    };
    Ok(sized(ws)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve(socket, state, user, resume)))
}

async fn send_json(socket: &mut WebSocket, value: &impl serde::Serialize) -> bool {
    match serde_json::to_string(value) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn serve(socket: WebSocket, state: AppState, user: AuthUser, resume: Option<(u64, String)>) {
    // An open stream is what makes a user present (online/idle).
    crate::chat::socket_opened(&state, &user.user_id).await;
    stream(socket, &state, &user, resume).await;
    crate::chat::socket_closed(&state, &user.user_id).await;
}

async fn stream(mut socket: WebSocket, state: &AppState, user: &AuthUser, resume: Option<(u64, String)>) {
    let bus = state.events.clone();
    let Subscription { replay, mut live } =
        bus.subscribe(&user.user_id, resume.as_ref().map(|(s, e)| (*s, e.as_str())));
    let mut last_sent = match &replay {
        Ok(events) => events.last().map_or(resume.as_ref().map_or(0, |r| r.0), |e| e.seq),
        Err(r) => r.latest_seq,
    };
    let hello = match &replay {
        Ok(_) => json!({ "type": "hello", "epoch": bus.epoch(), "resumed": resume.is_some() }),
        Err(r) => json!({ "type": "resync_required", "epoch": bus.epoch(), "latest_seq": r.latest_seq }),
    };
    if !send_json(&mut socket, &hello).await {
        return;
    }
    for event in replay.unwrap_or_default() {
        if !send_json(&mut socket, event.as_ref()).await {
            return;
        }
    }
    let mut ping = tokio::time::interval(Duration::from_secs(25));
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(event) => {
                    // Events already replayed from the backlog are not sent twice.
                    if event.seq <= last_sent {
                        continue;
                    }
                    last_sent = event.seq;
                    if !send_json(&mut socket, &*event).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    close(&mut socket, CLOSE_SLOW_CONSUMER, "slow consumer; resume with last_seq").await;
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
