//! Operator-facing configuration of the embedded relay.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use convene_auth::Secret;
use ipnet::IpNet;

/// Everything [`crate::TurnServer::start`] needs. [`TurnConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// UDP and TCP listener (STUN/TURN). Default `0.0.0.0:3478`; port 0 picks a free port,
    /// the same for UDP and TCP.
    pub listen: SocketAddr,
    /// TLS listener (`turns:`); default none. Needs `tls_cert` and `tls_key`.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for TLS.
    pub tls_key: Option<PathBuf>,
    /// Address the relay sockets bind to. Default: the IP of `listen`.
    pub relay_ip: Option<IpAddr>,
    /// Address given to clients as their relayed address, when the server sits behind a 1:1
    /// NAT (cloud VMs). Default: the relay bind address, which must then not be unspecified.
    pub relay_public_ip: Option<IpAddr>,
    /// UDP ports for relay sockets. Default `49152..=65535` (RFC 8656 §7.2 recommends the
    /// dynamic range).
    pub relay_ports: RangeInclusive<u16>,
    /// REALM of the long-term credentials. Default `convene`.
    pub realm: String,
    /// The `use-auth-secret` shared secret the REST credentials are derived from.
    pub secret: Secret,
    /// Peer networks reachable although the default deny list covers them (loopback,
    /// RFC 1918, CGNAT, link-local, multicast, ...). Default empty.
    pub allow_peers: Vec<IpNet>,
    /// Allocations per user (486 beyond). Default 10.
    pub user_quota: u32,
    /// Allocations on this server (508 beyond). Default 10 000.
    pub total_quota: u32,
    /// Bytes per second per allocation, both directions together. Default unlimited.
    pub bandwidth_limit: Option<u64>,
    /// NONCE lifetime before a 438 renews it. Default 10 minutes.
    pub nonce_lifetime: Duration,
    /// Concurrent TCP and TLS connections; more are refused until one closes. Default 4096.
    pub max_stream_connections: usize,
}

impl TurnConfig {
    pub const DEFAULT_PORT: u16 = 3478;
    pub const DEFAULT_TLS_PORT: u16 = 5349;

    pub fn new(secret: Secret) -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Self::DEFAULT_PORT),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            relay_ip: None,
            relay_public_ip: None,
            relay_ports: 49152..=65535,
            realm: "convene".into(),
            secret,
            allow_peers: Vec::new(),
            user_quota: 10,
            total_quota: 10_000,
            bandwidth_limit: None,
            nonce_lifetime: Duration::from_secs(600),
            max_stream_connections: 4096,
        }
    }

    pub(crate) fn relay_bind_ip(&self) -> IpAddr {
        self.relay_ip.unwrap_or(self.listen.ip())
    }

    pub(crate) fn core_config(&self) -> crate::core::Config {
        crate::core::Config {
            realm: self.realm.clone(),
            secret: self.secret.clone(),
            relay_addr: self.relay_public_ip.unwrap_or(self.relay_bind_ip()),
            relay_ports: self.relay_ports.clone(),
            allow_peers: self.allow_peers.clone(),
            user_quota: self.user_quota,
            total_quota: self.total_quota,
            bandwidth_limit: self.bandwidth_limit,
            nonce_lifetime: self.nonce_lifetime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = TurnConfig::new(Secret::new("s"));
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 3478)));
        assert_eq!(config.relay_ports, 49152..=65535);
        assert_eq!((config.user_quota, config.total_quota), (10, 10_000));
        assert!(config.allow_peers.is_empty() && config.tls_listen.is_none());
        assert_eq!(config.bandwidth_limit, None);
        // The relayed address defaults to the listening IP, overridable for NAT.
        let mut config = TurnConfig {
            listen: "192.0.2.1:3478".parse().unwrap_or(config.listen),
            ..config
        };
        assert_eq!(config.core_config().relay_addr, IpAddr::from([192, 0, 2, 1]));
        config.relay_public_ip = Some(IpAddr::from([198, 51, 100, 1]));
        assert_eq!(config.core_config().relay_addr, IpAddr::from([198, 51, 100, 1]));
        assert_eq!(config.relay_bind_ip(), IpAddr::from([192, 0, 2, 1]));
    }
}
