//! Sharing one subscriber's estimated bandwidth among the tracks it receives.
//!
//! Audio is served first and never cut: it is cheap and losing it breaks a meeting. Video then
//! gets layers in priority order (screen share before cameras, larger tiles before smaller): first
//! every video track its lowest layer while the budget lasts (tracks that do not fit are paused,
//! lowest priority first), then each track in turn moves up as far as its wanted layer and the
//! remaining budget allow (after a failed step-up, one layer per step-up, the next only once the
//! estimate has held with that one's traffic: a larger layer's keyframe burst is what most often
//! made a step-up after congestion fail). With no estimate (BWE not negotiated yet) everyone gets
//! what they want.
//!
//! `allocate` is pure and synchronous: the engine calls it whenever the estimate, a subscriber's
//! settings or a layer's bitrate changes. Stepping down follows the estimate at once; stepping up
//! is up to `StepUp`, one per subscriber (virtual time): a GCC-style estimate overshoots while it
//! probes and then collapses on a capped link, so a layer above the current one only counts the
//! least budget seen over a hold time; a step-up undone within seconds doubles that hold, and for
//! that long there is no step-up at all and the estimator is not asked to probe (or pad towards
//! the next step, `Allocation::next`); the hold halves again for every two holds without a failure,
//! so a link that recovers is trusted again within a bounded time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::layers::LayerId;

/// A track's lowest layer is kept while it costs up to this share of what is left (percent):
/// the estimate tracks what is being sent, so a stream slightly above it is no sign of
/// congestion; real congestion drops the estimate well below. Higher layers must fit exactly.
const PAUSE_TOLERANCE_PERCENT: u64 = 150;

/// How long the estimate must have allowed a higher layer before a track steps up to it, at
/// first and after a step-up that held. This is what keeps bitrates wobbling around the budget
/// from switching layers (and asking for keyframes) every second: keeping a layer needs the
/// budget now, going above it the budget held over this time.
const BASE_HOLD: Duration = Duration::from_secs(3);

/// The longest hold, however often step-ups fail.
const MAX_HOLD: Duration = Duration::from_secs(30);

/// A step-down this soon after a step-up means the step-up failed (the estimate had overshot);
/// a step-up that lasts this long succeeded.
const FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// A probe (padding towards the next step) that brings no step-up within the hold time plus this
/// has failed.
const PROBE_GRACE: Duration = Duration::from_secs(3);

/// The pause after a failed probe, at first and after a step-up; it doubles with each failed
/// probe up to `MAX_REST`. The pause also lets the next probe start afresh: str0m probes when the
/// desired bitrate rises.
const BASE_REST: Duration = Duration::from_secs(2);
const MAX_REST: Duration = Duration::from_secs(16);

/// One track a subscriber receives.
#[derive(Debug, Clone)]
pub(crate) struct Demand<K> {
    pub(crate) key: K,
    pub(crate) audio: bool,
    /// Whether congestion may pause it. A track without simulcast has no lower layer to fall
    /// back to, and the estimate alone (which follows what is sent) proved too eager a reason to
    /// cut it: it keeps its one layer, and its cost still comes off the budget first.
    pub(crate) pausable: bool,
    /// Higher goes first.
    pub(crate) priority: u64,
    /// The layers it may get, lowest first, with their cost in bit/s; the last is the one the
    /// subscriber wants. Empty: it wants nothing (tile hidden, or no layer flowing).
    pub(crate) layers: Vec<(LayerId, u64)>,
    /// The layer it has now, if any: keeping it needs the budget now, going above it the held one.
    pub(crate) current: Option<LayerId>,
}

impl<K> Demand<K> {
    /// Where the current layer is among `layers`, if it is one of them (not when it stopped
    /// flowing or is above what is wanted now).
    fn current_position(&self) -> Option<usize> {
        self.current
            .and_then(|c| self.layers.iter().position(|(id, _)| *id == c))
    }
}

/// What one subscriber may spend, in bit/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// From the estimate now: what keeping layers (and the lowest ones) may use.
    pub(crate) now: u64,
    /// The least the estimate allowed over the hold time (at most `now`): what going above the
    /// layer a track has may count on; 0 for the hold time after a failed step-up.
    pub(crate) held: u64,
    /// Since a failed step-up (until one lasts): one layer per step-up, so the next layer's
    /// traffic tests the link before a larger one's keyframe burst does.
    pub(crate) cautious: bool,
}

/// The outcome for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation<K> {
    /// The layer each demand gets, in the order of the demands (`None`: paused).
    pub(crate) layers: Vec<(K, Option<LayerId>)>,
    /// Bit/s of what was allocated.
    pub(crate) used: u64,
    /// Bit/s after the next step up (the first track by priority below its wanted layer, one
    /// layer up): what the estimate must hold for it, and what padding
    /// may fill while probing, so the estimate grows on traffic actually delivered rather than on
    /// a probe's burst. `used` when nothing more is wanted.
    pub(crate) next: u64,
    /// Bit/s of everything wanted: what the estimator should try to reach.
    pub(crate) desired: u64,
}

/// Distributes `budget` (`None`: unlimited) over `demands`.
pub(crate) fn allocate<K: Clone>(budget: Option<Budget>, demands: &[Demand<K>]) -> Allocation<K> {
    let desired = demands.iter().filter_map(|d| d.layers.last()).map(|(_, c)| c).sum();
    let mut chosen: Vec<Option<usize>> = vec![None; demands.len()];
    let Some(Budget {
        now: budget,
        held,
        cautious,
    }) = budget
    else {
        let layers = demands
            .iter()
            .map(|d| (d.key.clone(), d.layers.last().map(|(id, _)| *id)))
            .collect();
        return Allocation {
            layers,
            used: desired,
            next: desired,
            desired,
        };
    };
    // What step-ups must leave over: the part of the budget the estimate has not held.
    let unheld = budget.saturating_sub(held);
    let mut left = budget;
    for (i, d) in demands.iter().enumerate().filter(|(_, d)| d.audio) {
        if let Some((_, cost)) = d.layers.first() {
            chosen[i] = Some(0);
            left = left.saturating_sub(*cost);
        }
    }
    let mut video: Vec<usize> = (0..demands.len()).filter(|i| !demands[*i].audio).collect();
    video.sort_by_key(|i| std::cmp::Reverse(demands[*i].priority));
    for &i in &video {
        if let Some((_, cost)) = demands[i].layers.first()
            && (!demands[i].pausable || *cost <= left.saturating_mul(PAUSE_TOLERANCE_PERCENT) / 100)
        {
            chosen[i] = Some(0);
            left = left.saturating_sub(*cost);
        }
    }
    for &i in &video {
        let Some(base) = chosen[i] else { continue };
        let layers = &demands[i].layers;
        let have = layers[base].1;
        let now_at = demands[i].current_position();
        let fits = |j: usize| {
            let extra = layers[j].1.saturating_sub(have);
            match now_at {
                Some(n) if j <= n => extra <= left,
                Some(n) if cautious && j > n + 1 => false,
                _ => extra <= left.saturating_sub(unheld),
            }
        };
        if let Some(best) = (base + 1..layers.len()).rev().find(|j| fits(*j)) {
            left -= layers[best].1.saturating_sub(have);
            chosen[i] = Some(best);
        }
    }
    let used = budget - left.min(budget);
    let step = video.iter().find_map(|&i| {
        let layers = &demands[i].layers;
        let (have, to) = match chosen[i] {
            Some(j) => (layers[j].1, layers.get(j + 1)?.1),
            None => (0, layers.first()?.1),
        };
        Some(to.saturating_sub(have))
    });
    let next = used + step.unwrap_or(0);
    let layers = demands
        .iter()
        .zip(&chosen)
        .map(|(d, c)| (d.key.clone(), c.map(|j| d.layers[j].0)))
        .collect();
    Allocation {
        layers,
        used,
        next,
        desired,
    }
}

/// Step-up hysteresis for one subscriber, in virtual time: remembers the budgets the estimate
/// gave over the hold time (`budget`), watches what each allocation did to the layers
/// (`observe`) and says whether the estimator should probe for more (`probe`).
///
/// Jitsi's bitrate controller and LiveKit's stream allocator do the same in spirit: trust a
/// rising estimate only once it has lasted, and probe less after a probe that did not hold.
#[derive(Debug)]
pub(crate) struct StepUp {
    /// `(since, least)`: `least` is the least budget given from `since` on. Both grow from
    /// front to back; the front is the least budget in force over the hold time.
    budgets: VecDeque<(Instant, u64)>,
    /// How long the estimate must have allowed a higher layer.
    hold: Duration,
    /// The last step-up, while it may still fail.
    stepped_up: Option<Instant>,
    /// After a failed step-up, no step-up until then.
    steady_until: Option<Instant>,
    /// When the last step-up failed, or the hold last halved since: two holds after it, the
    /// hold halves.
    failed: Option<Instant>,
    /// After a failed step-up or probe, no probing until then.
    quiet_until: Option<Instant>,
    /// Since when the estimator has been probing for the next step.
    probe_since: Option<Instant>,
    /// The pause after the next failed probe.
    rest: Duration,
}

impl Default for StepUp {
    fn default() -> Self {
        StepUp {
            budgets: VecDeque::new(),
            hold: BASE_HOLD,
            stepped_up: None,
            steady_until: None,
            failed: None,
            quiet_until: None,
            probe_since: None,
            rest: BASE_REST,
        }
    }
}

impl StepUp {
    /// The budget to allocate with at `now`, given the budget the estimate allows now (`None`:
    /// no estimate yet, no limit).
    pub(crate) fn budget(&mut self, now: Instant, budget: Option<u64>) -> Option<Budget> {
        let budget = budget?;
        // A smaller budget replaces the larger ones before it (from their time on it is the
        // least); the same budget again changes nothing.
        let mut since = now;
        while let Some(&(t, b)) = self.budgets.back()
            && b > budget
        {
            since = t;
            self.budgets.pop_back();
        }
        if self.budgets.back().is_none_or(|(_, b)| *b < budget) {
            self.budgets.push_back((since, budget));
        }
        // Once the next entry began before the hold time, the front is out of the window.
        let start = now.checked_sub(self.hold);
        while self.budgets.len() > 1 && start.is_some_and(|s| self.budgets[1].0 <= s) {
            self.budgets.pop_front();
        }
        // Two holds without a failure halve the hold (the link may have recovered; a cap that
        // is still there costs one more failed step-up).
        while let Some(t) = self.failed
            && self.hold > BASE_HOLD
            && now.saturating_duration_since(t) >= self.hold * 2
        {
            self.failed = Some(t + self.hold * 2);
            self.hold = (self.hold / 2).max(BASE_HOLD);
        }
        let held = if self.steady_until.is_some_and(|t| now < t) {
            0
        } else {
            self.budgets.front().map_or(budget, |(_, b)| *b)
        };
        Some(Budget {
            now: budget,
            held,
            cautious: self.failed.is_some(),
        })
    }

    /// Takes note of `allocation`, made at `now` for `demands`: a step-down soon after a
    /// step-up doubles the hold and stops step-ups and probing for that long; a step-up that
    /// lasted resets it.
    pub(crate) fn observe<K>(&mut self, now: Instant, demands: &[Demand<K>], allocation: &Allocation<K>) {
        let mut up = false;
        let mut down = false;
        for (d, (_, chosen)) in demands.iter().zip(&allocation.layers) {
            let at = chosen.and_then(|c| d.layers.iter().position(|(id, _)| *id == c));
            match (d.current_position(), at) {
                (Some(n), Some(j)) if j > n => up = true,
                (None, Some(j)) if j > 0 && d.current.is_none() => up = true,
                (Some(n), Some(j)) if j < n => down = true,
                (Some(_), None) => down = true,
                _ => {}
            }
        }
        if let Some(t) = self.stepped_up {
            if down && now.saturating_duration_since(t) < FAILURE_WINDOW {
                self.hold = (self.hold * 2).min(MAX_HOLD);
                self.quiet_until = Some(now + self.hold);
                self.steady_until = self.quiet_until;
                self.failed = Some(now);
                self.stepped_up = None;
                self.probe_since = None;
                tracing::debug!(hold_ms = self.hold.as_millis(), "step-up failed");
            } else if now.saturating_duration_since(t) >= FAILURE_WINDOW {
                self.hold = BASE_HOLD;
                self.rest = BASE_REST;
                self.stepped_up = None;
                self.steady_until = None;
                self.failed = None;
            }
        }
        if up {
            self.stepped_up = Some(now);
            if self.failed.is_some() {
                // Cautious: the next step up waits for the estimate to hold with this one's traffic.
                self.steady_until = Some(now + self.hold);
            }
            self.probe_since = None;
        }
    }

    /// Whether the estimator should probe (and pad) towards the next step now, given whether the
    /// subscriber wants more than it gets: not for a while after a failed step-up, so probing
    /// does not itself congest a link that just proved too small, nor after a probe that brought
    /// no step-up within the hold time plus `PROBE_GRACE` (then for a pause that doubles with
    /// each such probe). With nothing more wanted there is nothing to hold back.
    pub(crate) fn probe(&mut self, now: Instant, wants_more: bool) -> bool {
        if self.quiet_until.is_some_and(|t| now < t) {
            return false;
        }
        if !wants_more {
            self.probe_since = None;
            return true;
        }
        let since = *self.probe_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.hold + PROBE_GRACE {
            tracing::debug!(rest_ms = self.rest.as_millis(), "probe failed");
            self.quiet_until = Some(now + self.rest);
            self.rest = (self.rest * 2).min(MAX_REST);
            self.probe_since = None;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use str0m::media::Rid;

    use super::*;

    fn rid(s: &str) -> LayerId {
        LayerId(Some(Rid::from(s)))
    }

    fn camera(key: u32, priority: u64) -> Demand<u32> {
        Demand {
            key,
            audio: false,
            pausable: true,
            priority,
            layers: vec![(rid("q"), 150_000), (rid("h"), 500_000), (rid("f"), 1_500_000)],
            current: None,
        }
    }

    fn audio(key: u32) -> Demand<u32> {
        Demand {
            key,
            audio: true,
            pausable: false,
            priority: 0,
            layers: vec![(LayerId(None), 40_000)],
            current: None,
        }
    }

    fn picks(a: &Allocation<u32>) -> Vec<Option<String>> {
        a.layers
            .iter()
            .map(|(_, l)| l.map(|l| l.0.map_or_else(|| "-".to_owned(), |r| r.to_string())))
            .collect()
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    /// A budget the estimate has held for long.
    fn steady(budget: u64) -> Option<Budget> {
        Some(Budget {
            now: budget,
            held: budget,
            cautious: false,
        })
    }

    /// One subscriber receiving audio and a camera it wants at `f`, driven through estimates in
    /// virtual time as the engine does: each estimate goes through `StepUp`, the allocation
    /// becomes the current layers.
    struct Subscriber {
        t0: Instant,
        step_up: StepUp,
        demands: Vec<Demand<u32>>,
        /// (ms, camera layer) at every change.
        changes: Vec<(u64, Option<String>)>,
    }

    impl Subscriber {
        fn new() -> Self {
            Subscriber {
                t0: Instant::now(),
                step_up: StepUp::default(),
                demands: vec![audio(1), camera(2, 1)],
                changes: Vec::new(),
            }
        }

        /// An estimate (as budget) at `ms`; returns whether the estimator should probe.
        fn estimate(&mut self, ms: u64, budget: u64) -> bool {
            let now = self.t0 + Duration::from_millis(ms);
            let budget = self.step_up.budget(now, Some(budget));
            let a = allocate(budget, &self.demands);
            self.step_up.observe(now, &self.demands, &a);
            let camera = picks(&a)[1].clone();
            if self.changes.last().is_none_or(|(_, l)| *l != camera) {
                self.changes.push((ms, camera));
            }
            for (d, (_, l)) in self.demands.iter_mut().zip(&a.layers) {
                d.current = *l;
            }
            self.step_up.probe(now, a.next > a.used)
        }

        /// Estimates every 250 ms from `from` to before `to` (ms), from `budget(ms)`.
        fn run(&mut self, from: u64, to: u64, budget: impl Fn(u64) -> u64) {
            for ms in (from..to).step_by(250) {
                self.estimate(ms, budget(ms));
            }
        }

        fn camera(&self) -> Option<String> {
            self.changes.last().and_then(|(_, l)| l.clone())
        }

        /// Layer changes from `ms` on.
        fn changes_since(&self, ms: u64) -> Vec<(u64, Option<String>)> {
            self.changes.iter().filter(|(t, _)| *t >= ms).cloned().collect()
        }
    }

    /// A 250 kbit/s link: the estimate hovers around it.
    const CAPPED: u64 = 230_000;
    /// Plenty for `f`.
    const OPEN: u64 = 2_500_000;

    #[test]
    fn no_estimate_gives_everyone_what_they_want() {
        let a = allocate(None, &[audio(1), camera(2, 1)]);
        assert_eq!(picks(&a), [some("-"), some("f")]);
        assert_eq!(a.desired, 1_540_000);
    }

    #[test]
    fn steps_down_then_pauses_video_before_audio_and_back_up() {
        let demands = [audio(1), camera(2, 10), camera(3, 5)];
        // Plenty: both cameras at full.
        assert_eq!(
            picks(&allocate(steady(5_000_000), &demands)),
            [some("-"), some("f"), some("f")]
        );
        // Congestion: the larger tile keeps the higher layer.
        assert_eq!(
            picks(&allocate(steady(2_000_000), &demands)),
            [some("-"), some("f"), some("q")]
        );
        assert_eq!(
            picks(&allocate(steady(800_000), &demands)),
            [some("-"), some("h"), some("q")]
        );
        assert_eq!(
            picks(&allocate(steady(340_000), &demands)),
            [some("-"), some("q"), some("q")]
        );
        // The lower-priority camera is paused first, then the other; audio stays.
        assert_eq!(
            picks(&allocate(steady(200_000), &demands)),
            [some("-"), some("q"), None]
        );
        // A lowest layer somewhat above the estimate is kept; well above, it is paused.
        assert_eq!(
            picks(&allocate(steady(145_000), &demands)),
            [some("-"), some("q"), None]
        );
        assert_eq!(picks(&allocate(steady(130_000), &demands)), [some("-"), None, None]);
        assert_eq!(picks(&allocate(steady(0), &demands)), [some("-"), None, None]);
        // Capacity returns: back up.
        let a = allocate(steady(3_400_000), &demands);
        assert_eq!(picks(&a), [some("-"), some("f"), some("f")]);
        assert_eq!(a.used, 3_040_000);
        assert_eq!(a.desired, 3_040_000);
    }

    #[test]
    fn screen_share_outranks_cameras_and_wanted_layer_caps() {
        let mut screen = camera(9, 1 << 40);
        screen.layers.truncate(2);
        let mut small = camera(2, 1_000);
        small.layers.truncate(1);
        let demands = [camera(1, 500_000), screen, small];
        assert_eq!(
            picks(&allocate(steady(900_000), &demands)),
            [some("q"), some("h"), some("q")]
        );
        // Nothing wanted (hidden tile): nothing sent.
        let hidden = Demand {
            layers: Vec::new(),
            ..camera(4, 1)
        };
        let a = allocate(steady(10_000_000), &[hidden]);
        assert_eq!(picks(&a), [None]);
        assert_eq!(a.desired, 0);
    }

    #[test]
    fn keeping_counts_the_budget_now_stepping_up_the_held_one() {
        let at = |current: Option<&str>| Demand {
            current: current.map(rid),
            ..camera(1, 1)
        };
        let b = |now, held| {
            Some(Budget {
                now,
                held,
                cautious: false,
            })
        };
        // f needs 1.5 Mbit/s: kept on the budget now, stepped up to only on the held one.
        assert_eq!(picks(&allocate(b(1_500_000, 600_000), &[at(Some("f"))])), [some("f")]);
        assert_eq!(picks(&allocate(b(1_500_000, 600_000), &[at(Some("h"))])), [some("h")]);
        assert_eq!(picks(&allocate(b(1_500_000, 1_500_000), &[at(Some("h"))])), [some("f")]);
        // A new track starts at the lowest layer unless the held budget allows more.
        assert_eq!(picks(&allocate(b(1_500_000, 400_000), &[at(None)])), [some("q")]);
        assert_eq!(picks(&allocate(b(1_500_000, 500_000), &[at(None)])), [some("h")]);
    }

    #[test]
    fn next_is_one_step_up_for_the_first_track_that_wants_more() {
        let demands = [audio(1), camera(2, 10), camera(3, 5)];
        // Both on q: the next step is the larger tile's h.
        let a = allocate(steady(400_000), &demands);
        assert_eq!(picks(&a), [some("-"), some("q"), some("q")]);
        assert_eq!(a.next, a.used + 350_000);
        // The larger tile has all it wants: the other one's next layer.
        let a = allocate(steady(2_000_000), &demands);
        assert_eq!(picks(&a), [some("-"), some("f"), some("q")]);
        assert_eq!(a.next, a.used + 350_000);
        // A paused track's next step is its lowest layer.
        let mut small = camera(3, 5);
        small.layers.truncate(1);
        let a = allocate(steady(200_000), &[audio(1), camera(2, 10), small.clone()]);
        assert_eq!(picks(&a), [some("-"), some("q"), None]);
        assert_eq!(a.next, a.used + 350_000);
        let a = allocate(steady(1_000_000), &[audio(1), small.clone()]);
        assert_eq!(a.next, a.used);
        let a = allocate(steady(100_000), &[audio(1), small]);
        assert_eq!(picks(&a), [some("-"), None]);
        assert_eq!(a.next, a.used + 150_000);
        // Nothing more wanted: what is used.
        let a = allocate(steady(5_000_000), &demands);
        assert_eq!(a.next, a.used);
        assert_eq!(allocate(None, &demands).next, 3_040_000);
    }

    #[test]
    fn a_track_without_simulcast_keeps_its_one_layer() {
        let single = Demand {
            key: 5,
            audio: false,
            pausable: false,
            priority: 10,
            layers: vec![(LayerId(None), 800_000)],
            current: None,
        };
        let demands = [audio(1), single, camera(2, 1)];
        assert_eq!(
            picks(&allocate(steady(400_000), &demands)),
            [some("-"), some("-"), None]
        );
        // Others then get what is left, which may be nothing.
        assert_eq!(
            picks(&allocate(steady(1_200_000), &demands)),
            [some("-"), some("-"), some("q")]
        );
    }

    #[test]
    fn a_probe_that_overshoots_briefly_does_not_step_up() {
        let mut s = Subscriber::new();
        s.run(0, 10_000, |_| CAPPED);
        assert_eq!(s.camera(), some("q"));
        // A probe lifts the estimate for 1.5 s (enough for f), then it falls back, again and
        // again: no step-up, no switch at all.
        s.run(10_000, 60_000, |ms| if ms % 5_000 < 1_500 { OPEN } else { CAPPED });
        assert!(s.changes_since(10_000).is_empty(), "{:?}", s.changes);
    }

    #[test]
    fn a_sustained_rise_steps_up_after_the_hold() {
        let mut s = Subscriber::new();
        s.run(0, 10_000, |_| CAPPED);
        s.run(10_000, 20_000, |_| OPEN);
        // Straight to the wanted layer once the estimate has held for 3 s, not before.
        assert_eq!(s.changes_since(10_000), [(13_000, some("f"))]);
    }

    #[test]
    fn stepping_down_is_immediate() {
        let mut s = Subscriber::new();
        s.run(0, 10_000, |_| OPEN);
        assert_eq!(s.camera(), some("f"));
        s.run(10_000, 12_000, |_| 700_000);
        s.run(12_000, 14_000, |_| CAPPED);
        assert_eq!(s.changes_since(10_000), [(10_000, some("h")), (12_000, some("q"))]);
    }

    #[test]
    fn a_failed_step_up_doubles_the_hold_and_pauses_step_ups_and_probing() {
        let mut s = Subscriber::new();
        s.run(0, 10_000, |_| CAPPED);
        assert!(s.estimate(10_000, CAPPED));
        // The estimate rises for 4 s: up after 3 s; then it collapses: down at once.
        s.run(10_000, 14_000, |_| OPEN);
        s.run(14_000, 15_000, |_| CAPPED);
        assert_eq!(s.changes_since(10_000), [(13_000, some("f")), (14_000, some("q"))]);
        assert_eq!(s.step_up.hold, Duration::from_secs(6));
        // No probing for the new hold time, and no step-up either, even when a layer's cost
        // falls under the budget: what looked affordable a moment ago just failed.
        s.demands[1].layers[1].1 = 180_000;
        assert!(!s.estimate(15_000, CAPPED));
        assert!(!s.estimate(19_750, CAPPED));
        assert!(s.changes_since(15_000).is_empty(), "{:?}", s.changes);
        s.demands[1].layers[1].1 = 500_000;
        assert!(s.estimate(20_000, CAPPED));
        // The next rise must last 6 s; 5 s is not enough.
        s.run(20_000, 25_000, |_| OPEN);
        s.run(25_000, 30_000, |_| CAPPED);
        assert!(s.changes_since(15_000).is_empty(), "{:?}", s.changes);
        // Two holds (12 s) after the failure the hold is back to 3 s.
        assert_eq!(s.step_up.hold, BASE_HOLD);
        s.run(30_000, 34_000, |_| OPEN);
        s.run(34_000, 35_000, |_| CAPPED);
        assert_eq!(s.changes_since(30_000), [(33_000, some("h")), (34_000, some("q"))]);
        // Failures back to back keep doubling the hold up to the cap: each step-up comes once
        // the estimate has held for the hold.
        let mut failed = 34_000;
        for hold in [6_000, 12_000, 24_000, 30_000] {
            assert_eq!(s.step_up.hold.as_millis(), hold as u128);
            let up = failed + 1_000 + hold;
            s.run(failed + 1_000, up + 1_000, |_| OPEN);
            s.run(up + 1_000, up + 2_000, |_| CAPPED);
            assert_eq!(s.changes_since(failed + 1), [(up, some("h")), (up + 1_000, some("q"))]);
            failed = up + 1_000;
        }
        assert_eq!(s.step_up.hold, MAX_HOLD);
        // A step-up that lasts resets the hold, and the next layer follows.
        s.run(failed + 1_000, failed + 45_000, |_| OPEN);
        assert_eq!(
            s.changes_since(failed + 1),
            [(failed + 31_000, some("h")), (failed + 41_250, some("f"))]
        );
        assert_eq!(s.step_up.hold, BASE_HOLD);
    }

    #[test]
    fn the_hold_halves_for_every_two_holds_without_a_failure() {
        let mut s = Subscriber::new();
        s.step_up.hold = MAX_HOLD;
        s.step_up.failed = Some(s.t0);
        let hold_at = |s: &mut Subscriber, ms| {
            s.estimate(ms, CAPPED);
            s.step_up.hold.as_millis()
        };
        assert_eq!(hold_at(&mut s, 59_750), 30_000);
        assert_eq!(hold_at(&mut s, 60_000), 15_000);
        assert_eq!(hold_at(&mut s, 89_750), 15_000);
        assert_eq!(hold_at(&mut s, 90_000), 7_500);
        assert_eq!(hold_at(&mut s, 105_000), 3_750);
        assert_eq!(hold_at(&mut s, 112_500), 3_000);
        assert_eq!(hold_at(&mut s, 500_000), 3_000);
        // So a lifted cap is trusted after the base hold again.
        s.run(500_000, 510_000, |_| OPEN);
        assert_eq!(s.changes_since(500_000), [(503_000, some("h")), (506_000, some("f"))]);
    }

    #[test]
    fn a_probe_without_a_step_up_pauses_probing_for_longer_each_time() {
        let mut s = Subscriber::new();
        // Capped: each probe lasts the hold plus the grace (6 s), then a pause of 2, 4, 8 s.
        let mut pauses = Vec::new();
        let mut probing = true;
        for ms in (0..36_000).step_by(250) {
            let now = s.estimate(ms, CAPPED);
            if now != probing {
                pauses.push((ms, now));
                probing = now;
            }
        }
        assert_eq!(
            pauses,
            [
                (6_000, false),
                (8_000, true),
                (14_000, false),
                (18_000, true),
                (24_000, false),
                (32_000, true)
            ]
        );
        // A step-up that holds resets the pause; nothing more wanted: nothing held back.
        s.run(40_000, 70_000, |_| OPEN);
        assert_eq!(s.camera(), some("f"));
        assert_eq!(s.step_up.rest, BASE_REST);
        assert!(s.estimate(70_000, OPEN));
    }

    #[test]
    fn recovery_after_a_cap_is_lifted_is_bounded() {
        let mut s = Subscriber::new();
        s.run(0, 10_000, |_| OPEN);
        assert_eq!(s.camera(), some("f"));
        // Capped for a minute, the estimate overshooting now and then for 4 s: a failed step-up
        // (up, and down a second later) at most every 20 s, as the hold halves after 12 s
        // without a failure and the next overshoot outlasts it.
        s.run(10_000, 70_000, |ms| {
            if ms % 10_000 < 4_000 && ms > 20_000 {
                OPEN
            } else {
                CAPPED
            }
        });
        let capped = s.changes_since(10_000);
        assert_eq!(capped[0], (10_000, some("q")));
        let ups: Vec<u64> = capped
            .iter()
            .filter(|(_, l)| *l == some("h"))
            .map(|(t, _)| *t)
            .collect();
        assert!(ups.windows(2).all(|w| w[1] - w[0] >= 19_000), "{capped:?}");
        assert!(capped.len() <= 7, "{capped:?}");
        assert_eq!(s.camera(), some("q"));
        // Lifted: back up after the (doubled) hold, h then f, and for good.
        assert_eq!(s.step_up.hold, Duration::from_secs(6));
        s.run(70_000, 130_000, |_| OPEN);
        assert_eq!(
            s.changes_since(70_000),
            [(76_000, some("h")), (79_000, some("f"))],
            "{:?}",
            s.changes
        );
    }

    #[test]
    fn the_held_budget_is_the_least_over_the_hold_time() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = StepUp::default();
        let held = |s: &mut StepUp, ms, b| s.budget(at(ms), Some(b)).map(|b| b.held);
        assert_eq!(s.budget(at(0), None), None);
        assert_eq!(held(&mut s, 0, 300), Some(300));
        assert_eq!(held(&mut s, 1_000, 2_000), Some(300));
        assert_eq!(held(&mut s, 2_000, 1_000), Some(300));
        // 300 was replaced at 1 s: out of the window 3 s later, when 1 000 (from 2 s) is the least.
        assert_eq!(held(&mut s, 3_999, 2_000), Some(300));
        assert_eq!(held(&mut s, 4_000, 2_000), Some(1_000));
        // 1 000 was replaced at 3.999 s.
        assert_eq!(held(&mut s, 6_998, 2_000), Some(1_000));
        assert_eq!(held(&mut s, 6_999, 2_000), Some(2_000));
        assert_eq!(
            s.budget(at(7_000), Some(500)),
            Some(Budget {
                now: 500,
                held: 500,
                cautious: false
            })
        );
    }
}
