//! Permissions (RFC 8656 §9, 300 s), Send/Data indications (§11), channels (§12, 600 s).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use convene_turn::core::{Command, Discard};

#[test]
fn send_indication_needs_a_permission_and_data_comes_back_as_data_indication() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);

    assert_eq!(
        h.send_indication(&alice, peer(9000), b"early"),
        (Err(Discard::NoPermission), vec![])
    );
    assert_eq!(
        h.peer_sends(port, peer(9000), b"early"),
        (Err(Discard::NoPermission), vec![])
    );

    assert!(is_success(&h.create_permission(&mut alice, &[peer(9000)])));
    let (result, out) = h.send_indication(&alice, peer(9000), b"hello");
    result.unwrap();
    assert_eq!(
        out,
        vec![Command::SendToPeer {
            relay_port: port,
            peer: peer(9000),
            payload: b"hello".to_vec()
        }]
    );

    // Permissions are per IP address: any port of the peer may answer (RFC 8656 §9).
    let (result, out) = h.peer_sends(port, peer(9001), b"world");
    result.unwrap();
    let response = response_to(&out, alice.addr).unwrap();
    assert_eq!(data_indication(&response), (peer(9001), b"world".to_vec()));

    let stranger = ([198, 51, 100, 8], 9000).into();
    assert_eq!(
        h.peer_sends(port, stranger, b"spam"),
        (Err(Discard::NoPermission), vec![])
    );
    let m = h.server.metrics();
    assert_eq!((m.relayed_packets_to_peers, m.relayed_bytes_to_peers), (1, 5));
    assert_eq!((m.relayed_packets_to_clients, m.relayed_bytes_to_clients), (1, 5));
    assert_eq!(m.dropped_no_permission, 3);
}

#[test]
fn permission_expires_after_300_seconds_unless_refreshed() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    h.create_permission(&mut alice, &[peer(9000)]);
    assert_eq!(h.server.poll_timeout(), Some(h.now + secs(300)));

    h.advance(secs(200));
    h.create_permission(&mut alice, &[peer(9000)]);
    assert_eq!(h.server.metrics().permissions, 1);
    h.advance(secs(299));
    assert!(h.peer_sends(port, peer(9000), b"x").0.is_ok());
    h.advance(secs(1));
    assert_eq!(h.server.metrics().permissions, 0);
    assert_eq!(h.peer_sends(port, peer(9000), b"x").0, Err(Discard::NoPermission));
    assert_eq!(
        h.send_indication(&alice, peer(9000), b"x").0,
        Err(Discard::NoPermission)
    );
}

#[test]
fn channel_data_flows_both_ways_once_bound() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    assert_eq!(
        h.send(alice.addr, &channel_data(0x4001, b"early")).0,
        Err(Discard::UnboundChannel)
    );

    assert!(is_success(&h.channel_bind(&mut alice, 0x4001, peer(9000))));
    let m = h.server.metrics();
    assert_eq!((m.channels, m.permissions), (1, 1));

    let (result, out) = h.send(alice.addr, &channel_data(0x4001, b"ping"));
    result.unwrap();
    assert_eq!(
        out,
        vec![Command::SendToPeer {
            relay_port: port,
            peer: peer(9000),
            payload: b"ping".to_vec()
        }]
    );

    // UDP ChannelData is not padded; a truncated frame is dropped.
    let (_, out) = h.peer_sends(port, peer(9000), b"pong!");
    assert_eq!(response_to(&out, alice.addr).unwrap(), channel_data(0x4001, b"pong!"));
    assert_eq!(
        h.send(alice.addr, &channel_data(0x4001, b"ping")[..6]).0,
        Err(Discard::Malformed)
    );

    // Another port of the same peer has no channel: it arrives as a Data indication.
    let (_, out) = h.peer_sends(port, peer(9001), b"other");
    assert_eq!(
        data_indication(&response_to(&out, alice.addr).unwrap()),
        (peer(9001), b"other".to_vec())
    );
}

#[test]
fn channel_data_to_stream_clients_is_padded() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice").tcp();
    let port = h.allocate_ok(&mut alice);
    h.channel_bind(&mut alice, 0x4abc, peer(9000));
    let (_, out) = h.peer_sends(port, peer(9000), b"pong!");
    let mut expected = channel_data(0x4abc, b"pong!");
    expected.extend_from_slice(&[0, 0, 0]);
    assert_eq!(response_to(&out, alice.addr).unwrap(), expected);
}

#[test]
fn channel_numbers_and_bindings_are_validated() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    for bad in [0x3fff, 0x8000, 0xbfff, 0xffff] {
        assert_eq!(
            error_code(&h.channel_bind(&mut alice, bad, peer(9000))),
            Some(400),
            "{bad:#x}"
        );
    }
    assert!(is_success(&h.channel_bind(&mut alice, 0x4000, peer(9000))));
    assert!(is_success(&h.channel_bind(&mut alice, 0x4fff, peer(9001))));
    // The RFC 5766 range, still used by coturn's client.
    assert!(is_success(&h.channel_bind(&mut alice, 0x7fff, peer(9003))));
    // Refreshing the same binding is fine; rebinding either side elsewhere is not (§11.2).
    assert!(is_success(&h.channel_bind(&mut alice, 0x4000, peer(9000))));
    assert_eq!(error_code(&h.channel_bind(&mut alice, 0x4000, peer(9002))), Some(400));
    assert_eq!(error_code(&h.channel_bind(&mut alice, 0x4001, peer(9000))), Some(400));
    assert_eq!(h.server.metrics().channels, 3);
}

#[test]
fn channel_expires_after_600_seconds_even_with_a_live_permission() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    h.refresh(&mut alice, 3600);
    h.channel_bind(&mut alice, 0x4001, peer(9000));
    for _ in 0..2 {
        h.advance(secs(250));
        h.create_permission(&mut alice, &[peer(9000)]);
    }
    h.advance(secs(99));
    assert!(h.send(alice.addr, &channel_data(0x4001, b"x")).0.is_ok());
    h.advance(secs(1));
    assert_eq!(h.server.metrics().channels, 0);
    assert_eq!(
        h.send(alice.addr, &channel_data(0x4001, b"x")).0,
        Err(Discard::UnboundChannel)
    );
    let (_, out) = h.peer_sends(port, peer(9000), b"late");
    assert_eq!(
        data_indication(&response_to(&out, alice.addr).unwrap()),
        (peer(9000), b"late".to_vec())
    );
    // The expired channel may be bound again.
    assert!(is_success(&h.channel_bind(&mut alice, 0x4001, peer(9000))));
}

#[test]
fn bandwidth_limit_drops_packets_over_the_budget() {
    let mut h = Harness::new(common::Config {
        bandwidth_limit: Some(1_000),
        ..config()
    });
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    h.channel_bind(&mut alice, 0x4001, peer(9000));
    let packet = [7u8; 200];
    let results: Vec<bool> = (0..4)
        .map(|_| h.send(alice.addr, &channel_data(0x4001, &packet)).0.is_ok())
        .collect();
    assert_eq!(results, [true; 4]);
    // Both directions draw from the same budget.
    assert!(h.peer_sends(port, peer(9000), &packet).0.is_ok());
    assert_eq!(
        h.send(alice.addr, &channel_data(0x4001, &packet)).0,
        Err(Discard::BandwidthExceeded)
    );
    assert_eq!(
        h.peer_sends(port, peer(9000), &packet).0,
        Err(Discard::BandwidthExceeded)
    );
    assert_eq!(h.server.metrics().dropped_bandwidth, 2);
    h.advance(std::time::Duration::from_millis(400));
    assert!(h.send(alice.addr, &channel_data(0x4001, &packet)).0.is_ok());
    assert!(h.send(alice.addr, &channel_data(0x4001, &packet)).0.is_ok());
    assert_eq!(
        h.send(alice.addr, &channel_data(0x4001, &packet)).0,
        Err(Discard::BandwidthExceeded)
    );
}

#[test]
fn create_permission_takes_several_peers_but_not_unboundedly_many() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    let three: Vec<_> = (1..=3)
        .map(|i| std::net::SocketAddr::from(([198, 51, 100, i], 9)))
        .collect();
    assert!(is_success(&h.create_permission(&mut alice, &three)));
    assert_eq!(h.server.metrics().permissions, 3);
    let many: Vec<_> = (0..65)
        .map(|i| std::net::SocketAddr::from(([198, 51, 101, i], 9)))
        .collect();
    assert_eq!(error_code(&h.create_permission(&mut alice, &many)), Some(400));
    assert_eq!(error_code(&h.create_permission(&mut alice, &[])), Some(400));
}
