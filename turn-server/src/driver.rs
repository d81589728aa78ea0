//! The shell around the sans-IO core: sockets in, commands out.
//!
//! One mutex guards the core together with the tables that turn its commands into sockets
//! (relay sockets by port, stream connections by client). UDP — the listener and every relay
//! socket — is served by one thread with its own poll loop ([`crate::udp`]): per wake-up it
//! feeds every ready socket's datagrams to the core (`recvmmsg` batches, one lock per socket),
//! then sends everything the core produced (UDP GSO trains and `sendmmsg` batches). TCP/TLS
//! connections and the timer are tokio tasks that lock the same core. The lock is never held across an `.await`, and
//! every command is carried out synchronously (sends are non-blocking; a full socket buffer
//! drops the datagram, as the network would).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TurnConfig;
use crate::core::framing::frame_len;
use crate::core::{ClientAddr, Command, Server, Transport};
use crate::metrics::Metrics;
use crate::udp::{self, Datagram};

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
    #[error("cannot start the UDP thread: {0}")]
    Thread(io::Error),
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
        let poll_error = |source| bind_error("UDP poll", local_udp, source);
        let (poll, sockets) = udp::Sockets::new(udp, config.relay_bind_ip()).map_err(poll_error)?;

        let now = Instant::now();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core: Server::new(core_config, StdRng::from_entropy(), now, unix),
                relays: HashMap::new(),
                streams: HashMap::new(),
            }),
            sockets,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let tracker = shared.tracker.clone();
        let connections = Arc::new(Semaphore::new(config.max_stream_connections));
        let udp_plane = shared.clone();
        // A thread of its own for the whole UDP plane, outside tokio: it blocks in its poll
        // loop. Its tracker token makes `shutdown` wait for it too.
        let token = tracker.token();
        std::thread::Builder::new()
            .name("turn-udp".into())
            .spawn(move || {
                let _running = token;
                udp::serve(&udp_plane, poll);
            })
            .map_err(StartError::Thread)?;
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
        self.shared.sockets.wake();
        self.shared.lock().relays.clear();
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) sockets: udp::Sockets,
    pub(crate) shutdown: CancellationToken,
    tracker: TaskTracker,
}

pub(crate) struct State {
    pub(crate) core: Server<StdRng>,
    pub(crate) relays: HashMap<u16, Arc<udp::Socket>>,
    streams: HashMap<ClientAddr, mpsc::Sender<Vec<u8>>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state usable: the core does not
        // panic by construction, so recover rather than take the relay down.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Carries out the core's commands: stream frames are queued and relay ports bound right
    /// here (binding reports back to the core, which may add commands), UDP datagrams are
    /// appended to `out` for the caller to send once the lock is released.
    pub(crate) fn collect(&mut self, sockets: &udp::Sockets, out: &mut Vec<Datagram>) {
        while let Some(command) = self.core.poll_command() {
            match command {
                Command::SendToClient { to, payload } => match to.transport {
                    Transport::Udp => out.push(Datagram {
                        socket: sockets.listener().clone(),
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
                    if let Some(socket) = self.relays.get(&relay_port) {
                        out.push(Datagram {
                            socket: socket.clone(),
                            to: peer,
                            payload,
                        });
                    }
                }
                Command::CreateRelay { port } => {
                    let bound = sockets.bind_relay(port, RELAY_SOCKET_BUFFER);
                    if let Err(error) = &bound {
                        tracing::debug!(%error, port, "cannot bind relay port");
                    }
                    let ok = bound.is_ok();
                    if let Ok(socket) = bound {
                        // A stale socket still in the table closes when the last send holding
                        // it is done; the kernel then drops its poll registration.
                        self.relays.insert(port, Arc::new(socket));
                    }
                    self.core.handle_relay_bound(port, ok, Instant::now());
                }
                Command::FreeRelay { port } => {
                    self.relays.remove(&port);
                }
            }
        }
    }
}

/// Locks the core, lets `feed` give it input, carries out the resulting commands and sends
/// the datagrams (one by one: these are the stream and timer paths, not the UDP fast path).
fn drive(shared: &Shared, feed: impl FnOnce(&mut Server<StdRng>)) {
    let mut out = Vec::new();
    {
        let mut state = shared.lock();
        feed(&mut state.core);
        state.collect(&shared.sockets, &mut out);
    }
    udp::send_each(&out);
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
        drive(&shared, |core| core.handle_timeout(Instant::now()));
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
    shared.lock().streams.remove(&client);
    drive(shared, |core| core.handle_client_closed(client));
}

async fn read_frames<R: AsyncRead + Unpin>(shared: &Arc<Shared>, mut reader: R, client: ClientAddr) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut consumed = 0;
        let mut garbage = false;
        drive(shared, |core| {
            loop {
                match frame_len(&buf[consumed..]) {
                    Ok(Some(len)) => {
                        let frame = &buf[consumed..consumed + len];
                        if let Err(reason) = core.handle_client_packet(frame, client, Instant::now()) {
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
        });
        buf.drain(..consumed);
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
async fn bind_udp_and_tcp(addr: SocketAddr) -> Result<(std::net::UdpSocket, TcpListener), StartError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = udp::bind(addr, LISTENER_SOCKET_BUFFER).map_err(|source| bind_error("UDP", addr, source))?;
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
