//! The UDP plane: the TURN listener and every relay socket on one poll loop.
//!
//! Relaying costs a UDP receive and a UDP send per packet, and on a fast path most of that
//! is kernel work. The loop keeps the kernel's share small: sockets are registered for
//! readability only (no write-space wake-ups), each ready socket is read with `recvmmsg`
//! until a short batch says it is empty (no trailing `EAGAIN` read), every ready socket is
//! fed to the core before anything is sent, and the datagrams the core produced then go out
//! grouped by socket: equal-sized runs to one destination as one UDP GSO send, the rest up to
//! [`BATCH`] per `sendmmsg`.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};

use crate::core::{ClientAddr, Transport};
use crate::driver::Shared;

pub(crate) type Socket = mio::net::UdpSocket;

/// Relay sockets use their port as token; these two lie above every port.
const LISTENER: Token = Token(1 << 16);
const WAKER: Token = Token((1 << 16) + 1);
/// Datagrams per `recvmmsg` or `sendmmsg` call.
const BATCH: usize = 32;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;
/// UDP GSO limits: segments per send (the kernel's `UDP_MAX_SEGMENTS`), a segment that fits
/// an Ethernet MTU with IPv6 and UDP headers (larger ones would fail with `EINVAL` on such a
/// route), and the payload of one IP datagram.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_SEGMENT: usize = 1452;
const GSO_MAX_BYTES: usize = 65_000;
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

/// Sends what one turn of the loop produced, with as few system calls as the kernel allows.
struct Writer {
    addrs: Vec<SocketAddrAny>,
    /// Cleared when the kernel cannot segment (no checksum offload on the route's device).
    gso: bool,
}

impl Default for Writer {
    fn default() -> Self {
        Self {
            addrs: Vec::new(),
            gso: true,
        }
    }
}

impl Writer {
    /// Sends and empties `out`. Datagrams are grouped by socket and destination (each flow
    /// keeps its order); a run of equal-sized datagrams to one destination leaves as one UDP
    /// GSO send (the kernel walks its send path once and splits the train on delivery), the
    /// others up to [`BATCH`] per `sendmmsg`.
    fn send(&mut self, out: &mut Vec<Datagram>) {
        out.sort_by_key(|datagram| (Arc::as_ptr(&datagram.socket).addr(), datagram.to));
        for group in out.chunk_by(|a, b| Arc::ptr_eq(&a.socket, &b.socket)) {
            // `group[unsent..at]` waits for a `sendmmsg`; a GSO train goes out on its own.
            let (mut unsent, mut at) = (0, 0);
            while at < group.len() {
                let run = gso_run(&group[at..]);
                if self.gso && run > 1 {
                    self.send_batch(&group[unsent..at]);
                    self.send_train(&group[at..at + run]);
                    unsent = at + run;
                }
                at += run;
            }
            self.send_batch(&group[unsent..]);
        }
        out.clear();
    }

    /// One `sendmsg` with `UDP_SEGMENT` for datagrams of equal size to one destination.
    fn send_train(&mut self, train: &[Datagram]) {
        let [first, ..] = train else { return };
        let iov: Vec<IoSlice<'_>> = train.iter().map(|d| IoSlice::new(&d.payload)).collect();
        let Ok(segment) = u16::try_from(first.payload.len()) else {
            return;
        };
        let control = [ControlMessage::UdpGsoSegments(&segment)];
        let to = SockaddrStorage::from(first.to);
        match sendmsg(
            first.socket.as_raw_fd(),
            &iov,
            &control,
            MsgFlags::MSG_DONTWAIT,
            Some(&to),
        ) {
            Ok(_) => {}
            Err(Errno::EAGAIN) => {}
            Err(error) => {
                // EIO: the device cannot checksum segments, so GSO never works here. Other
                // errors (a segment above the path MTU) concern this train: send it plainly.
                if error == Errno::EIO {
                    self.gso = false;
                }
                tracing::debug!(%error, "UDP GSO send failed");
                self.send_batch(train);
            }
        }
    }

    /// Up to [`BATCH`] datagrams of one socket per `sendmmsg`.
    fn send_batch(&mut self, datagrams: &[Datagram]) {
        for batch in datagrams.chunks(BATCH) {
            self.send_mmsg(batch);
        }
    }

    fn send_mmsg(&mut self, mut batch: &[Datagram]) {
        while let [first, rest @ ..] = batch {
            if rest.is_empty() {
                send_one(first);
                return;
            }
            self.addrs.clear();
            self.addrs.extend(batch.iter().map(|d| SocketAddrAny::from(d.to)));
            let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|d| [IoSlice::new(&d.payload)]).collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
                batch.iter().map(|_| SendAncillaryBuffer::default()).collect();
            let mut messages: Vec<MMsgHdr<'_>> = self
                .addrs
                .iter()
                .zip(&slices)
                .zip(&mut controls)
                .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
                .collect();
            match sendmmsg(&*first.socket, &mut messages, SendFlags::DONTWAIT) {
                Ok(sent) if sent > 0 => batch = &batch[sent.min(batch.len())..],
                // A full send buffer: the rest is dropped, as the network would drop it.
                Err(error) if error == rustix::io::Errno::AGAIN => return,
                // The first datagram failed (say, an unroutable address): skip it alone.
                result => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "relay send failed");
                    }
                    batch = rest;
                }
            }
        }
    }
}

/// How many datagrams from the start of `datagrams` (sorted by destination) can leave as one
/// GSO train: same destination, same size, at most 64 segments (the kernel's limit) of at
/// most [`GSO_MAX_SEGMENT`] bytes, the whole within one IP datagram.
fn gso_run(datagrams: &[Datagram]) -> usize {
    let [first, ..] = datagrams else { return 0 };
    let size = first.payload.len();
    if size == 0 || size > GSO_MAX_SEGMENT {
        return 1;
    }
    let limit = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / size);
    datagrams
        .iter()
        .take(limit)
        .take_while(|d| d.to == first.to && d.payload.len() == size)
        .count()
}
fn send_one(datagram: &Datagram) {
    // Errors (a full buffer, an unroutable peer) concern this datagram only.
    if let Err(error) = datagram.socket.send_to(&datagram.payload, datagram.to) {
        tracing::debug!(%error, "relay send failed");
    }
}

/// Sends datagrams one by one: the stream and timer paths, which produce few.
pub(crate) fn send_each(out: &[Datagram]) {
    out.iter().for_each(send_one);
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

    fn recv_all(socket: &std::net::UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let (len, _) = socket.recv_from(&mut buf).unwrap();
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn trains_and_batches_arrive_as_separate_datagrams_in_order() {
        let (a, b) = (socket(), socket());
        let (peer, client) = (receiver(), receiver());
        // 100 equal datagrams to one peer (two GSO trains: 64 + 36) with odd sizes in
        // between, interleaved with datagrams from another socket to another destination.
        let mut expected_peer = Vec::new();
        let mut expected_client = Vec::new();
        let mut out = Vec::new();
        for i in 0..130u8 {
            let len = if i % 50 == 49 { 7 } else { 170 };
            let payload = vec![i; len];
            expected_peer.push(payload.clone());
            out.push(datagram(&a, &peer, payload));
            let payload = vec![i; 1 + usize::from(i)];
            expected_client.push(payload.clone());
            out.push(datagram(&b, &client, payload));
        }
        let mut writer = Writer::default();
        writer.send(&mut out);
        assert!(out.is_empty());
        assert!(writer.gso, "the kernel refused UDP GSO on loopback");
        assert_eq!(recv_all(&peer, 130), expected_peer);
        assert_eq!(recv_all(&client, 130), expected_client);
    }

    #[test]
    fn gso_runs_stop_at_a_new_destination_size_or_the_segment_limit() {
        let s = socket();
        let (x, y) = (receiver(), receiver());
        let run = |datagrams: Vec<Datagram>| gso_run(&datagrams);
        assert_eq!(run(vec![]), 0);
        assert_eq!(run((0..3).map(|_| datagram(&s, &x, vec![0; 100])).collect()), 3);
        assert_eq!(
            run(vec![datagram(&s, &x, vec![0; 100]), datagram(&s, &y, vec![0; 100])]),
            1
        );
        assert_eq!(
            run(vec![datagram(&s, &x, vec![0; 100]), datagram(&s, &x, vec![0; 99])]),
            1
        );
        assert_eq!(run((0..100).map(|_| datagram(&s, &x, vec![0; 100])).collect()), 64);
        assert_eq!(run((0..100).map(|_| datagram(&s, &x, vec![0; 1400])).collect()), 46);
        assert_eq!(run((0..2).map(|_| datagram(&s, &x, vec![0; 1500])).collect()), 1);
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
