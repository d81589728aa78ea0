//! One client peer connection: a str0m `Rtc` (RTP mode) on its own UDP socket.
//!
//! Each peer needs its own address because SFUs tell peers apart by their remote address. All
//! peers of a run live on one current-thread runtime, so one core drives them all.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{Context, Result};
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// Datagrams handled per wake-up at most: a burst queued on one socket is read without going
/// back through the runtime for each, yet one busy peer does not starve the others.
const BURST: usize = 32;

/// Socket buffer size: a keyframe burst to hundreds of peers must not overflow a buffer while the
/// single generator thread is busy elsewhere.
const SOCKET_BUFFER: usize = 1 << 20;

pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    pub local: SocketAddr,
    buf: Vec<u8>,
    /// When `rtc` wants `handle_input(Timeout)` next.
    pub timeout: Instant,
    /// Datagrams the kernel refused (send buffer full): client-side loss, reported separately.
    pub send_drops: u64,
}

impl Peer {
    /// A peer on a fresh port of `ip` (127.0.0.1 unless the server only offers another local
    /// address, as Janus does).
    pub fn bind(ip: IpAddr, now: Instant) -> Result<Peer> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(SocketAddr::new(ip, 0)),
            socket2::Type::DGRAM,
            None,
        )?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let local = socket.local_addr()?;
        let mut rtc = Rtc::builder().set_rtp_mode(true).set_stats_interval(None).build(now);
        rtc.add_local_candidate(Candidate::host(local, "udp").context("host candidate")?);
        Ok(Peer {
            rtc,
            socket,
            local,
            buf: vec![0; 2000],
            timeout: now,
            send_drops: 0,
        })
    }

    /// Waits for the next datagram; returns its length (the bytes are in the peer's buffer).
    pub async fn recv(&mut self) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(&mut self.buf).await
    }

    /// Feeds the datagram `recv` returned, then those already queued behind it (up to
    /// [`BURST`]), to the `Rtc`.
    pub fn handle_datagrams(&mut self, (mut len, mut from): (usize, SocketAddr), events: &mut Vec<Event>) {
        for _ in 1..BURST {
            self.handle_datagram(len, from, Instant::now(), events);
            match self.socket.try_recv_from(&mut self.buf) {
                Ok(next) => (len, from) = next,
                Err(_) => return,
            }
        }
        self.handle_datagram(len, from, Instant::now(), events);
    }

    /// Feeds the datagram `recv` returned to the `Rtc` and drains it.
    pub fn handle_datagram(&mut self, len: usize, from: SocketAddr, now: Instant, events: &mut Vec<Event>) {
        let Some(data) = self.buf.get(..len) else {
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        // A datagram str0m does not want (stray STUN, late DTLS) is not fatal for the peer.
        let _ = self.rtc.handle_input(Input::Receive(now, receive));
        self.drain(events);
    }

    /// Moves the `Rtc`'s clock if its deadline passed.
    pub fn handle_timeout(&mut self, now: Instant, events: &mut Vec<Event>) {
        if self.timeout <= now {
            let _ = self.rtc.handle_input(Input::Timeout(now));
            self.drain(events);
        }
    }

    /// Sends what the `Rtc` wants sent and collects its events until its next timeout.
    pub fn drain(&mut self, events: &mut Vec<Event>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.send_drops += 1;
                    }
                }
                Ok(Output::Event(e)) => events.push(e),
                Err(_) => {
                    // A broken connection: park it; the scenario reports it as not ready.
                    self.timeout = Instant::now() + std::time::Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    /// Writes one RTP packet on the sending m-line `mid`; `false` if it is not negotiated.
    pub fn write_rtp(&mut self, mid: Mid, seq: u64, ts: u32, marker: bool, payload: Vec<u8>, now: Instant) -> bool {
        let Some(media) = self.rtc.media(mid) else {
            return false;
        };
        let codec = if media.kind() == MediaKind::Video {
            Codec::Vp8
        } else {
            Codec::Opus
        };
        let Some(pt) = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return false;
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return false;
        };
        tx.write_rtp(RtpWrite::new(pt, seq.into(), ts, now, payload).marker(marker));
        true
    }
}
