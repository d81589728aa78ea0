//! Timer arithmetic, free of IO and of the clock: every function takes `now` (unix ms), so the
//! server's clock is the only one that counts and tests drive time by hand.

/// The running state of one focus session, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Clock {
    pub(crate) started_at: i64,
    /// Set while paused: when the current pause began.
    pub(crate) paused_at: Option<i64>,
    /// Pauses that have ended, in total.
    pub(crate) paused_ms: i64,
    pub(crate) ended_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    NotRunning,
    NotPaused,
    Ended,
}

impl Clock {
    /// Focus time so far: wall time since the start, less every pause (an open one included).
    pub(crate) fn focus_ms(&self, now: i64) -> i64 {
        let end = self.ended_at.or(self.paused_at).unwrap_or(now);
        (end - self.started_at - self.paused_ms).max(0)
    }

    pub(crate) fn pause(&mut self, now: i64) -> Result<(), Invalid> {
        match (self.ended_at, self.paused_at) {
            (Some(_), _) => Err(Invalid::Ended),
            (None, Some(_)) => Err(Invalid::NotRunning),
            (None, None) => {
                self.paused_at = Some(now.max(self.started_at));
                Ok(())
            }
        }
    }

    pub(crate) fn resume(&mut self, now: i64) -> Result<(), Invalid> {
        match (self.ended_at, self.paused_at) {
            (Some(_), _) => Err(Invalid::Ended),
            (None, None) => Err(Invalid::NotPaused),
            (None, Some(since)) => {
                self.paused_ms += (now - since).max(0);
                self.paused_at = None;
                Ok(())
            }
        }
    }

    /// Ends the session (a pause in progress ends with it) and returns its focus time.
    pub(crate) fn stop(&mut self, now: i64) -> Result<i64, Invalid> {
        if self.ended_at.is_some() {
            return Err(Invalid::Ended);
        }
        let end = now.max(self.started_at);
        if let Some(since) = self.paused_at.take() {
            self.paused_ms += (end - since).max(0);
        }
        self.ended_at = Some(end);
        Ok(self.focus_ms(end))
    }
}

/// Pomodoro phases: work, then a short break, and a long break after every `LONG_BREAK_EVERY`
/// completed work sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Work,
    ShortBreak,
    LongBreak,
}

pub(crate) const LONG_BREAK_EVERY: usize = 4;

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Work => "work",
            Self::ShortBreak => "short_break",
            Self::LongBreak => "long_break",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "work" => Some(Self::Work),
            "short_break" => Some(Self::ShortBreak),
            "long_break" => Some(Self::LongBreak),
            _ => None,
        }
    }

    pub(crate) fn default_minutes(self) -> i64 {
        match self {
            Self::Work => 25,
            Self::ShortBreak => 5,
            Self::LongBreak => 15,
        }
    }
}

/// The next pomodoro phase and how many work sessions the current cycle has completed, from
/// the user's ended pomodoro sessions, newest first, as (phase, completed).
pub(crate) fn next_phase(history: &[(Phase, bool)]) -> (Phase, usize) {
    let done = history
        .iter()
        .take_while(|(p, _)| *p != Phase::LongBreak)
        .filter(|(p, completed)| *p == Phase::Work && *completed)
        .count();
    let in_cycle = done % LONG_BREAK_EVERY;
    match history.first() {
        Some((Phase::Work, true)) if in_cycle == 0 => (Phase::LongBreak, LONG_BREAK_EVERY),
        Some((Phase::Work, true)) => (Phase::ShortBreak, in_cycle),
        _ => (Phase::Work, in_cycle),
    }
}

/// The calendar day (days since 1970-01-01) `at` falls on, `offset_ms` east of UTC.
pub(crate) fn day_of(at: i64, offset_ms: i64) -> i64 {
    (at + offset_ms).div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn start(now: i64) -> Clock {
        Clock {
            started_at: now,
            paused_at: None,
            paused_ms: 0,
            ended_at: None,
        }
    }

    #[test]
    fn pauses_do_not_count_as_focus() {
        let t0 = 1_700_000_000_000;
        let mut c = start(t0);
        assert_eq!(c.focus_ms(t0 + 10 * MIN), 10 * MIN);
        c.pause(t0 + 10 * MIN).unwrap();
        // Time stands still while paused.
        assert_eq!(c.focus_ms(t0 + 30 * MIN), 10 * MIN);
        assert_eq!(c.pause(t0 + 31 * MIN), Err(Invalid::NotRunning));
        c.resume(t0 + 15 * MIN).unwrap();
        assert_eq!(c.resume(t0 + 16 * MIN), Err(Invalid::NotPaused));
        assert_eq!(c.paused_ms, 5 * MIN);
        assert_eq!(c.focus_ms(t0 + 20 * MIN), 15 * MIN);
        assert_eq!(c.stop(t0 + 25 * MIN), Ok(20 * MIN));
        assert_eq!(c.focus_ms(t0 + 99 * MIN), 20 * MIN);
        assert_eq!(c.stop(t0 + 26 * MIN), Err(Invalid::Ended));
        assert_eq!(c.pause(t0 + 26 * MIN), Err(Invalid::Ended));
    }

    #[test]
    fn stopping_while_paused_closes_the_pause() {
        let mut c = start(0);
        c.pause(7 * MIN).unwrap();
        assert_eq!(c.stop(12 * MIN), Ok(7 * MIN));
        assert_eq!((c.paused_ms, c.paused_at, c.ended_at), (5 * MIN, None, Some(12 * MIN)));
    }

    #[test]
    fn a_clock_going_backwards_never_yields_negative_time() {
        let mut c = start(10 * MIN);
        assert_eq!(c.focus_ms(5 * MIN), 0);
        c.pause(3 * MIN).unwrap();
        c.resume(2 * MIN).unwrap();
        assert_eq!(c.stop(MIN), Ok(0));
    }

    #[test]
    fn pomodoro_cycles() {
        use Phase::{LongBreak, ShortBreak, Work};
        assert_eq!(next_phase(&[]), (Work, 0));
        assert_eq!(next_phase(&[(Work, true)]), (ShortBreak, 1));
        assert_eq!(next_phase(&[(ShortBreak, true), (Work, true)]), (Work, 1));
        // An abandoned work session is retried, not rewarded with a break.
        assert_eq!(
            next_phase(&[(Work, false), (ShortBreak, true), (Work, true)]),
            (Work, 1)
        );
        let four = [
            (Work, true),
            (ShortBreak, true),
            (Work, true),
            (ShortBreak, true),
            (Work, true),
            (ShortBreak, true),
            (Work, true),
        ];
        assert_eq!(next_phase(&four), (LongBreak, 4));
        let after_long = [(LongBreak, true), (Work, true), (ShortBreak, true)];
        assert_eq!(next_phase(&after_long), (Work, 0));
    }

    #[test]
    fn days_follow_the_offset() {
        let midnight = 86_400_000 * 20_000;
        assert_eq!(day_of(midnight - 1, 0), 19_999);
        assert_eq!(day_of(midnight - 1, 3_600_000), 20_000);
        assert_eq!(day_of(midnight, -3_600_000), 19_999);
    }
}
