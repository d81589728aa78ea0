// Recording end to end: a host in headless Chromium (fake camera and microphone) records a
// meeting through the web client; the files must decode with ffprobe, last as long as the
// recording did, survive kill -9 of the server (the recording comes back `interrupted`), and be
// finalized by a graceful stop (`finished`).
//
// Starts its own `convene serve` processes (it kills and restarts them) on one data directory:
//   CONVENE_BIN=path/to/convene node recording.js
// Needs /usr/bin/chromium, ffprobe (Debian's ffmpeg) and playwright-core (run.sh installs it).

const { sleep, until, check, run } = require('./lib');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const BIN = process.env.CONVENE_BIN;
const RECORD_MS = 8_000; // ≥ 5 s of camera and microphone
const data = fs.mkdtempSync(path.join(os.tmpdir(), 'convene-rec-'));
const logs = [];

/** Starts the server on the shared data directory; resolves with { proc, base } once it listens. */
async function startServer() {
  const log = path.join(data, `server-${logs.length}.log`);
  logs.push(log);
  const out = fs.openSync(log, 'w');
  const proc = spawn(BIN, ['serve', '--data-dir', data, '--http-addr', '127.0.0.1:0', '--log-format', 'json',
    '--media-udp-port', '0', '--media-tcp-port', '0', '--media-bind-ip', '127.0.0.1', '--turn=false'],
  { stdio: ['ignore', out, out] });
  const exited = new Promise(resolve => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const addr = await until('server listening', () => {
    const m = fs.readFileSync(log, 'utf8').match(/"message":"listening".*?"addr":"([0-9.:]+)"/);
    if (!m && proc.exitCode !== null) throw new Error(`server exited: ${fs.readFileSync(log, 'utf8')}`);
    return m?.[1];
  }, Boolean, 20_000);
  return { proc, exited, base: `http://${addr}` };
}

async function rest(base, method, p, token, body) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}/api/v1${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error(`${method} ${p} → ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** ffprobe's view of one downloaded file: codec, decoded frames, packets, duration (s). */
function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-count_packets',
    '-show_entries', 'stream=codec_name,nb_read_frames,nb_read_packets:format=duration', '-of', 'json', file]);
  const j = JSON.parse(out);
  const s = j.streams?.[0] ?? {};
  return {
    codec: s.codec_name,
    frames: Number(s.nb_read_frames ?? 0),
    packets: Number(s.nb_read_packets ?? 0),
    duration: Number(j.format?.duration ?? NaN),
  };
}

/** Downloads every media file of a recording and probes it; returns { video, audio, recording }. */
async function probeRecording(base, token, id) {
  const recording = await rest(base, 'GET', `/recordings/${id}`, token);
  const result = { recording };
  for (const f of recording.files.filter(f => f.track)) {
    const res = await fetch(`${base}/api/v1/recordings/${id}/files/${f.name}`, { headers: { authorization: `Bearer ${token}` } });
    check(res.ok, `download ${f.name} → ${res.status}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    check(bytes.length === f.size, `${f.name}: ${bytes.length} bytes downloaded, ${f.size} listed`);
    const file = path.join(data, `${id}-${f.name}`);
    fs.writeFileSync(file, bytes);
    result[f.track.kind] = { ...probe(file), file: f };
  }
  return result;
}

/** Opens the meeting page signed in as `auth`; resolves once camera and microphone are published. */
async function openMeeting(newContext, base, auth, roomId) {
  const context = await newContext();
  const page = await context.newPage();
  page.on('console', m => m.type() === 'error' && console.error(`  [page] ${m.text()}`));
  page.on('pageerror', e => console.error(`  [page] ${e.message}`));
  // Signed in as the app would be after signing in (it reads the stored session at load).
  await context.addInitScript(a => localStorage.setItem('convene.auth', a), JSON.stringify(auth));
  await page.goto(`${base}/#/rooms/${roomId}`);
  await page.locator('#grid .tile.self').waitFor();
  await until('camera and microphone published', () => rest(base, 'GET', `/rooms/${roomId}`, auth.access_token),
    room => room.live?.participants?.[0]?.tracks?.length === 2);
  return { context, page };
}

const steps = [];
const test = (name, fn) => steps.push({ name, fn });
const s = {}; // state shared by the steps

test('a host records camera and microphone from the meeting page, which shows a Recording badge', async newContext => {
  s.server = await startServer();
  const base = s.server.base;
  s.auth = await rest(base, 'POST', '/auth/register', undefined,
    { email: 'ada@example.com', username: 'ada', password: 'correct horse battery', display_name: 'Ada' });
  s.token = s.auth.access_token;
  const team = await rest(base, 'POST', '/teams', s.token, { name: 'Core' });
  s.room = (await rest(base, 'POST', '/rooms', s.token, { name: 'Standup', team_id: team.id })).id;
  s.meeting = await openMeeting(newContext, base, s.auth, s.room);
  const { page } = s.meeting;
  const badge = page.locator('.recording');
  check(await badge.isHidden(), 'no badge before recording');
  const t0 = Date.now();
  await page.getByRole('button', { name: 'Record' }).click();
  await badge.waitFor({ state: 'visible' });
  check((await badge.textContent()).includes('Recording'), 'the badge says Recording');
  const list = await rest(base, 'GET', `/recordings?room=${s.room}`, s.token);
  check(list.items.length === 1 && list.items[0].status === 'recording', `one running recording: ${JSON.stringify(list)}`);
  s.first = list.items[0].id;
  await sleep(RECORD_MS - (Date.now() - t0)); // the length of the recording under test, not a wait for an event
  await page.getByRole('button', { name: 'Stop recording' }).click();
  await badge.waitFor({ state: 'hidden' });
  s.wallMs = Date.now() - t0;
});

test('the files decode: ≥ 100 video frames, ≥ 200 audio packets, durations within 10 % of wall time', async () => {
  const r = await until('recording finished', () => probeRecording(s.server.base, s.token, s.first),
    r => r.recording.status === 'finished');
  const { video, audio, recording } = r;
  check(video && audio, `a video and an audio file: ${JSON.stringify(recording.files)}`);
  check(video.codec === 'vp8' && video.file.name.endsWith('.webm'), `video: ${JSON.stringify(video)}`);
  check(audio.codec === 'opus' && audio.file.name.endsWith('.ogg'), `audio: ${JSON.stringify(audio)}`);
  check(video.frames >= 100, `video frames decoded: ${video.frames}`);
  check(audio.packets >= 200 && audio.frames >= 200, `audio packets ${audio.packets}, frames ${audio.frames}`);
  const wall = recording.duration_ms / 1000;
  check(Math.abs(wall - s.wallMs / 1000) < 1, `recorded ${wall} s, test saw ${s.wallMs / 1000} s`);
  for (const [kind, f] of [['video', video], ['audio', audio]]) {
    check(Math.abs(f.duration - wall) <= 0.1 * wall, `${kind} lasts ${f.duration} s of ${wall} s`);
    check(f.file.track.end_offset_ms > f.file.track.start_offset_ms, `${kind} offsets ${JSON.stringify(f.file.track)}`);
  }
  console.log(`     video ${video.frames} frames ${video.duration} s, audio ${audio.packets} packets ${audio.duration} s, wall ${wall} s`);
});

test('kill -9 during a recording: after a restart it is `interrupted` and its files still decode', async () => {
  const { page } = s.meeting;
  await page.getByRole('button', { name: 'Record' }).click();
  await page.locator('.recording').waitFor({ state: 'visible' });
  const list = await rest(s.server.base, 'GET', `/recordings?room=${s.room}`, s.token);
  s.killed = list.items.find(r => r.status === 'recording').id;
  // Wait until both files hold more than a second of media (sizes grow as pages and clusters
  // are flushed), then kill.
  await until('both files growing', () => rest(s.server.base, 'GET', `/recordings/${s.killed}`, s.token),
    r => r.files.filter(f => f.track && f.size > (f.track.kind === 'video' ? 20_000 : 4_000)).length === 2);
  await sleep(2000); // more media in flight when the kill lands
  s.server.proc.kill('SIGKILL');
  const { signal } = await s.server.exited;
  check(signal === 'SIGKILL', `server ended by ${signal}`);
  await s.meeting.context.close();
  s.server = await startServer();
  const r = await probeRecording(s.server.base, s.token, s.killed);
  check(r.recording.status === 'interrupted', `status after restart: ${r.recording.status}`);
  check(r.recording.duration_ms > 2000, `duration kept: ${r.recording.duration_ms}`);
  check(r.video?.frames >= 30, `video frames decoded after the kill: ${JSON.stringify(r.video)}`);
  check(r.audio?.packets >= 100 && r.audio?.frames >= 100, `audio after the kill: ${JSON.stringify(r.audio)}`);
  console.log(`     after kill -9: video ${r.video.frames} frames, audio ${r.audio.packets} packets`);
  const first = await rest(s.server.base, 'GET', `/recordings/${s.first}`, s.token);
  check(first.status === 'finished', `the earlier recording stays finished: ${first.status}`);
});

test('a graceful stop (SIGTERM) finalizes a running recording as `finished`', async newContext => {
  s.meeting = await openMeeting(newContext, s.server.base, s.auth, s.room);
  const started = await rest(s.server.base, 'POST', `/rooms/${s.room}/recordings`, s.token);
  await s.meeting.page.locator('.recording').waitFor({ state: 'visible' });
  // A couple of seconds of media first (Opus is ~4 KB/s): a one-frame video file has no duration.
  const grown = f => f.size > (f.track.kind === 'audio' ? 8_000 : 40_000);
  await until('both files hold a few seconds', () => rest(s.server.base, 'GET', `/recordings/${started.id}`, s.token),
    r => r.files.filter(f => f.track && grown(f)).length === 2);
  s.server.proc.kill('SIGTERM');
  const { code } = await s.server.exited;
  check(code === 0, `server exit code ${code}`);
  await s.meeting.context.close();
  s.server = await startServer();
  const r = await probeRecording(s.server.base, s.token, started.id);
  check(r.recording.status === 'finished', `status after a graceful stop: ${r.recording.status}`);
  check(r.video?.frames > 0 && r.audio?.packets > 0, `files: ${JSON.stringify([r.video, r.audio])}`);
  for (const f of [r.video, r.audio]) {
    check(Number.isFinite(f.duration) && f.file.track.end_offset_ms > 0, `finalized: ${JSON.stringify(f)}`);
  }
});

if (!BIN) {
  console.log('CONVENE_BIN is not set');
  process.exit(1);
}
run([], steps, [], async failed => {
  s.server?.proc.kill('SIGTERM');
  if (s.server) await s.server.exited;
  if (!failed) fs.rmSync(data, { recursive: true, force: true });
}, { explain: async () => console.log(`     server logs: ${logs.join(' ')}`) });
