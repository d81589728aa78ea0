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

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use str0m::Event;
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
    /// Counted packets sent per stream.
    sent: RefCell<HashMap<u32, u64>>,
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

/// One participant's results.
#[derive(Debug, Default)]
struct Outcome {
    room: usize,
    subscriber: bool,
    /// Streams it published: (id, video?).
    streams: Vec<(u32, bool)>,
    /// Distinct counted sequence numbers received per stream.
    received: HashMap<u32, HashSet<u32>>,
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
    pending_offer: Option<str0m::change::SdpPendingOffer>,
    publisher_sdp: Option<String>,
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
    pub expected_packets: u64,
    pub delivered_packets: u64,
    pub loss_percent: f64,
    pub video_expected: u64,
    pub video_delivered: u64,
    pub forwarded_packets_per_s: f64,
    pub delay_ms: Percentiles,
    pub join_signaled_ms: Percentiles,
    pub join_media_ms: Percentiles,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_packet: Option<f64>,
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
                        "{}/{} (loss {:.3} %; video {}/{})",
                        self.delivered_packets,
                        self.expected_packets,
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
                ("server CPU", opt(self.server_cpu_s, "s")),
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
    phase_tx.send_replace(Phase::Measure);
    let window = Instant::now();
    tokio::time::sleep(params.duration).await;
    phase_tx.send_replace(Phase::Drain);
    let measured = window.elapsed();
    let after = params.server_pid.map(ProcSample::read).transpose()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase_tx.send_replace(Phase::Stop);

    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.context("participant task")?);
    }
    Ok(summarize(
        &params, &shared, outcomes, ready, measured, base, before, after,
    ))
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    params: &SfuParams,
    shared: &Shared,
    outcomes: Vec<Outcome>,
    ready: usize,
    measured: Duration,
    base: Option<ProcSample>,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
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
    for o in &outcomes {
        send_drops += o.send_drops;
        joined.extend(o.joined_ms);
        media.extend(o.media_ms);
        errors.extend(o.error.clone());
        if !o.subscriber {
            continue;
        }
        subscribers += 1;
        for (stream, video) in room_streams.get(&o.room).into_iter().flatten() {
            let e = sent.get(stream).copied().unwrap_or(0);
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
        expected_packets: expected,
        delivered_packets: delivered,
        loss_percent: if expected == 0 {
            0.0
        } else {
            100.0 * expected.saturating_sub(delivered) as f64 / expected as f64
        },
        video_expected,
        video_delivered,
        forwarded_packets_per_s: delivered as f64 / measured.as_secs_f64(),
        delay_ms: Percentiles::of(&mut delays),
        join_signaled_ms: Percentiles::of(&mut joined),
        join_media_ms: Percentiles::of(&mut media),
        server_cpu_s: cpu,
        server_cpu_us_per_packet: cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
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
            publisher_sdp: None,
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
            p.publisher_sdp = Some(offer.to_sdp_string());
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
        self.started = signal.join(self.publisher_sdp.take()).await?;
        loop {
            if self.shared.phase() == Phase::Stop {
                return Ok(());
            }
            let deadline = self.deadline();
            tokio::select! {
                _ = phase.changed() => {}
                msg = signal.next() => self.on_signal(msg?, signal, &mut events).await?,
                r = recv(self.publisher.as_mut()) => {
                    let (len, from) = r?;
                    if let Some(p) = self.publisher.as_mut() {
                        p.handle_datagram(len, from, Instant::now(), &mut events);
                    }
                    self.on_events(true, &mut events);
                }
                r = self.subscriber.recv() => {
                    let (len, from) = r?;
                    self.subscriber.handle_datagram(len, from, Instant::now(), &mut events);
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
                let (Some(peer), Some(pending)) = (self.publisher.as_mut(), self.pending_offer.take()) else {
                    anyhow::bail!("an answer to no offer");
                };
                let answer = str0m::change::SdpAnswer::from_sdp_string(&sdp)?;
                peer.rtc.sdp_api().accept_answer(pending, answer)?;
                peer.drain(events);
                self.on_events(true, events);
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
                Event::RtpPacket(p) => {
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
        let mut stamp = |o: &mut Outgoing| {
            let s = Stamp {
                stream: o.stream,
                seq: o.seq,
                sent_us,
                counted,
            };
            if counted {
                *sent.entry(o.stream).or_default() += 1;
            }
            o.seq += 1;
            o.rtp_seq += 1;
            s
        };
        if let Some(a) = self.audio.as_mut().filter(|a| a.stream != 0) {
            while a.next <= now {
                let (mid, rtp_seq, ts) = (a.mid, a.rtp_seq, a.ts);
                let payload = stamp(a).payload(false, media::AUDIO_PAYLOAD);
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
                    let payload = stamp(v).payload(key && i == 0, size);
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
