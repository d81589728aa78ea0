//! Synthetic media: Opus-sized audio at 50 packets/s and VP8-shaped video at 30 frames/s,
//! ~1 Mbit/s with periodic keyframe bursts, each packet stamped so receivers compute loss and
//! one-way delay.
//!
//! Payload layout (big-endian), then padding to the packet's size:
//! `[VP8 descriptor][VP8 header: 0 = keyframe, 1 = delta][magic u32][stream u32][seq u32]
//! [sent µs since the generator's epoch u64][counted u8]`. The first two bytes make the video
//! packets parse as VP8 (RFC 7741): the descriptor is 0x10 (S=1, PID 0) on a frame's first
//! packet and 0x00 on the others, as a browser packetizes; an SFU does not look further.
//!
//! A frame-mode SFU (str0m's `chat` example) depacketizes and repacketizes every frame, so only
//! the stamp of a frame's first packet survives, again at the start of the frame's first packet:
//! [`Stamp::frame_head`] tells such packets apart.

use std::time::Duration;

const MAGIC: u32 = 0x434e_5654;
/// Bytes of the stamp at the start of every payload.
pub const STAMP_LEN: usize = 2 + 4 + 4 + 4 + 8 + 1;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending stream (unique in one generator run).
    pub stream: u32,
    /// Per-stream packet counter, from 0.
    pub seq: u32,
    /// Send time in µs since the generator's epoch (the same host clock as the receiver).
    pub sent_us: u64,
    /// Sent inside the measurement window: counts towards delivered/expected.
    pub counted: bool,
}

impl Stamp {
    /// A payload of `len` bytes (at least [`STAMP_LEN`]) carrying this stamp; `head` for a
    /// frame's first packet (every audio packet).
    pub fn payload(&self, head: bool, keyframe: bool, len: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(len.max(STAMP_LEN));
        p.push(if head { 0x10 } else { 0 });
        p.push(u8::from(!keyframe));
        p.extend_from_slice(&MAGIC.to_be_bytes());
        p.extend_from_slice(&self.stream.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.sent_us.to_be_bytes());
        p.push(u8::from(self.counted));
        p.resize(len.max(STAMP_LEN), 0x5a);
        p
    }

    /// Whether a payload starts a frame (VP8 descriptor S=1, PID 0; all of our audio).
    pub fn frame_head(p: &[u8]) -> bool {
        p.first() == Some(&0x10)
    }

    /// The stamp of a payload, or `None` if it carries none (e.g. padding probes).
    pub fn parse(p: &[u8]) -> Option<Stamp> {
        let field = |at: usize, n: usize| p.get(at..at + n);
        let magic = u32::from_be_bytes(field(2, 4)?.try_into().ok()?);
        if magic != MAGIC {
            return None;
        }
        Some(Stamp {
            stream: u32::from_be_bytes(field(6, 4)?.try_into().ok()?),
            seq: u32::from_be_bytes(field(10, 4)?.try_into().ok()?),
            sent_us: u64::from_be_bytes(field(14, 8)?.try_into().ok()?),
            counted: *field(22, 1)?.first()? == 1,
        })
    }
}

/// Audio: one 20 ms Opus frame per packet (48 kHz clock), ~32 kbit/s.
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
pub const AUDIO_PAYLOAD: usize = 80;
pub const AUDIO_TICKS: u32 = 960;

/// Video: 30 frames/s (90 kHz clock).
pub const VIDEO_INTERVAL: Duration = Duration::from_micros(33_333);
pub const VIDEO_TICKS: u32 = 3000;
/// Largest RTP payload of a video packet (browsers packetize VP8 to ~1200 bytes).
pub const VIDEO_MTU: usize = 1100;
const KEYFRAME_BYTES: usize = 25_000;
/// Delta frames sized so a 3 s keyframe interval averages ~1 Mbit/s.
const DELTA_BYTES: usize = 3_900;
const KEYFRAME_EVERY: u64 = 90;
/// Keyframe requests closer than this to the last keyframe are served by it.
const KEYFRAME_MIN_GAP: u64 = 15;

/// Frame sizes of a VP8 encoder: a keyframe every 3 s or on request, deltas otherwise.
#[derive(Debug, Default)]
pub struct VideoEncoder {
    frame: u64,
    last_key: Option<u64>,
    requested: bool,
}

impl VideoEncoder {
    /// A receiver asked for a keyframe (PLI/FIR).
    pub fn request_keyframe(&mut self) {
        self.requested = true;
    }

    /// The next frame: whether it is a keyframe, and its packets' payload sizes.
    pub fn next_frame(&mut self) -> (bool, Vec<usize>) {
        let since = self.last_key.map(|k| self.frame - k);
        let key = match since {
            None => true,
            Some(n) => n >= KEYFRAME_EVERY || (self.requested && n >= KEYFRAME_MIN_GAP),
        };
        if key {
            self.last_key = Some(self.frame);
            self.requested = false;
        }
        self.frame += 1;
        let bytes = if key { KEYFRAME_BYTES } else { DELTA_BYTES };
        let packets = bytes.div_ceil(VIDEO_MTU);
        let mut sizes = vec![VIDEO_MTU; packets - 1];
        sizes.push(bytes - VIDEO_MTU * (packets - 1));
        (key, sizes.into_iter().map(|s| s.max(STAMP_LEN)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_payloads_are_ignored() {
        let s = Stamp {
            stream: 7,
            seq: 123_456,
            sent_us: 9_876_543_210,
            counted: true,
        };
        let p = s.payload(true, true, 1100);
        assert_eq!(p.len(), 1100);
        assert_eq!(&p[..2], &[0x10, 0]);
        assert_eq!(Stamp::parse(&p), Some(s));
        assert!(Stamp::frame_head(&p));
        let rest = s.payload(false, false, 500);
        assert_eq!(&rest[..2], &[0, 1]);
        assert_eq!(Stamp::parse(&rest), Some(s));
        assert!(!Stamp::frame_head(&rest));
        assert_eq!(Stamp::parse(&p[..10]), None);
        assert_eq!(Stamp::parse(&[0u8; 40]), None);
    }

    #[test]
    fn video_averages_about_one_megabit_with_keyframes_every_three_seconds() {
        let mut enc = VideoEncoder::default();
        let frames: Vec<(bool, Vec<usize>)> = (0..90).map(|_| enc.next_frame()).collect();
        let keys = frames.iter().filter(|f| f.0).count();
        assert_eq!(keys, 1);
        let bytes: usize = frames.iter().flat_map(|f| f.1.iter()).sum();
        let mbps = bytes as f64 * 8.0 / 3.0 / 1e6;
        assert!((0.9..1.2).contains(&mbps), "{mbps}");
        assert!(frames.iter().all(|f| f.1.iter().all(|s| *s <= VIDEO_MTU)));
        // A request is served soon, but not by back-to-back keyframes.
        enc.request_keyframe();
        let (key, _) = enc.next_frame();
        assert!(key, "90 frames after the last keyframe");
        enc.request_keyframe();
        let next: Vec<bool> = (0..20).map(|_| enc.next_frame().0).collect();
        assert_eq!(next.iter().filter(|k| **k).count(), 1);
        assert!(!next[0]);
    }
}
