//! Real VP9 end to end: ffmpeg (libvpx-vp9) encodes two seconds of test pattern to IVF, the
//! test packetizes each frame into RTP payloads (RFC 9628, non-flexible mode, 15-bit picture id,
//! B/E bits, at most 1000 bytes of data each), the recorder writes the track, and ffprobe /
//! ffmpeg read the WebM back.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use convene_recorder::recording::{Recording, read_manifest};
use convene_recorder::{MediaKind, RtpIn, TrackMeta};

const MTU: usize = 1000;

fn libvpx_vp9() -> bool {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .expect("ffmpeg runs (scripts/test.sh installs it)");
    String::from_utf8_lossy(&out.stdout).contains("libvpx-vp9")
}

/// Frames of an IVF file and their RTP timestamps (90 kHz).
fn ivf_frames(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    assert_eq!(&bytes[..4], b"DKIF");
    assert_eq!(&bytes[8..12], b"VP90");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let header = usize::from(u16::from_le_bytes([bytes[6], bytes[7]]));
    let (den, num) = (u64::from(u32_at(16)), u64::from(u32_at(20)));
    let mut at = header;
    let mut out = Vec::new();
    while at + 12 <= bytes.len() {
        let size = u32_at(at) as usize;
        let pts = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8 bytes"));
        let ts = u32::try_from(pts * 90_000 * num / den).expect("fits");
        out.push((ts, bytes[at + 12..at + 12 + size].to_vec()));
        at += 12 + size;
    }
    assert_eq!(at, bytes.len(), "IVF ends on a frame boundary");
    out
}

/// RTP packets of one frame: descriptor I (15-bit picture id), P for interframes, B on the
/// first packet, E and the marker on the last.
fn packetize(frame: &[u8], ts: u32, picture: u16, seq: &mut u64) -> Vec<RtpIn> {
    // Profile 0 uncompressed header: frame_marker(2) profile(2) show_existing(1) frame_type(1).
    let key = frame[0] & 0x0C == 0;
    let chunks: Vec<&[u8]> = frame.chunks(MTU).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut b0 = 0x80;
            if !key {
                b0 |= 0x40;
            }
            if i == 0 {
                b0 |= 0x08;
            }
            if i + 1 == n {
                b0 |= 0x04;
            }
            let mut payload = vec![b0, 0x80 | (picture >> 8) as u8, picture as u8];
            payload.extend_from_slice(chunk);
            *seq += 1;
            RtpIn {
                seq: *seq,
                timestamp: ts,
                marker: i + 1 == n,
                payload: payload.into(),
            }
        })
        .collect()
}

/// What ffprobe says of the first video stream.
#[derive(Debug, PartialEq, Eq)]
struct Probe {
    codec: String,
    /// Packets (WebM blocks) read.
    packets: u64,
    /// Frames the decoder output.
    frames: u64,
}

fn probe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-count_packets",
            "-select_streams",
            "v:0",
        ])
        .args(["-show_entries", "stream=codec_name,nb_read_frames,nb_read_packets"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_owned()
    };
    let count = |name: &str| field(name).parse().unwrap_or_else(|_| panic!("{name} in {text}"));
    Probe {
        codec: field("codec_name"),
        packets: count("nb_read_packets"),
        frames: count("nb_read_frames"),
    }
}

/// Records `frames` (skipping packet `skip` if given) into `dir`; returns the file's path.
fn record(dir: &Path, frames: &[(u32, Vec<u8>)], skip: Option<usize>) -> std::path::PathBuf {
    let t0 = Instant::now();
    let mut rec = Recording::create(dir, "RE_1", "RM_1", 0, t0).expect("create");
    let meta = TrackMeta {
        track_id: "TR_vp9".into(),
        participant_id: "PA_1".into(),
        participant_name: "Alice".into(),
        kind: MediaKind::Video,
        source: "camera".into(),
        codec: "vp9".into(),
    };
    let mut seq = 1000;
    let mut index = 0;
    for (picture, (ts, frame)) in frames.iter().enumerate() {
        let at = t0 + Duration::from_millis(u64::from(*ts / 90));
        for p in packetize(frame, *ts, picture as u16 & 0x7FFF, &mut seq) {
            if Some(index) != skip {
                rec.packet(&meta, &p, at);
            }
            index += 1;
        }
    }
    rec.finish(t0 + Duration::from_secs(3)).expect("finish");
    let m = read_manifest(dir).expect("manifest");
    assert_eq!(m.tracks.len(), 1);
    assert_eq!(m.tracks[0].codec, "vp9");
    assert_eq!(m.tracks[0].file, "TR_vp9.webm");
    assert!(m.tracks[0].end_offset_ms.is_some());
    dir.join("TR_vp9.webm")
}

/// Errors ffmpeg reports while decoding the whole file.
fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn real_vp9_is_recorded_to_webm_frame_for_frame() {
    if !libvpx_vp9() {
        eprintln!("SKIPPED: this ffmpeg has no libvpx-vp9 encoder");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let ivf = dir.path().join("out.ivf");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            "2",
        ])
        .args(["-c:v", "libvpx-vp9", "-f", "ivf"])
        .arg(&ivf)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    let frames = ivf_frames(&std::fs::read(&ivf).expect("ivf"));
    let source = probe(&ivf);
    assert_eq!(source.frames, 60, "two seconds at 30 fps");
    assert_eq!(source.packets, frames.len() as u64);
    assert!(
        frames.iter().any(|(_, f)| f.len() > MTU),
        "some frames span several packets"
    );

    let lossless = dir.path().join("lossless");
    let webm = record(&lossless, &frames, None);
    assert_eq!(probe(&webm), source);
    assert_eq!(decode_errors(&webm), "");

    // One packet of the picture in the middle is lost: that picture is dropped, the rest kept.
    // The decoder outputs every frame before the loss; after it, frames predicted from the
    // missing picture may fail to decode until the next keyframe (none in two seconds), so the
    // decoded count is only bounded.
    let middle = frames.len() / 2;
    let first_packet: usize = frames[..middle].iter().map(|(_, f)| f.len().div_ceil(MTU)).sum();
    let lossy = dir.path().join("lossy");
    let webm = record(&lossy, &frames, Some(first_packet));
    let got = probe(&webm);
    assert_eq!(got.codec, "vp9");
    assert_eq!(got.packets, source.packets - 1);
    assert!(
        (middle as u64..=source.frames - 1).contains(&got.frames),
        "decoded {} frames",
        got.frames
    );
}
