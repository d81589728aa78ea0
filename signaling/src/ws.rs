//! `GET /ws/signal`: one socket's life. The first message is `join` (or `resume`); then requests
//! are answered in order while the session's events stream out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use convene_auth::{OpaqueToken, PublishSource, TokenError, hash_token};
use convene_proto::signal::{ClientMessage, Me, ServerMessage, Target};
use convene_sfu::{
    Grants, LayerQuality, ParticipantId, ParticipantInfo, RoomId, SfuError, TrackId, TrackSettings, TrackSource,
};

use crate::session::{Attached, Session, Standing};
use crate::{Signaling, convert, moderation};

/// Largest text frame read at all; SDP offers with many m-lines stay far below.
const MAX_FRAME: usize = 1024 * 1024;
/// Largest message accepted; larger ones get an error (the session goes on).
const MAX_MESSAGE: usize = 128 * 1024;
/// Time to send `join` or `resume` after connecting.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Close code for a client that fell too far behind (private range, RFC 6455 §7.4.2).
const CLOSE_SLOW_CONSUMER: u16 = 4008;

pub(crate) async fn upgrade(State(signaling): State<Arc<Signaling>>, ws: WebSocketUpgrade) -> Response {
    convene_api::events::sized(ws)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| connection(signaling, socket))
}

fn error(id: Option<String>, code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        id,
        code: code.to_owned(),
        message: message.into(),
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}

/// Reads the next client message: `Ok(None)` when the socket is gone, `Err` for a message the
/// client should be told about.
fn parse(frame: Message) -> Result<Option<ClientMessage>, Box<ServerMessage>> {
    let invalid = |code: &str, message: String| Box::new(error(None, code, message));
    match frame {
        Message::Text(text) if text.len() > MAX_MESSAGE => Err(invalid(
            "message_too_large",
            format!("messages are limited to {MAX_MESSAGE} bytes"),
        )),
        Message::Text(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| invalid("invalid_message", format!("not a signaling message: {e}"))),
        Message::Binary(_) => Err(invalid(
            "invalid_message",
            "binary frames are not signaling messages".to_owned(),
        )),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(None),
    }
}

async fn connection(signaling: Arc<Signaling>, mut socket: WebSocket) {
    // Until joined: the first meaningful message must be join or resume.
    let deadline = tokio::time::sleep(JOIN_TIMEOUT);
    tokio::pin!(deadline);
    let (session, attached) = loop {
        let frame = tokio::select! {
            frame = socket.recv() => frame,
            () = &mut deadline => {
                send(&mut socket, &error(None, "join_timeout", "send join or resume first")).await;
                close(&mut socket, close_code::POLICY, "join timeout").await;
                return;
            }
        };
        let Some(Ok(frame)) = frame else { return };
        if matches!(frame, Message::Close(_)) {
            return;
        }
        let outcome = match parse(frame) {
            Ok(Some(ClientMessage::Join {
                id,
                token,
                auto_subscribe,
            })) => join(&signaling, &mut socket, id, &token, auto_subscribe.unwrap_or(true)).await,
            Ok(Some(ClientMessage::Resume { id, session_token })) => {
                resume(&signaling, &mut socket, id, &session_token).await
            }
            Ok(Some(ClientMessage::Ping { id })) => {
                send(&mut socket, &ServerMessage::Pong { id }).await;
                None
            }
            Ok(Some(_)) => {
                send(&mut socket, &error(None, "not_joined", "send join or resume first")).await;
                None
            }
            Ok(None) => None,
            Err(e) => {
                send(&mut socket, &e).await;
                None
            }
        };
        if let Some(joined) = outcome {
            break joined;
        }
    };
    serve(&signaling, &session, attached, socket).await;
}

pub(crate) fn grants(claims: &convene_auth::RoomGrants) -> Grants {
    Grants {
        publish_audio: claims.may_publish(PublishSource::Audio),
        publish_video: claims.may_publish(PublishSource::Video),
        publish_screen: claims.may_publish(PublishSource::Screen),
        subscribe: claims.subscribe,
        data: claims.data,
        hidden: claims.hidden,
    }
}

async fn join(
    signaling: &Arc<Signaling>,
    socket: &mut WebSocket,
    id: Option<String>,
    token: &str,
    auto_subscribe: bool,
) -> Option<(Arc<Session>, Attached)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let claims = match signaling.join_tokens.verify(token, now) {
        Ok(c) => c,
        Err(TokenError::Expired) => {
            send(
                socket,
                &error(id, "token_expired", "the join token has expired; get a new one"),
            )
            .await;
            return None;
        }
        Err(TokenError::Invalid) => {
            send(socket, &error(id, "invalid_token", "the join token is not valid")).await;
            return None;
        }
    };
    let (Ok(room), Ok(participant)) = (
        RoomId::parse(claims.room.clone()),
        ParticipantId::parse(claims.sub.clone()),
    ) else {
        send(
            socket,
            &error(id, "invalid_token", "the join token names no valid room"),
        )
        .await;
        return None;
    };
    if !claims.grants.admin && signaling.is_locked(&claims.room) {
        send(socket, &error(id, "room_locked", "the room is locked by its hosts")).await;
        return None;
    }
    let _serialized = signaling.join_lock.lock().await;
    // The same identity joining again (a second tab, a reload) replaces the old session.
    if let Some(old) = signaling.by_identity(&claims.room, &claims.sub) {
        old.remove("joined_elsewhere").await;
    }
    if let Some(max) = claims.max_participants {
        let present = signaling
            .sfu
            .room_snapshot(&room)
            .await
            .map_or(0, |s| s.participants.len());
        if present >= usize::try_from(max).unwrap_or(usize::MAX) {
            send(
                socket,
                &error(id, "room_full", format!("the room admits {max} participants")),
            )
            .await;
            return None;
        }
    }
    let info = ParticipantInfo {
        name: claims.name.clone(),
        grants: grants(&claims.grants),
        auto_subscribe,
    };
    let (handle, events, snapshot) = match signaling.sfu.join(room, participant, info).await {
        Ok(joined) => joined,
        Err(e) => {
            send(socket, &convert::error(id, &e)).await;
            return None;
        }
    };
    let session_token = OpaqueToken::generate();
    let me = Me {
        id: claims.sub.clone(),
        name: claims.name.clone(),
    };
    let standing = Standing {
        host: claims.grants.admin,
        hidden: claims.grants.hidden,
    };
    let session = Session::start(
        signaling,
        handle,
        events,
        me.clone(),
        standing,
        claims.room.clone(),
        session_token.hash(),
    );
    signaling.remember(&session);
    if !standing.hidden {
        signaling.report_joined(&claims.room, &claims.sub);
    }
    let attached = session.attach()?;
    let joined = ServerMessage::Joined {
        id,
        room: claims.room,
        participant: me,
        others: snapshot.participants.iter().map(convert::participant).collect(),
        ice_servers: signaling.config.ice.servers_for(&claims.sub, now),
        session_token: session_token.into_string(),
        resume_grace_s: signaling.config.resume_grace.as_secs(),
    };
    tracing::info!(room = %session.room, participant = %session.me.id, "joined");
    send(socket, &joined).await.then_some((session, attached))
}

async fn resume(
    signaling: &Arc<Signaling>,
    socket: &mut WebSocket,
    id: Option<String>,
    session_token: &str,
) -> Option<(Arc<Session>, Attached)> {
    let Some(session) = signaling.by_token(&hash_token(session_token)) else {
        send(socket, &error(id, "session_expired", "no such session; join again")).await;
        return None;
    };
    let Some(attached) = session.attach() else {
        send(
            socket,
            &error(id, "session_expired", "the session has ended; join again"),
        )
        .await;
        return None;
    };
    let others = match RoomId::parse(session.room.clone()) {
        Ok(room) => signaling
            .sfu
            .room_snapshot(&room)
            .await
            .map(|s| s.participants)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let others = others
        .iter()
        .filter(|p| p.id.as_str() != session.me.id)
        .map(convert::participant)
        .collect();
    let resumed = ServerMessage::Resumed {
        id,
        room: session.room.clone(),
        participant: session.me.clone(),
        others,
    };
    tracing::info!(room = %session.room, participant = %session.me.id, "resumed");
    send(socket, &resumed).await.then_some((session, attached))
}

/// Runs a joined socket until it closes, the session ends or the server stops.
async fn serve(signaling: &Arc<Signaling>, session: &Arc<Session>, attached: Attached, mut socket: WebSocket) {
    let Attached {
        generation,
        held,
        mut live,
    } = attached;
    for message in held {
        if !send(&mut socket, &message).await {
            session.detach(generation);
            return;
        }
    }
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                if matches!(frame, Message::Close(_)) {
                    break;
                }
                match parse(frame) {
                    Ok(Some(ClientMessage::Leave { id })) => {
                        send(&mut socket, &ServerMessage::Ack { id }).await;
                        send(&mut socket, &ServerMessage::Removed { reason: "left".to_owned() }).await;
                        session.end().await;
                        close(&mut socket, close_code::NORMAL, "left").await;
                        return;
                    }
                    Ok(Some(request)) => {
                        if let Some(reply) = handle(signaling, session, request).await
                            && !send(&mut socket, &reply).await
                        {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if !send(&mut socket, &e).await {
                            break;
                        }
                    }
                }
            }
            message = live.recv() => match message {
                Some(message) => {
                    let removed = matches!(*message, ServerMessage::Removed { .. });
                    if !send(&mut socket, &message).await {
                        break;
                    }
                    if removed {
                        close(&mut socket, close_code::NORMAL, "removed").await;
                        return;
                    }
                }
                None => {
                    // The session dropped this socket: too slow, replaced by a resume, or ended.
                    close(&mut socket, CLOSE_SLOW_CONSUMER, "detached; resume with the session token").await;
                    return;
                }
            },
            () = signaling.shutdown.cancelled() => {
                close(&mut socket, close_code::AWAY, "server shutting down").await;
                return;
            }
        }
    }
    session.detach(generation);
}

/// Answers one request of a joined client; `None` when nothing needs saying.
async fn handle(signaling: &Signaling, session: &Session, request: ClientMessage) -> Option<ServerMessage> {
    let h = &session.handle;
    let ack = |id: Option<String>| id.map(|id| ServerMessage::Ack { id: Some(id) });
    match request {
        ClientMessage::Join { id, .. } | ClientMessage::Resume { id, .. } => {
            Some(error(id, "already_joined", "this socket has already joined"))
        }
        ClientMessage::Offer {
            id,
            target: Target::Publisher,
            sdp,
        } => Some(match h.publisher_offer(sdp).await {
            Ok(answer) => ServerMessage::Answer {
                id,
                target: Target::Publisher,
                sdp: answer,
            },
            Err(e) => convert::error(id, &e),
        }),
        ClientMessage::Offer {
            id,
            target: Target::Subscriber,
            ..
        } => Some(error(
            id,
            "invalid_target",
            "the server offers the subscriber connection; answer it instead",
        )),
        ClientMessage::Answer {
            id,
            target: Target::Subscriber,
            sdp,
        } => match h.subscriber_answer(sdp).await {
            Ok(()) => ack(id),
            Err(e) => Some(convert::error(id, &e)),
        },
        ClientMessage::Answer {
            id,
            target: Target::Publisher,
            ..
        } => Some(error(
            id,
            "invalid_target",
            "the client offers the publisher connection; the server answers it",
        )),
        ClientMessage::Candidate { id, target, candidate } => {
            match h.add_ice_candidate(convert::peer_target(target), candidate).await {
                Ok(()) => ack(id),
                Err(e) => Some(convert::error(id, &e)),
            }
        }
        ClientMessage::TrackInfo { id, mid, source, muted } => {
            let source = match source.parse::<TrackSource>() {
                Ok(s) => s,
                Err(e) => return Some(convert::error(id, &e)),
            };
            match h.set_track_info(mid, source, muted).await {
                Ok(()) => ack(id),
                Err(e) => Some(convert::error(id, &e)),
            }
        }
        ClientMessage::Mute { id, mid, muted } => {
            // Keep the source the track was published with.
            let source = published_source(signaling, session, &mid).await;
            let Some(source) = source else {
                return Some(error(id, "unknown_mid", "no published track on that mid"));
            };
            match h.set_track_info(mid, source, muted).await {
                Ok(()) => ack(id),
                Err(e) => Some(convert::error(id, &e)),
            }
        }
        ClientMessage::Subscribe { id, track_id } => match TrackId::parse(track_id) {
            Ok(track) => match h.subscribe(track).await {
                Ok(()) => ack(id),
                Err(e) => Some(convert::error(id, &e)),
            },
            Err(e) => Some(convert::error(id, &e)),
        },
        ClientMessage::Unsubscribe { id, track_id } => match TrackId::parse(track_id) {
            Ok(track) => match h.unsubscribe(track).await {
                Ok(()) => ack(id),
                Err(e) => Some(convert::error(id, &e)),
            },
            Err(e) => Some(convert::error(id, &e)),
        },
        ClientMessage::TrackSettings {
            id,
            track_id,
            width,
            height,
            enabled,
            quality,
        } => {
            let settings = match track_settings(width, height, enabled, quality.as_deref()) {
                Ok(s) => s,
                Err(e) => return Some(convert::error(id, &e)),
            };
            match TrackId::parse(track_id) {
                Ok(track) => match h.set_track_settings(track, settings).await {
                    Ok(()) => ack(id),
                    Err(e) => Some(convert::error(id, &e)),
                },
                Err(e) => Some(convert::error(id, &e)),
            }
        }
        ClientMessage::Ping { id } => Some(ServerMessage::Pong { id }),
        request @ (ClientMessage::MuteParticipant { .. }
        | ClientMessage::RemoveParticipant { .. }
        | ClientMessage::EndRoom { .. }) => moderation::handle(signaling, session, request).await,
        ClientMessage::Leave { .. } => None,
    }
}

/// A `track_settings` message as the SFU takes it: width and height come together.
fn track_settings(
    width: Option<u32>,
    height: Option<u32>,
    enabled: bool,
    quality: Option<&str>,
) -> Result<TrackSettings, SfuError> {
    let size = match (width, height) {
        (Some(w), Some(h)) => Some((w, h)),
        (None, None) => None,
        _ => return Err(SfuError::InvalidSettings),
    };
    let quality = quality.map(str::parse::<LayerQuality>).transpose()?;
    Ok(TrackSettings { enabled, size, quality })
}

/// The source of the caller's track published on `mid`, if any.
async fn published_source(signaling: &Signaling, session: &Session, mid: &str) -> Option<TrackSource> {
    let room = RoomId::parse(session.room.clone()).ok()?;
    let snapshot = signaling.sfu.room_snapshot(&room).await.ok()?;
    snapshot
        .participants
        .iter()
        .filter(|p| p.id.as_str() == session.me.id)
        .flat_map(|p| &p.tracks)
        .find(|t| t.publisher_mid == mid)
        .map(|t| t.source)
}
