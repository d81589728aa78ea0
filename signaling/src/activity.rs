//! Room activity for the API's webhooks: a room starts with its first visible participant and
//! finishes when the last one leaves (or the room is closed). Hidden participants (recorders)
//! are not reported.

use std::collections::HashSet;
use std::sync::Mutex;

use convene_api::webhooks::{EventType, QualitySample, RoomEvent, RoomEventSink};
use convene_sfu::{QualityReport, RoomId};

use crate::Signaling;

/// The sink, once the API connects it, and the rooms reported as started.
#[derive(Default)]
pub(crate) struct Activity {
    sink: std::sync::OnceLock<RoomEventSink>,
    live: Mutex<HashSet<String>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Activity {
    fn report(&self, kind: EventType, room: &str, participant: Option<&str>) {
        if let Some(sink) = self.sink.get() {
            sink.report(RoomEvent {
                kind,
                room_id: room.to_owned(),
                participant: participant.map(str::to_owned),
                at: now_ms(),
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

    /// A participant's connection over the last few seconds, for meeting analytics.
    pub(crate) fn report_quality(&self, room: &str, participant: &str, r: &QualityReport) {
        if let Some(sink) = self.activity.sink.get() {
            let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            sink.report_quality(QualitySample {
                room_id: room.to_owned(),
                participant: participant.to_owned(),
                at: now_ms(),
                window_ms: int(r.window_ms),
                bytes_up: int(r.bytes_up),
                bytes_down: int(r.bytes_down),
                loss: f64::from(r.loss_permille) / 1000.0,
                max_loss: f64::from(r.max_loss_permille) / 1000.0,
                rtt_ms: r.rtt_ms.map(i64::from),
            });
        }
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
