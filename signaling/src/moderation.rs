//! Host moderation of live sessions, for the rooms REST API ([`convene_api::rooms::MediaRooms`])
//! and for hosts' signaling messages: lock the room, remove a participant, mute a track (a muted
//! track is not forwarded), end the session. Hosts are participants with the `admin` grant.

use std::collections::HashSet;
use std::sync::Mutex;

use convene_proto::signal::{ClientMessage, ServerMessage};
use convene_sfu::RoomId;

use crate::Signaling;
use crate::session::Session;

/// Rooms whose live session admits only hosts.
#[derive(Default)]
pub(crate) struct Locks(Mutex<HashSet<String>>);

impl Locks {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Signaling {
    pub(crate) fn is_locked(&self, room: &str) -> bool {
        self.locks.set().contains(room)
    }

    pub(crate) fn lock(&self, room: &str, locked: bool) {
        if locked {
            self.locks.set().insert(room.to_owned());
        } else {
            self.locks.set().remove(room);
        }
    }

    /// Removes `participant` from `room`, telling its client why.
    pub(crate) async fn remove_participant(&self, room: &str, participant: &str) -> bool {
        match self.by_identity(room, participant) {
            Some(session) => {
                session.remove("removed_by_host").await;
                true
            }
            None => false,
        }
    }

    /// Mutes `participant`'s track `track_id`; everyone sees the track muted.
    pub(crate) async fn mute_track(&self, room: &str, participant: &str, track_id: &str) -> bool {
        let Some(session) = self.by_identity(room, participant) else {
            return false;
        };
        let Ok(room_id) = RoomId::parse(room) else {
            return false;
        };
        let Ok(snapshot) = self.sfu.room_snapshot(&room_id).await else {
            return false;
        };
        let track = snapshot
            .participants
            .iter()
            .filter(|p| p.id.as_str() == participant)
            .flat_map(|p| &p.tracks)
            .find(|t| t.id.as_str() == track_id);
        match track {
            Some(t) => session
                .handle
                .set_track_info(t.publisher_mid.clone(), t.source, true)
                .await
                .is_ok(),
            None => false,
        }
    }

    /// Ends the room's live session for everyone.
    pub(crate) async fn end_room(&self, room: &str) {
        if let Ok(room) = RoomId::parse(room) {
            // An unknown room has no live session to end.
            let _ = self.sfu.close_room(&room).await;
        }
    }
}

/// Answers a host's moderation message; non-hosts get `forbidden`.
pub(crate) async fn handle(signaling: &Signaling, session: &Session, request: ClientMessage) -> Option<ServerMessage> {
    let error = |id: Option<String>, code: &str, message: &str| {
        Some(ServerMessage::Error {
            id,
            code: code.to_owned(),
            message: message.to_owned(),
        })
    };
    let (id, done) = match request {
        ClientMessage::MuteParticipant {
            id,
            participant_id,
            track_id,
        } => {
            if !session.standing.host {
                return error(id, "forbidden", "only hosts may mute others");
            }
            let done = signaling.mute_track(&session.room, &participant_id, &track_id).await;
            (id, done)
        }
        ClientMessage::RemoveParticipant { id, participant_id } => {
            if !session.standing.host {
                return error(id, "forbidden", "only hosts may remove participants");
            }
            let done =
                participant_id != session.me.id && signaling.remove_participant(&session.room, &participant_id).await;
            (id, done)
        }
        ClientMessage::EndRoom { id } => {
            if !session.standing.host {
                return error(id, "forbidden", "only hosts may end the meeting");
            }
            signaling.end_room(&session.room).await;
            return None;
        }
        _ => return None,
    };
    if done {
        id.map(|id| ServerMessage::Ack { id: Some(id) })
    } else {
        error(id, "not_found", "no such participant or track in this room")
    }
}
