//! Long-term credentials with coturn's REST scheme: 401 challenges, wrong and expired
//! credentials, 438 stale nonces, 441 for a different user on an allocation.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use convene_turn::core::Command;
use stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
};
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;

fn no_relay(out: &[Command]) -> bool {
    !out.iter().any(|c| matches!(c, Command::CreateRelay { .. }))
}

#[test]
fn first_request_is_challenged_with_realm_and_nonce() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let request = alice.request(ALLOCATE, h.transaction(), &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    let (_, out) = h.send(alice.addr, &request);
    assert!(no_relay(&out));
    let response = response_to(&out, alice.addr).unwrap();
    assert_eq!(error_code(&response), Some(401));
    assert_eq!(realm(&response).as_deref(), Some(REALM));
    assert!(nonce(&response).is_some());
    assert!(!has_integrity(&response));
    // The challenge is the normal first step, not a failure.
    assert_eq!(h.server.metrics().auth_failures, 0);
    alice.nonce = nonce(&response);
    assert!(is_success(&h.allocate(&mut alice)));
}

#[test]
fn wrong_password_gets_401_and_no_relay() {
    let mut h = Harness::new(config());
    let mut mallory = TestClient::new(1000, "alice");
    mallory.password = "guessed".into();
    let response = h.allocate(&mut mallory);
    assert_eq!(error_code(&response), Some(401));
    assert!(nonce(&response).is_some());
    assert_eq!(h.server.metrics().allocations, 0);
    assert_eq!(h.server.metrics().auth_failures, 1);
}

#[test]
fn password_from_another_secret_gets_401() {
    let mut h = Harness::new(config());
    let mut mallory = TestClient::new(1000, "alice");
    mallory.password = convene_auth::turn_password(&convene_auth::Secret::new("other"), &mallory.username);
    assert_eq!(error_code(&h.allocate(&mut mallory)), Some(401));
}

#[test]
fn expired_username_gets_401_even_with_the_right_password() {
    let mut h = Harness::new(config());
    let mut late = TestClient::with_expiry(1000, "alice", T0_UNIX - 1);
    let response = h.allocate(&mut late);
    assert_eq!(error_code(&response), Some(401));
    assert_eq!(h.server.metrics().allocations, 0);

    // Credentials valid at allocation time stop working once they expire.
    let mut alice = TestClient::with_expiry(2000, "alice", T0_UNIX + 100);
    h.allocate_ok(&mut alice);
    h.advance(secs(100));
    assert_eq!(error_code(&h.refresh(&mut alice, 600)), Some(401));
    // One failed attempt for `late`, two for the refresh (the client retries once).
    assert_eq!(h.server.metrics().auth_failures, 3);
}

#[test]
fn usernames_without_an_expiry_are_refused() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    alice.username = "alice".into();
    alice.password = convene_auth::turn_password(&convene_auth::Secret::new(SECRET), "alice");
    assert_eq!(error_code(&h.allocate(&mut alice)), Some(401));
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    let old = alice.nonce.clone().unwrap();

    h.advance(secs(599));
    let tx = h.transaction();
    let response = h.call_once(&mut alice, turn_types::message::REFRESH, tx, &|_, _| {});
    assert!(is_success(&response), "the nonce is still valid");

    h.advance(secs(1));
    let tx = h.transaction();
    let response = h.call_once(&mut alice, turn_types::message::REFRESH, tx, &|_, _| {});
    assert_eq!(error_code(&response), Some(438));
    assert_eq!(realm(&response).as_deref(), Some(REALM));
    let fresh = nonce(&response).unwrap();
    assert_ne!(fresh, old);
    assert!(!has_integrity(&response));
    // A stale nonce is not an authentication failure, and the fresh nonce works.
    assert_eq!(h.server.metrics().auth_failures, 0);
    let tx = h.transaction();
    assert!(is_success(&h.call_once(
        &mut alice,
        turn_types::message::REFRESH,
        tx,
        &|_, _| {}
    )));
}

#[test]
fn nonce_of_another_client_is_not_accepted() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    let mut bob = TestClient::new(2000, "bob");
    bob.nonce = alice.nonce.clone();
    let tx = h.transaction();
    let response = h.call_once(&mut bob, ALLOCATE, tx, &|m, _| {
        m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
    });
    assert_eq!(error_code(&response), Some(438));
}

#[test]
fn another_user_on_the_same_5_tuple_gets_441() {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    h.allocate_ok(&mut alice);
    let mut bob = TestClient::new(1000, "bob");
    let response = h.create_permission(&mut bob, &[peer(1)]);
    assert_eq!(error_code(&response), Some(441));
    assert!(has_integrity(&response));
}

#[test]
fn binding_needs_no_credentials_and_reflects_the_source_address() {
    let mut h = Harness::new(config());
    let alice = TestClient::new(4321, "alice");
    let tx = h.transaction();
    let request = Message::builder(
        MessageType::from_class_method(MessageClass::Request, BINDING),
        tx,
        MessageWriteVec::new(),
    )
    .finish();
    let (_, out) = h.send(alice.addr, &request);
    let response = response_to(&out, alice.addr).unwrap();
    assert!(is_success(&response));
    assert_eq!(mapped_addr(&response), alice.addr.addr);
}
