//! The recording tap: for a recorded room, the engine hands each publisher RTP packet of one
//! layer per track to the driver ([`RecordOutput`]), which queues it for the recorder thread
//! (`convene_recorder::thread`) without waiting. Nothing here touches a file.
//!
//! Per track the tap records one simulcast layer, the highest seen so far (`q` < `l` < `m` <
//! `h` < `f`, the names browsers use), switching up only at a keyframe of the higher layer, and
//! rewrites sequence numbers and timestamps across switches ([`SeqTsRewriter`]) so the
//! recorder sees one continuous stream. A video track asks for a keyframe until its recorded
//! layer delivers one: when recording starts, when a track appears mid-way, after a switch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use convene_recorder::{MediaKind, RtpIn, TrackMeta};
use str0m::format::{Codec, PayloadParams};
use str0m::media::Rid;
use str0m::rtp::{RtpPacket, Vp8Descriptor};

use crate::engine::EngineOutput;
use crate::rewrite::{InPacket, SeqTsRewriter};
use crate::types::{RoomId, TrackId, TrackInfo, TrackKind};

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
        _ => None,
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
            return false; // VP9, H.264, …: not recorded (see recorder/README.md)
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
        });
        let keyframe = video && Vp8Descriptor::parse(&t.pkt.payload).is_ok_and(|d| d.starts_keyframe(&t.pkt.payload));
        match tap.layer {
            Some(layer) if layer == t.rid => {}
            // A higher layer takes over at its keyframe (audio has no layers).
            Some(layer) if rank(t.rid) > rank(layer) && keyframe => {
                tap.layer = Some(t.rid);
                tap.rewriter.switch_source();
            }
            Some(layer) => {
                if rank(t.rid) > rank(layer) {
                    tap.awaiting_keyframe = true;
                }
                return tap.awaiting_keyframe;
            }
            None => tap.layer = Some(t.rid),
        }
        if keyframe {
            tap.awaiting_keyframe = false;
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
    use super::rank;
    use str0m::media::Rid;

    #[test]
    fn layers_rank_by_browser_rid_names() {
        let r = |s: &str| Some(Rid::from(s));
        assert!(rank(r("f")) > rank(r("h")));
        assert!(rank(r("h")) > rank(r("q")));
        assert!(rank(r("h")) > rank(r("m")) && rank(r("m")) > rank(r("l")));
        assert!(rank(r("x")) < rank(r("q")));
        assert_eq!(rank(None), 0);
    }
}
