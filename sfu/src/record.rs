//! The recording tap: for a recorded room, the engine hands each publisher RTP packet of one
//! layer per track to the driver ([`RecordOutput`]), which queues it for the recorder thread
//! (`convene_recorder::thread`) without waiting. Nothing here touches a file.
//!
//! Per track the tap records one simulcast layer: the highest seen (`q` < `l` < `m` < `h` <
//! `f`, the names browsers use). Another layer takes over only at one of its keyframes: a higher
//! one, any one while no keyframe was recorded yet, or any one once the recorded layer has been
//! silent for [`STALE`] (the publisher paused it). Sequence numbers and timestamps are rewritten
//! across switches ([`SeqTsRewriter`]) so the recorder sees one continuous stream. A video track
//! asks for a keyframe (throttled with the subscribers' requests) until one is recorded: when
//! recording starts, when a track appears mid-way, when its layer went quiet.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_recorder::{MediaKind, RtpIn, TrackMeta};
use str0m::format::{Codec, PayloadParams};
use str0m::media::Rid;
use str0m::rtp::RtpPacket;

use crate::engine::EngineOutput;
use crate::keyframe;
use crate::rewrite::{InPacket, SeqTsRewriter};
use crate::types::{RoomId, TrackId, TrackInfo, TrackKind};

/// A recorded layer silent this long (the publisher paused it) gives way to another.
const STALE: Duration = Duration::from_secs(1);

/// What the engine hands the driver for the recorder thread.
#[derive(Debug)]
pub enum RecordOutput {
    /// One packet of a recorded track, as received at `at`.
    Packet {
        room: RoomId,
        track: Arc<TrackMeta>,
        pkt: RtpIn,
        at: Instant,
    },
    /// A recorded track went away.
    TrackEnded { room: RoomId, track: TrackId },
    /// The room emptied while recorded: the recording ends.
    RoomEnded { room: RoomId },
}

/// The publisher packet being forwarded, with what the engine knows about it.
pub(crate) struct Tapped<'a> {
    pub(crate) room: &'a RoomId,
    pub(crate) publisher_name: &'a str,
    pub(crate) track: &'a TrackInfo,
    pub(crate) rid: Option<Rid>,
    pub(crate) params: &'a PayloadParams,
    pub(crate) pkt: &'a RtpPacket,
}

struct TrackTap {
    meta: Arc<TrackMeta>,
    /// The recorded layer, once one delivered.
    layer: Option<Option<Rid>>,
    awaiting_keyframe: bool,
    rewriter: SeqTsRewriter,
    /// When the recorded layer last delivered.
    last: Instant,
}

struct RoomTap {
    recording_id: String,
    tracks: HashMap<TrackId, TrackTap>,
}

/// Which rooms are recorded, and per recorded track its layer and stream continuity.
#[derive(Default)]
pub(crate) struct RecordTap {
    rooms: HashMap<RoomId, RoomTap>,
}

/// Rank of a simulcast layer by its rid; no rid (no simulcast) is the only layer.
fn rank(rid: Option<Rid>) -> usize {
    let Some(rid) = rid else {
        return 0;
    };
    ["q", "l", "m", "h", "f"]
        .iter()
        .position(|r| **r == *rid)
        .map_or(1, |p| p + 2)
}

fn codec_name(codec: Codec) -> Option<&'static str> {
    match codec {
        Codec::Opus => Some("opus"),
        Codec::Vp8 => Some("vp8"),
        Codec::Vp9 => Some("vp9"),
        _ => None,
    }
}

impl TrackTap {
    /// Whether a packet of layer `rid` (starting a keyframe or not, received at `now`) is
    /// recorded; switches the recorded layer when it should.
    fn admit(&mut self, rid: Option<Rid>, keyframe: bool, now: Instant) -> bool {
        match self.layer {
            Some(layer) if layer == rid => {}
            // Another layer takes over at its keyframe when it is higher, when the recorded one
            // has not delivered a keyframe yet (the keyframe request goes to the forwarded
            // layer, which may be this one), or when the recorded one went quiet. Audio has no
            // layers. Keyframes are only asked for when nothing usable comes otherwise.
            Some(layer) => {
                let stale = now.saturating_duration_since(self.last) >= STALE;
                let wanted = stale || self.awaiting_keyframe || rank(rid) > rank(layer);
                if !(wanted && keyframe) {
                    self.awaiting_keyframe |= stale;
                    return false;
                }
                self.layer = Some(rid);
                self.rewriter.switch_source();
            }
            None => self.layer = Some(rid),
        }
        self.last = now;
        if keyframe {
            self.awaiting_keyframe = false;
        }
        true
    }
}

impl RecordTap {
    /// The recording running in `room`, if any.
    pub(crate) fn active(&self, room: &RoomId) -> Option<&str> {
        self.rooms.get(room).map(|r| r.recording_id.as_str())
    }

    /// Starts tapping `room`; `false` if it is already recorded.
    pub(crate) fn start(&mut self, room: &RoomId, recording_id: &str) -> bool {
        if self.rooms.contains_key(room) {
            return false;
        }
        self.rooms.insert(
            room.clone(),
            RoomTap {
                recording_id: recording_id.to_owned(),
                tracks: HashMap::new(),
            },
        );
        true
    }

    /// Stops tapping `room`; returns the recording id it had.
    pub(crate) fn stop(&mut self, room: &RoomId) -> Option<String> {
        self.rooms.remove(room).map(|r| r.recording_id)
    }

    /// Hands a packet to the recorder if its room is recorded and it belongs to the recorded
    /// layer. Returns whether the track needs a keyframe.
    pub(crate) fn packet(&mut self, t: &Tapped<'_>, out: &mut VecDeque<EngineOutput>) -> bool {
        let Some(room) = self.rooms.get_mut(t.room) else {
            return false;
        };
        let Some(codec) = codec_name(t.params.spec().codec) else {
            return false; // H.264, AV1, …: not recorded (see recorder/README.md)
        };
        let video = t.track.kind == TrackKind::Video;
        let tap = room.tracks.entry(t.track.id.clone()).or_insert_with(|| TrackTap {
            meta: Arc::new(TrackMeta {
                track_id: t.track.id.to_string(),
                participant_id: t.track.participant.to_string(),
                participant_name: t.publisher_name.to_owned(),
                kind: if video { MediaKind::Video } else { MediaKind::Audio },
                source: t.track.source.as_str().to_owned(),
                codec: codec.to_owned(),
            }),
            layer: None,
            awaiting_keyframe: video,
            rewriter: SeqTsRewriter::new(t.params.spec().clock_rate.get(), 0, 0),
            last: t.pkt.timestamp,
        });
        let keyframe = video && keyframe::inspect(t.params.spec().codec, &t.pkt.payload).keyframe_start;
        if !tap.admit(t.rid, keyframe, t.pkt.timestamp) {
            return tap.awaiting_keyframe;
        }
        let Some((seq, timestamp)) = tap.rewriter.rewrite(InPacket {
            ssrc: *t.pkt.header.ssrc,
            seq: *t.pkt.seq_no,
            ts: t.pkt.header.timestamp,
            now: t.pkt.timestamp,
        }) else {
            return tap.awaiting_keyframe;
        };
        out.push_back(EngineOutput::Record(RecordOutput::Packet {
            room: t.room.clone(),
            track: tap.meta.clone(),
            pkt: RtpIn {
                seq,
                timestamp,
                marker: t.pkt.header.marker,
                payload: t.pkt.payload.clone(),
            },
            at: t.pkt.timestamp,
        }));
        tap.awaiting_keyframe
    }

    /// A track went away: its file closes.
    pub(crate) fn track_ended(&mut self, room: &RoomId, track: &TrackId, out: &mut VecDeque<EngineOutput>) {
        if let Some(r) = self.rooms.get_mut(room)
            && r.tracks.remove(track).is_some()
        {
            out.push_back(EngineOutput::Record(RecordOutput::TrackEnded {
                room: room.clone(),
                track: track.clone(),
            }));
        }
    }

    /// The room emptied: its recording ends.
    pub(crate) fn room_ended(&mut self, room: &RoomId, out: &mut VecDeque<EngineOutput>) {
        if self.rooms.remove(room).is_some() {
            out.push_back(EngineOutput::Record(RecordOutput::RoomEnded { room: room.clone() }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_vp8_and_vp9_are_recorded() {
        assert_eq!(codec_name(Codec::Opus), Some("opus"));
        assert_eq!(codec_name(Codec::Vp8), Some("vp8"));
        assert_eq!(codec_name(Codec::Vp9), Some("vp9"));
        assert_eq!(codec_name(Codec::H264), None);
    }

    #[test]
    fn layers_rank_by_browser_rid_names() {
        let r = |s: &str| Some(Rid::from(s));
        assert!(rank(r("f")) > rank(r("h")));
        assert!(rank(r("h")) > rank(r("q")));
        assert!(rank(r("h")) > rank(r("m")) && rank(r("m")) > rank(r("l")));
        assert!(rank(r("x")) < rank(r("q")));
        assert_eq!(rank(None), 0);
    }

    #[test]
    fn the_recorded_layer_moves_up_at_keyframes_and_off_a_paused_layer() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (q, h, f) = (Some(Rid::from("q")), Some(Rid::from("h")), Some(Rid::from("f")));
        let mut tap = TrackTap {
            meta: Arc::new(TrackMeta {
                track_id: "TR_1".into(),
                participant_id: "PA_1".into(),
                participant_name: "Ada".into(),
                kind: MediaKind::Video,
                source: "camera".into(),
                codec: "vp8".into(),
            }),
            layer: None,
            awaiting_keyframe: true,
            rewriter: SeqTsRewriter::new(90_000, 0, 0),
            last: t0,
        };
        // The first layer seen is recorded; a keyframe on another layer is taken while none came yet.
        assert!(tap.admit(h, false, at(0)));
        assert!(!tap.admit(q, false, at(10)));
        assert!(tap.admit(q, true, at(20)), "the requested keyframe came on q");
        assert!(!tap.awaiting_keyframe);
        // Higher layers take over at their keyframes only; lower ones never while q delivers.
        assert!(!tap.admit(h, false, at(30)));
        assert!(tap.admit(q, false, at(40)));
        assert!(tap.admit(h, true, at(50)));
        assert!(!tap.admit(q, true, at(60)));
        assert!(tap.admit(f, true, at(70)));
        assert!(!tap.admit(h, false, at(80)));
        // f goes quiet: after a second, the next keyframe on any layer takes over; until then a
        // keyframe is wanted.
        assert!(!tap.admit(h, false, at(1100)));
        assert!(tap.awaiting_keyframe);
        assert!(tap.admit(q, true, at(1150)));
        assert!(!tap.awaiting_keyframe);
        assert_eq!(tap.layer, Some(q));
    }
}
