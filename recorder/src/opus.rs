//! Opus in Ogg (RFC 7845).
//!
//! Granule positions count 48 kHz samples from the first packet. A packet's position comes from
//! its RTP timestamp (RFC 7587 §4.1: always 48 kHz), so a gap in the stream (loss, DTX, a
//! dropped queue entry) is filled with one-byte packets that carry only a TOC byte: RFC 6716
//! §3.2.1 makes a zero-length frame a lost frame, which decoders conceal. The sum of packet
//! durations thus always equals the granule position, as RFC 7845 §4 requires, and audio stays
//! in sync with the manifest's start offset.
//!
//! A page ends at most every [`PAGE_SAMPLES`] and is flushed, so a killed process loses at most
//! that much. Each packet is held back until the next arrives so the last one can carry the
//! end-of-stream flag when the file is finished.

use std::io::{self, Write};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use crate::TsUnwrap;

/// Samples per second of every Opus stream (RFC 7587 §4.1).
pub const SAMPLE_RATE: u64 = 48_000;
/// A page ends (and is flushed) once it spans this many samples: one second.
pub const PAGE_SAMPLES: u64 = SAMPLE_RATE;
/// A jump larger than this is a discontinuity (a restarted sender), not a gap to fill.
const MAX_GAP: u64 = 60 * SAMPLE_RATE;

/// The number of 48 kHz samples in an Opus packet, from its TOC byte (RFC 6716 §3.1); `None`
/// for a malformed packet.
pub fn packet_samples(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let frame = frame_samples(toc);
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3F),
    };
    let total = frame * frames;
    // RFC 6716 §3.2.5: at most 120 ms per packet; zero frames is malformed.
    (total > 0 && total <= 5760).then_some(total)
}

/// Samples of one frame of the configuration in `toc` (RFC 6716 §3.1, Table 2).
fn frame_samples(toc: u8) -> u64 {
    let config = toc >> 3;
    match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    }
}

/// An Ogg Opus file being written.
pub struct OggOpus<W: Write> {
    out: PacketWriter<'static, W>,
    serial: u32,
    clock: TsUnwrap,
    /// Granule position (samples) at the end of the last packet accepted.
    granule: u64,
    /// Granule position where the current page started.
    page_start: u64,
    /// The packet waiting for its successor, with its end granule.
    held: Option<(Vec<u8>, u64)>,
    /// TOC byte of the last packet, for lost-frame packets of the same configuration.
    last_toc: Option<u8>,
    packets: u64,
    dropped: u64,
}

impl<W: Write> OggOpus<W> {
    /// Writes the identification and comment headers (RFC 7845 §5), each on its own page.
    pub fn new(out: W, serial: u32) -> io::Result<Self> {
        let mut out = PacketWriter::new(out);
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(2); // channels: WebRTC negotiates opus/48000/2; mono packets decode into both
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: the stream starts mid-way
        head.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate (informational)
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo
        out.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = b"convene";
        let mut tags = Vec::with_capacity(8 + 4 + vendor.len() + 4);
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        out.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        out.inner_mut().flush()?;
        Ok(OggOpus {
            out,
            serial,
            clock: TsUnwrap::default(),
            granule: 0,
            page_start: 0,
            held: None,
            last_toc: None,
            packets: 0,
            dropped: 0,
        })
    }

    /// Adds one RTP payload. Malformed, duplicate and late packets are dropped (counted).
    pub fn push(&mut self, rtp_timestamp: u32, payload: &[u8]) -> io::Result<()> {
        let Some(samples) = packet_samples(payload) else {
            self.dropped += 1;
            return Ok(());
        };
        let first = self.last_toc.is_none();
        let pos = self.clock.position(rtp_timestamp);
        let Ok(mut pos) = u64::try_from(pos) else {
            self.dropped += 1;
            return Ok(());
        };
        if !first && pos < self.granule {
            // Duplicate or reordered behind what is written: Ogg cannot go back.
            self.dropped += 1;
            return Ok(());
        }
        if pos - self.granule > MAX_GAP {
            self.clock.rebase(rtp_timestamp, self.granule as i64);
            pos = self.granule;
        }
        if let Some(toc) = self.last_toc {
            // Fill whole lost frames; a remainder below one frame is sender jitter.
            let lost = frame_samples(toc);
            let code0 = toc & !0x03;
            while pos - self.granule >= lost {
                self.granule += lost;
                self.emit(vec![code0])?;
            }
        }
        self.granule += samples;
        self.last_toc = Some(payload[0]);
        self.emit(payload.to_vec())
    }

    fn emit(&mut self, packet: Vec<u8>) -> io::Result<()> {
        self.packets += 1;
        let next = (packet, self.granule);
        let Some((held, granule)) = self.held.replace(next) else {
            return Ok(());
        };
        let end_page = granule - self.page_start >= PAGE_SAMPLES;
        let info = if end_page {
            self.page_start = granule;
            PacketWriteEndInfo::EndPage
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        self.out.write_packet(held, self.serial, info, granule)?;
        if end_page {
            self.out.inner_mut().flush()?;
        }
        Ok(())
    }

    /// Packets written so far (including lost-frame fillers).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets refused (malformed, duplicate, late).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Duration written so far, in samples.
    pub fn samples(&self) -> u64 {
        self.granule
    }

    /// Writes the last packet with the end-of-stream flag and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some((held, granule)) = self.held.take() {
            self.out
                .write_packet(held, self.serial, PacketWriteEndInfo::EndStream, granule)?;
        }
        let mut out = self.out.into_inner();
        out.flush()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogg::reading::PacketReader;
    use std::io::Cursor;

    /// TOC of a 20 ms CELT fullband mono frame (config 31, code 0).
    const TOC_20MS: u8 = 31 << 3;

    fn packet(n: u8) -> Vec<u8> {
        vec![TOC_20MS, n, n, n]
    }

    fn read_all(bytes: Vec<u8>) -> Vec<(Vec<u8>, u64, bool)> {
        let mut r = PacketReader::new(Cursor::new(bytes));
        let mut out = Vec::new();
        while let Some(p) = r.read_packet().expect("valid ogg") {
            out.push((p.data.clone(), p.absgp_page(), p.last_in_stream()));
        }
        out
    }

    #[test]
    fn toc_gives_the_packet_duration() {
        assert_eq!(packet_samples(&[TOC_20MS]), Some(960));
        assert_eq!(packet_samples(&[(1 << 3) | 1, 0]), Some(1920)); // SILK 20 ms, two frames
        assert_eq!(packet_samples(&[(16 << 3) | 3, 4]), Some(480)); // CELT 2.5 ms ×4
        assert_eq!(packet_samples(&[(3 << 3) | 3, 3]), None); // 180 ms > 120 ms
        assert_eq!(packet_samples(&[(3 << 3) | 3]), None); // code 3 without count byte
        assert_eq!(packet_samples(&[]), None);
    }

    #[test]
    fn headers_then_packets_with_granules_from_rtp_time() {
        let mut w = OggOpus::new(Vec::new(), 7).expect("headers");
        let base = 1_000_000u32;
        for i in 0..100u32 {
            w.push(base + i * 960, &packet(i as u8)).expect("push");
        }
        assert_eq!(w.samples(), 100 * 960);
        let packets = read_all(w.finish().expect("finish"));
        assert_eq!(&packets[0].0[..8], b"OpusHead");
        assert_eq!(&packets[1].0[..8], b"OpusTags");
        let audio = &packets[2..];
        assert_eq!(audio.len(), 100);
        assert_eq!(audio[0].0, packet(0));
        let (last, granule, eos) = audio.last().expect("packets");
        assert_eq!(last, &packet(99));
        assert_eq!(*granule, 100 * 960);
        assert!(*eos);
    }

    #[test]
    fn a_gap_is_filled_with_lost_frames_so_time_is_kept() {
        let mut w = OggOpus::new(Vec::new(), 1).expect("headers");
        w.push(0, &packet(1)).expect("push");
        // Three packets lost (or DTX): the next one starts at 4 × 20 ms.
        w.push(4 * 960, &packet(2)).expect("push");
        w.push(5 * 960, &packet(3)).expect("push");
        assert_eq!(w.samples(), 6 * 960);
        let packets = read_all(w.finish().expect("finish"));
        let audio: Vec<&Vec<u8>> = packets[2..].iter().map(|p| &p.0).collect();
        assert_eq!(audio.len(), 6);
        for filler in &audio[1..4] {
            assert_eq!(filler.as_slice(), &[TOC_20MS]);
            assert_eq!(packet_samples(filler), Some(960));
        }
        assert_eq!(audio[4], &packet(2));
    }

    #[test]
    fn late_duplicate_and_malformed_packets_are_dropped() {
        let mut w = OggOpus::new(Vec::new(), 1).expect("headers");
        w.push(960, &packet(1)).expect("push");
        w.push(1920, &packet(2)).expect("push");
        w.push(960, &packet(1)).expect("duplicate");
        w.push(0, &packet(0)).expect("late");
        w.push(2880, &[]).expect("empty");
        assert_eq!(w.dropped(), 3);
        assert_eq!(w.packets(), 2);
    }

    #[test]
    fn pages_end_every_second_so_a_cut_file_keeps_all_but_the_last() {
        let mut w = OggOpus::new(Vec::new(), 3).expect("headers");
        for i in 0..260u32 {
            w.push(i * 960, &packet(i as u8)).expect("push");
        }
        // Not finished: as after SIGKILL, only completed pages are in the output.
        let bytes = w.out.inner().clone();
        let packets = read_all(bytes);
        let audio = packets.len() - 2;
        // 260 packets of 20 ms = 5.2 s: pages closed at each full second are complete.
        assert!((200..260).contains(&audio), "{audio} packets survive");
        assert_eq!(packets.last().map(|p| p.1), Some(audio as u64 * 960));
    }
}
