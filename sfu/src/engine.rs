//! The sans-IO room engine: rooms, participants and their str0m `Rtc`s for one media worker.
//!
//! It never reads the clock, touches a socket or spawns: the driver feeds it datagrams
//! (`handle_input`), time (`handle_timeout`) and control requests, and drains `poll_output`.
//!
//! str0m requires every mutation of an `Rtc` to be followed by a full `poll_output` drain before
//! the next mutation of the same `Rtc` (str0m `lib.rs`, "single-mutation invariant"). The engine
//! keeps it by draining a peer right after touching it; the events that drain yields are queued
//! and handled afterwards, one at a time, so forwarding to many subscribers never recurses.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::stats::{MediaEgressStats, MediaIngressStats};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::allocator::{self, Demand, StepUp};
use crate::demux::Demux;
use crate::error::SfuError;
use crate::keyframe;
use crate::layers::{LayerId, LayerSelector, Layers, Verdict};
use crate::quality::{self, Flow, QualityMeter, StreamSample};
use crate::record::{RecordOutput, RecordTap, Tapped};
use crate::rewrite::{InPacket, SeqTsRewriter};
use crate::speaker::SpeakerDetector;
use crate::throttle::{KEYFRAME_REQUEST_INTERVAL, KeyframeThrottle};
use crate::timers::Timers;
use crate::types::{
    ParticipantEvent, ParticipantId, ParticipantInfo, ParticipantSnapshot, PeerTarget, QualityReport, RoomId,
    RoomSnapshot, SfuStats, SubscribedTrack, TrackId, TrackInfo, TrackKind, TrackSettings, TrackSource,
};

/// Longest mid accepted from signaling (RFC 8843 §9.1 puts no limit; browsers use a few digits).
const MAX_MID_LEN: usize = 32;

/// Label of the data channel the SFU opens on every subscriber connection.
pub const DATA_CHANNEL_LABEL: &str = "convene-data";

/// Tracks one participant may publish; each costs every subscriber an m-line.
const MAX_TRACKS_PER_PARTICIPANT: usize = 16;

/// Largest rendered width or height a subscriber may report (`track_settings`).
const MAX_DIMENSION: u32 = 16_384;

/// Largest data channel message relayed to the room; larger ones are dropped.
const MAX_DATA_MESSAGE: usize = 16 * 1024;

/// How far a failed `Rtc`'s timeout is pushed out.
const PARKED: Duration = Duration::from_secs(3600);

/// A connected peer that sent nothing for this long is reported disconnected: browsers send
/// consent checks every ~5 s (RFC 7675 §5.1) and RTCP every second or so, and str0m's ICE-lite
/// agent reports nothing for a client that simply went quiet (it drops the pair after 15 s, so
/// this comes first and a client that resumes within it is reported connected again).
const SILENCE: Duration = Duration::from_secs(10);

/// How often connected peers are checked for silence, layer bitrates re-measured and bandwidth
/// re-allocated.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Where a subscriber's bandwidth estimate starts, before TWCC feedback refines it.
const INITIAL_ESTIMATE_BPS: u64 = 2_500_000;

/// Least bitrate the estimator of a subscriber connection aims for.
const DESIRED_FLOOR_BPS: u64 = 300_000;

/// Share of a subscriber's estimate given to media payload: RTP/SRTP headers, RTCP and
/// retransmissions take the rest.
const MEDIA_SHARE_PERCENT: u64 = 90;

/// Dynacast: a layer nobody needs any more is paused at the publisher only after this long, so
/// a tile resized back and forth does not toggle the encoder. Layers needed again resume at once.
const DYNACAST_PAUSE_DELAY: Duration = Duration::from_secs(3);

/// How long a video down-track keeps sent packets to answer NACKs (RFC 4585) with RTX. str0m
/// keeps 3 s (up to 1000 packets) by default, per subscriber and track: memory that grows with
/// every subscription. A NACK comes about one round trip after the loss, and a repair more than
/// a second late rarely still reaches a real-time receiver's jitter buffer in time.
const RTX_HISTORY: Duration = Duration::from_secs(1);

/// Upper bound on that history in packets (str0m's default: ~8 Mbit/s of full packets for 1 s).
const RTX_HISTORY_PACKETS: usize = 1000;

/// str0m's default: queued resends are dropped while they exceed this share of what is sent.
const RTX_RATIO_CAP: f32 = 0.15;

/// Opaque key of a participant inside one engine; handed to the driver to route events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParticipantKey(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PeerKey(u64);

/// What the engine hands back to its driver.
#[derive(Debug)]
pub enum EngineOutput {
    /// A datagram to send from the worker's socket.
    Transmit(Transmit),
    /// An event for one participant's signaling connection.
    Event {
        /// The participant to tell.
        to: ParticipantKey,
        /// What to tell it.
        event: ParticipantEvent,
    },
    /// Something for the recorder thread (recorded rooms only).
    Record(RecordOutput),
}

/// Static settings of one engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// UDP host candidates every peer connection advertises (advertised IPs, the worker's port).
    pub candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP host candidates (RFC 6544), if the worker listens on TCP.
    pub tcp_candidates: Vec<SocketAddr>,
}

/// A participant's view of what one `join` produced.
/// What `Engine::leave` leaves behind.
#[derive(Debug)]
pub struct Left {
    /// The room has nobody left in it (and is gone).
    pub room_empty: bool,
    /// The participant's last, partial quality window (`QualityReport`s otherwise come every
    /// 5 s as events); `None` for a hidden participant or when nothing was measured.
    pub quality: Option<QualityReport>,
}

#[derive(Debug)]
pub struct Joined {
    /// Key for all later requests about this participant.
    pub key: ParticipantKey,
    /// The room as it was when the participant joined (without the participant itself).
    pub room: RoomSnapshot,
}

struct Peer {
    /// Boxed: an `Rtc` is ~5 KB, and the peers' table holds up to twice as many slots as peers
    /// (and both tables while it grows); boxed, a slot is small.
    rtc: Box<Rtc>,
    owner: ParticipantKey,
    target: PeerTarget,
    timeout: Instant,
    /// When the client last sent anything.
    heard: Instant,
    /// Reported disconnected for `SILENCE`; the next datagram reports it connected again.
    silent: bool,
}

struct Room {
    members: HashMap<ParticipantId, ParticipantKey>,
    tracks: HashMap<TrackId, Track>,
    speakers: SpeakerDetector,
}

struct Track {
    info: TrackInfo,
    /// Publication order in the engine; viewers fill their m-lines with the oldest tracks first.
    serial: u64,
    publisher_peer: PeerKey,
    mid: Mid,
    /// The simulcast layers (or the one stream) arriving for this track.
    layers: Layers,
    /// Upstream keyframe requests, aggregated per layer.
    throttles: HashMap<LayerId, KeyframeThrottle>,
    /// Dynacast: the rids the publisher was last told to keep sending (`None`: all, as it
    /// started), and since when a smaller set would do.
    active: Option<Vec<Rid>>,
    shrink_since: Option<Instant>,
    down: HashMap<ParticipantKey, DownTrack>,
}

struct DownTrack {
    mid: Mid,
    negotiated: bool,
    started: bool,
    rewriter: Option<SeqTsRewriter>,
    /// Publisher PT → subscriber PT (`None`: the subscriber did not negotiate that codec).
    pt_map: Vec<(Pt, Option<Pt>)>,
    /// How the subscriber shows the track (`track_settings`).
    settings: TrackSettings,
    /// The layer forwarded and the one the allocator chose.
    selector: LayerSelector,
    /// The layer the allocator would choose if every layer were flowing: what dynacast keeps on.
    demand: Option<LayerId>,
    /// Packets written to str0m for this subscriber; what str0m sent beyond it was resent.
    written: u64,
}

impl DownTrack {
    fn new(mid: Mid, negotiated: bool, rewriter: Option<SeqTsRewriter>) -> Self {
        DownTrack {
            mid,
            negotiated,
            started: false,
            rewriter,
            pt_map: Vec::new(),
            settings: TrackSettings::default(),
            selector: LayerSelector::default(),
            demand: None,
            written: 0,
        }
    }
}

enum SubscriptionChange {
    /// The room data channel, offered at join so the subscriber connection comes up at once.
    OpenData,
    Add(TrackId),
    Remove(Mid),
}

#[derive(Default)]
struct SubscriberSide {
    pending_offer: Option<SdpPendingOffer>,
    queued: Vec<SubscriptionChange>,
    mids: HashMap<Mid, TrackId>,
    data_channel: Option<ChannelId>,
    data_open: bool,
}

/// Which peer connections a participant has, and who offers the subscriber one.
enum Mode {
    /// A publisher connection (client offers) and a subscriber connection (server offers): the
    /// WebSocket client, LiveKit's model.
    Duplex,
    /// Only a publisher connection (WHIP, RFC 9725).
    Ingest,
    /// Only a subscriber connection whose offer came from the client (WHEP): its m-lines are
    /// fixed, so tracks are mapped onto them instead of m-lines being added per track.
    View(Viewer),
}

struct Viewer {
    /// Only this participant's tracks (`None`: everyone's).
    from: Option<ParticipantId>,
    /// The client's m-lines the server sends on, in offer order. One without an entry in
    /// `SubscriberSide::mids` is free and takes the next matching track.
    slots: Vec<(Mid, TrackKind)>,
    /// Rewriters of slots whose track went away: the slot's next track continues the same
    /// outgoing stream (same SSRC), so it must continue its sequence numbers and timestamps too.
    parked: HashMap<Mid, SeqTsRewriter>,
}

struct Participant {
    id: ParticipantId,
    room: RoomId,
    info: ParticipantInfo,
    mode: Mode,
    publisher: Option<PeerKey>,
    subscriber: Option<PeerKey>,
    published: HashMap<Mid, TrackId>,
    /// `set_track_info` that arrived before the m-line did.
    declared: HashMap<Mid, (TrackSource, bool)>,
    sub: SubscriberSide,
    /// The subscriber connection's bandwidth estimate (TWCC), once it has one.
    estimate: Option<u64>,
    /// The (minimum, desired) bitrates last given to the estimator.
    bwe_target: (u64, u64),
    /// When the subscriber's layers may go up, and whether to probe for it.
    step_up: StepUp,
    meter: QualityMeter,
}

impl Participant {
    /// Whether new tracks in the room are added to this participant's subscriber offers.
    fn auto_subscribes(&self) -> bool {
        matches!(self.mode, Mode::Duplex) && self.info.auto_subscribe && self.info.grants.subscribe
    }
}

#[derive(Default)]
struct Counters {
    forwarded_packets: u64,
    forwarded_bytes: u64,
    dropped_packets: u64,
    keyframe_requests: u64,
    nacks_received: u64,
    nacks_sent: u64,
    layer_switches: u64,
    retransmitted_packets: u64,
}

/// The room engine of one media worker.
pub struct Engine {
    config: EngineConfig,
    crypto: Arc<CryptoProvider>,
    /// One DTLS certificate for every peer connection of the worker (as Janus and mediasoup
    /// do): a key pair and self-signing per `Rtc` were a fifth of its creation cost (the shared
    /// DTLS configuration of `dtls.rs` removes most of the rest). Each connection still
    /// negotiates its own SRTP keys (ECDHE in the handshake).
    dtls_cert: Option<DtlsCert>,
    next_id: u64,
    now: Instant,
    rooms: HashMap<RoomId, Room>,
    participants: HashMap<ParticipantKey, Participant>,
    peers: HashMap<PeerKey, Peer>,
    /// Every peer's next `Rtc` timeout, ordered: wake-ups touch only the due ones.
    timers: Timers<PeerKey>,
    /// Scratch list of the peers due in one `handle_timeout` (kept to reuse its allocation).
    due: Vec<PeerKey>,
    demux: Demux<PeerKey>,
    pending: VecDeque<(PeerKey, Event)>,
    /// Subscribers whose track set changed while handling events; offered to once the events
    /// are handled, so tracks published together arrive in one offer.
    renegotiate: Vec<ParticipantKey>,
    /// Subscribers whose bandwidth allocation must be recomputed once events are handled.
    reallocate: Vec<ParticipantKey>,
    out: VecDeque<EngineOutput>,
    counters: Counters,
    /// When connected peers are next checked for silence and participants' quality measured.
    next_sweep: Instant,
    /// Rooms whose speaker list changed while forwarding; announced once events are handled.
    speaking: Vec<RoomId>,
    /// Recorded rooms (`record.rs`).
    recording: RecordTap,
}

impl Engine {
    /// A new engine; `now` is the driver's current time.
    pub fn new(config: EngineConfig, now: Instant) -> Self {
        let crypto = Arc::new(crate::dtls::crypto_provider());
        // `None` (a provider that cannot generate one) leaves it to each `Rtc`.
        let dtls_cert = crypto.dtls_provider.generate_certificate();
        Engine {
            config,
            crypto,
            dtls_cert,
            next_id: 1,
            now,
            rooms: HashMap::new(),
            participants: HashMap::new(),
            peers: HashMap::new(),
            timers: Timers::new(),
            due: Vec::new(),
            demux: Demux::new(),
            pending: VecDeque::new(),
            renegotiate: Vec::new(),
            reallocate: Vec::new(),
            out: VecDeque::new(),
            counters: Counters::default(),
            next_sweep: now + SWEEP_INTERVAL,
            speaking: Vec::new(),
            recording: RecordTap::default(),
        }
    }

    // ---------------------------------------------------------------- driver side

    /// Feeds one datagram (or one RFC 4571 frame from ICE-TCP) received at `now`.
    pub fn handle_input(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        self.advance(now);
        let Some(pk) = self.demux.route(source, data) else {
            self.counters.dropped_packets += 1;
            return;
        };
        let Ok(receive) = Receive::new(proto, source, destination, data) else {
            self.counters.dropped_packets += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        peer.heard = now;
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            tracing::debug!(error = %e, "rtc rejected input");
        }
        if peer.silent && peer.rtc.is_connected() {
            peer.silent = false;
            emit(
                &mut self.out,
                peer.owner,
                ParticipantEvent::MediaConnection {
                    target: peer.target,
                    connected: true,
                },
            );
        }
        drain(pk, peer, &mut self.out, &mut self.pending, &mut self.timers);
        self.process_events();
    }

    /// Advances time; call when `poll_timeout` has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_INTERVAL;
            self.sweep_layers();
            for peer in self.peers.values_mut() {
                if !peer.silent && now.saturating_duration_since(peer.heard) >= SILENCE && peer.rtc.is_connected() {
                    peer.silent = true;
                    emit(
                        &mut self.out,
                        peer.owner,
                        ParticipantEvent::MediaConnection {
                            target: peer.target,
                            connected: false,
                        },
                    );
                }
            }
            self.measure_quality(now);
        }
        let quiet: Vec<RoomId> = self
            .rooms
            .iter_mut()
            .filter(|(_, r)| r.speakers.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, r)| {
                r.speakers.handle_timeout(now);
                id.clone()
            })
            .collect();
        self.speaking.extend(quiet);
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(now, &mut due);
        for pk in due.drain(..) {
            if let Some(peer) = self.peers.get_mut(&pk) {
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(error = %e, "rtc timeout failed");
                }
                drain(pk, peer, &mut self.out, &mut self.pending, &mut self.timers);
            }
        }
        self.due = due;
        self.process_events();
    }

    /// The next datagram to send or event to deliver.
    pub fn poll_output(&mut self) -> Option<EngineOutput> {
        self.out.pop_front()
    }

    /// When `handle_timeout` wants to be called next (`None`: no peers, wait for input only).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let speakers = self.rooms.values().filter_map(|r| r.speakers.poll_timeout());
        self.timers
            .next()
            .into_iter()
            .chain(speakers)
            .min()
            .map(|t| t.min(self.next_sweep))
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    // ---------------------------------------------------------------- control side

    /// Adds a participant to a room (creating the room) with a subscriber peer connection; its
    /// publisher connection is made by its first `publisher_offer`, so a participant that only
    /// listens never holds one (each str0m `Rtc` costs tens of KiB and a DTLS context). Others are
    /// told; a subscriber offer (the room data channel, and with auto-subscribe the room's current
    /// tracks) follows as an event.
    pub fn join(
        &mut self,
        room: RoomId,
        id: ParticipantId,
        info: ParticipantInfo,
        now: Instant,
    ) -> Result<Joined, SfuError> {
        self.advance(now);
        self.check_absent(&room, &id)?;
        let key = ParticipantKey(self.next_key());
        let subscriber = self.add_peer(key, PeerTarget::Subscriber);
        let subscribe_all = info.auto_subscribe && info.grants.subscribe;
        let joined = self.admit(key, room.clone(), id, info, Mode::Duplex, (None, Some(subscriber)));
        self.queue_subscription(key, SubscriptionChange::OpenData);
        if subscribe_all {
            let existing: Vec<TrackId> = self
                .rooms
                .get(&room)
                .map(|r| r.tracks.keys().cloned().collect())
                .unwrap_or_default();
            for tid in existing {
                self.queue_subscription(key, SubscriptionChange::Add(tid));
            }
        }
        self.offer_if_needed(key);
        self.process_events();
        Ok(joined)
    }

    /// Adds a participant that only publishes (WHIP, RFC 9725): one publisher connection built
    /// from the client's offer, no subscriber connection. Returns the SDP answer. An offer that
    /// does not parse or negotiate leaves no trace (nobody hears of the participant).
    pub fn join_publisher(
        &mut self,
        room: RoomId,
        id: ParticipantId,
        info: ParticipantInfo,
        offer: &str,
        now: Instant,
    ) -> Result<(Joined, String), SfuError> {
        self.advance(now);
        self.check_absent(&room, &id)?;
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let key = ParticipantKey(self.next_key());
        let pk = self.add_peer(key, PeerTarget::Publisher);
        let answer = self.accept_offer(pk, offer).inspect_err(|_| self.remove_peer(pk))?;
        let joined = self.admit(key, room, id, info, Mode::Ingest, (Some(pk), None));
        self.process_events();
        Ok((joined, answer))
    }

    /// Adds a participant that only receives, over a connection the client offers (WHEP): the
    /// offer's receiving audio and video m-lines carry the room's tracks (only `from`'s, if
    /// given), oldest first and keeping a publisher's audio and video together. A track that goes
    /// away frees its m-line for the next one; tracks beyond the offered m-lines wait for a free
    /// one. Returns the SDP answer.
    pub fn join_viewer(
        &mut self,
        room: RoomId,
        id: ParticipantId,
        info: ParticipantInfo,
        offer: &str,
        from: Option<ParticipantId>,
        now: Instant,
    ) -> Result<(Joined, String), SfuError> {
        self.advance(now);
        if !info.grants.subscribe {
            return Err(SfuError::NotAllowed);
        }
        self.check_absent(&room, &id)?;
        if let Some(from) = &from
            && !self.rooms.get(&room).is_some_and(|r| r.members.contains_key(from))
        {
            return Err(SfuError::UnknownParticipant);
        }
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let key = ParticipantKey(self.next_key());
        let sk = self.add_peer(key, PeerTarget::Subscriber);
        let answer = self.accept_offer(sk, offer).inspect_err(|_| self.remove_peer(sk))?;
        let viewer = Viewer {
            from,
            slots: Vec::new(),
            parked: HashMap::new(),
        };
        let joined = self.admit(key, room, id, info, Mode::View(viewer), (None, Some(sk)));
        self.process_events();
        Ok((joined, answer))
    }

    /// Applies the client's publisher offer and returns the SDP answer. Its tracks are announced
    /// (`TrackPublished`, to everyone including the publisher) once the publisher connection is
    /// up: str0m reports new m-lines after ICE and DTLS complete. The first offer of a WebSocket
    /// participant creates its publisher connection.
    pub fn publisher_offer(&mut self, key: ParticipantKey, sdp: &str, now: Instant) -> Result<String, SfuError> {
        self.advance(now);
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let part = self.participant(key)?;
        let pk = match (part.publisher, &part.mode) {
            (Some(pk), _) => pk,
            (None, Mode::Duplex) => {
                let pk = self.add_peer(key, PeerTarget::Publisher);
                if let Some(part) = self.participants.get_mut(&key) {
                    part.publisher = Some(pk);
                }
                pk
            }
            (None, _) => return Err(SfuError::NotAllowed),
        };
        let result = self.accept_offer(pk, offer);
        self.process_events();
        result
    }

    /// Applies the client's answer to the outstanding subscriber offer. An answer that does not
    /// parse is refused and the offer stays outstanding (the client may answer again); one that
    /// parses but does not match the offer fails the subscriber connection (an `Error` event with
    /// code `subscriber_negotiation_failed`; rejoin to recover).
    pub fn subscriber_answer(&mut self, key: ParticipantKey, sdp: &str, now: Instant) -> Result<(), SfuError> {
        self.advance(now);
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))?;
        let part = self.participants.get_mut(&key).ok_or(SfuError::UnknownParticipant)?;
        let pending = part.sub.pending_offer.take().ok_or(SfuError::NoPendingOffer)?;
        let sk = part.subscriber.ok_or(SfuError::NoPendingOffer)?;
        let peer = self.peers.get_mut(&sk).ok_or(SfuError::UnknownParticipant)?;
        let result = peer.rtc.sdp_api().accept_answer(pending, answer);
        drain(sk, peer, &mut self.out, &mut self.pending, &mut self.timers);
        match &result {
            Ok(()) => {
                if let Some(room) = self.rooms.get_mut(&part.room) {
                    for tid in part.sub.mids.values() {
                        if let Some(dt) = room.tracks.get_mut(tid).and_then(|t| t.down.get_mut(&key)) {
                            dt.negotiated = true;
                        }
                    }
                }
                self.reallocate.push(key);
            }
            // An answer that parses but does not fit the offer leaves str0m's subscriber
            // session half-applied; re-offering on it yields offers the client cannot match.
            // The subscriber connection is unusable from here: signaling should rejoin.
            Err(e) => emit(
                &mut self.out,
                key,
                ParticipantEvent::Error {
                    code: "subscriber_negotiation_failed",
                    message: e.to_string(),
                },
            ),
        }
        self.offer_if_needed(key);
        self.process_events();
        result.map_err(|e| SfuError::InvalidSdp(e.to_string()))
    }

    /// Adds a trickled remote ICE candidate (`candidate:...`, with or without `a=`). The server is
    /// ICE-lite and learns client addresses from their checks, so this is optional for clients.
    pub fn add_ice_candidate(
        &mut self,
        key: ParticipantKey,
        target: PeerTarget,
        candidate: &str,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.advance(now);
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        let cand = Candidate::from_sdp_string(line).map_err(|_| SfuError::InvalidCandidate)?;
        let part = self.participant(key)?;
        let pk = match (target, part.publisher, &part.mode) {
            (PeerTarget::Publisher, Some(pk), _) => pk,
            // Trickled before any offer made the publisher connection: a hint the ICE-lite
            // server does without (it learns the address from the client's checks).
            (PeerTarget::Publisher, None, Mode::Duplex) => return Ok(()),
            (PeerTarget::Publisher, None, _) => return Err(SfuError::NotAllowed),
            (PeerTarget::Subscriber, ..) => part.subscriber.ok_or(SfuError::NotAllowed)?,
        };
        let peer = self.peers.get_mut(&pk).ok_or(SfuError::UnknownParticipant)?;
        peer.rtc.add_remote_candidate(cand);
        drain(pk, peer, &mut self.out, &mut self.pending, &mut self.timers);
        self.process_events();
        Ok(())
    }

    /// Declares what the publisher's m-line `mid` carries and whether it is muted. May come before
    /// the offer that adds the m-line, or later to change it (then `TrackUpdated` goes out).
    pub fn set_track_info(
        &mut self,
        key: ParticipantKey,
        mid: &str,
        source: TrackSource,
        muted: bool,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.advance(now);
        if mid.is_empty() || mid.len() > MAX_MID_LEN {
            return Err(SfuError::UnknownMid);
        }
        let mid = Mid::from(mid);
        let part = self.participants.get_mut(&key).ok_or(SfuError::UnknownParticipant)?;
        if !part.info.grants.may_publish(source) {
            return Err(SfuError::NotAllowed);
        }
        let Some(tid) = part.published.get(&mid).cloned() else {
            part.declared.insert(mid, (source, muted));
            return Ok(());
        };
        let room_id = part.room.clone();
        let room = self.rooms.get_mut(&room_id).ok_or(SfuError::UnknownRoom)?;
        let track = room.tracks.get_mut(&tid).ok_or(SfuError::UnknownTrack)?;
        if track.info.kind != source.kind() {
            return Err(SfuError::InvalidTrackSource);
        }
        let unmuted = track.info.muted && !muted;
        if track.info.muted != muted {
            // A muted track gets no bandwidth.
            self.reallocate.extend(track.down.keys().copied());
        }
        track.info.source = source;
        track.info.muted = muted;
        if unmuted {
            // The publisher may have kept counting (or restarted) while muted: splice the
            // streams so subscribers see no sequence gap to NACK.
            for dt in track.down.values_mut() {
                if let Some(rw) = dt.rewriter.as_mut() {
                    rw.switch_source();
                }
            }
        }
        let info = track.info.clone();
        let members: Vec<ParticipantKey> = room.members.values().copied().collect();
        for m in members {
            emit(&mut self.out, m, ParticipantEvent::TrackUpdated(info.clone()));
        }
        if unmuted && info.kind == TrackKind::Video {
            let forwarded: Vec<LayerId> = track.down.values().filter_map(|d| d.selector.target()).collect();
            for layer in forwarded {
                self.request_keyframe(&room_id, &tid, layer, KeyframeRequestKind::Pli);
            }
        }
        self.process_events();
        Ok(())
    }

    /// Sets how a subscriber shows one of the tracks it receives (rendered size, shown at all,
    /// quality preference); its layers are chosen again at once.
    pub fn set_track_settings(
        &mut self,
        key: ParticipantKey,
        track: &TrackId,
        settings: TrackSettings,
        now: Instant,
    ) -> Result<(), SfuError> {
        self.advance(now);
        if let Some((w, h)) = settings.size
            && !((1..=MAX_DIMENSION).contains(&w) && (1..=MAX_DIMENSION).contains(&h))
        {
            return Err(SfuError::InvalidSettings);
        }
        let room = self.participant(key)?.room.clone();
        let dt = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.tracks.get_mut(track))
            .and_then(|t| t.down.get_mut(&key))
            .ok_or(SfuError::UnknownTrack)?;
        dt.settings = settings;
        self.reallocate.push(key);
        self.process_events();
        Ok(())
    }

    /// Subscribes to a track of another participant in the same room.
    pub fn subscribe(&mut self, key: ParticipantKey, track: &TrackId, now: Instant) -> Result<(), SfuError> {
        self.advance(now);
        let part = self.participant(key)?;
        // A viewer's m-lines are the client's; tracks are mapped onto them, not chosen.
        if !part.info.grants.subscribe || !matches!(part.mode, Mode::Duplex) {
            return Err(SfuError::NotAllowed);
        }
        let t = self
            .rooms
            .get(&part.room)
            .and_then(|r| r.tracks.get(track))
            .ok_or(SfuError::UnknownTrack)?;
        if t.info.participant == part.id {
            return Err(SfuError::UnknownTrack);
        }
        self.queue_subscription(key, SubscriptionChange::Add(track.clone()));
        self.offer_if_needed(key);
        self.process_events();
        Ok(())
    }

    /// Stops forwarding a track to this participant (its m-line goes inactive in the next offer).
    pub fn unsubscribe(&mut self, key: ParticipantKey, track: &TrackId, now: Instant) -> Result<(), SfuError> {
        self.advance(now);
        let part = self.participant(key)?;
        if !matches!(part.mode, Mode::Duplex) {
            return Err(SfuError::NotAllowed);
        }
        let room = part.room.clone();
        let t = self
            .rooms
            .get_mut(&room)
            .and_then(|r| r.tracks.get_mut(track))
            .ok_or(SfuError::UnknownTrack)?;
        let removed = t.down.remove(&key);
        match removed {
            Some(dt) => self.queue_subscription(key, SubscriptionChange::Remove(dt.mid)),
            None => self.cancel_queued_add(key, track),
        }
        self.offer_if_needed(key);
        self.process_events();
        Ok(())
    }

    /// Removes a participant: its tracks are unpublished for the others (who get a new subscriber
    /// offer), its peer connections are closed. Returns whether the room is now empty (and gone).
    pub fn leave(&mut self, key: ParticipantKey, now: Instant) -> Result<Left, SfuError> {
        self.advance(now);
        let part = self.participants.remove(&key).ok_or(SfuError::UnknownParticipant)?;
        let quality = if part.info.grants.hidden {
            None
        } else {
            part.meter.finish()
        };
        let room_id = part.room.clone();
        for tid in part.published.values() {
            self.unpublish(&room_id, tid);
        }
        for pk in [part.publisher, part.subscriber].into_iter().flatten() {
            self.demux.remove(pk);
            if let Some(mut peer) = self.peers.remove(&pk) {
                // Sends RTCP BYE and DTLS close_notify so the client notices at once.
                if peer.rtc.close().is_ok() {
                    drain(pk, &mut peer, &mut self.out, &mut self.pending, &mut self.timers);
                }
            }
            self.timers.remove(pk);
        }
        let mut empty = false;
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.members.remove(&part.id);
            room.speakers.remove(&part.id);
            self.speaking.push(room_id.clone());
            for t in room.tracks.values_mut() {
                t.down.remove(&key);
            }
            if !part.info.grants.hidden {
                for other in room.members.values() {
                    emit(
                        &mut self.out,
                        *other,
                        ParticipantEvent::ParticipantLeft {
                            participant: part.id.clone(),
                        },
                    );
                }
            }
            empty = room.members.is_empty();
        }
        if empty {
            self.rooms.remove(&room_id);
            self.recording.room_ended(&room_id, &mut self.out);
        }
        // Events of the departed peers are dropped with them.
        self.pending
            .retain(|(pk, _)| Some(*pk) != part.publisher && Some(*pk) != part.subscriber);
        self.process_events();
        Ok(Left {
            room_empty: empty,
            quality,
        })
    }

    /// Ends a room for everyone: each participant gets `Removed { reason: "room_closed" }`.
    /// Returns the keys of the removed participants.
    pub fn close_room(&mut self, room: &RoomId, now: Instant) -> Result<Vec<ParticipantKey>, SfuError> {
        let members: Vec<ParticipantKey> = self
            .rooms
            .get(room)
            .ok_or(SfuError::UnknownRoom)?
            .members
            .values()
            .copied()
            .collect();
        for key in &members {
            emit(&mut self.out, *key, ParticipantEvent::Removed { reason: "room_closed" });
        }
        for key in &members {
            self.leave(*key, now)?;
        }
        Ok(members)
    }

    /// Ids of the rooms with participants.
    pub fn rooms(&self) -> Vec<RoomId> {
        self.rooms.keys().cloned().collect()
    }

    /// A room's visible participants and their tracks.
    pub fn snapshot(&self, room: &RoomId) -> Option<RoomSnapshot> {
        let r = self.rooms.get(room)?;
        let mut participants: Vec<ParticipantSnapshot> = r
            .members
            .values()
            .filter_map(|k| self.participants.get(k))
            .filter(|p| !p.info.grants.hidden)
            .map(|p| {
                let mut tracks: Vec<TrackInfo> = p
                    .published
                    .values()
                    .filter_map(|tid| r.tracks.get(tid))
                    .map(|t| t.info.clone())
                    .collect();
                tracks.sort_by(|a, b| a.id.cmp(&b.id));
                ParticipantSnapshot {
                    id: p.id.clone(),
                    name: p.info.name.clone(),
                    tracks,
                    quality: p.meter.current().cloned(),
                }
            })
            .collect();
        participants.sort_by(|a, b| a.id.cmp(&b.id));
        Some(RoomSnapshot {
            room: room.clone(),
            participants,
        })
    }

    /// Counters and gauges of this engine.
    pub fn stats(&self) -> SfuStats {
        SfuStats {
            rooms: self.rooms.len() as u64,
            participants: self.participants.len() as u64,
            tracks: self.rooms.values().map(|r| r.tracks.len() as u64).sum(),
            peer_connections: self.peers.len() as u64,
            forwarded_packets: self.counters.forwarded_packets,
            forwarded_bytes: self.counters.forwarded_bytes,
            dropped_packets: self.counters.dropped_packets,
            keyframe_requests: self.counters.keyframe_requests,
            nacks_received: self.counters.nacks_received,
            nacks_sent: self.counters.nacks_sent,
            layer_switches: self.counters.layer_switches,
            retransmitted_packets: self.counters.retransmitted_packets,
            ..SfuStats::default()
        }
    }

    /// Starts handing `room`'s media to the recorder (`EngineOutput::Record`); everyone in the
    /// room (and each later joiner) gets `ParticipantEvent::Recording`. Video tracks are asked
    /// for a keyframe so their files can start.
    pub fn start_recording(&mut self, room: &RoomId, recording_id: &str, now: Instant) -> Result<(), SfuError> {
        self.advance(now);
        let r = self.rooms.get(room).ok_or(SfuError::UnknownRoom)?;
        if !self.recording.start(room, recording_id) {
            return Err(SfuError::AlreadyRecording);
        }
        let video: Vec<(TrackId, Vec<LayerId>)> = r
            .tracks
            .iter()
            .filter(|(_, t)| t.info.kind == TrackKind::Video)
            .map(|(id, t)| (id.clone(), t.layers.ids().collect()))
            .collect();
        self.tell_recording(room, true, recording_id);
        for (tid, layers) in video {
            for layer in layers {
                self.request_keyframe(room, &tid, layer, KeyframeRequestKind::Pli);
            }
        }
        self.process_events();
        Ok(())
    }

    /// Stops recording `room`; returns the recording's id (`None`: it was not recorded). The
    /// driver finalizes the files.
    pub fn stop_recording(&mut self, room: &RoomId) -> Option<String> {
        let id = self.recording.stop(room)?;
        self.tell_recording(room, false, &id);
        Some(id)
    }

    fn tell_recording(&mut self, room: &RoomId, active: bool, recording_id: &str) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for key in r.members.values() {
            emit(
                &mut self.out,
                *key,
                ParticipantEvent::Recording {
                    active,
                    recording_id: recording_id.to_owned(),
                },
            );
        }
    }

    // ---------------------------------------------------------------- internals

    fn next_key(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn participant(&self, key: ParticipantKey) -> Result<&Participant, SfuError> {
        self.participants.get(&key).ok_or(SfuError::UnknownParticipant)
    }

    fn check_absent(&self, room: &RoomId, id: &ParticipantId) -> Result<(), SfuError> {
        if self.rooms.get(room).is_some_and(|r| r.members.contains_key(id)) {
            return Err(SfuError::DuplicateParticipant);
        }
        Ok(())
    }

    /// Makes a participant whose peers (publisher, subscriber) exist a member of `room`
    /// (creating the room) and tells the others.
    fn admit(
        &mut self,
        key: ParticipantKey,
        room: RoomId,
        id: ParticipantId,
        info: ParticipantInfo,
        mode: Mode,
        (publisher, subscriber): (Option<PeerKey>, Option<PeerKey>),
    ) -> Joined {
        let snapshot = self.snapshot(&room).unwrap_or(RoomSnapshot {
            room: room.clone(),
            participants: Vec::new(),
        });
        let (hidden, name) = (info.grants.hidden, info.name.clone());
        self.participants.insert(
            key,
            Participant {
                id: id.clone(),
                room: room.clone(),
                info,
                mode,
                publisher,
                subscriber,
                published: HashMap::new(),
                declared: HashMap::new(),
                sub: SubscriberSide::default(),
                estimate: None,
                bwe_target: (0, 0),
                step_up: StepUp::default(),
                meter: QualityMeter::new(self.now),
            },
        );
        // A joiner of a recorded room is told at once, before anything else about the room.
        let recording = self.recording.active(&room).map(str::to_owned);
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            members: HashMap::new(),
            tracks: HashMap::new(),
            speakers: SpeakerDetector::default(),
        });
        let others: Vec<ParticipantKey> = r.members.values().copied().collect();
        r.members.insert(id.clone(), key);
        if let Some(recording_id) = recording {
            emit(
                &mut self.out,
                key,
                ParticipantEvent::Recording {
                    active: true,
                    recording_id,
                },
            );
        }
        // Lists go out on change only: a newcomer needs the one in force.
        let speaking = r.speakers.current();
        if !speaking.is_empty() {
            emit(&mut self.out, key, ParticipantEvent::ActiveSpeakers(speaking));
        }
        if !hidden {
            for other in others {
                emit(
                    &mut self.out,
                    other,
                    ParticipantEvent::ParticipantJoined {
                        participant: id.clone(),
                        name: name.clone(),
                    },
                );
            }
        }
        Joined { key, room: snapshot }
    }

    /// Applies a client offer to one of its peers and returns the answer.
    fn accept_offer(&mut self, pk: PeerKey, offer: SdpOffer) -> Result<String, SfuError> {
        let peer = self.peers.get_mut(&pk).ok_or(SfuError::UnknownParticipant)?;
        let result = peer.rtc.sdp_api().accept_offer(offer);
        drain(pk, peer, &mut self.out, &mut self.pending, &mut self.timers);
        // An offer restarting ICE (RFC 8445 §9) gives us a new ufrag too; checks from the
        // client's new address will name it.
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        self.demux.insert(ufrag, pk);
        result
            .map(|answer| answer.to_sdp_string())
            .map_err(|e| SfuError::InvalidSdp(e.to_string()))
    }

    /// Drops a peer that never belonged to a participant (its offer was refused).
    fn remove_peer(&mut self, pk: PeerKey) {
        self.demux.remove(pk);
        self.peers.remove(&pk);
        self.timers.remove(pk);
        self.pending.retain(|(p, _)| *p != pk);
    }

    /// A viewer's offered m-line the server sends on: a slot for a track.
    fn add_slot(&mut self, key: ParticipantKey, mid: Mid, kind: MediaKind) {
        let Some(Participant {
            mode: Mode::View(viewer),
            ..
        }) = self.participants.get_mut(&key)
        else {
            return;
        };
        let kind = match kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        if !viewer.slots.iter().any(|(m, _)| *m == mid) {
            viewer.slots.push((mid, kind));
        }
        self.fill_slots(key);
    }

    /// Maps tracks the viewer does not receive yet onto its free slots: tracks of a publisher
    /// it already shows first (so one publisher's audio and video go together), then the oldest.
    fn fill_slots(&mut self, key: ParticipantKey) {
        let Engine {
            participants, rooms, ..
        } = self;
        let Some(part) = participants.get_mut(&key) else {
            return;
        };
        let Mode::View(viewer) = &mut part.mode else {
            return;
        };
        let Some(room) = rooms.get_mut(&part.room) else {
            return;
        };
        for (mid, kind) in &viewer.slots {
            if part.sub.mids.contains_key(mid) {
                continue;
            }
            let shown: Vec<&ParticipantId> = part
                .sub
                .mids
                .values()
                .filter_map(|tid| room.tracks.get(tid))
                .map(|t| &t.info.participant)
                .collect();
            let pick = room
                .tracks
                .iter()
                .filter(|(_, t)| {
                    t.info.kind == *kind
                        && !t.down.contains_key(&key)
                        && t.info.participant != part.id
                        && viewer.from.as_ref().is_none_or(|f| *f == t.info.participant)
                })
                .min_by_key(|(_, t)| (!shown.contains(&&t.info.participant), t.serial))
                .map(|(tid, _)| tid.clone());
            let Some(track) = pick.as_ref().and_then(|tid| room.tracks.get_mut(tid)) else {
                continue;
            };
            let rewriter = viewer.parked.remove(mid).map(|mut rw| {
                rw.switch_source();
                rw
            });
            // The client's offer already negotiated the m-line: forwarding starts at once.
            track.down.insert(key, DownTrack::new(*mid, true, rewriter));
            part.sub.mids.insert(*mid, track.info.id.clone());
        }
        self.reallocate.push(key);
    }

    fn add_peer(&mut self, owner: ParticipantKey, target: PeerTarget) -> PeerKey {
        let pk = PeerKey(self.next_key());
        // ICE-lite: the server only answers checks, so it needs no knowledge of client candidates
        // and one port serves everyone (RFC 8445 §2.5).
        // Stats (each second) feed the NACK counters. Subscriber connections estimate their
        // bandwidth from TWCC feedback for the layer allocator.
        let mut config = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_stats_interval(Some(quality::STATS_INTERVAL))
            .set_crypto_provider(self.crypto.clone());
        if target == PeerTarget::Subscriber {
            config = config.enable_bwe(Some(Bitrate::bps(INITIAL_ESTIMATE_BPS)));
        }
        if let Some(cert) = &self.dtls_cert {
            config = config.set_dtls_cert(cert.clone());
        }
        let mut rtc = config.build(self.now);
        let udp = self.config.candidates.iter().map(|a| Candidate::host(*a, "udp"));
        // Passive only: clients connect to us (RFC 6544 §4.5), never the other way round.
        let tcp = self
            .config
            .tcp_candidates
            .iter()
            .map(|a| Candidate::builder().tcp().host(*a).tcptype(TcpType::Passive).build());
        for candidate in udp.chain(tcp) {
            match candidate {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(error = %e, "unusable local candidate"),
            }
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        self.demux.insert(ufrag, pk);
        let mut peer = Peer {
            rtc: Box::new(rtc),
            owner,
            target,
            timeout: self.now,
            heard: self.now,
            silent: false,
        };
        drain(pk, &mut peer, &mut self.out, &mut self.pending, &mut self.timers);
        self.peers.insert(pk, peer);
        pk
    }

    fn process_events(&mut self) {
        loop {
            self.handle_pending_events();
            self.announce_speakers();
            if !self.renegotiate.is_empty() {
                for key in std::mem::take(&mut self.renegotiate) {
                    self.offer_if_needed(key);
                }
                continue;
            }
            if self.reallocate.is_empty() {
                return;
            }
            let mut keys = std::mem::take(&mut self.reallocate);
            keys.sort_by_key(|k| k.0);
            keys.dedup();
            for key in keys {
                self.allocate(key);
            }
        }
    }

    fn handle_pending_events(&mut self) {
        while let Some((pk, event)) = self.pending.pop_front() {
            let Some(peer) = self.peers.get(&pk) else {
                continue;
            };
            let (owner, target) = (peer.owner, peer.target);
            match event {
                Event::Connected => emit(
                    &mut self.out,
                    owner,
                    ParticipantEvent::MediaConnection {
                        target,
                        connected: true,
                    },
                ),
                Event::IceConnectionStateChange(IceConnectionState::Disconnected) => emit(
                    &mut self.out,
                    owner,
                    ParticipantEvent::MediaConnection {
                        target,
                        connected: false,
                    },
                ),
                Event::MediaAdded(m) if target == PeerTarget::Publisher && m.direction.is_receiving() => {
                    self.publish(owner, pk, m.mid, m.kind, m.simulcast);
                }
                Event::MediaAdded(m) if target == PeerTarget::Subscriber && m.direction.is_sending() => {
                    self.add_slot(owner, m.mid, m.kind);
                }
                Event::MediaChanged(m) if target == PeerTarget::Publisher && !m.direction.is_receiving() => {
                    self.unpublish_mid(owner, m.mid);
                }
                Event::RtpPacket(pkt) if target == PeerTarget::Publisher => {
                    self.forward(pk, owner, &pkt);
                }
                Event::ChannelOpen(cid, _) if target == PeerTarget::Subscriber => {
                    if let Some(p) = self.participants.get_mut(&owner)
                        && p.sub.data_channel == Some(cid)
                    {
                        p.sub.data_open = true;
                    }
                }
                Event::ChannelData(data) => self.relay_data(owner, &data.data),
                Event::StreamPaused(p) if target == PeerTarget::Publisher => {
                    self.layer_flow(owner, p.mid, p.rid, !p.paused);
                }
                Event::PeerStats(s) => {
                    if let Some(p) = self.participants.get_mut(&owner) {
                        p.meter.on_peer_rtt(s.rtt);
                    }
                }
                Event::MediaIngressStats(s) if target == PeerTarget::Publisher => self.ingress_stats(owner, &s),
                Event::MediaEgressStats(s) if target == PeerTarget::Subscriber => self.egress_stats(owner, &s),
                Event::KeyframeRequest(req) if target == PeerTarget::Subscriber => {
                    self.subscriber_keyframe_request(owner, req.mid, req.kind);
                }
                Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) if target == PeerTarget::Subscriber => {
                    if let Some(p) = self.participants.get_mut(&owner) {
                        tracing::debug!(bps = estimate.as_u64(), "subscriber bandwidth estimate");
                        p.estimate = Some(estimate.as_u64());
                        self.reallocate.push(owner);
                    }
                }
                _ => {}
            }
        }
    }

    /// Tells the rooms whose speaker list changed.
    fn announce_speakers(&mut self) {
        for room_id in std::mem::take(&mut self.speaking) {
            let Some(room) = self.rooms.get_mut(&room_id) else {
                continue;
            };
            let Some(list) = room.speakers.poll_list() else {
                continue;
            };
            for key in room.members.values() {
                emit(&mut self.out, *key, ParticipantEvent::ActiveSpeakers(list.clone()));
            }
        }
    }

    /// Measures every visible participant whose media connection is up (once per
    /// `SWEEP_INTERVAL`): its room hears of changed classes, the participant gets its analytics
    /// report when a window is complete.
    fn measure_quality(&mut self, now: Instant) {
        let Engine {
            rooms,
            participants,
            peers,
            out,
            ..
        } = self;
        for room in rooms.values() {
            let mut changes = Vec::new();
            for key in room.members.values() {
                let Some(p) = participants.get_mut(key) else {
                    continue;
                };
                let conns: Vec<&Peer> = [p.publisher, p.subscriber]
                    .into_iter()
                    .flatten()
                    .filter_map(|k| peers.get(&k))
                    .collect();
                if p.info.grants.hidden || !conns.iter().any(|c| c.rtc.is_connected()) {
                    continue;
                }
                let heard = conns.iter().map(|c| c.heard).max().unwrap_or(now);
                let unmuted = p
                    .published
                    .values()
                    .filter_map(|tid| room.tracks.get(tid))
                    .filter(|t| !t.info.muted);
                let (mut publishing, mut expected_up_kbps) = (false, 0);
                for t in unmuted {
                    publishing = true;
                    if t.info.kind == TrackKind::Video {
                        expected_up_kbps += quality::EXPECTED_VIDEO_KBPS;
                    }
                }
                let cx = quality::Context {
                    heard,
                    expected_up_kbps,
                    publishing,
                };
                let evaluation = p.meter.evaluate(&p.id, now, cx);
                changes.extend(evaluation.changed);
                if let Some(report) = evaluation.report {
                    emit(out, *key, ParticipantEvent::QualityReport(report));
                }
            }
            if !changes.is_empty() {
                for key in room.members.values() {
                    emit(out, *key, ParticipantEvent::ConnectionQuality(changes.clone()));
                }
            }
        }
    }

    /// str0m's statistics of a stream from a publisher.
    fn ingress_stats(&mut self, owner: ParticipantKey, s: &MediaIngressStats) {
        let Some(p) = self.participants.get_mut(&owner) else {
            return;
        };
        let kind = p
            .published
            .get(&s.mid)
            .and_then(|tid| self.rooms.get(&p.room)?.tracks.get(tid))
            .map(|t| t.info.kind);
        let sample = StreamSample {
            packets: s.packets,
            bytes: s.bytes,
            nacks: s.nacks,
            resent: 0,
            loss: s.loss,
            // Audio only: video leaves in frame bursts, and simulcast layers pause and resume
            // (dynacast), so RFC 3550 jitter on video says little about what people hear.
            jitter_ms: kind.filter(|k| *k == TrackKind::Audio).map(|k| jitter_ms(s.jitter, k)),
            rtt: s.rtt,
        };
        let growth = p.meter.on_stream(Flow::Up, s.mid, s.rid, sample);
        self.counters.nacks_sent += growth.nacks;
    }

    /// str0m's statistics of a stream to a subscriber. Its packet count includes resends, so
    /// what it sent beyond the packets written to it were retransmissions.
    fn egress_stats(&mut self, owner: ParticipantKey, s: &MediaEgressStats) {
        let Some(p) = self.participants.get_mut(&owner) else {
            return;
        };
        let track = p
            .sub
            .mids
            .get(&s.mid)
            .and_then(|tid| self.rooms.get(&p.room)?.tracks.get(tid));
        let written = track.and_then(|t| Some((t.info.kind, t.down.get(&owner)?.written)));
        let sample = StreamSample {
            packets: s.packets,
            bytes: s.bytes,
            nacks: s.nacks,
            // Without its down-track the count is unknown; the meter keeps the last one.
            resent: written.map_or(0, |(_, w)| s.packets.saturating_sub(w)),
            loss: s.loss,
            // Audio only, as for ingress; a forwarded video stream also jumps at layer switches.
            jitter_ms: written
                .zip(s.remote.as_ref())
                .filter(|((k, _), _)| *k == TrackKind::Audio)
                .map(|((k, _), r)| jitter_ms(r.jitter, k)),
            rtt: s.rtt,
        };
        let growth = p.meter.on_stream(Flow::Down, s.mid, s.rid, sample);
        self.counters.nacks_received += growth.nacks;
        self.counters.retransmitted_packets += growth.resent;
    }

    fn publish(&mut self, owner: ParticipantKey, pk: PeerKey, mid: Mid, kind: MediaKind, simulcast: Option<Simulcast>) {
        let id = self.next_key();
        let Some(part) = self.participants.get_mut(&owner) else {
            return;
        };
        if part.published.contains_key(&mid) {
            return;
        }
        let kind = match kind {
            MediaKind::Audio => TrackKind::Audio,
            MediaKind::Video => TrackKind::Video,
        };
        let (source, muted) = match part.declared.remove(&mid) {
            Some((s, m)) if s.kind() == kind => (s, m),
            _ => (TrackSource::default_for(kind), false),
        };
        if !part.info.grants.may_publish(source) {
            emit(
                &mut self.out,
                owner,
                ParticipantEvent::Error {
                    code: "publish_not_allowed",
                    message: format!("no grant to publish {} (mid {mid})", source.as_str()),
                },
            );
            return;
        }
        if part.published.len() >= MAX_TRACKS_PER_PARTICIPANT {
            emit(
                &mut self.out,
                owner,
                ParticipantEvent::Error {
                    code: "too_many_tracks",
                    message: format!("at most {MAX_TRACKS_PER_PARTICIPANT} tracks (mid {mid})"),
                },
            );
            return;
        }
        let Ok(tid) = TrackId::parse(format!("TR_{id}")) else {
            return;
        };
        part.published.insert(mid, tid.clone());
        let info = TrackInfo {
            id: tid.clone(),
            participant: part.id.clone(),
            publisher_mid: mid.to_string(),
            kind,
            source,
            muted,
        };
        let publisher_id = part.id.clone();
        let Some(room) = self.rooms.get_mut(&part.room) else {
            return;
        };
        let mut layers = Layers::new(kind == TrackKind::Audio);
        for l in simulcast.iter().flat_map(|s| s.send.iter().chain(&s.recv)) {
            layers.declare(LayerId(Some(l.rid)));
        }
        room.tracks.insert(
            tid.clone(),
            Track {
                info: info.clone(),
                serial: id,
                publisher_peer: pk,
                mid,
                layers,
                throttles: HashMap::new(),
                active: None,
                shrink_since: None,
                down: HashMap::new(),
            },
        );
        let members: Vec<(ParticipantId, ParticipantKey)> = room.members.iter().map(|(i, k)| (i.clone(), *k)).collect();
        let (mut subscribers, mut viewers) = (Vec::new(), Vec::new());
        for (pid, k) in members {
            emit(&mut self.out, k, ParticipantEvent::TrackPublished(info.clone()));
            let Some(p) = self.participants.get(&k) else {
                continue;
            };
            if pid == publisher_id {
                continue;
            }
            if p.auto_subscribes() {
                subscribers.push(k);
            } else if matches!(p.mode, Mode::View(_)) {
                viewers.push(k);
            }
        }
        for k in subscribers {
            self.queue_subscription(k, SubscriptionChange::Add(tid.clone()));
            self.renegotiate.push(k);
        }
        for k in viewers {
            self.fill_slots(k);
        }
    }

    /// A layer stopped arriving (paused by dynacast, dropped by the publisher's encoder, or the
    /// track went quiet) or came back: its subscribers are re-allocated among the flowing layers.
    fn layer_flow(&mut self, owner: ParticipantKey, mid: Mid, rid: Option<Rid>, live: bool) {
        let Some(part) = self.participants.get(&owner) else {
            return;
        };
        let Some(track) = part
            .published
            .get(&mid)
            .and_then(|tid| self.rooms.get_mut(&part.room)?.tracks.get_mut(tid))
        else {
            return;
        };
        if track.layers.set_live(LayerId(rid), live) {
            self.reallocate.extend(track.down.keys().copied());
        }
    }

    fn unpublish_mid(&mut self, owner: ParticipantKey, mid: Mid) {
        let Some(part) = self.participants.get_mut(&owner) else {
            return;
        };
        let Some(tid) = part.published.remove(&mid) else {
            return;
        };
        let room = part.room.clone();
        self.unpublish(&room, &tid);
    }

    fn unpublish(&mut self, room_id: &RoomId, tid: &TrackId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(track) = room.tracks.remove(tid) else {
            return;
        };
        if track.info.source == TrackSource::Microphone {
            room.speakers.remove(&track.info.participant);
            self.speaking.push(room_id.clone());
        }
        self.recording.track_ended(room_id, tid, &mut self.out);
        let members: Vec<ParticipantKey> = room.members.values().copied().collect();
        for k in &members {
            emit(
                &mut self.out,
                *k,
                ParticipantEvent::TrackUnpublished {
                    participant: track.info.participant.clone(),
                    track: tid.clone(),
                },
            );
        }
        let mut down = track.down;
        for k in members {
            let viewing = self.participants.get_mut(&k).and_then(|p| match &mut p.mode {
                Mode::View(v) => Some((v, &mut p.sub)),
                _ => None,
            });
            if let Some((viewer, sub)) = viewing {
                // The client's m-line stays; it takes the next track that needs one.
                if let Some(dt) = down.remove(&k) {
                    sub.mids.remove(&dt.mid);
                    if let Some(rw) = dt.rewriter {
                        viewer.parked.insert(dt.mid, rw);
                    }
                }
                self.fill_slots(k);
                continue;
            }
            match down.get(&k) {
                Some(dt) => self.queue_subscription(k, SubscriptionChange::Remove(dt.mid)),
                None => self.cancel_queued_add(k, tid),
            }
            self.renegotiate.push(k);
        }
    }

    fn queue_subscription(&mut self, key: ParticipantKey, change: SubscriptionChange) {
        let Some(part) = self.participants.get_mut(&key) else {
            return;
        };
        if let SubscriptionChange::Remove(mid) = &change {
            part.sub.mids.remove(mid);
        }
        part.sub.queued.push(change);
    }

    fn cancel_queued_add(&mut self, key: ParticipantKey, tid: &TrackId) {
        if let Some(part) = self.participants.get_mut(&key) {
            part.sub
                .queued
                .retain(|c| !matches!(c, SubscriptionChange::Add(t) if t == tid));
        }
    }

    /// Makes a subscriber offer from the queued changes unless one is already outstanding (one
    /// offer at a time: the next goes out when its answer arrives).
    fn offer_if_needed(&mut self, key: ParticipantKey) {
        let Some(part) = self.participants.get_mut(&key) else {
            return;
        };
        if part.sub.pending_offer.is_some() || part.sub.queued.is_empty() || !matches!(part.mode, Mode::Duplex) {
            return;
        }
        let Some(sk) = part.subscriber else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&sk) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&part.room) else {
            return;
        };
        let mut api = peer.rtc.sdp_api();
        for change in std::mem::take(&mut part.sub.queued) {
            match change {
                SubscriptionChange::OpenData => {
                    if part.sub.data_channel.is_none() {
                        part.sub.data_channel = Some(api.add_channel(DATA_CHANNEL_LABEL.into()));
                    }
                }
                SubscriptionChange::Add(tid) => {
                    let Some(track) = room.tracks.get_mut(&tid) else {
                        continue;
                    };
                    if track.down.contains_key(&key) {
                        continue;
                    }
                    let kind = match track.info.kind {
                        TrackKind::Audio => MediaKind::Audio,
                        TrackKind::Video => MediaKind::Video,
                    };
                    // msid: stream = publisher, track = track id, so clients group a
                    // participant's audio and video (RFC 8830).
                    let mid = api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(track.info.participant.to_string()),
                        Some(tid.to_string()),
                        None,
                    );
                    track.down.insert(key, DownTrack::new(mid, false, None));
                    part.sub.mids.insert(mid, tid);
                }
                // Inactive rather than stopped: a stopped (port 0) m-line leaves the BUNDLE group
                // (RFC 8843 §7.5.3), and once all are stopped the client's answer has no group at
                // all, which str0m refuses. Inactive m-lines stay; they are not reused yet.
                SubscriptionChange::Remove(mid) => api.set_direction(mid, Direction::Inactive),
            }
        }
        if let Some((offer, pending)) = api.apply() {
            part.sub.pending_offer = Some(pending);
            let mut tracks: Vec<SubscribedTrack> = part
                .sub
                .mids
                .iter()
                .filter_map(|(mid, tid)| {
                    room.tracks.get(tid).map(|t| SubscribedTrack {
                        mid: mid.to_string(),
                        track: tid.clone(),
                        participant: t.info.participant.clone(),
                    })
                })
                .collect();
            tracks.sort_by(|a, b| a.mid.cmp(&b.mid));
            emit(
                &mut self.out,
                key,
                ParticipantEvent::SubscriberOffer {
                    sdp: offer.to_sdp_string(),
                    tracks,
                },
            );
        }
        drain(sk, peer, &mut self.out, &mut self.pending, &mut self.timers);
    }

    /// Asks the publisher for a keyframe on one layer of a track: at most one request per layer
    /// per `KEYFRAME_REQUEST_INTERVAL`, whoever needs it (subscribers' PLIs, new subscribers,
    /// layer switches).
    fn request_keyframe(&mut self, room: &RoomId, tid: &TrackId, layer: LayerId, kind: KeyframeRequestKind) {
        let now = self.now;
        let Some(track) = self.rooms.get_mut(room).and_then(|r| r.tracks.get_mut(tid)) else {
            return;
        };
        if track.info.kind != TrackKind::Video {
            return;
        }
        let allowed = track
            .throttles
            .entry(layer)
            .or_insert_with(|| KeyframeThrottle::new(KEYFRAME_REQUEST_INTERVAL))
            .allow(now);
        if !allowed {
            return;
        }
        let (pk, mid) = (track.publisher_peer, track.mid);
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, layer.0) {
            rx.request_keyframe(kind);
            self.counters.keyframe_requests += 1;
        }
        drain(pk, peer, &mut self.out, &mut self.pending, &mut self.timers);
    }

    /// A subscriber's PLI/FIR goes to the layer it receives (or is about to).
    fn subscriber_keyframe_request(&mut self, owner: ParticipantKey, mid: Mid, kind: KeyframeRequestKind) {
        let Some(part) = self.participants.get(&owner) else {
            return;
        };
        let Some(tid) = part.sub.mids.get(&mid).cloned() else {
            return;
        };
        let room = part.room.clone();
        let layer = self
            .rooms
            .get(&room)
            .and_then(|r| r.tracks.get(&tid))
            .and_then(|t| t.down.get(&owner))
            .and_then(|d| d.selector.current().or(d.selector.target()));
        if let Some(layer) = layer {
            self.request_keyframe(&room, &tid, layer, kind);
        }
    }

    /// Chooses the layer of every track a subscriber receives from its settings, the layers'
    /// measured bitrates and its bandwidth estimate (`allocator`), then tells the estimator what
    /// to aim for and dynacast what the publishers must keep sending.
    fn allocate(&mut self, key: ParticipantKey) {
        let now = self.now;
        let Some(part) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&part.room) else {
            return;
        };
        let recorded = self.recording.active(&part.room).is_some();
        let budget = part
            .step_up
            .budget(now, part.estimate.map(|e| e / 100 * MEDIA_SHARE_PERCENT));
        let mut flowing = Vec::new();
        let mut wished = Vec::new();
        for (tid, track) in &room.tracks {
            if let Some(dt) = track.down.get(&key).filter(|d| d.negotiated) {
                flowing.push(demand(tid, track, dt, now, true));
                wished.push(demand(tid, track, dt, now, false));
            }
        }
        let chosen = allocator::allocate(budget, &flowing);
        let wished = allocator::allocate(budget, &wished);
        part.step_up.observe(now, &flowing, &chosen);
        // The next step counts layers paused by dynacast: they resume when wanted.
        let (used, next) = (chosen.used, wished.next.max(chosen.used));
        let probing = part.step_up.probe(now, next > used);
        let mut switches = Vec::new();
        for ((tid, layer), (_, wish)) in chosen.layers.into_iter().zip(wished.layers) {
            let Some(track) = room.tracks.get_mut(&tid) else {
                continue;
            };
            let Some(dt) = track.down.get_mut(&key) else {
                continue;
            };
            dt.demand = wish;
            if dt.selector.target() != layer {
                tracing::debug!(track = ?tid, ?layer, ?budget, "layer chosen");
                dt.selector.set_target(layer);
                if let Some(l) = dt.selector.waiting_for() {
                    switches.push((tid.clone(), l));
                }
            }
            update_dynacast(&tid, track, recorded, &self.peers, &mut self.out, now);
        }
        // Aim above what is wanted: the media share and a margin for the estimate to step up into.
        // The estimator keeps probing for a floor, so a subscriber with little to receive can
        // still get its video back quickly, and pads up to the next step (at most its estimate),
        // so the estimate can hold it. For a while after a failed step-up or probe (`StepUp`) it
        // aims at what is sent, so probing does not congest a link that just proved too small.
        let target = if probing {
            let desired = (wished.desired * 110 / MEDIA_SHARE_PERCENT).max(DESIRED_FLOOR_BPS);
            ((next * 100 / MEDIA_SHARE_PERCENT).min(desired), desired)
        } else {
            (used, used * 100 / MEDIA_SHARE_PERCENT)
        };
        if part.bwe_target != target
            && let Some(sk) = part.subscriber
            && let Some(peer) = self.peers.get_mut(&sk)
        {
            part.bwe_target = target;
            tracing::debug!(minimum = target.0, desired = target.1, "estimator target");
            peer.rtc
                .bwe()
                .set_bitrate(Bitrate::bps(target.0), Bitrate::bps(target.1));
            drain(sk, peer, &mut self.out, &mut self.pending, &mut self.timers);
        }
        let room = part.room.clone();
        for (tid, layer) in switches {
            self.request_keyframe(&room, &tid, layer, KeyframeRequestKind::Pli);
        }
    }

    /// Once a second: layer bitrates are remembered, every subscriber re-allocated (bitrates
    /// change) and dynacast's delayed pauses applied.
    fn sweep_layers(&mut self) {
        let now = self.now;
        for (room_id, room) in &mut self.rooms {
            let recorded = self.recording.active(room_id).is_some();
            for (tid, track) in &mut room.tracks {
                track.layers.refresh(now);
                update_dynacast(tid, track, recorded, &self.peers, &mut self.out, now);
            }
        }
        self.reallocate.extend(
            self.participants
                .iter()
                .filter(|(_, p)| p.subscriber.is_some())
                .map(|(k, _)| *k),
        );
    }

    /// Relays one data channel message to the rest of the room, framed as
    /// `[sender id length: u16 BE][sender id: UTF-8][payload]` so receivers know who sent it
    /// (the SFU vouches for the sender; clients cannot spoof it).
    fn relay_data(&mut self, from: ParticipantKey, payload: &[u8]) {
        let Some(sender) = self.participants.get(&from) else {
            return;
        };
        if !sender.info.grants.data || payload.len() > MAX_DATA_MESSAGE {
            self.counters.dropped_packets += 1;
            return;
        }
        let id = sender.id.as_str().as_bytes();
        let Ok(id_len) = u16::try_from(id.len()) else {
            return;
        };
        let mut frame = Vec::with_capacity(2 + id.len() + payload.len());
        frame.extend_from_slice(&id_len.to_be_bytes());
        frame.extend_from_slice(id);
        frame.extend_from_slice(payload);
        let Some(room) = self.rooms.get(&sender.room) else {
            return;
        };
        for key in room.members.values().filter(|k| **k != from) {
            let Some(p) = self.participants.get(key) else {
                continue;
            };
            let (Some(cid), true, Some(sk)) = (p.sub.data_channel, p.sub.data_open, p.subscriber) else {
                continue;
            };
            let Some(peer) = self.peers.get_mut(&sk) else {
                continue;
            };
            let accepted = peer.rtc.channel(cid).map(|mut ch| ch.write(true, &frame));
            if !matches!(accepted, Some(Ok(true))) {
                // SCTP buffer full or channel gone: data is best effort for a slow receiver.
                self.counters.dropped_packets += 1;
            }
            drain(sk, peer, &mut self.out, &mut self.pending, &mut self.timers);
        }
    }

    fn forward(&mut self, pk: PeerKey, owner: ParticipantKey, pkt: &RtpPacket) {
        // Which track and layer the packet belongs to, and what it holds.
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        let Some((mid, rid)) = peer
            .rtc
            .direct_api()
            .stream_rx(&pkt.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            self.counters.dropped_packets += 1;
            return;
        };
        let Some(params) = peer
            .rtc
            .codec_config()
            .find(|p| p.pt() == pkt.header.payload_type)
            .copied()
        else {
            self.counters.dropped_packets += 1;
            return;
        };
        let Some(part) = self.participants.get(&owner) else {
            return;
        };
        let Some(tid) = part.published.get(&mid).cloned() else {
            return;
        };
        let room_id = part.room.clone();
        let Some(track) = self.rooms.get_mut(&room_id).and_then(|r| r.tracks.get_mut(&tid)) else {
            return;
        };
        let layer = LayerId(rid);
        let info = keyframe::inspect(params.spec().codec, &pkt.payload);
        if track
            .layers
            .on_packet(layer, pkt.payload.len(), info.size, pkt.timestamp)
        {
            // A layer started flowing: its subscribers may want it.
            let subscribers: Vec<ParticipantKey> = track.down.keys().copied().collect();
            for k in subscribers {
                self.allocate(k);
            }
        }

        let Engine {
            rooms,
            participants,
            peers,
            out,
            pending,
            timers,
            counters,
            speaking,
            recording,
            now,
            ..
        } = self;
        let now = *now;
        let Some(room) = rooms.get_mut(&room_id) else {
            return;
        };
        let Some(track) = room.tracks.get_mut(&tid) else {
            return;
        };
        if track.info.muted {
            return;
        }
        let Some(publisher) = participants.get(&owner) else {
            return;
        };
        if let (TrackSource::Microphone, Some(level)) = (track.info.source, pkt.header.ext_vals.audio_level) {
            room.speakers.on_level(&publisher.id, level, pkt.timestamp);
            if room.speakers.has_news() {
                speaking.push(room_id.clone());
            }
        }
        let tapped = Tapped {
            room: &room_id,
            publisher_name: &publisher.info.name,
            track: &track.info,
            rid,
            params: &params,
            pkt,
        };
        let mut keyframes: Vec<LayerId> = Vec::new();
        if recording.packet(&tapped, out) {
            // The recorder waits for a keyframe of this layer.
            keyframes.push(layer);
        }
        let video = track.info.kind == TrackKind::Video;
        let simulcast = track.layers.simulcast();
        let ext = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };

        for (sub_key, dt) in track.down.iter_mut() {
            if !dt.negotiated {
                continue;
            }
            let switched = match dt.selector.on_packet(layer, info.keyframe_start, simulcast) {
                Verdict::Forward { switched } => switched,
                Verdict::Drop => {
                    // Waiting for a keyframe of the chosen layer: keep asking (throttled).
                    if let Some(l) = dt.selector.waiting_for().filter(|l| !keyframes.contains(l)) {
                        keyframes.push(l);
                    }
                    continue;
                }
            };
            let Some(sub) = participants.get(sub_key) else {
                continue;
            };
            let Some(sk) = sub.subscriber else {
                continue;
            };
            let Some(sub_peer) = peers.get_mut(&sk) else {
                continue;
            };
            if !sub_peer.rtc.is_connected() {
                continue;
            }
            let Some(out_pt) = dt.out_pt(&params, &sub_peer.rtc) else {
                counters.dropped_packets += 1;
                continue;
            };
            if switched && dt.started {
                counters.layer_switches += 1;
            }
            // Layers have their own SSRCs: the rewriter splices at the switch, so the subscriber
            // sees one stream with continuous sequence numbers and timestamps.
            let rewriter = dt.rewriter.get_or_insert_with(|| {
                let seed = sk.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                // RFC 3550 §5.1: random initial values; below 2^15 keeps the SRTP ROC at 0.
                SeqTsRewriter::new(params.spec().clock_rate.get(), (seed >> 49) as u16, (seed >> 13) as u32)
            });
            let Some((seq, ts)) = rewriter.rewrite(InPacket {
                ssrc: *pkt.header.ssrc,
                seq: *pkt.seq_no,
                ts: pkt.header.timestamp,
                now: pkt.timestamp,
            }) else {
                continue;
            };
            let mut api = sub_peer.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(dt.mid, None) else {
                continue;
            };
            if video && !dt.started {
                tx.set_rtx_cache(RTX_HISTORY_PACKETS, RTX_HISTORY, Some(RTX_RATIO_CAP));
            }
            // Video is stored in str0m's send buffer so subscriber NACKs are answered with RTX
            // (RFC 4588) without going back to the publisher.
            tx.write_rtp(
                RtpWrite::new(out_pt, seq.into(), ts, pkt.timestamp, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .nackable(video)
                    .ext_vals(ext.clone()),
            );
            // str0m's pacer releases a queued packet only in a timeout: running it now sends the
            // copy from this `handle_input` rather than from a wake-up after it.
            if let Err(e) = sub_peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %e, "rtc timeout failed");
            }
            drain(sk, sub_peer, out, pending, timers);
            dt.written += 1;
            counters.forwarded_packets += 1;
            counters.forwarded_bytes += pkt.payload.len() as u64;
            if !dt.started {
                dt.started = true;
                // A subscriber that starts mid-stream cannot decode until the next keyframe.
                if video && !info.keyframe_start && !keyframes.contains(&layer) {
                    keyframes.push(layer);
                }
            }
        }
        for l in keyframes {
            self.request_keyframe(&room_id, &tid, l, KeyframeRequestKind::Pli);
        }
    }
}

impl DownTrack {
    /// The subscriber's PT for the publisher's codec, if the subscriber negotiated it.
    fn out_pt(&mut self, params: &PayloadParams, sub: &Rtc) -> Option<Pt> {
        let pt = params.pt();
        if let Some((_, out)) = self.pt_map.iter().find(|(p, _)| *p == pt) {
            return *out;
        }
        let local = sub.codec_config().match_params(*params).map(|p| p.pt());
        let negotiated = sub.media(self.mid).map(|m| m.remote_pts());
        let out = match (local, negotiated) {
            (Some(p), Some(remote)) if remote.contains(&p) => Some(p),
            _ => None,
        };
        self.pt_map.push((pt, out));
        out
    }
}

/// What one down-track asks of the allocator. `only_flowing`: layers not arriving are left out
/// (what can be forwarded now); otherwise all count (what dynacast should keep on).
fn demand(tid: &TrackId, track: &Track, dt: &DownTrack, now: Instant, only_flowing: bool) -> Demand<TrackId> {
    let audio = track.info.kind == TrackKind::Audio;
    let settings = if audio { TrackSettings::default() } else { dt.settings };
    let wanted = track
        .layers
        .wanted(&settings)
        .and_then(|w| track.layers.position(w))
        .filter(|_| !track.info.muted);
    let mut layers = Vec::new();
    if let Some(wanted) = wanted {
        let mut costs = track.layers.costs(now, only_flowing);
        if costs.is_empty() {
            // Nothing flows (yet, or any more): stay on what is wanted, ready when it resumes.
            costs = track.layers.costs(now, false);
        }
        let position = |id: LayerId| track.layers.position(id).unwrap_or(usize::MAX);
        layers = costs
            .iter()
            .filter(|(id, _)| position(*id) <= wanted)
            .copied()
            .collect();
        // Only higher layers flowing: the lowest of them beats nothing until the wanted one resumes.
        if layers.is_empty() {
            layers.extend(costs.first().copied());
        }
    }
    let screen = matches!(track.info.source, TrackSource::Screen);
    let area = dt.settings.size.map_or(0, |(w, h)| u64::from(w) * u64::from(h));
    Demand {
        key: tid.clone(),
        audio,
        pausable: track.layers.simulcast(),
        priority: (u64::from(screen) << 40) | area.min((1 << 40) - 1),
        layers,
        current: dt.selector.target(),
    }
}

/// Dynacast: tells a simulcast publisher which layers its subscribers need (at least the lowest,
/// so a newcomer starts at once). More layers go out at once; fewer only after
/// `DYNACAST_PAUSE_DELAY`.
fn update_dynacast(
    tid: &TrackId,
    track: &mut Track,
    recorded: bool,
    peers: &HashMap<PeerKey, Peer>,
    out: &mut VecDeque<EngineOutput>,
    now: Instant,
) {
    if !track.layers.simulcast() {
        return;
    }
    // What subscribers would take if it flowed, and what they get now (so a layer standing in
    // for one the publisher cannot send is not paused under them).
    let needed: Vec<LayerId> = track
        .down
        .values()
        .flat_map(|d| [d.demand, d.selector.target()])
        .flatten()
        .collect();
    // A recording takes the highest layer (`record.rs`), so it stays on while the room is recorded.
    let top = track.layers.rids().count().saturating_sub(1);
    let rids: Vec<Rid> = track
        .layers
        .rids()
        .enumerate()
        .filter(|(i, r)| *i == 0 || (recorded && *i == top) || needed.contains(&LayerId(Some(*r))))
        .map(|(_, r)| r)
        .collect();
    let current = track.active.clone().unwrap_or_else(|| track.layers.rids().collect());
    if rids == current {
        track.shrink_since = None;
        return;
    }
    let grows = rids.iter().any(|r| !current.contains(r));
    let since = *track.shrink_since.get_or_insert(now);
    if !grows && now.saturating_duration_since(since) < DYNACAST_PAUSE_DELAY {
        return;
    }
    track.shrink_since = None;
    track.active = Some(rids.clone());
    if let Some(owner) = peers.get(&track.publisher_peer).map(|p| p.owner) {
        emit(
            out,
            owner,
            ParticipantEvent::LayersActive {
                mid: track.mid.to_string(),
                track: tid.clone(),
                active: rids.iter().map(ToString::to_string).collect(),
            },
        );
    }
}

/// RFC 3550 jitter in RTP timestamp units as milliseconds, at the clock rate str0m's codecs use
/// for the kind (Opus 48 kHz, video 90 kHz).
fn jitter_ms(units: u32, kind: TrackKind) -> f32 {
    let per_ms = match kind {
        TrackKind::Audio => 48.0,
        TrackKind::Video => 90.0,
    };
    #[allow(clippy::cast_precision_loss)] // jitter far below 2^24
    let units = units as f32;
    units / per_ms
}

fn emit(out: &mut VecDeque<EngineOutput>, to: ParticipantKey, event: ParticipantEvent) {
    out.push_back(EngineOutput::Event { to, event });
}

/// Drains one `Rtc` to its next timeout: transmits go out, events wait in `pending`.
fn drain(
    pk: PeerKey,
    peer: &mut Peer,
    out: &mut VecDeque<EngineOutput>,
    pending: &mut VecDeque<(PeerKey, Event)>,
    timers: &mut Timers<PeerKey>,
) {
    loop {
        match peer.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                peer.timeout = t;
                timers.set(pk, t);
                return;
            }
            Ok(Output::Transmit(t)) => out.push_back(EngineOutput::Transmit(t)),
            Ok(Output::Event(e)) => pending.push_back((pk, e)),
            Err(e) => {
                // A broken Rtc is parked rather than retried in a tight loop; signaling decides
                // whether the participant goes on.
                tracing::warn!(error = %e, "rtc poll failed");
                peer.timeout += PARKED;
                timers.set(pk, peer.timeout);
                emit(
                    out,
                    peer.owner,
                    ParticipantEvent::Error {
                        code: "media_failed",
                        message: e.to_string(),
                    },
                );
                return;
            }
        }
    }
}
