//! Keyframe detection on RTP payloads, so a down-track switches simulcast layers only where the
//! new layer is decodable on its own.
//!
//! Only the first packet of a keyframe matters: a switch starts there and takes the rest of the
//! frame in order. VP8 keyframes also carry the frame size, which tells layers apart by resolution.

use str0m::format::Codec;

/// What the first bytes of one RTP payload say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PayloadInfo {
    /// The packet starts a keyframe (or, for codecs without inter-frame prediction that we know of,
    /// any packet may start the stream).
    pub(crate) keyframe_start: bool,
    /// Width and height of the keyframe, when the payload states them.
    pub(crate) size: Option<(u32, u32)>,
}

/// Inspects one payload of `codec`. Audio is decodable from any packet; video codecs that are not
/// parsed here (AV1, H.265) are treated the same, as before simulcast existed.
pub(crate) fn inspect(codec: Codec, payload: &[u8]) -> PayloadInfo {
    match codec {
        Codec::Vp8 => vp8(payload),
        Codec::Vp9 => vp9(payload),
        Codec::H264 => PayloadInfo {
            keyframe_start: h264(payload),
            size: None,
        },
        _ => PayloadInfo {
            keyframe_start: true,
            size: None,
        },
    }
}

/// RFC 7741 §4.2 (payload descriptor) and §4.3 / RFC 6386 §9.1 (payload header, key frame start code).
fn vp8(p: &[u8]) -> PayloadInfo {
    let none = PayloadInfo::default();
    let Some(&b0) = p.first() else { return none };
    let start_of_partition = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start_of_partition || partition != 0 {
        return none;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else { return none };
        i = 2;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M bit).
            let Some(&pid) = p.get(i) else { return none };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    let Some(header) = p.get(i..) else { return none };
    let Some(&tag) = header.first() else { return none };
    // Frame tag bit 0: 0 = key frame.
    if tag & 0x01 != 0 {
        return none;
    }
    let size = match header.get(3..10) {
        Some([0x9d, 0x01, 0x2a, w0, w1, h0, h1]) => Some((
            u32::from(u16::from_le_bytes([*w0, *w1]) & 0x3fff),
            u32::from(u16::from_le_bytes([*h0, *h1]) & 0x3fff),
        )),
        _ => None,
    };
    PayloadInfo {
        keyframe_start: true,
        size,
    }
}

/// RFC 9628 §4.2: a packet with B (start of frame) and without P (inter-picture predicted) starts
/// a keyframe; its scalability structure (V) lists the spatial layers' sizes.
fn vp9(p: &[u8]) -> PayloadInfo {
    let none = PayloadInfo::default();
    let Some(&b0) = p.first() else { return none };
    let (i_bit, p_bit, l_bit, f_bit, b_bit, v_bit) = (
        b0 & 0x80 != 0,
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
        b0 & 0x08 != 0,
        b0 & 0x02 != 0,
    );
    if p_bit || !b_bit {
        return none;
    }
    let mut i = 1;
    if i_bit {
        let Some(&pid) = p.get(i) else { return none };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    if l_bit {
        let Some(&layer) = p.get(i) else { return none };
        // Only the base spatial layer starts a decodable picture.
        if layer & 0x0e != 0 {
            return none;
        }
        i += if f_bit { 1 } else { 2 };
    }
    let mut size = None;
    if v_bit && let Some(&ss) = p.get(i) {
        let layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            // The last spatial layer is the largest.
            let at = i + 1 + (layers - 1) * 4;
            if let Some(&[w0, w1, h0, h1]) = p.get(at..at + 4) {
                size = Some((
                    u32::from(u16::from_be_bytes([w0, w1])),
                    u32::from(u16::from_be_bytes([h0, h1])),
                ));
            }
        }
    }
    PayloadInfo {
        keyframe_start: true,
        size,
    }
}

/// RFC 6184 §5: an SPS or IDR NAL unit alone, in a STAP-A, or at the start of an FU-A.
fn h264(p: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            let mut i = 1;
            while let Some(&[s0, s1]) = p.get(i..i + 2) {
                let len = usize::from(u16::from_be_bytes([s0, s1]));
                if p.get(i + 2).is_some_and(|nal| matches!(nal & 0x1f, IDR | SPS)) {
                    return true;
                }
                i += 2 + len;
            }
            false
        }
        FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, IDR | SPS)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_and_delta_frames() {
        // X=1, S=1, PID=0; I=1 with a 15-bit picture id; key frame 640x360.
        let key = [
            0x90, 0x80, 0x81, 0x23, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ];
        assert_eq!(
            inspect(Codec::Vp8, &key),
            PayloadInfo {
                keyframe_start: true,
                size: Some((640, 360))
            }
        );
        let mut delta = key;
        delta[4] = 0x11;
        assert!(!inspect(Codec::Vp8, &delta).keyframe_start);
        // A later packet of the key frame (S=0) does not start it.
        let mut middle = key;
        middle[0] = 0x80;
        assert!(!inspect(Codec::Vp8, &middle).keyframe_start);
        assert!(!inspect(Codec::Vp8, &[]).keyframe_start);
        assert!(!inspect(Codec::Vp8, &[0x90]).keyframe_start);
    }

    #[test]
    fn vp9_key_frames_with_scalability_structure() {
        // I=1 (7-bit pid), B=1, V=1; SS: one spatial layer with Y, 1280x720.
        let key = [0x8a, 0x05, 0x10, 0x05, 0x00, 0x02, 0xd0];
        assert_eq!(
            inspect(Codec::Vp9, &key),
            PayloadInfo {
                keyframe_start: true,
                size: Some((1280, 720))
            }
        );
        // P=1: inter-predicted.
        assert!(!inspect(Codec::Vp9, &[0xca, 0x05]).keyframe_start);
        // B=0: not the start of the frame.
        assert!(!inspect(Codec::Vp9, &[0x80, 0x05]).keyframe_start);
    }

    #[test]
    fn h264_idr_sps_stap_and_fu() {
        assert!(inspect(Codec::H264, &[0x65, 0x88]).keyframe_start);
        assert!(inspect(Codec::H264, &[0x67, 0x42]).keyframe_start);
        assert!(!inspect(Codec::H264, &[0x41, 0x9a]).keyframe_start);
        // STAP-A carrying a 2-byte SEI, then an SPS.
        assert!(inspect(Codec::H264, &[0x78, 0x00, 0x02, 0x06, 0x00, 0x00, 0x02, 0x67, 0x42]).keyframe_start);
        assert!(!inspect(Codec::H264, &[0x78, 0x00, 0x02, 0x06, 0x00]).keyframe_start);
        // FU-A start of an IDR; a continuation is not a start.
        assert!(inspect(Codec::H264, &[0x7c, 0x85]).keyframe_start);
        assert!(!inspect(Codec::H264, &[0x7c, 0x05]).keyframe_start);
    }

    #[test]
    fn audio_starts_anywhere() {
        assert!(inspect(Codec::Opus, &[0x00]).keyframe_start);
    }
}
