//! Stateless NONCE values (RFC 8489 §9.2).
//!
//! A nonce carries its own expiry and a MAC over that expiry and the client's transport
//! address, so the server keeps no per-client state before a client has authenticated:
//! a flood of unauthenticated (possibly spoofed) requests costs no memory.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::ClientAddr;

type HmacSha1 = Hmac<Sha1>;

/// Bytes of the MAC kept in a nonce; 96 bits cannot be guessed within a nonce's lifetime.
const MAC_LEN: usize = 12;
const EXPIRY_HEX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    Valid,
    /// Well-formed and ours, but past its expiry: answer 438 so the client retries.
    Stale,
    /// Not issued by this server for this client.
    Invalid,
}

pub(crate) struct NonceKey([u8; 32]);

impl NonceKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub(crate) fn issue(&self, client: &ClientAddr, expires_at_unix: u64) -> String {
        let mut nonce = String::with_capacity(EXPIRY_HEX + 2 * MAC_LEN);
        let _ = write!(nonce, "{expires_at_unix:016x}");
        for byte in &self.mac(client, expires_at_unix).finalize().into_bytes()[..MAC_LEN] {
            let _ = write!(nonce, "{byte:02x}");
        }
        nonce
    }

    pub(crate) fn check(&self, nonce: &str, client: &ClientAddr, now_unix: u64) -> NonceCheck {
        let Some((expiry, mac_hex)) = nonce.split_at_checked(EXPIRY_HEX) else {
            return NonceCheck::Invalid;
        };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else {
            return NonceCheck::Invalid;
        };
        let mut mac = [0u8; MAC_LEN];
        if mac_hex.len() != 2 * MAC_LEN || !decode_hex(mac_hex, &mut mac) {
            return NonceCheck::Invalid;
        }
        if self.mac(client, expiry).verify_truncated_left(&mac).is_err() {
            return NonceCheck::Invalid;
        }
        if expiry <= now_unix {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    fn mac(&self, client: &ClientAddr, expiry: u64) -> HmacSha1 {
        // HMAC takes keys of any length.
        let mut mac =
            <HmacSha1 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(&expiry.to_be_bytes());
        mac.update(&[client.transport as u8]);
        match client.addr.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.addr.port().to_be_bytes());
        mac
    }
}

fn decode_hex(hex: &str, out: &mut [u8]) -> bool {
    let bytes = hex.as_bytes();
    for (i, slot) in out.iter_mut().enumerate() {
        let (Some(hi), Some(lo)) = (nibble(bytes[2 * i]), nibble(bytes[2 * i + 1])) else {
            return false;
        };
        *slot = (hi << 4) | lo;
    }
    true
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::Transport;

    fn client(port: u16) -> ClientAddr {
        ClientAddr {
            transport: Transport::Udp,
            addr: ([192, 0, 2, 1], port).into(),
        }
    }

    #[test]
    fn valid_until_expiry_then_stale() {
        let key = NonceKey::new([7; 32]);
        let nonce = key.issue(&client(1), 1_000);
        assert_eq!(key.check(&nonce, &client(1), 999), NonceCheck::Valid);
        assert_eq!(key.check(&nonce, &client(1), 1_000), NonceCheck::Stale);
    }

    #[test]
    fn bound_to_client_and_key() {
        let key = NonceKey::new([7; 32]);
        let nonce = key.issue(&client(1), 1_000);
        assert_eq!(key.check(&nonce, &client(2), 0), NonceCheck::Invalid);
        let tcp = ClientAddr {
            transport: Transport::Tcp,
            ..client(1)
        };
        assert_eq!(key.check(&nonce, &tcp, 0), NonceCheck::Invalid);
        assert_eq!(NonceKey::new([8; 32]).check(&nonce, &client(1), 0), NonceCheck::Invalid);
    }

    #[test]
    fn tampered_or_malformed_nonces_are_invalid() {
        let key = NonceKey::new([7; 32]);
        let nonce = key.issue(&client(1), 1_000);
        let later = format!("{:016x}{}", 9_999u64, &nonce[16..]);
        assert_eq!(key.check(&later, &client(1), 0), NonceCheck::Invalid);
        for bad in ["", "xyz", "00000000000003e8", &nonce[..30], "ééééééééééééééééé"] {
            assert_eq!(key.check(bad, &client(1), 0), NonceCheck::Invalid, "{bad}");
        }
    }
}
