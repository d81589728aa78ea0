//! SFU types to wire types.

use convene_proto::signal::{ServerMessage, Speaker, Target, TrackMid};
use convene_proto::{LiveParticipant, LiveTrack};
use convene_sfu::{ConnectionQuality, ParticipantEvent, ParticipantSnapshot, PeerTarget, SfuError, TrackInfo};

pub(crate) fn track(t: &TrackInfo) -> LiveTrack {
    LiveTrack {
        id: t.id.to_string(),
        participant_id: t.participant.to_string(),
        kind: t.kind.as_str().to_owned(),
        source: t.source.as_str().to_owned(),
        muted: t.muted,
    }
}

pub(crate) fn participant(p: &ParticipantSnapshot) -> LiveParticipant {
    LiveParticipant {
        id: p.id.to_string(),
        name: p.name.clone(),
        tracks: p.tracks.iter().map(track).collect(),
        connection_quality: p.quality.as_ref().map(quality),
    }
}

pub(crate) fn quality(q: &ConnectionQuality) -> convene_proto::ConnectionQuality {
    convene_proto::ConnectionQuality {
        participant: q.participant.to_string(),
        quality: q.quality.as_str().to_owned(),
        loss: f32::from(q.loss_permille) / 1000.0,
        rtt_ms: q.rtt_ms,
        jitter_ms: q.jitter_ms,
        bitrate_kbps: q.bitrate_kbps,
    }
}

pub(crate) fn target(t: PeerTarget) -> Target {
    match t {
        PeerTarget::Publisher => Target::Publisher,
        PeerTarget::Subscriber => Target::Subscriber,
    }
}

pub(crate) fn peer_target(t: Target) -> PeerTarget {
    match t {
        Target::Publisher => PeerTarget::Publisher,
        Target::Subscriber => PeerTarget::Subscriber,
    }
}

/// The message an SFU event becomes for the client; `None` for events meant for the server
/// (quality reports, which go to analytics).
pub(crate) fn event(e: ParticipantEvent) -> Option<ServerMessage> {
    let message = match e {
        ParticipantEvent::SubscriberOffer { sdp, tracks } => ServerMessage::Offer {
            target: Target::Subscriber,
            sdp,
            tracks: tracks
                .into_iter()
                .map(|t| TrackMid {
                    mid: t.mid,
                    track_id: t.track.to_string(),
                    participant_id: t.participant.to_string(),
                })
                .collect(),
        },
        ParticipantEvent::TrackPublished(t) => ServerMessage::TrackPublished { track: track(&t) },
        ParticipantEvent::TrackUpdated(t) => ServerMessage::TrackUpdated { track: track(&t) },
        ParticipantEvent::TrackUnpublished { participant, track } => ServerMessage::TrackUnpublished {
            participant_id: participant.to_string(),
            track_id: track.to_string(),
        },
        ParticipantEvent::ParticipantJoined { participant, name } => ServerMessage::ParticipantJoined {
            participant: LiveParticipant {
                id: participant.to_string(),
                name,
                tracks: Vec::new(),
                connection_quality: None,
            },
        },
        ParticipantEvent::ParticipantLeft { participant } => ServerMessage::ParticipantLeft {
            participant_id: participant.to_string(),
        },
        ParticipantEvent::MediaConnection { target: t, connected } => ServerMessage::MediaState {
            target: target(t),
            connected,
        },
        ParticipantEvent::Error { code, message } => ServerMessage::Error {
            id: None,
            code: code.to_owned(),
            message,
        },
        ParticipantEvent::LayersActive { mid, track, active } => ServerMessage::Layers {
            mid,
            track_id: track.to_string(),
            active,
        },
        ParticipantEvent::ActiveSpeakers(list) => ServerMessage::Speakers {
            speakers: list
                .into_iter()
                .map(|s| Speaker {
                    participant: s.participant.to_string(),
                    level: f32::from(s.level) / 100.0,
                })
                .collect(),
        },
        ParticipantEvent::ConnectionQuality(updates) => ServerMessage::ConnectionQuality {
            updates: updates.iter().map(quality).collect(),
        },
        ParticipantEvent::QualityReport(_) => return None,
        ParticipantEvent::Recording { active, recording_id } => ServerMessage::Recording { active, recording_id },
        ParticipantEvent::Removed { reason } => ServerMessage::Removed {
            reason: reason.to_owned(),
        },
    };
    Some(message)
}

/// An SFU refusal as a signaling error.
pub(crate) fn error(id: Option<String>, e: &SfuError) -> ServerMessage {
    let code = match e {
        SfuError::InvalidId | SfuError::InvalidTrackSource | SfuError::InvalidCandidate | SfuError::InvalidSettings => {
            "invalid_request"
        }
        SfuError::InvalidSdp(_) => "invalid_sdp",
        SfuError::UnknownRoom | SfuError::UnknownParticipant => "not_in_room",
        SfuError::UnknownTrack => "unknown_track",
        SfuError::UnknownMid => "unknown_mid",
        SfuError::DuplicateParticipant => "duplicate_participant",
        SfuError::NotAllowed => "not_allowed",
        SfuError::NoPendingOffer => "no_pending_offer",
        SfuError::AlreadyRecording => "already_recording",
        SfuError::WorkerGone | SfuError::Io(_) | SfuError::Config(_) => "unavailable",
    };
    ServerMessage::Error {
        id,
        code: code.to_owned(),
        message: e.to_string(),
    }
}
