// Speakers and connection quality in the web client: two headless Chromium pages join a room
// whose accounts, team and room come from the REST API. Both capture a continuous 440 Hz tone as
// their microphone (a WAV file written here: Chromium's default fake microphone beeps for a few
// milliseconds at a time, too short to count as speech); Bob's page disables its microphone track
// before publishing, so it sends silence. Ada must be highlighted as the speaker on both pages
// and Bob never; each tile shows a connection quality label, and the REST live view has it too.
// Run through run.sh, which starts the server and sets BASE_URL.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const BASE = process.env.BASE_URL || 'http://127.0.0.1:8080';
const TIMEOUT = 45_000;
const sleep = ms => new Promise(r => setTimeout(r, ms));

const steps = [];
const test = (name, fn) => steps.push({ name, fn });

async function until(what, probe, done, ms = TIMEOUT) {
  const t0 = Date.now();
  let last;
  for (;;) {
    try {
      last = await probe();
      if (done(last)) return last;
    } catch (e) {
      last = String(e);
    }
    if (Date.now() - t0 > ms) throw new Error(`${what}: timed out; last saw ${JSON.stringify(last)}`);
    await sleep(250);
  }
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function api(method, url, token, body) {
  const res = await fetch(`${BASE}/api/v1${url}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url} → ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A 10 s mono 48 kHz 16-bit WAV of a 440 Hz tone at half scale (about -9 dBov); Chromium loops it. */
function toneWav(file) {
  const rate = 48000, seconds = 10, n = rate * seconds;
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(Math.sin(2 * Math.PI * 440 * i / rate) * 16384), i * 2);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0); header.writeUInt32LE(36 + data.length, 4); header.write('WAVE', 8);
  header.write('fmt ', 12); header.writeUInt32LE(16, 16); header.writeUInt16LE(1, 20); header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24); header.writeUInt32LE(rate * 2, 28); header.writeUInt16LE(2, 32); header.writeUInt16LE(16, 34);
  header.write('data', 36); header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
}

const ada = { name: 'Ada', username: 'ada_q' };
const bob = { name: 'Bob', username: 'bob_q', silent: true };
const people = [ada, bob];
let roomId;

/** What a page shows: tiles with their speaking state and quality label, the SDK's speaker lists. */
const view = page => page.evaluate(() => ({
  tiles: [...document.querySelectorAll('#grid .tile[data-source="camera"]')].map(t => ({
    participant: t.dataset.participant,
    speaking: t.classList.contains('speaking'),
    quality: t.dataset.quality ?? null,
    label: t.querySelector('.quality')?.textContent ?? null,
  })),
  lists: window.speakerLists ?? [],
  me: window.convene?.room?.me?.id ?? null,
}));
const tileOf = (v, who) => v.tiles.find(t => t.participant === (who.id === v.me ? 'me' : who.id));

test('two accounts, a team and a room through the REST API', async () => {
  for (const p of people) {
    p.auth = await api('POST', '/auth/register', null, {
      email: `${p.username}@example.com`, username: p.username, password: 'correct horse battery', display_name: p.name,
    });
  }
  const team = await api('POST', '/teams', ada.auth.access_token, { name: 'Quality' });
  await api('POST', `/teams/${team.id}/members`, ada.auth.access_token, { login: bob.username, role: 'member' });
  roomId = (await api('POST', '/rooms', ada.auth.access_token, { name: 'Tone', team_id: team.id })).id;
});

test('both join; Bob publishes a disabled (silent) microphone', async () => {
  for (const p of people) {
    await p.context.addInitScript(([auth, silent]) => {
      localStorage.setItem('convene.auth', JSON.stringify(auth));
      if (silent) {
        const native = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
        navigator.mediaDevices.getUserMedia = async constraints => {
          const stream = await native(constraints);
          for (const t of stream.getAudioTracks()) t.enabled = false;
          return stream;
        };
      }
    }, [p.auth, !!p.silent]);
    p.page = await p.context.newPage();
    p.page.on('pageerror', e => console.error(`  [${p.name}] ${e.message}`));
    await p.page.goto(`${BASE}/#/rooms/${roomId}`);
    await p.page.locator('#grid .tile.self').waitFor();
    p.id = await until('joined', () => p.page.evaluate(() => window.convene?.room?.me?.id), Boolean);
    // The current speaker list, and every one the page hears from now on.
    await p.page.evaluate(() => {
      window.speakerLists = [window.convene.room.speakers.slice()];
      window.convene.room.addEventListener('speakers', e =>
        window.speakerLists.push(e.detail.speakers.map(s => s.participant)));
    });
  }
});

test("Ada's tile is highlighted as speaking on both pages, Bob's never", async () => {
  for (const me of people) {
    await until(`${me.name} sees Ada speaking`, () => view(me.page), v => tileOf(v, ada)?.speaking);
  }
  // Bob's silence goes on for a few more seconds: he never enters a list.
  await sleep(3000);
  for (const me of people) {
    const v = await view(me.page);
    check(tileOf(v, ada).speaking, `${me.name} still sees Ada speaking: ${JSON.stringify(v)}`);
    check(!tileOf(v, bob).speaking, `${me.name} sees Bob silent: ${JSON.stringify(v.tiles)}`);
    check(v.lists.some(l => l.includes(ada.id)) && v.lists.every(l => !l.includes(bob.id)),
      `${me.name}'s lists: ${JSON.stringify(v.lists)}`);
  }
});

test('each tile shows its connection quality, and the REST live view has it', async () => {
  for (const me of people) {
    const v = await until(`${me.name} sees both connections rated`, () => view(me.page),
      v => people.every(p => tileOf(v, p)?.quality));
    for (const p of people) {
      const t = tileOf(v, p);
      check(['excellent', 'good'].includes(t.quality) && t.label === t.quality,
        `${me.name} sees ${p.name}'s loopback connection as ${t.quality} (${t.label})`);
    }
  }
  const room = await api('GET', `/rooms/${roomId}`, ada.auth.access_token);
  for (const p of people) {
    const live = room.live.participants.find(l => l.id === p.id);
    check(live?.connection_quality?.participant === p.id && typeof live.connection_quality.bitrate_kbps === 'number',
      `the live view rates ${p.name}: ${JSON.stringify(room.live)}`);
  }
});

(async () => {
  let passed = 0, failed = 0, broken = false, browser;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convene-quality-'));
  const wav = path.join(dir, 'tone.wav');
  toneWav(wav);
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
        `--use-file-for-fake-audio-capture=${wav}`,
        '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required'],
    });
    for (const p of people) {
      p.context = await browser.newContext();
      p.context.setDefaultTimeout(TIMEOUT);
    }
  } catch (e) {
    console.log(`could not start Chromium: ${e.message}`);
    broken = true;
  }
  for (const step of steps) {
    if (broken) {
      failed++;
      console.log(`FAIL ${step.name} (not run: an earlier step failed)`);
      continue;
    }
    const t0 = Date.now();
    try {
      await step.fn();
      passed++;
      console.log(`ok   ${step.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      broken = true;
      console.log(`FAIL ${step.name}\n     ${String(e.message ?? e).split('\n').join('\n     ')}`);
      if (process.env.SERVER_LOG) console.log(`     server log: ${process.env.SERVER_LOG}`);
    }
  }
  await browser?.close().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
