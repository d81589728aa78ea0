//! A real WebRTC client for the SFU tests: webrtc-rs 0.21 peer connections on 127.0.0.1.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use convene_sfu::{ParticipantEvent, ParticipantHandle, PeerTarget};
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

pub const OPUS_PT: u8 = 111;
pub const VP8_PT: u8 = 96;
/// Deliberately not str0m's PT for this H.264 profile (108), so the SFU must map it.
pub const H264_PT: u8 = 102;
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// RTX (RFC 4588) for VP8, when a client offers it.
pub const RTX_PT: u8 = 97;
/// RFC 6464 client-to-mixer audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
pub const AUDIO_SSRC: u32 = 0x1111_0001;
pub const VIDEO_SSRC: u32 = 0x2222_0002;

/// The synthetic payload of packet `n` of a kind: a recognisable header, the counter, a pattern
/// derived from it. Receivers check every byte.
pub fn payload(kind: RtpCodecKind, n: u32) -> Vec<u8> {
    let (mut p, len) = match kind {
        // VP8 payload descriptor (RFC 7741 §4.2): S=1, partition 0.
        RtpCodecKind::Video => (vec![0x10u8], 1000),
        _ => (vec![0xA0u8], 160),
    };
    p.extend_from_slice(&n.to_be_bytes());
    let mut i = 0u32;
    while p.len() < len {
        p.push((n.wrapping_mul(31).wrapping_add(i) & 0xff) as u8);
        i += 1;
    }
    p
}

/// Decodes a received payload: `Some(counter)` only if every byte matches `payload`.
pub fn check_payload(kind: RtpCodecKind, data: &[u8]) -> Option<u32> {
    let n = u32::from_be_bytes(data.get(1..5)?.try_into().ok()?);
    (payload(kind, n) == data).then_some(n)
}

/// Opus plus VP8 and H.264 (Chromium's usual pair); `h264_only` leaves VP8 out so an offer
/// carries H.264 alone.
fn codecs(h264_only: bool) -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    vec![
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                payload_type: OPUS_PT,
            },
            RtpCodecKind::Audio,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
                },
                payload_type: VP8_PT,
            },
            RtpCodecKind::Video,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: H264_FMTP.to_owned(),
                    rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
                },
                payload_type: H264_PT,
            },
            RtpCodecKind::Video,
        ),
    ]
    .into_iter()
    .filter(|(c, _)| !(h264_only && c.rtp_codec.mime_type == MIME_TYPE_VP8))
    .collect()
}

/// Marks incoming PLI/FIR for delivery to the application, so a local track's `poll()` sees them
/// (webrtc-rs consumes RTCP inside its interceptor chain otherwise).
struct KeyframeRequestTap {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = webrtc::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| p.as_any().is::<PictureLossIndication>())
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// One received RTP packet, as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: RtpCodecKind,
    pub pt: u8,
    pub seq: u16,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

#[derive(Clone)]
struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
    data: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        let _ = self.gathered.send(state == RTCIceGatheringState::Complete);
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.data.send(channel);
    }
}

/// What a test client offers beyond Opus, VP8 and H.264.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras {
    /// RTX for VP8 (str0m answers NACKs only with RTX).
    pub rtx: bool,
    /// The RFC 6464 audio level header extension on audio.
    pub audio_level: bool,
}

/// The id `sdp` maps the extension `uri` to (`a=extmap:<id> <uri>`).
pub fn extmap_id(sdp: &str, uri: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=extmap:")?;
        let (id, name) = rest.split_once(' ')?;
        let id = id.split('/').next()?;
        (name.split_whitespace().next()? == uri).then(|| id.parse().ok())?
    })
}

/// A webrtc-rs peer connection bound to 127.0.0.1 only.
pub struct Client {
    pub pc: Box<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pub data: mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
}

impl Client {
    pub async fn new() -> anyhow::Result<Client> {
        Self::with_options(false, false).await
    }

    /// `tcp`: gather only active ICE-TCP candidates (RFC 6544), no UDP at all.
    /// `h264_only`: offer H.264 as the only video codec.
    pub async fn with_options(tcp: bool, h264_only: bool) -> anyhow::Result<Client> {
        Self::build(tcp, h264_only, Extras::default()).await
    }

    /// A UDP client with Opus, VP8 and H.264 that also offers `extras`.
    pub async fn with_extras(extras: Extras) -> anyhow::Result<Client> {
        Self::build(false, false, extras).await
    }

    async fn build(tcp: bool, h264_only: bool, extras: Extras) -> anyhow::Result<Client> {
        let mut media = MediaEngine::default();
        for (codec, kind) in codecs(h264_only) {
            media.register_codec(codec, kind)?;
        }
        if extras.rtx {
            let rtx = RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={VP8_PT}"),
                    rtcp_feedback: vec![],
                },
                payload_type: RTX_PT,
            };
            media.register_codec(rtx, RtpCodecKind::Video)?;
        }
        if extras.audio_level {
            let uri = RTCRtpHeaderExtensionCapability {
                uri: AUDIO_LEVEL_URI.to_owned(),
            };
            media.register_header_extension(uri, RtpCodecKind::Audio, None)?;
        }
        let registry = register_default_interceptors(Registry::new(), &mut media)?.with(
            Slot::from(14_000),
            KeyframeRequestTap {
                read: VecDeque::new(),
                write: VecDeque::new(),
            },
        );
        let mut settings = SettingEngineBuilder::new().with_include_loopback_candidate(true);
        if tcp {
            settings = settings.with_network_types(vec![NetworkType::Tcp4]);
        }
        let settings = settings.build();
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let (data_tx, data) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
            tracks: tracks_tx,
            data: data_tx,
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(if tcp { vec![] } else { vec!["127.0.0.1:0".to_owned()] })
            .with_tcp_addrs(if tcp { vec!["127.0.0.1:0".to_owned()] } else { vec![] })
            .build()
            .await?;
        Ok(Client {
            pc: Box::new(pc),
            gathered,
            state,
            tracks,
            data,
        })
    }

    async fn local_sdp_after_gathering(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(Duration::from_secs(10), self.gathered.wait_for(|g| *g))
            .await
            .context("ice gathering timed out")??;
        Ok(self.pc.local_description().await.context("no local description")?.sdp)
    }

    /// Creates the publisher offer, has the SFU answer it, applies the answer.
    pub async fn publish_via(&mut self, handle: &ParticipantHandle) -> anyhow::Result<()> {
        let offer = self.offer().await?;
        let answer = handle.publisher_offer(offer).await?;
        self.accept_answer(answer).await
    }

    /// Creates an offer and returns it with all candidates gathered (no trickle).
    pub async fn offer(&mut self) -> anyhow::Result<String> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.local_sdp_after_gathering().await
    }

    /// Applies the answer to `offer`.
    pub async fn accept_answer(&mut self, answer: String) -> anyhow::Result<()> {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.clone())?)
            .await?;
        // webrtc-rs dials passive ICE-TCP candidates only when they are trickled, not when they
        // come in the SDP (browsers do both), so hand them over again.
        for line in answer.lines().filter(|l| l.contains(" tcp ")) {
            if let Some(candidate) = line.strip_prefix("a=") {
                self.pc
                    .add_ice_candidate(RTCIceCandidateInit {
                        candidate: candidate.to_owned(),
                        sdp_mid: Some("0".to_owned()),
                        sdp_mline_index: Some(0),
                        ..Default::default()
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// Applies a subscriber offer from the SFU and returns the answer to send back.
    pub async fn answer(&mut self, offer: String) -> anyhow::Result<String> {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.local_sdp_after_gathering().await
    }

    pub async fn wait_connected(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(
            Duration::from_secs(15),
            self.state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .context("peer connection did not connect")??;
        Ok(())
    }
}

/// A local RTP track with a fixed SSRC.
pub fn local_track(kind: RtpCodecKind, ssrc: u32, h264: bool) -> Arc<TrackLocalStaticRTP> {
    local_track_with_rtx(kind, ssrc, h264, None)
}

/// A local RTP track with a fixed SSRC and, given `rtx_ssrc`, retransmissions on that SSRC
/// (RFC 4588; the client must offer RTX, see `Extras::rtx`).
pub fn local_track_with_rtx(
    kind: RtpCodecKind,
    ssrc: u32,
    h264: bool,
    rtx_ssrc: Option<u32>,
) -> Arc<TrackLocalStaticRTP> {
    let codec = codecs(h264).into_iter().find(|(_, k)| *k == kind).unwrap().0.rtp_codec;
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher-stream".to_owned(),
        format!("publisher-{kind}"),
        format!("publisher-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

/// Counts the PLIs that reach a local track.
pub fn count_keyframe_requests(track: Arc<TrackLocalStaticRTP>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    let count = AtomicU64::new(0);
    tokio::spawn(async move {
        while let Some(event) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                continue;
            };
            let plis = packets
                .iter()
                .filter(|p| p.as_any().is::<PictureLossIndication>())
                .count() as u64;
            if plis > 0 {
                let n = count.fetch_add(plis, Ordering::Relaxed) + plis;
                let _ = tx.send(n);
            }
        }
    });
    rx
}

/// Forwards every RTP packet of every remote track to one channel.
pub fn collect_rtp(
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
) -> (
    mpsc::UnboundedReceiver<Received>,
    mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (track_tx, track_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(track) = tracks.recv().await {
            let _ = track_tx.send(track.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let kind = track.kind().await;
                while let Some(event) = track.poll().await {
                    match event {
                        TrackRemoteEvent::OnRtpPacket(p) => {
                            let _ = tx.send(Received {
                                kind,
                                pt: p.header.payload_type,
                                seq: p.header.sequence_number,
                                ssrc: p.header.ssrc,
                                payload: p.payload.to_vec(),
                            });
                        }
                        TrackRemoteEvent::OnEnded => break,
                        _ => {}
                    }
                }
            });
        }
    });
    (rx, track_rx)
}

/// Waits for the next event matching `f`, skipping others; fails after `secs`.
pub async fn next_event<T>(
    events: &mut convene_sfu::Events,
    secs: u64,
    mut f: impl FnMut(&ParticipantEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("timed out waiting for event")?;
        let Some(event) = event else {
            bail!("event stream closed");
        };
        if let Some(t) = f(&event) {
            return Ok(t);
        }
    }
}

pub fn is_connected(target: PeerTarget) -> impl FnMut(&ParticipantEvent) -> Option<()> {
    move |e| match e {
        ParticipantEvent::MediaConnection {
            target: t,
            connected: true,
        } if *t == target => Some(()),
        _ => None,
    }
}

/// Waits for the SFU's data channel to open; returns it and a stream of its messages.
pub async fn open_data_channel(
    data: &mut mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
) -> anyhow::Result<(Arc<dyn DataChannel>, mpsc::UnboundedReceiver<Vec<u8>>)> {
    let channel = tokio::time::timeout(Duration::from_secs(15), data.recv())
        .await
        .context("no data channel")?
        .context("client gone")?;
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    let (tx, rx) = mpsc::unbounded_channel();
    let ch = channel.clone();
    tokio::spawn(async move {
        let mut open_tx = Some(open_tx);
        if ch.ready_state().await.ok() == Some(webrtc::data_channel::RTCDataChannelState::Open)
            && let Some(o) = open_tx.take()
        {
            let _ = o.send(());
        }
        while let Some(event) = ch.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    if let Some(o) = open_tx.take() {
                        let _ = o.send(());
                    }
                }
                DataChannelEvent::OnMessage(m) => {
                    let _ = tx.send(m.data.to_vec());
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(15), open_rx)
        .await
        .context("data channel did not open")??;
    Ok((channel, rx))
}
