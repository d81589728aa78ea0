//! Connection quality of one participant, from str0m's periodic statistics of its streams.
//!
//! str0m reports every stream once per stats interval with cumulative counters (packets, bytes,
//! NACKs) and its latest gauges: loss from the last RTCP receiver report (ours for streams coming
//! in, the client's for streams going out), interarrival jitter, round-trip time. The meter keeps
//! the latest of each and, once a second, turns the change since the previous evaluation into a
//! [`ConnectionQuality`]; every `REPORT_WINDOW` it sums them into a [`QualityReport`].
//!
//! The class comes from the worst direction: loss, jitter and RTT thresholds, the upstream
//! bitrate against what the published tracks need, and `Lost` when nothing arrives. It worsens at
//! once and improves only when the better class held for two evaluations, so a single good
//! second in a bad call does not flip the icon back and forth.
//!
//! Sans-IO: samples and time in, values out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};

use crate::types::{ConnectionQuality, ParticipantId, Quality, QualityReport};

/// How often str0m reports stream statistics, and how often quality is evaluated.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// No media from a participant this long: `Lost`.
pub(crate) const LOST_AFTER: Duration = Duration::from_secs(3);
/// How much time one `QualityReport` covers.
pub(crate) const REPORT_WINDOW: Duration = Duration::from_secs(5);

/// Upstream bitrate a published, unmuted video track needs to look right, kbit/s. Audio is not
/// counted: Opus voice needs little, and silence with DTX next to nothing.
pub(crate) const EXPECTED_VIDEO_KBPS: u32 = 100;

/// Limits of a class: below all of them, the class (or a better one) holds.
struct Limits {
    loss: f32,
    jitter_ms: u32,
    rtt_ms: u32,
    /// Least upstream bitrate, as a share of the expected.
    bitrate_share: f32,
}

/// Within these: excellent.
const EXCELLENT: Limits = Limits {
    loss: 0.02,
    jitter_ms: 30,
    rtt_ms: 200,
    bitrate_share: 0.5,
};
/// Within these: good; beyond any: poor.
const GOOD: Limits = Limits {
    loss: 0.08,
    jitter_ms: 80,
    rtt_ms: 500,
    bitrate_share: 0.2,
};

/// Which way a stream flows, seen from the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Flow {
    /// From the participant (its publisher connection).
    Up,
    /// To the participant (its subscriber connection).
    Down,
}

/// One stream as str0m last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct StreamSample {
    /// Cumulative packets (retransmissions included).
    pub(crate) packets: u64,
    /// Cumulative bytes (retransmissions included).
    pub(crate) bytes: u64,
    /// Cumulative NACKs: sent by us for `Up`, received by us for `Down`.
    pub(crate) nacks: u64,
    /// Cumulative packets sent a second time (`Down` only).
    pub(crate) resent: u64,
    /// Fraction lost in the last receiver report, if any.
    pub(crate) loss: Option<f32>,
    /// Interarrival jitter, milliseconds, if reported.
    pub(crate) jitter_ms: Option<f32>,
    /// Round-trip time, if known.
    pub(crate) rtt: Option<Duration>,
}

/// What a new sample added to the counters since the previous one of the same stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Growth {
    pub(crate) nacks: u64,
    pub(crate) resent: u64,
}

/// What the engine knows about the participant at an evaluation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    /// When any of its connections last sent us anything.
    pub(crate) heard: Instant,
    /// Upstream bitrate its unmuted tracks need, kbit/s (0: it publishes nothing that needs any).
    pub(crate) expected_up_kbps: u32,
    /// Whether it publishes unmuted tracks, so media should be arriving.
    pub(crate) publishing: bool,
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub(crate) struct Evaluation {
    /// The new class, when it changed (or is the first).
    pub(crate) changed: Option<ConnectionQuality>,
    /// A report, when a window is complete.
    pub(crate) report: Option<QualityReport>,
}

#[derive(Debug, Default)]
struct Stream {
    latest: StreamSample,
    /// `latest.packets` and `latest.bytes` at the previous evaluation.
    counted: (u64, u64),
}

#[derive(Debug)]
struct Window {
    start: Instant,
    bytes_up: u64,
    bytes_down: u64,
    /// Σ loss × milliseconds.
    loss_ms: f64,
    max_loss: f32,
    rtt_ms_sum: u64,
    rtt_samples: u64,
}

impl Window {
    /// The report of this window, ending at `end`.
    fn report(&self, end: Instant) -> QualityReport {
        let span = u64::try_from(end.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let mean_loss = (self.loss_ms / span.max(1) as f64) as f32;
        QualityReport {
            window_ms: span,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            loss_permille: permille(mean_loss),
            max_loss_permille: permille(self.max_loss),
            rtt_ms: (self.rtt_samples > 0)
                .then(|| u32::try_from(self.rtt_ms_sum / self.rtt_samples).unwrap_or(u32::MAX)),
        }
    }

    fn new(start: Instant) -> Self {
        Window {
            start,
            bytes_up: 0,
            bytes_down: 0,
            loss_ms: 0.0,
            max_loss: 0.0,
            rtt_ms_sum: 0,
            rtt_samples: 0,
        }
    }
}

/// One participant's connection quality.
#[derive(Debug)]
pub(crate) struct QualityMeter {
    streams: HashMap<(Flow, Mid, Option<Rid>), Stream>,
    peer_rtt: Option<Duration>,
    last_evaluation: Instant,
    /// When upstream packets last grew (or publishing began).
    upstream_media: Instant,
    publishing: bool,
    /// Whether media arrived since publishing began: until then the bitrate is not judged (a
    /// connection that just came up has not started sending yet).
    flowing: bool,
    current: Option<ConnectionQuality>,
    /// The class the previous evaluation measured (before hysteresis).
    previous: Option<Quality>,
    window: Window,
}

impl QualityMeter {
    pub(crate) fn new(now: Instant) -> Self {
        QualityMeter {
            streams: HashMap::new(),
            peer_rtt: None,
            last_evaluation: now,
            upstream_media: now,
            publishing: false,
            flowing: false,
            current: None,
            previous: None,
            window: Window::new(now),
        }
    }

    /// A stream's latest statistics; returns how much its NACK and resend counters grew.
    pub(crate) fn on_stream(&mut self, flow: Flow, mid: Mid, rid: Option<Rid>, sample: StreamSample) -> Growth {
        let stream = self.streams.entry((flow, mid, rid)).or_default();
        let growth = Growth {
            nacks: sample.nacks.saturating_sub(stream.latest.nacks),
            resent: sample.resent.saturating_sub(stream.latest.resent),
        };
        // Counters never go back (a resend estimate that lags must not undo what was counted).
        stream.latest = StreamSample {
            nacks: sample.nacks.max(stream.latest.nacks),
            resent: sample.resent.max(stream.latest.resent),
            ..sample
        };
        growth
    }

    /// The connection's round-trip time from transport-wide feedback, if str0m has one.
    pub(crate) fn on_peer_rtt(&mut self, rtt: Option<Duration>) {
        if rtt.is_some() {
            self.peer_rtt = rtt;
        }
    }

    /// The report of the window in progress, up to the last evaluation (a participant leaving):
    /// `None` when no evaluation fell into it.
    pub(crate) fn finish(&self) -> Option<QualityReport> {
        let w = &self.window;
        (self.last_evaluation > w.start).then(|| w.report(self.last_evaluation))
    }

    /// The latest measurement.
    pub(crate) fn current(&self) -> Option<&ConnectionQuality> {
        self.current.as_ref()
    }

    /// Measures the time since the previous evaluation (call about once per `STATS_INTERVAL`).
    pub(crate) fn evaluate(&mut self, who: &ParticipantId, now: Instant, cx: Context) -> Evaluation {
        let elapsed = now.saturating_duration_since(self.last_evaluation);
        if elapsed.is_zero() {
            return Evaluation::default();
        }
        self.last_evaluation = now;
        if cx.publishing && !self.publishing {
            // Media cannot have arrived before there was anything to publish.
            self.upstream_media = now;
            self.flowing = false;
        }
        self.publishing = cx.publishing;

        let (mut up, mut down, mut up_packets) = (0u64, 0u64, 0u64);
        let (mut loss, mut jitter_ms, mut rtt) = (0f32, 0f32, self.peer_rtt);
        for ((flow, _, _), stream) in &mut self.streams {
            let s = stream.latest;
            let packets = s.packets.saturating_sub(stream.counted.0);
            let bytes = s.bytes.saturating_sub(stream.counted.1);
            stream.counted = (s.packets, s.bytes);
            match flow {
                Flow::Up => {
                    up += bytes;
                    up_packets += packets;
                }
                Flow::Down => down += bytes,
            }
            if packets == 0 {
                // A stream that carried nothing has nothing current to say.
                continue;
            }
            loss = loss.max(s.loss.unwrap_or(0.0));
            jitter_ms = jitter_ms.max(s.jitter_ms.unwrap_or(0.0));
            rtt = rtt.max(s.rtt);
        }
        if up_packets > 0 {
            self.upstream_media = now;
            self.flowing = true;
        }
        let expected_up_kbps = if self.flowing { cx.expected_up_kbps } else { 0 };

        let ms = elapsed.as_millis().max(1);
        let bitrate_kbps = u32::try_from(u128::from(up + down) * 8 / ms).unwrap_or(u32::MAX);
        let up_kbps = u32::try_from(u128::from(up) * 8 / ms).unwrap_or(u32::MAX);
        let silent = now.saturating_duration_since(cx.heard) >= LOST_AFTER
            || (self.publishing && now.saturating_duration_since(self.upstream_media) >= LOST_AFTER);
        let rtt_ms = rtt.map(|r| u32::try_from(r.as_millis()).unwrap_or(u32::MAX));
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rounded, clamped ≥ 0
        let jitter_ms = jitter_ms.max(0.0).round() as u32;
        let measured = if silent {
            Quality::Lost
        } else {
            classify(loss, jitter_ms, rtt_ms, up_kbps, expected_up_kbps)
        };
        let shown = match (self.current.as_ref().map(|c| c.quality), self.previous) {
            // Improving: only as far as the previous evaluation also measured.
            (Some(now_shown), Some(prev)) if measured < now_shown => measured.max(prev),
            _ => measured,
        };
        self.previous = Some(measured);
        let measurement = ConnectionQuality {
            participant: who.clone(),
            quality: shown,
            loss_permille: permille(loss),
            rtt_ms,
            jitter_ms,
            bitrate_kbps,
        };
        let changed = self.current.as_ref().is_none_or(|c| c.quality != shown);
        self.current = Some(measurement.clone());

        let w = &mut self.window;
        w.bytes_up += up;
        w.bytes_down += down;
        #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
        let weight = ms as f64;
        w.loss_ms += f64::from(loss) * weight;
        w.max_loss = w.max_loss.max(loss);
        if let Some(r) = rtt_ms {
            w.rtt_ms_sum += u64::from(r);
            w.rtt_samples += 1;
        }
        let report = (now.saturating_duration_since(w.start) >= REPORT_WINDOW).then(|| {
            let report = w.report(now);
            *w = Window::new(now);
            report
        });
        Evaluation {
            changed: changed.then_some(measurement),
            report,
        }
    }
}

/// The class of one measurement: the worst any single figure allows.
pub(crate) fn classify(loss: f32, jitter_ms: u32, rtt_ms: Option<u32>, up_kbps: u32, expected_up_kbps: u32) -> Quality {
    let within = |l: &Limits| {
        let share_ok = expected_up_kbps == 0 || {
            #[allow(clippy::cast_precision_loss)] // kbit/s far below 2^24
            let share = up_kbps as f32 / expected_up_kbps as f32;
            share >= l.bitrate_share
        };
        loss < l.loss && jitter_ms < l.jitter_ms && rtt_ms.is_none_or(|r| r < l.rtt_ms) && share_ok
    };
    if within(&EXCELLENT) {
        Quality::Excellent
    } else if within(&GOOD) {
        Quality::Good
    } else {
        Quality::Poor
    }
}

/// A 0.0 ..= 1.0 fraction in per mille.
fn permille(fraction: f32) -> u16 {
    // Clamped to 0..=1000 first, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let p = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u16;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn thresholds() {
        use Quality::*;
        assert_eq!(classify(0.0, 0, None, 0, 0), Excellent);
        assert_eq!(classify(0.019, 29, Some(199), 60, 100), Excellent);
        assert_eq!(classify(0.02, 0, None, 0, 0), Good, "2 % loss");
        assert_eq!(classify(0.0, 30, None, 0, 0), Good, "30 ms jitter");
        assert_eq!(classify(0.0, 0, Some(200), 0, 0), Good, "200 ms RTT");
        assert_eq!(classify(0.0, 0, None, 49, 100), Good, "under half the expected bitrate");
        assert_eq!(classify(0.079, 79, Some(499), 20, 100), Good);
        assert_eq!(classify(0.10, 0, None, 0, 0), Poor, "10 % loss");
        assert_eq!(classify(0.0, 80, None, 0, 0), Poor, "80 ms jitter");
        assert_eq!(classify(0.0, 0, Some(500), 0, 0), Poor, "500 ms RTT");
        assert_eq!(classify(0.0, 0, None, 19, 100), Poor, "a fifth of the expected bitrate");
    }

    fn id() -> ParticipantId {
        ParticipantId::parse("alice").unwrap()
    }

    fn cx(heard: Instant) -> Context {
        Context {
            heard,
            expected_up_kbps: EXPECTED_VIDEO_KBPS,
            publishing: true,
        }
    }

    /// One second of upstream video at `kbps` with RR loss `loss`.
    fn second(m: &mut QualityMeter, total: &mut StreamSample, kbps: u64, loss: f32) {
        total.bytes += kbps * 1000 / 8;
        total.packets += 100;
        total.loss = Some(loss);
        m.on_stream(Flow::Up, Mid::from("1"), None, *total);
    }

    #[test]
    fn loss_worsens_at_once_and_recovery_needs_two_good_seconds() {
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        let mut up = StreamSample::default();
        let mut t = t0;
        let mut step = |m: &mut QualityMeter, up: &mut StreamSample, loss: f32| {
            second(m, up, 800, loss);
            t += secs(1);
            m.evaluate(&id(), t, cx(t)).changed.map(|c| c.quality)
        };
        assert_eq!(
            step(&mut m, &mut up, 0.0),
            Some(Quality::Excellent),
            "the first measurement is news"
        );
        assert_eq!(step(&mut m, &mut up, 0.0), None, "no change, nothing to say");
        assert_eq!(step(&mut m, &mut up, 0.10), Some(Quality::Poor));
        assert_eq!(m.current().unwrap().loss_permille, 100);
        assert_eq!(m.current().unwrap().bitrate_kbps, 800);
        assert_eq!(step(&mut m, &mut up, 0.0), None, "one good second is not enough");
        assert_eq!(step(&mut m, &mut up, 0.0), Some(Quality::Excellent));
        assert_eq!(step(&mut m, &mut up, 0.03), Some(Quality::Good));
    }

    #[test]
    fn no_media_for_a_while_is_lost() {
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        let mut up = StreamSample::default();
        second(&mut m, &mut up, 800, 0.0);
        let e = m.evaluate(&id(), t0 + secs(1), cx(t0 + secs(1)));
        assert_eq!(e.changed.unwrap().quality, Quality::Excellent);
        // The publisher's media stops, though RTCP still arrives (heard stays current).
        let e = m.evaluate(&id(), t0 + secs(2), cx(t0 + secs(2)));
        assert_eq!(
            e.changed.map(|c| c.quality),
            Some(Quality::Poor),
            "0 kbit/s of 100 expected"
        );
        let e = m.evaluate(&id(), t0 + secs(3), cx(t0 + secs(3)));
        assert!(e.changed.is_none());
        let e = m.evaluate(&id(), t0 + secs(4), cx(t0 + secs(4)));
        assert_eq!(e.changed.map(|c| c.quality), Some(Quality::Lost), "3 s without media");
        // A subscriber-only participant that goes quiet altogether is lost as well.
        let mut m = QualityMeter::new(t0);
        let idle = Context {
            heard: t0,
            expected_up_kbps: 0,
            publishing: false,
        };
        assert_eq!(
            m.evaluate(&id(), t0 + secs(1), idle).changed.unwrap().quality,
            Quality::Excellent
        );
        assert!(m.evaluate(&id(), t0 + secs(2), idle).changed.is_none());
        assert_eq!(
            m.evaluate(&id(), t0 + secs(3), idle).changed.unwrap().quality,
            Quality::Lost
        );
    }

    #[test]
    fn the_bitrate_is_judged_once_media_flows() {
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        // Connected and publishing, but the first packets are still to come.
        let e = m.evaluate(&id(), t0 + secs(1), cx(t0 + secs(1)));
        assert_eq!(e.changed.unwrap().quality, Quality::Excellent);
        let mut up = StreamSample::default();
        second(&mut m, &mut up, 40, 0.0);
        let e = m.evaluate(&id(), t0 + secs(2), cx(t0 + secs(2)));
        assert_eq!(e.changed.unwrap().quality, Quality::Good, "40 of 100 kbit/s");
    }

    #[test]
    fn publishing_late_is_not_lost_media() {
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        let quiet = Context {
            heard: t0 + secs(10),
            expected_up_kbps: 0,
            publishing: false,
        };
        m.evaluate(&id(), t0 + secs(10), quiet);
        // Starts publishing at 10 s: not lost at 11 s although no media came for 11 s.
        let e = m.evaluate(&id(), t0 + secs(11), cx(t0 + secs(11)));
        assert_ne!(m.current().unwrap().quality, Quality::Lost, "{e:?}");
    }

    #[test]
    fn nack_and_resend_growth_is_counted_once() {
        let mut m = QualityMeter::new(Instant::now());
        let mid = Mid::from("0");
        let s = |nacks, resent| StreamSample {
            nacks,
            resent,
            ..Default::default()
        };
        assert_eq!(
            m.on_stream(Flow::Down, mid, None, s(3, 2)),
            Growth { nacks: 3, resent: 2 }
        );
        assert_eq!(
            m.on_stream(Flow::Down, mid, None, s(5, 2)),
            Growth { nacks: 2, resent: 0 }
        );
        // A resend estimate that dips (packets still queued) neither subtracts nor recounts.
        assert_eq!(m.on_stream(Flow::Down, mid, None, s(5, 1)), Growth::default());
        assert_eq!(
            m.on_stream(Flow::Down, mid, None, s(5, 4)),
            Growth { nacks: 0, resent: 2 }
        );
        // Another stream counts separately.
        assert_eq!(
            m.on_stream(Flow::Up, mid, None, s(1, 0)),
            Growth { nacks: 1, resent: 0 }
        );
    }

    #[test]
    fn reports_sum_a_window() {
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        let mut up = StreamSample::default();
        let mut reports = Vec::new();
        for n in 1..=10u64 {
            // Four clean seconds then one with 10 % loss, twice.
            second(&mut m, &mut up, 400, if n % 5 == 0 { 0.10 } else { 0.0 });
            let t = t0 + secs(n);
            reports.extend(m.evaluate(&id(), t, cx(t)).report);
        }
        assert_eq!(reports.len(), 2);
        for r in &reports {
            assert_eq!(r.window_ms, 5_000);
            assert_eq!(r.bytes_up, 5 * 400 * 1000 / 8);
            assert_eq!(r.bytes_down, 0);
            assert_eq!(r.loss_permille, 20, "one second in five at 10 %");
            assert_eq!(r.max_loss_permille, 100);
            assert_eq!(r.rtt_ms, None);
        }
    }

    #[test]
    fn a_leaving_participant_reports_its_partial_window() {
        let t0 = Instant::now();
        let mut m = QualityMeter::new(t0);
        assert!(m.finish().is_none(), "nothing measured yet");
        let mut up = StreamSample::default();
        for n in 1..=7u64 {
            second(&mut m, &mut up, 400, if n == 7 { 0.10 } else { 0.0 });
            let t = t0 + secs(n);
            m.evaluate(&id(), t, cx(t));
        }
        // One full window was reported at 5 s; the two seconds after it come with the leave.
        let r = m.finish().unwrap();
        assert_eq!(r.window_ms, 2_000);
        assert_eq!(r.bytes_up, 2 * 400 * 1000 / 8);
        assert_eq!((r.loss_permille, r.max_loss_permille), (50, 100));
    }
}
