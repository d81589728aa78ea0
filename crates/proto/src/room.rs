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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveParticipant {
    pub id: String,
    pub name: String,
    pub tracks: Vec<LiveTrack>,
}

/// A room's live media session: who is in it and what they publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveRoom {
    pub participants: Vec<LiveParticipant>,
}
