//! Embedded STUN/TURN relay.
//!
//! [`core`] is the sans-IO relay (RFC 8489 STUN, RFC 8656 TURN with UDP relays) with coturn
//! `use-auth-secret` REST credentials, a deny-by-default peer policy, quotas and bandwidth
//! limits. [`TurnServer`] runs it: UDP and TCP on one address, optionally TLS, and UDP relay
//! sockets on a port range; the UDP plane on a poll loop of its own, streams on tokio.

mod config;
pub mod core;
mod driver;
mod metrics;
mod udp;

pub use config::TurnConfig;
pub use driver::{LocalAddrs, StartError, TurnServer};
pub use metrics::Metrics;
