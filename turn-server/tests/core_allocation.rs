//! Allocation lifecycle (RFC 8656 §7): creation, retransmission, refresh, expiry, deletion.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use convene_turn::core::Command;
use stun_types::message::MessageWriteExt;
use turn_types::attribute::RequestedTransport;
use turn_types::message::{ALLOCATE, CREATE_PERMISSION};

#[test]
fn allocate_binds_a_relay_port_and_answers_with_relayed_and_mapped_address() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let tx = h.transaction();
    let challenge = h.call_once(&mut alice, ALLOCATE, tx, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    assert_eq!(error_code(&challenge), Some(401));

    let tx = h.transaction();
    let request = alice.request(ALLOCATE, tx, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let (result, out) = h.send(alice.addr, &request);
    result.unwrap();
    let Some(Command::CreateRelay { port }) = out.first().cloned() else {
        panic!("{out:?}")
    };
    let response = response_to(&out, alice.addr).unwrap();
    assert!(is_success(&response));
    assert!(has_integrity(&response));
    assert_eq!(relayed_addr(&response), (RELAY_IP, port).into());
    assert!((50_000..=50_099).contains(&port));
    assert_eq!(mapped_addr(&response), alice.addr.addr);
    assert_eq!(lifetime(&response), Some(600));
    let m = stun_types::message::Message::from_bytes(&response).unwrap();
    m.validate_integrity(&alice.credentials().into()).unwrap();
    assert_eq!(h.server.metrics().allocations, 1);

    // A retransmission gets the same answer and no second relay (RFC 8656 §7.2).
    let (_, again) = h.send(alice.addr, &request);
    assert_eq!(
        again,
        vec![Command::SendToClient {
            to: alice.addr,
            payload: response
        }]
    );

    // A new Allocate on the same 5-tuple is a mismatch.
    assert_eq!(error_code(&h.allocate(&mut alice)), Some(437));
}

#[test]
fn allocation_expires_after_its_lifetime() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    assert_eq!(h.server.poll_timeout(), Some(h.now + secs(600)));

    assert!(h.advance(secs(599)).is_empty());
    let freed = h.advance(secs(1));
    assert_eq!(freed, vec![Command::FreeRelay { port }]);
    assert_eq!(h.server.metrics().allocations, 0);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(error_code(&h.create_permission(&mut alice, &[peer(9)])), Some(437));
}

#[test]
fn refresh_extends_the_lifetime() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    h.advance(secs(500));
    let response = h.refresh(&mut alice, 1200);
    assert!(is_success(&response));
    assert_eq!(lifetime(&response), Some(1200));

    // Past the original 600 s the allocation still serves requests.
    assert!(h.advance(secs(600)).is_empty());
    assert!(is_success(&h.create_permission(&mut alice, &[peer(9)])));
    assert_eq!(h.advance(secs(600)), vec![Command::FreeRelay { port }]);
}

#[test]
fn refresh_lifetime_is_clamped_to_the_maximum() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    assert_eq!(lifetime(&h.refresh(&mut alice, 86_400)), Some(3600));
}

#[test]
fn refresh_with_lifetime_zero_frees_the_allocation() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    h.create_permission(&mut alice, &[peer(9)]);
    assert_eq!(h.server.metrics().permissions, 1);

    let request = alice.request(turn_types::message::REFRESH, h.transaction(), &|m, _| {
        m.add_attribute(&turn_types::attribute::Lifetime::new(0)).unwrap();
    });
    let (_, out) = h.send(alice.addr, &request);
    assert_eq!(out[0], Command::FreeRelay { port });
    let response = response_to(&out, alice.addr).unwrap();
    assert!(is_success(&response));
    assert_eq!(lifetime(&response), Some(0));
    let metrics = h.server.metrics();
    assert_eq!((metrics.allocations, metrics.permissions), (0, 0));
    assert_eq!(h.server.poll_timeout(), None);

    // The 5-tuple is free for a new allocation.
    h.allocate_ok(&mut alice);
}

#[test]
fn closing_a_stream_connection_frees_its_allocation() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice").tcp();
    let port = h.allocate_ok(&mut alice);
    h.server.handle_client_closed(alice.addr);
    assert_eq!(h.drain(), vec![Command::FreeRelay { port }]);
}

#[test]
fn a_port_that_cannot_be_bound_is_replaced_then_508() {
    let mut h = Harness::new(config());
    h.auto_bind = false;
    let mut alice = TestClient::new(1000, "alice");
    let tx = h.transaction();
    h.call_once(&mut alice, ALLOCATE, tx, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let request = alice.request(ALLOCATE, h.transaction(), &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let (_, out) = h.send(alice.addr, &request);
    let Some(Command::CreateRelay { port: first }) = out.first().cloned() else {
        panic!("{out:?}")
    };
    assert_eq!(out.len(), 1, "no answer before the port is bound");

    // One failure: another port is tried; success then answers the client.
    h.server.handle_relay_bound(first, false, h.now);
    let Some(Command::CreateRelay { port: second }) = h.server.poll_command() else {
        panic!()
    };
    assert_ne!(first, second);
    h.server.handle_relay_bound(second, true, h.now);
    let response = response_to(&h.drain(), alice.addr).unwrap();
    assert_eq!(relayed_addr(&response).port(), second);

    // A client whose ports all fail gets 508 and holds nothing.
    let mut bob = TestClient::new(2000, "bob");
    let tx = h.transaction();
    h.call_once(&mut bob, ALLOCATE, tx, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let request = bob.request(ALLOCATE, h.transaction(), &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let (_, mut out) = h.send(bob.addr, &request);
    let mut response = None;
    for _ in 0..8 {
        let Some(Command::CreateRelay { port }) = out.pop() else {
            panic!("{out:?}")
        };
        h.server.handle_relay_bound(port, false, h.now);
        out = h.drain();
        response = response_to(&out, bob.addr);
    }
    assert_eq!(error_code(&response.unwrap()), Some(508));
    assert_eq!(h.server.metrics().allocations, 1);
    assert_eq!(error_code(&h.create_permission(&mut bob, &[peer(9)])), Some(437));
}

#[test]
fn only_udp_relays_are_offered() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let response = h.call(&mut alice, ALLOCATE, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
            .unwrap();
    });
    assert_eq!(error_code(&response), Some(442));
    assert!(has_integrity(&response));
    let response = h.call(&mut alice, ALLOCATE, &|_, _| {});
    assert_eq!(error_code(&response), Some(400));
}

#[test]
fn requests_without_an_allocation_get_437() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    assert_eq!(error_code(&h.refresh(&mut alice, 600)), Some(437));
    let response = h.call(&mut alice, CREATE_PERMISSION, &|m, tx| {
        m.add_attribute(&turn_types::attribute::XorPeerAddress::new(peer(1), tx))
            .unwrap();
    });
    assert_eq!(error_code(&response), Some(437));
}

fn allocate_with(
    h: &mut Harness,
    client: &mut TestClient,
    extra: impl Fn(&mut stun_types::message::MessageWriteVec) + 'static,
) -> Vec<u8> {
    h.call(client, ALLOCATE, &move |m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        extra(m);
    })
}

fn reservation_token(bytes: &[u8]) -> Option<u64> {
    let m = stun_types::message::Message::from_bytes(bytes).unwrap();
    m.attribute::<turn_types::attribute::ReservationToken>()
        .ok()
        .map(|t| t.token())
}

#[test]
fn even_port_with_reservation_holds_the_next_port_for_30_seconds() {
    let mut h = Harness::new(config());
    let mut rtp = TestClient::new(1000, "alice");
    let response = allocate_with(&mut h, &mut rtp, |m| {
        m.add_attribute(&turn_types::attribute::EvenPort::new(true)).unwrap();
    });
    let port = relayed_addr(&response).port();
    assert_eq!(port % 2, 0);
    let token = reservation_token(&response).expect("RESERVATION-TOKEN in the answer");
    assert_eq!(h.server.poll_timeout(), Some(h.now + secs(30)));

    // The token yields exactly the next port, once.
    let mut rtcp = TestClient::new(1001, "alice");
    let response = allocate_with(&mut h, &mut rtcp, move |m| {
        m.add_attribute(&turn_types::attribute::ReservationToken::new(token))
            .unwrap();
    });
    assert_eq!(relayed_addr(&response).port(), port + 1);
    let mut again = TestClient::new(1002, "alice");
    let response = allocate_with(&mut h, &mut again, move |m| {
        m.add_attribute(&turn_types::attribute::ReservationToken::new(token))
            .unwrap();
    });
    assert_eq!(error_code(&response), Some(508));
}

#[test]
fn unused_reservations_expire() {
    let mut h = Harness::new(Config {
        relay_ports: 50_000..=50_001,
        ..config()
    });
    let mut rtp = TestClient::new(1000, "alice");
    let response = allocate_with(&mut h, &mut rtp, |m| {
        m.add_attribute(&turn_types::attribute::EvenPort::new(true)).unwrap();
    });
    let token = reservation_token(&response).unwrap();
    // The reserved port is not handed to anyone else while held...
    assert_eq!(error_code(&h.allocate(&mut TestClient::new(2000, "bob"))), Some(508));
    // ...and is free again after 30 s, when the token no longer works.
    h.advance(secs(30));
    assert_eq!(h.allocate_ok(&mut TestClient::new(2000, "bob")), 50_001);
    let mut late = TestClient::new(1001, "alice");
    let response = allocate_with(&mut h, &mut late, move |m| {
        m.add_attribute(&turn_types::attribute::ReservationToken::new(token))
            .unwrap();
    });
    assert_eq!(error_code(&response), Some(508));
}

#[test]
fn even_port_and_reservation_token_together_are_a_bad_request() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let response = allocate_with(&mut h, &mut alice, |m| {
        m.add_attribute(&turn_types::attribute::EvenPort::new(false)).unwrap();
        m.add_attribute(&turn_types::attribute::ReservationToken::new(1))
            .unwrap();
    });
    assert_eq!(error_code(&response), Some(400));
}

#[test]
fn unknown_comprehension_required_attributes_get_420() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let response = allocate_with(&mut h, &mut alice, |m| {
        // DONT-FRAGMENT: the relay cannot set DF on its datagrams, so it does not claim to.
        m.add_attribute(&turn_types::attribute::DontFragment::new()).unwrap();
    });
    assert_eq!(error_code(&response), Some(420));
    let m = stun_types::message::Message::from_bytes(&response).unwrap();
    let unknown = m.attribute::<stun_types::attribute::UnknownAttributes>().unwrap();
    assert!(unknown.has_attribute(stun_types::attribute::AttributeType::new(0x001a)));
}

#[test]
fn a_relay_bound_after_its_allocation_is_gone_is_freed() {
    let mut h = Harness::new(config());
    h.auto_bind = false;
    let mut alice = TestClient::new(1000, "alice").tcp();
    let tx = h.transaction();
    h.call_once(&mut alice, ALLOCATE, tx, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let request = alice.request(ALLOCATE, h.transaction(), &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let (_, out) = h.send(alice.addr, &request);
    let Some(Command::CreateRelay { port }) = out.first().cloned() else {
        panic!("{out:?}")
    };
    // The connection closes while the driver binds the port.
    h.server.handle_client_closed(alice.addr);
    assert_eq!(h.drain(), vec![]);
    h.server.handle_relay_bound(port, true, h.now);
    assert_eq!(h.drain(), vec![Command::FreeRelay { port }]);
    assert_eq!(h.server.metrics().allocations, 0);
}

#[test]
fn has_allocation_follows_the_lifecycle() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice").tcp();
    assert!(!h.server.has_allocation(alice.addr));
    h.allocate_ok(&mut alice);
    assert!(h.server.has_allocation(alice.addr));
    h.refresh(&mut alice, 0);
    assert!(!h.server.has_allocation(alice.addr));
}
