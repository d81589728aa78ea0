//! The recorder thread: owns the open recordings and writes their files, so file IO never runs
//! on a media worker.
//!
//! Media workers send packets with [`RecorderTx::packet`], which never blocks: when
//! [`RecorderTx`]'s bound of queued packets is reached the packet is dropped and counted.
//! Start/stop and track ends use [`RecorderTx::control`] on the same queue (unbounded, they
//! are few), so they stay ordered with the packets around them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::recording::Recording;
use crate::{RtpIn, TrackMeta};

/// Packets queued towards the recorder thread before further ones are dropped (~10 s of a
/// camera and a microphone).
pub const DEFAULT_QUEUE: usize = 4096;

/// What the recorder thread is told.
#[derive(Debug)]
pub enum Input {
    /// Opens a recording of `room` in `dir`.
    Start {
        recording_id: String,
        room: String,
        dir: PathBuf,
        /// Unix time (ms), for the manifest.
        started_at_ms: i64,
        at: Instant,
    },
    /// One packet of a recorded track.
    Packet {
        room: String,
        track: Arc<TrackMeta>,
        pkt: RtpIn,
        /// When the SFU received it.
        at: Instant,
    },
    /// A recorded track went away: its file is closed.
    TrackEnded { room: String, track_id: String },
    /// Finalizes the room's recording; the result also goes to `reply`.
    Stop {
        room: String,
        at: Instant,
        reply: Option<oneshot::Sender<Finished>>,
    },
    /// Answered once everything queued before it is done (shutdown waits on it).
    Sync { reply: oneshot::Sender<()> },
}

/// A recording that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub recording_id: String,
    pub room: String,
    /// Wall-clock length (ms).
    pub duration_ms: u64,
    /// Why it failed, if it did (files may still be partly usable).
    pub error: Option<String>,
}

/// The sending side, cheap to clone; held by every media worker.
#[derive(Debug, Clone)]
pub struct RecorderTx {
    tx: mpsc::Sender<Input>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    capacity: usize,
}

impl RecorderTx {
    /// Queues a packet unless `capacity` packets are already waiting (then it is dropped and
    /// counted). Never blocks.
    pub fn packet(&self, input: Input) {
        if self.queued.load(Ordering::Relaxed) >= self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(input).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a control message (start, stop, track end); these are never dropped.
    pub fn control(&self, input: Input) {
        if self.tx.send(input).is_err() {
            tracing::warn!("recorder thread gone; control message lost");
        }
    }

    /// Packets dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the recorder thread. Every finished recording (stopped, room ended, or closed when
/// all senders are gone) is reported on `finished`. The thread ends when every [`RecorderTx`]
/// is dropped, after finalizing what is still open; join the handle to wait for that.
pub fn spawn(
    capacity: usize,
    finished: tokio_mpsc::UnboundedSender<Finished>,
) -> std::io::Result<(RecorderTx, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let handle = {
        let queued = queued.clone();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || run(&rx, &queued, &finished))?
    };
    let tx = RecorderTx {
        tx,
        queued,
        dropped: Arc::new(AtomicU64::new(0)),
        capacity,
    };
    Ok((tx, handle))
}

struct Open {
    recording_id: String,
    recording: Recording,
}

fn run(rx: &mpsc::Receiver<Input>, queued: &AtomicUsize, finished: &tokio_mpsc::UnboundedSender<Finished>) {
    let mut open: HashMap<String, Open> = HashMap::new();
    while let Ok(input) = rx.recv() {
        match input {
            Input::Start {
                recording_id,
                room,
                dir,
                started_at_ms,
                at,
            } => match Recording::create(&dir, &recording_id, &room, started_at_ms, at) {
                Ok(recording) => {
                    if let Some(old) = open.insert(
                        room.clone(),
                        Open {
                            recording_id,
                            recording,
                        },
                    ) {
                        close(old, room.clone(), at, None, finished);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start recording");
                    let _ = finished.send(Finished {
                        recording_id,
                        room,
                        duration_ms: 0,
                        error: Some(e.to_string()),
                    });
                }
            },
            Input::Packet { room, track, pkt, at } => {
                queued.fetch_sub(1, Ordering::Relaxed);
                if let Some(o) = open.get_mut(&room) {
                    o.recording.packet(&track, &pkt, at);
                }
            }
            Input::TrackEnded { room, track_id } => {
                if let Some(o) = open.get_mut(&room) {
                    o.recording.end_track(&track_id);
                }
            }
            Input::Stop { room, at, reply } => {
                if let Some(o) = open.remove(&room) {
                    close(o, room, at, reply, finished);
                }
            }
            Input::Sync { reply } => {
                let _ = reply.send(());
            }
        }
    }
    let now = Instant::now();
    for (room, o) in open.drain() {
        close(o, room, now, None, finished);
    }
}

fn close(
    o: Open,
    room: String,
    at: Instant,
    reply: Option<oneshot::Sender<Finished>>,
    finished: &tokio_mpsc::UnboundedSender<Finished>,
) {
    let (duration_ms, error) = match o.recording.finish(at) {
        Ok(d) => (d, None),
        Err(e) => (0, Some(e.to_string())),
    };
    let done = Finished {
        recording_id: o.recording_id,
        room,
        duration_ms,
        error,
    };
    if let Some(reply) = reply {
        let _ = reply.send(done.clone());
    }
    let _ = finished.send(done);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MediaKind;
    use crate::recording::read_manifest;

    #[test]
    fn packets_beyond_the_bound_are_dropped_and_stop_finalizes() {
        let dir = tempfile::tempdir().expect("tmp");
        let (done_tx, mut done_rx) = tokio_mpsc::unbounded_channel();
        let (tx, handle) = spawn(2, done_tx).expect("spawn");
        let t0 = Instant::now();
        tx.control(Input::Start {
            recording_id: "RE_1".into(),
            room: "RM_1".into(),
            dir: dir.path().join("RE_1"),
            started_at_ms: 0,
            at: t0,
        });
        let track = Arc::new(TrackMeta {
            track_id: "TR_1".into(),
            participant_id: "PA_1".into(),
            participant_name: "Ada".into(),
            kind: MediaKind::Audio,
            source: "microphone".into(),
            codec: "opus".into(),
        });
        for i in 0..1000u32 {
            tx.packet(Input::Packet {
                room: "RM_1".into(),
                track: track.clone(),
                pkt: RtpIn {
                    seq: u64::from(i),
                    timestamp: i * 960,
                    marker: false,
                    payload: vec![31 << 3, 0].into(),
                },
                at: t0,
            });
        }
        let (reply, answer) = oneshot::channel();
        tx.control(Input::Stop {
            room: "RM_1".into(),
            at: t0,
            reply: Some(reply),
        });
        let finished = answer.blocking_recv().expect("reply");
        assert_eq!(finished.recording_id, "RE_1");
        assert_eq!(finished.error, None);
        assert_eq!(done_rx.blocking_recv(), Some(finished));
        // A bound of 2 against a burst of 1000: most were dropped, some were written.
        assert!(tx.dropped() > 0 && tx.dropped() < 1000, "{}", tx.dropped());
        let m = read_manifest(&dir.path().join("RE_1")).expect("manifest");
        assert_eq!(m.tracks.len(), 1);
        drop(tx);
        handle.join().expect("thread ends when senders are gone");
    }
}
