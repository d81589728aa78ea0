//! Peer policy: non-global and own addresses get 403 unless allow-listed (RFC 8656 §21.3).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use convene_turn::core::Discard;

const DENIED: [&str; 10] = [
    "127.0.0.1:9",
    "10.0.0.1:9",
    "172.16.5.4:9",
    "192.168.1.1:9",
    "100.64.0.1:9",
    "169.254.0.1:9",
    "224.0.0.1:9",
    "0.0.0.0:9",
    "255.255.255.255:9",
    "203.0.113.1:9", // the relay address itself
];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn non_global_peers_are_forbidden_by_default() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    for peer in DENIED {
        let response = h.create_permission(&mut alice, &[addr(peer)]);
        assert_eq!(error_code(&response), Some(403), "CreatePermission {peer}");
        assert!(has_integrity(&response));
        let response = h.channel_bind(&mut alice, 0x4001, addr(peer));
        assert_eq!(error_code(&response), Some(403), "ChannelBind {peer}");
    }
    let m = h.server.metrics();
    assert_eq!((m.permissions, m.channels, m.peers_denied), (0, 0, 20));
    assert_eq!(
        h.send_indication(&alice, addr("127.0.0.1:9"), b"x").0,
        Err(Discard::NoPermission)
    );
    assert_eq!(
        h.peer_sends(port, addr("127.0.0.1:9"), b"x").0,
        Err(Discard::NoPermission)
    );
}

#[test]
fn one_forbidden_peer_fails_the_whole_request() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    let response = h.create_permission(&mut alice, &[peer(9), addr("10.0.0.1:9")]);
    assert_eq!(error_code(&response), Some(403));
    assert_eq!(h.server.metrics().permissions, 0);
    assert_eq!(h.send_indication(&alice, peer(9), b"x").0, Err(Discard::NoPermission));
}

#[test]
fn peers_of_the_other_address_family_get_443() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    assert_eq!(
        error_code(&h.create_permission(&mut alice, &[addr("[2001:db8::1]:9")])),
        Some(443)
    );
}

#[test]
fn allow_list_opens_private_ranges() {
    let config = Config {
        allow_peers: vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.1/32".parse().unwrap()],
        ..config()
    };
    let mut h = Harness::new(config);
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    assert!(is_success(&h.create_permission(
        &mut alice,
        &[addr("10.9.8.7:9"), addr("127.0.0.1:5000")]
    )));
    assert!(h.send_indication(&alice, addr("10.9.8.7:9"), b"x").0.is_ok());
    assert!(h.peer_sends(port, addr("127.0.0.1:5000"), b"x").0.is_ok());
    assert_eq!(
        error_code(&h.create_permission(&mut alice, &[addr("192.168.0.1:9")])),
        Some(403)
    );
    assert_eq!(
        error_code(&h.create_permission(&mut alice, &[addr("127.0.0.2:9")])),
        Some(403)
    );
}
