//! Real-time events for users: an in-process bus with a per-user sequence and a bounded
//! backlog, served over `GET /ws/events`.
//!
//! Every event a user receives gets the next number of that user's stream. A client that
//! reconnects with `last_seq` gets exactly what it missed, from the backlog, then live events;
//! if the backlog no longer reaches back that far (or the server restarted, which changes
//! the stream `epoch`) it is told to resync over REST instead. Features publish with
//! [`EventBus::publish`]; multi-node deployments will relay the same envelopes over Redis.

mod ws;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

pub(crate) use ws::{CLOSE_SLOW_CONSUMER, close, router};
pub use ws::{READ_BUFFER, sized};

/// Events kept per user for resuming clients.
const BACKLOG: usize = 1024;
/// Live events buffered per connection; a client further behind is disconnected.
const LIVE_BUFFER: usize = 256;

/// One event as a client receives it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Envelope {
    /// Position in the recipient's stream: consecutive, starting at 1.
    pub seq: u64,
    /// Dotted event name, such as `message.created` or `task.moved`.
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    /// Unix milliseconds when the event was published.
    pub at: i64,
}

#[derive(Default)]
struct Stream {
    next_seq: u64,
    backlog: VecDeque<Arc<Envelope>>,
    live: Option<broadcast::Sender<Arc<Envelope>>>,
}

/// What a connecting client gets: the missed events and a receiver for what follows.
pub(crate) struct Subscription {
    pub(crate) replay: Result<Vec<Arc<Envelope>>, Resync>,
    pub(crate) live: broadcast::Receiver<Arc<Envelope>>,
}

/// The backlog cannot bridge the gap: the client must reload state over REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resync {
    pub(crate) latest_seq: u64,
}

pub struct EventBus {
    /// Changes on every start: sequence numbers from another epoch mean nothing here.
    epoch: String,
    streams: Mutex<HashMap<String, Stream>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            streams: Mutex::new(HashMap::new()),
        }
    }
}

impl EventBus {
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Appends the event to each recipient's stream (once per distinct user).
    pub fn publish<'a>(&self, recipients: impl IntoIterator<Item = &'a str>, kind: &str, data: &serde_json::Value) {
        let at = chrono::Utc::now().timestamp_millis();
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        for user in recipients {
            if !seen.insert(user) {
                continue;
            }
            let stream = streams.entry(user.to_owned()).or_default();
            stream.next_seq += 1;
            let envelope = Arc::new(Envelope {
                seq: stream.next_seq,
                kind: kind.to_owned(),
                data: data.clone(),
                at,
            });
            if stream.backlog.len() == BACKLOG {
                stream.backlog.pop_front();
            }
            stream.backlog.push_back(envelope.clone());
            if let Some(live) = &stream.live {
                // No receivers is fine: the event waits in the backlog.
                let _ = live.send(envelope);
            }
        }
    }

    /// Subscribes `user`, replaying what came after `last_seq` (of this epoch).
    pub(crate) fn subscribe(&self, user: &str, resume: Option<(u64, &str)>) -> Subscription {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let stream = streams.entry(user.to_owned()).or_default();
        // Subscribing under the same lock as the snapshot: nothing falls between the two.
        let live = stream
            .live
            .get_or_insert_with(|| broadcast::channel(LIVE_BUFFER).0)
            .subscribe();
        let latest_seq = stream.next_seq;
        let replay = match resume {
            None => Ok(Vec::new()),
            Some((last, epoch)) if epoch == self.epoch && last <= latest_seq => {
                let oldest = stream.backlog.front().map_or(latest_seq + 1, |e| e.seq);
                if last + 1 >= oldest {
                    Ok(stream.backlog.iter().filter(|e| e.seq > last).cloned().collect())
                } else {
                    Err(Resync { latest_seq })
                }
            }
            Some(_) => Err(Resync { latest_seq }),
        };
        Subscription { replay, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sequences_are_per_user_and_consecutive() {
        let bus = EventBus::default();
        bus.publish(["a", "b", "a"], "x.one", &json!(1));
        bus.publish(["a"], "x.two", &json!(2));
        let sub = bus.subscribe("a", Some((0, bus.epoch())));
        let seqs: Vec<_> = sub.replay.unwrap().iter().map(|e| (e.seq, e.kind.clone())).collect();
        assert_eq!(seqs, [(1, "x.one".to_owned()), (2, "x.two".to_owned())]);
        let b = bus.subscribe("b", Some((0, bus.epoch()))).replay.unwrap();
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn resume_replays_exactly_the_gap_then_live() {
        let bus = EventBus::default();
        for i in 0..5 {
            bus.publish(["a"], "n", &json!(i));
        }
        let mut sub = bus.subscribe("a", Some((3, bus.epoch())));
        assert_eq!(sub.replay.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        bus.publish(["a"], "n", &json!(5));
        assert_eq!(sub.live.try_recv().map(|e| e.seq), Ok(6));
    }

    #[test]
    fn gaps_beyond_the_backlog_or_epoch_need_resync() {
        let bus = EventBus::default();
        for i in 0..(BACKLOG + 10) {
            bus.publish(["a"], "n", &json!(i));
        }
        let latest = (BACKLOG + 10) as u64;
        assert_eq!(
            bus.subscribe("a", Some((5, bus.epoch()))).replay.err(),
            Some(Resync { latest_seq: latest })
        );
        assert!(bus.subscribe("a", Some((10, bus.epoch()))).replay.is_ok());
        assert!(bus.subscribe("a", Some((10, "old-epoch"))).replay.is_err());
        assert!(bus.subscribe("a", Some((latest + 1, bus.epoch()))).replay.is_err());
    }
}
