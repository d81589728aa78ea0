//! Room activity for the API's webhooks: a room starts with its first visible participant and
//! finishes when the last one leaves (or the room is closed). Hidden participants (recorders)
//! are not reported.

use std::collections::HashSet;
use std::sync::Mutex;

use convene_api::webhooks::{EventType, RoomEvent, RoomEventSink};
use convene_sfu::RoomId;

use crate::Signaling;

/// The sink, once the API connects it, and the rooms reported as started.
#[derive(Default)]
pub(crate) struct Activity {
    sink: std::sync::OnceLock<RoomEventSink>,
    live: Mutex<HashSet<String>>,
}

impl Activity {
    fn report(&self, kind: EventType, room: &str, participant: Option<&str>) {
        if let Some(sink) = self.sink.get() {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            sink.report(RoomEvent {
                kind,
                room_id: room.to_owned(),
                participant: participant.map(str::to_owned),
                at,
            });
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Signaling {
    /// Reports room activity to `sink` from now on.
    pub fn report_room_events(&self, sink: RoomEventSink) {
        // Connected once at startup; a second sink is ignored.
        let _ = self.activity.sink.set(sink);
    }

    pub(crate) fn report_joined(&self, room: &str, participant: &str) {
        if self.activity.live().insert(room.to_owned()) {
            self.activity.report(EventType::RoomStarted, room, None);
        }
        self.activity
            .report(EventType::ParticipantJoined, room, Some(participant));
    }

    pub(crate) async fn report_left(&self, room: &str, participant: &str) {
        self.activity
            .report(EventType::ParticipantLeft, room, Some(participant));
        let empty = match RoomId::parse(room) {
            Ok(id) => self
                .sfu
                .room_snapshot(&id)
                .await
                .map(|s| s.participants.is_empty())
                .unwrap_or(true),
            Err(_) => true,
        };
        if empty && self.activity.live().remove(room) {
            self.activity.report(EventType::RoomFinished, room, None);
        }
    }
}
