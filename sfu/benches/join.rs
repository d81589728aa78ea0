//! What one `Engine::join` costs the media worker: a participant's publisher and subscriber
//! `Rtc`s (ICE credentials, DTLS context) and its first subscriber offer (the room data
//! channel). Bounds the join rate of one worker and adds to every join's latency. Each join goes
//! into an empty room and leaves again untimed, so the room's size does not enter.
//! `cargo bench -p convene-sfu --bench join`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use convene_sfu::{Engine, EngineConfig, ParticipantId, ParticipantInfo, RoomId};
use criterion::{Criterion, criterion_group, criterion_main};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7882);

fn join(c: &mut Criterion) {
    let now = Instant::now();
    let mut engine = Engine::new(
        EngineConfig {
            candidates: vec![SERVER],
            tcp_candidates: vec![],
        },
        now,
    );
    let room = RoomId::parse("bench").unwrap();
    let mut n = 0u64;
    c.bench_function("sfu_join", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let id = ParticipantId::parse(format!("p{n}")).unwrap();
                let start = Instant::now();
                let joined = engine.join(room.clone(), id, ParticipantInfo::new("P"), now).unwrap();
                while let Some(out) = engine.poll_output() {
                    black_box(out);
                }
                timed += start.elapsed();
                engine.leave(joined.key, now).unwrap();
                while engine.poll_output().is_some() {}
            }
            timed
        });
    });
}

criterion_group!(benches, join);
criterion_main!(benches);
