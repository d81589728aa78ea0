//! Upstream keyframe request throttling.
//!
//! Every subscriber of a video track may send PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §3.5.1); a
//! publisher that answered each one would send keyframes back to back. Requests for one track are
//! aggregated: at most one goes upstream per interval, the rest are absorbed because the keyframe
//! already on its way serves them too.

use std::time::{Duration, Instant};

/// How often one track may ask its publisher for a keyframe.
pub(crate) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct KeyframeThrottle {
    interval: Duration,
    last_sent: Option<Instant>,
}

impl KeyframeThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        KeyframeThrottle {
            interval,
            last_sent: None,
        }
    }

    /// Whether a request arriving at `now` goes upstream; if so it counts as sent.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.interval => false,
            _ => {
                self.last_sent = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = KeyframeThrottle::new(KEYFRAME_REQUEST_INTERVAL);
        assert!(t.allow(t0));
        // Two more subscribers ask within the window: absorbed.
        assert!(!t.allow(t0 + ms(10)));
        assert!(!t.allow(t0 + ms(499)));
        assert!(t.allow(t0 + ms(500)));
        assert!(!t.allow(t0 + ms(900)));
        assert!(t.allow(t0 + ms(1_001)));
    }

    #[test]
    fn time_going_backwards_does_not_unlock() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut t = KeyframeThrottle::new(KEYFRAME_REQUEST_INTERVAL);
        assert!(t.allow(t0));
        assert!(!t.allow(t0 - Duration::from_millis(100)));
    }
}
