//! `manifest.json` of a recording: which file holds which participant's track, and when each
//! file starts and ends relative to the recording's start (for lining the files up).

use serde::{Deserialize, Serialize};

/// Name of the manifest inside a recording's directory.
pub const MANIFEST: &str = "manifest.json";

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub recording_id: String,
    pub room_id: String,
    /// Unix time (ms) the recording started; offsets count from here.
    pub started_at_ms: i64,
    /// Set when the recording was finalized (absent after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub tracks: Vec<ManifestTrack>,
}

/// One track's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestTrack {
    pub participant_id: String,
    pub participant_name: String,
    pub track_id: String,
    pub kind: MediaKind,
    /// `camera`, `microphone`, `screen`, `screen_audio`.
    pub source: String,
    /// `opus` (in Ogg) or `vp8` (in WebM).
    pub codec: String,
    /// File name inside the recording's directory.
    pub file: String,
    /// When the file's first sample plays, from the recording's start.
    pub start_offset_ms: u64,
    /// When the file's last sample plays (absent while recording, or after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_offset_ms: Option<u64>,
}
