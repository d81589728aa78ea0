//! The `iceServers` handed to clients: STUN and TURN URLs with fresh REST credentials.

use convene_proto::IceServer;

use crate::{Secret, turn_credentials};

/// Where clients find the relay, and the secret its credentials are derived from.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// `stun:` URLs (no credentials).
    pub stun_urls: Vec<String>,
    /// `turn:` and `turns:` URLs, served with per-user credentials.
    pub turn_urls: Vec<String>,
    /// The relay's shared secret; without it no TURN entry is handed out.
    pub turn_secret: Option<Secret>,
    pub credential_ttl_secs: i64,
}

impl IceConfig {
    pub fn servers_for(&self, user: &str, now_secs: i64) -> Vec<IceServer> {
        let mut servers = Vec::new();
        if !self.stun_urls.is_empty() {
            servers.push(IceServer {
                urls: self.stun_urls.clone(),
                username: None,
                credential: None,
            });
        }
        if let (Some(secret), false) = (&self.turn_secret, self.turn_urls.is_empty()) {
            let c = turn_credentials(secret, user, now_secs, self.credential_ttl_secs);
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(c.username),
                credential: Some(c.credential),
            });
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn_password;

    #[test]
    fn turn_entries_carry_valid_credentials() {
        let secret = Secret::new("S");
        let config = IceConfig {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            turn_secret: Some(secret.clone()),
            credential_ttl_secs: 600,
        };
        let servers = config.servers_for("u1", 1000);
        assert_eq!(servers.len(), 2);
        let turn = &servers[1];
        assert_eq!(turn.username.as_deref(), Some("1600:u1"));
        assert_eq!(
            turn.credential.as_deref(),
            Some(turn_password(&secret, "1600:u1").as_str())
        );
        let no_turn = IceConfig {
            turn_secret: None,
            ..config
        };
        assert_eq!(no_turn.servers_for("u1", 1000).len(), 1);
    }
}
