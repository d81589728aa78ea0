//! The UDP plane: the TURN listener and every relay socket on one poll loop.
//!
//! Relaying costs a UDP receive and a UDP send per packet, and on a fast path most of that
//! is kernel work. The loop keeps the kernel's share small: sockets are registered for
//! readability only (no write-space wake-ups), each ready socket is read with `recvmmsg`
//! until a short batch says it is empty (no trailing `EAGAIN` read), every ready socket is
//! fed to the core before anything is sent, and the datagrams the core produced then go out
//! grouped by socket through `convene_udp` (crates/udp-batch): equal-sized runs to one
//! destination as one UDP GSO send, the rest batched per `sendmmsg`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

use crate::core::{ClientAddr, Transport};
use crate::driver::Shared;

pub(crate) type Socket = mio::net::UdpSocket;

/// Relay sockets use their port as token; these two lie above every port.
const LISTENER: Token = Token(1 << 16);
const WAKER: Token = Token((1 << 16) + 1);
/// Datagrams per `recvmmsg` call.
const BATCH: usize = 32;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;
/// `recvmmsg` calls one socket gets per turn of the loop, so that a flooded socket cannot
/// starve the others; a socket that used them all is read again on the next turn.
const READS_PER_TURN: usize = 4;

/// A datagram for the socket that sends it.
pub(crate) struct Datagram {
    pub(crate) socket: Arc<Socket>,
    pub(crate) to: SocketAddr,
    pub(crate) payload: Vec<u8>,
}

/// The listener, and what any thread needs to add relay sockets to the loop or to stop it.
pub(crate) struct Sockets {
    listener: Arc<Socket>,
    relay_ip: IpAddr,
    registry: Registry,
    waker: Waker,
}

impl Sockets {
    /// The poll the UDP thread runs ([`serve`]) with the listener registered on it.
    pub(crate) fn new(listener: std::net::UdpSocket, relay_ip: IpAddr) -> io::Result<(Poll, Self)> {
        let poll = Poll::new()?;
        let mut listener = Socket::from_std(listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let registry = poll.registry().try_clone()?;
        let sockets = Self {
            listener: Arc::new(listener),
            relay_ip,
            registry,
            waker,
        };
        Ok((poll, sockets))
    }

    pub(crate) fn listener(&self) -> &Arc<Socket> {
        &self.listener
    }

    /// Makes the loop look at the shutdown token.
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Binds a relay socket and adds it to the loop. Dropping it closes it, which also ends
    /// its registration.
    pub(crate) fn bind_relay(&self, port: u16, buffer: usize) -> io::Result<Socket> {
        let mut socket = Socket::from_std(bind(SocketAddr::new(self.relay_ip, port), buffer)?);
        self.registry
            .register(&mut socket, Token(usize::from(port)), Interest::READABLE)?;
        Ok(socket)
    }
}

/// A non-blocking UDP socket with kernel buffers of (up to) `buffer` bytes.
pub(crate) fn bind(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Larger buffers are an optimisation; the kernel's limits decide what is granted.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The UDP thread: until shutdown, reads every ready socket into the core, then sends.
pub(crate) fn serve(shared: &Shared, mut poll: Poll) {
    let mut events = Events::with_capacity(1024);
    let mut reader = Reader::new();
    let mut writer = Writer::default();
    let mut out = Vec::new();
    let mut ready = Vec::new();
    let mut unfinished = Vec::new();
    while !shared.shutdown.is_cancelled() {
        // Sockets left with data last turn are read again without waiting.
        let timeout = (!unfinished.is_empty()).then_some(Duration::ZERO);
        if let Err(error) = poll.poll(&mut events, timeout) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(%error, "TURN UDP poll failed");
            return;
        }
        ready.clear();
        ready.append(&mut unfinished);
        ready.extend(events.iter().map(Event::token).filter(|token| *token != WAKER));
        for &token in &ready {
            // One lock per socket (at most READS_PER_TURN batches), so that stream tasks
            // waiting for the core are not held up for a whole turn.
            let mut state = shared.lock();
            let drained = if token == LISTENER {
                reader.drain(shared.sockets.listener(), |from, bytes, now| {
                    let client = ClientAddr {
                        transport: Transport::Udp,
                        addr: from,
                    };
                    if let Err(reason) = state.core.handle_client_packet(bytes, client, now) {
                        tracing::trace!(%reason, "client datagram dropped");
                    }
                })
            } else {
                let Ok(port) = u16::try_from(token.0) else { continue };
                // A socket freed since the event was queued: nothing to read.
                let Some(socket) = state.relays.get(&port).cloned() else {
                    continue;
                };
                reader.drain(&socket, |from, bytes, now| {
                    if let Err(reason) = state.core.handle_peer_packet(port, from, bytes, now) {
                        tracing::trace!(%reason, "peer datagram dropped");
                    }
                })
            };
            state.collect(&shared.sockets, &mut out);
            if !drained {
                unfinished.push(token);
            }
        }
        writer.send(&mut out);
    }
}

/// Receive buffers and headers for `recvmmsg`, allocated once per thread.
struct Reader {
    buf: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Slot, length and source of each datagram of the last batch.
    received: Vec<(usize, usize, SocketAddr)>,
}

impl Reader {
    fn new() -> Self {
        Self {
            buf: vec![0; BATCH * MAX_DATAGRAM],
            headers: MultiHeaders::preallocate(BATCH, None),
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Hands `socket`'s queued datagrams to `handle`; false when its budget ran out first.
    fn drain(&mut self, socket: &Socket, mut handle: impl FnMut(SocketAddr, &[u8], Instant)) -> bool {
        for _ in 0..READS_PER_TURN {
            let count = match self.recv(socket) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                // An error queued on the socket concerns one earlier datagram; reading goes on.
                Err(error) => {
                    tracing::debug!(%error, "UDP receive failed");
                    continue;
                }
            };
            let now = Instant::now();
            for &(slot, len, from) in &self.received {
                handle(from, &self.buf[slot * MAX_DATAGRAM..][..len], now);
            }
            // Edge-triggered readiness: a short batch means the queue was empty, and any
            // datagram arriving later raises a new event.
            if count < BATCH {
                return true;
            }
        }
        false
    }

    /// One `recvmmsg`; returns how many datagrams it read.
    fn recv(&mut self, socket: &Socket) -> io::Result<usize> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_exact_mut(MAX_DATAGRAM)
            .map(|slot| [IoSliceMut::new(slot)])
            .collect();
        let messages = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        self.received.clear();
        let mut count = 0;
        for (slot, message) in messages.enumerate() {
            count += 1;
            if let Some(from) = message.address.as_ref().and_then(socket_addr) {
                self.received.push((slot, message.bytes, from));
            }
        }
        Ok(count)
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::from(*v4)),
        (None, Some(v6)) => Some(SocketAddr::from(*v6)),
        (None, None) => None,
    }
}

/// Sends what one turn of the loop produced, with as few system calls as the kernel allows:
/// grouped by socket, each group through [`convene_udp::Writer`] (per destination in order,
/// equal-sized runs as one GSO send, the rest through `sendmmsg`).
#[derive(Default)]
struct Writer(convene_udp::Writer);

impl Writer {
    /// Sends and empties `out`.
    fn send(&mut self, out: &mut Vec<Datagram>) {
        out.sort_by_key(|datagram| Arc::as_ptr(&datagram.socket).addr());
        for group in out.chunk_by_mut(|a, b| Arc::ptr_eq(&a.socket, &b.socket)) {
            let socket = group[0].socket.clone();
            self.0.send(&*socket, group);
        }
        out.clear();
    }
}

impl convene_udp::Outgoing for Datagram {
    fn to(&self) -> SocketAddr {
        self.to
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Sends datagrams one by one: the stream and timer paths, which produce few.
pub(crate) fn send_each(out: &[Datagram]) {
    for datagram in out {
        convene_udp::send_one(&*datagram.socket, datagram);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn socket() -> Arc<Socket> {
        Arc::new(Socket::from_std(bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap()))
    }

    fn receiver() -> std::net::UdpSocket {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    }

    fn datagram(socket: &Arc<Socket>, to: &std::net::UdpSocket, payload: Vec<u8>) -> Datagram {
        Datagram {
            socket: socket.clone(),
            to: to.local_addr().unwrap(),
            payload,
        }
    }

    #[test]
    fn datagrams_leave_from_their_own_socket_in_order() {
        let (a, b) = (socket(), socket());
        let peer = receiver();
        // Alternating sockets, one destination: per socket an equal-sized run (a GSO train)
        // and then datagrams of growing size (a `sendmmsg` batch).
        let mut out = Vec::new();
        for i in 0..40u8 {
            let len = if i < 20 { 100 } else { usize::from(i) };
            out.push(datagram(&a, &peer, vec![i; len]));
            out.push(datagram(&b, &peer, vec![i; len + 1]));
        }
        let sent_from = |socket: &Arc<Socket>| -> Vec<(SocketAddr, Vec<u8>)> {
            let from = socket.local_addr().unwrap();
            out.iter()
                .filter(|d| Arc::ptr_eq(&d.socket, socket))
                .map(|d| (from, d.payload.clone()))
                .collect()
        };
        let expected = [sent_from(&a), sent_from(&b)];
        Writer::default().send(&mut out);
        assert!(out.is_empty());
        let mut buf = [0u8; 2048];
        let received: Vec<(SocketAddr, Vec<u8>)> = (0..80)
            .map(|_| {
                let (len, from) = peer.recv_from(&mut buf).unwrap();
                (from, buf[..len].to_vec())
            })
            .collect();
        for expected in expected {
            let source = expected[0].0;
            let got: Vec<_> = received.iter().filter(|(from, _)| *from == source).cloned().collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_flooded_socket_yields_after_its_budget_and_keeps_the_rest() {
        let relay = socket();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = READS_PER_TURN * BATCH + 10;
        for i in 0..total {
            sender
                .send_to(&(i as u32).to_be_bytes(), relay.local_addr().unwrap())
                .unwrap();
        }
        let mut reader = Reader::new();
        let mut seen = Vec::new();
        let mut record = |from: SocketAddr, bytes: &[u8], _| {
            assert_eq!(from, sender.local_addr().unwrap());
            seen.push(u32::from_be_bytes(bytes.try_into().unwrap()));
        };
        assert!(!reader.drain(&relay, &mut record), "the budget should run out");
        assert!(reader.drain(&relay, &mut record), "the rest fits one turn");
        assert_eq!(seen, (0..total as u32).collect::<Vec<_>>());
    }
}
