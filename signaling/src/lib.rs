//! WebSocket signaling and WHIP/WHEP (not built yet).
//!
//! Placeholder: this crate holds no code yet; see the open issues.
