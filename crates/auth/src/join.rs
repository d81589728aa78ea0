//! Room join tokens: HS256 JWTs naming one room, one participant and what it may do there.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Secret, TokenError};

const ISSUER: &str = "convene";
const AUDIENCE_JOIN: &str = "convene:join";

/// A media source a participant may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishSource {
    Audio,
    Video,
    Screen,
}

/// What the bearer may do in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomGrants {
    pub publish: Vec<PublishSource>,
    pub subscribe: bool,
    pub data: bool,
    /// Host powers: moderate others, end the room.
    pub admin: bool,
    pub record: bool,
    /// Invisible to the others (recorders, monitors).
    pub hidden: bool,
}

impl RoomGrants {
    /// An ordinary participant: publish everything, subscribe, data.
    pub fn participant() -> Self {
        Self {
            publish: vec![PublishSource::Audio, PublishSource::Video, PublishSource::Screen],
            subscribe: true,
            data: true,
            admin: false,
            record: false,
            hidden: false,
        }
    }

    pub fn may_publish(&self, source: PublishSource) -> bool {
        self.publish.contains(&source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The participant id (the user id for signed-in users).
    pub sub: String,
    /// Display name.
    pub name: String,
    /// The room id.
    pub room: String,
    pub grants: RoomGrants,
    /// Most participants the room admits; `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// Issues and verifies join tokens with the server secret.
#[derive(Clone)]
pub struct JoinTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// What a join token is for, minus the registered claims [`JoinTokens::issue`] fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrant {
    pub participant: String,
    pub name: String,
    pub room: String,
    pub grants: RoomGrants,
    pub max_participants: Option<u32>,
}

impl JoinTokens {
    pub fn new(secret: &Secret) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
        }
    }

    pub fn issue(&self, grant: JoinGrant, now_secs: i64, ttl_secs: i64) -> Result<String, TokenError> {
        let claims = JoinClaims {
            sub: grant.participant,
            name: grant.name,
            room: grant.room,
            grants: grant.grants,
            max_participants: grant.max_participants,
            iat: now_secs,
            exp: now_secs + ttl_secs,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE_JOIN.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| TokenError::Invalid)
    }

    /// Checks signature, issuer, audience (an access token is not a join token) and expiry.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<JoinClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE_JOIN]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<JoinClaims>(token, &self.decoding, &validation).map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccessTokens;

    fn grant() -> JoinGrant {
        JoinGrant {
            participant: "u1".into(),
            name: "Ada".into(),
            room: "r1".into(),
            grants: RoomGrants::participant(),
            max_participants: Some(10),
        }
    }

    #[test]
    fn roundtrip_and_expiry() {
        let tokens = JoinTokens::new(&Secret::new("s"));
        let t = tokens.issue(grant(), 100, 60).unwrap();
        let c = tokens.verify(&t, 120).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.room.as_str(), c.max_participants),
            ("u1", "r1", Some(10))
        );
        assert!(c.grants.may_publish(PublishSource::Screen));
        assert_eq!(tokens.verify(&t, 160), Err(TokenError::Expired));
        assert_eq!(
            JoinTokens::new(&Secret::new("other")).verify(&t, 120),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn access_tokens_are_not_join_tokens() {
        let secret = Secret::new("s");
        let access = AccessTokens::new(&secret, 900).issue("u1", "s1", 100).unwrap();
        assert_eq!(JoinTokens::new(&secret).verify(&access, 120), Err(TokenError::Invalid));
        let join = JoinTokens::new(&secret).issue(grant(), 100, 60).unwrap();
        assert_eq!(
            AccessTokens::new(&secret, 900).verify(&join, 120),
            Err(TokenError::Invalid)
        );
    }
}
