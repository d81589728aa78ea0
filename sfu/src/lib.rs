//! Media plane: sans-IO room engine on str0m and its socket driver (not built yet).
//!
//! Placeholder: this crate holds no code yet; see the open issues.
