//! Embedded STUN/TURN relay (not built yet).
//!
//! Placeholder: this crate holds no code yet; see the open issues.
