//! VP9 frames from RTP payloads (RFC 9628).
//!
//! Every payload starts with a descriptor (§4.2): flags `I P L F B E V Z`, then the picture id
//! (7 or 15 bits), the layer indices (plus TL0PICIDX in non-flexible mode), the reference
//! indices of flexible mode and, when V=1, the scalability structure (parsed and skipped).
//!
//! A picture is the packets of one RTP timestamp up to the marker bit; inside it each layer
//! frame runs from a packet with B=1 to one with E=1. A picture with one layer frame (no SVC)
//! is written as it came. With several spatial layers, the layer frames are joined into one
//! superframe with an index (VP9 bitstream spec, Annex B), which is what a WebM block holds and
//! every decoder splits; keeping only the top layer would not decode, as it predicts from the
//! ones below. A picture that lost a packet is dropped whole, as for VP8: later pictures are
//! kept and the decoder conceals the missing reference. A keyframe is a picture whose first
//! layer frame has P=0 and spatial id 0.

use crate::{RtpIn, VideoFrame};

/// Why a payload descriptor could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The payload ends inside the descriptor.
    #[error("VP9 payload descriptor truncated")]
    Truncated,
    /// Flexible mode allows at most three reference indices (§4.2, N bit).
    #[error("VP9 payload descriptor has more than three reference indices")]
    TooManyReferences,
}

/// Layer indices (L=1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// TID: temporal layer.
    pub temporal: u8,
    /// U: switching up point.
    pub switching_up: bool,
    /// SID: spatial layer.
    pub spatial: u8,
    /// D: inter-layer dependency.
    pub inter_layer: bool,
    /// TL0PICIDX (non-flexible mode only).
    pub tl0_pic_idx: Option<u8>,
}

/// The scalability structure (V=1), as far as it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalability {
    /// N_S + 1.
    pub spatial_layers: u8,
    /// Width and height per spatial layer (Y=1), lowest first.
    pub sizes: Vec<(u16, u16)>,
    /// N_G: pictures in the picture group description (G=1), else 0.
    pub picture_group: u8,
}

/// One payload descriptor (RFC 9628 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Picture id (I=1): 7 or 15 bits.
    pub picture_id: Option<u16>,
    /// P: inter-picture predicted.
    pub inter_picture: bool,
    /// F: flexible mode.
    pub flexible: bool,
    /// B: starts a layer frame.
    pub begin: bool,
    /// E: ends a layer frame.
    pub end: bool,
    /// Z: not a reference for upper spatial layers.
    pub not_reference: bool,
    /// Layer indices (L=1).
    pub layers: Option<Layers>,
    /// P_DIFF reference indices (flexible mode with P=1), at most three.
    pub references: Vec<u8>,
    /// Scalability structure (V=1).
    pub scalability: Option<Scalability>,
    /// Bytes of descriptor before the VP9 data.
    pub len: usize,
}

/// Reads bytes of a descriptor in order.
struct Bytes<'a> {
    p: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> Result<u8, DescriptorError> {
        let b = *self.p.get(self.at).ok_or(DescriptorError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, DescriptorError> {
        Ok(u16::from_be_bytes([self.next()?, self.next()?]))
    }
}

impl Descriptor {
    /// Parses the descriptor at the start of `payload`.
    pub fn parse(payload: &[u8]) -> Result<Self, DescriptorError> {
        let mut r = Bytes { p: payload, at: 0 };
        let b0 = r.next()?;
        let flag = |bit: u8| b0 & bit != 0;
        let (inter_picture, flexible) = (flag(0x40), flag(0x10));
        let picture_id = if flag(0x80) {
            let m = r.next()?;
            Some(if m & 0x80 != 0 {
                u16::from(m & 0x7F) << 8 | u16::from(r.next()?)
            } else {
                u16::from(m)
            })
        } else {
            None
        };
        let layers = if flag(0x20) {
            let l = r.next()?;
            Some(Layers {
                temporal: l >> 5,
                switching_up: l & 0x10 != 0,
                spatial: (l >> 1) & 0x07,
                inter_layer: l & 0x01 != 0,
                tl0_pic_idx: if flexible { None } else { Some(r.next()?) },
            })
        } else {
            None
        };
        let mut references = Vec::new();
        if flexible && inter_picture {
            loop {
                if references.len() == 3 {
                    return Err(DescriptorError::TooManyReferences);
                }
                let d = r.next()?;
                references.push(d >> 1);
                if d & 0x01 == 0 {
                    break;
                }
            }
        }
        let scalability = if flag(0x02) { Some(scalability(&mut r)?) } else { None };
        Ok(Descriptor {
            picture_id,
            inter_picture,
            flexible,
            begin: flag(0x08),
            end: flag(0x04),
            not_reference: flag(0x01),
            layers,
            references,
            scalability,
            len: r.at,
        })
    }
}

/// The scalability structure (§4.2.1).
fn scalability(r: &mut Bytes<'_>) -> Result<Scalability, DescriptorError> {
    let b = r.next()?;
    let spatial_layers = (b >> 5) + 1;
    let mut sizes = Vec::new();
    if b & 0x10 != 0 {
        for _ in 0..spatial_layers {
            sizes.push((r.u16()?, r.u16()?));
        }
    }
    let mut picture_group = 0;
    if b & 0x08 != 0 {
        picture_group = r.next()?;
        for _ in 0..picture_group {
            let refs = (r.next()? >> 2) & 0x03;
            for _ in 0..refs {
                r.next()?;
            }
        }
    }
    Ok(Scalability {
        spatial_layers,
        sizes,
        picture_group,
    })
}

/// The picture being assembled.
#[derive(Debug)]
struct Picture {
    timestamp: u32,
    keyframe: bool,
    /// Layer frames in arrival order (lowest spatial layer first).
    layers: Vec<Vec<u8>>,
    /// Inside a layer frame: B seen, E not yet.
    open: bool,
}

/// Assembles VP9 pictures from the packets of one stream, in arrival order.
#[derive(Debug, Default)]
pub struct Vp9Frames {
    picture: Option<Picture>,
    next_seq: Option<u64>,
    lost_frames: u64,
}

impl Vp9Frames {
    /// Feeds one packet; returns the picture it completes, if any.
    pub fn push(&mut self, pkt: &RtpIn) -> Option<VideoFrame> {
        if let Some(next) = self.next_seq {
            if pkt.seq < next {
                return None; // duplicate or reordered after its picture was decided
            }
            if pkt.seq > next {
                self.abandon();
            }
        }
        self.next_seq = Some(pkt.seq + 1);
        let Ok(d) = Descriptor::parse(&pkt.payload) else {
            self.abandon();
            return None;
        };
        if self.picture.as_ref().is_some_and(|p| p.timestamp != pkt.timestamp) {
            self.abandon(); // the previous picture never got its marker
        }
        if d.begin {
            let keyframe = !d.inter_picture && d.layers.is_none_or(|l| l.spatial == 0);
            let p = self.picture.get_or_insert_with(|| Picture {
                timestamp: pkt.timestamp,
                keyframe,
                layers: Vec::new(),
                open: false,
            });
            if p.open {
                self.abandon(); // a layer frame began before the previous one ended
                return None;
            }
            p.layers.push(Vec::new());
            p.open = true;
        }
        // Without a picture, this continues one whose start was lost.
        let p = self.picture.as_mut()?;
        let data = pkt.payload.get(d.len..).unwrap_or_default();
        match p.layers.last_mut() {
            Some(layer) if p.open => layer.extend_from_slice(data),
            _ => {
                self.abandon(); // data outside a layer frame
                return None;
            }
        }
        if d.end {
            p.open = false;
        }
        if !pkt.marker {
            return None;
        }
        let p = self.picture.take()?;
        let data = if p.open { None } else { superframe(p.layers) };
        if data.is_none() {
            self.lost_frames += 1;
        }
        Some(VideoFrame {
            timestamp: p.timestamp,
            keyframe: p.keyframe,
            data: data?,
        })
    }

    fn abandon(&mut self) {
        if self.picture.take().is_some() {
            self.lost_frames += 1;
        }
    }

    /// Pictures abandoned after their first packet arrived (a later one missing or malformed).
    pub fn lost_frames(&self) -> u64 {
        self.lost_frames
    }
}

/// The frames of a superframe (Annex B), or the data itself when it has no valid index.
fn split(data: &[u8]) -> Vec<&[u8]> {
    let Some(&marker) = data.last() else {
        return Vec::new();
    };
    if marker & 0xE0 == 0xC0 {
        let frames = usize::from(marker & 0x07) + 1;
        let mag = usize::from((marker >> 3) & 0x03) + 1;
        let index = 2 + mag * frames;
        if data.len() >= index && data[data.len() - index] == marker {
            let sizes = &data[data.len() - index + 1..data.len() - 1];
            let mut out = Vec::with_capacity(frames);
            let mut at = 0;
            for size in sizes.chunks(mag) {
                let size = size.iter().rev().fold(0usize, |n, b| n << 8 | usize::from(*b));
                let Some(frame) = data.get(at..at + size) else {
                    return vec![data];
                };
                out.push(frame);
                at += size;
            }
            return out;
        }
    }
    vec![data]
}

/// One picture's data: a single layer frame as it is; several joined into one superframe with
/// an index (a layer frame that is itself a superframe is split first). `None` when the frames
/// do not fit one index (more than 8).
fn superframe(layers: Vec<Vec<u8>>) -> Option<Vec<u8>> {
    if layers.len() == 1 {
        return layers.into_iter().next();
    }
    let frames: Vec<&[u8]> = layers.iter().flat_map(|l| split(l)).collect();
    if frames.is_empty() || frames.len() > 8 {
        return None;
    }
    let largest = frames.iter().map(|f| f.len()).max().unwrap_or(0);
    let mag = (1..4).find(|m| largest < 1 << (8 * m)).unwrap_or(4);
    let marker = 0xC0 | ((mag - 1) << 3) as u8 | (frames.len() - 1) as u8;
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.len()).sum::<usize>() + 2 + mag * 8);
    for f in &frames {
        out.extend_from_slice(f);
    }
    out.push(marker);
    for f in &frames {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes()[..mag]);
    }
    out.push(marker);
    Some(out)
}

/// Reads bits most significant first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8)?;
            v = v << 1 | u32::from(byte >> (7 - self.at % 8) & 1);
            self.at += 1;
        }
        Some(v)
    }
}

/// Width and height from a keyframe's uncompressed header (VP9 bitstream spec §6.2), if the
/// frame (or a superframe's first frame) is one. For an SVC picture that is the lowest layer's
/// size; decoders take the sizes from the bitstream.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut r = Bits { data: frame, at: 0 };
    if r.read(2)? != 2 {
        return None; // frame_marker
    }
    let low = r.read(1)?;
    let profile = r.read(1)? << 1 | low;
    if profile == 3 {
        r.read(1)?; // reserved_zero
    }
    // show_existing_frame, then frame_type (0: key frame).
    if r.read(1)? != 0 || r.read(1)? != 0 {
        return None;
    }
    r.read(2)?; // show_frame, error_resilient_mode
    if r.read(24)? != 0x49_8342 {
        return None; // frame_sync_code
    }
    if profile >= 2 {
        r.read(1)?; // ten_or_twelve_bit
    }
    let odd_profile = profile == 1 || profile == 3;
    if r.read(3)? != 7 {
        r.read(1)?; // color_range
        if odd_profile {
            r.read(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if odd_profile {
        r.read(1)?; // reserved_zero (sRGB)
    }
    Some((r.read(16)? + 1, r.read(16)? + 1))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The start of a profile-0 VP9 keyframe / interframe of `w`×`h`, padded to `len` bytes.
    pub(crate) fn bitstream(key: bool, w: u16, h: u16, len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len.max(10)];
        if key {
            // frame_marker 10, profile 00, show_existing 0, frame_type 0, show 1, error_res 0;
            // sync code; color_space 2 (BT.709), color_range 0; then the sizes minus one.
            let fields = [
                (0b1000_0010, 8),
                (0x49_8342, 24),
                (0b0100, 4),
                (u32::from(w - 1), 16),
                (u32::from(h - 1), 16),
            ];
            let mut at = 0;
            f[..9].fill(0);
            for (value, n) in fields {
                for i in (0..n).rev() {
                    if value >> i & 1 == 1 {
                        f[at / 8] |= 0x80 >> (at % 8);
                    }
                    at += 1;
                }
            }
        } else {
            f[0] = 0b1000_0110; // frame_type 1
        }
        f
    }

    /// Packetizes one layer frame into payloads of at most `mtu` bytes of data, non-flexible
    /// mode with a 15-bit picture id and layer indices; the last packet of the picture (`last`)
    /// carries the marker.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn packets(
        frame: &[u8],
        mtu: usize,
        seq: &mut u64,
        ts: u32,
        picture: u16,
        key: bool,
        sid: u8,
        last: bool,
    ) -> Vec<RtpIn> {
        let chunks: Vec<&[u8]> = frame.chunks(mtu).collect();
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut b0 = 0x80 | 0x20; // I, L
                if !key {
                    b0 |= 0x40;
                }
                if i == 0 {
                    b0 |= 0x08;
                }
                if i + 1 == n {
                    b0 |= 0x04;
                }
                let mut payload = vec![b0, 0x80 | (picture >> 8) as u8 & 0x7F, picture as u8, sid << 1, 0];
                payload.extend_from_slice(chunk);
                let p = RtpIn {
                    seq: *seq,
                    timestamp: ts,
                    marker: last && i + 1 == n,
                    payload: payload.into(),
                };
                *seq += 1;
                p
            })
            .collect()
    }

    #[test]
    fn minimal_descriptor() {
        let d = Descriptor::parse(&[0x0C, 0xAA]).expect("parses");
        assert!(d.begin && d.end && !d.inter_picture && !d.flexible && !d.not_reference);
        assert_eq!((d.picture_id, d.layers, d.len), (None, None, 1));
        assert!(d.references.is_empty() && d.scalability.is_none());
    }

    #[test]
    fn picture_ids_of_7_and_15_bits() {
        let d = Descriptor::parse(&[0x80, 0x55, 1]).expect("7 bits");
        assert_eq!((d.picture_id, d.len), (Some(0x55), 2));
        let d = Descriptor::parse(&[0x80, 0xAB, 0xCD, 1]).expect("15 bits");
        assert_eq!((d.picture_id, d.len), (Some(0x2BCD), 3));
        assert_eq!(Descriptor::parse(&[0x80]), Err(DescriptorError::Truncated));
        assert_eq!(Descriptor::parse(&[0x80, 0xAB]), Err(DescriptorError::Truncated));
    }

    #[test]
    fn layer_indices_in_both_modes() {
        // Non-flexible: TID 2, U, SID 1, D, TL0PICIDX 9; Z set.
        let d = Descriptor::parse(&[0x20 | 0x01, 0b0101_0011, 9, 0xFF]).expect("non-flexible");
        assert_eq!(
            d.layers,
            Some(Layers {
                temporal: 2,
                switching_up: true,
                spatial: 1,
                inter_layer: true,
                tl0_pic_idx: Some(9),
            })
        );
        assert!(d.not_reference);
        assert_eq!(d.len, 3);
        // Flexible: no TL0PICIDX.
        let d = Descriptor::parse(&[0x30, 0b0010_0100, 0xFF]).expect("flexible");
        let l = d.layers.expect("layers");
        assert_eq!((l.temporal, l.spatial, l.tl0_pic_idx, d.len), (1, 2, None, 2));
        assert_eq!(Descriptor::parse(&[0x20, 0x00]), Err(DescriptorError::Truncated));
        assert_eq!(Descriptor::parse(&[0x20]), Err(DescriptorError::Truncated));
    }

    #[test]
    fn flexible_mode_reference_indices() {
        // I, P, F, B: picture id 7 bits, then P_DIFF 1 (N) and 3.
        let d = Descriptor::parse(&[0xD8, 0x05, 0x03, 0x06, 0x77]).expect("parses");
        assert_eq!(d.references, vec![1, 3]);
        assert_eq!(d.len, 4);
        // Three is the most.
        let d = Descriptor::parse(&[0x50, 0x03, 0x05, 0x06]).expect("three");
        assert_eq!(d.references, vec![1, 2, 3]);
        assert_eq!(
            Descriptor::parse(&[0x50, 0x03, 0x05, 0x07, 0x08]),
            Err(DescriptorError::TooManyReferences)
        );
        assert_eq!(Descriptor::parse(&[0x50, 0x03]), Err(DescriptorError::Truncated));
        // Flexible without P has no references; non-flexible with P has none either.
        assert!(Descriptor::parse(&[0x10, 0x03]).expect("no P").references.is_empty());
        assert_eq!(Descriptor::parse(&[0x40, 0x03]).expect("no F").len, 1);
    }

    #[test]
    fn scalability_structure_is_parsed_and_skipped() {
        // V, B: N_S 1 (two layers), Y, G; sizes 320x180 and 640x360; N_G 2: one picture with
        // two references, one with none.
        let payload = [
            0x0A,
            0b0011_1000,
            0x01,
            0x40,
            0x00,
            0xB4,
            0x02,
            0x80,
            0x01,
            0x68,
            2,
            0b0000_1000,
            1,
            2,
            0b0010_0000,
            0xEE,
        ];
        let d = Descriptor::parse(&payload).expect("parses");
        assert_eq!(
            d.scalability,
            Some(Scalability {
                spatial_layers: 2,
                sizes: vec![(320, 180), (640, 360)],
                picture_group: 2,
            })
        );
        assert_eq!(d.len, payload.len() - 1);
        // Cut anywhere inside, it is an error, never a panic.
        for cut in 1..payload.len() - 1 {
            assert_eq!(
                Descriptor::parse(&payload[..cut]),
                Err(DescriptorError::Truncated),
                "cut {cut}"
            );
        }
        // Without Y and G it is one byte.
        assert_eq!(Descriptor::parse(&[0x0A, 0x40, 0xEE]).expect("bare").len, 2);
    }

    #[test]
    fn every_flag_combination_parses_or_errs_without_panicking() {
        for b0 in 0..=255u8 {
            let long = [b0, 0x81, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
            for cut in 0..=long.len() {
                if let Ok(d) = Descriptor::parse(&long[..cut]) {
                    assert!(d.len <= cut);
                    assert_eq!(d.begin, b0 & 0x08 != 0);
                    assert_eq!(d.picture_id.is_some(), b0 & 0x80 != 0);
                    assert_eq!(d.layers.is_some(), b0 & 0x20 != 0);
                    assert_eq!(d.scalability.is_some(), b0 & 0x02 != 0);
                }
            }
        }
        assert_eq!(Descriptor::parse(&[]), Err(DescriptorError::Truncated));
    }

    #[test]
    fn keyframe_sizes_come_from_the_uncompressed_header() {
        assert_eq!(keyframe_size(&bitstream(true, 320, 240, 50, 0)), Some((320, 240)));
        assert_eq!(keyframe_size(&bitstream(true, 1280, 720, 50, 0)), Some((1280, 720)));
        assert_eq!(keyframe_size(&bitstream(false, 320, 240, 50, 0)), None);
        assert_eq!(keyframe_size(&bitstream(true, 320, 240, 50, 0)[..8]), None);
        assert_eq!(keyframe_size(&[]), None);
    }

    #[test]
    fn pictures_are_assembled_across_packets() {
        let mut a = Vp9Frames::default();
        let mut seq = 100;
        let key = bitstream(true, 320, 240, 3000, 7);
        let frames: Vec<VideoFrame> = packets(&key, 1000, &mut seq, 9000, 1, true, 0, true)
            .iter()
            .filter_map(|p| a.push(p))
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data, key);
        assert!(frames[0].keyframe);
        assert_eq!(frames[0].timestamp, 9000);
        let inter = bitstream(false, 0, 0, 1500, 9);
        let frames: Vec<VideoFrame> = packets(&inter, 1000, &mut seq, 12000, 2, false, 0, true)
            .iter()
            .filter_map(|p| a.push(p))
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].data, inter);
        assert!(!frames[0].keyframe);
        assert_eq!(a.lost_frames(), 0);
    }

    #[test]
    fn a_picture_missing_a_packet_is_dropped_and_the_next_one_kept() {
        let mut a = Vp9Frames::default();
        let mut seq = 0;
        let mut first = packets(&bitstream(true, 320, 240, 3000, 1), 1000, &mut seq, 0, 1, true, 0, true);
        first.remove(1); // lost in the middle
        let second = packets(
            &bitstream(false, 0, 0, 2000, 2),
            1000,
            &mut seq,
            3000,
            2,
            false,
            0,
            true,
        );
        let mut third = packets(
            &bitstream(false, 0, 0, 2000, 3),
            1000,
            &mut seq,
            6000,
            3,
            false,
            0,
            true,
        );
        third.remove(0); // its start is lost
        let mut fourth = packets(
            &bitstream(false, 0, 0, 2000, 4),
            1000,
            &mut seq,
            9000,
            4,
            false,
            0,
            true,
        );
        fourth.pop(); // its end (the marker) is lost
        let fifth = packets(
            &bitstream(false, 0, 0, 500, 5),
            1000,
            &mut seq,
            12000,
            5,
            false,
            0,
            true,
        );
        let dup = second[0].clone();
        let frames: Vec<VideoFrame> = first
            .iter()
            .chain(&second)
            .chain([&dup])
            .chain(&third)
            .chain(&fourth)
            .chain(&fifth)
            .filter_map(|p| a.push(p))
            .collect();
        let stamps: Vec<u32> = frames.iter().map(|f| f.timestamp).collect();
        assert_eq!(stamps, vec![3000, 12000]);
        // The first and fourth were started and abandoned; the third never started.
        assert_eq!(a.lost_frames(), 2);
    }

    #[test]
    fn malformed_payloads_abandon_the_picture() {
        let mut a = Vp9Frames::default();
        let mut seq = 0;
        let mut ps = packets(&bitstream(true, 320, 240, 2500, 1), 1000, &mut seq, 0, 1, true, 0, true);
        // The middle packet's descriptor is cut short.
        ps[1].payload = vec![0x80].into();
        assert!(ps.iter().filter_map(|p| a.push(p)).next().is_none());
        // A marker before the layer frame's end.
        let mut ps = packets(
            &bitstream(false, 0, 0, 1500, 2),
            1000,
            &mut seq,
            3000,
            2,
            false,
            0,
            true,
        );
        ps[0].marker = true;
        assert!(ps.iter().filter_map(|p| a.push(p)).next().is_none());
        assert_eq!(a.lost_frames(), 2);
        // The stream goes on.
        let ps = packets(&bitstream(false, 0, 0, 500, 3), 1000, &mut seq, 6000, 3, false, 0, true);
        assert_eq!(ps.iter().filter_map(|p| a.push(p)).count(), 1);
    }

    #[test]
    fn spatial_layers_become_one_superframe() {
        let mut a = Vp9Frames::default();
        let mut seq = 0;
        let base = bitstream(true, 320, 180, 1800, 1);
        let top = bitstream(false, 0, 0, 300, 2);
        let mut ps = packets(&base, 1000, &mut seq, 0, 1, true, 0, false);
        ps.extend(packets(&top, 1000, &mut seq, 0, 1, true, 1, true));
        let frames: Vec<VideoFrame> = ps.iter().filter_map(|p| a.push(p)).collect();
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        assert!(f.keyframe);
        // Index: marker 0b110_01_001 (2-byte sizes, 2 frames), sizes, marker.
        let mut want = base.clone();
        want.extend_from_slice(&top);
        want.extend_from_slice(&[0xC9, 0x08, 0x07, 0x2C, 0x01, 0xC9]);
        assert_eq!(f.data, want);
        assert_eq!(split(&f.data), vec![&base[..], &top[..]]);
        assert_eq!(keyframe_size(&f.data), Some((320, 180)));
        // A layer frame that is itself a superframe is split into the new index.
        let nested = superframe(vec![f.data.clone(), vec![7; 10]]).expect("fits");
        assert_eq!(split(&nested), vec![&base[..], &top[..], &[7; 10][..]]);
        // More than 8 frames do not fit an index.
        assert_eq!(superframe(vec![vec![1]; 9]), None);
    }

    #[test]
    fn a_layer_lost_in_an_svc_picture_drops_the_picture() {
        let mut a = Vp9Frames::default();
        let mut seq = 0;
        let mut ps = packets(
            &bitstream(true, 320, 180, 1800, 1),
            1000,
            &mut seq,
            0,
            1,
            true,
            0,
            false,
        );
        let top = packets(&bitstream(false, 0, 0, 1800, 2), 1000, &mut seq, 0, 1, true, 1, true);
        ps.push(top[1].clone()); // the top layer's first packet is lost
        assert!(ps.iter().filter_map(|p| a.push(p)).next().is_none());
        assert_eq!(a.lost_frames(), 1);
    }
}
