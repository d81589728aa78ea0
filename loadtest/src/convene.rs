//! Convene as a client sees it: the REST API (accounts, a team, rooms, join tokens) and the
//! `/ws/signal` WebSocket.

use anyhow::{Context, Result, bail};
use convene_proto::signal::{ClientMessage, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The password of every account the generator registers.
const PASSWORD: &str = "load test password";

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub access: String,
}

/// The REST API at `base` (`http://127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `ws://…` form of the base URL.
    pub fn ws_base(&self) -> String {
        self.base.replacen("http", "ws", 1)
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let res = req.send().await.with_context(|| format!("{what}: request"))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{what}: {status} {body}");
        }
        Ok(body)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value, what: &str) -> Result<Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.call(req, what).await
    }

    pub async fn get(&self, path: &str, token: &str, what: &str) -> Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)).bearer_auth(token), what)
            .await
    }

    /// Registers `username` (letters and digits) and signs it in.
    pub async fn register(&self, username: &str) -> Result<User> {
        let body = self
            .post(
                "/api/v1/auth/register",
                None,
                json!({ "email": format!("{username}@load.test"), "username": username,
                        "password": PASSWORD, "display_name": username }),
                "register",
            )
            .await?;
        Ok(User {
            id: body["user"]["id"].as_str().context("user id")?.to_owned(),
            access: body["access_token"].as_str().context("access token")?.to_owned(),
        })
    }

    pub async fn create_team(&self, owner: &User, name: &str) -> Result<String> {
        let body = self
            .post(
                "/api/v1/teams",
                Some(&owner.access),
                json!({ "name": name }),
                "create team",
            )
            .await?;
        Ok(body["id"].as_str().context("team id")?.to_owned())
    }

    pub async fn add_member(&self, owner: &User, team: &str, user: &User) -> Result<()> {
        self.post(
            &format!("/api/v1/teams/{team}/members"),
            Some(&owner.access),
            json!({ "user_id": user.id, "role": "member" }),
            "add member",
        )
        .await
        .map(drop)
    }

    pub async fn create_room(&self, owner: &User, team: &str, name: &str) -> Result<String> {
        let body = self
            .post(
                "/api/v1/rooms",
                Some(&owner.access),
                json!({ "name": name, "team_id": team }),
                "create room",
            )
            .await?;
        Ok(body["id"].as_str().context("room id")?.to_owned())
    }

    /// `POST /api/v1/rooms/{room}/join`: the join token.
    pub async fn join_token(&self, user: &User, room: &str) -> Result<String> {
        let body = self
            .post(
                &format!("/api/v1/rooms/{room}/join"),
                Some(&user.access),
                json!({}),
                "join",
            )
            .await?;
        Ok(body["token"].as_str().context("join token")?.to_owned())
    }
}

/// Join tokens minted with the server's JWT secret (`--jwt-secret`), for runs whose participant
/// count would otherwise be dominated by argon2 registrations. The server checks them exactly
/// as it checks the REST API's.
pub fn mint_join_token(secret: &str, room: &str, participant: &str) -> Result<String> {
    let tokens = convene_auth::JoinTokens::new(&convene_auth::Secret::new(secret));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let grant = convene_auth::JoinGrant {
        participant: participant.to_owned(),
        name: participant.to_owned(),
        room: room.to_owned(),
        grants: convene_auth::RoomGrants::participant(),
        max_participants: None,
    };
    Ok(tokens.issue(grant, i64::try_from(now)?, 3600)?)
}

/// Read buffer per client socket. tungstenite's default (128 KiB) is zero-filled before every
/// read: with a thousand sockets each reading a small frame that was 128 MB of memset per
/// chat message on the generator's one core, which the fan-out latency then measured.
const READ_BUFFER: usize = 4 * 1024;

pub async fn connect(url: &str) -> Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connect {url}"))?;
    Ok(ws)
}

pub async fn send(ws: &mut Ws, msg: &ClientMessage) -> Result<()> {
    ws.send(Message::Text(serde_json::to_string(msg)?.into())).await?;
    Ok(())
}

/// The next server message; `None` when the socket closed.
pub async fn next(ws: &mut Ws) -> Result<Option<ServerMessage>> {
    while let Some(frame) = ws.next().await {
        if let Message::Text(t) = frame? {
            return Ok(Some(serde_json::from_str(&t)?));
        }
    }
    Ok(None)
}
