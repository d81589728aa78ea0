//! Load generator and side-by-side benchmarks for Convene (and, with the same clients, Janus).
//!
//! - [`sfu`]: rooms of publishers and subscribers, every one a real WebRTC peer (str0m, sans-IO,
//!   all on one thread), with stamped synthetic Opus/VP8 ([`media`]); loss, one-way delay, join
//!   latency, and the target's CPU and memory from `/proc` ([`report`]).
//! - [`sessions`]: join storms, idle signaling sessions, chat fan-out, authenticated REST GETs.
//! - [`search`]: the `sfu` scenario in rising steps up to the target's maximum load, then a
//!   window at 80 % of it.
//! - [`signal`]: the targets (Convene's REST + `/ws/signal` in [`convene`], Janus's videoroom in
//!   [`janus`], str0m's `chat` example in [`str0m_chat`]) behind one participant-facing
//!   interface.
//!
//! Everything runs on the current thread: call the scenarios inside a `tokio::task::LocalSet`.

pub mod convene;
pub mod janus;
pub mod media;
pub mod peer;
pub mod report;
pub mod search;
pub mod sessions;
pub mod sfu;
pub mod signal;
pub mod str0m_chat;
