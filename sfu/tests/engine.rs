//! The sans-IO engine driven with virtual time: str0m clients and the engine exchange datagrams
//! in memory, and time only moves when the test moves it. No sockets, no sleeps.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_sfu::{
    Engine, EngineConfig, EngineOutput, Grants, ParticipantEvent, ParticipantId, ParticipantInfo, ParticipantKey,
    PeerTarget, RecordOutput, RoomId, SfuError, TrackKind, TrackSettings, TrackSource,
};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7882);

#[derive(Clone, Copy)]
enum Mangle {
    /// Not SDP at all.
    Garbage,
    /// SDP whose m-lines disagree with its BUNDLE group.
    Inconsistent,
}

struct Datagram {
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

/// One client peer connection (a str0m `Rtc`, full ICE, controlling).
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    timeout: Instant,
    events: Vec<Event>,
}

/// A participant: key in the engine, publisher and subscriber connections, events received.
struct Client {
    key: ParticipantKey,
    publisher: Peer,
    subscriber: Peer,
    events: Vec<ParticipantEvent>,
}

struct World {
    now: Instant,
    engine: Engine,
    clients: Vec<Client>,
    next_port: u16,
    wire: VecDeque<Datagram>,
    /// Answer the next subscriber offer badly first.
    mangle_next_answer: Option<Mangle>,
    /// The offer that got the unparsable answer, to be answered properly by the test.
    retry_offer: Option<(usize, String)>,
    /// Client addresses whose datagrams are lost on the way to the server.
    silenced: Vec<SocketAddr>,
    /// What the engine handed out for the recorder.
    records: Vec<RecordOutput>,
}

fn new_rtc(now: Instant, addr: SocketAddr) -> Rtc {
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .set_stats_interval(None)
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    rtc
}

fn drain(peer: &mut Peer, wire: &mut VecDeque<Datagram>) {
    loop {
        match peer.rtc.poll_output().unwrap() {
            Output::Timeout(t) => {
                peer.timeout = t;
                return;
            }
            Output::Transmit(t) => wire.push_back(Datagram {
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            }),
            Output::Event(e) => peer.events.push(e),
        }
    }
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        World {
            now,
            engine: Engine::new(
                EngineConfig {
                    candidates: vec![SERVER],
                    tcp_candidates: vec![],
                },
                now,
            ),
            clients: Vec::new(),
            next_port: 20_000,
            wire: VecDeque::new(),
            mangle_next_answer: None,
            retry_offer: None,
            silenced: Vec::new(),
            records: Vec::new(),
        }
    }

    fn addr(&mut self) -> SocketAddr {
        self.next_port += 1;
        SocketAddr::from(([127, 0, 0, 2], self.next_port))
    }

    fn join(&mut self, room: &str, name: &str, info: ParticipantInfo) -> usize {
        let joined = self
            .engine
            .join(
                RoomId::parse(room).unwrap(),
                ParticipantId::parse(name).unwrap(),
                info,
                self.now,
            )
            .unwrap();
        let (a, b) = (self.addr(), self.addr());
        self.clients.push(Client {
            key: joined.key,
            publisher: Peer {
                rtc: new_rtc(self.now, a),
                addr: a,
                timeout: self.now,
                events: vec![],
            },
            subscriber: Peer {
                rtc: new_rtc(self.now, b),
                addr: b,
                timeout: self.now,
                events: vec![],
            },
            events: vec![],
        });
        self.clients.len() - 1
    }

    /// The client offers sendonly media on its publisher connection; the engine answers.
    fn publish(&mut self, c: usize, kinds: &[MediaKind]) -> Vec<Mid> {
        self.publish_declared(c, kinds, &[])
    }

    /// Publishes one video m-line sending simulcast layers `rids` (lowest first).
    fn publish_simulcast(&mut self, c: usize, rids: &[&str]) -> Mid {
        let client = &mut self.clients[c];
        let mut simulcast = Simulcast::new();
        for rid in rids {
            simulcast.add_send_layer(SimulcastLayer::new(rid));
        }
        let mut api = client.publisher.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, Some(simulcast));
        let (offer, pending) = api.apply().unwrap();
        drain(&mut client.publisher, &mut self.wire);
        let answer = self
            .engine
            .publisher_offer(client.key, &offer.to_sdp_string(), self.now)
            .unwrap();
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap();
        client.publisher.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        drain(&mut client.publisher, &mut self.wire);
        mid
    }

    /// Writes one VP8 packet on simulcast layer `rid` of `mid`.
    fn send_layer(&mut self, c: usize, mid: Mid, rid: &str, seq: u64, ts: u32, payload: &[u8]) {
        let now = self.now;
        let peer = &mut self.clients[c].publisher;
        let pt = peer
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .unwrap()
            .pt();
        let mut api = peer.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, Some(Rid::from(rid))).unwrap();
        tx.write_rtp(RtpWrite::new(pt, seq.into(), ts, now, payload.to_vec()).marker(true));
        drain(peer, &mut self.wire);
    }

    /// Like `publish`; `sources[i]`, if given, is declared for m-line `i` with `set_track_info`
    /// between creating the offer and sending it, as a browser client knows its mids then.
    fn publish_declared(&mut self, c: usize, kinds: &[MediaKind], sources: &[TrackSource]) -> Vec<Mid> {
        let client = &mut self.clients[c];
        let mut api = client.publisher.rtc.sdp_api();
        let mids: Vec<Mid> = kinds
            .iter()
            .map(|k| api.add_media(*k, Direction::SendOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().unwrap();
        drain(&mut client.publisher, &mut self.wire);
        for (mid, source) in mids.iter().zip(sources) {
            self.engine
                .set_track_info(client.key, &mid.to_string(), *source, false, self.now)
                .unwrap();
        }
        let answer = self
            .engine
            .publisher_offer(client.key, &offer.to_sdp_string(), self.now)
            .unwrap();
        let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap();
        client.publisher.rtc.sdp_api().accept_answer(pending, answer).unwrap();
        drain(&mut client.publisher, &mut self.wire);
        mids
    }

    /// Moves everything: engine outputs, datagrams, subscriber offers (answered at once), and
    /// virtual time in 1 ms steps, for `ms` milliseconds.
    fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        loop {
            self.exchange();
            if self.now >= end {
                return;
            }
            self.now += Duration::from_millis(1);
            self.engine.handle_timeout(self.now);
            let now = self.now;
            for client in &mut self.clients {
                for peer in [&mut client.publisher, &mut client.subscriber] {
                    if peer.timeout <= now {
                        peer.rtc.handle_input(Input::Timeout(now)).unwrap();
                        drain(peer, &mut self.wire);
                    }
                }
            }
        }
    }

    fn exchange(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.engine.poll_output() {
                progressed = true;
                match out {
                    EngineOutput::Transmit(t) => self.wire.push_back(Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.to_vec(),
                    }),
                    EngineOutput::Event { to, event } => {
                        let Some(c) = self.clients.iter().position(|c| c.key == to) else {
                            continue;
                        };
                        if let ParticipantEvent::SubscriberOffer { sdp, .. } = &event {
                            self.answer(c, sdp);
                        }
                        self.clients[c].events.push(event);
                    }
                    EngineOutput::Record(r) => self.records.push(r),
                }
            }
            while let Some(d) = self.wire.pop_front() {
                progressed = true;
                self.deliver(d);
            }
            if !progressed {
                return;
            }
        }
    }

    fn answer(&mut self, c: usize, sdp: &str) {
        let client = &mut self.clients[c];
        let offer = str0m::change::SdpOffer::from_sdp_string(sdp).unwrap();
        if let Some(mangle) = self.mangle_next_answer.take() {
            // A client that answers badly first, keeping its own state as it was.
            let bogus = match mangle {
                Mangle::Garbage => "v=0\r\nnot sdp\r\n".to_owned(),
                Mangle::Inconsistent => {
                    let mut scratch = new_rtc(self.now, client.subscriber.addr);
                    let good = scratch.sdp_api().accept_offer(offer).unwrap();
                    good.to_sdp_string().replace("a=mid:", "a=mid:x")
                }
            };
            let result = self.engine.subscriber_answer(client.key, &bogus, self.now);
            assert!(
                matches!(result, Err(convene_sfu::SfuError::InvalidSdp(_))),
                "{result:?}"
            );
            self.retry_offer = Some((c, sdp.to_owned()));
            return;
        }
        let answer = client.subscriber.rtc.sdp_api().accept_offer(offer).unwrap();
        drain(&mut client.subscriber, &mut self.wire);
        self.engine
            .subscriber_answer(client.key, &answer.to_sdp_string(), self.now)
            .unwrap();
    }

    fn deliver(&mut self, d: Datagram) {
        if d.destination == SERVER {
            if self.silenced.contains(&d.source) {
                return;
            }
            self.engine
                .handle_input(self.now, Protocol::Udp, d.source, d.destination, &d.contents);
            return;
        }
        for client in &mut self.clients {
            for peer in [&mut client.publisher, &mut client.subscriber] {
                if peer.addr == d.destination {
                    let r = Receive::new(Protocol::Udp, d.source, d.destination, &d.contents).unwrap();
                    peer.rtc.handle_input(Input::Receive(self.now, r)).unwrap();
                    drain(peer, &mut self.wire);
                    return;
                }
            }
        }
    }

    /// Writes one RTP packet on the publisher's `mid` (VP8 or Opus as negotiated).
    fn send(&mut self, c: usize, mid: Mid, seq: u64, ts: u32, payload: &[u8]) {
        let now = self.now;
        let peer = &mut self.clients[c].publisher;
        let kind = peer.rtc.media(mid).unwrap().kind();
        let codec = if kind == MediaKind::Video {
            Codec::Vp8
        } else {
            Codec::Opus
        };
        let pt = peer.rtc.codec_config().find(|p| p.spec().codec == codec).unwrap().pt();
        let mut api = peer.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).unwrap();
        tx.write_rtp(RtpWrite::new(pt, seq.into(), ts, now, payload.to_vec()).marker(true));
        drain(peer, &mut self.wire);
    }

    fn received(&self, c: usize) -> Vec<&RtpPacket> {
        self.clients[c]
            .subscriber
            .events
            .iter()
            .filter_map(|e| match e {
                Event::RtpPacket(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    fn keyframe_requests(&self, c: usize) -> usize {
        self.clients[c]
            .publisher
            .events
            .iter()
            .filter(|e| matches!(e, Event::KeyframeRequest(_)))
            .count()
    }
}

fn vp8(n: u64) -> Vec<u8> {
    let mut p = vec![0x10, 0, 0, 0];
    p.extend_from_slice(&n.to_be_bytes());
    p.resize(300, 0x42);
    p
}

/// Publisher and one subscriber, connected, with one video track flowing `packets` packets.
fn video_call() -> (World, Mid) {
    let mut w = World::new();
    let sub = w.join("r", "viewer", ParticipantInfo::new("Viewer"));
    let publ = w.join("r", "camera", ParticipantInfo::new("Camera"));
    let mids = w.publish(publ, &[MediaKind::Video]);
    w.run(500);
    assert!(w.clients[publ].publisher.rtc.is_connected());
    assert!(w.clients[sub].subscriber.rtc.is_connected());
    (w, mids[0])
}

#[test]
fn mute_and_resume_keep_the_subscribers_sequence_contiguous() {
    let (mut w, mid) = video_call();
    let (sub, publ) = (0, 1);
    for n in 0..50 {
        w.send(publ, mid, 1000 + n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    w.engine
        .set_track_info(w.clients[publ].key, &mid.to_string(), TrackSource::Camera, true, w.now)
        .unwrap();
    // While muted the publisher keeps counting (as a browser sending black frames would).
    for n in 50..100 {
        w.send(publ, mid, 1000 + n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    w.engine
        .set_track_info(w.clients[publ].key, &mid.to_string(), TrackSource::Camera, false, w.now)
        .unwrap();
    for n in 100..150 {
        w.send(publ, mid, 1000 + n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    w.run(200);

    let got = w.received(sub);
    let counters: Vec<u64> = got
        .iter()
        .map(|p| u64::from_be_bytes(p.payload[4..12].try_into().unwrap()))
        .collect();
    assert_eq!(counters.len(), 100, "{counters:?}");
    assert!(counters.iter().all(|n| *n < 50 || *n >= 100));
    // The subscriber sees one stream, no gap where the mute was.
    let seqs: Vec<u64> = got.iter().map(|p| *p.seq_no).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // Timestamps move forward across the gap.
    let ts: Vec<u32> = got.iter().map(|p| p.header.timestamp).collect();
    assert!(ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) < 1 << 31));

    let updates: Vec<bool> = w.clients[sub]
        .events
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::TrackUpdated(t) => Some(t.muted),
            _ => None,
        })
        .collect();
    assert_eq!(updates, vec![true, false]);
}

#[test]
fn keyframe_requests_from_subscribers_are_throttled_upstream() {
    let (mut w, mid) = video_call();
    let (sub, publ) = (0, 1);
    for n in 0..20 {
        w.send(publ, mid, n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    // The first forwarded packet asked for a keyframe for the new subscriber.
    assert_eq!(w.keyframe_requests(publ), 1);
    w.run(1000);

    let ssrc = w.received(sub)[0].header.ssrc;
    let sub_mid = w.clients[sub]
        .subscriber
        .rtc
        .direct_api()
        .stream_rx(&ssrc)
        .unwrap()
        .mid();
    let pli = |w: &mut World| {
        let peer = &mut w.clients[sub].subscriber;
        peer.rtc
            .direct_api()
            .stream_rx_by_mid(sub_mid, None)
            .unwrap()
            .request_keyframe(KeyframeRequestKind::Pli);
        drain(peer, &mut w.wire);
    };
    // Five requests within 200 ms: one goes upstream.
    for _ in 0..5 {
        pli(&mut w);
        w.run(40);
    }
    assert_eq!(w.keyframe_requests(publ), 2);
    // After the 500 ms window the next one goes through.
    w.run(400);
    pli(&mut w);
    w.run(50);
    assert_eq!(w.keyframe_requests(publ), 3);
    assert_eq!(w.engine.stats().keyframe_requests, 3);
}

#[test]
fn grants_limit_what_is_published_and_received() {
    let mut w = World::new();
    let mut listener = ParticipantInfo::new("Listener");
    listener.grants = Grants {
        publish_video: false,
        ..Grants::full()
    };
    let l = w.join("r", "listener", listener);
    let mut lurker = ParticipantInfo::new("Lurker");
    lurker.grants.subscribe = false;
    let k = w.join("r", "lurker", lurker);
    w.publish(l, &[MediaKind::Audio, MediaKind::Video]);
    w.run(500);

    let published: Vec<TrackKind> = w.clients[l]
        .events
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::TrackPublished(t) => Some(t.kind),
            _ => None,
        })
        .collect();
    assert_eq!(published, vec![TrackKind::Audio]);
    assert!(w.clients[l].events.iter().any(|e| matches!(
        e,
        ParticipantEvent::Error {
            code: "publish_not_allowed",
            ..
        }
    )));
    // Without the subscribe grant the lurker's offers carry no tracks.
    let offered: usize = w.clients[k]
        .events
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::SubscriberOffer { tracks, .. } => Some(tracks.len()),
            _ => None,
        })
        .sum();
    assert_eq!(offered, 0);
    assert_eq!(w.engine.stats().tracks, 1);
}

#[test]
fn track_info_sent_before_the_offer_names_the_source() {
    let mut w = World::new();
    let viewer = w.join("r", "viewer", ParticipantInfo::new("V"));
    let sharer = w.join("r", "sharer", ParticipantInfo::new("S"));
    // A mismatched kind is refused when the m-line appears: the default source is used.
    w.publish_declared(
        sharer,
        &[MediaKind::Video, MediaKind::Audio, MediaKind::Video],
        &[TrackSource::Screen, TrackSource::ScreenAudio, TrackSource::Microphone],
    );
    w.run(500);
    let sources: Vec<TrackSource> = w.clients[viewer]
        .events
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::TrackPublished(t) => Some(t.source),
            _ => None,
        })
        .collect();
    assert_eq!(
        sources,
        vec![TrackSource::Screen, TrackSource::ScreenAudio, TrackSource::Camera]
    );
}

#[test]
fn hidden_participants_and_closing_a_room() {
    let mut w = World::new();
    let a = w.join("r", "alice", ParticipantInfo::new("Alice"));
    let mut recorder = ParticipantInfo::new("Recorder");
    recorder.grants.hidden = true;
    let rec = w.join("r", "recorder", recorder);
    w.run(10);
    assert!(
        !w.clients[a]
            .events
            .iter()
            .any(|e| matches!(e, ParticipantEvent::ParticipantJoined { .. }))
    );
    let room = RoomId::parse("r").unwrap();
    let snap = w.engine.snapshot(&room).unwrap();
    assert_eq!(snap.participants.len(), 1);
    assert_eq!(w.engine.stats().participants, 2);

    let removed = w.engine.close_room(&room, w.now).unwrap();
    assert_eq!(removed.len(), 2);
    w.run(10);
    for c in [a, rec] {
        assert!(
            w.clients[c]
                .events
                .iter()
                .any(|e| matches!(e, ParticipantEvent::Removed { reason: "room_closed" }))
        );
    }
    assert!(w.engine.rooms().is_empty());
    assert_eq!(w.engine.stats().participants, 0);
}

#[test]
fn an_unparsable_subscriber_answer_leaves_the_offer_outstanding() {
    let mut w = World::new();
    let viewer = w.join("r", "viewer", ParticipantInfo::new("V"));
    w.run(300);
    let publ = w.join("r", "camera", ParticipantInfo::new("C"));
    w.run(300);
    w.mangle_next_answer = Some(Mangle::Garbage);
    let mid = w.publish(publ, &[MediaKind::Video])[0];
    w.run(300);
    // The corrected answer to the same offer is accepted and media flows.
    let (c, offer) = w.retry_offer.take().unwrap();
    assert_eq!(c, viewer);
    w.answer(c, &offer);
    w.run(200);
    for n in 0..20 {
        w.send(publ, mid, n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    assert_eq!(w.received(viewer).len(), 20);
}

#[test]
fn an_answer_that_does_not_fit_the_offer_fails_the_subscriber_connection() {
    let mut w = World::new();
    w.mangle_next_answer = Some(Mangle::Inconsistent);
    let viewer = w.join("r", "viewer", ParticipantInfo::new("V"));
    w.run(100);
    assert!(w.clients[viewer].events.iter().any(|e| matches!(
        e,
        ParticipantEvent::Error {
            code: "subscriber_negotiation_failed",
            ..
        }
    )));
    // Str0m consumed the offer: a second answer has nothing to answer.
    let (c, offer) = w.retry_offer.take().unwrap();
    let answer = {
        let client = &mut w.clients[c];
        let offer = str0m::change::SdpOffer::from_sdp_string(&offer).unwrap();
        client.subscriber.rtc.sdp_api().accept_offer(offer).unwrap()
    };
    assert_eq!(
        w.engine
            .subscriber_answer(w.clients[c].key, &answer.to_sdp_string(), w.now),
        Err(convene_sfu::SfuError::NoPendingOffer)
    );
}

#[test]
fn a_client_gone_silent_is_reported_disconnected_and_back() {
    let (mut w, mid) = video_call();
    let media_state = |w: &World, c: usize| -> Vec<bool> {
        w.clients[c]
            .events
            .iter()
            .filter_map(|e| match e {
                ParticipantEvent::MediaConnection {
                    target: convene_sfu::PeerTarget::Publisher,
                    connected,
                } => Some(*connected),
                _ => None,
            })
            .collect()
    };
    assert_eq!(media_state(&w, 1), [true]);
    // The camera's publisher connection stops reaching the server (its checks and RTCP too).
    let addr = w.clients[1].publisher.addr;
    w.silenced.push(addr);
    w.run(9_000);
    assert_eq!(media_state(&w, 1), [true], "not before 10 s of silence");
    w.run(2_000);
    assert_eq!(media_state(&w, 1), [true, false]);
    // The viewer, whose client kept talking, saw no change.
    assert!(
        !w.clients[0]
            .events
            .iter()
            .any(|e| matches!(e, ParticipantEvent::MediaConnection { connected: false, .. }))
    );
    // The first datagram after the silence brings it back.
    w.silenced.clear();
    w.send(1, mid, 1, 90_000, &vp8(1));
    w.run(100);
    assert_eq!(media_state(&w, 1), [true, false, true]);
}

/// A one-packet VP8 frame of simulcast layer `layer` (0 = q): a key frame states its size
/// (RFC 6386 §9.1), `layer` and the frame counter follow so the receiver can tell them apart.
fn vp8_frame(layer: u8, n: u64, key: bool) -> Vec<u8> {
    let (w, h) = (320u16 << layer, 180u16 << layer);
    let mut p = vec![0x10, u8::from(!key), 0, 0, 0x9d, 0x01, 0x2a];
    p.extend_from_slice(&w.to_le_bytes());
    p.extend_from_slice(&h.to_le_bytes());
    p.push(layer);
    p.extend_from_slice(&n.to_be_bytes());
    p.resize(400, 0x42);
    p
}

/// Sends frames `range` on all three layers (q, h, f), a key frame on each every 30 frames
/// (one second), 33 ms of virtual time apart (30 frames per second).
fn send_simulcast(w: &mut World, publ: usize, mid: Mid, range: std::ops::Range<u64>) {
    for n in range {
        for (i, rid) in ["q", "h", "f"].into_iter().enumerate() {
            let layer = i as u8;
            let seq = 1_000 * (u64::from(layer) + 1) + n;
            let ts = (n * 3_000) as u32 + 100_000 * u32::from(layer);
            w.send_layer(publ, mid, rid, seq, ts, &vp8_frame(layer, n, n % 30 == 0));
        }
        w.run(33);
    }
}

#[test]
fn simulcast_subscriber_gets_the_layer_for_its_tile_and_switches_at_a_keyframe() {
    let mut w = World::new();
    let sub = w.join("r", "viewer", ParticipantInfo::new("Viewer"));
    let publ = w.join("r", "camera", ParticipantInfo::new("Camera"));
    let mid = w.publish_simulcast(publ, &["q", "h", "f"]);
    w.run(500);
    let track = w.clients[sub]
        .events
        .iter()
        .find_map(|e| match e {
            ParticipantEvent::TrackPublished(t) => Some(t.id.clone()),
            _ => None,
        })
        .unwrap();
    let sub_key = w.clients[sub].key;
    let small = TrackSettings {
        size: Some((320, 180)),
        ..TrackSettings::default()
    };
    w.engine.set_track_settings(sub_key, &track, small, w.now).unwrap();

    // A small tile: only q, from its first key frame.
    send_simulcast(&mut w, publ, mid, 0..45);
    let layer_of = |p: &RtpPacket| p.payload[11];
    let key = |p: &RtpPacket| p.payload[1] & 1 == 0;
    let got = w.received(sub);
    assert!(!got.is_empty());
    assert!(got.iter().all(|p| layer_of(p) == 0), "only the q layer");
    assert!(key(got[0]), "starts at a key frame");
    let before = got.len();

    // The tile grows: f is wanted; q keeps flowing until f's next key frame (frame 60).
    let large = TrackSettings {
        size: Some((1280, 720)),
        ..TrackSettings::default()
    };
    w.engine.set_track_settings(sub_key, &track, large, w.now).unwrap();
    send_simulcast(&mut w, publ, mid, 45..90);
    let got = w.received(sub);
    let layers: Vec<u8> = got.iter().map(|p| layer_of(p)).collect();
    let switch = layers.iter().position(|l| *l == 2).expect("switched to f");
    assert!(switch > before, "q went on while waiting: {layers:?}");
    assert!(layers[..switch].iter().all(|l| *l == 0), "{layers:?}");
    assert!(layers[switch..].iter().all(|l| *l == 2), "{layers:?}");
    assert!(key(got[switch]), "the switch is at a key frame of f");
    let counter = |p: &RtpPacket| u64::from_be_bytes(p.payload[12..20].try_into().unwrap());
    assert_eq!(counter(got[switch]), 60);
    // One outgoing stream: same SSRC, consecutive sequence numbers, timestamps moving forward.
    assert!(got.iter().all(|p| p.header.ssrc == got[0].header.ssrc));
    let seqs: Vec<u64> = got.iter().map(|p| *p.seq_no).collect();
    assert!(seqs.windows(2).all(|s| s[1] == s[0] + 1), "{seqs:?}");
    let ts: Vec<u32> = got.iter().map(|p| p.header.timestamp).collect();
    assert!(
        ts.windows(2).all(|t| t[1].wrapping_sub(t[0]).wrapping_sub(1) < 1 << 30),
        "{ts:?}"
    );

    // The switch asked f for a key frame, throttled while waiting (0.5 s apart over ~0.5 s).
    let f_requests = w.clients[publ]
        .publisher
        .events
        .iter()
        .filter(|e| matches!(e, Event::KeyframeRequest(r) if r.rid == Some(Rid::from("f"))))
        .count();
    assert!((1..=2).contains(&f_requests), "{f_requests} keyframe requests for f");
    assert!(w.engine.stats().layer_switches >= 1);

    // Dynacast: h is needed by nobody; q (the lowest) always stays.
    w.run(4_000);
    let active: Vec<Vec<String>> = w.clients[publ]
        .events
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::LayersActive { active, .. } => Some(active.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(active.last().unwrap(), &["q", "f"], "{active:?}");
    assert!(active.iter().all(|a| !a.contains(&"h".to_owned())), "{active:?}");

    // The tile shrinks again: f goes (after the pause delay); a recording brings it back, since
    // the recorder takes the highest layer.
    let last_active = |w: &World| {
        w.clients[publ]
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                ParticipantEvent::LayersActive { active, .. } => Some(active.clone()),
                _ => None,
            })
            .unwrap()
    };
    w.engine.set_track_settings(sub_key, &track, small, w.now).unwrap();
    send_simulcast(&mut w, publ, mid, 90..105);
    w.run(4_000);
    assert_eq!(last_active(&w), ["q"]);
    w.engine
        .start_recording(&RoomId::parse("r").unwrap(), "RE_1", w.now)
        .unwrap();
    w.run(1_500);
    assert_eq!(last_active(&w), ["q", "f"]);
}

#[test]
fn a_hidden_tile_gets_no_video_and_bad_settings_are_refused() {
    let mut w = World::new();
    let sub = w.join("r", "viewer", ParticipantInfo::new("Viewer"));
    let publ = w.join("r", "camera", ParticipantInfo::new("Camera"));
    let mid = w.publish_simulcast(publ, &["q", "h", "f"]);
    w.run(500);
    let track = w.clients[sub]
        .events
        .iter()
        .find_map(|e| match e {
            ParticipantEvent::TrackPublished(t) => Some(t.id.clone()),
            _ => None,
        })
        .unwrap();
    let key = w.clients[sub].key;
    let hidden = TrackSettings {
        enabled: false,
        ..TrackSettings::default()
    };
    w.engine.set_track_settings(key, &track, hidden, w.now).unwrap();
    send_simulcast(&mut w, publ, mid, 0..40);
    assert!(w.received(sub).is_empty());
    let zero = TrackSettings {
        size: Some((0, 10)),
        ..TrackSettings::default()
    };
    assert_eq!(
        w.engine.set_track_settings(key, &track, zero, w.now),
        Err(convene_sfu::SfuError::InvalidSettings)
    );
    // Its own track is not one it receives.
    let own = w.clients[publ].key;
    assert_eq!(
        w.engine
            .set_track_settings(own, &track, TrackSettings::default(), w.now),
        Err(convene_sfu::SfuError::UnknownTrack)
    );
}

/// The `recording` events a client got, as (active, recording id).
fn recording_events(w: &World, c: usize) -> Vec<(bool, String)> {
    w.clients[c]
        .events
        .iter()
        .filter_map(|e| match e {
            ParticipantEvent::Recording { active, recording_id } => Some((*active, recording_id.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_recorded_room_hands_its_packets_to_the_recorder_until_stopped() {
    let (mut w, mid) = video_call();
    let (sub, publ) = (0, 1);
    let room = RoomId::parse("r").unwrap();
    for n in 0..10 {
        w.send(publ, mid, n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    assert!(w.records.is_empty(), "nothing is tapped before recording starts");
    w.run(600); // past the keyframe-request throttle
    let requests = w.keyframe_requests(publ);
    w.engine.start_recording(&room, "RE_1", w.now).unwrap();
    assert_eq!(
        w.engine.start_recording(&room, "RE_2", w.now),
        Err(SfuError::AlreadyRecording)
    );
    assert_eq!(
        w.engine
            .start_recording(&RoomId::parse("empty").unwrap(), "RE_3", w.now),
        Err(SfuError::UnknownRoom)
    );
    w.run(50);
    assert_eq!(w.keyframe_requests(publ), requests + 1, "video is asked for a keyframe");
    for c in [sub, publ] {
        assert_eq!(recording_events(&w, c), vec![(true, "RE_1".to_owned())]);
    }
    for n in 10..30 {
        w.send(publ, mid, n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    let packets: Vec<(&convene_recorder::TrackMeta, &convene_recorder::RtpIn)> = w
        .records
        .iter()
        .filter_map(|r| match r {
            RecordOutput::Packet {
                room: r, track, pkt, ..
            } if r.as_str() == "r" => Some((track.as_ref(), pkt)),
            _ => None,
        })
        .collect();
    assert_eq!(packets.len(), 20);
    let (meta, _) = packets[0];
    assert_eq!(meta.participant_id, "camera");
    assert_eq!(meta.participant_name, "Camera");
    assert_eq!(meta.kind, convene_recorder::MediaKind::Video);
    assert_eq!((meta.codec.as_str(), meta.source.as_str()), ("vp8", "camera"));
    // One continuous stream with the publisher's payloads and timing.
    assert!(packets.windows(2).all(|p| p[1].1.seq == p[0].1.seq + 1));
    assert!(
        packets
            .windows(2)
            .all(|p| p[1].1.timestamp.wrapping_sub(p[0].1.timestamp) == 3000)
    );
    for (i, (_, pkt)) in packets.iter().enumerate() {
        assert_eq!(&pkt.payload[..], &vp8(10 + i as u64)[..]);
    }

    // A joiner learns at once; stopping tells everyone and ends the tap.
    let late = w.join("r", "late", ParticipantInfo::new("Late"));
    w.run(10);
    assert_eq!(recording_events(&w, late), vec![(true, "RE_1".to_owned())]);
    assert_eq!(w.engine.stop_recording(&room), Some("RE_1".to_owned()));
    assert_eq!(w.engine.stop_recording(&room), None);
    w.run(10);
    assert_eq!(recording_events(&w, sub).last(), Some(&(false, "RE_1".to_owned())));
    let tapped = w.records.len();
    for n in 30..40 {
        w.send(publ, mid, n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    assert_eq!(w.records.len(), tapped, "nothing is tapped after the stop");

    // A track that goes away closes its file; the room emptying ends the recording.
    w.engine.start_recording(&room, "RE_2", w.now).unwrap();
    w.send(publ, mid, 40, 40 * 3000, &vp8(40));
    w.run(10);
    w.engine.leave(w.clients[publ].key, w.now).unwrap();
    w.run(10); // the others answer their new subscriber offers
    for c in [sub, late] {
        w.engine.leave(w.clients[c].key, w.now).unwrap();
    }
    w.run(10);
    let tail: Vec<String> = w.records[tapped..]
        .iter()
        .map(|r| match r {
            RecordOutput::Packet { .. } => "packet".to_owned(),
            RecordOutput::TrackEnded { track, .. } => format!("ended {}", track.as_str()),
            RecordOutput::RoomEnded { room } => format!("room {}", room.as_str()),
        })
        .collect();
    let track = match &w.records[tapped] {
        RecordOutput::Packet { track, .. } => track.track_id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        tail,
        vec!["packet".to_owned(), format!("ended {track}"), "room r".to_owned()]
    );
}

/// RTP rather than RTCP, STUN or DTLS (RFC 7983, RFC 5761).
fn is_rtp(d: &[u8]) -> bool {
    matches!(d, [b0, b1, ..] if (128..=191).contains(b0) && !(192..=223).contains(b1))
}

#[test]
fn a_forwarded_packet_leaves_from_the_input_that_brought_it() {
    let (mut w, mid) = video_call();
    let (sub, publ) = (0, 1);
    for n in 0..20 {
        w.send(publ, mid, 1000 + n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    assert_eq!(w.received(sub).len(), 20);

    // The publisher's next packet, straight into the engine; no `handle_timeout` afterwards.
    w.send(publ, mid, 1020, 60_000, &vp8(20));
    let now = w.now;
    let publisher = &mut w.clients[publ].publisher;
    publisher.rtc.handle_input(Input::Timeout(now)).unwrap();
    drain(publisher, &mut w.wire);
    let at = w
        .wire
        .iter()
        .position(|d| d.destination == SERVER && is_rtp(&d.contents))
        .unwrap();
    let d = w.wire.remove(at).unwrap();
    w.engine
        .handle_input(now, Protocol::Udp, d.source, d.destination, &d.contents);
    let sub_addr = w.clients[sub].subscriber.addr;
    let mut copies = 0;
    while let Some(o) = w.engine.poll_output() {
        if let EngineOutput::Transmit(t) = o {
            copies += usize::from(t.destination == sub_addr && is_rtp(&t.contents));
            w.wire.push_back(Datagram {
                source: t.source,
                destination: t.destination,
                contents: t.contents.to_vec(),
            });
        }
    }
    assert_eq!(copies, 1, "the copy went out before any wake-up");
    w.run(50);
    assert_eq!(w.received(sub).len(), 21);
}

#[test]
fn the_engine_wakes_for_its_peers_and_not_for_those_that_left() {
    let (mut w, _) = video_call();
    let next = w.engine.poll_timeout().unwrap();
    assert!(next <= w.now + Duration::from_secs(1), "at the latest the 1 s sweep");
    let (a, b) = (w.clients[0].key, w.clients[1].key);
    w.engine.leave(a, w.now).unwrap();
    assert!(
        w.engine.poll_timeout().is_some(),
        "the other participant's peers remain"
    );
    w.engine.leave(b, w.now).unwrap();
    // No peer and no room left: a peer left behind in the timer set would still show up here.
    assert_eq!(w.engine.poll_timeout(), None);
    // What leaving sent (RTCP BYE, DTLS close_notify) is out of the way first.
    while w.engine.poll_output().is_some() {}
    w.engine.handle_timeout(w.now + Duration::from_secs(5));
    while let Some(o) = w.engine.poll_output() {
        assert!(
            !matches!(o, EngineOutput::Transmit(_)),
            "nothing sent for peers that left"
        );
    }
}

#[test]
fn the_publisher_connection_is_made_by_the_first_offer() {
    let mut w = World::new();
    let sub = w.join("r", "viewer", ParticipantInfo::new("Viewer"));
    let publ = w.join("r", "camera", ParticipantInfo::new("Camera"));
    w.run(500);
    // Joined (each answered its data-channel subscriber offer), nothing offered yet.
    assert_eq!(w.engine.stats().peer_connections, 2);
    // A candidate trickled before any offer is accepted and makes no connection.
    let candidate = Candidate::host(w.clients[publ].publisher.addr, "udp")
        .unwrap()
        .to_sdp_string();
    w.engine
        .add_ice_candidate(w.clients[publ].key, PeerTarget::Publisher, &candidate, w.now)
        .unwrap();
    assert_eq!(w.engine.stats().peer_connections, 2);

    // Publishing much later works as if the connection had been there all along.
    w.run(3000);
    let mids = w.publish(publ, &[MediaKind::Video]);
    assert_eq!(w.engine.stats().peer_connections, 3);
    w.run(500);
    assert!(w.clients[publ].publisher.rtc.is_connected());
    for n in 0..10 {
        w.send(publ, mids[0], n, (n * 3000) as u32, &vp8(n));
        w.run(10);
    }
    w.run(200);
    assert_eq!(w.received(sub).len(), 10);
    assert_eq!(w.received(publ).len(), 0, "a publisher does not get its own track");
}
