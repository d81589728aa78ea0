//! Which peers a client may reach through the relay.
//!
//! An open relay lets anyone on the internet send packets from the server's address into
//! its private networks (RFC 8656 §21.3, "TURN server as a proxy into internal networks"),
//! so every address that is not globally routable is refused unless an operator allow-lists it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Deny-by-default filter over peer IP addresses with an operator allow-list.
#[derive(Debug, Clone)]
pub struct PeerFilter {
    allow: Vec<IpNet>,
    /// The server's own relay address: relaying to it would loop traffic through the server.
    relay_ip: IpAddr,
}

impl PeerFilter {
    pub fn new(allow: Vec<IpNet>, relay_ip: IpAddr) -> Self {
        Self {
            allow,
            relay_ip: canonical(relay_ip),
        }
    }

    /// Whether permissions and channels towards `ip` may be installed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        ip != self.relay_ip && !is_special(ip)
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) addresses are judged as the IPv4 address they carry, so a
/// client cannot reach 127.0.0.1 by spelling it `::ffff:127.0.0.1`.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_special_v4(v4),
        IpAddr::V6(v6) => is_special_v6(v6),
    }
}

fn is_special_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || a == 0 // 0.0.0.0/8 "this network" (RFC 791)
        || ip.is_loopback()
        || ip.is_private() // RFC 1918
        || (a == 100 && (b & 0xc0) == 64) // 100.64.0.0/10 CGNAT (RFC 6598)
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240 // 240.0.0.0/4 reserved (RFC 1112)
}

fn is_special_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // fc00::/7 unique local (RFC 4193)
        || (first & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (first & 0xffc0) == 0xfec0 // fec0::/10 deprecated site-local
        // Embeddings that translate to IPv4 elsewhere: NAT64 (64:ff9b::/96), 6to4 (2002::/16),
        // IPv4-compatible (::/96). Their IPv4 part could be private, so refuse them wholesale.
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)
        || first == 0x2002
        || ip.segments()[..6].iter().all(|s| *s == 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn filter(allow: &[&str]) -> PeerFilter {
        PeerFilter::new(
            allow.iter().map(|s| s.parse().unwrap()).collect(),
            "203.0.113.7".parse().unwrap(),
        )
    }

    #[test]
    fn denies_non_global_ranges_by_default() {
        let f = filter(&[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::10.0.0.1",
            // the server's own relay address
            "203.0.113.7",
            "::ffff:203.0.113.7",
        ] {
            assert!(!f.permits(ip.parse().unwrap()), "{ip} must be denied");
        }
    }

    #[test]
    fn permits_global_addresses() {
        let f = filter(&[]);
        for ip in [
            "8.8.8.8",
            "100.128.0.1",
            "1.1.1.1",
            "2001:db8::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(f.permits(ip.parse().unwrap()), "{ip} must be permitted");
        }
    }

    #[test]
    fn allow_list_overrides_the_deny_list() {
        let f = filter(&["127.0.0.1/32", "10.0.0.0/8", "203.0.113.7/32"]);
        assert!(f.permits("127.0.0.1".parse().unwrap()));
        assert!(f.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(f.permits("10.200.0.1".parse().unwrap()));
        assert!(f.permits("203.0.113.7".parse().unwrap()));
        assert!(!f.permits("127.0.0.2".parse().unwrap()));
        assert!(!f.permits("192.168.0.1".parse().unwrap()));
    }
}
