//! The `sfu` scenario: R rooms × P publishers × S subscribers, every participant a str0m peer on
//! its own 127.0.0.1 port, all driven by one current-thread runtime.
//!
//! Phases: everyone joins (publishers first, then subscribers); a subscriber is *ready* once it
//! has received a packet on every stream of its room. When all are ready (or `ready_timeout`
//! passes) and `warmup` has gone by, the target's CPU and memory are sampled and the measurement
//! window opens: packets sent in it are stamped `counted`. After `duration` the window closes,
//! the target is sampled again, and after a drain second the run stops. Delivered = distinct
//! counted packets received per subscriber; expected = counted packets sent on the streams of
//! the subscriber's room.
//!
//! Against a frame-forwarding target (str0m's `chat`) only a frame's first packet keeps its
//! stamp: delivered/expected, loss and delay are then counted in frames (every audio packet is a
//! frame), and forwarded packets are the RTP packets subscribers received in the window.
//!
//! The generator's own CPU (`/proc/self`) is sampled over the window too: a generator near 100 %
//! of its core measures itself, not the target, and the report says so (`generator_bound`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use str0m::Event;
use str0m::channel::ChannelData;
use str0m::media::{Direction, MediaKind, Mid};
use tokio::sync::watch;

use crate::media::{self, Stamp, VideoEncoder};
use crate::peer::Peer;
use crate::report::{Percentiles, ProcSample, print_table};
use crate::signal::{Signal, SignalIn, Target};

#[derive(Debug, Clone)]
pub struct SfuParams {
    pub target: Target,
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub audio: bool,
    pub video: bool,
    pub duration: Duration,
    pub warmup: Duration,
    pub ready_timeout: Duration,
    /// Participants joining per second.
    pub join_rate: f64,
    /// The target server's pid, for CPU and memory.
    pub server_pid: Option<u32>,
    /// The address the client peers bind to.
    pub client_ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Drain,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

/// What the participant tasks share (one thread: `Rc`/`RefCell`).
struct Shared {
    epoch: Instant,
    phase: watch::Receiver<Phase>,
    ready: watch::Sender<usize>,
    /// Counted packets and frames sent per stream.
    sent: RefCell<HashMap<u32, Sent>>,
    /// Count frames instead of packets (see the module docs).
    frames: bool,
    next_stream: RefCell<u32>,
}

impl Shared {
    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    fn now_us(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn stream_id(&self) -> u32 {
        let mut n = self.next_stream.borrow_mut();
        *n += 1;
        *n
    }

    fn became_ready(&self) {
        self.ready.send_modify(|n| *n += 1);
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    packets: u64,
    frames: u64,
}

/// One participant's results.
#[derive(Debug, Default)]
struct Outcome {
    room: usize,
    subscriber: bool,
    /// Streams it published: (id, video?).
    streams: Vec<(u32, bool)>,
    /// Distinct counted sequence numbers received per stream (frame heads only when counting
    /// frames).
    received: HashMap<u32, HashSet<u32>>,
    /// RTP packets a subscriber received in the measurement window, stamped or not.
    window_packets: u64,
    delays_ms: Vec<f64>,
    joined_ms: Option<f64>,
    media_ms: Option<f64>,
    ready: bool,
    send_drops: u64,
    error: Option<String>,
}

/// A publishing m-line and its stream.
struct Outgoing {
    mid: Mid,
    stream: u32,
    seq: u32,
    rtp_seq: u64,
    ts: u32,
    next: Instant,
}

struct Participant {
    shared: Rc<Shared>,
    role: Role,
    expected_streams: usize,
    publisher: Option<Peer>,
    subscriber: Peer,
    audio: Option<Outgoing>,
    video: Option<Outgoing>,
    encoder: VideoEncoder,
    /// The offer given to `join` (a publisher's; against str0m chat also a subscriber's) and
    /// the peer that made it.
    pending_offer: Option<str0m::change::SdpPendingOffer>,
    offer_sdp: Option<String>,
    /// When joining began (after any account set-up), for join latency.
    started: Instant,
    out: Outcome,
    seen: HashSet<u32>,
}

/// Results of one run of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SfuReport {
    pub target: String,
    pub rooms: usize,
    pub publishers_per_room: usize,
    pub subscribers_per_room: usize,
    pub duration_s: f64,
    pub ready: usize,
    pub participants: usize,
    /// What delivered/expected count: `packets`, or `frames` for a frame-forwarding target.
    pub unit: &'static str,
    pub expected_packets: u64,
    pub delivered_packets: u64,
    pub loss_percent: f64,
    pub video_expected: u64,
    pub video_delivered: u64,
    /// RTP packets subscribers received in the window (= delivered when counting packets).
    pub forwarded_packets: u64,
    pub forwarded_packets_per_s: f64,
    pub delay_ms: Percentiles,
    pub join_signaled_ms: Percentiles,
    pub join_media_ms: Percentiles,
    pub server_cpu_s: Option<f64>,
    /// Server CPU over the window in % of one core.
    pub server_cpu_percent: Option<f64>,
    pub server_cpu_us_per_packet: Option<f64>,
    /// The generator's own CPU over the window in % of one core (it runs one thread).
    pub generator_cpu_percent: f64,
    /// The generator was (nearly) saturated: the figures may measure it, not the target.
    pub generator_bound: bool,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_during: Option<u64>,
    pub rss_kib_per_subscriber: Option<f64>,
    pub rss_kib_per_subscribed_track: Option<f64>,
    pub client_send_drops: u64,
    pub errors: Vec<String>,
}

impl SfuReport {
    pub fn print(&self) {
        let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.2} {unit}"));
        print_table(
            &format!("sfu against {}", self.target),
            &[
                (
                    "load",
                    format!(
                        "{} rooms x {} publishers x {} subscribers, {:.0} s",
                        self.rooms, self.publishers_per_room, self.subscribers_per_room, self.duration_s
                    ),
                ),
                ("ready", format!("{}/{}", self.ready, self.participants)),
                (
                    "delivered/expected",
                    format!(
                        "{}/{} {} (loss {:.3} %; video {}/{})",
                        self.delivered_packets,
                        self.expected_packets,
                        self.unit,
                        self.loss_percent,
                        self.video_delivered,
                        self.video_expected
                    ),
                ),
                ("forwarded packets/s", format!("{:.0}", self.forwarded_packets_per_s)),
                (
                    "one-way delay ms",
                    format!(
                        "p50 {:.2}  p99 {:.2}  max {:.2}",
                        self.delay_ms.p50, self.delay_ms.p99, self.delay_ms.max
                    ),
                ),
                (
                    "join ms (signaled/media)",
                    format!(
                        "p50 {:.0}/{:.0}  p99 {:.0}/{:.0}",
                        self.join_signaled_ms.p50,
                        self.join_media_ms.p50,
                        self.join_signaled_ms.p99,
                        self.join_media_ms.p99
                    ),
                ),
                (
                    "server CPU",
                    format!(
                        "{} ({})",
                        opt(self.server_cpu_s, "s"),
                        opt(self.server_cpu_percent, "% of a core")
                    ),
                ),
                (
                    "generator CPU",
                    format!(
                        "{:.0} % of its core{}",
                        self.generator_cpu_percent,
                        if self.generator_bound {
                            " — GENERATOR-BOUND: figures measure the generator"
                        } else {
                            ""
                        }
                    ),
                ),
                ("server CPU per packet", opt(self.server_cpu_us_per_packet, "µs")),
                ("RSS per subscriber", opt(self.rss_kib_per_subscriber, "KiB")),
                (
                    "RSS per subscribed track",
                    opt(self.rss_kib_per_subscribed_track, "KiB"),
                ),
                ("client send drops", self.client_send_drops.to_string()),
                ("errors", self.errors.len().to_string()),
            ],
        );
        for e in self.errors.iter().take(5) {
            eprintln!("  error: {e}");
        }
    }
}

/// Runs the scenario; call it inside a `LocalSet` on a current-thread runtime.
pub async fn run(params: SfuParams) -> Result<SfuReport> {
    let rooms = params.target.prepare_rooms(params.rooms, params.publishers).await?;
    let base = params.server_pid.map(ProcSample::read).transpose()?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Warmup);
    let (ready_tx, mut ready_rx) = watch::channel(0usize);
    let shared = Rc::new(Shared {
        epoch: Instant::now(),
        phase: phase_rx,
        ready: ready_tx,
        sent: RefCell::new(HashMap::new()),
        frames: params.target.forwards_frames(),
        next_stream: RefCell::new(0),
    });
    let kinds = usize::from(params.audio) + usize::from(params.video);
    let mut tasks = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / params.join_rate.max(0.1));
    let deadline = tokio::time::Instant::now() + params.ready_timeout;
    // Publishers first, so subscribers' join latency includes getting every track.
    for role in [Role::Publisher, Role::Subscriber] {
        let per_room = match role {
            Role::Publisher => params.publishers,
            Role::Subscriber => params.subscribers,
        };
        for i in 0..per_room {
            for (r, room) in rooms.iter().enumerate() {
                let name = match role {
                    Role::Publisher => format!("p{r}x{i}"),
                    Role::Subscriber => format!("s{r}x{i}"),
                };
                let signal = params.target.signal(room, &name, role == Role::Publisher);
                let expected_streams = if role == Role::Subscriber {
                    params.publishers * kinds
                } else {
                    0
                };
                let p = Participant::new(shared.clone(), role, r, expected_streams, &params)?;
                tasks.push(tokio::task::spawn_local(p.run(signal)));
                tokio::time::sleep(gap).await;
            }
        }
        if role == Role::Publisher {
            let want = params.publishers * rooms.len();
            let _ = tokio::time::timeout_at(deadline, ready_rx.wait_for(|n| *n >= want)).await;
        }
    }
    let total = tasks.len();
    let _ = tokio::time::timeout_at(deadline, ready_rx.wait_for(|n| *n >= total)).await;
    tokio::time::sleep(params.warmup).await;

    let ready = *ready_rx.borrow();
    let before = params.server_pid.map(ProcSample::read).transpose()?;
    let generator_before = ProcSample::read(std::process::id())?;
    phase_tx.send_replace(Phase::Measure);
    let window = Instant::now();
    tokio::time::sleep(params.duration).await;
    phase_tx.send_replace(Phase::Drain);
    let measured = window.elapsed();
    let after = params.server_pid.map(ProcSample::read).transpose()?;
    let generator_cpu = generator_before.cpu_seconds_until(&ProcSample::read(std::process::id())?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase_tx.send_replace(Phase::Stop);

    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.context("participant task")?);
    }
    Ok(summarize(
        &params,
        &shared,
        outcomes,
        ready,
        measured,
        [base, before, after],
        generator_cpu,
    ))
}

/// Generator CPU (% of its one core) from which its figures are suspect.
pub const GENERATOR_BOUND_PERCENT: f64 = 90.0;

/// `samples`: the target before anyone joined, at the window's start and at its end.
fn summarize(
    params: &SfuParams,
    shared: &Shared,
    outcomes: Vec<Outcome>,
    ready: usize,
    measured: Duration,
    [base, before, after]: [Option<ProcSample>; 3],
    generator_cpu_s: f64,
) -> SfuReport {
    let sent = shared.sent.borrow();
    let mut room_streams: HashMap<usize, Vec<(u32, bool)>> = HashMap::new();
    for o in outcomes.iter().filter(|o| !o.subscriber) {
        room_streams.entry(o.room).or_default().extend(&o.streams);
    }
    let (mut expected, mut delivered, mut video_expected, mut video_delivered) = (0u64, 0u64, 0u64, 0u64);
    let mut delays = Vec::new();
    let (mut joined, mut media) = (Vec::new(), Vec::new());
    let mut errors = Vec::new();
    let mut send_drops = 0;
    let mut subscribers = 0usize;
    let mut window_packets = 0u64;
    for o in &outcomes {
        send_drops += o.send_drops;
        joined.extend(o.joined_ms);
        media.extend(o.media_ms);
        errors.extend(o.error.clone());
        if !o.subscriber {
            continue;
        }
        subscribers += 1;
        window_packets += o.window_packets;
        for (stream, video) in room_streams.get(&o.room).into_iter().flatten() {
            let s = sent.get(stream).copied().unwrap_or_default();
            let e = if shared.frames { s.frames } else { s.packets };
            let d = o.received.get(stream).map_or(0, |s| s.len() as u64);
            expected += e;
            delivered += d;
            if *video {
                video_expected += e;
                video_delivered += d;
            }
        }
        delays.extend_from_slice(&o.delays_ms);
    }
    let cpu = before.zip(after).map(|(b, a)| b.cpu_seconds_until(&a));
    let secs = measured.as_secs_f64();
    let forwarded = if shared.frames { window_packets } else { delivered };
    let generator_cpu_percent = 100.0 * generator_cpu_s / secs;
    let tracks = params.publishers * (usize::from(params.audio) + usize::from(params.video));
    let rss_delta = base.zip(after).map(|(b, a)| a.rss_kib.saturating_sub(b.rss_kib) as f64);
    SfuReport {
        target: params.target.name().to_owned(),
        rooms: params.rooms,
        publishers_per_room: params.publishers,
        subscribers_per_room: params.subscribers,
        duration_s: measured.as_secs_f64(),
        ready,
        participants: outcomes.len(),
        unit: if shared.frames { "frames" } else { "packets" },
        expected_packets: expected,
        delivered_packets: delivered,
        loss_percent: if expected == 0 {
            0.0
        } else {
            100.0 * expected.saturating_sub(delivered) as f64 / expected as f64
        },
        video_expected,
        video_delivered,
        forwarded_packets: forwarded,
        forwarded_packets_per_s: forwarded as f64 / secs,
        delay_ms: Percentiles::of(&mut delays),
        join_signaled_ms: Percentiles::of(&mut joined),
        join_media_ms: Percentiles::of(&mut media),
        server_cpu_s: cpu,
        server_cpu_percent: cpu.map(|c| 100.0 * c / secs),
        server_cpu_us_per_packet: cpu.filter(|_| forwarded > 0).map(|c| c * 1e6 / forwarded as f64),
        generator_cpu_percent,
        generator_bound: generator_cpu_percent >= GENERATOR_BOUND_PERCENT,
        server_rss_kib_before: base.map(|b| b.rss_kib),
        server_rss_kib_during: after.map(|a| a.rss_kib),
        rss_kib_per_subscriber: rss_delta.filter(|_| subscribers > 0).map(|d| d / subscribers as f64),
        rss_kib_per_subscribed_track: rss_delta
            .filter(|_| subscribers * tracks > 0)
            .map(|d| d / (subscribers * tracks) as f64),
        client_send_drops: send_drops,
        errors,
    }
}

impl Participant {
    fn new(
        shared: Rc<Shared>,
        role: Role,
        room: usize,
        expected_streams: usize,
        params: &SfuParams,
    ) -> Result<Participant> {
        let now = Instant::now();
        let ip = params.client_ip;
        let publisher = (role == Role::Publisher).then(|| Peer::bind(ip, now)).transpose()?;
        let mut p = Participant {
            shared,
            role,
            expected_streams,
            publisher,
            subscriber: Peer::bind(ip, now)?,
            audio: None,
            video: None,
            encoder: VideoEncoder::default(),
            pending_offer: None,
            offer_sdp: None,
            started: now,
            out: Outcome {
                room,
                subscriber: role == Role::Subscriber,
                ..Outcome::default()
            },
            seen: HashSet::new(),
        };
        if let Some(peer) = p.publisher.as_mut() {
            let mut api = peer.rtc.sdp_api();
            let mut add = |kind| Outgoing {
                mid: api.add_media(kind, Direction::SendOnly, None, None, None),
                stream: 0,
                seq: 0,
                rtp_seq: 1,
                ts: 0,
                next: now,
            };
            p.audio = params.audio.then(|| add(MediaKind::Audio));
            p.video = params.video.then(|| add(MediaKind::Video));
            let (offer, pending) = api.apply().context("publisher offer")?;
            p.pending_offer = Some(pending);
            let mut events = Vec::new();
            peer.drain(&mut events);
            p.offer_sdp = Some(offer.to_sdp_string());
        } else if params.target.subscriber_offers() {
            let mut api = p.subscriber.rtc.sdp_api();
            api.add_channel("load".to_owned());
            let (offer, pending) = api.apply().context("subscriber offer")?;
            p.pending_offer = Some(pending);
            p.offer_sdp = Some(offer.to_sdp_string());
        }
        Ok(p)
    }

    async fn run(mut self, mut signal: Signal) -> Outcome {
        if let Err(e) = self.drive(&mut signal).await {
            self.out.error = Some(format!("{e:#}"));
        }
        signal.leave().await;
        self.out.send_drops = self.publisher.as_ref().map_or(0, |p| p.send_drops) + self.subscriber.send_drops;
        self.out
    }

    async fn drive(&mut self, signal: &mut Signal) -> Result<()> {
        let mut phase = self.shared.phase.clone();
        let mut events = Vec::new();
        self.started = signal.join(self.offer_sdp.take()).await?;
        loop {
            if self.shared.phase() == Phase::Stop {
                return Ok(());
            }
            let deadline = self.deadline();
            tokio::select! {
                _ = phase.changed() => {}
                msg = signal.next() => self.on_signal(msg?, signal, &mut events).await?,
                r = recv(self.publisher.as_mut()) => {
                    let datagram = r?;
                    if let Some(p) = self.publisher.as_mut() {
                        p.handle_datagrams(datagram, &mut events);
                    }
                    self.on_events(true, &mut events);
                }
                r = self.subscriber.recv() => {
                    self.subscriber.handle_datagrams(r?, &mut events);
                    self.on_events(false, &mut events);
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if let Some(p) = self.publisher.as_mut() {
                p.handle_timeout(now, &mut events);
                self.on_events(true, &mut events);
            }
            self.subscriber.handle_timeout(now, &mut events);
            self.on_events(false, &mut events);
            self.send_media(now, &mut events);
        }
    }

    fn deadline(&self) -> Instant {
        let mut d = self.subscriber.timeout;
        if let Some(p) = &self.publisher {
            d = d.min(p.timeout);
        }
        for o in [&self.audio, &self.video].into_iter().flatten() {
            if o.stream != 0 {
                d = d.min(o.next);
            }
        }
        d
    }

    async fn on_signal(&mut self, msg: SignalIn, signal: &mut Signal, events: &mut Vec<Event>) -> Result<()> {
        match msg {
            SignalIn::Joined => {
                self.out.joined_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
                signal.joined().await?;
            }
            SignalIn::PublisherAnswer(sdp) => {
                let Some(pending) = self.pending_offer.take() else {
                    anyhow::bail!("an answer to no offer");
                };
                let publisher = self.publisher.is_some();
                let peer = self.publisher.as_mut().unwrap_or(&mut self.subscriber);
                let answer = str0m::change::SdpAnswer::from_sdp_string(&sdp)?;
                peer.rtc.sdp_api().accept_answer(pending, answer)?;
                peer.drain(events);
                self.on_events(publisher, events);
            }
            SignalIn::SubscriberOffer(sdp) => {
                let offer = str0m::change::SdpOffer::from_sdp_string(&sdp)?;
                let answer = self.subscriber.rtc.sdp_api().accept_offer(offer)?;
                self.subscriber.drain(events);
                signal.answer(answer.to_sdp_string()).await?;
                self.on_events(false, events);
            }
        }
        Ok(())
    }

    fn on_events(&mut self, publisher: bool, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            match e {
                Event::Connected if publisher => {
                    let now = Instant::now();
                    for (o, video) in [(&mut self.audio, false), (&mut self.video, true)] {
                        if let Some(o) = o.as_mut().filter(|o| o.stream == 0) {
                            o.stream = self.shared.stream_id();
                            o.next = now;
                            self.out.streams.push((o.stream, video));
                        }
                    }
                    self.out.media_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
                    self.mark_ready();
                }
                Event::Connected if self.role == Role::Subscriber => {
                    self.out.media_ms = Some(self.started.elapsed().as_secs_f64() * 1e3);
                }
                Event::KeyframeRequest(_) => self.encoder.request_keyframe(),
                Event::ChannelData(data) if !publisher => self.on_channel_data(&data),
                Event::RtpPacket(p) => {
                    if self.role == Role::Subscriber && self.shared.phase() == Phase::Measure {
                        self.out.window_packets += 1;
                    }
                    if self.shared.frames && !Stamp::frame_head(&p.payload) {
                        continue;
                    }
                    let Some(stamp) = Stamp::parse(&p.payload) else {
                        continue;
                    };
                    if self.seen.insert(stamp.stream) && self.seen.len() == self.expected_streams {
                        self.mark_ready();
                    }
                    if stamp.counted && self.out.received.entry(stamp.stream).or_default().insert(stamp.seq) {
                        let now = self.shared.now_us(p.timestamp);
                        self.out.delays_ms.push(now.saturating_sub(stamp.sent_us) as f64 / 1e3);
                    }
                }
                _ => {}
            }
        }
    }

    /// str0m chat adds tracks by sending an offer on the data channel; the answer goes back on
    /// it. Anything else on the channel is not for us.
    fn on_channel_data(&mut self, data: &ChannelData) {
        let Ok(offer) = serde_json::from_slice::<str0m::change::SdpOffer>(&data.data) else {
            return;
        };
        let answer = match self.subscriber.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => answer,
            Err(e) => {
                self.out.error.get_or_insert_with(|| format!("renegotiation: {e}"));
                return;
            }
        };
        let written = match (serde_json::to_vec(&answer), self.subscriber.rtc.channel(data.id)) {
            (Ok(json), Some(mut channel)) => channel.write(false, &json).is_ok(),
            _ => false,
        };
        if !written {
            self.out
                .error
                .get_or_insert_with(|| "renegotiation: answer not sent".to_owned());
        }
        // Transmit the answer at the end of this loop turn.
        self.subscriber.timeout = Instant::now();
    }

    fn mark_ready(&mut self) {
        if !self.out.ready {
            self.out.ready = true;
            self.shared.became_ready();
        }
    }

    /// Sends the audio and video packets that are due.
    fn send_media(&mut self, now: Instant, events: &mut Vec<Event>) {
        let Some(peer) = self.publisher.as_mut() else {
            return;
        };
        let shared = &self.shared;
        let counted = shared.phase() == Phase::Measure;
        let sent_us = shared.now_us(now);
        let mut sent = shared.sent.borrow_mut();
        let mut stamp = |o: &mut Outgoing, head: bool| {
            let s = Stamp {
                stream: o.stream,
                seq: o.seq,
                sent_us,
                counted,
            };
            if counted {
                let s = sent.entry(o.stream).or_default();
                s.packets += 1;
                s.frames += u64::from(head);
            }
            o.seq += 1;
            o.rtp_seq += 1;
            s
        };
        if let Some(a) = self.audio.as_mut().filter(|a| a.stream != 0) {
            while a.next <= now {
                let (mid, rtp_seq, ts) = (a.mid, a.rtp_seq, a.ts);
                let payload = stamp(a, true).payload(true, false, media::AUDIO_PAYLOAD);
                peer.write_rtp(mid, rtp_seq, ts, true, payload, now);
                a.ts = a.ts.wrapping_add(media::AUDIO_TICKS);
                a.next += media::AUDIO_INTERVAL;
            }
        }
        if let Some(v) = self.video.as_mut().filter(|v| v.stream != 0) {
            while v.next <= now {
                let (key, sizes) = self.encoder.next_frame();
                let last = sizes.len() - 1;
                for (i, size) in sizes.into_iter().enumerate() {
                    let (mid, rtp_seq, ts) = (v.mid, v.rtp_seq, v.ts);
                    let payload = stamp(v, i == 0).payload(i == 0, key, size);
                    peer.write_rtp(mid, rtp_seq, ts, i == last, payload, now);
                }
                v.ts = v.ts.wrapping_add(media::VIDEO_TICKS);
                v.next += media::VIDEO_INTERVAL;
            }
        }
        drop(sent);
        peer.drain(events);
        self.on_events(true, events);
    }
}

/// Waits for a datagram on `peer`, forever if there is none.
async fn recv(peer: Option<&mut Peer>) -> std::io::Result<(usize, std::net::SocketAddr)> {
    match peer {
        Some(p) => p.recv().await,
        None => std::future::pending().await,
    }
}
