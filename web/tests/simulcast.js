// Simulcast through the real server: a Chromium publisher sends its camera in three encodings
// (q/h/f); two Chromium subscribers show it, one in a small tile and one in a large tile. The
// SDK reports each tile's size; the SFU must forward the small tile a lower layer than the large
// one, switch layers when the tiles swap sizes (video keeps decoding), and pause at the
// publisher (dynacast) the encoding nobody receives.
// No event tells "the decoder now outputs another resolution", so this polls getStats.
// Run through run.sh, which starts the server and sets BASE_URL.

const { BASE, sleep, until, check, api, accountsAndRoom, openPage, run } = require('./lib');

const steps = [];
const test = (name, fn) => steps.push({ name, fn });

const people = [
  { name: 'Publisher', username: 'pub' },
  { name: 'Small', username: 'small', tile: [160, 90] },
  { name: 'Large', username: 'large', tile: [1280, 720] },
];
const [publisher, small, large] = people;
let roomId;

/** The subscriber's inbound video from the publisher: frame size and frames decoded. */
const inbound = p => p.page.evaluate(async () => {
  const s = (await window.t.room.stats()).find(x => x.kind === 'video');
  return s ? { width: s.frameWidth, height: s.frameHeight, decoded: s.framesDecoded } : null;
});

/** What the publisher's encoder sends per rid: size, bitrate limits (for the log). */
const outbound = () => publisher.page.evaluate(async () => {
  const pc = [...(await window.t.room.local.get('camera').transceiver.sender.getStats()).values()];
  return pc.filter(s => s.type === 'outbound-rtp')
    .map(s => `${s.rid}:${s.frameWidth ?? 0}x${s.frameHeight ?? 0}${s.qualityLimitationReason !== 'none' ? `(${s.qualityLimitationReason})` : ''}`)
    .sort().join(' ');
});

/** The publisher's encodings and whether each is active. */
const encodings = () => publisher.page.evaluate(() =>
  window.t.room.local.get('camera').transceiver.sender.getParameters().encodings.map(e => `${e.rid}:${e.active}`));

test('three users, a team and a room over the REST API', async () => {
  roomId = await accountsAndRoom(people, 'Simulcast');
});

test('the publisher joins and sends its camera in three encodings', async () => {
  const join = await api('POST', `/rooms/${roomId}/join`, publisher.auth.access_token, {});
  await publisher.page.goto(`${BASE}/healthz`);
  await publisher.page.evaluate(async ({ url, token }) => {
    const { Room } = await import('/convene.js');
    const room = await Room.join({ url, token });
    window.t = { room };
    await room.publish({ audio: false, video: true });
  }, { url: join.ws_url, token: join.token });
  const rids = await encodings();
  check(rids.join() === 'q:true,h:true,f:true', `encodings ${rids}`);
});

test('two subscribers show the camera in a small and a large tile', async () => {
  for (const p of [small, large]) {
    const join = await api('POST', `/rooms/${roomId}/join`, p.auth.access_token, {});
    await p.page.goto(`${BASE}/healthz`);
    await p.page.evaluate(async ({ url, token, tile: [w, h] }) => {
      const { Room } = await import('/convene.js');
      const room = await Room.join({ url, token });
      window.t = { room };
      const video = document.createElement('video');
      Object.assign(video, { autoplay: true, muted: true, playsInline: true });
      Object.assign(video.style, { width: `${w}px`, height: `${h}px`, display: 'block' });
      document.body.replaceChildren(video);
      window.t.video = video;
      room.addEventListener('track', e => {
        if (e.detail.track.kind !== 'video') return;
        video.srcObject = new MediaStream([room.mediaTrack(e.detail.track.id)]);
        room.watchElement(e.detail.track.id, video);
      });
    }, { url: join.ws_url, token: join.token, tile: p.tile });
  }
});

test('the small tile receives a lower layer than the large one', async () => {
  const s = await until('small tile gets a small layer', () => inbound(small), v => v?.decoded > 0 && v.width > 0 && v.width <= 320);
  const l = await until('large tile gets a larger layer', () => inbound(large), v => v?.decoded > 0 && v.width > s.width);
  console.log(`     small ${s.width}x${s.height}, large ${l.width}x${l.height}; publisher sends ${await outbound()}`);
  small.before = s;
  large.before = l;
});

test('dynacast pauses the one encoding nobody receives', async () => {
  // Small receives q, large h or f (Chromium may not send f when short of CPU or uplink): the
  // third is needed by nobody.
  const want = r => r.includes('q:true') && r.filter(e => e.endsWith(':true')).length === 2;
  // Layers nobody needs are paused after a 3 s grace period.
  const rids = await until('h paused at the publisher', encodings, want);
  console.log(`     publisher encodings ${rids}`);
});

test('swapping the tile sizes switches the layers while video keeps decoding', async () => {
  const resize = (p, [w, h]) => p.page.evaluate(([w, h]) => {
    Object.assign(window.t.video.style, { width: `${w}px`, height: `${h}px` });
  }, [w, h]);
  await resize(small, large.tile);
  await resize(large, small.tile);
  const s = await until('formerly small tile switches up', () => inbound(small), v => v.width > small.before.width);
  const l = await until('formerly large tile switches down', () => inbound(large), v => v.width < large.before.width);
  console.log(`     now small→large ${s.width}x${s.height}, large→small ${l.width}x${l.height}; publisher sends ${await outbound()}`);
  // Still decoding after the switch.
  for (const [p, seen] of [[small, s], [large, l]]) {
    await until(`${p.name} keeps decoding`, () => inbound(p), v => v.decoded > seen.decoded + 10);
  }
});

test('a hidden tile stops its video, and showing it again resumes it', async () => {
  await large.page.evaluate(() => { window.t.video.style.display = 'none'; });
  // Hidden: decoding stops (no frames arrive).
  let prev = await inbound(large);
  const stopped = await until('hidden tile stops decoding', async () => {
    await sleep(1000);
    const now = await inbound(large);
    const same = now.decoded === prev.decoded;
    prev = now;
    return same;
  }, Boolean);
  check(stopped, 'frames stopped');
  const at = (await inbound(large)).decoded;
  await large.page.evaluate(() => { window.t.video.style.display = 'block'; });
  await until('shown again, it decodes', () => inbound(large), v => v.decoded > at + 10);
});

// One 720p three-layer encoder and two decoders on two shared cores: a longer timeout.
run(people, steps, [], undefined, { timeout: 60_000, context: { viewport: { width: 1400, height: 900 } }, prepare: openPage });
