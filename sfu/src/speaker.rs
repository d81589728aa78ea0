//! Active speakers of one room from RFC 6464 client-to-mixer audio levels.
//!
//! Each microphone packet carries the sender's level in -dBov (0 loudest, 127 silence). A
//! participant becomes a speaker after `START_HOLD` of voice (packets louder than `VOICE_DBOV`,
//! pauses shorter than `GAP` between words do not break the run) and stops being one after
//! `STOP_HOLD` without voice, so a cough does not flash a tile and a breath does not drop it.
//! The list is ordered with the dominant speaker first; another speaker takes that place only
//! after being louder (smoothed level) for `TAKEOVER`. A change of who speaks or who leads
//! produces a new list; level changes alone do not.
//!
//! Sans-IO: levels and time come in (`on_level`, `handle_timeout`), lists go out (`poll_list`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::types::{ActiveSpeaker, ParticipantId};

/// Packets at or above -50 dBov count as voice (speech is typically -20 to -40 dBov, room noise
/// through a browser's noise suppression well below -60).
const VOICE_DBOV: u8 = 50;
/// Voice this long makes a speaker: with 20 ms packets, five or six of them.
pub(crate) const START_HOLD: Duration = Duration::from_millis(100);
/// A pause shorter than this does not end a run of voice.
const GAP: Duration = Duration::from_millis(200);
/// Without voice this long, a speaker is no longer one.
pub(crate) const STOP_HOLD: Duration = Duration::from_millis(1_500);
/// Louder than the dominant speaker this long to take its place.
pub(crate) const TAKEOVER: Duration = Duration::from_millis(500);
/// Time constant of the level smoothing (exponential moving average).
const TAU: Duration = Duration::from_millis(300);

#[derive(Debug)]
struct Voice {
    /// 0.0 (silence) ..= 1.0 (0 dBov), smoothed.
    level: f32,
    last_packet: Option<Instant>,
    run_start: Option<Instant>,
    last_voice: Option<Instant>,
    speaking: bool,
}

/// Who is speaking in one room.
#[derive(Debug, Default)]
pub(crate) struct SpeakerDetector {
    voices: HashMap<ParticipantId, Voice>,
    /// Current speakers, dominant first.
    order: Vec<ParticipantId>,
    /// A speaker louder than the dominant one, and since when.
    challenger: Option<(ParticipantId, Instant)>,
    changed: bool,
}

impl SpeakerDetector {
    /// One audio packet of `who` with RFC 6464 level `dbov` (str0m gives 0 ..= -127) at `now`.
    pub(crate) fn on_level(&mut self, who: &ParticipantId, dbov: i8, now: Instant) {
        let attenuation = dbov.unsigned_abs().min(127);
        let voice = self.voices.entry(who.clone()).or_insert(Voice {
            level: 0.0,
            last_packet: None,
            run_start: None,
            last_voice: None,
            speaking: false,
        });
        let sample = f32::from(127 - attenuation) / 127.0;
        voice.level = match voice.last_packet {
            // The first packet is the best estimate there is.
            None => sample,
            Some(t) => {
                let dt = now.saturating_duration_since(t);
                let alpha = (dt.as_secs_f32() / TAU.as_secs_f32()).min(1.0);
                voice.level + (sample - voice.level) * alpha
            }
        };
        voice.last_packet = Some(now);
        if attenuation <= VOICE_DBOV {
            let continues = voice.last_voice.is_some_and(|t| now.saturating_duration_since(t) < GAP);
            if !continues {
                voice.run_start = Some(now);
            }
            voice.last_voice = Some(now);
            if !voice.speaking
                && voice
                    .run_start
                    .is_some_and(|s| now.saturating_duration_since(s) >= START_HOLD)
            {
                voice.speaking = true;
                self.order.push(who.clone());
                self.changed = true;
            }
        }
        self.reorder(now);
    }

    /// Drops speakers silent for `STOP_HOLD` and settles takeovers that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let voices = &mut self.voices;
        let before = self.order.len();
        self.order.retain(|id| {
            let Some(v) = voices.get_mut(id) else {
                return false;
            };
            let quiet = v
                .last_voice
                .is_none_or(|t| now.saturating_duration_since(t) >= STOP_HOLD);
            if quiet {
                v.speaking = false;
                v.run_start = None;
            }
            !quiet
        });
        if self.order.len() != before {
            self.changed = true;
        }
        self.reorder(now);
    }

    /// Forgets a participant that left or stopped publishing audio.
    pub(crate) fn remove(&mut self, who: &ParticipantId) {
        self.voices.remove(who);
        let before = self.order.len();
        self.order.retain(|id| id != who);
        if self.order.len() != before {
            self.changed = true;
        }
        if self.challenger.as_ref().is_some_and(|(c, _)| c == who) {
            self.challenger = None;
        }
    }

    /// Whether `poll_list` has a new list.
    pub(crate) fn has_news(&self) -> bool {
        self.changed
    }

    /// The next time `handle_timeout` has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let stops = self
            .order
            .iter()
            .filter_map(|id| self.voices.get(id)?.last_voice.map(|t| t + STOP_HOLD));
        let takeover = self.challenger.as_ref().map(|(_, since)| *since + TAKEOVER);
        stops.chain(takeover).min()
    }

    /// The speaker list, if it changed since the last call.
    pub(crate) fn poll_list(&mut self) -> Option<Vec<ActiveSpeaker>> {
        std::mem::take(&mut self.changed).then(|| self.current())
    }

    /// The speaker list as it is (for someone who just joined the room).
    pub(crate) fn current(&self) -> Vec<ActiveSpeaker> {
        self.order
            .iter()
            .map(|id| ActiveSpeaker {
                participant: id.clone(),
                level: self.voices.get(id).map_or(0, |v| percent(v.level)),
            })
            .collect()
    }

    /// Moves a speaker louder than the dominant one for `TAKEOVER` to the front.
    fn reorder(&mut self, now: Instant) {
        let level = |id: &ParticipantId| self.voices.get(id).map_or(0.0, |v| v.level);
        let Some(first) = self.order.first() else {
            self.challenger = None;
            return;
        };
        let lead = level(first);
        let loudest = self
            .order
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, id)| (i, level(id)))
            .filter(|(_, l)| *l > lead)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((index, _)) = loudest else {
            self.challenger = None;
            return;
        };
        let id = self.order[index].clone();
        let since = match &self.challenger {
            Some((c, since)) if *c == id => *since,
            _ => now,
        };
        if now.saturating_duration_since(since) >= TAKEOVER {
            let taker = self.order.remove(index);
            self.order.insert(0, taker);
            self.challenger = None;
            self.changed = true;
        } else {
            self.challenger = Some((id, since));
        }
    }
}

/// A 0.0 ..= 1.0 level as a whole percentage.
fn percent(level: f32) -> u8 {
    // Clamped to 0..=100 first, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let p = (level.clamp(0.0, 1.0) * 100.0).round() as u8;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOUD: i8 = -30;
    const QUIET: i8 = -127;

    fn id(s: &str) -> ParticipantId {
        ParticipantId::parse(s).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The usual Opus packet duration.
    const PACKET_TIME: Duration = Duration::from_millis(20);

    fn names(list: &[ActiveSpeaker]) -> Vec<&str> {
        list.iter().map(|s| s.participant.as_str()).collect()
    }

    /// Feeds 20 ms packets of `levels[i]` for participant `i` from `from` for `span`, running
    /// timeouts as a driver would; returns every list produced with its time.
    fn run(
        d: &mut SpeakerDetector,
        who: &[(&ParticipantId, i8)],
        from: Instant,
        span: Duration,
    ) -> Vec<(Duration, Vec<ActiveSpeaker>)> {
        let mut lists = Vec::new();
        let mut t = from;
        while t < from + span {
            for (p, level) in who {
                d.on_level(p, *level, t);
            }
            if d.poll_timeout().is_some_and(|due| due <= t) {
                d.handle_timeout(t);
            }
            if let Some(list) = d.poll_list() {
                lists.push((t - from, list));
            }
            t += PACKET_TIME;
        }
        lists
    }

    #[test]
    fn a_talker_is_listed_within_300_ms_and_a_silent_one_never() {
        let t0 = Instant::now();
        let (alice, bob) = (id("alice"), id("bob"));
        let mut d = SpeakerDetector::default();
        let lists = run(&mut d, &[(&alice, LOUD), (&bob, QUIET)], t0, ms(3_000));
        assert_eq!(lists.len(), 1, "one change only: {lists:?}");
        let (at, list) = &lists[0];
        assert!(*at <= ms(300), "listed after {at:?}");
        assert!(*at >= START_HOLD, "a blip is not speech: listed after {at:?}");
        assert_eq!(names(list), ["alice"]);
        assert!(list[0].level > 50, "level {}", list[0].level);
    }

    #[test]
    fn a_short_noise_does_not_make_a_speaker() {
        let t0 = Instant::now();
        let alice = id("alice");
        let mut d = SpeakerDetector::default();
        // 60 ms of noise, then silence.
        let lists = run(&mut d, &[(&alice, LOUD)], t0, ms(60));
        assert!(lists.is_empty());
        let lists = run(&mut d, &[(&alice, QUIET)], t0 + ms(60), ms(2_000));
        assert!(lists.is_empty(), "{lists:?}");
    }

    #[test]
    fn pauses_between_words_keep_the_speaker_and_silence_drops_it() {
        let t0 = Instant::now();
        let alice = id("alice");
        let mut d = SpeakerDetector::default();
        let lists = run(&mut d, &[(&alice, LOUD)], t0, ms(400));
        assert_eq!(lists.len(), 1);
        // A 600 ms pause is shorter than STOP_HOLD: still speaking, nothing sent.
        let lists = run(&mut d, &[(&alice, QUIET)], t0 + ms(400), ms(600));
        assert!(lists.is_empty(), "{lists:?}");
        let lists = run(&mut d, &[(&alice, LOUD)], t0 + ms(1_000), ms(400));
        assert!(lists.is_empty(), "{lists:?}");
        // Silence: dropped once STOP_HOLD has passed since the last voice, not before.
        let silence_from = t0 + ms(1_400);
        let lists = run(&mut d, &[(&alice, QUIET)], silence_from, ms(3_000));
        assert_eq!(lists.len(), 1, "{lists:?}");
        let (at, list) = &lists[0];
        assert!(list.is_empty());
        assert!(
            *at + PACKET_TIME >= STOP_HOLD && *at <= STOP_HOLD + ms(40),
            "dropped after {at:?}"
        );
    }

    #[test]
    fn a_participant_that_stops_sending_is_dropped_by_timeout() {
        let t0 = Instant::now();
        let alice = id("alice");
        let mut d = SpeakerDetector::default();
        run(&mut d, &[(&alice, LOUD)], t0, ms(400));
        let due = d.poll_timeout().unwrap();
        assert_eq!(due, t0 + ms(380) + STOP_HOLD);
        d.handle_timeout(due - ms(1));
        assert!(d.poll_list().is_none());
        d.handle_timeout(due);
        assert_eq!(d.poll_list().unwrap(), Vec::new());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_louder_speaker_takes_the_lead_only_after_a_while() {
        let t0 = Instant::now();
        let (alice, bob) = (id("alice"), id("bob"));
        let mut d = SpeakerDetector::default();
        // Alice speaks at -40 dBov; then Bob joins in louder, at -10.
        run(&mut d, &[(&alice, -40)], t0, ms(1_000));
        let lists = run(&mut d, &[(&alice, -40), (&bob, -10)], t0 + ms(1_000), ms(3_000));
        assert_eq!(lists.len(), 2, "{lists:?}");
        assert_eq!(names(&lists[0].1), ["alice", "bob"], "Bob first joins behind Alice");
        let (at, list) = &lists[1];
        assert_eq!(names(list), ["bob", "alice"]);
        // Bob's smoothed level passes Alice's within a few packets; the lead changes TAKEOVER later.
        assert!(*at >= TAKEOVER && *at <= TAKEOVER + ms(300), "took over after {at:?}");
    }

    #[test]
    fn equal_speakers_do_not_flap() {
        let t0 = Instant::now();
        let (alice, bob) = (id("alice"), id("bob"));
        let mut d = SpeakerDetector::default();
        let mut lists = run(&mut d, &[(&alice, -30), (&bob, -30)], t0, ms(500));
        // Alternating a little louder every 200 ms never lasts TAKEOVER.
        for i in 0..20u64 {
            let (a, b) = if i % 2 == 0 { (-28, -32) } else { (-32, -28) };
            lists.extend(run(&mut d, &[(&alice, a), (&bob, b)], t0 + ms(500 + i * 200), ms(200)));
        }
        assert_eq!(lists.len(), 1, "{lists:?}");
        assert_eq!(lists[0].1.len(), 2);
    }

    #[test]
    fn removing_a_speaker_announces_the_change() {
        let t0 = Instant::now();
        let (alice, bob) = (id("alice"), id("bob"));
        let mut d = SpeakerDetector::default();
        run(&mut d, &[(&alice, LOUD)], t0, ms(400));
        d.remove(&bob);
        assert!(d.poll_list().is_none(), "bob was never a speaker");
        d.remove(&alice);
        assert_eq!(d.poll_list().unwrap(), Vec::new());
    }

    #[test]
    fn the_current_list_is_there_for_late_joiners_without_being_news() {
        let t0 = Instant::now();
        let alice = id("alice");
        let mut d = SpeakerDetector::default();
        run(&mut d, &[(&alice, LOUD)], t0, ms(400));
        assert!(!d.has_news());
        assert_eq!(names(&d.current()), ["alice"]);
        assert!(d.poll_list().is_none());
    }
}
