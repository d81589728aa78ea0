//! The thin driver around [`Engine`]: media worker threads and the async handle API.
//!
//! Each worker is an OS thread running a current-thread tokio runtime that owns one UDP socket,
//! optionally one ICE-TCP listener, and one engine. It waits on: a datagram, a TCP frame, a new
//! TCP connection, a control request, the engine's next timeout. Requests are closures run against the engine on the worker thread, so the engine needs
//! no locks; their results come back on oneshot channels. Rooms are pinned to one worker.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use convene_recorder::thread::{Finished, Input as RecorderInput, RecorderTx};

use crate::engine::{Engine, EngineConfig, EngineOutput, Joined, ParticipantKey};
use crate::error::SfuError;
use crate::record::RecordOutput;
use crate::types::{
    Events, ParticipantEvent, ParticipantId, ParticipantInfo, PeerTarget, QualityReport, RoomId, RoomSnapshot,
    SfuStats, TrackId, TrackSettings, TrackSource,
};

/// Events buffered per participant before it counts as stuck and is removed.
const EVENT_QUEUE: usize = 256;
/// Control requests buffered per worker.
const COMMAND_QUEUE: usize = 1024;
/// Datagrams read in one go before outputs are flushed.
const RECV_BATCH: usize = 64;
/// Large enough for any datagram str0m sends or accepts (its MTU target is ~1150).
const RECV_BUF: usize = 2048;
/// Requests handled per wake-up at most (the rest on the next).
const REQUEST_BATCH: usize = 64;
/// A timeout handled this late means the worker is short of CPU (`SfuStats::worker_late_timeouts`).
const LATE_TIMEOUT: Duration = Duration::from_millis(20);
/// Wake-up when the engine has no peers and so no timeout.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// ICE-TCP connections one worker accepts at once; more are refused.
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Frames queued towards one ICE-TCP connection before further ones are dropped (as UDP would).
const TCP_SEND_QUEUE: usize = 256;

/// Media plane settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuConfig {
    /// Where the first worker binds its UDP socket (default `0.0.0.0:7882`). Worker `i` binds
    /// port + `i`; port 0 gives every worker an ephemeral port.
    pub udp_addr: SocketAddr,
    /// Where the first worker listens for ICE-TCP (RFC 6544, RFC 4571 framing; default
    /// `0.0.0.0:7881`), for clients that cannot use UDP. Worker `i` listens on port + `i`.
    /// `None`: UDP only.
    pub tcp_addr: Option<SocketAddr>,
    /// Addresses put in ICE host candidates (with each worker's port). Empty: the bind address,
    /// or all interface addresses when bound to an unspecified address.
    pub advertise_ips: Vec<IpAddr>,
    /// Number of media workers (threads); at least 1.
    pub workers: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_addr: SocketAddr::from(([0, 0, 0, 0], 7882)),
            tcp_addr: Some(SocketAddr::from(([0, 0, 0, 0], 7881))),
            advertise_ips: Vec::new(),
            workers: 1,
        }
    }
}

type Request = Box<dyn FnOnce(&mut Worker, Instant) + Send>;

/// One worker's engine plus what only the driver knows: event senders and the socket's address.
struct Worker {
    engine: Engine,
    events: HashMap<ParticipantKey, mpsc::Sender<Box<ParticipantEvent>>>,
    local: SocketAddr,
    candidates: Vec<SocketAddr>,
    tcp_candidates: Vec<SocketAddr>,
    tcp_local: Option<SocketAddr>,
    /// Outgoing frame queues of the open ICE-TCP connections, by remote address.
    tcp_conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// The recorder thread's queue (packets of recorded rooms; never waited on).
    recorder: RecorderTx,
    /// `SfuStats::worker_late_timeouts`.
    late_timeouts: u64,
    /// The UDP datagrams of the current flush, sent together at its end.
    udp_out: Vec<convene_udp::Datagram>,
    udp_writer: convene_udp::Writer,
    stop: bool,
}

/// What an ICE-TCP connection task reports to its worker.
enum TcpEvent {
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

impl Worker {
    /// The local candidate a datagram from `from` arrived on: str0m's ICE agent matches
    /// incoming checks against its candidates, and a socket bound to 0.0.0.0 cannot say which
    /// address it was (no IP_PKTINFO here).
    fn destination_for(&self, proto: Protocol, from: SocketAddr) -> SocketAddr {
        let (candidates, local) = match (proto, self.tcp_local) {
            (Protocol::Tcp, Some(tcp)) => (&self.tcp_candidates, tcp),
            _ => (&self.candidates, self.local),
        };
        let same_family = |c: &&SocketAddr| c.is_ipv4() == from.is_ipv4();
        candidates
            .iter()
            .filter(same_family)
            .find(|c| c.ip().is_loopback() == from.ip().is_loopback())
            .or_else(|| candidates.iter().find(same_family))
            .copied()
            .unwrap_or(local)
    }

    fn input(&mut self, proto: Protocol, from: SocketAddr, data: &[u8]) {
        let to = self.destination_for(proto, from);
        self.engine.handle_input(Instant::now(), proto, from, to, data);
    }

    fn record(&self, r: RecordOutput) {
        match r {
            RecordOutput::Packet { room, track, pkt, at } => self.recorder.packet(RecorderInput::Packet {
                room: room.to_string(),
                track,
                pkt,
                at,
            }),
            RecordOutput::TrackEnded { room, track } => self.recorder.control(RecorderInput::TrackEnded {
                room: room.to_string(),
                track_id: track.to_string(),
            }),
            RecordOutput::RoomEnded { room } => self.recorder.control(RecorderInput::Stop {
                room: room.to_string(),
                at: Instant::now(),
                reply: None,
            }),
        }
    }

    /// Hands the engine's outputs on. UDP datagrams are collected and sent together at the end,
    /// batched by `convene_udp` (per destination in order; equal-sized runs to one destination
    /// as one UDP GSO send, the rest through `sendmmsg`): one system call for many datagrams
    /// instead of one each. Sends never wait: a full send buffer drops (logged at debug), as
    /// the network would. The fd is used directly, bypassing tokio's write readiness, which
    /// the worker never waits on.
    fn flush(&mut self, socket: &UdpSocket) {
        let mut stuck = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            match output {
                EngineOutput::Transmit(t) if t.proto == Protocol::Udp => self.udp_out.push(convene_udp::Datagram {
                    to: t.destination,
                    payload: t.contents.into(),
                }),
                EngineOutput::Transmit(t) => {
                    // RFC 4571 §2: each packet is preceded by its 16-bit length.
                    let (Some(conn), Ok(len)) = (self.tcp_conns.get(&t.destination), u16::try_from(t.contents.len()))
                    else {
                        continue;
                    };
                    let mut frame = Vec::with_capacity(2 + t.contents.len());
                    frame.extend_from_slice(&len.to_be_bytes());
                    frame.extend_from_slice(&t.contents);
                    let _ = conn.try_send(frame);
                }
                EngineOutput::Record(r) => self.record(r),
                EngineOutput::Event { to, event } => {
                    let last = matches!(event, ParticipantEvent::Removed { .. });
                    if let Some(tx) = self.events.get(&to)
                        && let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Box::new(event))
                    {
                        stuck.push(to);
                    }
                    if last {
                        self.events.remove(&to);
                    }
                }
            }
        }
        // Nothing collected, nothing sent; a lone datagram goes out with one `sendto`.
        self.udp_writer.send(socket, &mut self.udp_out);
        self.udp_out.clear();
        // A consumer that stopped reading must not grow memory without bound: it is removed,
        // and its closed event stream tells signaling so.
        for key in stuck {
            if self.events.remove(&key).is_some() {
                tracing::warn!("participant event queue full; removing participant");
                let _ = self.engine.leave(key, Instant::now());
            }
        }
    }
}

async fn run_worker(
    mut w: Worker,
    socket: UdpSocket,
    listener: Option<TcpListener>,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(COMMAND_QUEUE);
    while !w.stop {
        w.flush(&socket);
        // A deadline already due goes through the select like any other wake (tokio picks among
        // ready branches at random), never a shortcut before it: when timeouts are due back to
        // back (an overloaded worker), the socket and the requests (leaves, shutdown among them)
        // still get their turns instead of starving.
        let deadline = w.engine.poll_timeout().unwrap_or_else(|| Instant::now() + IDLE_TICK);
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    w.input(Protocol::Udp, from, &buf[..n]);
                    for _ in 1..RECV_BATCH {
                        let Ok((n, from)) = socket.try_recv_from(&mut buf) else { break };
                        w.input(Protocol::Udp, from, &buf[..n]);
                    }
                }
            }
            event = tcp_rx.recv() => match event {
                Some(TcpEvent::Frame(from, data)) => w.input(Protocol::Tcp, from, &data),
                Some(TcpEvent::Closed(from)) => {
                    w.tcp_conns.remove(&from);
                }
                None => {}
            },
            accepted = accept => match accepted {
                Ok((stream, from)) if w.tcp_conns.len() < MAX_TCP_CONNECTIONS => {
                    let (out_tx, out_rx) = mpsc::channel(TCP_SEND_QUEUE);
                    w.tcp_conns.insert(from, out_tx);
                    tokio::spawn(tcp_connection(stream, from, tcp_tx.clone(), out_rx));
                }
                Ok(_) => tracing::warn!("ice-tcp connection limit reached; refusing"),
                Err(e) => tracing::debug!(error = %e, "ice-tcp accept failed"),
            },
            request = requests.recv() => match request {
                Some(f) => {
                    f(&mut w, Instant::now());
                    for _ in 1..REQUEST_BATCH {
                        let Ok(f) = requests.try_recv() else { break };
                        f(&mut w, Instant::now());
                    }
                }
                None => break,
            },
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if now.saturating_duration_since(deadline) >= LATE_TIMEOUT {
                    w.late_timeouts += 1;
                }
                w.engine.handle_timeout(now);
            }
        }
    }
    w.flush(&socket);
}

/// One ICE-TCP connection: RFC 4571 frames in both directions, relayed to and from the worker.
async fn tcp_connection(
    stream: TcpStream,
    from: SocketAddr,
    to_worker: mpsc::Sender<TcpEvent>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut len = [0u8; 2];
        loop {
            reader.read_exact(&mut len).await?;
            let mut frame = vec![0u8; usize::from(u16::from_be_bytes(len))];
            reader.read_exact(&mut frame).await?;
            if to_worker.send(TcpEvent::Frame(from, frame)).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let write = async {
        while let Some(frame) = outgoing.recv().await {
            writer.write_all(&frame).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let _ = to_worker.send(TcpEvent::Closed(from)).await;
}

struct WorkerRef {
    requests: mpsc::Sender<Request>,
    local: SocketAddr,
    tcp_local: Option<SocketAddr>,
}

async fn call<R: Send + 'static>(
    requests: &mpsc::Sender<Request>,
    f: impl FnOnce(&mut Worker, Instant) -> R + Send + 'static,
) -> Result<R, SfuError> {
    let (tx, rx) = oneshot::channel();
    let request: Request = Box::new(move |w, now| {
        let _ = tx.send(f(w, now));
    });
    requests.send(request).await.map_err(|_| SfuError::WorkerGone)?;
    rx.await.map_err(|_| SfuError::WorkerGone)
}

struct Inner {
    workers: Vec<WorkerRef>,
    recorder: RecorderTx,
    /// Recordings that ended, for whoever persists them (taken once).
    finished: Mutex<Option<mpsc::UnboundedReceiver<Finished>>>,
    placement: Mutex<HashMap<RoomId, usize>>,
    next_worker: AtomicUsize,
}

/// The media plane: a set of workers and the room → worker placement. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu").field("udp_addrs", &self.udp_addrs()).finish()
    }
}

impl Sfu {
    /// Binds every worker's sockets and starts the worker threads, each with its own
    /// current-thread runtime; callable from sync or async code. The handles it gives out are
    /// async (tokio).
    pub fn start(config: SfuConfig) -> Result<Sfu, SfuError> {
        if config.workers == 0 {
            return Err(SfuError::Config("workers must be at least 1"));
        }
        let advertise = if config.advertise_ips.is_empty() {
            default_advertise(config.udp_addr.ip())?
        } else {
            config.advertise_ips.clone()
        };
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let (recorder, _) = convene_recorder::thread::spawn(convene_recorder::thread::DEFAULT_QUEUE, finished_tx)
            .map_err(|e| SfuError::Io(e.to_string()))?;
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            let mut addr = config.udp_addr;
            if addr.port() != 0 {
                let port = u16::try_from(usize::from(addr.port()) + i)
                    .map_err(|_| SfuError::Config("udp port + workers exceeds 65535"))?;
                addr.set_port(port);
            }
            let socket = StdUdpSocket::bind(addr).map_err(|e| SfuError::Io(e.to_string()))?;
            socket.set_nonblocking(true).map_err(|e| SfuError::Io(e.to_string()))?;
            let local = socket.local_addr().map_err(|e| SfuError::Io(e.to_string()))?;
            let candidates: Vec<SocketAddr> = advertise.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect();
            let tcp = match config.tcp_addr {
                Some(mut addr) => {
                    if addr.port() != 0 {
                        let port = u16::try_from(usize::from(addr.port()) + i)
                            .map_err(|_| SfuError::Config("tcp port + workers exceeds 65535"))?;
                        addr.set_port(port);
                    }
                    let listener = StdTcpListener::bind(addr).map_err(|e| SfuError::Io(e.to_string()))?;
                    listener
                        .set_nonblocking(true)
                        .map_err(|e| SfuError::Io(e.to_string()))?;
                    let tcp_local = listener.local_addr().map_err(|e| SfuError::Io(e.to_string()))?;
                    Some((listener, tcp_local))
                }
                None => None,
            };
            let tcp_local = tcp.as_ref().map(|(_, a)| *a);
            let tcp_candidates: Vec<SocketAddr> = match tcp_local {
                Some(t) => advertise.iter().map(|ip| SocketAddr::new(*ip, t.port())).collect(),
                None => Vec::new(),
            };
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let worker = Worker {
                engine: Engine::new(
                    EngineConfig {
                        candidates: candidates.clone(),
                        tcp_candidates: tcp_candidates.clone(),
                    },
                    Instant::now(),
                ),
                events: HashMap::new(),
                local,
                candidates,
                tcp_candidates,
                tcp_local,
                tcp_conns: HashMap::new(),
                recorder: recorder.clone(),
                late_timeouts: 0,
                udp_out: Vec::new(),
                udp_writer: convene_udp::Writer::default(),
                stop: false,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SfuError::Io(e.to_string()))?;
            std::thread::Builder::new()
                .name(format!("media-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match tcp.map(|(l, _)| TcpListener::from_std(l)) {
                            Some(Ok(l)) => Some(l),
                            Some(Err(e)) => {
                                tracing::error!(error = %e, "media worker tcp listener");
                                return;
                            }
                            None => None,
                        };
                        match UdpSocket::from_std(socket) {
                            Ok(socket) => run_worker(worker, socket, listener, rx).await,
                            Err(e) => tracing::error!(error = %e, "media worker socket"),
                        }
                    });
                })
                .map_err(|e| SfuError::Io(e.to_string()))?;
            tracing::info!(worker = i, udp = %local, tcp = ?tcp_local, "media worker started");
            workers.push(WorkerRef {
                requests: tx,
                local,
                tcp_local,
            });
        }
        Ok(Sfu {
            inner: Arc::new(Inner {
                workers,
                recorder,
                finished: Mutex::new(Some(finished_rx)),
                placement: Mutex::new(HashMap::new()),
                next_worker: AtomicUsize::new(0),
            }),
        })
    }

    /// The bound UDP address of each worker.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().map(|w| w.local).collect()
    }

    /// The ICE-TCP listening address of each worker (empty without `tcp_addr`).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.workers.iter().filter_map(|w| w.tcp_local).collect()
    }

    fn worker_for(&self, room: &RoomId) -> usize {
        let mut placement = self
            .inner
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *placement
            .entry(room.clone())
            .or_insert_with(|| self.inner.next_worker.fetch_add(1, Ordering::Relaxed) % self.inner.workers.len())
    }

    fn placed(&self, room: &RoomId) -> Option<usize> {
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(room)
            .copied()
    }

    fn unplace(&self, room: &RoomId) {
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(room);
    }

    /// Joins `participant` to `room` (created on first join). Returns the handle for its requests,
    /// its event stream, and the room as it was (the others and their tracks).
    pub async fn join(
        &self,
        room: RoomId,
        participant: ParticipantId,
        info: ParticipantInfo,
    ) -> Result<(ParticipantHandle, Events, RoomSnapshot), SfuError> {
        let (r, p) = (room.clone(), participant.clone());
        let (handle, events, (joined, ())) = self
            .admit(room, participant, move |engine, now| {
                engine.join(r, p, info, now).map(|joined| (joined, ()))
            })
            .await?;
        Ok((handle, events, joined.room))
    }

    /// Joins a participant that only publishes, from its SDP offer (WHIP): no subscriber
    /// connection. Returns the handle, the event stream and the SDP answer.
    pub async fn join_publisher(
        &self,
        room: RoomId,
        participant: ParticipantId,
        info: ParticipantInfo,
        offer: String,
    ) -> Result<(ParticipantHandle, Events, String), SfuError> {
        let (r, p) = (room.clone(), participant.clone());
        let (handle, events, (_, answer)) = self
            .admit(room, participant, move |engine, now| {
                engine.join_publisher(r, p, info, &offer, now)
            })
            .await?;
        Ok((handle, events, answer))
    }

    /// Joins a participant that only receives, over a connection it offers (WHEP): the offer's
    /// receiving m-lines carry the room's tracks, or only `from`'s. Returns the handle, the event
    /// stream and the SDP answer.
    pub async fn join_viewer(
        &self,
        room: RoomId,
        participant: ParticipantId,
        info: ParticipantInfo,
        offer: String,
        from: Option<ParticipantId>,
    ) -> Result<(ParticipantHandle, Events, String), SfuError> {
        let (r, p) = (room.clone(), participant.clone());
        let (handle, events, (_, answer)) = self
            .admit(room, participant, move |engine, now| {
                engine.join_viewer(r, p, info, &offer, from, now)
            })
            .await?;
        Ok((handle, events, answer))
    }

    /// Runs a join on the room's worker and wires the new participant's event stream.
    async fn admit<T: Send + 'static>(
        &self,
        room: RoomId,
        participant: ParticipantId,
        join: impl FnOnce(&mut Engine, Instant) -> Result<(Joined, T), SfuError> + Send + 'static,
    ) -> Result<(ParticipantHandle, Events, (Joined, T)), SfuError> {
        let worker = self.worker_for(&room);
        let requests = self.inner.workers[worker].requests.clone();
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let joined = call(&requests, move |w, now| {
            let joined = join(&mut w.engine, now)?;
            w.events.insert(joined.0.key, events_tx);
            Ok::<_, SfuError>(joined)
        })
        .await??;
        let handle = ParticipantHandle {
            key: joined.0.key,
            room,
            participant,
            requests,
            sfu: self.clone(),
        };
        Ok((handle, events_rx, joined))
    }

    /// Rooms with participants, over all workers.
    pub async fn rooms(&self) -> Result<Vec<RoomId>, SfuError> {
        let mut all = Vec::new();
        for w in &self.inner.workers {
            all.extend(call(&w.requests, |w, _| w.engine.rooms()).await?);
        }
        all.sort();
        Ok(all)
    }

    /// A room's participants and tracks.
    pub async fn room_snapshot(&self, room: &RoomId) -> Result<RoomSnapshot, SfuError> {
        let worker = self.placed(room).ok_or(SfuError::UnknownRoom)?;
        let r = room.clone();
        call(&self.inner.workers[worker].requests, move |w, _| w.engine.snapshot(&r))
            .await?
            .ok_or(SfuError::UnknownRoom)
    }

    /// Ends a room for everyone in it.
    pub async fn close_room(&self, room: &RoomId) -> Result<(), SfuError> {
        let worker = self.placed(room).ok_or(SfuError::UnknownRoom)?;
        let r = room.clone();
        call(&self.inner.workers[worker].requests, move |w, now| {
            // The engine queues a `Removed` event per participant; dispatching it delivers the
            // event and then drops that participant's sender.
            w.engine.close_room(&r, now).map(|_| ())
        })
        .await??;
        self.unplace(room);
        Ok(())
    }

    /// Counters summed over workers.
    pub async fn stats(&self) -> Result<SfuStats, SfuError> {
        let mut total = SfuStats::default();
        for w in &self.inner.workers {
            let stats = call(&w.requests, |w, _| SfuStats {
                worker_late_timeouts: w.late_timeouts,
                ..w.engine.stats()
            });
            total.add(&stats.await?);
        }
        total.recorder_dropped_packets = self.inner.recorder.dropped();
        Ok(total)
    }

    /// Starts recording a live room into `dir` (files per track plus `manifest.json`, written
    /// by the recorder thread). Everyone in the room is told (`ParticipantEvent::Recording`).
    /// `started_at_ms` (unix ms) goes into the manifest.
    pub async fn start_recording(
        &self,
        room: &RoomId,
        recording_id: String,
        dir: PathBuf,
        started_at_ms: i64,
    ) -> Result<(), SfuError> {
        let worker = self.placed(room).ok_or(SfuError::UnknownRoom)?;
        let r = room.clone();
        call(&self.inner.workers[worker].requests, move |w, now| {
            w.engine.start_recording(&r, &recording_id, now)?;
            // Queued before any of the room's packets: those are flushed after this request.
            w.recorder.control(RecorderInput::Start {
                recording_id,
                room: r.to_string(),
                dir,
                started_at_ms,
                at: now,
            });
            Ok(())
        })
        .await?
    }

    /// Stops a room's recording and waits until its files are finalized. `None`: the room was
    /// not being recorded (or has ended, which finalizes its recording by itself).
    pub async fn stop_recording(&self, room: &RoomId) -> Result<Option<Finished>, SfuError> {
        let Some(worker) = self.placed(room) else {
            return Ok(None);
        };
        let r = room.clone();
        let reply = call(&self.inner.workers[worker].requests, move |w, now| {
            w.engine.stop_recording(&r)?;
            let (tx, rx) = oneshot::channel();
            w.recorder.control(RecorderInput::Stop {
                room: r.to_string(),
                at: now,
                reply: Some(tx),
            });
            Some(rx)
        })
        .await?;
        match reply {
            Some(rx) => Ok(rx.await.ok()),
            None => Ok(None),
        }
    }

    /// Every recording that ends (stopped, or its room emptied), once finalized. Only the first
    /// caller gets the receiver.
    pub fn finished_recordings(&self) -> Option<mpsc::UnboundedReceiver<Finished>> {
        self.inner
            .finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Ends every room (participants get `Removed { reason: "room_closed" }`, clients get DTLS
    /// close_notify), finalizes running recordings and stops the workers; outstanding handles
    /// then fail with `WorkerGone`.
    pub async fn shutdown(&self) {
        for w in &self.inner.workers {
            let _ = call(&w.requests, |w, now| {
                for room in w.engine.rooms() {
                    // Stopped here rather than by the room's end, whose output would only be
                    // flushed after this request returns.
                    if w.engine.stop_recording(&room).is_some() {
                        w.recorder.control(RecorderInput::Stop {
                            room: room.to_string(),
                            at: now,
                            reply: None,
                        });
                    }
                    let _ = w.engine.close_room(&room, now);
                }
                w.stop = true;
            })
            .await;
        }
        // Every recording is finalized before this returns (the process may exit next).
        let (tx, rx) = oneshot::channel();
        self.inner.recorder.control(RecorderInput::Sync { reply: tx });
        let _ = rx.await;
        self.inner
            .placement
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

fn default_advertise(bind: IpAddr) -> Result<Vec<IpAddr>, SfuError> {
    if !bind.is_unspecified() {
        return Ok(vec![bind]);
    }
    let ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map_err(|e| SfuError::Io(e.to_string()))?
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == bind.is_ipv4())
        .collect();
    if ips.is_empty() {
        return Err(SfuError::Config("no interface address to advertise"));
    }
    Ok(ips)
}

/// One participant's requests to its worker. Cloneable; dropping it does not leave the room
/// (signaling keeps a participant through a reconnect grace period), `leave` does.
#[derive(Clone)]
pub struct ParticipantHandle {
    key: ParticipantKey,
    room: RoomId,
    participant: ParticipantId,
    requests: mpsc::Sender<Request>,
    sfu: Sfu,
}

impl std::fmt::Debug for ParticipantHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantHandle")
            .field("room", &self.room)
            .field("participant", &self.participant)
            .finish()
    }
}

impl ParticipantHandle {
    /// The room joined.
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    /// This participant's id.
    pub fn participant(&self) -> &ParticipantId {
        &self.participant
    }

    /// Applies the client's publisher offer; returns the SDP answer.
    pub async fn publisher_offer(&self, sdp: String) -> Result<String, SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| w.engine.publisher_offer(key, &sdp, now)).await?
    }

    /// Applies the client's answer to the last `SubscriberOffer` event.
    pub async fn subscriber_answer(&self, sdp: String) -> Result<(), SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| w.engine.subscriber_answer(key, &sdp, now)).await?
    }

    /// Adds a trickled client ICE candidate (optional: the server is ICE-lite).
    pub async fn add_ice_candidate(&self, target: PeerTarget, candidate: String) -> Result<(), SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| {
            w.engine.add_ice_candidate(key, target, &candidate, now)
        })
        .await?
    }

    /// Declares the source and mute state of the publisher m-line `mid` (before or after the offer
    /// that carries it).
    pub async fn set_track_info(&self, mid: String, source: TrackSource, muted: bool) -> Result<(), SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| {
            w.engine.set_track_info(key, &mid, source, muted, now)
        })
        .await?
    }

    /// Tells the SFU how the subscriber shows a track it receives (rendered size, hidden,
    /// quality preference): it picks the simulcast layer from these and the bandwidth estimate.
    pub async fn set_track_settings(&self, track: TrackId, settings: TrackSettings) -> Result<(), SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| {
            w.engine.set_track_settings(key, &track, settings, now)
        })
        .await?
    }

    /// Subscribes to another participant's track (needed only without auto-subscribe).
    pub async fn subscribe(&self, track: TrackId) -> Result<(), SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| w.engine.subscribe(key, &track, now)).await?
    }

    /// Stops receiving a track.
    pub async fn unsubscribe(&self, track: TrackId) -> Result<(), SfuError> {
        let key = self.key;
        call(&self.requests, move |w, now| w.engine.unsubscribe(key, &track, now)).await?
    }

    /// Leaves the room: the others see the participant and its tracks go. Returns its last,
    /// partial quality window (its events stop here, so it cannot come as one).
    pub async fn leave(self) -> Result<Option<QualityReport>, SfuError> {
        let key = self.key;
        let left = call(&self.requests, move |w, now| {
            w.events.remove(&key);
            w.engine.leave(key, now)
        })
        .await??;
        if left.room_empty {
            self.sfu.unplace(&self.room);
        }
        Ok(left.quality)
    }
}
