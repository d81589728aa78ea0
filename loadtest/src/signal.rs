//! The servers under test, as the `sfu` scenario's participants see them: set up rooms, join one
//! as a publisher (client offers) or subscriber (server offers), and turn each server's
//! signaling into the same few events.

use std::time::Instant;

use anyhow::{Result, bail};
use convene_proto::signal::{ClientMessage, ServerMessage, Target as PeerTarget};

use crate::convene::{self, Api, User, Ws};
use crate::janus::{Janus, JanusParticipant};
use crate::str0m_chat::{ChatParticipant, Str0mChat};

/// The server under test.
#[derive(Debug, Clone)]
pub enum Target {
    /// Convene: REST set-up, `/ws/signal`. With `jwt_secret`, join tokens are minted locally
    /// instead of registering one account per participant.
    Convene { api: Api, jwt_secret: Option<String> },
    /// Janus's videoroom plugin over its HTTP API.
    Janus(Janus),
    /// str0m's `chat` example: one room, every client offers, tracks added over a data channel.
    Str0mChat(Str0mChat),
}

/// A room the target set up.
#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    /// Convene: prefixes participant and account names (unique per `prepare_rooms`: accounts
    /// and participants outlive a run in the target).
    prefix: String,
    /// Convene: the team and its owner, who adds each participant's account.
    owner: Option<(User, String)>,
}

/// What a participant hears from the server.
#[derive(Debug)]
pub enum SignalIn {
    Joined,
    /// The answer to the offer given to [`Signal::join`]: a publisher's; with str0m's `chat`
    /// also a subscriber's (its data channel, over which the server then offers tracks).
    PublisherAnswer(String),
    SubscriberOffer(String),
}

/// One participant's signaling session.
pub enum Signal {
    Convene(Box<ConveneSignal>),
    Janus(JanusParticipant),
    Str0mChat(ChatParticipant),
}

pub struct ConveneSignal {
    api: Api,
    jwt_secret: Option<String>,
    room: Room,
    name: String,
    publisher: bool,
    offer: Option<String>,
    ws: Option<Ws>,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Convene { .. } => "convene",
            Target::Janus(_) => "janus",
            Target::Str0mChat(_) => "str0m-chat",
        }
    }

    /// Whether the target forwards whole frames (depacketize, repacketize): then only a
    /// frame's first packet keeps its stamp, and loss and delay are measured per frame.
    pub fn forwards_frames(&self) -> bool {
        matches!(self, Target::Str0mChat(_))
    }

    /// Whether a subscriber makes the first offer (a data channel the server renegotiates
    /// tracks over) instead of answering the server's.
    pub fn subscriber_offers(&self) -> bool {
        matches!(self, Target::Str0mChat(_))
    }

    /// Creates `count` rooms (for `publishers` publishers each).
    pub async fn prepare_rooms(&self, count: usize, publishers: usize) -> Result<Vec<Room>> {
        match self {
            Target::Convene { api, .. } => {
                let prefix = run_prefix();
                let owner = api.register(&format!("{prefix}owner")).await?;
                let team = api.create_team(&owner, "load").await?;
                let mut rooms = Vec::new();
                for i in 0..count {
                    rooms.push(Room {
                        id: api.create_room(&owner, &team, &format!("load {i}")).await?,
                        prefix: prefix.clone(),
                        owner: Some((owner.clone(), team.clone())),
                    });
                }
                Ok(rooms)
            }
            Target::Janus(janus) => {
                let mut rooms = Vec::new();
                for _ in 0..count {
                    rooms.push(Room {
                        id: janus.create_room(publishers).await?.to_string(),
                        prefix: String::new(),
                        owner: None,
                    });
                }
                Ok(rooms)
            }
            Target::Str0mChat(_) => {
                if count != 1 {
                    bail!("str0m's chat example is one room: use --rooms 1");
                }
                Ok(vec![Room {
                    id: "chat".to_owned(),
                    prefix: String::new(),
                    owner: None,
                }])
            }
        }
    }

    /// A participant-to-be called `name` in `room`.
    pub fn signal(&self, room: &Room, name: &str, publisher: bool) -> Signal {
        match self {
            Target::Convene { api, jwt_secret } => Signal::Convene(Box::new(ConveneSignal {
                api: api.clone(),
                jwt_secret: jwt_secret.clone(),
                room: room.clone(),
                name: format!("{}{name}", room.prefix),
                publisher,
                offer: None,
                ws: None,
            })),
            Target::Janus(janus) => Signal::Janus(janus.participant(&room.id, publisher)),
            Target::Str0mChat(chat) => Signal::Str0mChat(chat.participant()),
        }
    }
}

/// A name prefix unique to this generator process and call (accounts outlive runs in the
/// target's database; a search runs the scenario several times against one server).
fn run_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("lt{}r{}", ms % 100_000_000, RUNS.fetch_add(1, Ordering::Relaxed))
}

impl Signal {
    /// Joins (a publisher with its `offer`); returns when joining began, after any account
    /// set-up, for join latency.
    pub async fn join(&mut self, offer: Option<String>) -> Result<Instant> {
        match self {
            Signal::Convene(s) => s.join(offer).await,
            Signal::Janus(s) => s.join(offer).await,
            Signal::Str0mChat(s) => s.join(offer).await,
        }
    }

    /// Called on [`SignalIn::Joined`]: Convene takes the publisher's offer now (Janus took it
    /// with the join).
    pub async fn joined(&mut self) -> Result<()> {
        match self {
            Signal::Convene(s) => {
                if let Some(sdp) = s.offer.take() {
                    let msg = ClientMessage::Offer {
                        id: None,
                        target: PeerTarget::Publisher,
                        sdp,
                    };
                    convene::send(s.ws()?, &msg).await?;
                }
                Ok(())
            }
            Signal::Janus(_) | Signal::Str0mChat(_) => Ok(()),
        }
    }

    /// The next event; cancel-safe.
    pub async fn next(&mut self) -> Result<SignalIn> {
        match self {
            Signal::Convene(s) => s.next().await,
            Signal::Janus(s) => s.next().await,
            Signal::Str0mChat(s) => s.next().await,
        }
    }

    /// Answers the server's subscriber offer.
    pub async fn answer(&mut self, sdp: String) -> Result<()> {
        match self {
            Signal::Convene(s) => {
                let msg = ClientMessage::Answer {
                    id: None,
                    target: PeerTarget::Subscriber,
                    sdp,
                };
                convene::send(s.ws()?, &msg).await
            }
            Signal::Janus(s) => s.answer(sdp).await,
            Signal::Str0mChat(_) => bail!("str0m chat offers over the data channel"),
        }
    }

    /// Leaves; errors are of no interest any more.
    pub async fn leave(&mut self) {
        match self {
            Signal::Convene(s) => {
                if let Some(ws) = s.ws.as_mut() {
                    let _ = convene::send(ws, &ClientMessage::Leave { id: None }).await;
                    let _ = ws.close(None).await;
                }
            }
            Signal::Janus(s) => s.leave().await,
            // No signaling session: the server drops the client when ICE times out.
            Signal::Str0mChat(_) => {}
        }
    }
}

impl ConveneSignal {
    fn ws(&mut self) -> Result<&mut Ws> {
        self.ws.as_mut().ok_or_else(|| anyhow::anyhow!("not connected"))
    }

    async fn join(&mut self, offer: Option<String>) -> Result<Instant> {
        let token = match &self.jwt_secret {
            Some(secret) => {
                let started = Instant::now();
                (convene::mint_join_token(secret, &self.room.id, &self.name)?, started)
            }
            None => {
                let Some((owner, team)) = &self.room.owner else {
                    bail!("room without owner");
                };
                let user = self.api.register(&self.name).await?;
                self.api.add_member(owner, team, &user).await?;
                let started = Instant::now();
                (self.api.join_token(&user, &self.room.id).await?, started)
            }
        };
        let (token, started) = token;
        let mut ws = convene::connect(&format!("{}/ws/signal", self.api.ws_base())).await?;
        let join = ClientMessage::Join {
            id: None,
            token,
            auto_subscribe: Some(!self.publisher),
        };
        convene::send(&mut ws, &join).await?;
        self.ws = Some(ws);
        self.offer = offer;
        Ok(started)
    }

    async fn next(&mut self) -> Result<SignalIn> {
        loop {
            let Some(msg) = convene::next(self.ws()?).await? else {
                bail!("signaling socket closed");
            };
            match msg {
                ServerMessage::Joined { .. } => return Ok(SignalIn::Joined),
                ServerMessage::Answer {
                    target: PeerTarget::Publisher,
                    sdp,
                    ..
                } => return Ok(SignalIn::PublisherAnswer(sdp)),
                ServerMessage::Offer {
                    target: PeerTarget::Subscriber,
                    sdp,
                    ..
                } => return Ok(SignalIn::SubscriberOffer(sdp)),
                ServerMessage::Error { code, message, .. } => bail!("signaling error {code}: {message}"),
                ServerMessage::Removed { reason } => bail!("removed: {reason}"),
                _ => {}
            }
        }
    }
}
