// Convene client SDK: one meeting room over the `/ws/signal` WebSocket.
//
// Like the SFU, each participant has two peer connections: the *publisher* carries our own
// media (we offer, the server answers) and the *subscriber* carries everyone else's (the
// server offers, we answer; it also opens the `convene-data` channel). The server is ICE-lite
// and lists its candidates in every SDP, so trickling ours is a courtesy.
//
//   const room = await Room.join({ url, token });
//   room.addEventListener('track', e => show(e.detail.track, room.mediaTrack(e.detail.track.id)));
//   await room.publish({ audio: true, video: true });
//   await room.setMuted('microphone', true); await room.startScreenShare(); await room.leave();
//
// Events (`e.detail`): participant_joined / participant_left {participant}, track {track} (a
// remote track whose media arrived), track_updated {track}, track_removed {track},
// data {participantId, participant, payload: Uint8Array} (a data channel message from someone else),
// media_state {target, connected}, speakers {speakers: [{participant, level}]} (who speaks now,
// loudest first; ids include our own), connection_quality {updates: [{participant, quality, loss,
// rtt_ms, jitter_ms, bitrate_kbps}]} (quality: excellent | good | poor | lost), reconnecting,
// reconnected, closed {reason}, error {code, message}.
//
// Simulcast: the camera goes out in three encodings (rid q/h/f: 1/4, 1/2 and full size), a
// screen share in two (h/f). The SFU forwards each receiver the one that fits how it shows the
// track (`watchElement` reports an element's size and visibility, `setTrackSettings` sets it by
// hand) and its bandwidth, and tells us (`layers`) which encodings nobody needs, which we pause.

// Camera capture size: large enough for three simulcast layers (Chromium drops layers below
// about 320x180).
const CAMERA = { width: { ideal: 1280 }, height: { ideal: 720 } };
const ENCODINGS = {
  camera: [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { rid: 'f', maxBitrate: 1_500_000 },
  ],
  screen: [
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { rid: 'f', maxBitrate: 2_500_000 },
  ],
};

export class SignalError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Room extends EventTarget {
  /** The caller: {id, name}. */
  me = null;
  /** Everyone else: id → {id, name, tracks: Map(track id → {id, participantId, kind, source, muted})}. */
  participants = new Map();
  /** Our own media: source → {source, track, transceiver, muted}. */
  local = new Map();
  /** Who speaks now, loudest first: participant ids (ours included). */
  speakers = [];
  /** Connection quality by participant id (ours included): {quality, loss, rtt_ms, jitter_ms, bitrate_kbps}. */
  quality = new Map();
  closed = false;

  #url;
  #ws = null;
  #ready = false; // joined or resumed on the current socket
  #outbox = [];
  #pending = new Map(); // request id → {resolve, reject}
  #nextId = 0;
  #sessionToken = null;
  #graceMs = 15000;
  #resuming = false;
  #pub = null;
  #sub = null;
  #subMids = new Map(); // subscriber mid → {mid, track_id, participant_id}
  #media = new Map(); // remote track id → MediaStreamTrack
  #channel = null; // the subscriber's `convene-data` channel
  #pubChain = Promise.resolve();
  #layerChain = Promise.resolve();
  #subChain = Promise.resolve();
  #ice;

  constructor(url, ice) {
    super();
    this.#url = url;
    this.#ice = ice;
  }

  /**
   * Connects and joins with a join token from `POST /api/v1/rooms/{id}/join`.
   * `ice`: `'all'` (default), `'relay'` (media only through the TURN relay), `'relay-udp'` or
   * `'relay-tcp'` (only through TURN over UDP, or over TCP and TLS), for networks that block UDP
   * and for diagnosing them.
   */
  static async join({ url, token, autoSubscribe = true, ice = 'all' }) {
    const room = new Room(url, ice);
    await room.#open();
    try {
      room.#onJoined(await room.#request({ type: 'join', token, auto_subscribe: autoSubscribe }, true));
    } catch (e) {
      room.#close(e.code ?? 'join_failed');
      throw e;
    }
    return room;
  }

  /** The media of a remote track, once the subscriber connection carries it. */
  mediaTrack(trackId) {
    return this.#media.get(trackId) ?? null;
  }

  /** Publishes the camera and/or microphone (one getUserMedia prompt). */
  async publish({ audio = true, video = true } = {}) {
    audio &&= !this.local.has('microphone');
    video &&= !this.local.has('camera');
    if (!audio && !video) return;
    const stream = await navigator.mediaDevices.getUserMedia({
      audio,
      video: video && CAMERA,
    });
    for (const track of stream.getTracks()) {
      this.#addLocal(track.kind === 'audio' ? 'microphone' : 'camera', track, stream);
    }
    await this.#negotiate();
  }

  /** Mutes or unmutes the microphone (or any source): others stop receiving it. */
  async setMuted(source, muted) {
    const t = this.local.get(source);
    if (!t || t.muted === muted) return;
    t.muted = muted;
    if (t.track) t.track.enabled = !muted;
    this.#changed();
    await this.#sendMuted(t);
  }

  /** Turns the camera off (releasing the device) or back on. */
  async setCameraEnabled(enabled) {
    const t = this.local.get('camera');
    if (!t) {
      if (enabled) await this.publish({ audio: false, video: true });
      return;
    }
    if (!t.muted === enabled) return;
    if (enabled) {
      const stream = await navigator.mediaDevices.getUserMedia({ video: CAMERA });
      t.track = stream.getVideoTracks()[0];
      await t.transceiver.sender.replaceTrack(t.track);
    } else {
      t.track?.stop();
      t.track = null;
      await t.transceiver.sender.replaceTrack(null);
    }
    t.muted = !enabled;
    this.#changed();
    await this.#sendMuted(t);
  }

  /** Shares a screen (or window) as its own video track. */
  async startScreenShare({ audio = false } = {}) {
    if (this.local.has('screen')) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio });
    for (const track of stream.getTracks()) {
      const source = track.kind === 'audio' ? 'screen_audio' : 'screen';
      this.#addLocal(source, track, stream);
      // The browser's own "Stop sharing" button ends the track.
      track.addEventListener('ended', () => this.stopScreenShare().catch(e => this.#error(e)));
    }
    await this.#negotiate();
  }

  async stopScreenShare() {
    const shared = ['screen', 'screen_audio'].map(s => this.local.get(s)).filter(Boolean);
    if (!shared.length) return;
    for (const t of shared) {
      this.local.delete(t.source);
      t.track?.stop();
      // An inactive m-line unpublishes the track; m-lines are never reused.
      t.transceiver.direction = 'inactive';
    }
    this.#changed();
    await this.#negotiate();
  }

  /**
   * Tells the SFU how a remote track is shown: `width`/`height` in device pixels (it forwards
   * the smallest simulcast layer covering them), `enabled: false` when it is not shown at all
   * (no video is sent), `quality`: 'low' | 'medium' | 'high' caps the layer.
   */
  setTrackSettings(trackId, { width, height, enabled = true, quality } = {}) {
    const m = { type: 'track_settings', track_id: trackId, enabled };
    if (width > 0 && height > 0) {
      m.width = Math.round(width);
      m.height = Math.round(height);
    }
    if (quality) m.quality = quality;
    return this.#request(m);
  }

  /**
   * Keeps the SFU told about the element showing remote video track `trackId`: its size in
   * device pixels as it changes, and whether it is visible. Returns a function that stops.
   */
  watchElement(trackId, el) {
    let timer = null;
    let visible = true;
    let last = '';
    const report = () => {
      clearTimeout(timer);
      // Debounced: a layout change resizes many tiles at once.
      timer = setTimeout(() => {
        const r = el.getBoundingClientRect();
        const dpr = window.devicePixelRatio || 1;
        const shown = visible && r.width > 0 && r.height > 0;
        const settings = shown ? { width: r.width * dpr, height: r.height * dpr } : { enabled: false };
        const key = JSON.stringify(settings);
        if (key === last || this.closed) return;
        last = key;
        this.setTrackSettings(trackId, settings).catch(() => { last = ''; });
      }, 100);
    };
    const resize = new ResizeObserver(report);
    resize.observe(el);
    const intersection = new IntersectionObserver(entries => {
      visible = entries[entries.length - 1].isIntersecting;
      report();
    });
    intersection.observe(el);
    return () => {
      resize.disconnect();
      intersection.disconnect();
      clearTimeout(timer);
    };
  }

  /** Sends bytes (or a string, as UTF-8) to everyone else in the room over the data channel. */
  sendData(data) {
    if (this.#channel?.readyState !== 'open') throw new SignalError('data_unavailable', 'the data channel is not open yet');
    this.#channel.send(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  /** Inbound media per remote track: what the subscriber connection received and decoded. */
  async stats() {
    if (!this.#sub) return [];
    const out = [];
    for (const s of (await this.#sub.getStats()).values()) {
      if (s.type !== 'inbound-rtp') continue;
      const mid = this.#subMids.get(s.mid);
      const track = mid && this.participants.get(mid.participant_id)?.tracks.get(mid.track_id);
      out.push({
        mid: s.mid,
        kind: s.kind,
        trackId: mid?.track_id ?? null,
        participantId: mid?.participant_id ?? null,
        source: track?.source ?? null,
        packetsReceived: s.packetsReceived ?? 0,
        framesDecoded: s.framesDecoded ?? 0,
        frameWidth: s.frameWidth ?? 0,
        frameHeight: s.frameHeight ?? 0,
      });
    }
    return out;
  }

  /** The candidate types of each connection's selected pair, e.g. `{publisher: 'relay/udp', ...}`. */
  async transport() {
    const out = {};
    for (const [name, pc] of [['publisher', this.#pub], ['subscriber', this.#sub]]) {
      if (!pc) continue;
      // The transport's selected pair: an earlier pair Chrome moved away from stays
      // "nominated" and "succeeded" in the stats, so those flags do not tell which one is used.
      const stats = await pc.getStats();
      for (const t of stats.values()) {
        if (t.type !== 'transport' || !t.selectedCandidatePairId) continue;
        const local = stats.get(stats.get(t.selectedCandidatePairId)?.localCandidateId);
        if (local) out[name] = `${local.candidateType}/${local.relayProtocol ?? local.protocol}`;
      }
    }
    return out;
  }

  /** Leaves the room for good; the others see us go at once. */
  async leave() {
    if (this.closed) return;
    try {
      if (this.#ready) await this.#request({ type: 'leave' });
    } catch {
      // Leaving anyway.
    }
    this.#close('left');
  }

  // --- signaling ------------------------------------------------------------------------

  #open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.#url);
      this.#ws = ws;
      this.#ready = false;
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new SignalError('connection_failed', 'could not reach the signaling server'));
      ws.onmessage = e => this.#onMessage(JSON.parse(e.data));
      ws.onclose = () => {
        if (ws !== this.#ws) return;
        this.#ready = false;
        // Replies to what was in flight are lost with the socket.
        for (const { reject } of this.#pending.values()) reject(new SignalError('disconnected', 'connection lost'));
        this.#pending.clear();
        if (!this.closed && this.#sessionToken && !this.#resuming) this.#resume();
      };
    });
  }

  /** Sends a request and resolves with its reply; `early` requests (join, resume) skip the queue. */
  #request(message, early = false) {
    const id = String(++this.#nextId);
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#send({ ...message, id }, early);
    });
  }

  #send(message, early = false) {
    if (early || this.#ready) this.#ws.send(JSON.stringify(message));
    else this.#outbox.push(message);
  }

  #onMessage(m) {
    const waiter = m.id !== undefined && this.#pending.get(m.id);
    if (waiter) {
      this.#pending.delete(m.id);
      if (m.type === 'error') waiter.reject(new SignalError(m.code, m.message));
      else waiter.resolve(m);
      return;
    }
    switch (m.type) {
      case 'offer':
        this.#subChain = this.#subChain.then(() => this.#answer(m)).catch(e => this.#error(e));
        break;
      case 'participant_joined':
        this.#addParticipant(m.participant);
        break;
      case 'participant_left':
        this.#removeParticipant(m.participant_id);
        break;
      case 'track_published':
      case 'track_updated':
        this.#setTrack(m.track);
        break;
      case 'track_unpublished':
        this.#removeTrack(m.participant_id, m.track_id);
        break;
      case 'layers':
        this.#layerChain = this.#layerChain.then(() => this.#setActiveLayers(m.mid, m.active)).catch(e => this.#error(e));
        break;
      case 'media_state':
        this.#emit('media_state', { target: m.target, connected: m.connected });
        break;
      case 'speakers':
        this.speakers = m.speakers.map(s => s.participant);
        this.#emit('speakers', { speakers: m.speakers });
        break;
      case 'connection_quality':
        for (const u of m.updates) this.quality.set(u.participant, u);
        this.#emit('connection_quality', { updates: m.updates });
        break;
      case 'recording':
        // Sent at start and stop, and right after joining a room that is being recorded.
        this.recording = m.active ? m.recording_id : null;
        this.#emit('recording', { active: m.active, recordingId: m.recording_id });
        break;
      case 'removed':
        this.#close(m.reason);
        break;
      case 'error':
        this.#emit('error', { code: m.code, message: m.message });
        break;
    }
  }

  #onJoined(joined) {
    this.me = joined.participant;
    this.#sessionToken = joined.session_token;
    this.#graceMs = joined.resume_grace_s * 1000;
    const config = { iceServers: joined.ice_servers, bundlePolicy: 'max-bundle' };
    if (this.#ice !== 'all') {
      config.iceTransportPolicy = 'relay';
      const only = { 'relay-udp': 'udp', 'relay-tcp': 'tcp' }[this.#ice];
      if (only) {
        config.iceServers = joined.ice_servers
          .map(s => ({ ...s, urls: s.urls.filter(u => u.startsWith('turn') && u.endsWith(`transport=${only}`)) }))
          .filter(s => s.urls.length > 0);
      }
    }
    this.#pub = new RTCPeerConnection(config);
    this.#sub = new RTCPeerConnection(config);
    this.#trickle(this.#pub, 'publisher');
    this.#trickle(this.#sub, 'subscriber');
    this.#sub.ontrack = e => this.#onRemoteMedia(e.transceiver.mid, e.track);
    this.#sub.ondatachannel = e => {
      if (e.channel.label !== 'convene-data') return;
      this.#channel = e.channel;
      e.channel.binaryType = 'arraybuffer';
      e.channel.onmessage = m => this.#onData(m.data);
    };
    for (const p of joined.others) this.#addParticipant(p);
    this.#ready = true;
    this.#flush();
  }

  #flush() {
    const queued = this.#outbox.splice(0);
    for (const m of queued) this.#ws.send(JSON.stringify(m));
  }

  /** After a dropped socket: resume the session within its grace period, or give up. */
  async #resume() {
    this.#resuming = true;
    this.#emit('reconnecting', {});
    const deadline = Date.now() + this.#graceMs;
    try {
      for (let delay = 250; !this.closed && Date.now() < deadline; delay = Math.min(delay * 2, 2000)) {
        try {
          await this.#open();
          const resumed = await this.#request({ type: 'resume', session_token: this.#sessionToken }, true);
          this.#reconcile(resumed.others);
          this.#ready = true;
          this.#flush();
          this.#emit('reconnected', {});
          return;
        } catch (e) {
          if (e.code === 'session_expired') break;
          await new Promise(r => setTimeout(r, delay));
        }
      }
      this.#close('connection_lost');
    } finally {
      this.#resuming = false;
    }
  }

  /** Brings the roster in line with a fresh snapshot (events may have been missed). */
  #reconcile(others) {
    const present = new Set(others.map(p => p.id));
    for (const id of [...this.participants.keys()]) if (!present.has(id)) this.#removeParticipant(id);
    for (const p of others) {
      const known = this.participants.get(p.id);
      if (!known) {
        this.#addParticipant(p);
        continue;
      }
      const live = new Set(p.tracks.map(t => t.id));
      for (const id of [...known.tracks.keys()]) if (!live.has(id)) this.#removeTrack(p.id, id);
      for (const t of p.tracks) this.#setTrack(t);
    }
  }

  #close(reason) {
    if (this.closed) return;
    this.closed = true;
    this.#ready = false;
    for (const { reject } of this.#pending.values()) reject(new SignalError('closed', reason));
    this.#pending.clear();
    for (const t of this.local.values()) t.track?.stop();
    this.#pub?.close();
    this.#sub?.close();
    this.#ws?.close();
    this.#emit('closed', { reason });
  }

  // --- media ----------------------------------------------------------------------------

  #addLocal(source, track, stream) {
    const init = { direction: 'sendonly', streams: [stream] };
    if (ENCODINGS[source]) init.sendEncodings = ENCODINGS[source].map(e => ({ ...e }));
    const transceiver = this.#pub.addTransceiver(track, init);
    this.local.set(source, { source, track, transceiver, muted: false });
    this.#changed();
  }

  /** Offers the publisher connection; serialized, as offers must not overlap. */
  #negotiate() {
    const run = async () => {
      await this.#pub.setLocalDescription();
      // The mids exist now; declare what each carries before the server sees the offer.
      await Promise.all(
        [...this.local.values()].map(t =>
          this.#request({ type: 'track_info', mid: t.transceiver.mid, source: t.source, muted: t.muted }),
        ),
      );
      const answer = await this.#request({ type: 'offer', target: 'publisher', sdp: this.#pub.localDescription.sdp });
      await this.#pub.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    };
    this.#pubChain = this.#pubChain.catch(() => {}).then(run);
    return this.#pubChain;
  }

  /** Dynacast: keeps only the simulcast encodings someone receives. */
  async #setActiveLayers(mid, active) {
    const t = [...this.local.values()].find(l => l.transceiver.mid === mid);
    if (!t) return;
    const sender = t.transceiver.sender;
    const params = sender.getParameters();
    let changed = false;
    for (const e of params.encodings ?? []) {
      const on = !e.rid || active.includes(e.rid);
      if (e.active !== on) {
        e.active = on;
        changed = true;
      }
    }
    if (changed) await sender.setParameters(params);
  }

  async #sendMuted(t) {
    try {
      await this.#request({ type: 'mute', mid: t.transceiver.mid, muted: t.muted });
    } catch (e) {
      // Not published yet (the publisher connection is still coming up): declare it instead.
      if (e.code !== 'unknown_mid') throw e;
      await this.#request({ type: 'track_info', mid: t.transceiver.mid, source: t.source, muted: t.muted });
    }
  }

  async #answer(offer) {
    // The offer lists every mid that carries a track once it is applied.
    this.#subMids = new Map(offer.tracks.map(t => [t.mid, t]));
    await this.#sub.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    await this.#sub.setLocalDescription();
    await this.#request({ type: 'answer', target: 'subscriber', sdp: this.#sub.localDescription.sdp });
    const carried = new Set(offer.tracks.map(t => t.track_id));
    for (const [id, media] of [...this.#media]) {
      if (carried.has(id)) continue;
      this.#media.delete(id);
      const track = [...this.participants.values()].map(p => p.tracks.get(id)).find(Boolean);
      if (track) this.#emit('track_updated', { track });
      media.stop();
    }
  }

  /** The SFU frames relayed messages as [sender id length: u16 BE][sender id][payload]. */
  #onData(data) {
    if (typeof data === 'string') return; // the SFU relays binary frames only
    const bytes = new Uint8Array(data);
    const length = (bytes[0] << 8) | bytes[1];
    const participantId = new TextDecoder().decode(bytes.subarray(2, 2 + length));
    const payload = bytes.subarray(2 + length);
    this.#emit('data', { participantId, participant: this.participants.get(participantId) ?? null, payload });
  }

  #onRemoteMedia(mid, media) {
    const m = this.#subMids.get(mid);
    if (!m) return;
    this.#media.set(m.track_id, media);
    const track = this.participants.get(m.participant_id)?.tracks.get(m.track_id);
    if (track) this.#emit('track', { track });
  }

  #trickle(pc, target) {
    pc.onicecandidate = e => {
      // The server learns our addresses from ICE checks; a refused candidate is harmless.
      if (e.candidate?.candidate) this.#send({ type: 'candidate', target, candidate: e.candidate.candidate });
    };
  }

  // --- roster ---------------------------------------------------------------------------

  #addParticipant(p) {
    if (p.id === this.me?.id) return;
    const participant = { id: p.id, name: p.name, tracks: new Map() };
    this.participants.set(p.id, participant);
    if (p.connection_quality) this.quality.set(p.id, p.connection_quality);
    this.#emit('participant_joined', { participant });
    for (const t of p.tracks) this.#setTrack(t);
  }

  #removeParticipant(id) {
    const participant = this.participants.get(id);
    if (!participant) return;
    for (const t of [...participant.tracks.keys()]) this.#removeTrack(id, t);
    this.participants.delete(id);
    this.quality.delete(id);
    this.speakers = this.speakers.filter(s => s !== id);
    this.#emit('participant_left', { participant });
  }

  #setTrack(t) {
    const participant = this.participants.get(t.participant_id);
    if (!participant) return; // our own, or someone we will hear about
    const known = participant.tracks.get(t.id);
    const track = { id: t.id, participantId: t.participant_id, kind: t.kind, source: t.source, muted: t.muted };
    participant.tracks.set(t.id, track);
    if (known) this.#emit('track_updated', { track });
    else if (this.#media.has(t.id)) this.#emit('track', { track });
  }

  #removeTrack(participantId, trackId) {
    const participant = this.participants.get(participantId);
    const track = participant?.tracks.get(trackId);
    if (!track) return;
    participant.tracks.delete(trackId);
    this.#media.delete(trackId);
    this.#emit('track_removed', { track });
  }

  // --- events ---------------------------------------------------------------------------

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Our own media changed (mute, camera, screen). */
  #changed() {
    this.#emit('local', {});
  }

  #error(e) {
    this.#emit('error', { code: e.code ?? 'client_error', message: e.message ?? String(e) });
  }
}
