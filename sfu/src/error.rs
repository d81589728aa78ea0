//! The SFU's one error type: small, `Clone`, no boxed sources on the hot path.

/// Why an SFU request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    /// An id was empty, too long or held control characters.
    #[error("invalid id")]
    InvalidId,
    /// Not one of camera, microphone, screen, screen_audio.
    #[error("invalid track source")]
    InvalidTrackSource,
    /// The SDP could not be parsed or negotiated.
    #[error("invalid sdp: {0}")]
    InvalidSdp(String),
    /// The ICE candidate could not be parsed.
    #[error("invalid ice candidate")]
    InvalidCandidate,
    /// No such room on this SFU.
    #[error("unknown room")]
    UnknownRoom,
    /// No such participant (it left, or was removed).
    #[error("unknown participant")]
    UnknownParticipant,
    /// No such track in the participant's room.
    #[error("unknown track")]
    UnknownTrack,
    /// No m-line with this mid in the publisher connection.
    #[error("unknown mid")]
    UnknownMid,
    /// A participant with this id is already in the room.
    #[error("participant already in room")]
    DuplicateParticipant,
    /// The participant's grants do not allow this.
    #[error("not allowed by the participant's grants")]
    NotAllowed,
    /// A subscriber answer arrived with no subscriber offer outstanding.
    #[error("no subscriber offer outstanding")]
    NoPendingOffer,
    /// The room is being recorded already.
    #[error("room already recorded")]
    AlreadyRecording,
    /// The media worker is gone (the SFU is shutting down).
    #[error("media worker stopped")]
    WorkerGone,
    /// Binding or configuring a socket failed at start.
    #[error("io: {0}")]
    Io(String),
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(&'static str),
}
