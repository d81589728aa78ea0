//! Per-subscriber RTP sequence number and timestamp rewriting.
//!
//! Every down-track presents one continuous RTP stream to its subscriber even when the source
//! behind it changes (a new publisher SSRC, a simulcast layer switch, resuming after mute). Within
//! one source, gaps are kept as they are so the subscriber NACKs real losses (RFC 4585 §6.2.1);
//! across a switch the output continues at `last + 1` and the timestamp advances by the wall time
//! that passed, so the receiver's jitter buffer sees neither a jump nor a reset (RFC 3550 §5.1).

use std::time::Instant;

/// Where an incoming packet came from, and when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InPacket {
    /// The publisher stream's SSRC.
    pub(crate) ssrc: u32,
    /// Extended (rollover-free) sequence number, as str0m reports it.
    pub(crate) seq: u64,
    /// RTP timestamp from the header.
    pub(crate) ts: u32,
    /// Arrival time.
    pub(crate) now: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    ssrc: u32,
    seq_offset: i64,
    ts_offset: u32,
}

/// Rewrites one incoming stream (or a succession of them) into one outgoing stream.
#[derive(Debug)]
pub(crate) struct SeqTsRewriter {
    clock_rate: u32,
    first_seq: u64,
    first_ts: u32,
    mapping: Option<Mapping>,
    switch_pending: bool,
    segment_start: u64,
    highest_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
}

impl SeqTsRewriter {
    /// `first_seq` must stay below 2^16 so the SRTP rollover counter starts at 0 (RFC 3711
    /// §3.3.1): the subscriber learns no ROC out of band.
    pub(crate) fn new(clock_rate: u32, first_seq: u16, first_ts: u32) -> Self {
        SeqTsRewriter {
            clock_rate,
            first_seq: u64::from(first_seq),
            first_ts,
            mapping: None,
            switch_pending: false,
            segment_start: 0,
            highest_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
        }
    }

    /// The next packet starts a new source segment even if its SSRC is unchanged (e.g. resume after
    /// mute, where the publisher may have kept counting).
    pub(crate) fn switch_source(&mut self) {
        self.switch_pending = true;
    }

    /// Returns the outgoing (extended sequence number, timestamp), or `None` for a packet older than
    /// the current segment's start (a late packet from before a switch).
    pub(crate) fn rewrite(&mut self, p: InPacket) -> Option<(u64, u32)> {
        let mapping = match self.mapping {
            Some(m) if m.ssrc == p.ssrc && !self.switch_pending => m,
            Some(_) => {
                let out_seq = self.highest_out_seq + 1;
                let out_ts = self.last_out_ts.wrapping_add(self.elapsed_ticks(p.now).max(1));
                self.begin(p, out_seq, out_ts)
            }
            None => self.begin(p, self.first_seq, self.first_ts),
        };

        let out_seq = i64::try_from(p.seq).ok()?.checked_add(mapping.seq_offset)?;
        let out_seq = u64::try_from(out_seq).ok()?;
        if out_seq < self.segment_start {
            return None;
        }
        let out_ts = p.ts.wrapping_add(mapping.ts_offset);
        if out_seq >= self.highest_out_seq {
            self.highest_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(p.now);
        }
        Some((out_seq, out_ts))
    }

    fn begin(&mut self, p: InPacket, out_seq: u64, out_ts: u32) -> Mapping {
        // Offsets fit in i64: extended sequence numbers grow by one per packet from < 2^16.
        let seq_offset = (out_seq as i64).wrapping_sub(p.seq as i64);
        let m = Mapping {
            ssrc: p.ssrc,
            seq_offset,
            ts_offset: out_ts.wrapping_sub(p.ts),
        };
        self.mapping = Some(m);
        self.switch_pending = false;
        self.segment_start = out_seq;
        m
    }

    fn elapsed_ticks(&self, now: Instant) -> u32 {
        let Some(last) = self.last_out_at else {
            return 0;
        };
        let micros = now.saturating_duration_since(last).as_micros();
        let ticks = micros * u128::from(self.clock_rate) / 1_000_000;
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pkt(ssrc: u32, seq: u64, ts: u32, now: Instant) -> InPacket {
        InPacket { ssrc, seq, ts, now }
    }

    #[test]
    fn first_packet_maps_to_the_chosen_start() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(90_000, 100, 5_000);
        assert_eq!(r.rewrite(pkt(1, 70_000, 1_000, t0)), Some((100, 5_000)));
        assert_eq!(r.rewrite(pkt(1, 70_001, 4_000, t0)), Some((101, 8_000)));
    }

    #[test]
    fn gaps_within_a_source_are_kept_and_late_packets_fill_them() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(90_000, 10, 0);
        r.rewrite(pkt(1, 500, 0, t0));
        assert_eq!(r.rewrite(pkt(1, 503, 9_000, t0)), Some((13, 9_000)));
        // A retransmitted packet (RTX recovered by str0m) lands in its old place.
        assert_eq!(r.rewrite(pkt(1, 501, 3_000, t0)), Some((11, 3_000)));
        assert_eq!(r.rewrite(pkt(1, 504, 12_000, t0)), Some((14, 12_000)));
    }

    #[test]
    fn ssrc_switch_continues_sequence_and_advances_time_by_wall_clock() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(90_000, 1, 0);
        r.rewrite(pkt(1, 10, 1_000, t0));
        r.rewrite(pkt(1, 11, 4_000, t0 + Duration::from_millis(33)));
        // A new source 100 ms later, with unrelated numbering.
        let t1 = t0 + Duration::from_millis(133);
        let out = r.rewrite(pkt(2, 40_000, 777_777, t1));
        assert_eq!(out, Some((3, 3_000 + 9_000)));
        assert_eq!(r.rewrite(pkt(2, 40_001, 780_777, t1)), Some((4, 15_000)));
        // Late packets of the old source are dropped rather than rewound.
        assert_eq!(r.rewrite(pkt(1, 12, 7_000, t1)).map(|(s, _)| s >= 5), Some(true));
    }

    #[test]
    fn resume_after_mute_closes_the_gap() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(48_000, 1, 0);
        r.rewrite(pkt(7, 100, 0, t0));
        r.switch_source();
        // The publisher kept counting while muted; the subscriber sees no gap.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(r.rewrite(pkt(7, 300, 96_000, t1)), Some((2, 96_000)));
        assert_eq!(r.rewrite(pkt(7, 301, 96_960, t1)), Some((3, 96_960)));
        // Packets from before the resume point are not emitted.
        assert_eq!(r.rewrite(pkt(7, 250, 50_000, t1)), None);
    }

    #[test]
    fn timestamps_wrap() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(90_000, 1, u32::MAX - 10);
        r.rewrite(pkt(1, 1, 0, t0));
        assert_eq!(r.rewrite(pkt(1, 2, 20, t0)), Some((2, 9)));
    }
}
