//! Routing datagrams on a shared socket to the peer connection they belong to.
//!
//! All peers of a worker share one UDP port, so the 5-tuple alone cannot name a peer before ICE
//! has run. A STUN binding request carries `USERNAME = <our ufrag>:<their ufrag>` (RFC 8445
//! §7.2.2), which names the peer; its source address is then learned, and DTLS/SRTP from that
//! address follows. Both lookups are hash maps: no per-packet scan over peers.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use str0m::ice::StunMessage;

/// RFC 7983 §7: a first byte in 0..=3 is STUN.
fn is_stun(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0..=3))
}

#[derive(Debug)]
pub(crate) struct Demux<K> {
    by_addr: HashMap<SocketAddr, K>,
    by_ufrag: HashMap<String, K>,
    /// Reverse index so removing a peer touches only its own entries.
    owned: HashMap<K, Owned>,
}

#[derive(Debug, Default)]
struct Owned {
    addrs: Vec<SocketAddr>,
    ufrags: Vec<String>,
}

impl<K: Copy + Eq + Hash> Demux<K> {
    pub(crate) fn new() -> Self {
        Demux {
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            owned: HashMap::new(),
        }
    }

    /// Registers a peer under its local ICE ufrag (unique per `Rtc`, random from str0m). A peer
    /// may hold several (an ICE restart adds one); registering a known one again is a no-op.
    pub(crate) fn insert(&mut self, ufrag: String, key: K) {
        let owned = self.owned.entry(key).or_default();
        if self.by_ufrag.get(&ufrag) == Some(&key) {
            return;
        }
        owned.ufrags.push(ufrag.clone());
        self.by_ufrag.insert(ufrag, key);
    }

    pub(crate) fn remove(&mut self, key: K) {
        let Some(owned) = self.owned.remove(&key) else {
            return;
        };
        for ufrag in owned.ufrags {
            if self.by_ufrag.get(&ufrag) == Some(&key) {
                self.by_ufrag.remove(&ufrag);
            }
        }
        for addr in owned.addrs {
            if self.by_addr.get(&addr) == Some(&key) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The peer a datagram from `source` belongs to. A STUN request naming a known ufrag wins
    /// over the address map (a new peer may reuse an address a departed one had) and teaches it
    /// the address.
    pub(crate) fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Option<K> {
        if is_stun(datagram)
            && let Some(key) = self.route_stun(datagram)
        {
            self.learn(source, key);
            return Some(key);
        }
        self.by_addr.get(&source).copied()
    }

    fn route_stun(&self, datagram: &[u8]) -> Option<K> {
        let msg = StunMessage::parse(datagram).ok()?;
        let (ours, _theirs) = msg.split_username()?;
        self.by_ufrag.get(ours).copied()
    }

    fn learn(&mut self, source: SocketAddr, key: K) {
        if let Some(prev) = self.by_addr.insert(source, key) {
            if prev == key {
                return;
            }
            if let Some(o) = self.owned.get_mut(&prev) {
                o.addrs.retain(|a| *a != source);
            }
        }
        if let Some(o) = self.owned.get_mut(&key) {
            o.addrs.push(source);
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.by_addr.len(), self.by_ufrag.len())
    }
}

#[cfg(test)]
mod tests {
    use str0m::ice::{StunMessage, TransId};

    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let msg = StunMessage::binding_request(username, TransId::new(), true, 0, 1, false);
        let mut buf = vec![0u8; 1500];
        let n = msg
            .to_bytes(Some(b"password"), &mut buf, |_key, _parts| [0u8; 20])
            .expect("serialize stun");
        buf.truncate(n);
        buf
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const RTP: [u8; 12] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];

    #[test]
    fn unknown_address_without_stun_is_unroutable() {
        let mut d: Demux<u32> = Demux::new();
        d.insert("aaaa".into(), 1);
        assert_eq!(d.route(addr(5000), &RTP), None);
    }

    #[test]
    fn stun_username_routes_and_teaches_the_address() {
        let mut d: Demux<u32> = Demux::new();
        d.insert("aaaa".into(), 1);
        d.insert("bbbb".into(), 2);
        assert_eq!(d.route(addr(5000), &binding_request("bbbb:remote")), Some(2));
        assert_eq!(d.route(addr(5000), &RTP), Some(2));
        assert_eq!(d.route(addr(5001), &binding_request("aaaa:other")), Some(1));
        assert_eq!(d.route(addr(5001), &RTP), Some(1));
        // Unknown ufrag from an unknown address: dropped.
        assert_eq!(d.route(addr(5002), &binding_request("zzzz:x")), None);
    }

    #[test]
    fn a_new_peer_takes_over_a_reused_address() {
        let mut d: Demux<u32> = Demux::new();
        d.insert("aaaa".into(), 1);
        d.insert("bbbb".into(), 2);
        d.route(addr(6000), &binding_request("aaaa:r"));
        d.route(addr(6000), &binding_request("bbbb:r"));
        assert_eq!(d.route(addr(6000), &RTP), Some(2));
        // Removing the old owner does not unlearn the new owner's address.
        d.remove(1);
        assert_eq!(d.route(addr(6000), &RTP), Some(2));
        d.remove(2);
        assert_eq!(d.route(addr(6000), &RTP), None);
        assert_eq!(d.len(), (0, 0));
    }

    #[test]
    fn an_ice_restart_ufrag_routes_alongside_the_old_one() {
        let mut d: Demux<u32> = Demux::new();
        d.insert("old1".into(), 1);
        d.insert("new1".into(), 1);
        d.insert("new1".into(), 1);
        assert_eq!(d.route(addr(8000), &binding_request("old1:r")), Some(1));
        assert_eq!(d.route(addr(8001), &binding_request("new1:r2")), Some(1));
        d.remove(1);
        assert_eq!(d.len(), (0, 0));
    }

    #[test]
    fn garbage_is_not_routed_and_does_not_panic() {
        let mut d: Demux<u32> = Demux::new();
        d.insert("aaaa".into(), 1);
        for junk in [&[][..], &[0u8][..], &[0, 1, 0, 200, 1, 2][..], &[1u8; 40][..]] {
            assert_eq!(d.route(addr(7000), junk), None);
        }
    }
}
