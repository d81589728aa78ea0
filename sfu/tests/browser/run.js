// Three headless Chromium pages meet through the SFU (examples/browser_room.rs must be serving
// on $URL): each decodes the others' video and receives their audio; one shares its screen and
// the others decode it; it leaves and the others' subscriber connection drops its tracks.
const fs = require('fs'), os = require('os'), path = require('path');
const { chromium } = require('playwright-core');
const URL_ = process.env.URL || 'http://127.0.0.1:8090/';
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function until(what, page, pred, ms = 15000) {
  const t0 = Date.now(); let last;
  while (Date.now() - t0 < ms) {
    last = await page.evaluate(() => inbound());
    if (pred(last)) return last;
    await sleep(250);
  }
  throw new Error(`${what}: ${JSON.stringify(last)}`);
}

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convene-chromium-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--auto-select-desktop-capture-source=Entire screen'],
  });
  let ok = false;
  try {
    const pages = [];
    for (const name of ['p1', 'p2', 'p3']) {
      const page = await ctx.newPage();
      page.on('console', m => console.error(`[${name}]`, m.text()));
      await page.goto(URL_);
      // p2 publishes its camera as two simulcast layers.
      await page.evaluate(([n, simulcast]) => join(n, { simulcast }), [name, name === 'p2']);
      pages.push(page);
    }
    const decodes = n => s => s.video.filter(v => v.frames > 0).length >= n;
    const hears = n => s => s.audio.filter(a => a.packets > 0).length >= n;
    for (const [i, p] of pages.entries()) {
      const s = await until(`p${i + 1} decodes 2 videos and hears 2`, p, s => decodes(2)(s) && hears(2)(s));
      console.log(`p${i + 1}`, JSON.stringify(s));
    }
    await pages[2].evaluate(() => shareScreen());
    for (const p of pages.slice(0, 2)) {
      const s = await until('screen share decoded', p, decodes(3));
      console.log('with screen', JSON.stringify(s));
    }
    await pages[2].evaluate(() => leave());
    for (const p of pages.slice(0, 2)) {
      const s = await until('p3 tracks gone', p, s => s.inactive >= 3);
      console.log('after leave', JSON.stringify(s));
    }
    ok = true;
  } catch (e) { console.log('FAIL', String(e)); }
  await ctx.close(); fs.rmSync(dir, { recursive: true, force: true });
  console.log(ok ? 'BROWSER CHECK PASSED' : 'BROWSER CHECK FAILED');
  process.exit(ok ? 0 : 1);
})();
