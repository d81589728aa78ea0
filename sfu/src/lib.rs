//! Convene's media plane: a selective forwarding unit on str0m (RTP mode).
//!
//! - [`Engine`] is the sans-IO room engine of one media worker: rooms, participants and their
//!   publisher/subscriber peer connections, RTP forwarding with per-subscriber header rewriting,
//!   keyframe-request relay. It takes datagrams, time and control requests; it hands back
//!   datagrams to send and participant events.
//! - [`Sfu`] is the thin driver and the async handle API the signaling layer uses: media worker
//!   threads each owning a UDP socket, rooms pinned to a worker, channels in between.

mod allocator;
mod demux;
mod driver;
mod dtls;
mod engine;
mod error;
mod keyframe;
mod layers;
mod quality;
mod record;
mod rewrite;
mod speaker;
mod throttle;
mod timers;
mod types;

pub use convene_recorder::thread::Finished as RecordingFinished;
pub use driver::{ParticipantHandle, Sfu, SfuConfig};
pub use engine::{DATA_CHANNEL_LABEL, Engine, EngineConfig, EngineOutput, Joined, Left, ParticipantKey};
pub use error::SfuError;
pub use record::RecordOutput;
pub use types::{
    ActiveSpeaker, ConnectionQuality, Events, Grants, LayerQuality, ParticipantEvent, ParticipantId, ParticipantInfo,
    ParticipantSnapshot, PeerTarget, Quality, QualityReport, RoomId, RoomSnapshot, SfuStats, SubscribedTrack, TrackId,
    TrackInfo, TrackKind, TrackSettings, TrackSource,
};
