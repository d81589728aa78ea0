//! End to end through real sockets on 127.0.0.1: webrtc-rs clients publish and subscribe through
//! the SFU's handle API, as the signaling layer will drive it.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use convene_sfu::{
    ParticipantEvent, ParticipantHandle, ParticipantId, ParticipantInfo, PeerTarget, RoomId, Sfu, SfuConfig, SfuError,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use support::{
    AUDIO_SSRC, Client, H264_PT, OPUS_PT, Received, VIDEO_SSRC, VP8_PT, check_payload, collect_rtp,
    count_keyframe_requests, local_track, next_event, payload,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;

const PACKETS: u32 = 300;

fn loopback_sfu() -> Sfu {
    Sfu::start(SfuConfig {
        udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tcp_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        advertise_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        workers: 1,
    })
    .unwrap()
}

/// What a subscriber task reports: every event, plus each answered offer.
#[derive(Debug)]
enum Seen {
    Event(ParticipantEvent),
    Answered { offer: String, tracks: usize },
}

struct Subscriber {
    handle: ParticipantHandle,
    seen: mpsc::UnboundedReceiver<Seen>,
    rtp: mpsc::UnboundedReceiver<Received>,
    remote_tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl Subscriber {
    /// Joins and answers every subscriber offer as a client would.
    async fn join(sfu: &Sfu, room: &RoomId, name: &str) -> anyhow::Result<Subscriber> {
        let (handle, mut events, _snapshot) = sfu
            .join(room.clone(), ParticipantId::parse(name)?, ParticipantInfo::new(name))
            .await?;
        let mut client = Client::new().await?;
        let tracks = std::mem::replace(&mut client.tracks, mpsc::unbounded_channel().1);
        let (rtp, remote_tracks) = collect_rtp(tracks);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let h = handle.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let event = *event;
                if let ParticipantEvent::SubscriberOffer { sdp, tracks } = &event {
                    let answer = client.answer(sdp.clone()).await.unwrap();
                    h.subscriber_answer(answer).await.unwrap();
                    let _ = seen_tx.send(Seen::Answered {
                        offer: sdp.clone(),
                        tracks: tracks.len(),
                    });
                }
                let _ = seen_tx.send(Seen::Event(event));
            }
        });
        Ok(Subscriber {
            handle,
            seen,
            rtp,
            remote_tracks,
        })
    }

    /// Waits until an offer with `tracks` tracks is answered and the connection is up (in either
    /// order: the connection comes up with the data channel offered at join).
    async fn ready_for_tracks(&mut self, tracks: usize) -> anyhow::Result<()> {
        let mut answered = false;
        let mut connected = false;
        self.wait(|s| {
            match s {
                Seen::Answered { tracks: n, .. } if *n == tracks => answered = true,
                Seen::Event(ParticipantEvent::MediaConnection {
                    target: PeerTarget::Subscriber,
                    connected: true,
                }) => connected = true,
                _ => {}
            }
            (answered && connected).then_some(())
        })
        .await
    }

    async fn wait<T>(&mut self, mut f: impl FnMut(&Seen) -> Option<T>) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let seen = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .context("timed out")?
                .context("subscriber task ended")?;
            if let Some(t) = f(&seen) {
                return Ok(t);
            }
        }
    }
}

struct Publisher {
    handle: ParticipantHandle,
    events: convene_sfu::Events,
    client: Client,
    audio: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    video: Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    video_pt: u8,
}

impl Publisher {
    async fn join(sfu: &Sfu, room: &RoomId) -> anyhow::Result<Publisher> {
        Self::join_with(sfu, room, false, false).await
    }

    async fn join_with(sfu: &Sfu, room: &RoomId, tcp: bool, h264: bool) -> anyhow::Result<Publisher> {
        let (handle, events, _) = sfu
            .join(
                room.clone(),
                ParticipantId::parse("publisher")?,
                ParticipantInfo::new("Publisher"),
            )
            .await?;
        let mut client = Client::with_options(tcp, h264).await?;
        let audio = local_track(RtpCodecKind::Audio, AUDIO_SSRC, h264);
        let video = local_track(RtpCodecKind::Video, VIDEO_SSRC, h264);
        client.pc.add_track(audio.clone()).await?;
        client.pc.add_track(video.clone()).await?;
        client.publish_via(&handle).await?;
        Ok(Publisher {
            handle,
            events,
            client,
            audio,
            video,
            video_pt: if h264 { H264_PT } else { VP8_PT },
        })
    }

    async fn send(&self, n: u32) -> anyhow::Result<()> {
        let packet = |pt: u8, ssrc: u32, ts: u32, kind| Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: pt,
                sequence_number: (n as u16).wrapping_add(1000),
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: payload(kind, n).into(),
        };
        self.audio
            .write_rtp(packet(OPUS_PT, AUDIO_SSRC, n * 480, RtpCodecKind::Audio))
            .await?;
        self.video
            .write_rtp(packet(self.video_pt, VIDEO_SSRC, n * 900, RtpCodecKind::Video))
            .await?;
        Ok(())
    }
}

/// Counts intact packets per kind until both reach `PACKETS` or the stream goes quiet.
async fn receive_all(rtp: &mut mpsc::UnboundedReceiver<Received>) -> HashMap<String, Vec<u16>> {
    receive_all_with_pts(rtp).await.0
}

/// Like `receive_all`, also returning the payload types seen per kind.
async fn receive_all_with_pts(
    rtp: &mut mpsc::UnboundedReceiver<Received>,
) -> (HashMap<String, Vec<u16>>, HashMap<String, HashSet<u8>>) {
    let mut pts: HashMap<String, HashSet<u8>> = HashMap::new();
    let mut got: HashMap<String, (HashSet<u32>, Vec<u16>)> = HashMap::new();
    let mut corrupt = 0;
    loop {
        let done = ["audio", "video"]
            .iter()
            .all(|k| got.get(*k).is_some_and(|(s, _)| s.len() as u32 >= PACKETS));
        if done {
            break;
        }
        // Quiet for 2 s after sending stopped: whatever was lost stays lost.
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), rtp.recv()).await else {
            break;
        };
        match check_payload(r.kind, &r.payload) {
            Some(n) => {
                pts.entry(r.kind.to_string()).or_default().insert(r.pt);
                let e = got.entry(r.kind.to_string()).or_default();
                e.0.insert(n);
                e.1.push(r.seq);
            }
            None => corrupt += 1,
        }
    }
    assert_eq!(corrupt, 0, "corrupted payloads");
    let seqs = got.into_iter().map(|(k, (_, seqs))| (k, seqs)).collect();
    (seqs, pts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_reaches_two_subscribers_pli_goes_upstream_and_leave_unpublishes() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("media-room").unwrap();

    let mut subs = vec![
        Subscriber::join(&sfu, &room, "alice").await.unwrap(),
        Subscriber::join(&sfu, &room, "bob").await.unwrap(),
    ];
    let mut publisher = Publisher::join(&sfu, &room).await.unwrap();
    let plis = count_keyframe_requests(publisher.video.clone());

    // Both tracks are published to everyone, the publisher included.
    // Both tracks are published to everyone, the publisher included, and its connection is up
    // (str0m reports the m-lines once the connection is established, so the order varies).
    let mut published = HashSet::new();
    let mut connected = false;
    next_event(&mut publisher.events, 15, |e| {
        match e {
            ParticipantEvent::TrackPublished(t) => {
                published.insert(t.kind.as_str());
            }
            ParticipantEvent::MediaConnection {
                target: PeerTarget::Publisher,
                connected: true,
            } => connected = true,
            _ => {}
        }
        (published.len() == 2 && connected).then_some(())
    })
    .await
    .unwrap();
    publisher.client.wait_connected().await.unwrap();

    // Each subscriber has answered an offer carrying both tracks and its connection is up.
    for sub in &mut subs {
        sub.ready_for_tracks(2).await.unwrap();
    }

    // Synthetic Opus and VP8 at 100 packets/s each.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..PACKETS {
        tick.tick().await;
        publisher.send(n).await.unwrap();
    }

    for sub in &mut subs {
        let got = receive_all(&mut sub.rtp).await;
        for kind in ["audio", "video"] {
            let seqs = got.get(kind).cloned().unwrap_or_default();
            let distinct: HashSet<u16> = seqs.iter().copied().collect();
            eprintln!("{kind}: {} distinct of {PACKETS} sent", distinct.len());
            assert!(
                distinct.len() as u32 * 100 >= PACKETS * 99,
                "{kind}: {} of {PACKETS} packets arrived intact",
                distinct.len()
            );
            // Rewritten sequence numbers are contiguous (no gaps beyond real losses).
            let min = *distinct.iter().min().unwrap();
            let max = *distinct.iter().max().unwrap();
            assert!(u32::from(max.wrapping_sub(min)) < PACKETS + 3, "{kind}: seq span");
        }
    }

    let stats = sfu.stats().await.unwrap();
    assert_eq!(stats.rooms, 1);
    assert_eq!(stats.participants, 3);
    assert_eq!(stats.tracks, 2);
    assert!(stats.forwarded_packets >= u64::from(PACKETS) * 4 * 99 / 100);

    // A subscriber's PLI reaches the publisher. Streaming took 3 s, so the 500 ms throttle that
    // absorbed the start-up keyframe requests has expired.
    let before = *plis.borrow();
    let video_track = loop {
        let track = subs[0].remote_tracks.recv().await.unwrap();
        if track.kind().await == RtpCodecKind::Video {
            break track;
        }
    };
    let media_ssrc = *video_track.ssrcs().await.first().unwrap();
    video_track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        })])
        .await
        .unwrap();
    let mut plis_rx = plis.clone();
    tokio::time::timeout(Duration::from_secs(5), plis_rx.wait_for(|n| *n > before))
        .await
        .expect("PLI relayed to the publisher")
        .unwrap();
    eprintln!("PLIs at the publisher: {before} before, {} after", *plis.borrow());
    assert!(sfu.stats().await.unwrap().keyframe_requests >= 1);

    // The publisher leaves: the others see it and its tracks go, and renegotiate.
    publisher.handle.clone().leave().await.unwrap();
    for sub in &mut subs {
        let mut unpublished = 0;
        let mut left = false;
        let mut reoffered = None;
        sub.wait(|s| {
            match s {
                Seen::Event(ParticipantEvent::TrackUnpublished { participant, .. })
                    if participant.as_str() == "publisher" =>
                {
                    unpublished += 1
                }
                Seen::Event(ParticipantEvent::ParticipantLeft { participant })
                    if participant.as_str() == "publisher" =>
                {
                    left = true
                }
                Seen::Answered { offer, tracks: 0 } => reoffered = Some(offer.clone()),
                _ => {}
            }
            (unpublished == 2 && left && reoffered.is_some()).then_some(())
        })
        .await
        .unwrap();
        let offer = reoffered.unwrap();
        // Both media m-lines went inactive (the data channel's stays).
        let media_lines = offer
            .lines()
            .filter(|l| l.starts_with("m=audio") || l.starts_with("m=video"))
            .count();
        assert_eq!(media_lines, 2, "{offer}");
        assert_eq!(offer.matches("a=inactive").count(), 2, "{offer}");
    }
    let snapshot = sfu.room_snapshot(&room).await.unwrap();
    assert_eq!(snapshot.participants.len(), 2);
    assert!(snapshot.participants.iter().all(|p| p.tracks.is_empty()));
    assert_eq!(sfu.stats().await.unwrap().tracks, 0);

    for sub in subs {
        sub.handle.leave().await.unwrap();
    }
    assert!(sfu.rooms().await.unwrap().is_empty());
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_behind_udp_blocking_firewall_publishes_over_ice_tcp() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("tcp-room").unwrap();
    let mut sub = Subscriber::join(&sfu, &room, "viewer").await.unwrap();
    let mut publisher = Publisher::join_with(&sfu, &room, true, false).await.unwrap();
    next_event(&mut publisher.events, 15, |e| match e {
        ParticipantEvent::MediaConnection {
            target: PeerTarget::Publisher,
            connected: true,
        } => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    publisher.client.wait_connected().await.unwrap();
    sub.ready_for_tracks(2).await.unwrap();

    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..PACKETS {
        tick.tick().await;
        publisher.send(n).await.unwrap();
    }
    let got = receive_all(&mut sub.rtp).await;
    for kind in ["audio", "video"] {
        let n = got.get(kind).map(|s| s.iter().collect::<HashSet<_>>().len());
        eprintln!("over ice-tcp, {kind}: {n:?} distinct of {PACKETS}");
        assert!(n.unwrap_or(0) as u32 * 100 >= PACKETS * 99, "{kind}: {n:?}");
    }
    publisher.handle.leave().await.unwrap();
    sub.handle.leave().await.unwrap();
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_is_forwarded_with_the_subscribers_payload_type() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("h264-room").unwrap();
    let mut sub = Subscriber::join(&sfu, &room, "viewer").await.unwrap();
    let mut publisher = Publisher::join_with(&sfu, &room, false, true).await.unwrap();
    next_event(&mut publisher.events, 15, |e| match e {
        ParticipantEvent::MediaConnection {
            target: PeerTarget::Publisher,
            connected: true,
        } => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    publisher.client.wait_connected().await.unwrap();
    sub.ready_for_tracks(2).await.unwrap();

    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..PACKETS {
        tick.tick().await;
        publisher.send(n).await.unwrap();
    }
    let (got, pts) = receive_all_with_pts(&mut sub.rtp).await;
    let n = got
        .get("video")
        .map(|s| s.iter().collect::<HashSet<_>>().len())
        .unwrap_or(0);
    assert!(n as u32 * 100 >= PACKETS * 99, "h264: {n} of {PACKETS}");
    // The publisher sent PT 102; the subscriber negotiated str0m's PT for this profile.
    let video_pts = pts.get("video").cloned().unwrap_or_default();
    assert_eq!(video_pts.len(), 1, "{video_pts:?}");
    assert!(!video_pts.contains(&H264_PT), "{video_pts:?}");
    publisher.handle.leave().await.unwrap();
    sub.handle.leave().await.unwrap();
    sfu.shutdown().await;
}

/// A participant with its subscriber connection answered and the SFU's data channel open.
struct DataPeer {
    handle: ParticipantHandle,
    channel: Arc<dyn webrtc::data_channel::DataChannel>,
    messages: mpsc::UnboundedReceiver<Vec<u8>>,
}

async fn join_for_data(sfu: &Sfu, room: &RoomId, name: &str, data: bool) -> DataPeer {
    let mut info = ParticipantInfo::new(name);
    info.grants.data = data;
    let (handle, mut events, _) = sfu
        .join(room.clone(), ParticipantId::parse(name).unwrap(), info)
        .await
        .unwrap();
    let mut client = Client::new().await.unwrap();
    // The subscriber offer made at join carries the data channel.
    let offer = next_event(&mut events, 10, |e| match e {
        ParticipantEvent::SubscriberOffer { sdp, .. } => Some(sdp.clone()),
        _ => None,
    })
    .await
    .unwrap();
    let answer = client.answer(offer).await.unwrap();
    handle.subscriber_answer(answer).await.unwrap();
    let (channel, messages) = support::open_data_channel(&mut client.data).await.unwrap();
    // Keep the client (and its connection) alive for the test's duration.
    tokio::spawn(async move {
        let _client = client;
        while events.recv().await.is_some() {}
    });
    DataPeer {
        handle,
        channel,
        messages,
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

fn framed(sender: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = (sender.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(sender.as_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_relayed_to_the_room_with_the_sender_named() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("data-room").unwrap();
    let mut alice = join_for_data(&sfu, &room, "alice", true).await;
    let mut bob = join_for_data(&sfu, &room, "bob", true).await;
    let carol = join_for_data(&sfu, &room, "carol", false).await;

    // Carol lacks the data grant: her message goes nowhere. Alice's reaches Bob and Carol, Bob's
    // reaches Alice and Carol. Carol's is sent first, so had it been relayed, Bob's and Alice's
    // first message would be hers (one sender's messages stay in order).
    carol
        .channel
        .send(bytes::BytesMut::from(&b"from carol"[..]))
        .await
        .unwrap();
    alice
        .channel
        .send(bytes::BytesMut::from(&b"hello room"[..]))
        .await
        .unwrap();
    bob.channel.send(bytes::BytesMut::from(&b"hi alice"[..])).await.unwrap();
    assert_eq!(next(&mut bob.messages).await, framed("alice", b"hello room"));
    assert_eq!(next(&mut alice.messages).await, framed("bob", b"hi alice"));
    // Carol may receive without the grant to send; order holds per sender only.
    let mut carol_messages = carol.messages;
    let mut got = vec![next(&mut carol_messages).await, next(&mut carol_messages).await];
    got.sort();
    let mut want = vec![framed("alice", b"hello room"), framed("bob", b"hi alice")];
    want.sort();
    assert_eq!(got, want);
    assert!(alice.messages.try_recv().is_err() && bob.messages.try_recv().is_err());
    for p in [alice.handle, bob.handle, carol.handle] {
        p.leave().await.unwrap();
    }
    sfu.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_an_error_not_a_panic() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("bad-input").unwrap();
    let (handle, _events, _) = sfu
        .join(
            room.clone(),
            ParticipantId::parse("mallory").unwrap(),
            ParticipantInfo::new("Mallory"),
        )
        .await
        .unwrap();

    for sdp in [
        "",
        "garbage",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        &"a".repeat(100_000),
    ] {
        assert!(matches!(
            handle.publisher_offer(sdp.to_owned()).await,
            Err(SfuError::InvalidSdp(_))
        ));
    }
    // No subscriber offer is outstanding (nothing is published), and the SDP is junk anyway.
    assert!(matches!(
        handle.subscriber_answer("v=0\r\n".to_owned()).await,
        Err(SfuError::InvalidSdp(_) | SfuError::NoPendingOffer)
    ));
    assert!(
        handle
            .add_ice_candidate(PeerTarget::Publisher, "candidate:nonsense".to_owned())
            .await
            .is_err()
    );
    assert_eq!(
        handle.subscribe(convene_sfu::TrackId::parse("TR_404").unwrap()).await,
        Err(SfuError::UnknownTrack)
    );
    assert_eq!(
        sfu.join(
            room.clone(),
            ParticipantId::parse("mallory").unwrap(),
            ParticipantInfo::new("again"),
        )
        .await
        .err(),
        Some(SfuError::DuplicateParticipant)
    );
    assert!(ParticipantId::parse("").is_err());

    // Garbage datagrams at the media port: dropped and counted, the worker stays up.
    let port = sfu.udp_addrs()[0];
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk: [&[u8]; 5] = [
        b"",
        &[0u8; 1],
        &[0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42],
        &[0x80; 1500],
        &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2],
    ];
    for j in junk {
        socket.send_to(j, port).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = sfu.stats().await.unwrap();
        if stats.dropped_packets >= 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        // No event marks a dropped datagram; poll the counters.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.leave().await.unwrap();
    assert_eq!(sfu.stats().await.unwrap().participants, 0);
    sfu.shutdown().await;
}

#[tokio::test]
async fn rooms_are_spread_over_workers_each_on_its_own_port() {
    let sfu = Sfu::start(SfuConfig {
        udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tcp_addr: None,
        advertise_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        workers: 2,
    })
    .unwrap();
    let ports: Vec<u16> = sfu.udp_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports.len(), 2);
    assert!(sfu.tcp_addrs().is_empty());

    let mut candidate_ports = Vec::new();
    let mut handles = Vec::new();
    for room in ["room-a", "room-b", "room-a"] {
        let (handle, mut events, _) = sfu
            .join(
                RoomId::parse(room).unwrap(),
                ParticipantId::parse(format!("p{}", handles.len())).unwrap(),
                ParticipantInfo::new("p"),
            )
            .await
            .unwrap();
        let offer = next_event(&mut events, 5, |e| match e {
            ParticipantEvent::SubscriberOffer { sdp, .. } => Some(sdp.clone()),
            _ => None,
        })
        .await
        .unwrap();
        // "a=candidate:<foundation> 1 udp <prio> 127.0.0.1 <port> typ host"
        let port: u16 = offer
            .lines()
            .find(|l| l.starts_with("a=candidate") && l.contains(" udp "))
            .and_then(|l| l.split(' ').nth(5))
            .unwrap()
            .parse()
            .unwrap();
        candidate_ports.push(port);
        handles.push(handle);
    }
    // Both rooms' participants use their room's worker; the room's second member the same one.
    assert_ne!(candidate_ports[0], candidate_ports[1]);
    assert_eq!(candidate_ports[0], candidate_ports[2]);
    assert!(candidate_ports.iter().all(|p| ports.contains(p)));
    let stats = sfu.stats().await.unwrap();
    assert_eq!((stats.rooms, stats.participants), (2, 3));
    assert_eq!(sfu.rooms().await.unwrap().len(), 2);
    sfu.close_room(&RoomId::parse("room-a").unwrap()).await.unwrap();
    assert_eq!(sfu.stats().await.unwrap().participants, 1);
    assert_eq!(
        sfu.room_snapshot(&RoomId::parse("room-a").unwrap()).await,
        Err(SfuError::UnknownRoom)
    );
    sfu.shutdown().await;
}
