//! Per-client relay state: RFC 8656 §2.2 "allocation", its permissions (§9) and channels (§12).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::message::{IntegrityKey, TransactionId};

use super::filter::canonical;

#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) relay_port: u16,
    /// The full REST username (`expiry:user`); later requests must present the same one
    /// (RFC 8656 §5, otherwise 441).
    pub(crate) username: String,
    /// The quota key: the user part of the REST username.
    pub(crate) user: String,
    pub(crate) key: IntegrityKey,
    pub(crate) expires_at: Instant,
    /// The Allocate transaction; a retransmission of it gets the same answer (RFC 8656 §7.2).
    pub(crate) transaction: TransactionId,
    pub(crate) state: AllocationState,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    channel_by_peer: HashMap<SocketAddr, u16>,
    bandwidth: Option<TokenBucket>,
}

#[derive(Debug)]
pub(crate) enum AllocationState {
    /// The driver has been asked to bind the relay port and has not answered yet.
    Binding {
        lifetime: Duration,
        fingerprint: bool,
        attempts: u8,
        ports: super::PortRequest,
        /// RESERVATION-TOKEN for the port after this one (EVEN-PORT with the R bit).
        reservation: Option<u64>,
    },
    /// The relay socket is bound; `response` answers retransmitted Allocate requests.
    Active { response: Vec<u8> },
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires_at: Instant,
}

/// Outcome of binding a channel, RFC 8656 §11.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelBindOutcome {
    Created,
    Refreshed,
    /// The number is bound to another peer, or the peer to another number: 400.
    Conflict,
}

pub(crate) struct NewAllocation {
    pub(crate) relay_port: u16,
    pub(crate) username: String,
    pub(crate) user: String,
    pub(crate) key: IntegrityKey,
    pub(crate) expires_at: Instant,
    pub(crate) transaction: TransactionId,
    pub(crate) state: AllocationState,
    pub(crate) bandwidth_limit: Option<u64>,
    pub(crate) now: Instant,
}

impl Allocation {
    pub(crate) fn new(n: NewAllocation) -> Self {
        Self {
            relay_port: n.relay_port,
            username: n.username,
            user: n.user,
            key: n.key,
            expires_at: n.expires_at,
            transaction: n.transaction,
            state: n.state,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_by_peer: HashMap::new(),
            bandwidth: n.bandwidth_limit.map(|rate| TokenBucket::new(rate, n.now)),
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        matches!(self.state, AllocationState::Active { .. })
    }

    /// Installs or refreshes the permission for `ip`; true when it is new.
    pub(crate) fn permit(&mut self, ip: IpAddr, until: Instant) -> bool {
        self.permissions.insert(canonical(ip), until).is_none()
    }

    pub(crate) fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&canonical(ip)).is_some_and(|until| *until > now)
    }

    pub(crate) fn bind_channel(&mut self, number: u16, peer: SocketAddr, until: Instant) -> ChannelBindOutcome {
        match (self.channels.get_mut(&number), self.channel_by_peer.get(&peer)) {
            (Some(channel), Some(bound)) if channel.peer == peer && *bound == number => {
                channel.expires_at = until;
                ChannelBindOutcome::Refreshed
            }
            (None, None) => {
                self.channels.insert(
                    number,
                    Channel {
                        peer,
                        expires_at: until,
                    },
                );
                self.channel_by_peer.insert(peer, number);
                ChannelBindOutcome::Created
            }
            _ => ChannelBindOutcome::Conflict,
        }
    }

    pub(crate) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|c| c.expires_at > now)
            .map(|c| c.peer)
    }

    pub(crate) fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_by_peer.get(&peer)?;
        self.channel_peer(number, now).map(|_| number)
    }

    pub(crate) fn permission_count(&self) -> usize {
        self.permissions.len()
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Drops expired permissions and channels; returns how many of each went.
    pub(crate) fn expire(&mut self, now: Instant) -> (usize, usize) {
        let permissions = self.permissions.len();
        self.permissions.retain(|_, until| *until > now);
        let channels = self.channels.len();
        self.channels.retain(|_, c| c.expires_at > now);
        if self.channels.len() != channels {
            let live = &self.channels;
            self.channel_by_peer.retain(|_, number| live.contains_key(number));
        }
        (permissions - self.permissions.len(), channels - self.channels.len())
    }

    /// The earliest instant at which something in this allocation expires.
    pub(crate) fn next_expiry(&self) -> Instant {
        let permissions = self.permissions.values().copied();
        let channels = self.channels.values().map(|c| c.expires_at);
        permissions.chain(channels).fold(self.expires_at, Instant::min)
    }

    /// Whether `len` more bytes fit in the bandwidth budget (always, without a limit).
    pub(crate) fn take_bandwidth(&mut self, len: usize, now: Instant) -> bool {
        self.bandwidth
            .as_mut()
            .is_none_or(|bucket| bucket.take(len as u64, now))
    }
}

/// A token bucket holding at most one second's worth of bytes.
#[derive(Debug)]
struct TokenBucket {
    rate: u64,
    tokens: u64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            refilled_at: now,
        }
    }

    fn take(&mut self, amount: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let refill = (u128::from(self.rate) * elapsed.as_nanos() / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(self.rate);
            self.refilled_at = now;
        }
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_one_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, t0);
        assert!(b.take(1_000, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        assert!(!b.take(1, t0 + Duration::from_millis(500)));
        // A long pause refills at most one second's worth.
        assert!(b.take(1_000, t0 + Duration::from_secs(60)));
        assert!(!b.take(1, t0 + Duration::from_secs(60)));
    }
}
