//! The tokio shell around the sans-IO core: sockets in, commands out.
//!
//! One mutex guards the core together with the tables that turn its commands into sockets
//! (relay sockets by port, stream connections by client). Every task follows the same
//! pattern: wait for a socket, then without awaiting lock, feed the core everything that is
//! ready, resolve the commands into [`Action`]s, unlock, and perform the actions. The lock is
//! never held across an `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TurnConfig;
use crate::core::framing::frame_len;
use crate::core::{ClientAddr, Command, Server, Transport};
use crate::metrics::Metrics;

/// Largest UDP payload; receive buffers live on the stack only while draining a socket.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams handled per lock of the core before the sends are performed.
const BATCH: usize = 32;
/// Frames queued for a slow stream client before relayed data is dropped.
const STREAM_QUEUE: usize = 256;
/// Kernel buffers of the listening UDP socket: bursts from many clients must not overflow it
/// while the relay is busy (the kernel caps the value at `net.core.rmem_max`).
const LISTENER_SOCKET_BUFFER: usize = 4 << 20;
/// Kernel buffers of each relay socket, which carries one allocation's traffic.
const RELAY_SOCKET_BUFFER: usize = 512 << 10;
/// How long a TCP/TLS connection may stay silent without holding an allocation.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on timer sleeps, so expiries are at most this late.
const TIMER_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("invalid TURN configuration: {0}")]
    Config(&'static str),
}

/// Addresses the server actually listens on (useful with port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub tls: Option<SocketAddr>,
}

/// The running relay. Dropping it stops its tasks without waiting for them;
/// [`TurnServer::shutdown`] also waits.
pub struct TurnServer {
    shared: Arc<Shared>,
    local: LocalAddrs,
    tracker: TaskTracker,
}

impl TurnServer {
    /// Binds the listeners and starts serving.
    pub async fn start(config: TurnConfig) -> Result<Self, StartError> {
        let core_config = config.core_config();
        if core_config.relay_addr.is_unspecified() {
            return Err(StartError::Config(
                "the relayed address is unspecified: set relay_ip or relay_public_ip",
            ));
        }
        if config.relay_ports.is_empty() {
            return Err(StartError::Config("the relay port range is empty"));
        }
        let tls = match config.tls_listen {
            Some(addr) => Some((addr, tls_acceptor(&config)?)),
            None => None,
        };
        let (udp, tcp) = bind_udp_and_tcp(config.listen).await?;
        let udp = Arc::new(udp);
        let local_udp = udp
            .local_addr()
            .map_err(|source| bind_error("UDP", config.listen, source))?;
        let local_tcp = tcp
            .local_addr()
            .map_err(|source| bind_error("TCP", config.listen, source))?;
        let tls = match tls {
            Some((addr, acceptor)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| bind_error("TLS", addr, source))?;
                Some((listener, acceptor))
            }
            None => None,
        };
        let local = LocalAddrs {
            udp: local_udp,
            tcp: local_tcp,
            tls: match &tls {
                Some((listener, _)) => Some(
                    listener
                        .local_addr()
                        .map_err(|source| bind_error("TLS", local_tcp, source))?,
                ),
                None => None,
            },
        };

        let now = Instant::now();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core: Server::new(core_config, StdRng::from_entropy(), now, unix),
                relays: HashMap::new(),
                streams: HashMap::new(),
            }),
            udp: udp.clone(),
            relay_ip: config.relay_bind_ip(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let tracker = shared.tracker.clone();
        let connections = Arc::new(Semaphore::new(config.max_stream_connections));
        tracker.spawn(serve_udp(shared.clone(), udp));
        tracker.spawn(accept_streams(shared.clone(), tcp, None, connections.clone()));
        if let Some((listener, acceptor)) = tls {
            tracker.spawn(accept_streams(shared.clone(), listener, Some(acceptor), connections));
        }
        tracker.spawn(run_timers(shared.clone()));
        tracing::info!(udp = %local.udp, tcp = %local.tcp, tls = ?local.tls, "TURN relay listening");
        Ok(Self { shared, local, tracker })
    }

    pub fn local_addrs(&self) -> LocalAddrs {
        self.local
    }

    pub fn metrics(&self) -> Metrics {
        self.shared.lock().core.metrics()
    }

    /// Serves until `signal` completes, then shuts down.
    pub async fn run_until_stopped(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stops accepting, closes every connection and relay socket, and waits for the tasks.
    pub async fn shutdown(self) {
        self.stop();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn stop(&self) {
        self.shared.shutdown.cancel();
        {
            let mut state = self.shared.lock();
            for (_, relay) in state.relays.drain() {
                relay.task.abort();
            }
        }
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    state: Mutex<State>,
    udp: Arc<UdpSocket>,
    relay_ip: IpAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

struct State {
    core: Server<StdRng>,
    relays: HashMap<u16, Relay>,
    streams: HashMap<ClientAddr, mpsc::Sender<Vec<u8>>>,
}

struct Relay {
    socket: Arc<UdpSocket>,
    task: AbortHandle,
}

/// A command resolved to the socket that carries it out.
enum Action {
    SendUdp {
        socket: Arc<UdpSocket>,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    BindRelay {
        port: u16,
    },
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state usable: the core does not
        // panic by construction, so recover rather than take the relay down.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Drains the core's commands into actions; stream frames are queued right here.
    fn collect(&mut self, udp: &Arc<UdpSocket>, actions: &mut Vec<Action>) {
        while let Some(command) = self.core.poll_command() {
            match command {
                Command::SendToClient { to, payload } => match to.transport {
                    Transport::Udp => actions.push(Action::SendUdp {
                        socket: udp.clone(),
                        to: to.addr,
                        payload,
                    }),
                    Transport::Tcp | Transport::Tls => {
                        if let Some(stream) = self.streams.get(&to) {
                            // A full queue means a client slower than its relayed traffic: drop,
                            // as UDP would; STUN transactions are retransmitted by the client.
                            let _ = stream.try_send(payload);
                        }
                    }
                },
                Command::SendToPeer {
                    relay_port,
                    peer,
                    payload,
                } => {
                    if let Some(relay) = self.relays.get(&relay_port) {
                        actions.push(Action::SendUdp {
                            socket: relay.socket.clone(),
                            to: peer,
                            payload,
                        });
                    }
                }
                Command::CreateRelay { port } => actions.push(Action::BindRelay { port }),
                Command::FreeRelay { port } => {
                    if let Some(relay) = self.relays.remove(&port) {
                        relay.task.abort();
                    }
                }
            }
        }
    }
}

/// Performs actions; binding a relay reports back to the core, which may yield more.
async fn perform(shared: &Arc<Shared>, mut actions: Vec<Action>) {
    while !actions.is_empty() {
        let mut follow_up = Vec::new();
        for action in actions.drain(..) {
            match action {
                Action::SendUdp { socket, to, payload } => {
                    // Errors (e.g. ICMP unreachable reported late) concern one datagram only.
                    if let Err(error) = socket.send_to(&payload, to).await {
                        tracing::debug!(%error, "relay send failed");
                    }
                }
                Action::BindRelay { port } => {
                    let bound = bind_relay(shared, port);
                    let mut state = shared.lock();
                    if let Ok(socket) = &bound {
                        let task = shared.tracker.spawn(serve_relay(shared.clone(), socket.clone(), port));
                        let relay = Relay {
                            socket: socket.clone(),
                            task: task.abort_handle(),
                        };
                        if let Some(stale) = state.relays.insert(port, relay) {
                            stale.task.abort();
                        }
                    }
                    state.core.handle_relay_bound(port, bound.is_ok(), Instant::now());
                    state.collect(&shared.udp, &mut follow_up);
                }
            }
        }
        actions = follow_up;
    }
}

fn bind_relay(shared: &Shared, port: u16) -> io::Result<Arc<UdpSocket>> {
    bind_udp(SocketAddr::new(shared.relay_ip, port), RELAY_SOCKET_BUFFER).map(Arc::new)
}

fn bind_udp(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Larger buffers are an optimisation; the kernel's limits decide what is granted.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn serve_udp(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            ready = socket.readable() => if let Err(error) = ready {
                tracing::warn!(%error, "TURN UDP socket failed");
                return;
            },
        }
        let actions = drain_socket(&shared, &socket, |core, from, bytes, now| {
            let client = ClientAddr {
                transport: Transport::Udp,
                addr: from,
            };
            if let Err(reason) = core.handle_client_packet(bytes, client, now) {
                tracing::trace!(%reason, "client datagram dropped");
            }
        });
        perform(&shared, actions).await;
    }
}

/// Boxed because relay tasks are spawned from [`perform`], which relay tasks await: the
/// explicit `Send` future type breaks that cycle for the compiler.
fn serve_relay(shared: Arc<Shared>, socket: Arc<UdpSocket>, port: u16) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_relay_loop(shared, socket, port))
}

async fn serve_relay_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, port: u16) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            ready = socket.readable() => if let Err(error) = ready {
                tracing::warn!(%error, port, "relay socket failed");
                return;
            },
        }
        let actions = drain_socket(&shared, &socket, |core, from, bytes, now| {
            if let Err(reason) = core.handle_peer_packet(port, from, bytes, now) {
                tracing::trace!(%reason, "peer datagram dropped");
            }
        });
        perform(&shared, actions).await;
    }
}

/// Reads up to [`BATCH`] ready datagrams into the core under one lock.
fn drain_socket(
    shared: &Shared,
    socket: &UdpSocket,
    mut handle: impl FnMut(&mut Server<StdRng>, SocketAddr, &[u8], Instant),
) -> Vec<Action> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut actions = Vec::new();
    let mut state = shared.lock();
    for _ in 0..BATCH {
        match socket.try_recv_from(&mut buf) {
            Ok((len, from)) => handle(&mut state.core, from, &buf[..len], Instant::now()),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            // ICMP errors from earlier sends surface here on some systems; keep reading.
            Err(_) => continue,
        }
    }
    state.collect(&shared.udp, &mut actions);
    actions
}

async fn run_timers(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let next = shared
            .lock()
            .core
            .poll_timeout()
            .map_or(now + TIMER_TICK, |t| t.min(now + TIMER_TICK));
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let mut actions = Vec::new();
        {
            let mut state = shared.lock();
            state.core.handle_timeout(Instant::now());
            state.collect(&shared.udp, &mut actions);
        }
        perform(&shared, actions).await;
    }
}

async fn accept_streams(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "TURN accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        shared.tracker.clone().spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    serve_stream(
                        &shared,
                        stream,
                        ClientAddr {
                            transport: Transport::Tcp,
                            addr: from,
                        },
                    )
                    .await
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        () = shared.shutdown.cancelled() => return,
                        stream = handshake => stream,
                    };
                    match stream {
                        Ok(Ok(stream)) => {
                            serve_stream(
                                &shared,
                                stream,
                                ClientAddr {
                                    transport: Transport::Tls,
                                    addr: from,
                                },
                            )
                            .await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One TCP or TLS client: frames in (RFC 8656 §12.5 framing), queued frames out. When the
/// connection ends, so does its allocation.
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(shared: &Arc<Shared>, stream: S, client: ClientAddr) {
    let (reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    shared.lock().streams.insert(client, tx);
    tokio::select! {
        () = shared.shutdown.cancelled() => {}
        () = read_frames(shared, reader, client) => {}
        () = write_frames(writer, rx) => {}
    }
    let mut actions = Vec::new();
    {
        let mut state = shared.lock();
        state.streams.remove(&client);
        state.core.handle_client_closed(client);
        state.collect(&shared.udp, &mut actions);
    }
    perform(shared, actions).await;
}

async fn read_frames<R: AsyncRead + Unpin>(shared: &Arc<Shared>, mut reader: R, client: ClientAddr) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut actions = Vec::new();
        let mut consumed = 0;
        let mut garbage = false;
        {
            let mut state = shared.lock();
            loop {
                match frame_len(&buf[consumed..]) {
                    Ok(Some(len)) => {
                        let frame = &buf[consumed..consumed + len];
                        if let Err(reason) = state.core.handle_client_packet(frame, client, Instant::now()) {
                            tracing::trace!(%reason, "client frame dropped");
                        }
                        consumed += len;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "closing stream");
                        garbage = true;
                        break;
                    }
                }
            }
            state.collect(&shared.udp, &mut actions);
        }
        buf.drain(..consumed);
        perform(shared, actions).await;
        if garbage {
            return;
        }
        match tokio::time::timeout(STREAM_IDLE_TIMEOUT, reader.read_buf(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            // A silent connection without an allocation only holds a connection slot.
            Err(_) if !shared.lock().core.has_allocation(client) => return,
            Err(_) => {}
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut frames = Vec::with_capacity(64);
    let mut out = Vec::with_capacity(16 * 1024);
    // Frames queued together go out in one write (and one TLS record).
    while rx.recv_many(&mut frames, 64).await > 0 {
        out.clear();
        for frame in frames.drain(..) {
            out.extend_from_slice(&frame);
        }
        if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

/// UDP and TCP on the same port; with port 0, a port free for both.
async fn bind_udp_and_tcp(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = bind_udp(addr, LISTENER_SOCKET_BUFFER).map_err(|source| bind_error("UDP", addr, source))?;
        let port = udp
            .local_addr()
            .map_err(|source| bind_error("UDP", addr, source))?
            .port();
        let tcp_addr = SocketAddr::new(addr.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(source) => last_error = Some(bind_error("TCP", tcp_addr, source)),
        }
    }
    Err(last_error.unwrap_or(StartError::Config("no port free for both UDP and TCP")))
}

fn bind_error(what: &'static str, addr: SocketAddr, source: io::Error) -> StartError {
    StartError::Bind { what, addr, source }
}

fn tls_acceptor(config: &TurnConfig) -> Result<TlsAcceptor, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Err(StartError::Config("TLS listener needs tls_cert and tls_key"));
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("reading {}: {e}", cert.display())))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| StartError::Tls(format!("reading {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
