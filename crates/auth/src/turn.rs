//! TURN REST credentials, coturn's `use-auth-secret` scheme
//! (draft-uberti-behave-turn-rest): username `expiry:user`,
//! password `base64(HMAC-SHA1(secret, username))`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

use crate::Secret;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
    /// Unix seconds after which the relay refuses the credentials.
    pub expires_at: i64,
}

/// The password for a REST username.
pub fn turn_password(secret: &Secret, username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Fresh credentials for `user`, valid for `ttl_secs` from `now_secs`.
pub fn turn_credentials(secret: &Secret, user: &str, now_secs: i64, ttl_secs: i64) -> TurnCredentials {
    let expires_at = now_secs + ttl_secs;
    let username = format!("{expires_at}:{user}");
    TurnCredentials {
        credential: turn_password(secret, &username),
        username,
        expires_at,
    }
}

/// Whether a REST username is still within its validity at `now_secs`. The password itself
/// is checked by the relay through MESSAGE-INTEGRITY with the key from [`turn_password`].
pub fn verify_turn_username(username: &str, now_secs: i64) -> bool {
    let expiry = username.split(':').next().and_then(|e| e.parse::<i64>().ok());
    matches!(expiry, Some(e) if e > now_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_scheme() {
        // Value computed with: printf %s "1700000000:bob" | openssl dgst -sha1 -hmac SECRET -binary | base64
        let secret = Secret::new("SECRET");
        let c = turn_credentials(&secret, "bob", 1_699_996_400, 3_600);
        assert_eq!(c.username, "1700000000:bob");
        assert_eq!(c.credential, "lIQjdQ/2UyZsEWYoATB3FmTTPgs=");
    }

    #[test]
    fn expiry_is_enforced() {
        assert!(verify_turn_username("100:bob", 99));
        assert!(!verify_turn_username("100:bob", 100));
        assert!(!verify_turn_username("bob", 0));
    }
}
