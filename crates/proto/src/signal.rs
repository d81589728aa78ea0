//! `GET /ws/signal`: JSON text frames, each an object with a `type`. Requests may carry a
//! client-chosen `id`; the reply to a request (`joined`, `answer`, `ack`, `error`) echoes it.
//!
//! A session: `join` → `joined`; the client offers its publisher connection (`offer` with
//! `target: "publisher"` → `answer`), declares what each m-line carries (`track_info`), and
//! answers the server's subscriber offers (`offer` from the server with `target: "subscriber"` →
//! `answer` from the client). Candidates trickle both ways with `candidate`. After a dropped
//! socket, `resume` with the `session_token` from `joined` within the grace period restores the
//! session without renegotiating media.

use serde::{Deserialize, Serialize};

use crate::{ConnectionQuality, IceServer, LiveParticipant, LiveTrack};

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Client offers, server answers: the client's own media.
    Publisher,
    /// Server offers, client answers: everyone else's media.
    Subscriber,
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        #[serde(default)]
        id: Option<String>,
        /// The room join token from `POST /api/v1/rooms/{id}/join`.
        token: String,
        /// Receive every other participant's tracks automatically (default true).
        #[serde(default)]
        auto_subscribe: Option<bool>,
    },
    Resume {
        #[serde(default)]
        id: Option<String>,
        session_token: String,
    },
    Offer {
        #[serde(default)]
        id: Option<String>,
        target: Target,
        sdp: String,
    },
    Answer {
        #[serde(default)]
        id: Option<String>,
        target: Target,
        sdp: String,
    },
    Candidate {
        #[serde(default)]
        id: Option<String>,
        target: Target,
        candidate: String,
    },
    /// What the publisher m-line `mid` carries; send before or after the offer with it.
    TrackInfo {
        #[serde(default)]
        id: Option<String>,
        mid: String,
        source: String,
        #[serde(default)]
        muted: bool,
    },
    /// Mute or unmute one of the caller's own tracks (by the `mid` it was published on).
    Mute {
        #[serde(default)]
        id: Option<String>,
        mid: String,
        muted: bool,
    },
    Subscribe {
        #[serde(default)]
        id: Option<String>,
        track_id: String,
    },
    /// How the client shows a track it receives: the SFU forwards the simulcast layer that fits
    /// the rendered size (device pixels), the bandwidth and the preference; `enabled: false`
    /// (tile hidden) stops its video.
    TrackSettings {
        #[serde(default)]
        id: Option<String>,
        track_id: String,
        #[serde(default)]
        width: Option<u32>,
        #[serde(default)]
        height: Option<u32>,
        #[serde(default = "enabled")]
        enabled: bool,
        /// `low`, `medium` or `high`.
        #[serde(default)]
        quality: Option<String>,
    },
    Unsubscribe {
        #[serde(default)]
        id: Option<String>,
        track_id: String,
    },
    Leave {
        #[serde(default)]
        id: Option<String>,
    },
    /// Host: stop forwarding another participant's track.
    MuteParticipant {
        #[serde(default)]
        id: Option<String>,
        participant_id: String,
        track_id: String,
    },
    /// Host: remove another participant (its client gets `removed` with `removed_by_host`).
    RemoveParticipant {
        #[serde(default)]
        id: Option<String>,
        participant_id: String,
    },
    /// Host: end the meeting for everyone.
    EndRoom {
        #[serde(default)]
        id: Option<String>,
    },
    Ping {
        #[serde(default)]
        id: Option<String>,
    },
}

fn enabled() -> bool {
    true
}

/// The caller as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub id: String,
    pub name: String,
}

/// One m-line of a subscriber offer and the track it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMid {
    pub mid: String,
    pub track_id: String,
    pub participant_id: String,
}

/// A participant in the speaker list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    pub participant: String,
    /// Smoothed audio level, 0.0 (silence) ..= 1.0 (0 dBov).
    pub level: f32,
}

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
        participant: Me,
        /// Everyone else already in the room, with their tracks.
        others: Vec<LiveParticipant>,
        ice_servers: Vec<IceServer>,
        /// For `resume` after a dropped connection.
        session_token: String,
        /// How long the session survives a dropped connection.
        resume_grace_s: u64,
    },
    Resumed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
        participant: Me,
        others: Vec<LiveParticipant>,
    },
    Answer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        target: Target,
        sdp: String,
    },
    Offer {
        target: Target,
        sdp: String,
        tracks: Vec<TrackMid>,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    TrackPublished {
        track: LiveTrack,
    },
    TrackUpdated {
        track: LiveTrack,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    ParticipantJoined {
        participant: LiveParticipant,
    },
    ParticipantLeft {
        participant_id: String,
    },
    /// One of the caller's peer connections connected or lost its media path.
    MediaState {
        target: Target,
        connected: bool,
    },
    /// Dynacast, to a publisher: keep only these simulcast encodings (rids) of the track sent on
    /// `mid` active; the others have no receiver.
    Layers {
        mid: String,
        track_id: String,
        active: Vec<String>,
    },
    /// Who speaks now, dominant speaker first (empty: nobody); sent when that changes.
    Speakers {
        speakers: Vec<Speaker>,
    },
    /// Participants whose connection quality class changed (and, on joining, everyone's first).
    ConnectionQuality {
        updates: Vec<ConnectionQuality>,
    },
    /// The room's recording started or stopped; also sent right after `joined` while one runs.
    Recording {
        active: bool,
        recording_id: String,
    },
    /// The session is over (room closed, removed by a host, left); the socket closes next.
    Removed {
        reason: String,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"offer","id":"1","target":"publisher","sdp":"v=0"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Offer {
                id: Some("1".into()),
                target: Target::Publisher,
                sdp: "v=0".into()
            }
        );
        let out = serde_json::to_value(ServerMessage::Ack { id: Some("1".into()) }).unwrap();
        assert_eq!(out, serde_json::json!({"type": "ack", "id": "1"}));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"join","token":"t","extra":1}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"track_settings","track_id":"TR_1","width":320,"height":180}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::TrackSettings {
                id: None,
                track_id: "TR_1".into(),
                width: Some(320),
                height: Some(180),
                enabled: true,
                quality: None
            }
        );
        let out = serde_json::to_value(ServerMessage::Layers {
            mid: "0".into(),
            track_id: "TR_1".into(),
            active: vec!["q".into(), "f".into()],
        })
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"type": "layers", "mid": "0", "track_id": "TR_1", "active": ["q", "f"]})
        );
        let speakers = ServerMessage::Speakers {
            speakers: vec![Speaker {
                participant: "alice".into(),
                level: 0.5,
            }],
        };
        assert_eq!(
            serde_json::to_value(speakers).unwrap(),
            serde_json::json!({"type": "speakers", "speakers": [{"participant": "alice", "level": 0.5}]})
        );
        let quality = ServerMessage::ConnectionQuality {
            updates: vec![ConnectionQuality {
                participant: "bob".into(),
                quality: "poor".into(),
                loss: 0.125,
                rtt_ms: None,
                jitter_ms: 12,
                bitrate_kbps: 800,
            }],
        };
        assert_eq!(
            serde_json::to_value(quality).unwrap(),
            serde_json::json!({"type": "connection_quality", "updates": [{"participant": "bob", "quality": "poor",
                "loss": 0.125, "rtt_ms": null, "jitter_ms": 12, "bitrate_kbps": 800}]})
        );
    }
}
