//! A participant's signaling session, which outlives any one WebSocket.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use convene_proto::signal::{Me, ServerMessage};
use convene_sfu::{Events, ParticipantEvent, ParticipantHandle};
use tokio::sync::mpsc;

use crate::{Signaling, convert};

/// Messages a session holds while no socket is attached; beyond this it ends.
const MAX_HELD: usize = 1024;
/// Messages queued for an attached socket; a socket further behind is detached.
pub(crate) const SOCKET_QUEUE: usize = 256;

#[derive(Default)]
struct Attachment {
    /// Boxed messages: a channel allocates its first 32 slots up front, which for the message
    /// itself (~160 B) was the largest part of an idle session.
    socket: Option<(u64, mpsc::Sender<Box<ServerMessage>>)>,
    generation: u64,
    held: VecDeque<ServerMessage>,
    ended: bool,
}

/// What the join token let the participant do beyond taking part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Standing {
    /// May moderate the room (the `admin` grant).
    pub(crate) host: bool,
    /// Invisible to others and unreported (recorders).
    pub(crate) hidden: bool,
}

pub(crate) struct Session {
    pub(crate) handle: ParticipantHandle,
    pub(crate) me: Me,
    pub(crate) standing: Standing,
    pub(crate) room: String,
    pub(crate) token_hash: String,
    attachment: Mutex<Attachment>,
    signaling: Weak<Signaling>,
}

/// A socket's hold on a session: its generation and what it must send first.
pub(crate) struct Attached {
    pub(crate) generation: u64,
    pub(crate) held: Vec<ServerMessage>,
    pub(crate) live: mpsc::Receiver<Box<ServerMessage>>,
}

impl Session {
    pub(crate) fn start(
        signaling: &Arc<Signaling>,
        handle: ParticipantHandle,
        events: Events,
        me: Me,
        standing: Standing,
        room: String,
        token_hash: String,
    ) -> Arc<Self> {
        let session = Arc::new(Self {
            handle,
            me,
            standing,
            room,
            token_hash,
            attachment: Mutex::new(Attachment::default()),
            signaling: Arc::downgrade(signaling),
        });
        tokio::spawn(pump(session.clone(), events));
        session
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Attachment> {
        self.attachment.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches a socket, replacing any other; `None` once the session has ended.
    pub(crate) fn attach(&self) -> Option<Attached> {
        let mut a = self.lock();
        if a.ended {
            return None;
        }
        a.generation += 1;
        let (tx, rx) = mpsc::channel(SOCKET_QUEUE);
        a.socket = Some((a.generation, tx));
        Some(Attached {
            generation: a.generation,
            held: a.held.drain(..).collect(),
            live: rx,
        })
    }

    /// The socket of `generation` is gone: hold events, and end the session unless a socket
    /// re-attaches within the grace period.
    pub(crate) fn detach(self: &Arc<Self>, generation: u64) {
        {
            let mut a = self.lock();
            if a.socket.as_ref().is_none_or(|(g, _)| *g != generation) {
                return;
            }
            a.socket = None;
        }
        let Some(signaling) = self.signaling.upgrade() else {
            return;
        };
        let grace = signaling.config.resume_grace;
        let session = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = {
                let a = session.lock();
                !a.ended && a.socket.is_none() && a.generation == generation
            };
            if expired {
                tracing::info!(room = %session.room, participant = %session.me.id, "resume grace expired");
                session.end().await;
            }
        });
    }

    fn deliver(&self, message: ServerMessage) -> bool {
        let mut a = self.lock();
        if let Some((_, tx)) = &a.socket {
            match tx.try_send(Box::new(message)) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => {
                    // Too slow or gone: dropping the sender closes the socket's queue, so the
                    // socket closes and its client resumes with what is held.
                    a.socket = None;
                    a.held.push_back(*m);
                }
            }
        } else {
            a.held.push_back(message);
        }
        a.held.len() <= MAX_HELD
    }

    /// Leaves the room (idempotent) and forgets the session.
    pub(crate) async fn end(&self) {
        {
            let mut a = self.lock();
            if a.ended {
                return;
            }
            a.ended = true;
            a.socket = None;
        }
        let signaling = self.signaling.upgrade();
        if let Some(signaling) = &signaling {
            signaling.forget(self);
        }
        // Leaving a room that already closed is not an error worth reporting.
        let last = self.handle.clone().leave().await.ok().flatten();
        if let Some(signaling) = signaling
            && !self.standing.hidden
        {
            if let Some(report) = last {
                signaling.report_quality(&self.room, &self.me.id, &report);
            }
            signaling.report_left(&self.room, &self.me.id).await;
        }
    }

    /// Ends the session after telling the attached client why.
    pub(crate) async fn remove(&self, reason: &str) {
        self.deliver(ServerMessage::Removed {
            reason: reason.to_owned(),
        });
        self.end().await;
    }
}

/// Forwards the SFU's events for this participant to whichever socket is attached.
async fn pump(session: Arc<Session>, mut events: Events) {
    while let Some(event) = events.recv().await {
        let event = *event;
        let removed = matches!(event, ParticipantEvent::Removed { .. });
        if let ParticipantEvent::QualityReport(report) = &event {
            if let Some(signaling) = session.signaling.upgrade()
                && !session.standing.hidden
            {
                signaling.report_quality(&session.room, &session.me.id, report);
            }
            continue;
        }
        let Some(message) = convert::event(event) else {
            continue;
        };
        if !session.deliver(message) {
            tracing::warn!(room = %session.room, participant = %session.me.id, "too many held events; ending session");
            break;
        }
        if removed {
            break;
        }
    }
    session.end().await;
}
