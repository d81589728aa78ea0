//! The ChannelData relay through the sans-IO core (no sockets): one bound channel, 170-byte
//! payloads (the size `bench.sh` uses with coturn), client → peer and peer → client.
//! `cargo bench -p convene-turn --bench relay`
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Harness, TestClient, channel_data, config, is_success, peer};
use convene_turn::core::Command;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn relay(c: &mut Criterion) {
    let mut h = Harness::new(config());
    let mut alice = TestClient::new(1000, "alice");
    let port = h.allocate_ok(&mut alice);
    assert!(is_success(&h.channel_bind(&mut alice, 0x4001, peer(9000))));
    let frame = channel_data(0x4001, &[0x5a; 170]);
    let payload = vec![0x5a; 170];

    let mut group = c.benchmark_group("turn_channeldata");
    group.throughput(Throughput::Elements(1));
    group.bench_function("client_to_peer", |b| {
        b.iter(|| {
            h.server
                .handle_client_packet(black_box(&frame), alice.addr, h.now)
                .unwrap();
            let out = h.server.poll_command();
            assert!(matches!(out, Some(Command::SendToPeer { .. })));
            black_box(out)
        });
    });
    group.bench_function("peer_to_client", |b| {
        b.iter(|| {
            h.server
                .handle_peer_packet(port, peer(9000), black_box(&payload), h.now)
                .unwrap();
            let out = h.server.poll_command();
            assert!(matches!(out, Some(Command::SendToClient { .. })));
            black_box(out)
        });
    });
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
