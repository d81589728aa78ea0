// usage: ICE_SERVERS='[{"urls":"turn:127.0.0.1:3478?transport=udp","username":"u","credential":"p"}]' node relay.js
// Prints the page's result as JSON on stdout; exit 0 when the call worked.
const http = require('http'), fs = require('fs'), os = require('os'), path = require('path');
const { chromium } = require('playwright-core');

(async () => {
  const html = fs.readFileSync(path.join(__dirname, 'relay.html'));
  const server = http.createServer((_, rsp) => { rsp.setHeader('content-type', 'text/html'); rsp.end(html); });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'convene-turn-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
  });
  let result;
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    result = await page.evaluate(([servers, ms]) => relayCall(servers, ms), [JSON.parse(process.env.ICE_SERVERS), 2000]);
  } catch (e) {
    result = { ok: false, error: String(e).split('\n')[0] };
  }
  console.log(JSON.stringify(result));
  await ctx.close(); server.close(); fs.rmSync(profile, { recursive: true, force: true });
  process.exit(result.ok ? 0 : 1);
})();
