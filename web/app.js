// The Convene web app: sign in, teams and rooms, and the meeting page. Pages route by URL hash
// (#/signin, #/, #/rooms/ID) so the server only serves files.

import { Room } from './convene.js';

// --- REST -----------------------------------------------------------------------------------

const AUTH_KEY = 'convene.auth';
const NEXT_KEY = 'convene.next'; // where to go after signing in (a shared room link)
let auth = JSON.parse(localStorage.getItem(AUTH_KEY) || 'null');

function saveAuth(value) {
  auth = value;
  if (value) localStorage.setItem(AUTH_KEY, JSON.stringify(value));
  else localStorage.removeItem(AUTH_KEY);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `request failed (${status})`);
    this.status = status;
    this.code = body?.error?.code;
    this.fields = body?.error?.fields ?? {};
  }
}

async function call(method, path, body, token) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** An authenticated request; an expired access token is refreshed once (refresh tokens rotate). */
async function api(method, path, body) {
  try {
    return await call(method, path, body, auth?.access_token);
  } catch (e) {
    if (e.status !== 401 || !auth?.refresh_token) throw e;
    try {
      saveAuth(await call('POST', '/auth/token/refresh', { refresh_token: auth.refresh_token }));
    } catch {
      saveAuth(null);
      location.hash = '#/signin';
      throw e;
    }
    return call(method, path, body, auth.access_token);
  }
}

// --- DOM ------------------------------------------------------------------------------------

/** h('button.primary', {onclick}, 'Join'): an element with classes, properties and children. */
function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(props)) {
    if (k.startsWith('data-') || k.startsWith('aria-') || k === 'for') el.setAttribute(k, v);
    else el[k] = v;
  }
  el.append(...children.flat().filter(c => c !== null && c !== undefined && c !== false));
  return el;
}

const app = document.getElementById('app');

function show(...nodes) {
  app.replaceChildren(...nodes);
}

/** A form whose submit runs `action(values)`; errors show under it. */
function form(name, fields, submitLabel, action) {
  const error = h('p.error', { role: 'alert' });
  const el = h(`form.${name}`, { name }, fields, h('button.primary', { type: 'submit' }, submitLabel), error);
  el.addEventListener('submit', async e => {
    e.preventDefault();
    error.textContent = '';
    const button = el.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await action(Object.fromEntries(new FormData(el)), el);
    } catch (err) {
      const fieldErrors = Object.entries(err.fields ?? {}).map(([f, m]) => `${f} ${m}`);
      error.textContent = fieldErrors.length ? fieldErrors.join('; ') : err.message;
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

function input(name, label, type = 'text', extra = {}) {
  return h('label', {}, label, h('input', { name, type, required: true, ...extra }));
}

// --- pages ----------------------------------------------------------------------------------

function signInPage() {
  const signIn = form('signin', [
    input('login', 'E-mail or username', 'text', { autocomplete: 'username' }),
    input('password', 'Password', 'password', { autocomplete: 'current-password' }),
  ], 'Sign in', async v => {
    saveAuth(await call('POST', '/auth/login', v));
    signedIn();
  });
  const register = form('register', [
    input('display_name', 'Name', 'text', { autocomplete: 'name' }),
    input('username', 'Username', 'text', { autocomplete: 'username' }),
    input('email', 'E-mail', 'email', { autocomplete: 'email' }),
    input('password', 'Password (8 characters or more)', 'password', { autocomplete: 'new-password', minLength: 8 }),
  ], 'Create account', async v => {
    saveAuth(await call('POST', '/auth/register', v));
    signedIn();
  });
  show(
    h('header.bar', {}, h('h1', {}, 'Convene')),
    h('div.cards', {},
      h('section.card', {}, h('h2', {}, 'Sign in'), signIn),
      h('section.card', {}, h('h2', {}, 'New here?'), register)),
  );
}

async function homePage() {
  const [teams, rooms] = await Promise.all([api('GET', '/teams?limit=200'), api('GET', '/rooms?limit=200')]);
  const newTeam = form('new-team', [input('name', 'Team name')], 'Create team', async v => {
    await api('POST', '/teams', { name: v.name });
    route();
  });
  const teamSection = team => {
    const teamRooms = rooms.items.filter(r => r.team_id === team.id);
    const manage = team.role === 'owner' || team.role === 'admin';
    return h('section.card.team', { 'data-team': team.name },
      h('h2', {}, team.name, h('span.muted', {}, ` · ${team.member_count} member${team.member_count === 1 ? '' : 's'}`)),
      teamRooms.length
        ? h('ul.rooms', {}, teamRooms.map(r => h('li', { 'data-room': r.name },
          h('span', {}, r.name), h('a.button.primary', { href: `#/rooms/${r.id}` }, 'Join'))))
        : h('p.muted', {}, 'No rooms yet.'),
      team.role !== 'guest' && form('new-room', [input('name', 'Room name')], 'Create room', async v => {
        await api('POST', '/rooms', { name: v.name, team_id: team.id });
        route();
      }),
      manage && form('add-member', [input('login', 'Add member (username or e-mail)')], 'Add', async v => {
        await api('POST', `/teams/${team.id}/members`, { login: v.login, role: 'member' });
        route();
      }),
    );
  };
  show(
    h('header.bar', {},
      h('h1', {}, 'Convene'),
      h('span.who', {}, auth.user.display_name),
      h('button', { onclick: () => route() }, 'Refresh'),
      h('button', { onclick: signOut }, 'Sign out')),
    h('div.cards', {},
      teams.items.map(teamSection),
      h('section.card', {}, h('h2', {}, 'New team'), newTeam)),
  );
}

function signedIn() {
  location.hash = sessionStorage.getItem(NEXT_KEY) || '#/';
  sessionStorage.removeItem(NEXT_KEY);
}

async function signOut() {
  await api('POST', '/auth/logout').catch(() => {});
  saveAuth(null);
  location.hash = '#/signin';
}

// --- the meeting ----------------------------------------------------------------------------

let current = null; // the meeting in progress

async function meetingPage(roomId) {
  const status = h('p.muted', {}, 'Joining…');
  show(h('header.bar', {}, h('h1', {}, 'Convene')), status);
  const [info, join] = await Promise.all([api('GET', `/rooms/${roomId}`), api('POST', `/rooms/${roomId}/join`)]);
  // The page and the signaling socket share an origin: the client is served by the same binary.
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/signal`;
  // `?ice=relay` (or `relay-udp`, `relay-tcp`) sends media only through the TURN relay.
  const ice = new URLSearchParams(location.search).get('ice') ?? 'all';
  const room = await Room.join({ url, token: join.token, ice });
  current = new Meeting(room, info.name, join.chat_channel_id, roomId, tokenGrants(join.token));
  window.convene = { room }; // for debugging and the end-to-end tests
  // Whatever devices there are: both, else either, else join to watch and listen.
  const attempts = [{ audio: true, video: true }, { audio: true, video: false }, { audio: false, video: true }];
  let error;
  for (const media of attempts) {
    try {
      await room.publish(media);
      if (media !== attempts[0]) current.notice(media.video ? 'No microphone found.' : 'No camera found.');
      return;
    } catch (e) {
      error = e;
    }
  }
  current.notice(`No camera or microphone: ${error.message}`);
}

/** The grants in a room join token (a JWT; the server checks them, the page only adapts). */
function tokenGrants(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).grants ?? {};
  } catch {
    return {};
  }
}

class Meeting {
  constructor(room, name, chatChannel, roomId, grants) {
    this.room = room;
    this.recordingBadge = h('span.recording', { role: 'status', hidden: true }, '● Recording');
    this.chatChannel = chatChannel;
    this.shown = new Set(); // ids of the chat messages on screen
    this.grid = h('div.grid', { id: 'grid' });
    this.people = h('ul.people', { id: 'people' });
    this.audio = h('div', { hidden: true });
    this.status = h('p.notice', { role: 'status' });
    this.chat = h('ul.chat', { id: 'chat', 'aria-live': 'polite' });
    const say = form('say', [h('input', { name: 'text', required: true, autocomplete: 'off', 'aria-label': 'Message' })], 'Send',
      async (v, el) => {
        // The meeting chat is kept with the room: posted over REST (idempotent), seen by all
        // participants through the channel's stream, there for whoever joins later.
        const message = await api('POST', `/chat/channels/${chatChannel}/messages`,
          { body: v.text, client_msg_id: crypto.randomUUID() });
        this.said(message);
        el.reset();
      });
    this.buttons = {
      mic: h('button', { name: 'mic', onclick: () => this.act(() => room.setMuted('microphone', !room.local.get('microphone')?.muted)) }),
      camera: h('button', { name: 'camera', onclick: () => this.act(() => room.setCameraEnabled(!this.cameraOn())) }),
      screen: h('button', { name: 'screen', onclick: () => this.act(() => room.local.has('screen') ? room.stopScreenShare() : room.startScreenShare()) }),
      leave: h('button.danger', { name: 'leave', onclick: () => this.act(() => room.leave()) }, 'Leave'),
    };
    if (grants.record) {
      // Hosts start and stop the room's recording; everyone sees the badge.
      this.buttons.record = h('button', { name: 'record', onclick: () => this.act(() => room.recording
        ? api('POST', `/recordings/${room.recording}/stop`)
        : api('POST', `/rooms/${roomId}/recordings`)) });
    }
    show(h('section.meeting', {},
      h('header.bar', {}, h('h1', {}, name), this.recordingBadge, this.status),
      h('div.stage', {}, this.grid,
        h('aside', {}, h('h2', {}, 'Participants'), this.people, h('h2', {}, 'Chat'), this.chat, say)),
      h('footer.controls', {}, Object.values(this.buttons)),
      this.audio));
    for (const type of ['participant_joined', 'participant_left', 'track', 'track_updated', 'track_removed', 'local',
      'recording', 'speakers', 'connection_quality']) {
      room.addEventListener(type, () => this.render());
    }
    room.addEventListener('reconnecting', () => this.notice('Connection lost, reconnecting…'));
    room.addEventListener('reconnected', () => this.notice(''));
    const interrupted = 'Media connection interrupted…';
    room.addEventListener('media_state', e => {
      if (!e.detail.connected) this.notice(interrupted);
      else if (this.status.textContent === interrupted) this.notice('');
    });
    room.addEventListener('error', e => this.notice(e.detail.message));
    room.addEventListener('closed', e => {
      this.chatSocket?.close();
      this.chatSocket = null;
      this.closed(e.detail.reason);
    });
    this.render();
    this.openChat();
  }

  /** Loads the meeting chat's recent messages and follows the channel's stream. */
  async openChat() {
    const page = await api('GET', `/chat/channels/${this.chatChannel}/messages?limit=50`);
    for (const m of page.items) this.said(m);
    if (this.room.closed) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(
      `${scheme}://${location.host}/ws/chat/${this.chatChannel}?access_token=${encodeURIComponent(auth.access_token)}`);
    this.chatSocket = socket;
    socket.onmessage = e => {
      const event = JSON.parse(e.data);
      if (event.type === 'message.created') this.said(event.data.message);
    };
    // Dropped: catch up over REST and follow again (messages are shown once, by id).
    socket.onclose = () => {
      if (this.chatSocket === socket) setTimeout(() => this.chatSocket === socket && this.openChat(), 1000);
    };
  }

  cameraOn() {
    const camera = this.room.local.get('camera');
    return !!camera && !camera.muted;
  }

  said(message) {
    if (this.shown.has(message.id)) return;
    this.shown.add(message.id);
    const name = message.author_id === this.room.me.id ? `${this.room.me.name} (you)` : message.author_name ?? 'Someone';
    this.chat.append(h('li', {}, h('b', {}, name), ' ', message.body));
    this.chat.lastChild.scrollIntoView({ block: 'nearest' });
  }

  notice(text) {
    this.status.textContent = text;
  }

  async act(f) {
    try {
      await f();
    } catch (e) {
      this.notice(e.message);
    }
  }

  closed(reason) {
    if (current === this) current = null;
    const why = { left: 'You left the meeting.', joined_elsewhere: 'You joined from another window.' }[reason]
      ?? `The meeting ended for you (${reason}).`;
    show(h('header.bar', {}, h('h1', {}, 'Convene')),
      h('section.card', {}, h('p', {}, why), h('a.button.primary', { href: '#/' }, 'Back to rooms')));
  }

  /** Rebuilds the grid, participants list and controls from the room's state, keeping elements. */
  render() {
    const { room } = this;
    const local = source => room.local.get(source);
    const tiles = [{
      key: 'me:camera', participant: room.me.id, name: `${room.me.name} (you)`, source: 'camera', self: true,
      media: local('camera')?.track, videoOff: !local('camera') || local('camera').muted,
      micOff: !local('microphone') || local('microphone').muted,
    }];
    if (local('screen')) tiles.push({ key: 'me:screen', name: `${room.me.name} (your screen)`, source: 'screen', self: true, media: local('screen').track });
    const audio = [];
    for (const p of room.participants.values()) {
      const tracks = [...p.tracks.values()];
      const of = source => tracks.find(t => t.source === source);
      const camera = of('camera'), mic = of('microphone');
      tiles.push({
        key: `${p.id}:camera`, participant: p.id, name: p.name, source: 'camera',
        media: camera && room.mediaTrack(camera.id), videoOff: !camera || camera.muted, micOff: !mic || mic.muted,
        trackId: camera?.id,
      });
      for (const t of tracks.filter(t => t.source === 'screen')) {
        tiles.push({ key: `${p.id}:${t.id}`, participant: p.id, name: `${p.name} (screen)`, source: 'screen', media: room.mediaTrack(t.id), trackId: t.id });
      }
      for (const t of tracks.filter(t => t.kind === 'audio')) audio.push({ key: t.id, media: room.mediaTrack(t.id) });
    }
    for (const t of tiles) {
      t.speaking = t.source === 'camera' && room.speakers.includes(t.participant);
      t.quality = t.source === 'camera' ? room.quality.get(t.participant)?.quality : undefined;
    }
    reconcile(this.grid, tiles, tile, (el, t) => updateTile(el, t, room));
    reconcile(this.audio, audio.filter(a => a.media), a => h('audio', { autoplay: true }), (el, a) => attach(el, a.media));
    const people = [{ key: 'me', name: `${room.me.name} (you)`, micOff: tiles[0].micOff, videoOff: tiles[0].videoOff },
      ...tiles.filter(t => !t.self && t.source === 'camera').map(t => ({ ...t, key: t.participant }))];
    reconcile(this.people, people, () => h('li'), (li, p) => {
      const state = [p.micOff && 'muted', p.videoOff && 'camera off'].filter(Boolean).join(', ');
      li.replaceChildren(p.name, state ? h('span.muted', {}, ` · ${state}`) : '');
    });
    const mic = local('microphone');
    this.buttons.mic.textContent = mic?.muted ? 'Unmute' : 'Mute';
    this.buttons.mic.disabled = !mic;
    this.buttons.camera.textContent = this.cameraOn() ? 'Stop video' : 'Start video';
    this.buttons.screen.textContent = local('screen') ? 'Stop sharing' : 'Share screen';
    this.buttons.screen.setAttribute('aria-pressed', String(!!local('screen')));
    this.recordingBadge.hidden = !room.recording;
    if (this.buttons.record) this.buttons.record.textContent = room.recording ? 'Stop recording' : 'Record';
  }
}

function tile(t) {
  return h('figure.tile', { 'data-source': t.source, 'data-participant': t.self ? 'me' : t.participant },
    h('video', { autoplay: true, playsInline: true, muted: true }),
    h('figcaption', {}, t.name),
    h('span.quality', { title: 'Connection quality' }));
}

function updateTile(el, t, room) {
  el.querySelector('figcaption').textContent = t.name;
  el.dataset.name = t.name;
  el.classList.toggle('self', !!t.self);
  el.classList.toggle('video-off', !!t.videoOff || !t.media);
  el.classList.toggle('mic-off', !!t.micOff);
  el.classList.toggle('speaking', !!t.speaking);
  const quality = el.querySelector('.quality');
  quality.textContent = t.quality ?? '';
  quality.hidden = !t.quality;
  if (t.quality) el.dataset.quality = t.quality;
  else delete el.dataset.quality;
  const video = el.querySelector('video');
  attach(video, t.media);
  // The SFU sends each remote tile the simulcast layer that fits its size.
  const watched = t.self ? null : t.trackId ?? null;
  if (el.watching?.trackId !== watched) {
    el.watching?.stop();
    el.watching = watched && { trackId: watched, stop: room.watchElement(watched, video) };
  }
}

function attach(el, media) {
  const current = el.srcObject?.getTracks()[0] ?? null;
  if (current === (media ?? null)) return;
  el.srcObject = media ? new MediaStream([media]) : null;
}

/** Makes `parent`'s children match `items` (by `key`), creating and updating elements. */
function reconcile(parent, items, create, update) {
  const existing = new Map([...parent.children].map(el => [el.dataset.key, el]));
  const wanted = items.map(item => {
    let el = existing.get(item.key);
    if (!el) {
      el = create(item);
      el.dataset.key = item.key;
    }
    existing.delete(item.key);
    update(el, item);
    return el;
  });
  for (const el of existing.values()) {
    el.watching?.stop();
    el.remove();
  }
  wanted.forEach((el, i) => {
    if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] ?? null);
  });
}

// --- routing --------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || '#/';
  if (current) await current.room.leave();
  if (!auth && hash !== '#/signin') {
    if (hash !== '#/') sessionStorage.setItem(NEXT_KEY, hash);
    location.hash = '#/signin';
    return;
  }
  try {
    const meeting = hash.match(/^#\/rooms\/([^/]+)$/);
    if (hash === '#/signin') signInPage();
    else if (meeting) await meetingPage(meeting[1]);
    else await homePage();
  } catch (e) {
    show(h('header.bar', {}, h('h1', {}, 'Convene')),
      h('section.card', {}, h('p.error', { role: 'alert' }, e.message), h('a.button', { href: '#/' }, 'Back')));
  }
}

window.addEventListener('hashchange', route);
window.addEventListener('pagehide', () => current?.room.leave());
route();
