//! Simulcast layers of a published track, and which one each subscriber gets.
//!
//! A publisher may send one track as several encodings (RFC 8853 simulcast, one `rid` each; the web
//! client sends `q`, `h`, `f` at 1/4, 1/2 and full resolution). `Layers` keeps what the SFU learns
//! about them: their order, bitrate (measured over a sliding window), frame size (from keyframes)
//! and whether they are flowing. `LayerSelector` is one down-track's view: the layer it forwards
//! and the one it should move to, switching only at a keyframe of the new layer so the subscriber's
//! decoder never gets a frame that refers to pictures of another encoding.
//!
//! Sans-IO: time comes in as arguments.

use std::time::{Duration, Instant};

use str0m::media::Rid;

use crate::types::{LayerQuality, TrackSettings};

/// One layer of a track: a simulcast rid, or the single stream of a track without simulcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LayerId(pub(crate) Option<Rid>);

/// Width of one bucket of the bitrate window.
const BUCKET: Duration = Duration::from_millis(100);
/// Buckets in the window: bitrates are averaged over one second.
const BUCKETS: usize = 10;

/// Until a layer has been measured, the allocator assumes these rates (bit/s) for video layers
/// from the lowest up, like a browser's default simulcast ladder; audio assumes `NOMINAL_AUDIO`.
const NOMINAL_VIDEO: [u64; 3] = [150_000, 500_000, 1_500_000];
const NOMINAL_AUDIO: u64 = 40_000;

/// Frame size of the top layer assumed until a keyframe states one (720p, the web client's capture).
const NOMINAL_TOP: (u32, u32) = (1280, 720);

/// Bytes per bucket over a sliding window.
#[derive(Debug, Clone)]
pub(crate) struct RateMeter {
    epoch: Option<Instant>,
    /// (bucket number since `epoch`, bytes in it).
    buckets: [(u64, u64); BUCKETS],
}

impl RateMeter {
    pub(crate) fn new() -> Self {
        RateMeter {
            epoch: None,
            buckets: [(u64::MAX, 0); BUCKETS],
        }
    }

    fn slot(&self, now: Instant) -> Option<u64> {
        let epoch = self.epoch?;
        let n = now.saturating_duration_since(epoch).as_micros() / BUCKET.as_micros();
        Some(u64::try_from(n).unwrap_or(u64::MAX))
    }

    pub(crate) fn record(&mut self, bytes: usize, now: Instant) {
        self.epoch.get_or_insert(now);
        let Some(slot) = self.slot(now) else { return };
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.0 != slot {
            *b = (slot, 0);
        }
        b.1 += bytes as u64;
    }

    /// Bits per second over the last second (or since the first byte, if that is more recent).
    pub(crate) fn bitrate(&self, now: Instant) -> u64 {
        let Some(slot) = self.slot(now) else { return 0 };
        let bytes: u64 = self
            .buckets
            .iter()
            .filter(|(s, _)| *s != u64::MAX && *s <= slot && slot - *s < BUCKETS as u64)
            .map(|(_, b)| b)
            .sum();
        let window = (slot + 1).min(BUCKETS as u64) * BUCKET.as_millis() as u64;
        bytes * 8 * 1000 / window
    }
}

#[derive(Debug, Clone)]
struct Layer {
    id: LayerId,
    meter: RateMeter,
    /// The least this layer is taken to cost (set by `refresh`; the nominal rate until then): the
    /// highest measurement, decaying by an eighth per refresh towards lower ones, and kept while
    /// the layer is paused. An encoder ramps a layer up over seconds when it starts or resumes,
    /// so its first measurements understate it; taken at face value, a layer that just resumed
    /// looked cheap enough to step up to, and the subscriber stepped down again once it ramped
    /// up (flapping under a bandwidth cap).
    floor: Option<u64>,
    size: Option<(u32, u32)>,
    /// Packets are arriving (str0m reports a stream paused after 1.5 s without any).
    live: bool,
}

/// Order of well-known rids from the lowest quality up; others sort after them by name.
fn rank(id: LayerId) -> (u8, String) {
    let Some(rid) = id.0 else { return (0, String::new()) };
    let name = rid.to_string();
    let known = match name.as_str() {
        "q" | "l" | "low" | "0" => 0,
        "h" | "m" | "mid" | "1" => 1,
        "f" | "high" | "2" => 2,
        _ => 3,
    };
    (known, name)
}

/// What the SFU knows about one track's layers, lowest quality first.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    audio: bool,
    layers: Vec<Layer>,
}

impl Layers {
    pub(crate) fn new(audio: bool) -> Self {
        Layers {
            audio,
            layers: Vec::new(),
        }
    }

    /// Learns of a layer (from the SDP or its first packet); it is live once packets arrive.
    pub(crate) fn declare(&mut self, id: LayerId) -> usize {
        if let Some(i) = self.index(id) {
            return i;
        }
        let layer = Layer {
            id,
            meter: RateMeter::new(),
            floor: None,
            size: None,
            live: false,
        };
        let at = self.layers.partition_point(|l| rank(l.id) < rank(id));
        self.layers.insert(at, layer);
        at
    }

    fn index(&self, id: LayerId) -> Option<usize> {
        self.layers.iter().position(|l| l.id == id)
    }

    /// Whether the track has more than one layer.
    pub(crate) fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// Accounts one packet; returns `true` if the layer just became live.
    pub(crate) fn on_packet(&mut self, id: LayerId, bytes: usize, size: Option<(u32, u32)>, now: Instant) -> bool {
        let i = self.declare(id);
        let layer = &mut self.layers[i];
        layer.meter.record(bytes, now);
        if size.is_some() {
            layer.size = size;
        }
        !std::mem::replace(&mut layer.live, true)
    }

    /// The layer stopped (or restarted) arriving; returns whether that changed anything.
    pub(crate) fn set_live(&mut self, id: LayerId, live: bool) -> bool {
        match self.index(id) {
            Some(i) => live != std::mem::replace(&mut self.layers[i].live, live),
            None => false,
        }
    }

    /// Updates the cost floors of flowing layers from their rates (called once a second).
    pub(crate) fn refresh(&mut self, now: Instant) {
        for i in 0..self.layers.len() {
            let nominal = self.nominal(i);
            let l = &mut self.layers[i];
            let r = l.meter.bitrate(now);
            if r > 0 {
                let floor = l.floor.unwrap_or(nominal);
                l.floor = Some(r.max(floor - floor / 8));
            }
        }
    }

    /// The rate assumed for layer `i` before it is measured.
    fn nominal(&self, i: usize) -> u64 {
        if self.audio {
            NOMINAL_AUDIO
        } else {
            let from_top = self.layers.len() - 1 - i;
            NOMINAL_VIDEO[NOMINAL_VIDEO.len().saturating_sub(1 + from_top)]
        }
    }

    /// The layers in order with their cost in bit/s: the rate measured now, but at least the
    /// layer's floor (its nominal rate until measured). `only_live` leaves out layers not arriving.
    pub(crate) fn costs(&self, now: Instant, only_live: bool) -> Vec<(LayerId, u64)> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.live || !only_live)
            .map(|(i, l)| (l.id, l.meter.bitrate(now).max(l.floor.unwrap_or(self.nominal(i)))))
            .collect()
    }

    /// Frame size of layer `i`: as its keyframes state, else derived from a layer whose size is
    /// known (simulcast layers halve each step down), else from a 720p top layer.
    fn size(&self, i: usize) -> (u32, u32) {
        if let Some(s) = self.layers[i].size {
            return s;
        }
        let (j, (w, h)) = self
            .layers
            .iter()
            .enumerate()
            .find_map(|(j, l)| l.size.map(|s| (j, s)))
            .unwrap_or((self.layers.len() - 1, NOMINAL_TOP));
        let scale = |v: u32| {
            if i >= j {
                v.saturating_mul(1 << (i - j).min(8))
            } else {
                v >> (j - i).min(16)
            }
        };
        (scale(w), scale(h))
    }

    /// The best layer a subscriber's settings ask for: none when disabled; otherwise the smallest
    /// layer covering the rendered size (the top one if none does), capped by the preference.
    /// `None` also for a track with no layers yet.
    pub(crate) fn wanted(&self, settings: &TrackSettings) -> Option<LayerId> {
        if !settings.enabled || self.layers.is_empty() {
            return None;
        }
        let top = self.layers.len() - 1;
        let by_size = match settings.size {
            Some((w, h)) => (0..=top)
                .find(|i| {
                    let (lw, lh) = self.size(*i);
                    lw >= w && lh >= h
                })
                .unwrap_or(top),
            None => top,
        };
        let cap = match settings.quality {
            Some(LayerQuality::Low) => 0,
            Some(LayerQuality::Medium) => 1.min(top),
            Some(LayerQuality::High) | None => top,
        };
        Some(self.layers[by_size.min(cap)].id)
    }

    /// The position of a layer from the lowest (for comparisons), if known.
    pub(crate) fn position(&self, id: LayerId) -> Option<usize> {
        self.index(id)
    }

    /// All known layers, lowest first.
    pub(crate) fn ids(&self) -> impl Iterator<Item = LayerId> + '_ {
        self.layers.iter().map(|l| l.id)
    }

    /// The rids of all known layers, lowest first.
    pub(crate) fn rids(&self) -> impl Iterator<Item = Rid> + '_ {
        self.layers.iter().filter_map(|l| l.id.0)
    }
}

/// What to do with one incoming packet for one down-track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not for this subscriber (another layer, or waiting for a keyframe).
    Drop,
    /// Send it; `switched` when it is the first packet of a newly selected layer.
    Forward { switched: bool },
}

/// One down-track's layer: the one being forwarded and the one chosen for it.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerSelector {
    current: Option<LayerId>,
    target: Option<LayerId>,
}

impl LayerSelector {
    /// Chooses the layer to forward (`None`: pause). A pause takes effect at once; a new layer
    /// waits for its keyframe while the old one keeps flowing.
    pub(crate) fn set_target(&mut self, target: Option<LayerId>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    pub(crate) fn target(&self) -> Option<LayerId> {
        self.target
    }

    pub(crate) fn current(&self) -> Option<LayerId> {
        self.current
    }

    /// The layer whose keyframe this down-track waits for, if any.
    pub(crate) fn waiting_for(&self) -> Option<LayerId> {
        self.target.filter(|t| self.current != Some(*t))
    }

    /// Decides about a packet of `layer`. `keyframe_start`: it begins a keyframe. A track without
    /// simulcast starts at any packet (the subscriber asks for a keyframe itself, as before).
    pub(crate) fn on_packet(&mut self, layer: LayerId, keyframe_start: bool, simulcast: bool) -> Verdict {
        if self.target == Some(layer) && self.current != Some(layer) && (keyframe_start || !simulcast) {
            self.current = Some(layer);
            return Verdict::Forward { switched: true };
        }
        if self.current == Some(layer) {
            Verdict::Forward { switched: false }
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> LayerId {
        LayerId(Some(Rid::from(s)))
    }

    fn three_layers(now: Instant) -> Layers {
        let mut l = Layers::new(false);
        for r in ["f", "q", "h"] {
            l.declare(rid(r));
        }
        l.on_packet(rid("f"), 100, Some((1280, 720)), now);
        l
    }

    #[test]
    fn rate_meter_averages_over_one_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut m = RateMeter::new();
        assert_eq!(m.bitrate(t0), 0);
        // 125 000 bytes per second = 1 Mbit/s, in 10 ms steps.
        for i in 0..200 {
            m.record(1250, t0 + ms(i * 10));
        }
        let r = m.bitrate(t0 + ms(1999));
        assert!((950_000..=1_050_000).contains(&r), "{r}");
        // Half a second of silence halves it; two seconds empty it.
        let r = m.bitrate(t0 + ms(2499));
        assert!((450_000..=550_000).contains(&r), "{r}");
        assert_eq!(m.bitrate(t0 + ms(4000)), 0);
        // Early on, the window is what has passed.
        let mut m = RateMeter::new();
        for i in 0..10 {
            m.record(1250, t0 + ms(i * 10));
        }
        assert_eq!(m.bitrate(t0 + ms(99)), 1_000_000);
    }

    #[test]
    fn layers_sort_low_to_high_and_learn_sizes() {
        let t0 = Instant::now();
        let l = three_layers(t0);
        let order: Vec<String> = l.rids().map(|r| r.to_string()).collect();
        assert_eq!(order, ["q", "h", "f"]);
        assert_eq!(l.size(0), (320, 180));
        assert_eq!(l.size(1), (640, 360));
        assert_eq!(l.size(2), (1280, 720));
    }

    #[test]
    fn wanted_layer_from_size_and_preference() {
        let t0 = Instant::now();
        let l = three_layers(t0);
        let s = |size: Option<(u32, u32)>, quality| TrackSettings {
            enabled: true,
            size,
            quality,
        };
        assert_eq!(l.wanted(&TrackSettings::default()), Some(rid("f")));
        assert_eq!(l.wanted(&s(Some((160, 90)), None)), Some(rid("q")));
        assert_eq!(l.wanted(&s(Some((320, 180)), None)), Some(rid("q")));
        assert_eq!(l.wanted(&s(Some((321, 180)), None)), Some(rid("h")));
        assert_eq!(l.wanted(&s(Some((1920, 1080)), None)), Some(rid("f")));
        assert_eq!(
            l.wanted(&s(Some((1920, 1080)), Some(LayerQuality::Medium))),
            Some(rid("h"))
        );
        assert_eq!(l.wanted(&s(None, Some(LayerQuality::Low))), Some(rid("q")));
        assert_eq!(l.wanted(&s(Some((100, 50)), Some(LayerQuality::High))), Some(rid("q")));
        let off = TrackSettings {
            enabled: false,
            ..TrackSettings::default()
        };
        assert_eq!(l.wanted(&off), None);
        // Without simulcast there is one layer whatever the size.
        let mut single = Layers::new(false);
        single.declare(LayerId(None));
        assert_eq!(
            single.wanted(&s(Some((10, 10)), Some(LayerQuality::Low))),
            Some(LayerId(None))
        );
    }

    #[test]
    fn costs_measured_but_at_least_a_decaying_floor() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = three_layers(t0);
        // h at 400 kbit/s, then 1 Mbit/s for a second.
        let send = |l: &mut Layers, from: u64, bytes: usize| {
            for i in 0..100 {
                l.on_packet(rid("h"), bytes, None, t0 + ms(from + i * 10));
            }
        };
        send(&mut l, 0, 500);
        let now = t0 + ms(999);
        let costs = l.costs(now, false);
        // Unmeasured: nominal; measured below nominal: nominal until refreshed.
        assert_eq!(costs[0], (rid("q"), 150_000));
        assert_eq!(costs[1], (rid("h"), 500_000));
        // Only live layers: q never arrived.
        assert_eq!(l.costs(now, true).len(), 2);
        // Each refresh brings the floor an eighth closer to a lower rate.
        l.refresh(now);
        assert_eq!(l.costs(now, false)[1], (rid("h"), 437_500));
        l.refresh(now);
        assert_eq!(l.costs(now, false)[1], (rid("h"), 400_000));
        // A higher rate counts at once and becomes the floor.
        send(&mut l, 1_000, 1_250);
        let now = t0 + ms(1_999);
        assert_eq!(l.costs(now, false)[1], (rid("h"), 1_000_000));
        l.refresh(now);
        // Paused, the floor stays; resumed, a first trickle does not make it look cheap.
        assert!(l.set_live(rid("h"), false));
        assert_eq!(l.costs(t0 + ms(5_000), false)[1], (rid("h"), 1_000_000));
        assert_eq!(l.costs(t0 + ms(5_000), true).len(), 1);
        l.on_packet(rid("h"), 1_000, None, t0 + ms(6_000));
        assert_eq!(l.costs(t0 + ms(6_000), true)[0], (rid("h"), 1_000_000));
    }

    #[test]
    fn switch_waits_for_a_keyframe_of_the_target() {
        let (q, f) = (rid("q"), rid("f"));
        let mut s = LayerSelector::default();
        s.set_target(Some(q));
        assert_eq!(s.on_packet(q, false, true), Verdict::Drop);
        assert_eq!(s.on_packet(q, true, true), Verdict::Forward { switched: true });
        assert_eq!(s.on_packet(q, false, true), Verdict::Forward { switched: false });
        assert_eq!(s.on_packet(f, true, true), Verdict::Drop);
        // Up to f: q keeps flowing until f's keyframe.
        s.set_target(Some(f));
        assert_eq!(s.waiting_for(), Some(f));
        assert_eq!(s.on_packet(f, false, true), Verdict::Drop);
        assert_eq!(s.on_packet(q, false, true), Verdict::Forward { switched: false });
        assert_eq!(s.on_packet(f, true, true), Verdict::Forward { switched: true });
        assert_eq!(s.waiting_for(), None);
        assert_eq!(s.on_packet(q, true, true), Verdict::Drop);
        // Pausing is immediate.
        s.set_target(None);
        assert_eq!(s.on_packet(f, true, true), Verdict::Drop);
        assert_eq!(s.current(), None);
    }

    #[test]
    fn single_layer_starts_at_any_packet() {
        let only = LayerId(None);
        let mut s = LayerSelector::default();
        s.set_target(Some(only));
        assert_eq!(s.on_packet(only, false, false), Verdict::Forward { switched: true });
        assert_eq!(s.on_packet(only, false, false), Verdict::Forward { switched: false });
    }
}
