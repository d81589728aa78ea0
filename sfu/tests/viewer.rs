//! A viewer whose connection the client offers (WHEP), with publish-only participants (WHIP),
//! through real sockets on 127.0.0.1: the viewer's m-lines are filled with tracks as they
//! appear, its PLIs reach the publisher, and when a publisher leaves the next one's tracks take
//! over the same m-lines as one continuous stream.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use convene_sfu::{
    ParticipantEvent, ParticipantHandle, ParticipantId, ParticipantInfo, PeerTarget, RoomId, Sfu, SfuConfig, SfuError,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use support::{
    AUDIO_SSRC, Client, OPUS_PT, Received, VIDEO_SSRC, VP8_PT, check_payload, collect_rtp, count_keyframe_requests,
    local_track, next_event, payload,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;

const PACKETS: u32 = 100;

fn loopback_sfu() -> Sfu {
    Sfu::start(SfuConfig {
        udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tcp_addr: None,
        advertise_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        workers: 1,
    })
    .unwrap()
}

/// A publish-only participant (as WHIP makes one) sending Opus and VP8.
struct Ingest {
    handle: ParticipantHandle,
    client: Client,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
}

impl Ingest {
    async fn join(sfu: &Sfu, room: &RoomId, id: &str) -> Ingest {
        let mut client = Client::new().await.unwrap();
        let audio = local_track(RtpCodecKind::Audio, AUDIO_SSRC, false);
        let video = local_track(RtpCodecKind::Video, VIDEO_SSRC, false);
        client.pc.add_track(audio.clone()).await.unwrap();
        client.pc.add_track(video.clone()).await.unwrap();
        let offer = client.offer().await.unwrap();
        let (handle, mut events, answer) = sfu
            .join_publisher(
                room.clone(),
                ParticipantId::parse(id).unwrap(),
                ParticipantInfo::new(id),
                offer,
            )
            .await
            .unwrap();
        client.accept_answer(answer).await.unwrap();
        client.wait_connected().await.unwrap();
        let mut published = 0;
        next_event(&mut events, 15, |e| {
            published += usize::from(matches!(e, ParticipantEvent::TrackPublished(t) if t.participant.as_str() == id));
            (published == 2).then_some(())
        })
        .await
        .unwrap();
        // Nobody else reads this participant's events; keep the stream drained as signaling does.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        Ingest {
            handle,
            client,
            audio,
            video,
        }
    }

    /// Sends packets `from..from + PACKETS` of both kinds at 100 packets/s.
    async fn send(&self, from: u32) {
        let packet = |pt: u8, ssrc: u32, n: u32, ts: u32, kind| Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: pt,
                sequence_number: n as u16,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: payload(kind, n).into(),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for n in from..from + PACKETS {
            tick.tick().await;
            self.audio
                .write_rtp(packet(OPUS_PT, AUDIO_SSRC, n, n * 480, RtpCodecKind::Audio))
                .await
                .unwrap();
            self.video
                .write_rtp(packet(VP8_PT, VIDEO_SSRC, n, n * 900, RtpCodecKind::Video))
                .await
                .unwrap();
        }
    }
}

/// Intact packets per kind whose counter is in `from..from + PACKETS`, until all arrived or the
/// stream goes quiet: (counter, ssrc, seq) each.
async fn receive(
    rtp: &mut mpsc::UnboundedReceiver<Received>,
    from: u32,
) -> HashMap<&'static str, Vec<(u32, u32, u16)>> {
    let mut got: HashMap<&'static str, Vec<(u32, u32, u16)>> = HashMap::new();
    while got.len() < 2 || got.values().any(|v| (v.len() as u32) < PACKETS) {
        let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), rtp.recv()).await else {
            break;
        };
        let n = check_payload(r.kind, &r.payload).expect("intact payload");
        if (from..from + PACKETS).contains(&n) {
            let kind = if r.kind == RtpCodecKind::Video {
                "video"
            } else {
                "audio"
            };
            got.entry(kind).or_default().push((n, r.ssrc, r.seq));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_tracks_onto_its_own_mlines_and_keeps_them_across_publishers() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("whep-room").unwrap();

    // The viewer comes first: one recvonly audio and one recvonly video m-line, nothing to show.
    let mut viewer = Client::new().await.unwrap();
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        };
        viewer.pc.add_transceiver_from_kind(kind, Some(init)).await.unwrap();
    }
    let tracks = std::mem::replace(&mut viewer.tracks, mpsc::unbounded_channel().1);
    let (mut rtp, mut remote_tracks) = collect_rtp(tracks);
    let offer = viewer.offer().await.unwrap();
    let (handle, mut events, answer) = sfu
        .join_viewer(
            room.clone(),
            ParticipantId::parse("viewer").unwrap(),
            ParticipantInfo::new("viewer"),
            offer,
            None,
        )
        .await
        .unwrap();
    viewer.accept_answer(answer).await.unwrap();
    viewer.wait_connected().await.unwrap();
    next_event(&mut events, 15, support::is_connected(PeerTarget::Subscriber))
        .await
        .unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    // Its m-lines are the client's: no adding tracks of its own choosing.
    assert_eq!(
        handle.subscribe("TR_1".parse().unwrap()).await,
        Err(SfuError::NotAllowed)
    );

    // The first publisher's tracks land on the viewer's m-lines.
    let first = Ingest::join(&sfu, &room, "first").await;
    let plis = count_keyframe_requests(first.video.clone());
    first.send(0).await;
    let got_first = receive(&mut rtp, 0).await;
    for kind in ["audio", "video"] {
        let n = got_first.get(kind).map_or(0, Vec::len) as u32;
        eprintln!("first, {kind}: {n} of {PACKETS}");
        assert!(n * 100 >= PACKETS * 99, "{kind}: {n} of {PACKETS}");
    }

    // A PLI from the viewer reaches the publisher (streaming took 1 s: the start-up throttle is over).
    let before = *plis.borrow();
    let video_track = loop {
        let track = remote_tracks.recv().await.unwrap();
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

    // The first publisher leaves, a second one comes: its tracks take over the same m-lines, and
    // each outgoing stream continues where it stopped (same SSRC, next sequence number).
    first.handle.clone().leave().await.unwrap();
    drop(first.client);
    let second = Ingest::join(&sfu, &room, "second").await;
    second.send(1000).await;
    let got_second = receive(&mut rtp, 1000).await;
    for kind in ["audio", "video"] {
        let (a, b) = (&got_first[kind], &got_second[kind]);
        eprintln!("second, {kind}: {} of {PACKETS}", b.len());
        assert!(b.len() as u32 * 100 >= PACKETS * 99, "{kind}: {} of {PACKETS}", b.len());
        assert_eq!(a[0].1, b[0].1, "{kind}: same outgoing SSRC");
        let last_first = a.iter().max_by_key(|p| p.0).unwrap().2;
        let first_second = b.iter().min_by_key(|p| p.0).unwrap().2;
        let step = first_second.wrapping_sub(last_first);
        assert!((1..=3).contains(&step), "{kind}: sequence jumps by {step}");
    }

    let snapshot = sfu.room_snapshot(&room).await.unwrap();
    let ids: Vec<&str> = snapshot.participants.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["second", "viewer"]);
    second.handle.leave().await.unwrap();
    handle.leave().await.unwrap();
    assert!(sfu.rooms().await.unwrap().is_empty());
    sfu.shutdown().await;
}

#[tokio::test]
async fn refused_offers_leave_no_participant_behind() {
    let sfu = loopback_sfu();
    let room = RoomId::parse("refusals").unwrap();
    let (_watcher, mut events, _) = sfu
        .join(
            room.clone(),
            ParticipantId::parse("watcher").unwrap(),
            ParticipantInfo::new("watcher"),
        )
        .await
        .unwrap();
    let id = || ParticipantId::parse("ingest").unwrap();
    let garbage = "v=0\r\ngarbage".to_owned();
    let refused = sfu
        .join_publisher(room.clone(), id(), ParticipantInfo::new("x"), garbage.clone())
        .await;
    assert!(matches!(refused, Err(SfuError::InvalidSdp(_))), "{refused:?}");
    let refused = sfu
        .join_viewer(room.clone(), id(), ParticipantInfo::new("x"), garbage.clone(), None)
        .await;
    assert!(matches!(refused, Err(SfuError::InvalidSdp(_))), "{refused:?}");
    let mut no_subscribe = ParticipantInfo::new("x");
    no_subscribe.grants.subscribe = false;
    let refused = sfu
        .join_viewer(room.clone(), id(), no_subscribe, garbage.clone(), None)
        .await;
    assert_eq!(refused.err(), Some(SfuError::NotAllowed));
    let from = Some(ParticipantId::parse("nobody").unwrap());
    let refused = sfu
        .join_viewer(room.clone(), id(), ParticipantInfo::new("x"), garbage, from)
        .await;
    assert_eq!(refused.err(), Some(SfuError::UnknownParticipant));

    let snapshot = sfu.room_snapshot(&room).await.unwrap();
    assert_eq!(snapshot.participants.len(), 1);
    // The watcher heard of nobody: its stream holds only its own subscriber offer.
    while let Ok(event) = events.try_recv() {
        assert!(matches!(*event, ParticipantEvent::SubscriberOffer { .. }), "{event:?}");
    }
    sfu.shutdown().await;
}
