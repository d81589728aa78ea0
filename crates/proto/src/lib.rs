//! Wire types shared by the server, the load generator and tests.
//!
//! - [`ErrorBody`]: the body of every REST error.
//! - [`signal`]: the JSON messages of `GET /ws/signal`.
//! - [`IceServer`] and [`LiveRoom`]: what the rooms API hands out and shows.
//! - [`recording`]: a recording's `manifest.json`.

pub mod recording;
mod room;
pub mod signal;

pub use room::{ConnectionQuality, IceServer, LiveParticipant, LiveRoom, LiveTrack};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `{"error": {"code", "message", "fields"?}}`: the body of every REST error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `not_found` or `validation_failed`.
    pub code: String,
    /// Human-readable explanation; safe to show to the user.
    pub message: String,
    /// Per-field problems for validation errors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}
