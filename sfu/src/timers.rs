//! When each peer connection next wants `handle_timeout`: a deadline per key, ordered, so the
//! engine's `poll_timeout` is the first entry and a wake-up touches only the keys that are due
//! (not a scan over every peer of the worker).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// One deadline per key.
#[derive(Debug)]
pub(crate) struct Timers<K> {
    by_key: HashMap<K, Instant>,
    queue: BTreeSet<(Instant, K)>,
}

impl<K: Copy + Ord + Hash> Timers<K> {
    pub(crate) fn new() -> Self {
        Timers {
            by_key: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Sets (or moves) `key`'s deadline.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        match self.by_key.insert(key, at) {
            Some(old) if old == at => return,
            Some(old) => {
                self.queue.remove(&(old, key));
            }
            None => {}
        }
        self.queue.insert((at, key));
    }

    /// Forgets `key`: it is never due again until `set`.
    pub(crate) fn remove(&mut self, key: K) {
        if let Some(at) = self.by_key.remove(&key) {
            self.queue.remove(&(at, key));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Takes the keys due at `now` (deadline ≤ `now`) into `due`, earliest first. They stay
    /// without a deadline until `set` again, so a key that is due again at once is handled at
    /// the next call, not in a loop.
    pub(crate) fn take_due(&mut self, now: Instant, due: &mut Vec<K>) {
        while let Some(&(at, key)) = self.queue.first() {
            if at > now {
                return;
            }
            self.queue.pop_first();
            self.by_key.remove(&key);
            due.push(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.by_key.len(), self.queue.len());
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn due_keys_come_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.set(3u64, ms(t0, 30));
        timers.set(1, ms(t0, 10));
        timers.set(2, ms(t0, 20));
        assert_eq!(timers.next(), Some(ms(t0, 10)));

        let mut due = Vec::new();
        timers.take_due(ms(t0, 5), &mut due);
        assert!(due.is_empty());
        timers.take_due(ms(t0, 20), &mut due);
        assert_eq!(due, vec![1, 2]);
        assert_eq!(timers.next(), Some(ms(t0, 30)));
        due.clear();
        timers.take_due(ms(t0, 100), &mut due);
        assert_eq!(due, vec![3]);
        assert_eq!(timers.next(), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn next_is_the_minimum_after_moves() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for (key, at) in [(1u64, 50), (2, 40), (3, 60)] {
            timers.set(key, ms(t0, at));
        }
        assert_eq!(timers.next(), Some(ms(t0, 40)));
        // Moving the earliest later, and another earlier.
        timers.set(2, ms(t0, 70));
        assert_eq!(timers.next(), Some(ms(t0, 50)));
        timers.set(3, ms(t0, 5));
        assert_eq!(timers.next(), Some(ms(t0, 5)));
        // Setting the same deadline twice keeps one entry.
        timers.set(3, ms(t0, 5));
        assert_eq!(timers.len(), 3);

        let mut due = Vec::new();
        timers.take_due(ms(t0, 50), &mut due);
        assert_eq!(due, vec![3, 1]);
        assert_eq!(timers.next(), Some(ms(t0, 70)));
    }

    #[test]
    fn removed_keys_are_never_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.set(1u64, ms(t0, 10));
        timers.set(2, ms(t0, 10));
        timers.set(3, ms(t0, 20));
        timers.remove(2);
        timers.remove(2);
        timers.remove(9);
        timers.remove(3);
        assert_eq!(timers.next(), Some(ms(t0, 10)));

        let mut due = Vec::new();
        timers.take_due(ms(t0, 1000), &mut due);
        assert_eq!(due, vec![1]);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_key_due_again_at_once_waits_for_the_next_call() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.set(1u64, t0);
        let mut due = Vec::new();
        timers.take_due(t0, &mut due);
        assert_eq!(due, vec![1]);
        // Handling it asked for another wake-up right now (as str0m's pacer does).
        timers.set(1, t0);
        assert_eq!(timers.next(), Some(t0));
        due.clear();
        timers.take_due(t0, &mut due);
        assert_eq!(due, vec![1]);
    }
}
