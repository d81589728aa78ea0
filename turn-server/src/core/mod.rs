//! The sans-IO TURN relay: RFC 8489 (STUN) and RFC 8656 (TURN) over UDP relays.
//!
//! [`Server`] is a synchronous state machine. The driver feeds it client packets
//! ([`Server::handle_client_packet`]), packets arriving on relay ports
//! ([`Server::handle_peer_packet`]), the result of binding a relay port
//! ([`Server::handle_relay_bound`]), closed stream connections and timeouts, always with the
//! current time; it answers with [`Command`]s drained through [`Server::poll_command`]. It never
//! reads a clock, never touches a socket and takes its randomness from the caller's RNG, so tests
//! run it on virtual time with a seeded RNG.

mod allocation;
mod filter;
pub mod framing;
mod nonce;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use convene_auth::{Secret, turn_password, verify_turn_username};
use ipnet::IpNet;
use rand::{Rng, RngCore};
use stun_types::attribute::{
    Attribute, AttributeFromRaw, AttributeStaticType, AttributeType, ErrorCode, Fingerprint, MessageIntegrity,
    MessageIntegritySha256, Nonce, Realm, UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message, MessageClass, MessageType,
    MessageWrite, MessageWriteExt, MessageWriteVec, Method, StunParseError, StunWriteError, TransactionId,
};
use turn_types::attribute::{
    ChannelNumber, Data, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
    XorPeerAddress, XorRelayedAddress,
};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

use crate::metrics::Metrics;
use allocation::{Allocation, AllocationState, ChannelBindOutcome, NewAllocation};
pub use filter::PeerFilter;
use nonce::{NonceCheck, NonceKey};

/// RFC 8656 §7.2: allocations live 10 minutes unless the client asks otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// The longest lifetime granted; a client refreshes to keep an allocation longer.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// RFC 8656 §9: permissions last 300 seconds.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: channel bindings last 10 minutes.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Channel numbers a client may bind. RFC 8656 §12 narrowed the range to 0x4000–0x4FFF, but
/// RFC 5766 clients, coturn's among them, still pick numbers up to 0x7FFF; the wider range
/// stays unambiguous on the server's sockets (RFC 7983 demultiplexing matters only on
/// clients that share a socket with DTLS-SRTP), so the server accepts it.
pub const CHANNEL_NUMBERS: RangeInclusive<u16> = 0x4000..=0x7FFF;
/// RFC 8656 §7.2: a port reserved by EVEN-PORT with the R bit is held about 30 seconds.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// XOR-PEER-ADDRESS attributes accepted in one CreatePermission.
const MAX_PEERS_PER_PERMISSION: usize = 64;
/// How often a different relay port is tried when the driver cannot bind the chosen one.
const MAX_BIND_ATTEMPTS: u8 = 8;
/// Room for the STUN header, XOR-PEER-ADDRESS (IPv6) and the DATA header of a Data indication.
const DATA_INDICATION_OVERHEAD: usize = 20 + 24 + 4;

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
    Tls = 2,
}

impl Transport {
    /// Stream transports need ChannelData padded to a multiple of 4 (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The client side of a 5-tuple: the server side is implied by the transport's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `payload` to the client; on a stream transport it is one complete frame.
    SendToClient { to: ClientAddr, payload: Vec<u8> },
    /// Send `payload` as one UDP datagram from the relay socket on `relay_port` to `peer`.
    SendToPeer {
        relay_port: u16,
        peer: SocketAddr,
        payload: Vec<u8>,
    },
    /// Bind a UDP socket on the relay address and `port`, then report with
    /// [`Server::handle_relay_bound`].
    CreateRelay { port: u16 },
    /// Close the relay socket on `port`.
    FreeRelay { port: u16 },
}

/// Why an input produced no output. Dropping is the correct reaction to all of these:
/// the reason only feeds logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("neither a STUN message nor ChannelData")]
    NotTurn,
    #[error("malformed STUN message or ChannelData")]
    Malformed,
    #[error("STUN message of a class or method the server does not accept")]
    Unexpected,
    #[error("no allocation for this client")]
    NoAllocation,
    #[error("no relay on this port")]
    UnknownRelay,
    #[error("channel not bound")]
    UnboundChannel,
    #[error("no permission for this peer")]
    NoPermission,
    #[error("allocation bandwidth limit exceeded")]
    BandwidthExceeded,
    #[error("payload does not fit a Data indication")]
    TooLarge,
}

/// Policy and identity of the relay; see `TurnConfig` for the operator-facing defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    pub secret: Secret,
    /// The relayed transport address given to clients (XOR-RELAYED-ADDRESS).
    pub relay_addr: IpAddr,
    pub relay_ports: RangeInclusive<u16>,
    /// Peer networks reachable although the default deny list covers them.
    pub allow_peers: Vec<IpNet>,
    /// Allocations one user (the part after `:` in the REST username) may hold: 486 beyond.
    pub user_quota: u32,
    /// Allocations the server holds at most: 508 beyond.
    pub total_quota: u32,
    /// Bytes per second one allocation may relay, both directions together; `None` is unlimited.
    pub bandwidth_limit: Option<u64>,
    /// How long a NONCE stays valid before the client gets 438 and a fresh one.
    pub nonce_lifetime: Duration,
}

/// What EVEN-PORT asked of a relay port (RFC 8656 §7.2, §14.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRequest {
    even: bool,
    /// The R bit: hold the next port for a second allocation (e.g. RTCP).
    reserve_next: bool,
}

/// Credentials proven by a request's MESSAGE-INTEGRITY.
struct Auth {
    username: String,
    key: IntegrityKey,
}

/// An error response to a request.
struct Reject {
    code: u16,
    signing: Signing,
    unknown: Vec<AttributeType>,
}

enum Signing {
    /// Not authenticated (yet): no MESSAGE-INTEGRITY.
    None,
    /// 401 and 438: REALM and a fresh NONCE, no MESSAGE-INTEGRITY (RFC 8489 §9.2.4).
    Challenge,
    /// Errors to authenticated requests carry MESSAGE-INTEGRITY (RFC 8656 §5).
    Key(IntegrityKey),
}

impl Reject {
    fn new(code: u16) -> Self {
        Self {
            code,
            signing: Signing::None,
            unknown: Vec::new(),
        }
    }

    fn challenge(code: u16) -> Self {
        Self {
            code,
            signing: Signing::Challenge,
            unknown: Vec::new(),
        }
    }

    fn signed(code: u16, auth: &Auth) -> Self {
        Self {
            code,
            signing: Signing::Key(auth.key.clone()),
            unknown: Vec::new(),
        }
    }
}

/// Attributes a TURN request may carry; other comprehension-required ones get 420.
const SUPPORTED_ATTRIBUTES: [AttributeType; 14] = [
    Username::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    Fingerprint::TYPE,
    XorPeerAddress::TYPE,
    Data::<'static>::TYPE,
    ChannelNumber::TYPE,
    Lifetime::TYPE,
    RequestedTransport::TYPE,
    RequestedAddressFamily::TYPE,
    EvenPort::TYPE,
    ReservationToken::TYPE,
];

/// The TURN relay state machine.
pub struct Server<R> {
    config: Config,
    filter: PeerFilter,
    rng: R,
    nonce_key: NonceKey,
    /// Maps the caller's monotonic clock to Unix time, which REST usernames and nonces use.
    epoch: Instant,
    epoch_unix: u64,
    allocations: HashMap<ClientAddr, Allocation>,
    by_port: HashMap<u16, ClientAddr>,
    per_user: HashMap<String, u32>,
    /// Ports held for a later Allocate with RESERVATION-TOKEN: token → (port, expiry).
    reservations: HashMap<u64, (u16, Instant)>,
    reserved_ports: HashMap<u16, u64>,
    commands: VecDeque<Command>,
    metrics: Metrics,
}

impl<R: RngCore> Server<R> {
    /// A relay whose clock reads `now_unix` (seconds since the Unix epoch) at `now`.
    pub fn new(config: Config, mut rng: R, now: Instant, now_unix: u64) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self {
            filter: PeerFilter::new(config.allow_peers.clone(), config.relay_addr),
            config,
            rng,
            nonce_key: NonceKey::new(key),
            epoch: now,
            epoch_unix: now_unix,
            allocations: HashMap::new(),
            by_port: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            reserved_ports: HashMap::new(),
            commands: VecDeque::new(),
            metrics: Metrics::default(),
        }
    }

    /// The next command for the driver, in the order they arose.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When [`Server::handle_timeout`] next has something to expire.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let allocations = self.allocations.values().map(Allocation::next_expiry);
        let reservations = self.reservations.values().map(|(_, expiry)| *expiry);
        allocations.chain(reservations).min()
    }

    /// Whether `client` holds an allocation (being bound or active).
    pub fn has_allocation(&self, client: ClientAddr) -> bool {
        self.allocations.contains_key(&client)
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics
    }

    /// Expires allocations (freeing their relay ports), permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<ClientAddr> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires_at <= now)
            .map(|(c, _)| *c)
            .collect();
        for client in expired {
            self.free(client);
        }
        let reserved_ports = &mut self.reserved_ports;
        self.reservations.retain(|_, (port, expiry)| {
            let live = *expiry > now;
            if !live {
                reserved_ports.remove(port);
            }
            live
        });
        for allocation in self.allocations.values_mut() {
            let (permissions, channels) = allocation.expire(now);
            self.metrics.permissions = self.metrics.permissions.saturating_sub(permissions as u64);
            self.metrics.channels = self.metrics.channels.saturating_sub(channels as u64);
        }
    }

    /// A stream connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn handle_client_closed(&mut self, client: ClientAddr) {
        self.free(client);
    }

    /// One datagram (UDP) or one frame (TCP/TLS, see [`framing`]) from a client.
    pub fn handle_client_packet(&mut self, bytes: &[u8], from: ClientAddr, now: Instant) -> Result<(), Discard> {
        match bytes.first().map(|b| b >> 6) {
            // RFC 8656 §12.4 / RFC 7983: 0b00 starts STUN, 0b01 starts ChannelData.
            Some(0b00) => self.handle_stun(bytes, from, now),
            Some(0b01) => self.handle_channel_data(bytes, from, now),
            _ => Err(Discard::NotTurn),
        }
    }

    /// A datagram that `peer` sent to the relay socket on `relay_port` (RFC 8656 §11.3, §12.5).
    pub fn handle_peer_packet(
        &mut self,
        relay_port: u16,
        peer: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), Discard> {
        if bytes.len() > usize::from(u16::MAX) {
            return Err(Discard::TooLarge);
        }
        let client = *self.by_port.get(&relay_port).ok_or(Discard::UnknownRelay)?;
        let allocation = self.allocations.get_mut(&client).ok_or(Discard::UnknownRelay)?;
        if !allocation.is_active() || allocation.expires_at <= now {
            return Err(Discard::UnknownRelay);
        }
        if !allocation.has_permission(peer.ip(), now) {
            self.metrics.dropped_no_permission += 1;
            return Err(Discard::NoPermission);
        }
        if !allocation.take_bandwidth(bytes.len(), now) {
            self.metrics.dropped_bandwidth += 1;
            return Err(Discard::BandwidthExceeded);
        }
        let payload = match allocation.channel_for_peer(peer, now) {
            Some(channel) => channel_data(channel, bytes, client.transport.is_stream()),
            None => data_indication(peer, bytes, &mut self.rng)?,
        };
        self.metrics.relayed_packets_to_clients += 1;
        self.metrics.relayed_bytes_to_clients += bytes.len() as u64;
        self.commands.push_back(Command::SendToClient { to: client, payload });
        Ok(())
    }

    /// The driver's answer to [`Command::CreateRelay`].
    pub fn handle_relay_bound(&mut self, port: u16, bound: bool, now: Instant) {
        let binding = self
            .by_port
            .get(&port)
            .and_then(|client| Some((*client, self.allocations.get_mut(client)?)))
            .and_then(|(client, allocation)| match allocation.state {
                AllocationState::Binding {
                    lifetime,
                    fingerprint,
                    attempts,
                    ports,
                    reservation,
                } => Some((client, lifetime, fingerprint, attempts, ports, reservation)),
                AllocationState::Active { .. } => None,
            });
        let Some((client, lifetime, fingerprint, attempts, ports, reservation)) = binding else {
            // The allocation went away (expired, connection closed) while the port was being
            // bound: the socket has nobody to serve.
            if bound {
                self.commands.push_back(Command::FreeRelay { port });
            }
            return;
        };
        let Some(allocation) = self.allocations.get_mut(&client) else {
            return;
        };
        if bound {
            let transaction = allocation.transaction;
            let relayed = SocketAddr::new(self.config.relay_addr, port);
            let response = build(
                MessageClass::Success,
                ALLOCATE,
                transaction,
                Some(&allocation.key),
                fingerprint,
                |m| {
                    m.add_attribute(&XorRelayedAddress::new(relayed, transaction))?;
                    m.add_attribute(&Lifetime::new(lifetime.as_secs() as u32))?;
                    if let Some(token) = reservation {
                        m.add_attribute(&ReservationToken::new(token))?;
                    }
                    m.add_attribute(&XorMappedAddress::new(client.addr, transaction))
                },
            );
            allocation.state = AllocationState::Active {
                response: response.clone(),
            };
            self.metrics.allocations += 1;
            self.metrics.allocations_total += 1;
            self.commands.push_back(Command::SendToClient {
                to: client,
                payload: response,
            });
            return;
        }
        // The port is taken by someone else: try another one, a few times.
        self.by_port.remove(&port);
        if let Some(token) = reservation {
            self.release_reservation(token);
        }
        let retry = if attempts + 1 < MAX_BIND_ATTEMPTS {
            self.pick_port(ports)
        } else {
            None
        };
        if let (Some(new_port), Some(token)) = (retry, reservation) {
            self.reserve(new_port + 1, token, now);
        }
        let Some(allocation) = self.allocations.get_mut(&client) else {
            return;
        };
        match retry {
            Some(new_port) => {
                allocation.relay_port = new_port;
                allocation.state = AllocationState::Binding {
                    lifetime,
                    fingerprint,
                    attempts: attempts + 1,
                    ports,
                    reservation,
                };
                self.by_port.insert(new_port, client);
                self.commands.push_back(Command::CreateRelay { port: new_port });
            }
            None => {
                let transaction = allocation.transaction;
                let key = allocation.key.clone();
                self.remove_allocation(client);
                let response = self.error_response(
                    ALLOCATE,
                    transaction,
                    Reject {
                        code: ErrorCode::INSUFFICIENT_CAPACITY,
                        signing: Signing::Key(key),
                        unknown: Vec::new(),
                    },
                    fingerprint,
                    client,
                    now,
                );
                self.commands.push_back(Command::SendToClient {
                    to: client,
                    payload: response,
                });
            }
        }
    }

    fn handle_stun(&mut self, bytes: &[u8], from: ClientAddr, now: Instant) -> Result<(), Discard> {
        let msg = Message::from_bytes(bytes).map_err(|_| Discard::Malformed)?;
        match msg.class() {
            MessageClass::Request => {
                if let Some(payload) = self.handle_request(&msg, from, now) {
                    self.commands.push_back(Command::SendToClient { to: from, payload });
                }
                Ok(())
            }
            MessageClass::Indication if msg.method() == SEND => self.handle_send_indication(&msg, from, now),
            _ => Err(Discard::Unexpected),
        }
    }

    fn handle_request(&mut self, msg: &Message<'_>, from: ClientAddr, now: Instant) -> Option<Vec<u8>> {
        let method = msg.method();
        let fingerprint = msg.has_attribute(Fingerprint::TYPE);
        let outcome = if method == BINDING {
            // RFC 8489 §6.3.1: Binding needs no authentication; ICE attributes in it are ignored.
            Ok(Some(build(
                MessageClass::Success,
                BINDING,
                msg.transaction_id(),
                None,
                fingerprint,
                |m| m.add_attribute(&XorMappedAddress::new(from.addr, msg.transaction_id())),
            )))
        } else if [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method) {
            self.authenticate(msg, from, now).and_then(|auth| {
                let unknown = unknown_attributes(msg);
                if !unknown.is_empty() {
                    return Err(Reject {
                        unknown,
                        ..Reject::signed(ErrorCode::UNKNOWN_ATTRIBUTE, &auth)
                    });
                }
                match method {
                    m if m == ALLOCATE => self.allocate(msg, from, auth, fingerprint, now),
                    m if m == REFRESH => self.refresh(msg, from, auth, fingerprint, now),
                    m if m == CREATE_PERMISSION => self.create_permission(msg, from, auth, fingerprint, now),
                    _ => self.channel_bind(msg, from, auth, fingerprint, now),
                }
            })
        } else {
            Err(Reject::new(ErrorCode::BAD_REQUEST))
        };
        match outcome {
            Ok(response) => response,
            Err(reject) => Some(self.error_response(method, msg.transaction_id(), reject, fingerprint, from, now)),
        }
    }

    /// Long-term credentials, RFC 8489 §9.2.4, with coturn's REST username/password scheme.
    fn authenticate(&mut self, msg: &Message<'_>, from: ClientAddr, now: Instant) -> Result<Auth, Reject> {
        if !msg.has_attribute(MessageIntegrity::TYPE) && !msg.has_attribute(MessageIntegritySha256::TYPE) {
            return Err(Reject::challenge(ErrorCode::UNAUTHORIZED));
        }
        let bad_request = |_| Reject::new(ErrorCode::BAD_REQUEST);
        let username = msg.attribute::<Username>().map_err(bad_request)?;
        let nonce = msg.attribute::<Nonce>().map_err(bad_request)?;
        msg.attribute::<Realm>().map_err(bad_request)?;
        let now_unix = self.unix(now);
        if self.nonce_key.check(nonce.nonce(), &from, now_unix) != NonceCheck::Valid {
            return Err(Reject::challenge(ErrorCode::STALE_NONCE));
        }
        let username = username.username();
        if !verify_turn_username(username, i64::try_from(now_unix).unwrap_or(i64::MAX)) {
            self.metrics.auth_failures += 1;
            return Err(Reject::challenge(ErrorCode::UNAUTHORIZED));
        }
        let password = turn_password(&self.config.secret, username);
        let key = LongTermKeyCredentials::new(username.to_owned(), password, self.config.realm.clone())
            .make_key(IntegrityAlgorithm::Sha1);
        if msg.validate_integrity_with_key(&key).is_err() {
            self.metrics.auth_failures += 1;
            return Err(Reject::challenge(ErrorCode::UNAUTHORIZED));
        }
        Ok(Auth {
            username: username.to_owned(),
            key,
        })
    }

    /// RFC 8656 §7.2.
    fn allocate(
        &mut self,
        msg: &Message<'_>,
        from: ClientAddr,
        auth: Auth,
        fingerprint: bool,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Reject> {
        if let Some(existing) = self.allocations.get(&from) {
            if existing.transaction == msg.transaction_id() && existing.username == auth.username {
                return match &existing.state {
                    AllocationState::Active { response } => Ok(Some(response.clone())),
                    // The answer follows once the relay port is bound.
                    AllocationState::Binding { .. } => Ok(None),
                };
            }
            return Err(Reject::signed(ErrorCode::ALLOCATION_MISMATCH, &auth));
        }
        let transport = msg
            .attribute::<RequestedTransport>()
            .map_err(|_| Reject::signed(ErrorCode::BAD_REQUEST, &auth))?;
        if transport.protocol() != RequestedTransport::UDP {
            return Err(Reject::signed(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL, &auth));
        }
        if let Ok(family) = msg.attribute::<RequestedAddressFamily>()
            && family.family() != address_family(self.config.relay_addr)
        {
            return Err(Reject::signed(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED, &auth));
        }
        let even_port = msg.attribute::<EvenPort>().ok();
        let token = msg.attribute::<ReservationToken>().ok().map(|t| t.token());
        if even_port.is_some() && token.is_some() {
            // RFC 8656 §7.2: the two exclude each other.
            return Err(Reject::signed(ErrorCode::BAD_REQUEST, &auth));
        }
        let user = auth
            .username
            .split_once(':')
            .map_or(auth.username.as_str(), |(_, user)| user)
            .to_owned();
        if self.per_user.get(&user).copied().unwrap_or(0) >= self.config.user_quota {
            self.metrics.quota_rejections += 1;
            return Err(Reject::signed(ErrorCode::ALLOCATION_QUOTA_REACHED, &auth));
        }
        if self.allocations.len() >= self.config.total_quota as usize {
            self.metrics.quota_rejections += 1;
            return Err(Reject::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth));
        }
        let ports = PortRequest {
            even: even_port.is_some(),
            reserve_next: even_port.is_some_and(|e| e.requested()),
        };
        let (port, reservation) = match token {
            // A token that is unknown or expired gets 508 (RFC 8656 §7.2).
            Some(token) => match self.release_reservation(token) {
                Some(port) => (port, None),
                None => return Err(Reject::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth)),
            },
            None => match self.pick_port(ports) {
                Some(port) if ports.reserve_next => {
                    let token = self.rng.next_u64();
                    self.reserve(port + 1, token, now);
                    (port, Some(token))
                }
                Some(port) => (port, None),
                None => return Err(Reject::signed(ErrorCode::INSUFFICIENT_CAPACITY, &auth)),
            },
        };
        let lifetime = granted_lifetime(msg);
        *self.per_user.entry(user.clone()).or_default() += 1;
        self.by_port.insert(port, from);
        self.allocations.insert(
            from,
            Allocation::new(NewAllocation {
                relay_port: port,
                username: auth.username,
                user,
                key: auth.key,
                expires_at: now + lifetime,
                transaction: msg.transaction_id(),
                state: AllocationState::Binding {
                    lifetime,
                    fingerprint,
                    attempts: 0,
                    ports,
                    reservation,
                },
                bandwidth_limit: self.config.bandwidth_limit,
                now,
            }),
        );
        self.commands.push_back(Command::CreateRelay { port });
        Ok(None)
    }

    /// RFC 8656 §7.3. A lifetime of 0 deletes the allocation.
    fn refresh(
        &mut self,
        msg: &Message<'_>,
        from: ClientAddr,
        auth: Auth,
        fingerprint: bool,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Reject> {
        let allocation = self.active_allocation(from, &auth)?;
        let lifetime = if msg.attribute::<Lifetime>().is_ok_and(|l| l.seconds() == 0) {
            Duration::ZERO
        } else {
            granted_lifetime(msg)
        };
        allocation.expires_at = now + lifetime;
        if lifetime.is_zero() {
            self.free(from);
        }
        Ok(Some(build(
            MessageClass::Success,
            REFRESH,
            msg.transaction_id(),
            Some(&auth.key),
            fingerprint,
            |m| m.add_attribute(&Lifetime::new(lifetime.as_secs() as u32)),
        )))
    }

    /// RFC 8656 §10.2: every XOR-PEER-ADDRESS must pass before any permission is installed.
    fn create_permission(
        &mut self,
        msg: &Message<'_>,
        from: ClientAddr,
        auth: Auth,
        fingerprint: bool,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Reject> {
        self.active_allocation(from, &auth)?;
        // One pass over the attributes: looking each peer up by index would be quadratic in a
        // message that packs thousands of them.
        let peers: Result<Vec<SocketAddr>, StunParseError> = msg
            .iter_attributes()
            .filter(|(_, raw)| raw.get_type() == XorPeerAddress::TYPE)
            .map(|(_, raw)| XorPeerAddress::from_raw_ref(&raw).map(|p| p.addr(msg.transaction_id())))
            .collect();
        let peers = match peers {
            Ok(peers) if !peers.is_empty() && peers.len() <= MAX_PEERS_PER_PERMISSION => peers,
            _ => return Err(Reject::signed(ErrorCode::BAD_REQUEST, &auth)),
        };
        for peer in &peers {
            self.check_peer(*peer, &auth)?;
        }
        let allocation = self.active_allocation(from, &auth)?;
        let mut added = 0;
        for peer in &peers {
            added += u64::from(allocation.permit(peer.ip(), now + PERMISSION_LIFETIME));
        }
        self.metrics.permissions += added;
        Ok(Some(build(
            MessageClass::Success,
            CREATE_PERMISSION,
            msg.transaction_id(),
            Some(&auth.key),
            fingerprint,
            |_| Ok(()),
        )))
    }

    /// RFC 8656 §11.2.
    fn channel_bind(
        &mut self,
        msg: &Message<'_>,
        from: ClientAddr,
        auth: Auth,
        fingerprint: bool,
        now: Instant,
    ) -> Result<Option<Vec<u8>>, Reject> {
        self.active_allocation(from, &auth)?;
        let bad_request = || Reject::signed(ErrorCode::BAD_REQUEST, &auth);
        let number = msg.attribute::<ChannelNumber>().map_err(|_| bad_request())?.channel();
        if !CHANNEL_NUMBERS.contains(&number) {
            return Err(bad_request());
        }
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| bad_request())?
            .addr(msg.transaction_id());
        self.check_peer(peer, &auth)?;
        let allocation = self.active_allocation(from, &auth)?;
        match allocation.bind_channel(number, peer, now + CHANNEL_LIFETIME) {
            ChannelBindOutcome::Conflict => {
                return Err(Reject::signed(ErrorCode::BAD_REQUEST, &auth));
            }
            ChannelBindOutcome::Created => self.metrics.channels += 1,
            ChannelBindOutcome::Refreshed => {}
        }
        // A channel binding also installs or refreshes the permission (RFC 8656 §11.2).
        let allocation = self.active_allocation(from, &auth)?;
        if allocation.permit(peer.ip(), now + PERMISSION_LIFETIME) {
            self.metrics.permissions += 1;
        }
        Ok(Some(build(
            MessageClass::Success,
            CHANNEL_BIND,
            msg.transaction_id(),
            Some(&auth.key),
            fingerprint,
            |_| Ok(()),
        )))
    }

    /// RFC 8656 §11.2 (Send indication): no authentication; dropped silently when not allowed.
    fn handle_send_indication(&mut self, msg: &Message<'_>, from: ClientAddr, now: Instant) -> Result<(), Discard> {
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| Discard::Malformed)?
            .addr(msg.transaction_id());
        let data = msg.attribute::<Data<'_>>().map_err(|_| Discard::Malformed)?;
        self.relay_to_peer(from, peer, data.data(), now)
    }

    /// RFC 8656 §12.4.
    fn handle_channel_data(&mut self, bytes: &[u8], from: ClientAddr, now: Instant) -> Result<(), Discard> {
        let data = ChannelData::parse(bytes).map_err(|_| Discard::Malformed)?;
        let allocation = self.allocations.get(&from).ok_or(Discard::NoAllocation)?;
        let peer = allocation.channel_peer(data.id(), now).ok_or(Discard::UnboundChannel)?;
        self.relay_to_peer(from, peer, data.data(), now)
    }

    fn relay_to_peer(&mut self, from: ClientAddr, peer: SocketAddr, data: &[u8], now: Instant) -> Result<(), Discard> {
        let allocation = self.allocations.get_mut(&from).ok_or(Discard::NoAllocation)?;
        if !allocation.is_active() || allocation.expires_at <= now {
            return Err(Discard::NoAllocation);
        }
        if !allocation.has_permission(peer.ip(), now) {
            self.metrics.dropped_no_permission += 1;
            return Err(Discard::NoPermission);
        }
        if !allocation.take_bandwidth(data.len(), now) {
            self.metrics.dropped_bandwidth += 1;
            return Err(Discard::BandwidthExceeded);
        }
        self.metrics.relayed_packets_to_peers += 1;
        self.metrics.relayed_bytes_to_peers += data.len() as u64;
        self.commands.push_back(Command::SendToPeer {
            relay_port: allocation.relay_port,
            peer,
            payload: data.to_vec(),
        });
        Ok(())
    }

    /// The active allocation of `from`, made with the same credentials (RFC 8656 §5).
    fn active_allocation(&mut self, from: ClientAddr, auth: &Auth) -> Result<&mut Allocation, Reject> {
        match self.allocations.get_mut(&from) {
            Some(a) if !a.is_active() => Err(Reject::signed(ErrorCode::ALLOCATION_MISMATCH, auth)),
            Some(a) if a.username != auth.username => Err(Reject::signed(ErrorCode::WRONG_CREDENTIALS, auth)),
            Some(a) => Ok(a),
            None => Err(Reject::signed(ErrorCode::ALLOCATION_MISMATCH, auth)),
        }
    }

    /// 443 for the other address family, 403 for peers outside the policy (RFC 8656 §10.2).
    fn check_peer(&mut self, peer: SocketAddr, auth: &Auth) -> Result<(), Reject> {
        let ip = filter::canonical(peer.ip());
        if address_family(ip) != address_family(filter::canonical(self.config.relay_addr)) {
            return Err(Reject::signed(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, auth));
        }
        if !self.filter.permits(ip) {
            self.metrics.peers_denied += 1;
            return Err(Reject::signed(ErrorCode::FORBIDDEN, auth));
        }
        Ok(())
    }

    /// A free relay port, random so that relayed addresses cannot be predicted
    /// (RFC 8656 §7.2); even, and with the next port free too, when EVEN-PORT asks for it.
    fn pick_port(&mut self, request: PortRequest) -> Option<u16> {
        let (low, high) = (*self.config.relay_ports.start(), *self.config.relay_ports.end());
        if low > high {
            return None;
        }
        let free = |port: u16| !self.by_port.contains_key(&port) && !self.reserved_ports.contains_key(&port);
        let usable = |port: u16| {
            free(port)
                && (!request.even || port.is_multiple_of(2))
                && (!request.reserve_next || (port < high && free(port + 1)))
        };
        for _ in 0..16 {
            let port = self.rng.gen_range(low..=high);
            if usable(port) {
                return Some(port);
            }
        }
        // Nearly full: scan from a random start so the search always terminates.
        let span = u32::from(high - low) + 1;
        let start = self.rng.gen_range(0..span);
        (0..span)
            .map(|i| low + ((start + i) % span) as u16)
            .find(|port| usable(*port))
    }

    fn reserve(&mut self, port: u16, token: u64, now: Instant) {
        self.reservations.insert(token, (port, now + RESERVATION_LIFETIME));
        self.reserved_ports.insert(port, token);
    }

    /// Ends a reservation and returns its port.
    fn release_reservation(&mut self, token: u64) -> Option<u16> {
        let (port, _) = self.reservations.remove(&token)?;
        self.reserved_ports.remove(&port);
        Some(port)
    }

    /// Deletes the allocation of `client`, if any, and releases its relay port.
    fn free(&mut self, client: ClientAddr) {
        if let Some(allocation) = self.remove_allocation(client)
            && allocation.is_active()
        {
            self.metrics.allocations = self.metrics.allocations.saturating_sub(1);
            self.commands.push_back(Command::FreeRelay {
                port: allocation.relay_port,
            });
        }
    }

    fn remove_allocation(&mut self, client: ClientAddr) -> Option<Allocation> {
        let allocation = self.allocations.remove(&client)?;
        if self.by_port.get(&allocation.relay_port) == Some(&client) {
            self.by_port.remove(&allocation.relay_port);
        }
        if let Some(count) = self.per_user.get_mut(&allocation.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(&allocation.user);
            }
        }
        self.metrics.permissions = self
            .metrics
            .permissions
            .saturating_sub(allocation.permission_count() as u64);
        self.metrics.channels = self.metrics.channels.saturating_sub(allocation.channel_count() as u64);
        Some(allocation)
    }

    fn error_response(
        &self,
        method: Method,
        transaction: TransactionId,
        reject: Reject,
        fingerprint: bool,
        from: ClientAddr,
        now: Instant,
    ) -> Vec<u8> {
        let key = match &reject.signing {
            Signing::Key(key) => Some(key),
            Signing::None | Signing::Challenge => None,
        };
        let nonce_expiry = self.unix(now).saturating_add(self.config.nonce_lifetime.as_secs());
        build(MessageClass::Error, method, transaction, key, fingerprint, |m| {
            m.add_attribute(&ErrorCode::builder(reject.code).build()?)?;
            if matches!(reject.signing, Signing::Challenge) {
                m.add_attribute(&Realm::new(&self.config.realm)?)?;
                m.add_attribute(&Nonce::new(&self.nonce_key.issue(&from, nonce_expiry))?)?;
            }
            if !reject.unknown.is_empty() {
                m.add_attribute(&UnknownAttributes::new(&reject.unknown))?;
            }
            Ok(())
        })
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch_unix
            .saturating_add(now.saturating_duration_since(self.epoch).as_secs())
    }
}

/// RFC 8656 §7.2/§7.3: the requested lifetime within [default, max]; the default without one.
fn granted_lifetime(msg: &Message<'_>) -> Duration {
    msg.attribute::<Lifetime>()
        .map(|l| Duration::from_secs(u64::from(l.seconds())).clamp(DEFAULT_LIFETIME, MAX_LIFETIME))
        .unwrap_or(DEFAULT_LIFETIME)
}

/// Comprehension-required attributes the server does not understand (RFC 8489 §6.3.1), at
/// most 16 of them so that the 420 answer stays small.
fn unknown_attributes(msg: &Message<'_>) -> Vec<AttributeType> {
    msg.iter_attributes()
        .map(|(_, attr)| attr.get_type())
        .filter(|t| t.comprehension_required() && !SUPPORTED_ATTRIBUTES.contains(t))
        .take(16)
        .collect()
}

fn address_family(ip: IpAddr) -> stun_types::AddressFamily {
    match ip {
        IpAddr::V4(_) => stun_types::AddressFamily::IPV4,
        IpAddr::V6(_) => stun_types::AddressFamily::IPV6,
    }
}

/// A response or indication with MESSAGE-INTEGRITY when `key` is given and FINGERPRINT when
/// the request carried one. A message that cannot be written (impossible with the attributes
/// used here) comes out as the bare header rather than a panic.
fn build(
    class: MessageClass,
    method: Method,
    transaction: TransactionId,
    key: Option<&IntegrityKey>,
    fingerprint: bool,
    attributes: impl FnOnce(&mut MessageWriteVec) -> Result<(), StunWriteError>,
) -> Vec<u8> {
    let mtype = MessageType::from_class_method(class, method);
    let mut message = Message::builder(mtype, transaction, MessageWriteVec::with_capacity(128));
    let complete = attributes(&mut message)
        .and_then(|()| {
            key.map_or(Ok(()), |key| {
                message.add_message_integrity_with_key(key, IntegrityAlgorithm::Sha1)
            })
        })
        .and_then(|()| if fingerprint { message.add_fingerprint() } else { Ok(()) });
    match complete {
        Ok(()) => message.finish(),
        Err(_) => Message::builder(mtype, transaction, MessageWriteVec::new()).finish(),
    }
}

/// RFC 8656 §12.4; padded to a multiple of 4 on streams (§12.5).
fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let padded = if pad {
        data.len().next_multiple_of(4)
    } else {
        data.len()
    };
    let mut frame = Vec::with_capacity(4 + padded);
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
    frame.extend_from_slice(data);
    frame.resize(4 + padded, 0);
    frame
}

/// RFC 8656 §11.3: a Data indication with a fresh transaction id.
fn data_indication(peer: SocketAddr, data: &[u8], rng: &mut impl RngCore) -> Result<Vec<u8>, Discard> {
    if data.len() > usize::from(u16::MAX) - DATA_INDICATION_OVERHEAD {
        return Err(Discard::TooLarge);
    }
    let transaction = TransactionId::from(rng.r#gen::<u128>() & ((1u128 << 96) - 1));
    let mtype = MessageType::from_class_method(MessageClass::Indication, DATA);
    let mut message = Message::builder(mtype, transaction, MessageWriteVec::with_capacity(data.len() + 64));
    message
        .add_attribute(&XorPeerAddress::new(peer, transaction))
        .map_err(|_| Discard::TooLarge)?;
    message.add_attribute(&Data::new(data)).map_err(|_| Discard::TooLarge)?;
    Ok(message.finish())
}
