// WHIP from one headless Chromium page, WHEP into another, through `convene serve` on $URL
// (whip.sh starts it): the viewer connects first and waits; once the publisher is up, the
// viewer decodes its video (30 frames, framesDecoded in getStats) and receives its audio;
// DELETE ends both sessions and the room is empty.
const fs = require('fs'), os = require('os'), path = require('path');
const { chromium } = require('playwright-core');
const URL_ = process.env.URL || 'http://127.0.0.1:8091';
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function api(method, p, token, body) {
  const r = await fetch(URL_ + p, {
    method, body: body && JSON.stringify(body),
    headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
  });
  const v = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(v)}`);
  return v;
}

async function until(what, page, pred, ms = 20000) {
  const t0 = Date.now(); let last;
  while (Date.now() - t0 < ms) {
    last = await page.evaluate(() => inbound());
    if (pred(last)) return last;
    await sleep(250);
  }
  throw new Error(`${what}: ${JSON.stringify(last)}`);
}

(async () => {
  // Two users in one team and a room, through the REST API.
  const users = [];
  for (const name of ['whippub', 'whepview']) {
    const r = await api('POST', '/api/v1/auth/register',
      null, { email: `${name}@example.com`, username: name, password: 'correct horse battery', display_name: name });
    users.push({ id: r.user.id, access: r.access_token });
  }
  const team = await api('POST', '/api/v1/teams', users[0].access, { name: 'T' });
  await api('POST', `/api/v1/teams/${team.id}/members`, users[0].access, { user_id: users[1].id, role: 'member' });
  const room = (await api('POST', '/api/v1/rooms', users[0].access, { name: 'whip', team_id: team.id })).id;
  const [pubToken, viewToken] = await Promise.all(users.map(u =>
    api('POST', `/api/v1/rooms/${room}/join`, u.access, {}).then(j => j.token)));

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convene-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection'],
  });
  // The check page is served on the server's origin (fulfilled by Playwright), so its WHIP and
  // WHEP requests are same-origin, as they would be from the product's own web client.
  const html = fs.readFileSync(path.join(__dirname, 'whip.html'), 'utf8');
  await ctx.route(`${URL_}/whip-check`, r => r.fulfill({ contentType: 'text/html', body: html }));
  let ok = false;
  try {
    const open = async name => {
      const page = await ctx.newPage();
      page.on('console', m => console.error(`[${name}]`, m.text()));
      await page.goto(`${URL_}/whip-check`);
      return page;
    };
    const viewer = await open('whep'), publisher = await open('whip');
    console.log('whep session', await viewer.evaluate(([r, t]) => whep(r, t), [room, viewToken]));
    console.log('whip session', await publisher.evaluate(([r, t]) => whip(r, t), [room, pubToken]));
    const s = await until('viewer decodes video and hears audio', viewer,
      s => s.video.some(v => v.frames >= 30) && s.audio.some(a => a.packets > 0));
    console.log('viewer', JSON.stringify(s));
    const live = await api('GET', `/api/v1/rooms/${room}`, users[0].access);
    console.log('live', JSON.stringify(live.live));
    const pub = live.live.participants.find(p => p.id === users[0].id);
    if (!pub || pub.tracks.length !== 2) throw new Error('the WHIP publisher should show two tracks');
    for (const [name, page] of [['whip', publisher], ['whep', viewer]]) {
      const status = await page.evaluate(() => end());
      if (status !== 200) throw new Error(`DELETE ${name}: ${status}`);
    }
    const after = await api('GET', `/api/v1/rooms/${room}`, users[0].access);
    if (after.live.participants.length !== 0) throw new Error(`still live: ${JSON.stringify(after.live)}`);
    ok = true;
  } catch (e) { console.log('FAIL', String(e)); }
  await ctx.close(); fs.rmSync(dir, { recursive: true, force: true });
  console.log(ok ? 'WHIP/WHEP BROWSER CHECK PASSED' : 'WHIP/WHEP BROWSER CHECK FAILED');
  process.exit(ok ? 0 : 1);
})();
