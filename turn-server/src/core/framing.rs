//! Framing of STUN messages and ChannelData on TCP and TLS connections (RFC 8656 §12.5):
//! the stream carries them back to back, STUN messages sized by their header, ChannelData
//! by its length field rounded up to a multiple of 4.

/// The stream does not carry TURN: the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream does not carry STUN or ChannelData")]
pub struct FramingError;

/// Length of the first complete frame in `buf`, `None` while more bytes are needed.
///
/// For ChannelData the length includes the padding, which the core ignores.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(first) = buf.first() else {
        return Ok(None);
    };
    if buf.len() < 4 {
        // Reject garbage as early as the first byte shows it.
        return if first >> 6 <= 1 { Ok(None) } else { Err(FramingError) };
    }
    let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let total = match first >> 6 {
        // RFC 8489 §5: the magic cookie tells STUN apart from e.g. a TLS ClientHello on the
        // plain port, which would otherwise stall the connection waiting for a huge frame.
        0b00 if buf.len() >= 8 && buf[4..8] != [0x21, 0x12, 0xa4, 0x42] => {
            return Err(FramingError);
        }
        0b00 => 20 + length,
        0b01 => (4 + length).next_multiple_of(4),
        _ => return Err(FramingError),
    };
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_message_is_sized_by_its_header() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&[0; 20]);
        assert_eq!(frame_len(&msg[..27]), Ok(None));
        assert_eq!(frame_len(&msg), Ok(Some(28)));
        msg.push(0x40);
        assert_eq!(frame_len(&msg), Ok(Some(28)));
    }

    #[test]
    fn channel_data_includes_padding() {
        let frame = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(frame_len(&frame[..9]), Ok(None));
        assert_eq!(frame_len(&frame), Ok(Some(12)));
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x00]), Ok(Some(4)));
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(frame_len(&[0x80]), Err(FramingError));
        // A TLS ClientHello sent to the plain TCP port.
        assert_eq!(
            frame_len(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]),
            Err(FramingError)
        );
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01]), Ok(None));
    }
}
