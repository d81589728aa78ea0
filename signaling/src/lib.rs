//! Signaling: the JSON WebSocket at `GET /ws/signal` that brokers SDP and ICE between a browser
//! and the SFU (`convene_proto::signal` has the messages), WHIP and WHEP (`POST /whip/{room}`,
//! `POST /whep/{room}`, RFC 9725; see `whip.rs`), plus the rooms API's view of the media plane
//! ([`convene_api::rooms::MediaRooms`]).
//!
//! A participant's [`session::Session`] outlives its socket: when the socket drops, events are
//! held for a grace period and a `resume` with the session token re-attaches without
//! renegotiating media; after the grace period the participant leaves and the others are told.

mod activity;
mod convert;
mod moderation;
mod session;
mod whip;
mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use convene_api::rooms::{MediaRooms, RecordingEnded, RecordingRefused};
use convene_auth::{IceConfig, JoinTokens, Secret};
use convene_proto::LiveRoom;
use convene_sfu::{RoomId, Sfu, SfuError};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use session::Session;

#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// How long a participant whose socket dropped is kept for `resume`.
    pub resume_grace: Duration,
    pub ice: IceConfig,
}

/// Shared state of every signaling connection.
pub struct Signaling {
    sfu: Sfu,
    join_tokens: JoinTokens,
    config: SignalingConfig,
    sessions: Mutex<Sessions>,
    /// Serializes joins so a room's participant limit holds under concurrent joins.
    join_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    activity: activity::Activity,
    locks: moderation::Locks,
}

impl Signaling {
    pub fn new(sfu: Sfu, secret: &Secret, config: SignalingConfig, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            sfu,
            join_tokens: JoinTokens::new(secret),
            config,
            sessions: Mutex::new(Sessions::default()),
            join_lock: tokio::sync::Mutex::new(()),
            shutdown,
            activity: activity::Activity::default(),
            locks: moderation::Locks::default(),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ws/signal", get(ws::upgrade))
            .with_state(self.clone())
            .merge(whip::router(self.clone()))
    }

    pub fn sfu(&self) -> &Sfu {
        &self.sfu
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, session: &Arc<Session>) {
        let mut s = self.sessions();
        s.by_identity.insert(
            (session.room.clone(), session.me.id.clone()),
            session.token_hash.clone(),
        );
        s.by_token.insert(session.token_hash.clone(), session.clone());
    }

    fn forget(&self, session: &Session) {
        let mut s = self.sessions();
        if s.by_token.remove(&session.token_hash).is_some() {
            let key = (session.room.clone(), session.me.id.clone());
            if s.by_identity.get(&key) == Some(&session.token_hash) {
                s.by_identity.remove(&key);
            }
        }
    }

    fn by_token(&self, token_hash: &str) -> Option<Arc<Session>> {
        self.sessions().by_token.get(token_hash).cloned()
    }

    fn by_identity(&self, room: &str, participant: &str) -> Option<Arc<Session>> {
        let s = self.sessions();
        let hash = s.by_identity.get(&(room.to_owned(), participant.to_owned()))?;
        s.by_token.get(hash).cloned()
    }
}

/// Live sessions by the hash of their session token, and by (room, participant).
#[derive(Default)]
struct Sessions {
    by_token: HashMap<String, Arc<Session>>,
    by_identity: HashMap<(String, String), String>,
}

impl MediaRooms for Signaling {
    fn live(&self, room_id: &str) -> BoxFuture<'_, LiveRoom> {
        let room = RoomId::parse(room_id);
        Box::pin(async move {
            match room {
                Ok(room) => self
                    .sfu
                    .room_snapshot(&room)
                    .await
                    .map(|s| LiveRoom {
                        participants: s.participants.iter().map(convert::participant).collect(),
                    })
                    .unwrap_or_default(),
                Err(_) => LiveRoom::default(),
            }
        })
    }

    fn close(&self, room_id: &str) -> BoxFuture<'_, ()> {
        let room = room_id.to_owned();
        Box::pin(async move { self.end_room(&room).await })
    }

    fn remove(&self, room_id: &str, participant_id: &str) -> BoxFuture<'_, bool> {
        let (room, participant) = (room_id.to_owned(), participant_id.to_owned());
        Box::pin(async move { self.remove_participant(&room, &participant).await })
    }

    fn mute(&self, room_id: &str, participant_id: &str, track_id: &str) -> BoxFuture<'_, bool> {
        let (room, participant, track) = (room_id.to_owned(), participant_id.to_owned(), track_id.to_owned());
        Box::pin(async move { self.mute_track(&room, &participant, &track).await })
    }

    fn set_locked(&self, room_id: &str, locked: bool) {
        self.lock(room_id, locked);
    }

    fn start_recording(
        &self,
        room_id: &str,
        recording_id: &str,
        dir: std::path::PathBuf,
        started_at_ms: i64,
    ) -> BoxFuture<'_, Result<(), RecordingRefused>> {
        let (room, id) = (RoomId::parse(room_id), recording_id.to_owned());
        Box::pin(async move {
            let room = room.map_err(|_| RecordingRefused::NotLive)?;
            self.sfu
                .start_recording(&room, id, dir, started_at_ms)
                .await
                .map_err(|e| match e {
                    SfuError::AlreadyRecording => RecordingRefused::AlreadyRecording,
                    SfuError::UnknownRoom => RecordingRefused::NotLive,
                    _ => RecordingRefused::Unavailable,
                })
        })
    }

    fn stop_recording(&self, room_id: &str) -> BoxFuture<'_, Option<RecordingEnded>> {
        let room = RoomId::parse(room_id);
        Box::pin(async move {
            let f = self.sfu.stop_recording(&room.ok()?).await.ok()??;
            Some(RecordingEnded {
                recording_id: f.recording_id,
                duration_ms: f.duration_ms,
                error: f.error,
            })
        })
    }
}
