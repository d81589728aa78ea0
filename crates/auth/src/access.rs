use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Secret;

const ISSUER: &str = "convene";
const AUDIENCE_ACCESS: &str = "convene:access";

/// Claims of a short-lived access JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The session (refresh-token family) the token belongs to; logout revokes it.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

/// Issues and checks HS256 access tokens with the server secret.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl AccessTokens {
    pub fn new(secret: &Secret, ttl_secs: i64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            ttl_secs,
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn issue(&self, user_id: &str, session_id: &str, now_secs: i64) -> Result<String, TokenError> {
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            iat: now_secs,
            exp: now_secs + self.ttl_secs,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE_ACCESS.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| TokenError::Invalid)
    }

    /// Verifies signature, issuer, audience and expiry against `now_secs` (no leeway).
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<AccessClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE_ACCESS]);
        // Expiry is checked below against the caller's clock, so tests can use virtual time.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AccessTokens {
        AccessTokens::new(&Secret::new("s3cret"), 900)
    }

    #[test]
    fn issue_and_verify() -> Result<(), TokenError> {
        let t = tokens().issue("u1", "s1", 1_000)?;
        let c = tokens().verify(&t, 1_001)?;
        assert_eq!((c.sub.as_str(), c.sid.as_str(), c.exp), ("u1", "s1", 1_900));
        Ok(())
    }

    #[test]
    fn expired_and_forged_tokens_fail() -> Result<(), TokenError> {
        let t = tokens().issue("u1", "s1", 1_000)?;
        assert_eq!(tokens().verify(&t, 1_900), Err(TokenError::Expired));
        let other = AccessTokens::new(&Secret::new("other"), 900);
        assert_eq!(other.verify(&t, 1_001), Err(TokenError::Invalid));
        assert_eq!(tokens().verify("garbage", 1_001), Err(TokenError::Invalid));
        Ok(())
    }
}
