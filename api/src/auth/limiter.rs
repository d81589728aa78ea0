//! Failed-login throttling per account and per client IP (fixed windows, in memory).
//!
//! In memory is right for one node; a multi-node deployment moves the counters to Redis.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Ip(IpAddr),
}

pub(crate) struct LoginLimiter {
    per_account: u32,
    per_ip: u32,
    window: Duration,
    windows: Mutex<HashMap<Key, Window>>,
}

impl LoginLimiter {
    pub(crate) fn new(per_account: u32, per_ip: u32, window: Duration) -> Self {
        Self {
            per_account,
            per_ip,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, ip: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::Account(account.to_lowercase())).chain(ip.map(Key::Ip))
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::Account(_) => self.per_account,
            Key::Ip(_) => self.per_ip,
        }
    }

    /// `Err(retry_after)` when the account or the IP has used up its failures.
    pub(crate) fn check(&self, account: &str, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for key in Self::keys(account, ip) {
            if let Some(w) = windows.get(&key) {
                let elapsed = now.saturating_duration_since(w.started);
                if elapsed < self.window && w.failures >= self.limit(&key) {
                    let left = self.window - elapsed;
                    wait = Some(wait.map_or(left, |d: Duration| d.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    pub(crate) fn record_failure(&self, account: &str, ip: Option<IpAddr>, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Drop expired windows as we go so the map cannot grow without bound.
        if windows.len() > 10_000 {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        }
        for key in Self::keys(account, ip) {
            let w = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.saturating_duration_since(w.started) >= self.window {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures += 1;
        }
    }

    /// A successful login clears the account's failures (not the IP's).
    pub(crate) fn record_success(&self, account: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.remove(&Key::Account(account.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    #[test]
    fn account_limit_then_window_expiry() {
        let l = LoginLimiter::new(3, 100, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("Alice", IP, t0).is_ok());
            l.record_failure("Alice", IP, t0);
        }
        let wait = l.check("alice", IP, t0 + Duration::from_secs(10));
        assert_eq!(wait, Err(Duration::from_secs(50)));
        assert!(l.check("bob", IP, t0).is_ok(), "other accounts are not affected");
        assert!(l.check("alice", IP, t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn ip_limit_spans_accounts() {
        let l = LoginLimiter::new(100, 2, Duration::from_secs(60));
        let t0 = Instant::now();
        l.record_failure("a", IP, t0);
        l.record_failure("b", IP, t0);
        assert!(l.check("c", IP, t0).is_err());
        assert!(l.check("c", None, t0).is_ok());
    }

    #[test]
    fn success_resets_account() {
        let l = LoginLimiter::new(1, 100, Duration::from_secs(60));
        let t0 = Instant::now();
        l.record_failure("a", IP, t0);
        assert!(l.check("a", IP, t0).is_err());
        l.record_success("a");
        assert!(l.check("a", IP, t0).is_ok());
    }
}
