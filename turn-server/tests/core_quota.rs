//! Per-user allocation quota (486) and the server-wide cap (508).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn user_quota_gives_486_and_frees_with_the_allocation() {
    let mut h = Harness::new(Config {
        user_quota: 2,
        ..config()
    });
    let mut a1 = TestClient::new(1001, "alice");
    let mut a2 = TestClient::new(1002, "alice");
    // The quota counts the user, whatever the expiry in the REST username.
    let mut a3 = TestClient::with_expiry(1003, "alice", T0_UNIX + 7200);
    h.allocate_ok(&mut a1);
    h.allocate_ok(&mut a2);
    let response = h.allocate(&mut a3);
    assert_eq!(error_code(&response), Some(486));
    assert!(has_integrity(&response));
    assert_eq!(h.server.metrics().quota_rejections, 1);

    let mut bob = TestClient::new(2000, "bob");
    h.allocate_ok(&mut bob);

    assert!(is_success(&h.refresh(&mut a1, 0)));
    h.allocate_ok(&mut a3);
}

#[test]
fn total_quota_gives_508() {
    let mut h = Harness::new(Config {
        total_quota: 3,
        ..config()
    });
    let mut clients: Vec<TestClient> = (0..4).map(|i| TestClient::new(1000 + i, &format!("user{i}"))).collect();
    for c in &mut clients[..3] {
        h.allocate_ok(c);
    }
    assert_eq!(error_code(&h.allocate(&mut clients[3])), Some(508));
    assert_eq!(h.server.metrics().allocations, 3);

    // Expiry makes room again.
    h.advance(secs(600));
    h.allocate_ok(&mut clients[3]);
}

#[test]
fn a_full_port_range_gives_508() {
    let mut h = Harness::new(Config {
        relay_ports: 50_000..=50_001,
        ..config()
    });
    let mut ports: Vec<u16> = (0..2)
        .map(|i| h.allocate_ok(&mut TestClient::new(1000 + i, &format!("u{i}"))))
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [50_000, 50_001]);
    assert_eq!(error_code(&h.allocate(&mut TestClient::new(2000, "late"))), Some(508));
}
