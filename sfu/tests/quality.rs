//! Speakers and connection quality through real sockets on 127.0.0.1: webrtc-rs clients send
//! Opus with RFC 6464 audio levels (one loud, one silent), and a participant behind a relay
//! that drops 10 % of datagrams each way still gets its video through, with NACKs and
//! retransmissions counted and its connection rated below excellent.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use convene_sfu::{
    ActiveSpeaker, ParticipantEvent, ParticipantHandle, ParticipantId, ParticipantInfo, PeerTarget, Quality, RoomId,
    Sfu, SfuConfig,
};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use support::{
    AUDIO_LEVEL_URI, AUDIO_SSRC, Client, Extras, OPUS_PT, Received, VIDEO_SSRC, VP8_PT, check_payload, collect_rtp,
    extmap_id, local_track, local_track_with_rtx, next_event, payload,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

fn loopback_sfu() -> Sfu {
    Sfu::start(SfuConfig {
        udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tcp_addr: None,
        advertise_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        workers: 1,
    })
    .unwrap()
}

/// A UDP relay on 127.0.0.1 between one client and the SFU that drops every datagram whose
/// turn comes up in a fixed pseudo-random sequence (`loss_percent` of them, each way).
/// The client is pointed at it by rewriting the SFU's candidate in the SDP it receives.
struct LossyRelay {
    /// Where the client sends.
    addr: SocketAddr,
}

impl LossyRelay {
    async fn start(sfu: SocketAddr, loss_percent: u64, seed: u64) -> LossyRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let (client_tx, mut client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
        // xorshift64: a fixed sequence, so a run's losses are repeatable.
        let dropper = move |state: &mut u64| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state % 100 < loss_percent
        };
        let (f, b) = (front.clone(), back.clone());
        tokio::spawn(async move {
            let mut state = seed;
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = f.recv_from(&mut buf).await {
                client_tx.send_if_modified(|c| c.replace(from) != Some(from));
                if !dropper(&mut state) {
                    let _ = b.send_to(&buf[..n], sfu).await;
                }
            }
        });
        tokio::spawn(async move {
            let mut state = seed.rotate_left(17) | 1;
            let mut buf = vec![0u8; 2048];
            while let Ok((n, _)) = back.recv_from(&mut buf).await {
                let to = *client_rx.borrow_and_update();
                if let Some(to) = to
                    && !dropper(&mut state)
                {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
        LossyRelay { addr }
    }

    /// `sdp` with the SFU's UDP candidate replaced by the relay's address.
    fn rewrite(&self, sdp: &str, sfu: SocketAddr) -> String {
        let from = format!("{} {} typ host", sfu.ip(), sfu.port());
        let to = format!("{} {} typ host", self.addr.ip(), self.addr.port());
        assert!(sdp.contains(&from), "the SFU's candidate {from} is in its SDP");
        sdp.replace(&from, &to)
    }
}

/// A participant that publishes Opus (with audio levels) and VP8 from a webrtc-rs client,
/// optionally through a relay.
struct Publisher {
    handle: ParticipantHandle,
    events: convene_sfu::Events,
    client: Client,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    level_id: u8,
}

impl Publisher {
    async fn join(sfu: &Sfu, room: &RoomId, name: &str, relay: Option<&LossyRelay>) -> anyhow::Result<Publisher> {
        let (handle, events, _) = sfu
            .join(room.clone(), ParticipantId::parse(name)?, ParticipantInfo::new(name))
            .await?;
        // Like a browser: audio levels, and RTX so str0m NACKs what it misses (it asks only
        // senders that can answer with RTX).
        let mut client = Client::with_extras(Extras {
            audio_level: true,
            rtx: true,
        })
        .await?;
        let audio = local_track(RtpCodecKind::Audio, AUDIO_SSRC, false);
        let video = local_track_with_rtx(RtpCodecKind::Video, VIDEO_SSRC, false, Some(VIDEO_SSRC + 1));
        client.pc.add_track(audio.clone()).await?;
        client.pc.add_track(video.clone()).await?;
        let offer = client.offer().await?;
        let answer = handle.publisher_offer(offer).await?;
        let level_id = extmap_id(&answer, AUDIO_LEVEL_URI).context("the SFU negotiates ssrc-audio-level")?;
        let sfu_addr = sfu.udp_addrs()[0];
        let answer = match relay {
            Some(r) => r.rewrite(&answer, sfu_addr),
            None => answer,
        };
        client.accept_answer(answer).await?;
        Ok(Publisher {
            handle,
            events,
            client,
            audio,
            video,
            level_id,
        })
    }

    /// Waits for both tracks to be published and the connection to be up.
    async fn ready(&mut self) -> anyhow::Result<()> {
        let mut published = 0;
        let mut connected = false;
        next_event(&mut self.events, 20, |e| {
            match e {
                ParticipantEvent::TrackPublished(_) => published += 1,
                ParticipantEvent::MediaConnection {
                    target: PeerTarget::Publisher,
                    connected: true,
                } => connected = true,
                _ => {}
            }
            (published == 2 && connected).then_some(())
        })
        .await?;
        self.client.wait_connected().await
    }

    /// Opus packet `n` (20 ms) at RFC 6464 level `-dbov` dBov.
    async fn send_audio(&self, n: u32, dbov: u8) -> anyhow::Result<()> {
        let mut header = Header {
            version: 2,
            payload_type: OPUS_PT,
            sequence_number: n as u16,
            timestamp: n * 960,
            ssrc: AUDIO_SSRC,
            ..Default::default()
        };
        // RFC 6464 §3: V bit, then the level in -dBov.
        header.set_extension(self.level_id, Bytes::from(vec![0x80 | (dbov & 0x7f)]))?;
        let packet = Packet {
            header,
            payload: payload(RtpCodecKind::Audio, n).into(),
        };
        self.audio.write_rtp(packet).await?;
        Ok(())
    }

    /// VP8 packet `n`.
    async fn send_video(&self, n: u32) -> anyhow::Result<()> {
        let packet = Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: VP8_PT,
                sequence_number: (n as u16).wrapping_add(1000),
                timestamp: n * 900,
                ssrc: VIDEO_SSRC,
                ..Default::default()
            },
            payload: payload(RtpCodecKind::Video, n).into(),
        };
        self.video.write_rtp(packet).await?;
        Ok(())
    }
}

/// A participant that only receives, answering the SFU's offers from a webrtc-rs client that
/// offers RTX, optionally through a relay.
struct Subscriber {
    events: mpsc::UnboundedReceiver<ParticipantEvent>,
    rtp: mpsc::UnboundedReceiver<Received>,
}

impl Subscriber {
    async fn join(sfu: &Sfu, room: &RoomId, name: &str, relay: Option<LossyRelay>) -> anyhow::Result<Subscriber> {
        let (handle, mut events, _) = sfu
            .join(room.clone(), ParticipantId::parse(name)?, ParticipantInfo::new(name))
            .await?;
        let mut client = Client::with_extras(Extras {
            rtx: true,
            ..Extras::default()
        })
        .await?;
        let tracks = std::mem::replace(&mut client.tracks, mpsc::unbounded_channel().1);
        let (rtp, _remote) = collect_rtp(tracks);
        let sfu_addr = sfu.udp_addrs()[0];
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _keep = _remote;
            while let Some(event) = events.recv().await {
                let event = *event;
                if let ParticipantEvent::SubscriberOffer { sdp, .. } = &event {
                    let offer = match &relay {
                        Some(r) => r.rewrite(sdp, sfu_addr),
                        None => sdp.clone(),
                    };
                    let answer = client.answer(offer).await.unwrap();
                    handle.subscriber_answer(answer).await.unwrap();
                }
                let _ = tx.send(event);
            }
        });
        Ok(Subscriber { events: rx, rtp })
    }

    /// Waits for the next event matching `f`, skipping others.
    async fn wait<T>(&mut self, secs: u64, mut f: impl FnMut(&ParticipantEvent) -> Option<T>) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .context("timed out waiting for an event")?
                .context("event stream closed")?;
            if let Some(t) = f(&event) {
                return Ok(t);
            }
        }
    }
}

fn names(list: &[ActiveSpeaker]) -> Vec<&str> {
    list.iter().map(|s| s.participant.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_talking_participant_is_a_speaker_and_the_silent_one_is_not() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("speakers").unwrap();
    let mut talker = Publisher::join(&sfu, &room, "talker", None).await.unwrap();
    let mut silent = Publisher::join(&sfu, &room, "silent", None).await.unwrap();
    talker.ready().await.unwrap();
    silent.ready().await.unwrap();

    // 2 s of 20 ms Opus packets: the talker at -20 dBov, the other at -127 (silence).
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0..100 {
        tick.tick().await;
        talker.send_audio(n, 20).await.unwrap();
        silent.send_audio(n, 127).await.unwrap();
    }
    // Everyone in the room hears who speaks; the silent participant is never in a list.
    let mut lists = Vec::new();
    let list = next_event(&mut silent.events, 5, |e| match e {
        ParticipantEvent::ActiveSpeakers(list) => {
            lists.push(list.clone());
            (!list.is_empty()).then(|| list.clone())
        }
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(names(&list), ["talker"], "{lists:?}");
    assert!(list[0].level >= 70, "-20 dBov smoothed: {}", list[0].level);

    // The talker falls silent: an empty list follows (after the hold time), and nothing else.
    for n in 100..200 {
        tick.tick().await;
        talker.send_audio(n, 127).await.unwrap();
        silent.send_audio(n, 127).await.unwrap();
    }
    let list = next_event(&mut talker.events, 5, |e| match e {
        ParticipantEvent::ActiveSpeakers(list) => Some(list.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(names(&list), ["talker"], "the talker heard the same first list");
    let list = next_event(&mut talker.events, 5, |e| match e {
        ParticipantEvent::ActiveSpeakers(list) => Some(list.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert!(list.is_empty(), "{list:?}");
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_is_repaired_counted_and_rated() {
    const SECONDS: u32 = 8;
    let sfu = loopback_sfu();
    let sfu_addr = sfu.udp_addrs()[0];
    let room = RoomId::parse("lossy").unwrap();

    // The publisher and the subscriber each reach the SFU through their own 10 % relay.
    let up_relay = LossyRelay::start(sfu_addr, 10, 0x9E37_79B9_7F4A_7C15).await;
    let down_relay = LossyRelay::start(sfu_addr, 10, 0xD1B5_4A32_D192_ED03).await;
    let mut sub = Subscriber::join(&sfu, &room, "viewer", Some(down_relay)).await.unwrap();
    let mut publisher = Publisher::join(&sfu, &room, "sender", Some(&up_relay)).await.unwrap();
    publisher.ready().await.unwrap();
    let before = sfu.stats().await.unwrap();

    // 100 video packets a second (800 kbit/s) and 50 audio packets a second.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..SECONDS * 100 {
        tick.tick().await;
        publisher.send_video(n).await.unwrap();
        if n % 2 == 0 {
            publisher.send_audio(n / 2, 40).await.unwrap();
        }
    }

    // What reached the subscriber intact, through both lossy legs.
    let mut video = HashSet::new();
    let mut corrupt = 0;
    // webrtc-rs keeps asking for packets whose RTX copies it already got (its NACK generator
    // does not see repairs), so the stream never goes quiet: read for a fixed 2 s past the end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, sub.rtp.recv()).await {
        if r.kind != RtpCodecKind::Video {
            continue;
        }
        match check_payload(r.kind, &r.payload) {
            Some(n) => {
                video.insert(n);
            }
            None => corrupt += 1,
        }
    }
    let sent = SECONDS * 100;
    let got = video.len() as u32;
    eprintln!("video: {got} of {sent} packets reached the subscriber");
    assert_eq!(corrupt, 0);
    // Without repair, two legs at 10 % deliver about 81 %; with NACK and RTX on both legs
    // about 99 % arrive.
    assert!(got * 100 >= sent * 95, "{got} of {sent}: losses were not repaired");
    // Video kept flowing to the end: the last second arrived too.
    let last_second = video.iter().filter(|n| **n >= sent - 100).count();
    assert!(last_second >= 85, "{last_second} of the last 100 packets");

    let stats = sfu.stats().await.unwrap();
    eprintln!("{stats:?}");
    assert!(
        stats.nacks_sent > before.nacks_sent,
        "the SFU asked the publisher to resend"
    );
    assert!(
        stats.nacks_received > before.nacks_received,
        "the subscriber asked the SFU to resend"
    );
    assert!(
        stats.retransmitted_packets > before.retransmitted_packets,
        "the SFU resent from its cache"
    );

    // The room hears that the lossy publisher's connection is below excellent for its loss (other
    // figures, such as jitter on a loaded machine, may make it so earlier), and the snapshot
    // carries the rating.
    let rated = sub
        .wait(10, |e| match e {
            ParticipantEvent::ConnectionQuality(updates) => updates
                .iter()
                .find(|u| u.participant.as_str() == "sender" && u.quality > Quality::Excellent && u.loss_permille >= 20)
                .cloned(),
            _ => None,
        })
        .await
        .unwrap();
    eprintln!("{rated:?}");
    let snapshot = sfu.room_snapshot(&room).await.unwrap();
    let sender = snapshot
        .participants
        .iter()
        .find(|p| p.id.as_str() == "sender")
        .unwrap();
    let quality = sender.quality.as_ref().unwrap();
    assert!(quality.quality > Quality::Excellent, "{quality:?}");

    // Leaving hands over the last, partial window (rating it took an evaluation, so there is one):
    // up to 5 s of what the sender sent.
    let last = publisher
        .handle
        .leave()
        .await
        .unwrap()
        .expect("a partial quality window");
    assert!(last.window_ms > 0 && last.window_ms <= 5_000, "{last:?}");
    assert!(last.bytes_up > 0, "{last:?}");
    sfu.shutdown().await;
}
