//! Sharing one subscriber's estimated bandwidth among the tracks it receives.
//!
//! Audio is served first and never cut: it is cheap and losing it breaks a meeting. Video then
//! gets layers in priority order (screen share before cameras, larger tiles before smaller): first
//! every video track its lowest layer while the budget lasts (tracks that do not fit are paused,
//! lowest priority first), then each track in turn moves up as far as its wanted layer and the
//! remaining budget allow. With no estimate (BWE not negotiated yet) everyone gets what they want.
//!
//! Pure and synchronous: the engine calls it whenever the estimate, a subscriber's settings or a
//! layer's bitrate changes.

use crate::layers::LayerId;

/// A track's lowest layer is kept while it costs up to this share of what is left (percent):
/// the estimate tracks what is being sent, so a stream slightly above it is no sign of
/// congestion; real congestion drops the estimate well below. Higher layers must fit exactly.
const PAUSE_TOLERANCE_PERCENT: u64 = 150;

/// Moving above the layer a track has now needs this much room (percent of the extra cost), so
/// bitrates wobbling around the budget do not switch layers (and ask for keyframes) every second.
const STEP_UP_MARGIN_PERCENT: u64 = 120;

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
    /// The layer it has now, if any: keeping it needs no margin, going above it does.
    pub(crate) current: Option<LayerId>,
}

/// The outcome for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation<K> {
    /// The layer each demand gets, in the order of the demands (`None`: paused).
    pub(crate) layers: Vec<(K, Option<LayerId>)>,
    /// Bit/s of what was allocated.
    pub(crate) used: u64,
    /// Bit/s of everything wanted: what the estimator should try to reach.
    pub(crate) desired: u64,
}

/// Distributes `budget` bit/s (`None`: unlimited) over `demands`.
pub(crate) fn allocate<K: Clone>(budget: Option<u64>, demands: &[Demand<K>]) -> Allocation<K> {
    let desired = demands.iter().filter_map(|d| d.layers.last()).map(|(_, c)| c).sum();
    let mut chosen: Vec<Option<usize>> = vec![None; demands.len()];
    let Some(budget) = budget else {
        let layers = demands
            .iter()
            .map(|d| (d.key.clone(), d.layers.last().map(|(id, _)| *id)))
            .collect();
        return Allocation {
            layers,
            used: desired,
            desired,
        };
    };
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
        let now_at = demands[i]
            .current
            .and_then(|c| layers.iter().position(|(id, _)| *id == c));
        let fits = |j: usize| {
            let extra = layers[j].1.saturating_sub(have);
            let extra = if now_at.is_some_and(|n| j <= n) {
                extra
            } else {
                extra.saturating_mul(STEP_UP_MARGIN_PERCENT) / 100
            };
            extra <= left
        };
        if let Some(best) = (base + 1..layers.len()).rev().find(|j| fits(*j)) {
            left -= layers[best].1.saturating_sub(have);
            chosen[i] = Some(best);
        }
    }
    let used = budget - left.min(budget);
    let layers = demands
        .iter()
        .zip(&chosen)
        .map(|(d, c)| (d.key.clone(), c.map(|j| d.layers[j].0)))
        .collect();
    Allocation { layers, used, desired }
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
            picks(&allocate(Some(5_000_000), &demands)),
            [some("-"), some("f"), some("f")]
        );
        // Congestion: the larger tile keeps the higher layer.
        assert_eq!(
            picks(&allocate(Some(2_050_000), &demands)),
            [some("-"), some("f"), some("q")]
        );
        assert_eq!(
            picks(&allocate(Some(800_000), &demands)),
            [some("-"), some("h"), some("q")]
        );
        assert_eq!(
            picks(&allocate(Some(340_000), &demands)),
            [some("-"), some("q"), some("q")]
        );
        // The lower-priority camera is paused first, then the other; audio stays.
        assert_eq!(picks(&allocate(Some(200_000), &demands)), [some("-"), some("q"), None]);
        // A lowest layer somewhat above the estimate is kept; well above, it is paused.
        assert_eq!(picks(&allocate(Some(145_000), &demands)), [some("-"), some("q"), None]);
        assert_eq!(picks(&allocate(Some(130_000), &demands)), [some("-"), None, None]);
        assert_eq!(picks(&allocate(Some(0), &demands)), [some("-"), None, None]);
        // Capacity returns: back up.
        let a = allocate(Some(3_400_000), &demands);
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
            picks(&allocate(Some(900_000), &demands)),
            [some("q"), some("h"), some("q")]
        );
        // Nothing wanted (hidden tile): nothing sent.
        let hidden = Demand {
            layers: Vec::new(),
            ..camera(4, 1)
        };
        let a = allocate(Some(10_000_000), &[hidden]);
        assert_eq!(picks(&a), [None]);
        assert_eq!(a.desired, 0);
    }

    #[test]
    fn stepping_up_needs_a_margin_keeping_does_not() {
        // f needs 1.35 Mbit/s more than q; with 1.5 M left it fits exactly but not with margin.
        let at = |current: Option<&str>| Demand {
            current: current.map(rid),
            ..camera(1, 1)
        };
        assert_eq!(picks(&allocate(Some(1_500_000), &[at(Some("h"))])), [some("h")]);
        assert_eq!(picks(&allocate(Some(1_500_000), &[at(None)])), [some("h")]);
        assert_eq!(picks(&allocate(Some(1_500_000), &[at(Some("f"))])), [some("f")]);
        assert_eq!(picks(&allocate(Some(1_800_000), &[at(Some("h"))])), [some("f")]);
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
        assert_eq!(picks(&allocate(Some(400_000), &demands)), [some("-"), some("-"), None]);
        // Others then get what is left, which may be nothing.
        assert_eq!(
            picks(&allocate(Some(1_200_000), &demands)),
            [some("-"), some("-"), some("q")]
        );
    }
}
