//! VP8 frames from RTP payloads (RFC 7741).
//!
//! A frame is the packets from one that starts partition 0 (S=1, PID=0) up to the one with the
//! marker bit, all with the same RTP timestamp and consecutive sequence numbers. A frame that
//! lost a packet is dropped whole (a truncated frame would make the decoder fail); frames after
//! it are kept, as a decoder conceals a missing reference better than a player tolerates a hole.
//! str0m's depacketizer strips the payload descriptors.

use str0m::format::CodecExtra;
use str0m::unversioned::{Depacketizer, Vp8Depacketizer};

use crate::{RtpIn, VideoFrame};

/// Assembles frames from the packets of one stream, in arrival order.
#[derive(Debug, Default)]
pub struct Vp8Frames {
    depacketizer: Vp8Depacketizer,
    buf: Vec<u8>,
    /// RTP timestamp of the frame being assembled, while one is.
    current: Option<u32>,
    next_seq: Option<u64>,
    lost_frames: u64,
}

impl Vp8Frames {
    /// Feeds one packet; returns the frame it completes, if any.
    pub fn push(&mut self, pkt: &RtpIn) -> Option<VideoFrame> {
        if let Some(next) = self.next_seq {
            if pkt.seq < next {
                return None; // duplicate or reordered after its frame was decided
            }
            if pkt.seq > next && self.current.take().is_some() {
                self.lost_frames += 1;
            }
        }
        self.next_seq = Some(pkt.seq + 1);
        if self.depacketizer.is_partition_head(&pkt.payload) && starts_partition_zero(&pkt.payload) {
            if self.current.is_some() {
                self.lost_frames += 1; // the previous frame never got its last packet
            }
            self.buf.clear();
            self.current = Some(pkt.timestamp);
        }
        if self.current != Some(pkt.timestamp) {
            self.current = None;
            return None;
        }
        let mut extra = CodecExtra::None;
        if self
            .depacketizer
            .depacketize(&pkt.payload, &mut self.buf, &mut extra)
            .is_err()
        {
            self.current = None;
            self.lost_frames += 1;
            return None;
        }
        if !self.depacketizer.is_partition_tail(pkt.marker, &pkt.payload) {
            return None;
        }
        self.current = None;
        let data = std::mem::take(&mut self.buf);
        // RFC 6386 §9.1: P bit of the frame tag clear.
        let keyframe = data.first().is_some_and(|b| b & 0x01 == 0);
        Some(VideoFrame {
            timestamp: pkt.timestamp,
            keyframe,
            data,
        })
    }

    /// Frames abandoned after their first packet arrived (a later one missing or malformed).
    pub fn lost_frames(&self) -> u64 {
        self.lost_frames
    }
}

/// S=1 and PID=0 in the payload descriptor's first byte (RFC 7741 §4.2): the frame's start.
fn starts_partition_zero(payload: &[u8]) -> bool {
    payload.first().is_some_and(|b| b & 0x10 != 0 && b & 0x07 == 0)
}

/// Width and height from a keyframe's header (RFC 6386 §9.1), if it is one.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3FFF;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3FFF;
    Some((width, height))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake VP8 keyframe / interframe bitstream of `len` bytes for a 320×240 picture.
    pub(crate) fn bitstream(key: bool, len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len.max(10)];
        f[0] = if key { 0x10 } else { 0x11 };
        f[1] = 0;
        f[2] = 0;
        f[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        f[6..8].copy_from_slice(&320u16.to_le_bytes());
        f[8..10].copy_from_slice(&240u16.to_le_bytes());
        f
    }

    /// Packetizes `frame` into payloads of at most `mtu` bitstream bytes with a descriptor that
    /// carries a 15-bit picture id (as browsers send).
    pub(crate) fn packets(frame: &[u8], mtu: usize, seq: &mut u64, ts: u32, picture: u16) -> Vec<RtpIn> {
        let chunks: Vec<&[u8]> = frame.chunks(mtu).collect();
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let start = if i == 0 { 0x10 } else { 0x00 };
                let mut payload = vec![0x80 | start, 0x80, 0x80 | (picture >> 8) as u8 & 0x7F, picture as u8];
                payload.extend_from_slice(chunk);
                let p = RtpIn {
                    seq: *seq,
                    timestamp: ts,
                    marker: i + 1 == n,
                    payload: payload.into(),
                };
                *seq += 1;
                p
            })
            .collect()
    }

    #[test]
    fn frames_are_assembled_across_packets() {
        let mut a = Vp8Frames::default();
        let mut seq = 100;
        let key = bitstream(true, 3000, 7);
        let mut out = Vec::new();
        for p in packets(&key, 1000, &mut seq, 9000, 1) {
            out.extend(a.push(&p));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, key);
        assert!(out[0].keyframe);
        assert_eq!(out[0].timestamp, 9000);
        assert_eq!(keyframe_size(&out[0].data), Some((320, 240)));
        let inter = bitstream(false, 1500, 9);
        let frames: Vec<VideoFrame> = packets(&inter, 1000, &mut seq, 12000, 2)
            .iter()
            .filter_map(|p| a.push(p))
            .collect();
        assert_eq!(frames.len(), 1);
        assert!(!frames[0].keyframe);
        assert_eq!(keyframe_size(&frames[0].data), None);
    }

    #[test]
    fn a_frame_missing_a_packet_is_dropped_and_the_next_one_kept() {
        let mut a = Vp8Frames::default();
        let mut seq = 0;
        let mut first = packets(&bitstream(true, 3000, 1), 1000, &mut seq, 0, 1);
        first.remove(1); // lost in the middle
        let second = packets(&bitstream(false, 2000, 2), 1000, &mut seq, 3000, 2);
        let mut third = packets(&bitstream(false, 2000, 3), 1000, &mut seq, 6000, 3);
        third.remove(0); // its start is lost
        let fourth = packets(&bitstream(false, 500, 4), 1000, &mut seq, 9000, 4);
        let frames: Vec<VideoFrame> = first
            .iter()
            .chain(&second)
            .chain(&third)
            .chain(&fourth)
            .filter_map(|p| a.push(p))
            .collect();
        let stamps: Vec<u32> = frames.iter().map(|f| f.timestamp).collect();
        assert_eq!(stamps, vec![3000, 9000]);
        // The first frame was started and abandoned; the third never started.
        assert_eq!(a.lost_frames(), 1);
    }

    #[test]
    fn duplicates_do_not_break_a_frame() {
        let mut a = Vp8Frames::default();
        let mut seq = 0;
        let ps = packets(&bitstream(true, 2500, 5), 1000, &mut seq, 0, 1);
        let mut frames = Vec::new();
        for p in [&ps[0], &ps[1], &ps[1], &ps[2]] {
            frames.extend(a.push(p));
        }
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data, bitstream(true, 2500, 5));
    }
}
