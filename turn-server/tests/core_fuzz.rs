//! Arbitrary input never panics the core, in any state.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use convene_turn::core::{ClientAddr, Transport};
use proptest::prelude::*;

/// A harness with an allocation, a permission and a channel, so that input reaches the
/// deeper paths (indications, ChannelData, authenticated requests).
fn busy_harness() -> (Harness, TestClient, u16) {
    let mut h = Harness::new(Config {
        bandwidth_limit: Some(10_000),
        ..config()
    });
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    h.channel_bind(&mut alice, 0x4001, peer(9000));
    (h, alice, port)
}

/// Bytes that start like STUN (type, length, magic cookie) so the codec looks further.
fn stunish() -> impl Strategy<Value = Vec<u8>> {
    (0u16..0x4000, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(mtype, body)| {
        let mut bytes = mtype.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        bytes.extend_from_slice(&[1; 12]);
        bytes.extend_from_slice(&body);
        bytes
    })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), stunish()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn client_input_never_panics(packets in proptest::collection::vec((input(), any::<bool>(), 0u64..700), 1..8)) {
        let (mut h, alice, port) = busy_harness();
        for (bytes, tcp, wait) in packets {
            let from = if tcp { ClientAddr { transport: Transport::Tcp, ..alice.addr } } else { alice.addr };
            let _ = h.send(from, &bytes);
            let _ = h.peer_sends(port, peer(9000), &bytes);
            h.advance(secs(wait));
        }
    }

    #[test]
    fn signed_requests_with_random_attributes_never_panic(method in 0u16..0x100, body in proptest::collection::vec(any::<u8>(), 0..120)) {
        let (mut h, alice, _) = busy_harness();
        let tx = h.transaction();
        let request = alice.request(stun_types::message::Method::new(method), tx, &|m, _| {
            use stun_types::message::MessageWrite;
            // Raw attribute TLVs straight into the message body.
            let mut padded = body.clone();
            padded.resize(body.len().next_multiple_of(4), 0);
            m.push_data(&padded);
            let len = (m.len() - 20) as u16;
            m.mut_data()[2..4].copy_from_slice(&len.to_be_bytes());
        });
        let _ = h.send(alice.addr, &request);
    }
}
