//! One recording: a directory with a file per track and `manifest.json`.
//!
//! The manifest lists every track that wrote media (participant, track, kind, source, codec,
//! file, start and end offsets in milliseconds from the recording's start) so a player or an
//! editor can line the files up. It is rewritten atomically (temporary file + rename) whenever a
//! track starts or ends, so after a crash it still describes every file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::opus::{OggOpus, SAMPLE_RATE};
use crate::vp8::Vp8Frames;
use crate::vp9::Vp9Frames;
use crate::webm::{VideoCodec, Webm};
use crate::{MediaKind, RtpIn, TrackMeta, TsUnwrap, VideoFrame};

pub use convene_proto::recording::{MANIFEST, Manifest, ManifestTrack};

/// Reads a recording directory's manifest.
pub fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    let bytes = std::fs::read(dir.join(MANIFEST))?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// Replaces the manifest atomically: a reader sees the old or the new one, never a torn file.
fn write_manifest(manifest: &Manifest, dir: &Path) -> io::Result<()> {
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, dir.join(MANIFEST))
}

/// Frames out of RTP payloads, per video codec.
enum Frames {
    Vp8(Vp8Frames),
    Vp9(Vp9Frames),
}

impl Frames {
    fn push(&mut self, pkt: &RtpIn) -> Option<VideoFrame> {
        match self {
            Frames::Vp8(f) => f.push(pkt),
            Frames::Vp9(f) => f.push(pkt),
        }
    }
}

enum Writer {
    Opus(OggOpus<BufWriter<File>>),
    Video {
        frames: Frames,
        clock: TsUnwrap,
        /// RTP position (90 kHz) of the file's first frame.
        origin: Option<i64>,
        webm: Webm<BufWriter<File>>,
    },
}

struct Track {
    writer: Writer,
    /// Index in the manifest, once media was written.
    entry: Option<usize>,
}

/// A recording being written.
pub struct Recording {
    dir: PathBuf,
    started: Instant,
    manifest: Manifest,
    tracks: HashMap<String, Track>,
    /// Tracks not recorded (codec not supported, bad id), reported once.
    skipped: HashSet<String>,
    next_serial: u32,
}

impl Recording {
    /// Starts a recording in `dir` (created if missing) and writes its empty manifest.
    pub fn create(dir: &Path, recording_id: &str, room_id: &str, started_at_ms: i64, now: Instant) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let manifest = Manifest {
            recording_id: recording_id.to_owned(),
            room_id: room_id.to_owned(),
            started_at_ms,
            duration_ms: None,
            tracks: Vec::new(),
        };
        write_manifest(&manifest, dir)?;
        Ok(Recording {
            dir: dir.to_owned(),
            started: now,
            manifest,
            tracks: HashMap::new(),
            skipped: HashSet::new(),
            next_serial: 1,
        })
    }

    /// The manifest as written so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn offset(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.started))
    }

    /// Adds one packet of `track`, received at `at`. A track's file opens with its first
    /// packet (video: its first keyframe). A track that fails to write is closed and skipped.
    pub fn packet(&mut self, track: &TrackMeta, pkt: &RtpIn, at: Instant) {
        if self.skipped.contains(&track.track_id) {
            return;
        }
        if !self.tracks.contains_key(&track.track_id)
            && let Err(e) = self.open(track)
        {
            tracing::warn!(track = %track.track_id, error = %e, "track not recorded");
            self.skipped.insert(track.track_id.clone());
            return;
        }
        if let Err(e) = self.write(track, pkt, at) {
            tracing::warn!(track = %track.track_id, error = %e, "recording a track failed; it stops");
            self.skipped.insert(track.track_id.clone());
            self.end_track(&track.track_id);
        }
    }

    fn open(&mut self, track: &TrackMeta) -> io::Result<()> {
        let safe = !track.track_id.is_empty()
            && track.track_id.len() <= 64
            && track
                .track_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !safe {
            return Err(io::Error::other("track id unusable as a file name"));
        }
        let writer = match (track.kind, track.codec.as_str()) {
            (MediaKind::Audio, "opus") => {
                let file = BufWriter::new(File::create(self.dir.join(file_name(track)))?);
                self.next_serial += 1;
                Writer::Opus(OggOpus::new(file, self.next_serial)?)
            }
            (MediaKind::Video, codec @ ("vp8" | "vp9")) => {
                let (frames, codec) = if codec == "vp8" {
                    (Frames::Vp8(Vp8Frames::default()), VideoCodec::Vp8)
                } else {
                    (Frames::Vp9(Vp9Frames::default()), VideoCodec::Vp9)
                };
                let file = BufWriter::new(File::create(self.dir.join(file_name(track)))?);
                Writer::Video {
                    frames,
                    clock: TsUnwrap::default(),
                    origin: None,
                    webm: Webm::new(file, codec),
                }
            }
            (_, codec) => return Err(io::Error::other(format!("codec {codec} is not recorded"))),
        };
        self.tracks
            .insert(track.track_id.clone(), Track { writer, entry: None });
        Ok(())
    }

    fn write(&mut self, meta: &TrackMeta, pkt: &RtpIn, at: Instant) -> io::Result<()> {
        let offset = self.offset(at);
        let Some(track) = self.tracks.get_mut(&meta.track_id) else {
            return Ok(());
        };
        let wrote = match &mut track.writer {
            Writer::Opus(ogg) => {
                ogg.push(pkt.timestamp, &pkt.payload)?;
                ogg.packets() > 0
            }
            Writer::Video {
                frames,
                clock,
                origin,
                webm,
            } => {
                let Some(frame) = frames.push(pkt) else {
                    return Ok(());
                };
                let pos = clock.position(frame.timestamp);
                let base = *origin.get_or_insert(pos);
                // 90 kHz RTP clock (RFC 7741 §4.1, RFC 9628 §4.1) to milliseconds.
                let ms = u64::try_from((pos - base) / 90).unwrap_or(0);
                if webm.write_frame(ms, frame.keyframe, &frame.data)? {
                    true
                } else {
                    *origin = None; // still waiting for the first keyframe
                    false
                }
            }
        };
        if wrote && track.entry.is_none() {
            track.entry = Some(self.manifest.tracks.len());
            self.manifest.tracks.push(ManifestTrack {
                participant_id: meta.participant_id.clone(),
                participant_name: meta.participant_name.clone(),
                track_id: meta.track_id.clone(),
                kind: meta.kind,
                source: meta.source.clone(),
                codec: meta.codec.clone(),
                file: file_name(meta),
                start_offset_ms: offset,
                end_offset_ms: None,
            });
            write_manifest(&self.manifest, &self.dir)?;
        }
        Ok(())
    }

    /// Closes a track's file (the publisher left or stopped it).
    pub fn end_track(&mut self, track_id: &str) {
        let Some(track) = self.tracks.remove(track_id) else {
            return;
        };
        let duration = match track.writer {
            Writer::Opus(ogg) => {
                let samples = ogg.samples();
                if let Err(e) = ogg.finish() {
                    tracing::warn!(track = %track_id, error = %e, "finishing an audio file failed");
                }
                samples * 1000 / SAMPLE_RATE
            }
            Writer::Video { webm, .. } => {
                let ms = webm.last_ms();
                if let Err(e) = webm.finish() {
                    tracing::warn!(track = %track_id, error = %e, "finishing a video file failed");
                }
                ms
            }
        };
        if let Some(entry) = track.entry.and_then(|i| self.manifest.tracks.get_mut(i)) {
            entry.end_offset_ms = Some(entry.start_offset_ms + duration);
            if let Err(e) = write_manifest(&self.manifest, &self.dir) {
                tracing::warn!(error = %e, "writing the manifest failed");
            }
        }
    }

    /// Closes every file and writes the final manifest; returns the duration (ms).
    pub fn finish(mut self, now: Instant) -> io::Result<u64> {
        let ids: Vec<String> = self.tracks.keys().cloned().collect();
        for id in ids {
            self.end_track(&id);
        }
        let duration = self.offset(now);
        self.manifest.duration_ms = Some(duration);
        write_manifest(&self.manifest, &self.dir)?;
        Ok(duration)
    }
}

fn file_name(track: &TrackMeta) -> String {
    let ext = match track.kind {
        MediaKind::Audio => "ogg",
        MediaKind::Video => "webm",
    };
    format!("{}.{ext}", track.track_id)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vp8::tests::{bitstream, packets};

    fn meta(id: &str, kind: MediaKind, codec: &str) -> TrackMeta {
        TrackMeta {
            track_id: id.into(),
            participant_id: "PA_alice".into(),
            participant_name: "Alice".into(),
            kind,
            source: if kind == MediaKind::Audio {
                "microphone"
            } else {
                "camera"
            }
            .into(),
            codec: codec.into(),
        }
    }

    #[test]
    fn tracks_get_files_and_manifest_entries_with_offsets() {
        let dir = tempfile::tempdir().expect("tmp");
        let t0 = Instant::now();
        let mut rec = Recording::create(dir.path(), "RE_1", "RM_1", 1_700_000_000_000, t0).expect("create");
        let audio = meta("TR_1", MediaKind::Audio, "opus");
        let video = meta("TR_2", MediaKind::Video, "vp8");
        let h264 = meta("TR_3", MediaKind::Video, "h264");
        for i in 0..50u32 {
            let at = t0 + Duration::from_millis(200 + u64::from(i) * 20);
            let pkt = RtpIn {
                seq: u64::from(i),
                timestamp: 5000 + i * 960,
                marker: false,
                payload: vec![31 << 3, 1, 2].into(),
            };
            rec.packet(&audio, &pkt, at);
            rec.packet(&h264, &pkt, at);
        }
        let mut seq = 0;
        // An interframe first: the video file starts at the keyframe 500 ms in.
        let mut frames = packets(&bitstream(false, 1200, 1), 1000, &mut seq, 0, 1);
        frames.extend(packets(&bitstream(true, 1200, 2), 1000, &mut seq, 9000, 2));
        frames.extend(packets(&bitstream(false, 1200, 3), 1000, &mut seq, 18000, 3));
        for (i, p) in frames.iter().enumerate() {
            rec.packet(&video, p, t0 + Duration::from_millis(400 + 50 * i as u64));
        }
        let m = read_manifest(dir.path()).expect("manifest");
        assert_eq!(m.tracks.len(), 2);
        assert_eq!(m.tracks[0].file, "TR_1.ogg");
        assert_eq!(m.tracks[0].start_offset_ms, 200);
        assert_eq!(m.tracks[1].file, "TR_2.webm");
        assert_eq!(m.tracks[1].start_offset_ms, 400 + 50 * 3);
        assert_eq!(m.tracks[0].end_offset_ms, None);
        rec.end_track("TR_1");
        let m = read_manifest(dir.path()).expect("manifest");
        assert_eq!(m.tracks[0].end_offset_ms, Some(200 + 1000));
        let duration = rec.finish(t0 + Duration::from_secs(2)).expect("finish");
        assert_eq!(duration, 2000);
        let m = read_manifest(dir.path()).expect("manifest");
        assert_eq!(m.duration_ms, Some(2000));
        assert_eq!(m.tracks[1].end_offset_ms, Some(550 + 100));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["TR_1.ogg", "TR_2.webm", "manifest.json"]);
    }

    #[test]
    fn unusable_track_ids_never_become_paths() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut rec = Recording::create(dir.path(), "RE_1", "RM_1", 0, Instant::now()).expect("create");
        let evil = meta("../../etc", MediaKind::Audio, "opus");
        let pkt = RtpIn {
            seq: 0,
            timestamp: 0,
            marker: false,
            payload: vec![31 << 3].into(),
        };
        rec.packet(&evil, &pkt, Instant::now());
        assert!(rec.manifest().tracks.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}
