//! A TURN client and a virtual-time harness around the sans-IO core.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use convene_auth::{Secret, turn_password};
use convene_turn::core::{ClientAddr, Command, Discard, Server, Transport};
use rand::SeedableRng;
use rand::rngs::StdRng;
use stun_types::attribute::{
    AttributeStaticType, ErrorCode, MessageIntegrity, Nonce, Realm, Username, XorMappedAddress,
};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt,
    MessageWriteVec, Method, TransactionId,
};
use turn_types::attribute::{ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

pub const SECRET: &str = "s3cret";
pub const REALM: &str = "convene.test";
/// Unix time at the harness's start.
pub const T0_UNIX: u64 = 1_800_000_000;
pub const RELAY_IP: [u8; 4] = [203, 0, 113, 1];

pub use convene_turn::core::Config;

pub fn config() -> Config {
    Config {
        realm: REALM.into(),
        secret: Secret::new(SECRET),
        relay_addr: RELAY_IP.into(),
        relay_ports: 50_000..=50_099,
        allow_peers: Vec::new(),
        user_quota: 5,
        total_quota: 100,
        bandwidth_limit: None,
        nonce_lifetime: Duration::from_secs(600),
    }
}

/// A public peer: the default policy lets clients reach it.
pub fn peer(port: u16) -> SocketAddr {
    ([198, 51, 100, 7], port).into()
}

pub struct Harness {
    pub server: Server<StdRng>,
    pub now: Instant,
    /// Answer `CreateRelay` with success right away, as a driver whose bind works would.
    pub auto_bind: bool,
    /// Virtual time passed since the start.
    pub elapsed: Duration,
    next_transaction: u128,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        let now = Instant::now();
        Self {
            server: Server::new(config, StdRng::seed_from_u64(7), now, T0_UNIX),
            now,
            auto_bind: true,
            elapsed: Duration::ZERO,
            next_transaction: 1,
        }
    }

    pub fn unix_now(&self) -> u64 {
        T0_UNIX + self.elapsed.as_secs()
    }

    pub fn transaction(&mut self) -> TransactionId {
        self.next_transaction += 1;
        TransactionId::from(self.next_transaction)
    }

    /// Moves virtual time forward and lets the core expire what is due.
    pub fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now += by;
        self.elapsed += by;
        self.server.handle_timeout(self.now);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(command) = self.server.poll_command() {
            if let (true, Command::CreateRelay { port }) = (self.auto_bind, &command) {
                self.server.handle_relay_bound(*port, true, self.now);
            }
            out.push(command);
        }
        out
    }

    pub fn send(&mut self, from: ClientAddr, bytes: &[u8]) -> (Result<(), Discard>, Vec<Command>) {
        let result = self.server.handle_client_packet(bytes, from, self.now);
        (result, self.drain())
    }

    pub fn peer_sends(
        &mut self,
        relay_port: u16,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> (Result<(), Discard>, Vec<Command>) {
        let result = self.server.handle_peer_packet(relay_port, peer, bytes, self.now);
        (result, self.drain())
    }

    /// Sends one request and returns the response sent back to the client.
    pub fn call_once(
        &mut self,
        client: &mut TestClient,
        method: Method,
        tx: TransactionId,
        attrs: &dyn Fn(&mut MessageWriteVec, TransactionId),
    ) -> Vec<u8> {
        let request = client.request(method, tx, attrs);
        let (_, out) = self.send(client.addr, &request);
        let response = response_to(&out, client.addr).expect("the server answers every request");
        if let Some(nonce) = nonce(&response) {
            client.nonce = Some(nonce);
        }
        response
    }

    /// Sends a request, answering one 401/438 challenge as a real client does.
    pub fn call(
        &mut self,
        client: &mut TestClient,
        method: Method,
        attrs: &dyn Fn(&mut MessageWriteVec, TransactionId),
    ) -> Vec<u8> {
        let tx = self.transaction();
        let response = self.call_once(client, method, tx, attrs);
        match error_code(&response) {
            Some(401 | 438) if nonce(&response).is_some() => {
                let tx = self.transaction();
                self.call_once(client, method, tx, attrs)
            }
            _ => response,
        }
    }

    pub fn allocate(&mut self, client: &mut TestClient) -> Vec<u8> {
        self.call(client, ALLOCATE, &|m, _| {
            m.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        })
    }

    /// Allocates and returns the relay port, asserting success.
    pub fn allocate_ok(&mut self, client: &mut TestClient) -> u16 {
        let response = self.allocate(client);
        assert!(is_success(&response), "allocate failed: {:?}", error_code(&response));
        relayed_addr(&response).port()
    }

    pub fn refresh(&mut self, client: &mut TestClient, lifetime: u32) -> Vec<u8> {
        self.call(client, REFRESH, &|m, _| {
            m.add_attribute(&Lifetime::new(lifetime)).unwrap();
        })
    }

    pub fn create_permission(&mut self, client: &mut TestClient, peers: &[SocketAddr]) -> Vec<u8> {
        let peers = peers.to_vec();
        self.call(client, CREATE_PERMISSION, &move |m, tx| {
            for peer in &peers {
                m.add_attribute(&XorPeerAddress::new(*peer, tx)).unwrap();
            }
        })
    }

    pub fn channel_bind(&mut self, client: &mut TestClient, channel: u16, peer: SocketAddr) -> Vec<u8> {
        self.call(client, CHANNEL_BIND, &move |m, tx| {
            m.add_attribute(&ChannelNumber::new(channel)).unwrap();
            m.add_attribute(&XorPeerAddress::new(peer, tx)).unwrap();
        })
    }

    pub fn send_indication(
        &mut self,
        client: &TestClient,
        peer: SocketAddr,
        data: &[u8],
    ) -> (Result<(), Discard>, Vec<Command>) {
        let tx = self.transaction();
        let mut m = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, SEND),
            tx,
            MessageWriteVec::new(),
        );
        m.add_attribute(&XorPeerAddress::new(peer, tx)).unwrap();
        m.add_attribute(&Data::new(data)).unwrap();
        let bytes = m.finish();
        self.send(client.addr, &bytes)
    }
}

pub struct TestClient {
    pub addr: ClientAddr,
    pub username: String,
    pub password: String,
    pub nonce: Option<String>,
}

impl TestClient {
    /// A client with valid REST credentials for `user`, expiring an hour after the harness start.
    pub fn new(port: u16, user: &str) -> Self {
        Self::with_expiry(port, user, T0_UNIX + 3600)
    }

    pub fn with_expiry(port: u16, user: &str, expiry: u64) -> Self {
        let username = format!("{expiry}:{user}");
        let password = turn_password(&Secret::new(SECRET), &username);
        Self {
            addr: ClientAddr {
                transport: Transport::Udp,
                addr: ([192, 0, 2, 10], port).into(),
            },
            username,
            password,
            nonce: None,
        }
    }

    pub fn tcp(mut self) -> Self {
        self.addr.transport = Transport::Tcp;
        self
    }

    /// A request, with long-term credentials once a nonce is known, and a FINGERPRINT.
    pub fn request(
        &self,
        method: Method,
        tx: TransactionId,
        attrs: &dyn Fn(&mut MessageWriteVec, TransactionId),
    ) -> Vec<u8> {
        let mut m = Message::builder(
            MessageType::from_class_method(MessageClass::Request, method),
            tx,
            MessageWriteVec::new(),
        );
        attrs(&mut m, tx);
        if let Some(nonce) = &self.nonce {
            m.add_attribute(&Username::new(&self.username).unwrap()).unwrap();
            m.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
            m.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
            m.add_message_integrity(&self.credentials().into(), IntegrityAlgorithm::Sha1)
                .unwrap();
        }
        m.add_fingerprint().unwrap();
        m.finish()
    }

    pub fn credentials(&self) -> LongTermKeyCredentials {
        LongTermKeyCredentials::new(self.username.clone(), self.password.clone(), REALM.into())
    }
}

pub fn response_to(out: &[Command], client: ClientAddr) -> Option<Vec<u8>> {
    out.iter().find_map(|c| match c {
        Command::SendToClient { to, payload } if *to == client => Some(payload.clone()),
        _ => None,
    })
}

pub fn is_success(bytes: &[u8]) -> bool {
    Message::from_bytes(bytes).is_ok_and(|m| m.class() == MessageClass::Success)
}

pub fn error_code(bytes: &[u8]) -> Option<u16> {
    Message::from_bytes(bytes)
        .ok()?
        .attribute::<ErrorCode>()
        .ok()
        .map(|e| e.code())
}

pub fn nonce(bytes: &[u8]) -> Option<String> {
    Message::from_bytes(bytes)
        .ok()?
        .attribute::<Nonce>()
        .ok()
        .map(|n| n.nonce().to_owned())
}

pub fn realm(bytes: &[u8]) -> Option<String> {
    Message::from_bytes(bytes)
        .ok()?
        .attribute::<Realm>()
        .ok()
        .map(|n| n.realm().to_owned())
}

pub fn has_integrity(bytes: &[u8]) -> bool {
    Message::from_bytes(bytes).is_ok_and(|m| m.has_attribute(MessageIntegrity::TYPE))
}

pub fn lifetime(bytes: &[u8]) -> Option<u32> {
    Message::from_bytes(bytes)
        .ok()?
        .attribute::<Lifetime>()
        .ok()
        .map(|l| l.seconds())
}

pub fn relayed_addr(bytes: &[u8]) -> SocketAddr {
    let m = Message::from_bytes(bytes).unwrap();
    m.attribute::<XorRelayedAddress>().unwrap().addr(m.transaction_id())
}

pub fn mapped_addr(bytes: &[u8]) -> SocketAddr {
    let m = Message::from_bytes(bytes).unwrap();
    m.attribute::<XorMappedAddress>().unwrap().addr(m.transaction_id())
}

/// The peer address and payload of a Data indication.
pub fn data_indication(bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let m = Message::from_bytes(bytes).unwrap();
    let peer = m.attribute::<XorPeerAddress>().unwrap().addr(m.transaction_id());
    let data = m.attribute::<Data<'_>>().unwrap().data().to_vec();
    (peer, data)
}

pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut frame = channel.to_be_bytes().to_vec();
    frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
