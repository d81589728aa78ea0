//! Relay counters, as a plain snapshot the server exports (e.g. to Prometheus).

/// Counters since start; `allocations`, `permissions` and `channels` are current values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Allocations with a bound relay port right now.
    pub allocations: u64,
    /// Allocations ever created.
    pub allocations_total: u64,
    /// Installed permissions right now.
    pub permissions: u64,
    /// Bound channels right now.
    pub channels: u64,
    pub relayed_packets_to_peers: u64,
    pub relayed_bytes_to_peers: u64,
    pub relayed_packets_to_clients: u64,
    pub relayed_bytes_to_clients: u64,
    /// Requests with expired usernames or wrong MESSAGE-INTEGRITY (not the first 401 challenge).
    pub auth_failures: u64,
    /// CreatePermission/ChannelBind refused with 403 by the peer policy.
    pub peers_denied: u64,
    /// Allocate requests refused with 486 (user quota) or 508 (server cap).
    pub quota_rejections: u64,
    /// Packets dropped for lack of a permission.
    pub dropped_no_permission: u64,
    /// Packets dropped by the per-allocation bandwidth limit.
    pub dropped_bandwidth: u64,
}
