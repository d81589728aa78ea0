use serde::{Deserialize, Serialize};

/// One entry of `RTCConfiguration.iceServers`, as browsers take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A published track as participants and the REST API see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveTrack {
    pub id: String,
    pub participant_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `camera`, `microphone`, `screen` or `screen_audio`.
    pub source: String,
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveParticipant {
    pub id: String,
    pub name: String,
    pub tracks: Vec<LiveTrack>,
    /// The participant's connection as last measured; absent until its media connection is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_quality: Option<ConnectionQuality>,
}

/// A participant's connection as measured by the SFU over the last second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionQuality {
    /// Whose connection.
    pub participant: String,
    /// `excellent`, `good`, `poor` or `lost` (no media for a few seconds).
    pub quality: String,
    /// Worst packet loss of its streams in either direction, 0.0 ..= 1.0.
    pub loss: f32,
    /// Round-trip time, when the client's reports allow computing one.
    pub rtt_ms: Option<u32>,
    /// Worst interarrival jitter of its streams.
    pub jitter_ms: u32,
    /// Media bitrate to and from the participant together.
    pub bitrate_kbps: u32,
}

/// A room's live media session: who is in it and what they publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveRoom {
    pub participants: Vec<LiveParticipant>,
}
