//! In-memory chat state that needs no durability: per-channel fan-out for `/ws/chat/{id}`,
//! the typing throttle, the per-user message rate limit and who is connected (presence).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// Events buffered per `/ws/chat` connection; a client further behind is disconnected.
const CHANNEL_BUFFER: usize = 256;
/// A typing indicator is shown this long unless renewed.
pub(crate) const TYPING_TTL: Duration = Duration::from_secs(5);
/// Typing notices from one user in one channel are forwarded at most this often.
const TYPING_THROTTLE: Duration = Duration::from_secs(2);
/// Message rate limit: a burst of this many, refilled at `RATE_REFILL_PER_SEC`.
const RATE_BURST: f64 = 30.0;
const RATE_REFILL_PER_SEC: f64 = 1.0;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A user's presence: online (a connected event stream), idle (connected, said so), offline;
/// or focusing, while a focus session of the user runs (derived from the sessions, see
/// `presence.rs`; never a connection state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Online,
    Idle,
    Offline,
    Focusing,
}

#[derive(Default)]
struct Connection {
    sockets: usize,
    idle: bool,
}

impl Connection {
    fn status(&self) -> Status {
        match (self.sockets, self.idle) {
            (0, _) => Status::Offline,
            (_, true) => Status::Idle,
            (_, false) => Status::Online,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One event of a channel's live stream, prepared once for all of its sockets.
#[derive(Debug, Clone)]
pub(crate) struct ChannelEvent {
    /// The frame, `{"type", "data"}`: serialized once, shared (not copied) by every socket.
    pub(crate) text: Utf8Bytes,
    /// Whose stream the event ends.
    pub(crate) revokes: Revokes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Revokes {
    Nobody,
    /// The channel was deleted.
    Everyone,
    /// The user left or was removed: the end of their stream unless the channel is public.
    Member(String),
}

impl ChannelEvent {
    fn new(kind: &str, data: &serde_json::Value) -> Self {
        let revokes = match kind {
            "channel.deleted" => Revokes::Everyone,
            "channel.member_removed" => data["user_id"]
                .as_str()
                .map_or(Revokes::Nobody, |u| Revokes::Member(u.to_owned())),
            _ => Revokes::Nobody,
        };
        let text = serde_json::json!({ "type": kind, "data": data }).to_string().into();
        Self { text, revokes }
    }

    /// Whether the event ends `user_id`'s stream of a channel that is `public` or not.
    pub(crate) fn ends_stream_of(&self, user_id: &str, public: bool) -> bool {
        match &self.revokes {
            Revokes::Nobody => false,
            Revokes::Everyone => true,
            Revokes::Member(u) => !public && u == user_id,
        }
    }
}

#[derive(Default)]
pub(crate) struct Realtime {
    channels: Mutex<HashMap<String, broadcast::Sender<ChannelEvent>>>,
    typing: Mutex<HashMap<(String, String), Instant>>,
    rate: Mutex<HashMap<String, Bucket>>,
    presence: Mutex<HashMap<String, Connection>>,
}

impl Realtime {
    /// Sends `{"type", "data"}` to the channel's `/ws/chat` subscribers, if any.
    pub(crate) fn to_channel(&self, channel_id: &str, kind: &str, data: &serde_json::Value) {
        let mut channels = lock(&self.channels);
        if let Some(tx) = channels.get(channel_id) {
            if tx.receiver_count() == 0 {
                channels.remove(channel_id);
                return;
            }
            // A send fails only without receivers, checked above.
            let _ = tx.send(ChannelEvent::new(kind, data));
        }
    }

    pub(crate) fn subscribe_channel(&self, channel_id: &str) -> broadcast::Receiver<ChannelEvent> {
        lock(&self.channels)
            .entry(channel_id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_BUFFER).0)
            .subscribe()
    }

    /// Whether a typing notice from `user` in `channel` should be forwarded now.
    pub(crate) fn typing(&self, channel_id: &str, user_id: &str, now: Instant) -> bool {
        let mut typing = lock(&self.typing);
        let key = (channel_id.to_owned(), user_id.to_owned());
        if typing
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < TYPING_THROTTLE)
        {
            return false;
        }
        typing.retain(|_, last| now.duration_since(*last) < TYPING_TTL);
        typing.insert(key, now);
        true
    }

    /// Forgets `user`'s typing notice in `channel` (they sent the message).
    pub(crate) fn stop_typing(&self, channel_id: &str, user_id: &str) {
        lock(&self.typing).remove(&(channel_id.to_owned(), user_id.to_owned()));
    }

    /// Takes one message from `user`'s budget, or says how long until one is available.
    pub(crate) fn take_message(&self, user_id: &str, now: Instant) -> Result<(), Duration> {
        let mut rate = lock(&self.rate);
        let bucket = rate.entry(user_id.to_owned()).or_insert(Bucket {
            tokens: RATE_BURST,
            at: now,
        });
        let refilled = now.duration_since(bucket.at).as_secs_f64() * RATE_REFILL_PER_SEC;
        bucket.tokens = (bucket.tokens + refilled).min(RATE_BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / RATE_REFILL_PER_SEC))
        }
    }

    pub(crate) fn status(&self, user_id: &str) -> Status {
        lock(&self.presence)
            .get(user_id)
            .map_or(Status::Offline, Connection::status)
    }

    /// Applies `change` to `user`'s connection state; returns the new status if it changed.
    fn change(&self, user_id: &str, change: impl FnOnce(&mut Connection)) -> Option<Status> {
        let mut presence = lock(&self.presence);
        let conn = presence.entry(user_id.to_owned()).or_default();
        let before = conn.status();
        change(conn);
        let after = conn.status();
        if conn.sockets == 0 {
            presence.remove(user_id);
        }
        (before != after).then_some(after)
    }

    pub(crate) fn socket_opened(&self, user_id: &str) -> Option<Status> {
        self.change(user_id, |c| c.sockets += 1)
    }

    pub(crate) fn socket_closed(&self, user_id: &str) -> Option<Status> {
        self.change(user_id, |c| {
            c.sockets = c.sockets.saturating_sub(1);
            if c.sockets == 0 {
                c.idle = false;
            }
        })
    }

    /// Marks a connected user idle or back online; `Err` when the user has no open stream.
    pub(crate) fn set_idle(&self, user_id: &str, idle: bool) -> Result<Option<Status>, ()> {
        if self.status(user_id) == Status::Offline {
            return Err(());
        }
        Ok(self.change(user_id, |c| c.idle = idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_follows_sockets_and_idle() {
        let rt = Realtime::default();
        assert_eq!(rt.socket_opened("a"), Some(Status::Online));
        assert_eq!(rt.socket_opened("a"), None);
        assert_eq!(rt.set_idle("a", true), Ok(Some(Status::Idle)));
        assert_eq!(rt.socket_closed("a"), None);
        assert_eq!(rt.socket_closed("a"), Some(Status::Offline));
        assert_eq!(rt.set_idle("a", true), Err(()));
        assert_eq!(rt.socket_opened("a"), Some(Status::Online));
    }

    #[test]
    fn typing_is_throttled_per_user_and_channel() {
        let rt = Realtime::default();
        let t0 = Instant::now();
        assert!(rt.typing("c", "a", t0));
        assert!(!rt.typing("c", "a", t0 + Duration::from_millis(500)));
        assert!(rt.typing("c", "b", t0));
        assert!(rt.typing("c", "a", t0 + TYPING_THROTTLE));
        rt.stop_typing("c", "a");
        assert!(rt.typing("c", "a", t0 + TYPING_THROTTLE));
    }

    #[test]
    fn channel_events_are_serialized_once_and_know_whom_they_revoke() {
        let rt = Realtime::default();
        let (mut a, mut b) = (rt.subscribe_channel("c"), rt.subscribe_channel("c"));
        rt.to_channel("c", "message.created", &serde_json::json!({ "body": "hi" }));
        let (ea, eb) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        let frame: serde_json::Value = serde_json::from_str(ea.text.as_str()).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({ "type": "message.created", "data": { "body": "hi" } })
        );
        // Both sockets share one buffer.
        assert_eq!(ea.text.as_str().as_ptr(), eb.text.as_str().as_ptr());
        assert!(!ea.ends_stream_of("u", false));

        rt.to_channel("c", "channel.member_removed", &serde_json::json!({ "user_id": "u" }));
        let removed = a.try_recv().unwrap();
        assert!(removed.ends_stream_of("u", false));
        assert!(!removed.ends_stream_of("u", true), "public channels stay readable");
        assert!(!removed.ends_stream_of("v", false));
        rt.to_channel("c", "channel.deleted", &serde_json::json!({}));
        assert!(a.try_recv().unwrap().ends_stream_of("v", true));
    }

    #[test]
    fn message_budget_refills() {
        let rt = Realtime::default();
        let t0 = Instant::now();
        for _ in 0..30 {
            assert!(rt.take_message("a", t0).is_ok());
        }
        assert!(rt.take_message("a", t0).is_err());
        assert!(rt.take_message("b", t0).is_ok());
        assert!(rt.take_message("a", t0 + Duration::from_secs(1)).is_ok());
    }
}
