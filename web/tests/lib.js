// Shared by the browser suites: polling, checks, REST calls, Chromium and a step runner.

const { chromium } = require('playwright-core');

const BASE = process.env.BASE_URL || 'http://127.0.0.1:8080';
const sleep = ms => new Promise(r => setTimeout(r, ms));
// Two shared cores: encoders and decoders are slow to start. `run`'s `timeout` option sets it.
let timeout = 45_000;

/** Polls `probe` until `done(value)` holds; the last value explains a timeout. */
async function until(what, probe, done, ms = timeout) {
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

/** A REST call; throws on a non-2xx answer. */
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

/** Registers `people` ({name, username}), the first creating a team with the others and a room. */
async function accountsAndRoom(people, roomName) {
  for (const p of people) {
    p.auth = await api('POST', '/auth/register', null, {
      email: `${p.username}@example.com`, username: p.username, password: 'correct horse battery', display_name: p.name,
    });
  }
  const owner = people[0].auth.access_token;
  const team = await api('POST', '/teams', owner, { name: roomName });
  for (const p of people.slice(1)) await api('POST', `/teams/${team.id}/members`, owner, { login: p.username, role: 'member' });
  return (await api('POST', '/rooms', owner, { name: roomName, team_id: team.id })).id;
}

/** Opens the meeting page of `roomId` as `p` (signed in through local storage) and waits to be in. */
async function enter(p, roomId) {
  await p.context.addInitScript(auth => localStorage.setItem('convene.auth', JSON.stringify(auth)), p.auth);
  p.page = await p.context.newPage();
  p.page.on('pageerror', e => console.error(`  [${p.name}] ${e.message}`));
  await p.page.goto(`${BASE}/#/rooms/${roomId}`);
  await p.page.locator('#grid .tile.self').waitFor();
  p.id = await until('joined', () => p.page.evaluate(() => window.convene?.room?.me?.id), Boolean);
}

/** Opens a page for `p` in their context, its console errors and uncaught errors logged. */
async function openPage(p) {
  p.page = await p.context.newPage();
  p.page.on('console', m => m.type() === 'error' && console.error(`  [${p.name}] ${m.text()}`));
  p.page.on('pageerror', e => console.error(`  [${p.name}] ${e.message}`));
}

/**
 * Launches Chromium with fake devices (plus `args`), gives each person a context, runs the steps
 * in order (each is handed `newContext()`, to open more contexts like those); the steps share
 * state, so after a failure the rest are reported as not run. Then closes the browser, awaits
 * `cleanup(failed)` and exits.
 * Options: `timeout` (Playwright's and `until`'s default), `context` (newContext options),
 * `prepare(p)` (after each person's context is made), `explain()` (more on a failure).
 */
async function run(people, steps, args = [], cleanup = () => {}, options = {}) {
  const { context = {}, prepare = async () => {}, explain = async () => {} } = options;
  timeout = options.timeout ?? timeout;
  let passed = 0, failed = 0, broken = false, browser;
  const newContext = async () => {
    const made = await browser.newContext(context);
    made.setDefaultTimeout(timeout);
    return made;
  };
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
        '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required', ...args],
    });
    for (const p of people) {
      p.context = await newContext();
      await prepare(p);
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
      await step.fn(newContext);
      passed++;
      console.log(`ok   ${step.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed++;
      broken = true;
      console.log(`FAIL ${step.name}\n     ${String(e.message ?? e).split('\n').join('\n     ')}`);
      await explain();
      if (process.env.SERVER_LOG) console.log(`     server log: ${process.env.SERVER_LOG}`);
    }
  }
  await browser?.close().catch(() => {});
  await cleanup(failed);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

module.exports = { BASE, sleep, until, check, api, accountsAndRoom, enter, openPage, run };
