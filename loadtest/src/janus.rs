//! Janus 1.1's videoroom plugin over its HTTP API (`POST /janus…` requests, `GET
//! /janus/{session}` long polls for asynchronous events).
//!
//! A publisher joins with its offer (`joinandconfigure` + JSEP offer → JSEP answer). A
//! subscriber lists the room's publishers and subscribes to all their streams in one connection
//! (`join` as `subscriber` with `streams` → JSEP offer; `start` + JSEP answer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::signal::SignalIn;

static TRANSACTIONS: AtomicU64 = AtomicU64::new(1);

fn transaction() -> String {
    format!("t{}", TRANSACTIONS.fetch_add(1, Ordering::Relaxed))
}

/// A Janus server at `url` (`http://127.0.0.1:8088/janus`).
#[derive(Debug, Clone)]
pub struct Janus {
    url: String,
    http: reqwest::Client,
}

/// A session with one plugin handle.
#[derive(Debug, Clone)]
struct Handle {
    session: u64,
    handle: u64,
}

pub struct JanusParticipant {
    janus: Janus,
    room: u64,
    publisher: bool,
    handle: Option<Handle>,
    events: Option<mpsc::UnboundedReceiver<Result<SignalIn>>>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl Janus {
    pub fn new(url: &str) -> Janus {
        Janus {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Value> {
        body["transaction"] = json!(transaction());
        let res: Value = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .context("janus request")?
            .json()
            .await
            .context("janus reply")?;
        match res["janus"].as_str() {
            Some("success" | "ack") => Ok(res),
            _ => bail!("janus: {res}"),
        }
    }

    async fn attach(&self) -> Result<Handle> {
        let session = self.post("", json!({ "janus": "create" })).await?["data"]["id"]
            .as_u64()
            .context("session id")?;
        let handle = self
            .post(
                &format!("/{session}"),
                json!({ "janus": "attach", "plugin": "janus.plugin.videoroom" }),
            )
            .await?["data"]["id"]
            .as_u64()
            .context("handle id")?;
        Ok(Handle { session, handle })
    }

    /// A synchronous videoroom request; returns `plugindata.data`.
    async fn request(&self, h: &Handle, body: Value) -> Result<Value> {
        let res = self
            .post(
                &format!("/{}/{}", h.session, h.handle),
                json!({ "janus": "message", "body": body }),
            )
            .await?;
        let data = res["plugindata"]["data"].clone();
        if data.get("error").is_some() {
            bail!("videoroom: {data}");
        }
        Ok(data)
    }

    /// Creates a room for `publishers` publishers (Opus and VP8, no bitrate cap); returns its id.
    pub async fn create_room(&self, publishers: usize) -> Result<u64> {
        let h = self.attach().await?;
        let data = self
            .request(
                &h,
                json!({ "request": "create", "publishers": publishers.max(1), "audiocodec": "opus",
                        "videocodec": "vp8", "bitrate": 0, "notify_joining": false }),
            )
            .await?;
        let room = data["room"].as_u64().context("room id")?;
        self.destroy(&h).await;
        Ok(room)
    }

    async fn destroy(&self, h: &Handle) {
        let _ = self
            .post(&format!("/{}", h.session), json!({ "janus": "destroy" }))
            .await;
    }

    pub fn participant(&self, room: &str, publisher: bool) -> JanusParticipant {
        JanusParticipant {
            janus: self.clone(),
            room: room.parse().unwrap_or(0),
            publisher,
            handle: None,
            events: None,
            poller: None,
        }
    }

    /// Long-polls the session's events, turning the handle's into `SignalIn`s.
    async fn poll(self, h: Handle, tx: mpsc::UnboundedSender<Result<SignalIn>>) {
        loop {
            let res = self
                .http
                .get(format!("{}/{}?maxev=10", self.url, h.session))
                .send()
                .await;
            let events: Value = match res {
                Ok(r) => match r.json().await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                },
                Err(e) => {
                    let _ = tx.send(Err(e.into()));
                    return;
                }
            };
            let list = match events {
                Value::Array(list) => list,
                one => vec![one],
            };
            for ev in list {
                for msg in translate(&ev) {
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// What one Janus event means for a participant.
fn translate(ev: &Value) -> Vec<Result<SignalIn>> {
    let mut out = Vec::new();
    match ev["janus"].as_str() {
        Some("event") => {
            let data = &ev["plugindata"]["data"];
            if data.get("error").is_some() {
                out.push(Err(anyhow::anyhow!("videoroom: {data}")));
                return out;
            }
            if matches!(data["videoroom"].as_str(), Some("joined" | "attached")) {
                out.push(Ok(SignalIn::Joined));
            }
            match (ev["jsep"]["type"].as_str(), ev["jsep"]["sdp"].as_str()) {
                (Some("answer"), Some(sdp)) => out.push(Ok(SignalIn::PublisherAnswer(sdp.to_owned()))),
                (Some("offer"), Some(sdp)) => out.push(Ok(SignalIn::SubscriberOffer(sdp.to_owned()))),
                _ => {}
            }
        }
        Some("hangup") => out.push(Err(anyhow::anyhow!("janus hung up: {ev}"))),
        _ => {}
    }
    out
}

impl JanusParticipant {
    pub async fn join(&mut self, offer: Option<String>) -> Result<Instant> {
        let started = Instant::now();
        let h = self.janus.attach().await?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.poller = Some(tokio::task::spawn_local(self.janus.clone().poll(h.clone(), tx)));
        self.events = Some(rx);
        let path = format!("/{}/{}", h.session, h.handle);
        if self.publisher {
            let sdp = offer.context("a publisher needs an offer")?;
            self.janus
                .post(
                    &path,
                    json!({ "janus": "message",
                            "body": { "request": "joinandconfigure", "ptype": "publisher", "room": self.room },
                            "jsep": { "type": "offer", "sdp": sdp } }),
                )
                .await?;
        } else {
            let list = self
                .janus
                .request(&h, json!({ "request": "listparticipants", "room": self.room }))
                .await?;
            let streams: Vec<Value> = list["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["publisher"].as_bool() == Some(true))
                .map(|p| json!({ "feed": p["id"] }))
                .collect();
            self.janus
                .post(
                    &path,
                    json!({ "janus": "message",
                            "body": { "request": "join", "ptype": "subscriber", "room": self.room,
                                      "streams": streams } }),
                )
                .await?;
        }
        self.trickle_done(&h).await?;
        self.handle = Some(h);
        Ok(started)
    }

    pub async fn next(&mut self) -> Result<SignalIn> {
        let events = self.events.as_mut().context("not joined")?;
        events.recv().await.context("janus event stream ended")?
    }

    pub async fn answer(&mut self, sdp: String) -> Result<()> {
        let h = self.handle.clone().context("not joined")?;
        self.janus
            .post(
                &format!("/{}/{}", h.session, h.handle),
                json!({ "janus": "message", "body": { "request": "start" },
                        "jsep": { "type": "answer", "sdp": sdp } }),
            )
            .await?;
        self.trickle_done(&h).await
    }

    /// Our SDP carries all our candidates: without this Janus waits for trickled ones.
    async fn trickle_done(&self, h: &Handle) -> Result<()> {
        self.janus
            .post(
                &format!("/{}/{}", h.session, h.handle),
                json!({ "janus": "trickle", "candidate": { "completed": true } }),
            )
            .await
            .map(drop)
    }

    pub async fn leave(&mut self) {
        if let Some(p) = self.poller.take() {
            p.abort();
        }
        if let Some(h) = self.handle.take() {
            self.janus.destroy(&h).await;
        }
    }
}
