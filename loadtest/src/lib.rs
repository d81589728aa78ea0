//! Load generator and side-by-side benchmarks (not built yet).
//!
//! Placeholder: this crate holds no code yet; see the open issues.
