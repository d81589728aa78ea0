//! Batched UDP sends, shared by the TURN relay's UDP plane and the SFU's media workers.
//!
//! A datagram costs the kernel a walk down its send path; a busy relay or SFU produces many
//! at once, so [`Writer`] sends what one turn of a loop produced with as few system calls as
//! the kernel allows: a run of equal-sized datagrams to one destination leaves as one UDP GSO
//! `sendmsg` (the kernel walks its output path once and splits the train on delivery), the
//! rest up to [`BATCH`] per `sendmmsg`. Sends never block: a full socket buffer drops, as the
//! network would. Safe wrappers only: `nix` for the GSO control message, `rustix` for
//! `sendmmsg` and `sendto`.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg, sendto};

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 32;
/// UDP GSO limits: segments per send (the kernel's `UDP_MAX_SEGMENTS`), a segment that fits
/// an Ethernet MTU with IPv6 and UDP headers (larger ones would fail with `EINVAL` on such a
/// route), and the payload of one IP datagram.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_SEGMENT: usize = 1452;
const GSO_MAX_BYTES: usize = 65_000;

/// A datagram to send: where to, and what.
pub trait Outgoing {
    fn to(&self) -> SocketAddr;
    fn payload(&self) -> &[u8];
}

/// The plain [`Outgoing`] datagram, for callers with one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

impl Outgoing for Datagram {
    fn to(&self) -> SocketAddr {
        self.to
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Sends batches of datagrams on non-blocking UDP sockets; keeps the address buffer between
/// calls and whether the kernel can segment.
#[derive(Debug)]
pub struct Writer {
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
    /// Sends `datagrams` on `socket`. They are sorted by destination first (a stable sort:
    /// each destination keeps its order); a run of equal-sized datagrams to one destination
    /// leaves as one UDP GSO send, the others up to [`BATCH`] per `sendmmsg`.
    pub fn send<D: Outgoing>(&mut self, socket: impl AsFd, datagrams: &mut [D]) {
        let socket = socket.as_fd();
        datagrams.sort_by_key(Outgoing::to);
        // `datagrams[unsent..at]` waits for a `sendmmsg`; a GSO train goes out on its own.
        let (mut unsent, mut at) = (0, 0);
        while at < datagrams.len() {
            let run = gso_run(&datagrams[at..]);
            if self.gso && run > 1 {
                self.send_batch(socket, &datagrams[unsent..at]);
                self.send_train(socket, &datagrams[at..at + run]);
                unsent = at + run;
            }
            at += run;
        }
        self.send_batch(socket, &datagrams[unsent..]);
    }

    /// One `sendmsg` with `UDP_SEGMENT` for datagrams of equal size to one destination.
    fn send_train<D: Outgoing>(&mut self, socket: impl AsFd, train: &[D]) {
        let [first, ..] = train else { return };
        let Ok(segment) = u16::try_from(first.payload().len()) else {
            return;
        };
        let iov: Vec<IoSlice<'_>> = train.iter().map(|d| IoSlice::new(d.payload())).collect();
        let control = [ControlMessage::UdpGsoSegments(&segment)];
        let to = SockaddrStorage::from(first.to());
        match sendmsg(
            socket.as_fd().as_raw_fd(),
            &iov,
            &control,
            MsgFlags::MSG_DONTWAIT,
            Some(&to),
        ) {
            Ok(_) => {}
            // A full send buffer: the train is dropped, as the network would drop it.
            Err(Errno::EAGAIN) => {}
            Err(error) => {
                // EIO: the device cannot checksum segments, so GSO never works here. Other
                // errors (a segment above the path MTU) concern this train: send it plainly.
                if error == Errno::EIO {
                    self.gso = false;
                }
                tracing::debug!(%error, "UDP GSO send failed");
                self.send_batch(socket, train);
            }
        }
    }

    /// Up to [`BATCH`] datagrams per `sendmmsg`.
    fn send_batch<D: Outgoing>(&mut self, socket: impl AsFd, datagrams: &[D]) {
        for batch in datagrams.chunks(BATCH) {
            self.send_mmsg(socket.as_fd(), batch);
        }
    }

    fn send_mmsg<D: Outgoing>(&mut self, socket: impl AsFd, mut batch: &[D]) {
        while let [first, rest @ ..] = batch {
            if rest.is_empty() {
                send_one(socket, first);
                return;
            }
            self.addrs.clear();
            self.addrs.extend(batch.iter().map(|d| SocketAddrAny::from(d.to())));
            let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|d| [IoSlice::new(d.payload())]).collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
                batch.iter().map(|_| SendAncillaryBuffer::default()).collect();
            let mut messages: Vec<MMsgHdr<'_>> = self
                .addrs
                .iter()
                .zip(&slices)
                .zip(&mut controls)
                .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
                .collect();
            match sendmmsg(&socket, &mut messages, SendFlags::DONTWAIT) {
                Ok(sent) if sent > 0 => batch = &batch[sent.min(batch.len())..],
                // A full send buffer: the rest is dropped, as the network would drop it.
                Err(error) if error == rustix::io::Errno::AGAIN => return,
                // The first datagram failed (say, an unroutable address): skip it alone.
                result => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "UDP send failed");
                    }
                    batch = rest;
                }
            }
        }
    }
}

/// One `sendto`, for callers with a single datagram. Errors (a full buffer, an unroutable
/// destination) concern this datagram only: they are logged at debug and it is dropped.
pub fn send_one(socket: impl AsFd, datagram: &impl Outgoing) {
    if let Err(error) = sendto(socket, datagram.payload(), SendFlags::DONTWAIT, &datagram.to()) {
        tracing::debug!(%error, "UDP send failed");
    }
}

/// How many datagrams from the start of `datagrams` (sorted by destination) can leave as one
/// GSO train: same destination, same size, at most 64 segments (the kernel's limit) of at
/// most [`GSO_MAX_SEGMENT`] bytes, the whole within one IP datagram.
fn gso_run<D: Outgoing>(datagrams: &[D]) -> usize {
    let [first, ..] = datagrams else { return 0 };
    let size = first.payload().len();
    if size == 0 || size > GSO_MAX_SEGMENT {
        return 1;
    }
    let limit = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / size);
    datagrams
        .iter()
        .take(limit)
        .take_while(|d| d.to() == first.to() && d.payload().len() == size)
        .count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    fn receiver() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    }

    fn datagram(to: &UdpSocket, payload: Vec<u8>) -> Datagram {
        Datagram {
            to: to.local_addr().unwrap(),
            payload,
        }
    }

    /// `count` datagrams from `socket`, each with its source.
    fn recv_all(socket: &UdpSocket, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let (len, from) = socket.recv_from(&mut buf).unwrap();
                (from, buf[..len].to_vec())
            })
            .collect()
    }

    #[test]
    fn trains_and_batches_arrive_as_separate_datagrams_in_order() {
        let (a, b) = (socket(), socket());
        let (peer, client, other) = (receiver(), receiver(), receiver());
        // From socket `a`: 130 datagrams to `peer`, mostly equal (GSO trains of up to 64) with
        // odd sizes in between, interleaved with datagrams of growing size to `client` (a
        // `sendmmsg` batch). From socket `b`: those of `client` to `other`.
        let mut expected_peer = Vec::new();
        let mut expected_client = Vec::new();
        let mut expected_other = Vec::new();
        let mut from_a = Vec::new();
        let mut from_b = Vec::new();
        for i in 0..130u8 {
            let len = if i % 50 == 49 { 7 } else { 170 };
            let payload = vec![i; len];
            expected_peer.push((a.local_addr().unwrap(), payload.clone()));
            from_a.push(datagram(&peer, payload));
            let payload = vec![i; 1 + usize::from(i)];
            expected_client.push((a.local_addr().unwrap(), payload.clone()));
            from_a.push(datagram(&client, payload.clone()));
            expected_other.push((b.local_addr().unwrap(), payload.clone()));
            from_b.push(datagram(&other, payload));
        }
        let mut writer = Writer::default();
        writer.send(&a, &mut from_a);
        assert!(writer.gso, "the kernel refused UDP GSO on loopback");
        writer.send(&b, &mut from_b);
        assert_eq!(recv_all(&peer, 130), expected_peer);
        assert_eq!(recv_all(&client, 130), expected_client);
        assert_eq!(recv_all(&other, 130), expected_other);
    }

    #[test]
    fn a_single_datagram_and_an_empty_send_go_out_as_they_are() {
        let s = socket();
        let peer = receiver();
        let mut writer = Writer::default();
        writer.send(&s, &mut [] as &mut [Datagram]);
        writer.send(&s, &mut [datagram(&peer, vec![1, 2, 3])]);
        send_one(&s, &datagram(&peer, vec![4]));
        assert_eq!(
            recv_all(&peer, 2),
            [
                (s.local_addr().unwrap(), vec![1, 2, 3]),
                (s.local_addr().unwrap(), vec![4])
            ]
        );
    }

    #[test]
    fn gso_runs_stop_at_a_new_destination_size_or_the_segment_limit() {
        let (x, y) = (receiver(), receiver());
        let run = |datagrams: Vec<Datagram>| gso_run(&datagrams);
        assert_eq!(run(vec![]), 0);
        assert_eq!(run((0..3).map(|_| datagram(&x, vec![0; 100])).collect()), 3);
        assert_eq!(run(vec![datagram(&x, vec![0; 100]), datagram(&y, vec![0; 100])]), 1);
        assert_eq!(run(vec![datagram(&x, vec![0; 100]), datagram(&x, vec![0; 99])]), 1);
        assert_eq!(run((0..100).map(|_| datagram(&x, vec![0; 100])).collect()), 64);
        assert_eq!(run((0..100).map(|_| datagram(&x, vec![0; 1400])).collect()), 46);
        assert_eq!(run((0..2).map(|_| datagram(&x, vec![0; 1500])).collect()), 1);
    }
}
