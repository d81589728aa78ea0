//! Room recording: RTP packets of recorded tracks in, per-track files plus a manifest out.
//!
//! - [`opus::OggOpus`] writes Opus packets into Ogg (RFC 7845), granule positions from RTP
//!   timestamps (48 kHz), gaps filled with lost-frame packets so time stays true.
//! - [`vp8::Vp8Frames`] and [`vp9::Vp9Frames`] assemble VP8 / VP9 frames from RTP payloads
//!   (RFC 7741, RFC 9628), dropping frames that lost a packet; [`webm::Webm`] writes them as a
//!   live WebM (unknown-size Segment and Clusters, so a file cut at any point still plays).
//! - [`recording::Recording`] is one recording directory: a file per track and `manifest.json`
//!   (rewritten atomically as tracks come and go).
//! - [`thread::Recorder`] is the thread that owns the recordings; the SFU hands it packets
//!   through a bounded queue (full → dropped and counted; the media worker never waits).
//!
//! The writers are sans-IO over `std::io::Write` (+ `Seek`), tested on memory buffers; only
//! `Recording` and the thread touch the file system.

pub mod opus;
pub mod recording;
pub mod thread;
pub mod vp8;
pub mod vp9;
pub mod webm;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One RTP packet of a recorded track, as far as the files need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    /// Extended (never wrapping) sequence number.
    pub seq: u64,
    /// RTP timestamp (48 kHz for Opus, 90 kHz for video).
    pub timestamp: u32,
    /// RTP marker bit: the last packet of a video frame.
    pub marker: bool,
    /// The RTP payload (shared with the SFU's packet, not copied).
    pub payload: Arc<[u8]>,
}

pub use convene_proto::recording::MediaKind;

/// One assembled video frame (VP9: one picture, all its spatial layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// RTP timestamp (90 kHz).
    pub timestamp: u32,
    /// An intra frame the file can start at.
    pub keyframe: bool,
    /// The codec's bitstream of the frame.
    pub data: Vec<u8>,
}

/// What a recorded track is; the manifest repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackMeta {
    /// The SFU's track id (`TR_…`); also the file's base name.
    pub track_id: String,
    /// The publishing participant.
    pub participant_id: String,
    /// Its display name.
    pub participant_name: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// `camera`, `microphone`, `screen`, `screen_audio`.
    pub source: String,
    /// Lower-case codec name (`opus`, `vp8`, `vp9`, `h264`, …).
    pub codec: String,
}

/// Unwraps 32-bit RTP timestamps into a position relative to the first one.
#[derive(Debug, Default, Clone)]
pub(crate) struct TsUnwrap {
    last: Option<(u32, i64)>,
}

impl TsUnwrap {
    /// The position of `ts` relative to the first timestamp seen (negative for a packet older
    /// than the first). Steps over 2^31 count as going back (RFC 3550 §A.1 style).
    pub(crate) fn position(&mut self, ts: u32) -> i64 {
        let pos = match self.last {
            None => 0,
            Some((last_ts, last_pos)) => last_pos + i64::from(ts.wrapping_sub(last_ts) as i32),
        };
        match self.last {
            Some((_, last_pos)) if pos < last_pos => {}
            _ => self.last = Some((ts, pos)),
        }
        pos
    }

    /// Moves the origin so that `ts` is at `pos` (after a discontinuity).
    pub(crate) fn rebase(&mut self, ts: u32, pos: i64) {
        self.last = Some((ts, pos));
    }
}

#[cfg(test)]
mod tests {
    use super::TsUnwrap;

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary() {
        let mut u = TsUnwrap::default();
        assert_eq!(u.position(u32::MAX - 959), 0);
        assert_eq!(u.position(0), 960);
        assert_eq!(u.position(960), 1920);
        // A late packet is behind, and does not move the reference.
        assert_eq!(u.position(0), 960);
        assert_eq!(u.position(1920), 2880);
    }
}
