//! The forwarding hot path of the sans-IO engine: one SRTP video packet from a publisher in,
//! decrypted, rewritten (SSRC, sequence, timestamp) and SRTP-protected once per subscriber out.
//! str0m client peers and the engine exchange datagrams in memory with virtual time (as
//! `tests/engine.rs` does); only the engine's work for the packet is timed (`handle_input`,
//! then `handle_timeout` while `poll_timeout` has passed, as the driver loops, draining
//! `poll_output` after each), per forwarded packet. `cargo bench -p convene-sfu --bench forward`
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use convene_sfu::{Engine, EngineConfig, EngineOutput, ParticipantEvent, ParticipantId, ParticipantInfo, RoomId};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7882);
/// Virtual time between two video packets (~1 Mbit/s of 1100-byte packets).
const PACKET_GAP: Duration = Duration::from_micros(8_800);

struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
}

struct Bench {
    now: Instant,
    engine: Engine,
    publisher: Peer,
    subscribers: Vec<(convene_sfu::ParticipantKey, Peer)>,
    mid: Mid,
    seq: u64,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

fn peer(now: Instant, port: u16) -> Peer {
    let addr = SocketAddr::from(([127, 0, 0, 2], port));
    let mut rtc = Rtc::builder().set_rtp_mode(true).set_stats_interval(None).build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    Peer {
        rtc,
        addr,
        connected: false,
    }
}

/// Runs a peer until its next timeout; datagrams go on the wire.
fn drain(p: &mut Peer, wire: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
    while let Ok(out) = p.rtc.poll_output() {
        match out {
            Output::Timeout(_) => return,
            Output::Transmit(t) => wire.push_back((t.source, t.destination, t.contents.to_vec())),
            Output::Event(Event::Connected) => p.connected = true,
            Output::Event(_) => {}
        }
    }
}

impl Bench {
    /// One room: a publisher of one VP8 track and `n` connected subscribers receiving it.
    fn new(n: usize) -> Bench {
        let now = Instant::now();
        let mut engine = Engine::new(
            EngineConfig {
                candidates: vec![SERVER],
                tcp_candidates: vec![],
            },
            now,
        );
        let room = RoomId::parse("bench").unwrap();
        let mut subscribers = Vec::new();
        for i in 0..n {
            let joined = engine
                .join(
                    room.clone(),
                    ParticipantId::parse(format!("s{i}")).unwrap(),
                    ParticipantInfo::new("S"),
                    now,
                )
                .unwrap();
            subscribers.push((joined.key, peer(now, 20_000 + i as u16)));
        }
        let joined = engine
            .join(room, ParticipantId::parse("p").unwrap(), ParticipantInfo::new("P"), now)
            .unwrap();
        let mut publisher = peer(now, 19_999);
        let mut api = publisher.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let answer = engine.publisher_offer(joined.key, &offer.to_sdp_string(), now).unwrap();
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let mut b = Bench {
            now,
            engine,
            publisher,
            subscribers,
            mid,
            seq: 0,
            wire: VecDeque::new(),
        };
        // Connect everyone and let the track reach every subscriber.
        for _ in 0..2000 {
            b.tick(Duration::from_millis(1), true);
            if b.subscribers.iter().all(|(_, p)| p.connected) && b.publisher.connected {
                break;
            }
        }
        for _ in 0..50 {
            let d = b.next_packet();
            b.engine.handle_input(b.now, Protocol::Udp, d.0, d.1, &d.2);
            b.tick(Duration::from_millis(10), true);
        }
        let packet = b.next_packet();
        assert_eq!(b.forward(packet), n, "every subscriber gets the packet");
        b
    }

    /// Moves virtual time and exchanges everything; forwarded media reaches the subscribers
    /// only when `deliver_media`.
    fn tick(&mut self, by: Duration, deliver_media: bool) {
        self.now += by;
        self.engine.handle_timeout(self.now);
        for p in std::iter::once(&mut self.publisher).chain(self.subscribers.iter_mut().map(|(_, p)| p)) {
            let _ = p.rtc.handle_input(Input::Timeout(self.now));
            drain(p, &mut self.wire);
        }
        loop {
            let mut progressed = false;
            while let Some(out) = self.engine.poll_output() {
                progressed = true;
                match out {
                    EngineOutput::Transmit(t) => {
                        if deliver_media || !is_rtp(&t.contents) {
                            self.wire.push_back((t.source, t.destination, t.contents.to_vec()));
                        }
                    }
                    EngineOutput::Event { to, event } => {
                        if let ParticipantEvent::SubscriberOffer { sdp, .. } = event
                            && let Some((key, p)) = self.subscribers.iter_mut().find(|(k, _)| *k == to)
                        {
                            let offer = str0m::change::SdpOffer::from_sdp_string(&sdp).unwrap();
                            let answer = p.rtc.sdp_api().accept_offer(offer).unwrap();
                            drain(p, &mut self.wire);
                            self.engine
                                .subscriber_answer(*key, &answer.to_sdp_string(), self.now)
                                .unwrap();
                        }
                    }
                    // No room is recorded here.
                    EngineOutput::Record(_) => {}
                }
            }
            while let Some((src, dst, bytes)) = self.wire.pop_front() {
                progressed = true;
                if dst == SERVER {
                    self.engine.handle_input(self.now, Protocol::Udp, src, dst, &bytes);
                    continue;
                }
                let all = std::iter::once(&mut self.publisher).chain(self.subscribers.iter_mut().map(|(_, p)| p));
                if let Some(p) = all.into_iter().find(|p| p.addr == dst) {
                    let r = Receive::new(Protocol::Udp, src, dst, &bytes).unwrap();
                    let _ = p.rtc.handle_input(Input::Receive(self.now, r));
                    drain(p, &mut self.wire);
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// The publisher's next SRTP datagram (1100-byte VP8 payload).
    fn next_packet(&mut self) -> (SocketAddr, SocketAddr, Vec<u8>) {
        self.now += PACKET_GAP;
        self.seq += 1;
        let pt = self
            .publisher
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        let mut payload = vec![0x10, 0x01];
        payload.resize(1100, 0x5a);
        let ts = (self.seq * 3000) as u32;
        let mut api = self.publisher.rtc.direct_api();
        let tx = api.stream_tx_by_mid(self.mid, None).unwrap();
        tx.write_rtp(RtpWrite::new(pt, self.seq.into(), ts, self.now, payload).marker(true));
        // The pacer releases the packet on the next timeout.
        let _ = self.publisher.rtc.handle_input(Input::Timeout(self.now));
        let mut out = VecDeque::new();
        drain(&mut self.publisher, &mut out);
        let at = out.iter().position(|(_, dst, d)| *dst == SERVER && is_rtp(d)).unwrap();
        let packet = out.remove(at).unwrap();
        // RTCP and the like travel at the next tick.
        self.wire.extend(out);
        packet
    }

    /// Feeds one publisher packet to the engine and runs it as the driver does: input, then
    /// `handle_timeout` for as long as the engine's deadline has passed (str0m's pacer asks for
    /// an immediate timeout before and after each packet it releases), draining the output
    /// after each step; returns the RTP datagrams that went out.
    fn forward(&mut self, (src, dst, bytes): (SocketAddr, SocketAddr, Vec<u8>)) -> usize {
        self.engine.handle_input(self.now, Protocol::Udp, src, dst, &bytes);
        let mut sent = self.flush();
        // Bounded: a peer that kept asking for the same instant must not hang the bench.
        for _ in 0..8 {
            if self.engine.poll_timeout().is_none_or(|t| t > self.now) {
                break;
            }
            self.engine.handle_timeout(self.now);
            sent += self.flush();
        }
        sent
    }

    /// Drains the engine's output; returns the RTP datagrams among it.
    fn flush(&mut self) -> usize {
        let mut sent = 0;
        while let Some(out) = self.engine.poll_output() {
            if let EngineOutput::Transmit(t) = &out
                && is_rtp(&t.contents)
            {
                sent += 1;
            }
            black_box(out);
        }
        sent
    }
}

/// RTP rather than RTCP, STUN or DTLS (RFC 7983 demultiplexing, RFC 5761 for RTCP).
fn is_rtp(d: &[u8]) -> bool {
    matches!(d, [b0, b1, ..] if (128..=191).contains(b0) && !(192..=223).contains(b1))
}

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("sfu_forward_video");
    for n in [1usize, 10, 50] {
        let mut bench = Bench::new(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for i in 0..iters {
                    let packet = bench.next_packet();
                    let start = Instant::now();
                    black_box(bench.forward(packet));
                    timed += start.elapsed();
                    // Keep ICE consent, RTCP and timers going (untimed; media is dropped).
                    if i % 100 == 99 {
                        bench.tick(Duration::ZERO, false);
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
