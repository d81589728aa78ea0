//! Embedded STUN/TURN relay.
//!
//! [`core`] is the sans-IO relay (RFC 8489 STUN, RFC 8656 TURN with UDP relays) with coturn
//! `use-auth-secret` REST credentials, a deny-by-default peer policy, quotas and bandwidth
//! limits. [`TurnServer`] runs it on tokio: UDP and TCP on one address, optionally TLS, and
//! UDP relay sockets on a port range.

mod config;
pub mod core;
mod driver;
mod metrics;

pub use config::TurnConfig;
pub use driver::{LocalAddrs, StartError, TurnServer};
pub use metrics::Metrics;
