//! How fast one recorder thread writes: feeds `Recording` the packets of participants sending
//! 30 fps VP8 (frames of ~2.4 KB in 1000-byte packets, a keyframe every 3 s) and 20 ms Opus
//! packets, into a temporary directory, and reports packets per second of wall time.
//!
//! `cargo run --release -p convene-recorder --example throughput -- [seconds] [participants]`

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use convene_recorder::recording::Recording;
use convene_recorder::{MediaKind, RtpIn, TrackMeta};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let participants: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let dir = std::env::temp_dir().join(format!("convene-rec-bench-{}", std::process::id()));
    let t0 = Instant::now();
    let mut rec = Recording::create(&dir, "RE_bench", "RM_bench", 0, t0).unwrap();
    let meta = |p: u32, kind: MediaKind| TrackMeta {
        track_id: format!("TR_{p}_{kind:?}"),
        participant_id: format!("PA_{p}"),
        participant_name: format!("P{p}"),
        kind,
        source: if kind == MediaKind::Audio {
            "microphone"
        } else {
            "camera"
        }
        .into(),
        codec: if kind == MediaKind::Audio { "opus" } else { "vp8" }.into(),
    };
    let tracks: Vec<(TrackMeta, TrackMeta)> = (0..participants)
        .map(|p| (meta(p, MediaKind::Audio), meta(p, MediaKind::Video)))
        .collect();
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut seq = 0u64;
    let start = Instant::now();
    for ms in (0..seconds * 1000).step_by(10) {
        let at = t0 + Duration::from_millis(u64::from(ms));
        for (audio, video) in &tracks {
            if ms % 20 == 0 {
                let payload: Vec<u8> = std::iter::once(31u8 << 3).chain(std::iter::repeat_n(7, 80)).collect();
                bytes += payload.len() as u64;
                rec.packet(
                    audio,
                    &RtpIn {
                        seq,
                        timestamp: ms * 48,
                        marker: false,
                        payload: payload.into(),
                    },
                    at,
                );
                packets += 1;
            }
            if ms % 30 == 0 {
                let key = ms % 3000 == 0;
                let mut frame = vec![0x5Au8; 2400];
                frame[0] = if key { 0x10 } else { 0x11 };
                frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
                frame[6..8].copy_from_slice(&640u16.to_le_bytes());
                frame[8..10].copy_from_slice(&480u16.to_le_bytes());
                let chunks: Vec<&[u8]> = frame.chunks(1000).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let mut payload = vec![if i == 0 { 0x10 } else { 0x00 }];
                    payload.extend_from_slice(chunk);
                    bytes += payload.len() as u64;
                    seq += 1;
                    let pkt = RtpIn {
                        seq,
                        timestamp: ms * 90,
                        marker: i + 1 == chunks.len(),
                        payload: payload.into(),
                    };
                    rec.packet(video, &pkt, at);
                    packets += 1;
                }
            }
            seq += 1;
        }
    }
    rec.finish(t0 + Duration::from_secs(u64::from(seconds))).unwrap();
    let wall = start.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let media_s = f64::from(seconds) * f64::from(participants);
    println!(
        "{participants} participants × {seconds} s: {packets} packets, {:.1} MB in {:.2} s wall: \
         {:.0} packets/s, {:.0}× real time per participant-second",
        bytes as f64 / 1e6,
        wall.as_secs_f64(),
        packets as f64 / wall.as_secs_f64(),
        media_s / wall.as_secs_f64()
    );
}
