// A bandwidth cap on one subscriber, in Chromium: Ada publishes her fake camera (three simulcast
// encodings) and microphone through the SDK; Bob watches her in a 1280x720 element, so he wants
// the top layer. The server advertises 127.0.0.2 (impairment.sh), where relay.js relays to the
// SFU. Once Bob steadily decodes a layer above the lowest, the relay caps what the SFU sends to
// the clients (Bob; Ada receives no media) at 250 kbit/s (token bucket, 250 ms queue, the rest dropped): str0m's estimate
// for Bob's connection falls and the allocator must step him down to the lowest layer, which
// keeps decoding, while Ada's audio keeps arriving, and stay there without flapping (the estimate
// overshoots while str0m probes; the allocator's step-up hold must not follow it). When the cap is
// lifted the estimate climbs back (probing, padding) and Bob must get a layer above the lowest
// back.
// /metrics counts the layer switches.
// No event tells "the decoder now outputs another size", so this polls getStats with deadlines.

const { BASE, until, check, accountsAndRoom, api, run } = require('./lib');
const { startRelay } = require('./relay');

const MEDIA_PORT = Number(process.env.MEDIA_PORT || 7990);
const CAP_BPS = 250_000;
const CAP_QUEUE_MS = 250;
// The SDK sends q at a quarter of the camera's 1280 px: the only layer that fits under the cap.
const LOWEST_WIDTH = 320;
// str0m's estimate falls within seconds under loss and delay, but climbs back slowly (probes),
// and the allocator steps up only once the estimate has held for its hold time (3 s, doubled
// after each failed step-up, at most 30 s).
const DOWN_DEADLINE = 30_000;
const UP_DEADLINE = 60_000;
// Once on the lowest layer, Bob stays capped this long, and the SFU may switch his layer at most
// this often meanwhile (one failed step-up and back).
const CAPPED_MS = 12_000;
const CAPPED_SWITCHES = 2;

const relay = startRelay(MEDIA_PORT);

const steps = [];
const test = (name, fn) => steps.push({ name, fn });

const ada = { name: 'Ada', username: 'ada_bw' };
const bob = { name: 'Bob', username: 'bob_bw' };
const people = [ada, bob];
let roomId;

/** Joins the room through the SDK in a blank page of `p`'s context (`window.t.room`). */
async function join(p) {
  const { ws_url: url, token } = await api('POST', `/rooms/${roomId}/join`, p.auth.access_token, {});
  p.page = await p.context.newPage();
  p.page.on('pageerror', e => console.error(`  [${p.name}] ${e.message}`));
  await p.page.goto(`${BASE}/healthz`);
  await p.page.evaluate(async ({ url, token }) => {
    const { Room } = await import('/convene.js');
    window.t = { room: await Room.join({ url, token }) };
  }, { url, token });
}

/** Bob's inbound video and audio from Ada (`room.stats()`), plus a timestamp. */
const inbound = () => bob.page.evaluate(async () => {
  const stats = await window.t.room.stats();
  const video = stats.find(s => s.kind === 'video');
  const audio = stats.find(s => s.kind === 'audio');
  return {
    at: Date.now(),
    width: video?.frameWidth ?? 0,
    decoded: video?.framesDecoded ?? 0,
    audio: audio?.packetsReceived ?? 0,
  };
});
const show = s => `${s.width}px, ${s.decoded} frames, ${s.audio} audio packets`;

/** The SFU's layer switch counter from /metrics. */
async function layerSwitches() {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  return Number(text.match(/^convene_media_layer_switches_total (\d+)/m)?.[1] ?? NaN);
}

/** Bob's frame widths over time (for the log), and the sample where the current width began. */
const trace = [];
let since = null;
const watch = async () => {
  const s = await inbound();
  if (since?.width !== s.width) {
    since = s;
    trace.push({ t: s.at, width: s.width });
  }
  return s;
};
const mark = event => trace.push({ t: Date.now(), width: event });
/** Bob has decoded `frames` frames since his current width began. */
const steady = (s, frames) => s.decoded >= since.decoded + frames;
/** Widths as "seconds since the first sample:width" from trace index `from` on. */
const widths = (from = 0) => trace.slice(from)
  .map(w => `${((w.t - trace[0].t) / 1000).toFixed(1)}s:${w.width}`).join(' ');

let before, switches0;

test('Ada publishes camera and microphone; Bob watches her in a large element', async () => {
  roomId = await accountsAndRoom(people, 'Capped');
  await join(ada);
  await ada.page.evaluate(() => window.t.room.publish({ audio: true, video: true }));
  await join(bob);
  await bob.page.evaluate(() => {
    const { room } = window.t;
    const video = document.createElement('video');
    Object.assign(video, { autoplay: true, muted: true, playsInline: true });
    Object.assign(video.style, { width: '1280px', height: '720px', display: 'block' });
    document.body.replaceChildren(video);
    room.addEventListener('track', e => {
      if (e.detail.track.kind !== 'video') return;
      video.srcObject = new MediaStream([room.mediaTrack(e.detail.track.id)]);
      room.watchElement(e.detail.track.id, video);
    });
  });
  // Above the lowest layer: Chromium may not send f when short of CPU, h will do. The estimate
  // starts high and settles, so wait for 2 s (60 frames; the fake camera runs at 30 fps) on
  // one layer.
  before = await until('Bob decodes a layer above the lowest', watch,
    s => s.width > LOWEST_WIDTH && steady(s, 60), 60_000);
  check(relay.passed > 0, 'the media goes through the relay');
  console.log(`     before the cap: ${show(before)}`);
});

test('capped at 250 kbit/s, Bob drops to the lowest layer, which keeps decoding, and audio flows', async () => {
  switches0 = await layerSwitches();
  const t0 = await watch();
  // Every client's downlink: Ada receives no media (nobody else publishes), so this is Bob's.
  // (Capping only Bob's ports, read from Chromium's stats, twice capped a port that carried
  // nothing in CI while his media went to another.)
  relay.cap('all', CAP_BPS, CAP_QUEUE_MS);
  mark('cap');
  const down = await until('Bob steps down to the lowest layer', watch,
    s => s.width > 0 && s.width <= LOWEST_WIDTH, DOWN_DEADLINE).catch(e => {
    const seconds = (Date.now() - t0.at) / 1000;
    throw new Error(`${e.message}; the cap passed ${relay.capPassed} datagrams ` +
      `(${Math.round(relay.capBytes * 8 / seconds / 1000)} kbit/s) and dropped ${relay.capDropped} in ` +
      `${seconds} s; widths ${trace.map(w => w.width).join(' ')}`);
  });
  // On the lowest layer, video decodes on (60 frames on it).
  const on = await until('Bob decodes on the lowest layer', watch,
    s => s.width <= LOWEST_WIDTH && steady(s, 60), DOWN_DEADLINE);
  const seconds = (on.at - t0.at) / 1000;
  const audio = on.audio - t0.audio;
  const figures = { stepDownSeconds: (down.at - t0.at) / 1000, capped: show(on), seconds, audio,
    relay: { passed: relay.capPassed, dropped: relay.capDropped } };
  console.log(`     ${JSON.stringify(figures)}`);
  // The cap shaped Bob's traffic (whether it had to drop depends on how fast the SFU stepped
  // down; at 250 ms of queue, often nothing).
  check(relay.capPassed > 0, `Bob's traffic went through the cap: ${JSON.stringify(figures)}`);
  // Opus sends 50 packets a second; under the cap at least half of them must arrive.
  check(audio >= 25 * seconds, `Ada's audio kept flowing: ${JSON.stringify(figures)}`);
});

test(`still capped, Bob stays on the lowest layer for ${CAPPED_MS / 1000} s (no flapping)`, async () => {
  // Absence of flapping has no event to wait for: this samples Bob's widths over a fixed time.
  const from = trace.length;
  const t0 = await watch();
  const switchesLow = await layerSwitches();
  let last = t0;
  while (Date.now() - t0.at < CAPPED_MS) last = await watch();
  const switches = await layerSwitches() - switchesLow;
  const changes = trace.length - from;
  const figures = { switches, changes, frames: last.decoded - t0.decoded, widths: widths(from) };
  console.log(`     ${JSON.stringify(figures)}`);
  check(switches <= CAPPED_SWITCHES, `at most ${CAPPED_SWITCHES} layer switches while capped: ${JSON.stringify(figures)}`);
  check(changes <= CAPPED_SWITCHES, `at most ${CAPPED_SWITCHES} width changes while capped: ${JSON.stringify(figures)}`);
  check(last.width > 0 && last.width <= LOWEST_WIDTH, `Bob ends on the lowest layer: ${JSON.stringify(figures)}`);
  // 30 fps camera: at least a third of its frames over the window (probes pad the capped link
  // now and then, which costs some frames; 177 of 360 was the least seen).
  check(figures.frames >= CAPPED_MS / 1000 * 10, `video kept decoding: ${JSON.stringify(figures)}`);
});

test('with the cap lifted, Bob gets a layer above the lowest back', async () => {
  const capped = await watch();
  relay.cap(null);
  mark('lift');
  // A layer above the lowest, decoded for 4 s (120 frames) without a change, counts as recovered
  // (the one from before the cap may take longer: the top layer needs the estimate to climb to
  // ~1.7 Mbit/s and hold there).
  await until('Bob steps back up and stays there', watch, s => s.width > LOWEST_WIDTH && steady(s, 120),
    UP_DEADLINE).catch(e => { throw new Error(`${e.message}; widths ${widths()}`); });
  const up = since;
  const switches = await layerSwitches();
  console.log(`     back up in ${((up.at - capped.at) / 1000).toFixed(1)} s to ${up.width}px (${before.width}px ` +
    `before the cap); layer switches ${switches0} → ${switches}; widths: ${widths()}`);
  check(switches >= switches0 + 2, `the SFU counted a switch down and one up: ${switches0} → ${switches}`);
});

run(people, steps, [], () => relay.close());
