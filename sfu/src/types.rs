//! Domain types shared by the engine and the handle API.

use std::fmt;
use std::str::FromStr;

use crate::error::SfuError;

/// Longest id accepted from signaling; ids travel in SDP msid lines and logs.
const MAX_ID_LEN: usize = 128;

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id: 1..=128 characters, no control characters.
            pub fn parse(s: impl Into<String>) -> Result<Self, SfuError> {
                let s = s.into();
                if valid_id(&s) {
                    Ok(Self(s))
                } else {
                    Err(SfuError::InvalidId)
                }
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = SfuError;
            fn from_str(s: &str) -> Result<Self, SfuError> {
                Self::parse(s)
            }
        }
    };
}

string_id!(
    /// A room's id, chosen by the control plane.
    RoomId
);
string_id!(
    /// A participant's id inside its room, chosen by the control plane (the token's `sub`).
    ParticipantId
);
string_id!(
    /// A published track's id, assigned by the SFU (`TR_<n>`), unique inside a worker.
    TrackId
);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (VP8, H.264, ...).
    Video,
}

impl TrackKind {
    /// `"audio"` or `"video"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// What a track carries, as declared by the publishing client through signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// A camera (the default for video).
    Camera,
    /// A microphone (the default for audio).
    Microphone,
    /// A screen share video track.
    Screen,
    /// The audio captured with a screen share.
    ScreenAudio,
}

impl TrackSource {
    /// Wire name: `camera`, `microphone`, `screen`, `screen_audio`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::Screen => "screen",
            TrackSource::ScreenAudio => "screen_audio",
        }
    }

    /// The kind of media this source produces.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Camera | TrackSource::Screen => TrackKind::Video,
            TrackSource::Microphone | TrackSource::ScreenAudio => TrackKind::Audio,
        }
    }

    pub(crate) fn default_for(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Audio => TrackSource::Microphone,
            TrackKind::Video => TrackSource::Camera,
        }
    }
}

impl FromStr for TrackSource {
    type Err = SfuError;
    fn from_str(s: &str) -> Result<Self, SfuError> {
        match s {
            "camera" => Ok(TrackSource::Camera),
            "microphone" => Ok(TrackSource::Microphone),
            "screen" => Ok(TrackSource::Screen),
            "screen_audio" => Ok(TrackSource::ScreenAudio),
            _ => Err(SfuError::InvalidTrackSource),
        }
    }
}

/// Which of a participant's two peer connections a message is for (LiveKit's model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerTarget {
    /// Client offers, server answers; carries the client's own media upstream.
    Publisher,
    /// Server offers, client answers; carries the other participants' media downstream.
    Subscriber,
}

/// What a participant may do, from its join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// May publish microphone audio.
    pub publish_audio: bool,
    /// May publish camera video.
    pub publish_video: bool,
    /// May publish a screen share (video and its audio).
    pub publish_screen: bool,
    /// May receive the other participants' tracks.
    pub subscribe: bool,
    /// May send data to the room (data channels are not relayed yet).
    pub data: bool,
    /// Invisible to the others: no joined/left events, absent from snapshots.
    pub hidden: bool,
}

impl Grants {
    /// Everything but `hidden`: an ordinary meeting participant.
    pub fn full() -> Self {
        Grants {
            publish_audio: true,
            publish_video: true,
            publish_screen: true,
            subscribe: true,
            data: true,
            hidden: false,
        }
    }

    /// Whether these grants allow publishing a track of `source`.
    pub fn may_publish(&self, source: TrackSource) -> bool {
        match source {
            TrackSource::Camera => self.publish_video,
            TrackSource::Microphone => self.publish_audio,
            TrackSource::Screen | TrackSource::ScreenAudio => self.publish_screen,
        }
    }
}

/// Who joins: display name, grants and subscription policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Display name shown to the others.
    pub name: String,
    /// What the participant may do.
    pub grants: Grants,
    /// Subscribe to every other participant's tracks as they appear (LiveKit's default).
    pub auto_subscribe: bool,
}

impl ParticipantInfo {
    /// A participant with full grants and auto-subscribe.
    pub fn new(name: impl Into<String>) -> Self {
        ParticipantInfo {
            name: name.into(),
            grants: Grants::full(),
            auto_subscribe: true,
        }
    }
}

/// A published track as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// SFU-assigned id, used for subscribe/unsubscribe.
    pub id: TrackId,
    /// The publishing participant.
    pub participant: ParticipantId,
    /// The m-line id in the publisher's own peer connection (what `set_track_info` names).
    pub publisher_mid: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// Camera, microphone, screen or screen audio.
    pub source: TrackSource,
    /// Muted tracks are not forwarded.
    pub muted: bool,
}

/// A participant as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSnapshot {
    /// The participant's id.
    pub id: ParticipantId,
    /// Display name.
    pub name: String,
    /// The tracks it publishes.
    pub tracks: Vec<TrackInfo>,
    /// Its connection as last measured (`None` until its media connection is up).
    pub quality: Option<ConnectionQuality>,
}

/// A participant in the speaker list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSpeaker {
    /// Who speaks.
    pub participant: ParticipantId,
    /// Smoothed audio level, 0 (silence) ..= 100 (0 dBov).
    pub level: u8,
}

/// How well a participant's media gets through, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quality {
    /// Little loss, low delay and jitter, the bitrate it should have.
    Excellent,
    /// Noticeable loss, delay or jitter, or a reduced bitrate; media still flows well.
    Good,
    /// Heavy loss, delay or jitter, or far too little bitrate: video freezes, audio breaks up.
    Poor,
    /// No media for a few seconds.
    Lost,
}

impl Quality {
    /// Wire name: `excellent`, `good`, `poor`, `lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Excellent => "excellent",
            Quality::Good => "good",
            Quality::Poor => "poor",
            Quality::Lost => "lost",
        }
    }
}

/// A participant's connection as measured over the last second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionQuality {
    /// Whose connection.
    pub participant: ParticipantId,
    /// The classification.
    pub quality: Quality,
    /// Worst packet loss of its streams in either direction, per mille.
    pub loss_permille: u16,
    /// Round-trip time, when the client's reports allow computing one.
    pub rtt_ms: Option<u32>,
    /// Worst interarrival jitter of its streams (RFC 3550 §6.4.1), milliseconds.
    pub jitter_ms: u32,
    /// Media bitrate to and from the participant together, kbit/s.
    pub bitrate_kbps: u32,
}

/// A participant's connection summed over a few seconds, for meeting analytics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityReport {
    /// The span covered, milliseconds.
    pub window_ms: u64,
    /// Media bytes received from the participant.
    pub bytes_up: u64,
    /// Media bytes sent to the participant (retransmissions included).
    pub bytes_down: u64,
    /// Time-weighted mean of the loss (as in `ConnectionQuality`), per mille.
    pub loss_permille: u16,
    /// Worst one-second loss, per mille.
    pub max_loss_permille: u16,
    /// Mean round-trip time, if measured.
    pub rtt_ms: Option<u32>,
}

/// A room's live state: participants (hidden ones left out) and their tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSnapshot {
    /// The room's id.
    pub room: RoomId,
    /// Visible participants.
    pub participants: Vec<ParticipantSnapshot>,
}

/// One m-line of a subscriber offer: which track arrives on which mid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTrack {
    /// The m-line id in the subscriber peer connection.
    pub mid: String,
    /// The track forwarded on it.
    pub track: TrackId,
    /// Its publisher.
    pub participant: ParticipantId,
}

/// A subscriber's explicit quality preference for one track: caps the simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerQuality {
    /// The lowest layer.
    Low,
    /// At most the middle layer.
    Medium,
    /// Any layer (the default).
    High,
}

impl FromStr for LayerQuality {
    type Err = SfuError;
    fn from_str(s: &str) -> Result<Self, SfuError> {
        match s {
            "low" => Ok(LayerQuality::Low),
            "medium" => Ok(LayerQuality::Medium),
            "high" => Ok(LayerQuality::High),
            _ => Err(SfuError::InvalidSettings),
        }
    }
}

/// How a subscriber shows one track it receives; picks the simulcast layer it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSettings {
    /// Shown at all; `false` stops the track's video (its tile is hidden).
    pub enabled: bool,
    /// Rendered size in device pixels, if known: the smallest layer covering it is enough.
    pub size: Option<(u32, u32)>,
    /// Explicit preference, capping the layer.
    pub quality: Option<LayerQuality>,
}

impl Default for TrackSettings {
    fn default() -> Self {
        TrackSettings {
            enabled: true,
            size: None,
            quality: None,
        }
    }
}

/// Something a participant's signaling connection should tell its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantEvent {
    /// A new subscriber offer; answer it with `subscriber_answer`. Only one is outstanding at a time.
    SubscriberOffer {
        /// The SDP offer.
        sdp: String,
        /// The mids carrying tracks after this offer is applied.
        tracks: Vec<SubscribedTrack>,
    },
    /// A track was published (also sent to its own publisher, so it learns the track id).
    TrackPublished(TrackInfo),
    /// A track's source or mute state changed.
    TrackUpdated(TrackInfo),
    /// A track went away.
    TrackUnpublished {
        /// Its publisher.
        participant: ParticipantId,
        /// The track.
        track: TrackId,
    },
    /// Another (visible) participant joined.
    ParticipantJoined {
        /// Its id.
        participant: ParticipantId,
        /// Its display name.
        name: String,
    },
    /// Another (visible) participant left.
    ParticipantLeft {
        /// Its id.
        participant: ParticipantId,
    },
    /// One of this participant's peer connections connected (ICE + DTLS) or lost its connection.
    MediaConnection {
        /// Which peer connection.
        target: PeerTarget,
        /// `true` once connected, `false` when ICE disconnected.
        connected: bool,
    },
    /// Something about this participant's media failed; the session goes on.
    Error {
        /// Machine-readable code (`publish_not_allowed`, ...).
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// Dynacast: the simulcast layers (rids) of one of this participant's own tracks that some
    /// subscriber needs; the client should keep only these encodings active. Debounced.
    LayersActive {
        /// The publisher m-line of the track.
        mid: String,
        /// The track.
        track: TrackId,
        /// Rids to keep sending, lowest quality first.
        active: Vec<String>,
    },
    /// Who speaks in the room now, dominant speaker first (empty: nobody). Sent on change only.
    ActiveSpeakers(Vec<ActiveSpeaker>),
    /// Participants of the room whose connection quality class changed (on joining: its first).
    ConnectionQuality(Vec<ConnectionQuality>),
    /// This participant's own connection over the last few seconds (for analytics, not clients).
    QualityReport(QualityReport),
    /// The room's recording started (also sent on joining a recorded room) or stopped.
    Recording {
        /// Whether it is recording now.
        active: bool,
        /// The recording (`RE_…`), as the REST API knows it.
        recording_id: String,
    },
    /// The participant was removed by the SFU (room closed); no more events follow.
    Removed {
        /// Why (`room_closed`, `event_queue_full`).
        reason: &'static str,
    },
}

/// A participant's events. Boxed: a channel allocates its first 32 slots up front, which for the
/// event itself was a large part of an idle participant.
pub type Events = tokio::sync::mpsc::Receiver<Box<ParticipantEvent>>;

/// Counters for `/metrics`, summed over workers by `Sfu::stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Rooms with at least one participant.
    pub rooms: u64,
    /// Participants, hidden ones included.
    pub participants: u64,
    /// Published tracks.
    pub tracks: u64,
    /// Peer connections (str0m `Rtc`s): a WebSocket participant has its publisher one only
    /// once it offered.
    pub peer_connections: u64,
    /// RTP packets written to subscribers.
    pub forwarded_packets: u64,
    /// RTP payload bytes written to subscribers.
    pub forwarded_bytes: u64,
    /// Packets dropped: unroutable or unparsable datagrams, and RTP without a codec the subscriber negotiated.
    pub dropped_packets: u64,
    /// Keyframe requests (PLI/FIR) sent upstream to publishers.
    pub keyframe_requests: u64,
    /// NACKs received from subscribers (answered from the send buffer, with RTX where negotiated).
    pub nacks_received: u64,
    /// NACKs sent upstream to publishers for lost packets.
    pub nacks_sent: u64,
    /// Simulcast layer switches made by down-tracks (at keyframes).
    pub layer_switches: u64,
    /// Packets sent again to subscribers (RFC 4588 RTX, or on the original SSRC without it).
    pub retransmitted_packets: u64,
    /// Packets of recorded rooms dropped because the recorder's queue was full.
    pub recorder_dropped_packets: u64,
    /// Timeouts a worker handled 20 ms or more after they were due: it is short of CPU (media
    /// goes out late, or is lost).
    pub worker_late_timeouts: u64,
}

impl SfuStats {
    pub(crate) fn add(&mut self, o: &SfuStats) {
        self.rooms += o.rooms;
        self.participants += o.participants;
        self.tracks += o.tracks;
        self.peer_connections += o.peer_connections;
        self.forwarded_packets += o.forwarded_packets;
        self.forwarded_bytes += o.forwarded_bytes;
        self.dropped_packets += o.dropped_packets;
        self.keyframe_requests += o.keyframe_requests;
        self.nacks_received += o.nacks_received;
        self.nacks_sent += o.nacks_sent;
        self.layer_switches += o.layer_switches;
        self.retransmitted_packets += o.retransmitted_packets;
        self.worker_late_timeouts += o.worker_late_timeouts;
    }
}
