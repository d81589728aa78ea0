//! str0m's `chat` example SFU (built from the str0m crate's own source by `bench.sh`, not
//! committed) as a target: a client POSTs its SDP offer as JSON (`{"type":"offer","sdp":…}`)
//! over HTTPS with a self-signed certificate and gets the answer in the reply. The server then
//! forwards every track any client sends to every other client, adding it by renegotiation over
//! the client's data channel (the server's offer arrives as a channel message, the client answers
//! on the channel: see `Participant::on_channel_data` in `sfu.rs`). The whole server is one room.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Context, Result};
use str0m::change::{SdpAnswer, SdpOffer};

use crate::signal::SignalIn;

/// The example's HTTPS endpoint (`https://127.0.0.1:3000/`).
#[derive(Debug, Clone)]
pub struct Str0mChat {
    url: String,
    http: reqwest::Client,
}

pub struct ChatParticipant {
    chat: Str0mChat,
    events: VecDeque<SignalIn>,
}

impl Str0mChat {
    pub fn new(url: &str) -> Result<Str0mChat> {
        let http = reqwest::Client::builder()
            // The example serves the self-signed certificate of its source tree.
            .danger_accept_invalid_certs(true)
            .build()?;
        Ok(Str0mChat {
            url: url.to_owned(),
            http,
        })
    }

    pub fn participant(&self) -> ChatParticipant {
        ChatParticipant {
            chat: self.clone(),
            events: VecDeque::new(),
        }
    }
}

impl ChatParticipant {
    /// POSTs the offer (a publisher's media, a subscriber's data channel); the answer is the
    /// next event after `Joined` (a [`SignalIn::PublisherAnswer`]: the answer to the offer
    /// given to `join`, whichever connection made it).
    pub async fn join(&mut self, offer: Option<String>) -> Result<Instant> {
        let started = Instant::now();
        let offer = SdpOffer::from_sdp_string(&offer.context("str0m chat: every client offers")?)?;
        let answer: SdpAnswer = self
            .chat
            .http
            .post(&self.chat.url)
            .json(&offer)
            .send()
            .await
            .context("str0m chat: POST offer")?
            .error_for_status()?
            .json()
            .await
            .context("str0m chat: answer")?;
        let sdp = answer.to_sdp_string();
        self.events.push_back(SignalIn::Joined);
        self.events.push_back(SignalIn::PublisherAnswer(sdp));
        Ok(started)
    }

    /// The next event; after the answer there are none (renegotiation is in-band).
    pub async fn next(&mut self) -> Result<SignalIn> {
        match self.events.pop_front() {
            Some(e) => Ok(e),
            None => std::future::pending().await,
        }
    }
}
