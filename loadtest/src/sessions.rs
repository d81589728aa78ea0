//! Convene's session-heavy scenarios: `join-storm`, `signaling` (idle sessions), `chat`
//! (fan-out) and `rest` (authenticated GETs).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::convene::{self, Api, User};
use crate::peer::Peer;
use crate::report::{Percentiles, ProcSample, print_table};
use crate::signal::{Signal, SignalIn, Target};

/// How many REST set-up calls run at once (registrations hash passwords on the server).
const SETUP_CONCURRENCY: usize = 8;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn users(api: &Api, prefix: &str, count: usize) -> Result<Vec<User>> {
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move { api.register(&format!("{prefix}u{i}")).await }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("lt{}", ms % 100_000_000)
}

// ---------------------------------------------------------------------------------------------
// join-storm

#[derive(Debug, Clone, Serialize)]
pub struct JoinStep {
    pub rate_per_s: f64,
    pub attempted: usize,
    pub succeeded: usize,
    pub signaled_ms: Percentiles,
    pub media_ms: Percentiles,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JoinStormReport {
    /// The highest rate at which every join connected media within the limit.
    pub max_clean_rate_per_s: f64,
    pub steps: Vec<JoinStep>,
}

/// Joins at `start` per second, `step` more every `step_time`, until a step has a failed join
/// (an error, or media not connected within `limit`) or `max_rate` is passed. A join is the
/// whole path: join token, `/ws/signal` join, answering the subscriber offer, ICE + DTLS with a
/// str0m peer. Each participant leaves once connected.
pub async fn join_storm(
    target: &Target,
    start: f64,
    step: f64,
    step_time: Duration,
    max_rate: f64,
    limit: Duration,
) -> Result<JoinStormReport> {
    let rooms = target.prepare_rooms(1, 0).await?;
    let room = &rooms[0];
    let mut steps = Vec::new();
    let mut rate = start;
    let mut n = 0usize;
    while rate <= max_rate {
        let count = (rate * step_time.as_secs_f64()).ceil() as usize;
        let gap = Duration::from_secs_f64(1.0 / rate);
        let mut joins = Vec::new();
        for _ in 0..count {
            n += 1;
            let signal = target.signal(room, &format!("j{n}"), false);
            joins.push(tokio::task::spawn_local(join_once(signal, limit)));
            tokio::time::sleep(gap).await;
        }
        let (mut signaled, mut media, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for j in joins {
            match j.await.context("join task")? {
                Ok((s, m)) => {
                    signaled.push(s);
                    media.push(m);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let failed = !errors.is_empty();
        steps.push(JoinStep {
            rate_per_s: rate,
            attempted: count,
            succeeded: media.len(),
            signaled_ms: Percentiles::of(&mut signaled),
            media_ms: Percentiles::of(&mut media),
            errors,
        });
        if failed {
            break;
        }
        rate += step;
    }
    let max_clean_rate_per_s = steps
        .iter()
        .filter(|s| s.errors.is_empty())
        .map(|s| s.rate_per_s)
        .fold(0.0, f64::max);
    Ok(JoinStormReport {
        max_clean_rate_per_s,
        steps,
    })
}

/// One join to connected media; returns (ms to `joined`, ms to media connected).
async fn join_once(mut signal: Signal, limit: Duration) -> Result<(f64, f64)> {
    let result = tokio::time::timeout(limit, async {
        let mut peer = Peer::bind(std::net::Ipv4Addr::LOCALHOST.into(), Instant::now())?;
        let started = signal.join(None).await?;
        let mut signaled = None;
        let mut events = Vec::new();
        loop {
            let deadline = peer.timeout;
            tokio::select! {
                msg = signal.next() => match msg? {
                    SignalIn::Joined => {
                        signaled = Some(ms(started.elapsed()));
                        signal.joined().await?;
                    }
                    SignalIn::SubscriberOffer(sdp) => {
                        let offer = str0m::change::SdpOffer::from_sdp_string(&sdp)?;
                        let answer = peer.rtc.sdp_api().accept_offer(offer)?;
                        peer.drain(&mut events);
                        signal.answer(answer.to_sdp_string()).await?;
                    }
                    SignalIn::PublisherAnswer(_) => bail!("an answer to no offer"),
                },
                r = peer.recv() => {
                    let (len, from) = r?;
                    peer.handle_datagram(len, from, Instant::now(), &mut events);
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            peer.handle_timeout(Instant::now(), &mut events);
            if events.iter().any(|e| matches!(e, str0m::Event::Connected)) {
                return Ok((signaled.unwrap_or(f64::NAN), ms(started.elapsed())));
            }
            events.clear();
        }
    })
    .await;
    signal.leave().await;
    match result {
        Ok(r) => r,
        Err(_) => bail!("not connected within {limit:?}"),
    }
}

impl JoinStormReport {
    pub fn print(&self) {
        let rows: Vec<(String, String)> = self
            .steps
            .iter()
            .map(|s| {
                (
                    format!("{:.0}/s", s.rate_per_s),
                    format!(
                        "{}/{} joined; signaled p50 {:.0} p99 {:.0} ms; media p50 {:.0} p99 {:.0} ms{}",
                        s.succeeded,
                        s.attempted,
                        s.signaled_ms.p50,
                        s.signaled_ms.p99,
                        s.media_ms.p50,
                        s.media_ms.p99,
                        s.errors
                            .first()
                            .map(|e| format!("; first error: {e}"))
                            .unwrap_or_default()
                    ),
                )
            })
            .collect();
        let mut table: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        table.push(("max clean rate", format!("{:.0} joins/s", self.max_clean_rate_per_s)));
        print_table("join-storm", &table);
    }
}

// ---------------------------------------------------------------------------------------------
// signaling

#[derive(Debug, Clone, Serialize)]
pub struct SignalingReport {
    pub sessions: usize,
    pub joined: usize,
    pub rooms: usize,
    pub join_ms: Percentiles,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    pub rss_kib_per_session: Option<f64>,
    pub errors: Vec<String>,
}

/// Opens `sessions` `/ws/signal` sessions (joined, `per_room` to a room, media never
/// connected) and holds them for `hold`; the target's RSS before and after gives the cost of one.
pub async fn signaling(
    api: &Api,
    jwt_secret: Option<&str>,
    sessions: usize,
    per_room: usize,
    hold: Duration,
    server_pid: Option<u32>,
) -> Result<SignalingReport> {
    let target = Target::Convene {
        api: api.clone(),
        jwt_secret: jwt_secret.map(str::to_owned),
    };
    let room_count = sessions.div_ceil(per_room.max(1));
    let rooms = target.prepare_rooms(room_count, 0).await?;
    let before = server_pid.map(ProcSample::read).transpose()?;
    let opened = stream::iter(0..sessions)
        .map(|i| {
            let mut signal = target.signal(&rooms[i % room_count], &format!("i{i}"), false);
            async move {
                let started = signal.join(None).await?;
                loop {
                    if let SignalIn::Joined = signal.next().await? {
                        return Ok::<_, anyhow::Error>((signal, ms(started.elapsed())));
                    }
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let (mut held, mut join_ms, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for o in opened {
        match o {
            Ok((s, t)) => {
                held.push(s);
                join_ms.push(t);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    tokio::time::sleep(hold).await;
    let after = server_pid.map(ProcSample::read).transpose()?;
    let joined = held.len();
    for mut s in held {
        s.leave().await;
    }
    Ok(SignalingReport {
        sessions,
        joined,
        rooms: room_count,
        join_ms: Percentiles::of(&mut join_ms),
        server_rss_kib_before: before.map(|b| b.rss_kib),
        server_rss_kib_after: after.map(|a| a.rss_kib),
        rss_kib_per_session: before
            .zip(after)
            .filter(|_| joined > 0)
            .map(|(b, a)| a.rss_kib.saturating_sub(b.rss_kib) as f64 / joined as f64),
        errors,
    })
}

impl SignalingReport {
    pub fn print(&self) {
        print_table(
            "signaling (idle sessions)",
            &[
                (
                    "sessions",
                    format!("{}/{} joined in {} rooms", self.joined, self.sessions, self.rooms),
                ),
                (
                    "join ms",
                    format!("p50 {:.1} p99 {:.1}", self.join_ms.p50, self.join_ms.p99),
                ),
                (
                    "server RSS",
                    format!(
                        "{:?} -> {:?} KiB",
                        self.server_rss_kib_before, self.server_rss_kib_after
                    ),
                ),
                (
                    "RSS per session",
                    self.rss_kib_per_session.map_or("-".into(), |v| format!("{v:.1} KiB")),
                ),
                ("errors", self.errors.len().to_string()),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// chat

#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub sockets: usize,
    pub users: usize,
    pub messages: usize,
    pub expected: usize,
    pub delivered: usize,
    pub fanout_ms: Percentiles,
}

/// `sockets` `/ws/chat/{channel}` sockets spread over `users` team members; `messages` messages
/// posted one at a time (the next once every socket has the last, or after 5 s); fan-out latency
/// is from sending the POST to a socket's receipt.
pub async fn chat(api: &Api, sockets: usize, users_n: usize, messages: usize) -> Result<ChatReport> {
    let p = prefix();
    let members = users(api, &p, users_n.max(1)).await?;
    let owner = &members[0];
    let team = api.create_team(owner, "chat load").await?;
    for m in &members[1..] {
        api.add_member(owner, &team, m).await?;
    }
    let channel = api
        .post(
            "/api/v1/chat/channels",
            Some(&owner.access),
            json!({ "kind": "public", "team_id": team, "name": format!("{p}-load") }),
            "create channel",
        )
        .await?["id"]
        .as_str()
        .context("channel id")?
        .to_owned();
    let ws_base = api.ws_base();
    let mut socks = stream::iter(0..sockets)
        .map(|i| {
            let url = format!(
                "{ws_base}/ws/chat/{channel}?access_token={}",
                members[i % members.len()].access
            );
            async move { convene::connect(&url).await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    // Each socket reports (message index, receipt time) to one collector.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut readers = Vec::new();
    for mut ws in socks.drain(..) {
        let tx = tx.clone();
        readers.push(tokio::task::spawn_local(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(t) = frame
                    && let Some(k) = t.split("lt-msg-").nth(1).and_then(|r| r.split('"').next())
                    && let Ok(k) = k.parse::<usize>()
                    && tx.send((k, Instant::now())).is_err()
                {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut latencies = Vec::new();
    let mut delivered = 0;
    let poster = Rc::new(owner.clone());
    for k in 0..messages {
        let sent = Instant::now();
        api.post(
            &format!("/api/v1/chat/channels/{channel}/messages"),
            Some(&poster.access),
            json!({ "body": format!("lt-msg-{k}") }),
            "post message",
        )
        .await?;
        let mut got: HashMap<usize, usize> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.get(&k).copied().unwrap_or(0) < sockets {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((m, at))) => {
                    *got.entry(m).or_default() += 1;
                    if m == k {
                        latencies.push(ms(at.duration_since(sent)));
                    }
                }
                _ => break,
            }
        }
        delivered += got.get(&k).copied().unwrap_or(0);
    }
    for r in readers {
        r.abort();
    }
    Ok(ChatReport {
        sockets,
        users: members.len(),
        messages,
        expected: sockets * messages,
        delivered,
        fanout_ms: Percentiles::of(&mut latencies),
    })
}

impl ChatReport {
    pub fn print(&self) {
        print_table(
            "chat fan-out",
            &[
                ("sockets", format!("{} ({} users)", self.sockets, self.users)),
                ("delivered/expected", format!("{}/{}", self.delivered, self.expected)),
                (
                    "fan-out ms",
                    format!(
                        "p50 {:.1} p99 {:.1} max {:.1}",
                        self.fanout_ms.p50, self.fanout_ms.p99, self.fanout_ms.max
                    ),
                ),
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rest

#[derive(Debug, Clone, Serialize)]
pub struct RestReport {
    pub clients: usize,
    pub duration_s: f64,
    pub requests: usize,
    pub errors: usize,
    pub requests_per_s: f64,
    pub latency_ms: Percentiles,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_request: Option<f64>,
}

/// `clients` loops of `GET /api/v1/teams` and `GET /api/v1/auth/me` (authenticated: a JWT check
/// plus a session lookup, then a query) for `duration`.
pub async fn rest(api: &Api, clients: usize, duration: Duration, server_pid: Option<u32>) -> Result<RestReport> {
    let user = api.register(&format!("{}rest", prefix())).await?;
    api.create_team(&user, "rest load").await?;
    let before = server_pid.map(ProcSample::read).transpose()?;
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (api, token) = (api.clone(), user.access.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let mut i = c;
            while Instant::now() < end {
                let path = if i % 2 == 0 { "/api/v1/teams" } else { "/api/v1/auth/me" };
                i += 1;
                let t = Instant::now();
                match api.get(path, &token, "get").await {
                    Ok(_) => lat.push(ms(t.elapsed())),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.context("client task")?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = server_pid.map(ProcSample::read).transpose()?;
    let cpu = before.zip(after).map(|(b, a)| b.cpu_seconds_until(&a));
    let requests = latencies.len();
    Ok(RestReport {
        clients,
        duration_s: elapsed,
        requests,
        errors,
        requests_per_s: requests as f64 / elapsed,
        latency_ms: Percentiles::of(&mut latencies),
        server_cpu_s: cpu,
        server_cpu_us_per_request: cpu.filter(|_| requests > 0).map(|c| c * 1e6 / requests as f64),
    })
}

impl RestReport {
    pub fn print(&self) {
        print_table(
            "rest (authenticated GETs)",
            &[
                ("clients", self.clients.to_string()),
                ("requests", format!("{} ({} errors)", self.requests, self.errors)),
                ("requests/s", format!("{:.0}", self.requests_per_s)),
                (
                    "latency ms",
                    format!("p50 {:.2} p99 {:.2}", self.latency_ms.p50, self.latency_ms.p99),
                ),
                (
                    "server CPU per request",
                    self.server_cpu_us_per_request
                        .map_or("-".into(), |v| format!("{v:.0} µs")),
                ),
            ],
        );
    }
}
