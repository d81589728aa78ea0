//! `sfu --search`: the target's maximum load and its behaviour at 80 % of it.
//!
//! The `sfu` scenario runs in steps of rising subscribers per room (× `factor` each step, fresh
//! joins each time, `settle` apart) until the target saturates — loss above 0.1 %, its CPU at
//! 95 % of a core or more, p99 delay above `max_p99_ms`, or subscribers that never became ready
//! — or `max_subscribers` is reached. The maximum load is the highest forwarded packet rate any
//! step reached (at a saturated step, what got through); the 80 % window offers 80 % of that
//! rate (subscribers from the offered rate per subscriber) and is measured for `duration`.
//!
//! A step whose generator used ≥ 90 % of its core ends the search too: from there on the
//! figures measure the generator, so the maximum is only a lower bound (`generator_bound`).

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::report::print_table;
use crate::sfu::{self, SfuParams, SfuReport};

/// Loss (%) above which the target counts as saturated (the target at 80 % load).
pub const MAX_LOSS_PERCENT: f64 = 0.1;
/// Target CPU (% of its one core) from which it counts as saturated.
pub const MAX_SERVER_CPU_PERCENT: f64 = 95.0;

#[derive(Debug, Clone)]
pub struct SearchParams {
    /// The scenario; `subscribers` is the first step's and `duration` the 80 % window's.
    pub sfu: SfuParams,
    pub factor: f64,
    pub max_subscribers: usize,
    pub step_duration: Duration,
    /// Pause between steps, so the previous step's participants are gone.
    pub settle: Duration,
    pub max_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    pub target: String,
    pub steps: Vec<SfuReport>,
    /// Why the search stopped: `loss`, `server CPU`, `delay`, `not ready`, `generator` or
    /// `max subscribers`.
    pub stopped_by: String,
    /// The maximum is a lower bound: the generator, not the target, ran out of CPU.
    pub generator_bound: bool,
    pub max_forwarded_packets_per_s: f64,
    pub max_at_subscribers_per_room: usize,
    pub at_80_percent: SfuReport,
    /// Loss ≤ 0.1 % and p99 one-way delay ≤ 2 ms at 80 % of the maximum load.
    pub target_met: bool,
}

/// Subscribers per room that make the offered load `rate` forwarded packets per second: the
/// offered (expected) rate per subscriber of the steps, which loss at a saturated step does
/// not deflate.
fn subscribers_for(rate: f64, steps: &[SfuReport]) -> usize {
    let per_subscriber = steps
        .iter()
        .filter(|s| s.duration_s > 0.0 && s.subscribers_per_room > 0 && s.expected_packets > 0)
        .map(|s| s.expected_packets as f64 / s.duration_s / (s.rooms * s.subscribers_per_room) as f64)
        .next();
    match per_subscriber {
        Some(p) => ((rate / p).floor() as usize).max(1),
        None => 1,
    }
}

/// Why a step counts as saturated, if it does.
fn saturation(r: &SfuReport, max_p99_ms: f64) -> Option<&'static str> {
    if r.ready < r.participants {
        Some("not ready")
    } else if r.loss_percent > MAX_LOSS_PERCENT {
        Some("loss")
    } else if r.server_cpu_percent.is_some_and(|c| c >= MAX_SERVER_CPU_PERCENT) {
        Some("server CPU")
    } else if r.delay_ms.p99 > max_p99_ms {
        Some("delay")
    } else {
        None
    }
}

/// Runs the search; call it inside a `LocalSet` on a current-thread runtime.
pub async fn run(params: SearchParams) -> Result<SearchReport> {
    let mut steps: Vec<SfuReport> = Vec::new();
    let mut subscribers = params.sfu.subscribers.max(1);
    let stopped_by = loop {
        let step = sfu::run(SfuParams {
            subscribers,
            duration: params.step_duration,
            ..params.sfu.clone()
        })
        .await?;
        step.print();
        let saturated = saturation(&step, params.max_p99_ms);
        let generator = step.generator_bound;
        steps.push(step);
        tokio::time::sleep(params.settle).await;
        if let Some(why) = saturated {
            break why;
        }
        if generator {
            break "generator";
        }
        if subscribers >= params.max_subscribers {
            break "max subscribers";
        }
        let next = (subscribers as f64 * params.factor).ceil() as usize;
        subscribers = next.clamp(subscribers + 1, params.max_subscribers);
    };
    let best = steps
        .iter()
        .max_by(|a, b| a.forwarded_packets_per_s.total_cmp(&b.forwarded_packets_per_s))
        .map_or((0.0, 1), |s| (s.forwarded_packets_per_s, s.subscribers_per_room));
    let at_80 = subscribers_for(0.8 * best.0, &steps);
    let at_80_percent = sfu::run(SfuParams {
        subscribers: at_80,
        ..params.sfu.clone()
    })
    .await?;
    at_80_percent.print();
    let target_met = at_80_percent.loss_percent <= MAX_LOSS_PERCENT && at_80_percent.delay_ms.p99 <= 2.0;
    let report = SearchReport {
        target: params.sfu.target.name().to_owned(),
        generator_bound: stopped_by == "generator" || steps.iter().any(|s| s.generator_bound),
        stopped_by: stopped_by.to_owned(),
        steps,
        max_forwarded_packets_per_s: best.0,
        max_at_subscribers_per_room: best.1,
        at_80_percent,
        target_met,
    };
    report.print();
    Ok(report)
}

impl SearchReport {
    pub fn print(&self) {
        let mut rows: Vec<(String, String)> = self
            .steps
            .iter()
            .map(|s| {
                (
                    format!("{} subscribers/room", s.subscribers_per_room),
                    format!(
                        "{:.0} pkt/s, loss {:.3} %, p99 {:.1} ms, server {}, generator {:.0} %",
                        s.forwarded_packets_per_s,
                        s.loss_percent,
                        s.delay_ms.p99,
                        s.server_cpu_percent.map_or("-".to_owned(), |c| format!("{c:.0} %")),
                        s.generator_cpu_percent
                    ),
                )
            })
            .collect();
        let a = &self.at_80_percent;
        rows.push(("stopped by".to_owned(), self.stopped_by.clone()));
        rows.push((
            "maximum".to_owned(),
            format!(
                "{:.0} forwarded pkt/s at {} subscribers/room{}",
                self.max_forwarded_packets_per_s,
                self.max_at_subscribers_per_room,
                if self.generator_bound {
                    " (lower bound: the generator saturated)"
                } else {
                    ""
                }
            ),
        ));
        rows.push((
            "at 80 %".to_owned(),
            format!(
                "{} subscribers/room, {:.0} pkt/s, loss {:.3} %, delay p50 {:.2} / p99 {:.2} ms, {} CPU-µs/pkt — target {}",
                a.subscribers_per_room,
                a.forwarded_packets_per_s,
                a.loss_percent,
                a.delay_ms.p50,
                a.delay_ms.p99,
                a.server_cpu_us_per_packet.map_or("-".to_owned(), |c| format!("{c:.2}")),
                if self.target_met { "met" } else { "not met" }
            ),
        ));
        let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        print_table(&format!("sfu search against {}", self.target), &rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Percentiles;

    fn step(loss: f64, cpu: Option<f64>, p99: f64, ready: usize) -> SfuReport {
        SfuReport {
            target: "t".to_owned(),
            rooms: 1,
            publishers_per_room: 1,
            subscribers_per_room: 10,
            duration_s: 1.0,
            ready,
            participants: 11,
            unit: "packets",
            expected_packets: 1000,
            delivered_packets: 1000,
            loss_percent: loss,
            video_expected: 0,
            video_delivered: 0,
            forwarded_packets: 1000,
            forwarded_packets_per_s: 1000.0,
            delay_ms: Percentiles {
                count: 1,
                p50: 1.0,
                p99,
                max: p99,
            },
            join_signaled_ms: Percentiles::default(),
            join_media_ms: Percentiles::default(),
            server_cpu_s: None,
            server_cpu_percent: cpu,
            server_cpu_us_per_packet: None,
            generator_cpu_percent: 10.0,
            generator_bound: false,
            server_rss_kib_before: None,
            server_rss_kib_during: None,
            rss_kib_per_subscriber: None,
            rss_kib_per_subscribed_track: None,
            client_send_drops: 0,
            errors: Vec::new(),
        }
    }

    #[test]
    fn the_80_percent_window_offers_80_percent_of_the_best_rate() {
        // 10 subscribers offered 1000 pkt/s: 100 per subscriber; 80 % of 2000 pkt/s is 16.
        let steps = vec![step(0.0, None, 1.0, 11)];
        assert_eq!(subscribers_for(1600.0, &steps), 16);
        assert_eq!(subscribers_for(10.0, &steps), 1);
        assert_eq!(subscribers_for(1600.0, &[]), 1);
    }

    #[test]
    fn saturation_is_loss_cpu_delay_or_joins() {
        assert_eq!(saturation(&step(0.1, Some(94.0), 49.0, 11), 50.0), None);
        assert_eq!(saturation(&step(0.11, None, 1.0, 11), 50.0), Some("loss"));
        assert_eq!(saturation(&step(0.0, Some(95.0), 1.0, 11), 50.0), Some("server CPU"));
        assert_eq!(saturation(&step(0.0, None, 51.0, 11), 50.0), Some("delay"));
        assert_eq!(saturation(&step(0.0, None, 1.0, 10), 50.0), Some("not ready"));
    }
}
