//! A live WebM writer for one VP8 or VP9 track (Matroska/EBML, RFC 8794; WebM's subset).
//!
//! The Segment and every Cluster have the "unknown" size (all ones, RFC 8794 §6.2), so the file
//! is valid after every SimpleBlock: a file cut anywhere (SIGKILL, full disk) plays up to the
//! cut. A Cluster starts at each keyframe and at least every [`CLUSTER_MS`]; the previous one
//! is flushed then, so a killed process loses at most that much. The header is written at the
//! first keyframe (it needs the picture size), so a file always starts decodable. `finish`
//! replaces a Void placeholder in Info with the Duration, for players that show one.

use std::io::{self, Seek, SeekFrom, Write};

/// Longest Cluster, in milliseconds; also the flush interval.
pub const CLUSTER_MS: u64 = 1000;

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const VIDEO: u32 = 0xE0;
const CLUSTER: u32 = 0x1F43_B675;
const TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const VOID: u32 = 0xEC;
const DURATION: u32 = 0x4489;
/// "Unknown size" in an 8-byte EBML variable-size integer.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// Duration element: 2-byte id + 1-byte size + 8-byte float.
const DURATION_LEN: usize = 11;

/// EBML id bytes: ids carry their own length marker, so the significant bytes are written.
fn id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.extend_from_slice(&bytes[skip..]);
}

/// An EBML variable-size integer of the smallest length (RFC 8794 §4).
fn size(out: &mut Vec<u8>, n: u64) {
    let mut len = 1;
    while len < 8 && n >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let marked = n | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

fn element(out: &mut Vec<u8>, element_id: u32, body: &[u8]) {
    id(out, element_id);
    size(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn uint(out: &mut Vec<u8>, element_id: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    element(out, element_id, &bytes[skip..]);
}

/// The video codecs a WebM file is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// `V_VP8`.
    Vp8,
    /// `V_VP9`: a block holds a picture, several spatial layers as one superframe.
    Vp9,
}

impl VideoCodec {
    fn codec_id(self) -> &'static [u8] {
        match self {
            VideoCodec::Vp8 => b"V_VP8",
            VideoCodec::Vp9 => b"V_VP9",
        }
    }

    /// The picture size a keyframe states.
    fn keyframe_size(self, frame: &[u8]) -> Option<(u32, u32)> {
        match self {
            VideoCodec::Vp8 => crate::vp8::keyframe_size(frame).map(|(w, h)| (u32::from(w), u32::from(h))),
            VideoCodec::Vp9 => crate::vp9::keyframe_size(frame),
        }
    }
}

/// A WebM file with one video track, being written.
pub struct Webm<W: Write + Seek> {
    out: W,
    codec: VideoCodec,
    /// Where the Duration placeholder is (set once the header is written).
    duration_at: Option<u64>,
    /// Timestamp (ms) of the open Cluster.
    cluster: Option<u64>,
    last_ms: u64,
    frames: u64,
}

impl<W: Write + Seek> Webm<W> {
    /// A writer; nothing is written before the first keyframe.
    pub fn new(out: W, codec: VideoCodec) -> Self {
        Webm {
            out,
            codec,
            duration_at: None,
            cluster: None,
            last_ms: 0,
            frames: 0,
        }
    }

    /// Appends a frame at `ms` (milliseconds from the track's start; kept non-decreasing).
    /// Returns `false` when it was dropped because no keyframe came yet.
    pub fn write_frame(&mut self, ms: u64, keyframe: bool, frame: &[u8]) -> io::Result<bool> {
        if self.duration_at.is_none() {
            let Some((w, h)) = keyframe.then(|| self.codec.keyframe_size(frame)).flatten() else {
                return Ok(false);
            };
            self.header(w, h)?;
        }
        let ms = ms.max(self.last_ms);
        self.last_ms = ms;
        let mut buf = Vec::with_capacity(frame.len() + 32);
        let open = self
            .cluster
            .filter(|start| !keyframe && ms - start < CLUSTER_MS.min(i16::MAX as u64));
        let start = match open {
            Some(start) => start,
            None => {
                if self.cluster.is_some() {
                    self.out.flush()?;
                }
                id(&mut buf, CLUSTER);
                buf.extend_from_slice(&UNKNOWN_SIZE);
                uint(&mut buf, TIMESTAMP, ms);
                self.cluster = Some(ms);
                ms
            }
        };
        let relative = i16::try_from(ms - start).unwrap_or(i16::MAX);
        id(&mut buf, SIMPLE_BLOCK);
        size(&mut buf, 4 + frame.len() as u64);
        buf.push(0x81); // track number 1 as a 1-byte vint
        buf.extend_from_slice(&relative.to_be_bytes());
        buf.push(if keyframe { 0x80 } else { 0x00 });
        buf.extend_from_slice(frame);
        self.out.write_all(&buf)?;
        self.frames += 1;
        Ok(true)
    }

    fn header(&mut self, width: u32, height: u32) -> io::Result<()> {
        let mut buf = Vec::with_capacity(256);
        let mut body = Vec::new();
        uint(&mut body, 0x4286, 1); // EBMLVersion
        uint(&mut body, 0x42F7, 1); // EBMLReadVersion
        uint(&mut body, 0x42F2, 4); // EBMLMaxIDLength
        uint(&mut body, 0x42F3, 8); // EBMLMaxSizeLength
        element(&mut body, 0x4282, b"webm"); // DocType
        uint(&mut body, 0x4287, 4); // DocTypeVersion
        uint(&mut body, 0x4285, 2); // DocTypeReadVersion
        element(&mut buf, EBML, &body);
        id(&mut buf, SEGMENT);
        buf.extend_from_slice(&UNKNOWN_SIZE);

        let mut info = Vec::new();
        uint(&mut info, 0x2A_D7B1, 1_000_000); // TimestampScale: milliseconds
        element(&mut info, 0x4D80, b"convene"); // MuxingApp
        element(&mut info, 0x5741, b"convene"); // WritingApp
        let placeholder = info.len();
        // A Void as large as a Duration, overwritten by `finish`.
        element(&mut info, VOID, &[0; DURATION_LEN - 2]);
        id(&mut buf, INFO);
        size(&mut buf, info.len() as u64);
        let info_at = buf.len();
        buf.extend_from_slice(&info);

        let mut video = Vec::new();
        uint(&mut video, 0xB0, u64::from(width)); // PixelWidth
        uint(&mut video, 0xBA, u64::from(height)); // PixelHeight
        let mut entry = Vec::new();
        uint(&mut entry, 0xD7, 1); // TrackNumber
        uint(&mut entry, 0x73C5, 1); // TrackUID
        uint(&mut entry, 0x83, 1); // TrackType: video
        uint(&mut entry, 0x9C, 0); // FlagLacing: SimpleBlocks carry one frame
        element(&mut entry, 0x86, self.codec.codec_id()); // CodecID
        element(&mut entry, VIDEO, &video);
        let mut tracks = Vec::new();
        element(&mut tracks, TRACK_ENTRY, &entry);
        element(&mut buf, TRACKS, &tracks);

        let base = self.out.stream_position()?;
        self.out.write_all(&buf)?;
        self.out.flush()?;
        self.duration_at = Some(base + (info_at + placeholder) as u64);
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Timestamp of the last frame written (ms).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// Writes the Duration over its placeholder, flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(at) = self.duration_at {
            let mut d = Vec::with_capacity(DURATION_LEN);
            id(&mut d, DURATION);
            size(&mut d, 8);
            // Duration is in TimestampScale units; the last frame's end is not known, so its
            // start is used.
            d.extend_from_slice(&(self.last_ms as f64).to_be_bytes());
            let end = self.out.stream_position()?;
            self.out.seek(SeekFrom::Start(at))?;
            self.out.write_all(&d)?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vp8::tests::bitstream;
    use matroska_demuxer::{Frame, MatroskaFile, TrackType};
    use std::io::Cursor;

    /// 3 s at 30 fps, a keyframe every second, preceded by two interframes that must be dropped.
    fn write(finish: bool) -> Vec<u8> {
        let mut w = Webm::new(Cursor::new(Vec::new()), VideoCodec::Vp8);
        assert!(!w.write_frame(0, false, &bitstream(false, 500, 1)).expect("write"));
        assert!(!w.write_frame(33, false, &bitstream(false, 500, 1)).expect("write"));
        for i in 0..90u64 {
            let key = i % 30 == 0;
            assert!(
                w.write_frame(100 + i * 33, key, &bitstream(key, 800 + i as usize, i as u8))
                    .expect("write")
            );
        }
        assert_eq!(w.frames(), 90);
        if finish {
            w.finish().expect("finish").into_inner()
        } else {
            w.out.into_inner()
        }
    }

    fn frames(bytes: Vec<u8>) -> (Option<f64>, Vec<Frame>) {
        frames_of(bytes, "V_VP8")
    }

    fn frames_of(bytes: Vec<u8>, codec_id: &str) -> (Option<f64>, Vec<Frame>) {
        let mut file = MatroskaFile::open(Cursor::new(bytes)).expect("parses");
        assert_eq!(file.ebml_header().doc_type(), "webm");
        let track = &file.tracks()[0];
        assert_eq!(track.codec_id(), codec_id);
        assert_eq!(track.track_type(), TrackType::Video);
        let video = track.video().expect("video");
        assert_eq!((video.pixel_width().get(), video.pixel_height().get()), (320, 240));
        let duration = file.info().duration();
        let mut out = Vec::new();
        let mut f = Frame::default();
        while let Ok(true) = file.next_frame(&mut f) {
            out.push(f.clone());
        }
        (duration, out)
    }

    #[test]
    fn sizes_are_minimal_ebml_vints() {
        let enc = |n| {
            let mut v = Vec::new();
            size(&mut v, n);
            v
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xFE]);
        // 127 in one byte would be all ones, the reserved "unknown" value.
        assert_eq!(enc(127), [0x40, 0x7F]);
        assert_eq!(enc(16_000), [0x7E, 0x80]);
    }

    #[test]
    fn parsed_back_frames_keep_timestamps_keyframes_and_bytes() {
        let (duration, frames) = frames(write(true));
        assert_eq!(frames.len(), 90);
        assert_eq!(duration, Some(100.0 + 89.0 * 33.0));
        for (i, f) in frames.iter().enumerate() {
            let key = i % 30 == 0;
            assert_eq!(f.timestamp, 100 + i as u64 * 33, "frame {i}");
            assert_eq!(f.is_keyframe, Some(key), "frame {i}");
            assert_eq!(f.data, bitstream(key, 800 + i, i as u8), "frame {i}");
        }
    }

    #[test]
    fn a_file_cut_anywhere_still_parses_up_to_the_cut() {
        let full = write(false);
        let whole = frames(full.clone()).1.len();
        assert_eq!(whole, 90);
        let mut seen = 0;
        for cut in (full.len() / 3..full.len()).step_by(997) {
            let n = frames(full[..cut].to_vec()).1.len();
            assert!(n >= seen && n < whole, "cut at {cut}: {n} frames");
            assert!(n >= 30, "cut at {cut}: {n} frames");
            seen = n;
        }
    }

    #[test]
    fn vp9_tracks_are_v_vp9_sized_from_the_keyframe_header() {
        let vp9 = crate::vp9::tests::bitstream;
        let mut w = Webm::new(Cursor::new(Vec::new()), VideoCodec::Vp9);
        // A VP8 keyframe is no VP9 keyframe: nothing is written before a real one.
        assert!(!w.write_frame(0, true, &bitstream(true, 500, 1)).expect("write"));
        assert!(w.write_frame(40, true, &vp9(true, 320, 240, 600, 2)).expect("write"));
        assert!(w.write_frame(73, false, &vp9(false, 0, 0, 300, 3)).expect("write"));
        let (duration, frames) = frames_of(w.finish().expect("finish").into_inner(), "V_VP9");
        assert_eq!(duration, Some(73.0));
        let got: Vec<(u64, Option<bool>, Vec<u8>)> = frames
            .into_iter()
            .map(|f| (f.timestamp, f.is_keyframe, f.data))
            .collect();
        assert_eq!(
            got,
            vec![
                (40, Some(true), vp9(true, 320, 240, 600, 2)),
                (73, Some(false), vp9(false, 0, 0, 300, 3)),
            ]
        );
    }
}
