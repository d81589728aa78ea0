// 10 % packet loss between the participants and the SFU, in Chromium: Ada publishes her fake
// camera, Bob watches. The server advertises 127.0.0.2 (impairment.sh) where this script runs a
// UDP relay (relay.js) to the SFU's real socket on 127.0.0.1 (one back socket per client);
// once switched on, the relay drops 10 % of the datagrams each way, for both participants
// (signaling is TCP and unaffected). Bob's video must keep decoding, the NACKs and
// retransmissions must show in Chromium's stats and in the server's /metrics, and Ada's
// connection must be rated below excellent. (`tc netem` would do the dropping in the kernel,
// but this machine's kernel has no netem.)

const { BASE, sleep, until, check, accountsAndRoom, enter, run } = require('./lib');
const { startRelay } = require('./relay');

const MEDIA_PORT = Number(process.env.MEDIA_PORT || 7990);

/** The relay on 127.0.0.2:MEDIA_PORT (relay.js); `relay.loss` is the share of datagrams dropped. */
const relay = startRelay(MEDIA_PORT);

const steps = [];
const test = (name, fn) => steps.push({ name, fn });

const ada = { name: 'Ada', username: 'ada_i' };
const bob = { name: 'Bob', username: 'bob_i' };
const people = [ada, bob];
let roomId;

/** RTP stats of every peer connection of a page (impairment.sh's pages record them). */
const rtp = page => page.evaluate(async () => {
  const out = [];
  for (const pc of window.testPeerConnections) {
    for (const s of (await pc.getStats()).values()) {
      if ((s.type === 'inbound-rtp' || s.type === 'outbound-rtp') && s.kind === 'video') {
        out.push({ type: s.type, framesDecoded: s.framesDecoded ?? 0, nackCount: s.nackCount ?? 0,
          packetsLost: s.packetsLost ?? 0, retransmitted: s.retransmittedPacketsSent ?? 0 });
      }
    }
  }
  return out;
});
const sum = (stats, type, field) => stats.filter(s => s.type === type).reduce((n, s) => n + s[field], 0);

/** The server's media counters from /metrics. */
async function counters() {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const value = name => Number(text.match(new RegExp(`^convene_media_${name}_total (\\d+)`, 'm'))?.[1] ?? NaN);
  return { nacksSent: value('nacks_sent'), nacksReceived: value('nacks_received'), resent: value('retransmitted_packets') };
}

test('Ada and Bob join; Bob decodes Ada on a clean network', async () => {
  roomId = await accountsAndRoom(people, 'Lossy');
  for (const p of people) {
    // Keep the page's peer connections, so the test can read the publisher's own stats.
    await p.context.addInitScript(() => {
      const Native = window.RTCPeerConnection;
      window.testPeerConnections = [];
      window.RTCPeerConnection = class extends Native {
        constructor(...args) {
          super(...args);
          window.testPeerConnections.push(this);
        }
      };
    });
    await enter(p, roomId);
  }
  await until('Bob decodes Ada', () => rtp(bob.page), s => sum(s, 'inbound-rtp', 'framesDecoded') > 0);
});

test('with 10 % of datagrams dropped, video keeps decoding and losses are repaired', async () => {
  check(relay.passed > 0, 'the media goes through the relay');
  relay.loss = 0.10;
  const [bob0, ada0, server0] = [await rtp(bob.page), await rtp(ada.page), await counters()];
  await sleep(15_000);
  const [bob1, ada1, server1] = [await rtp(bob.page), await rtp(ada.page), await counters()];
  const decoded = sum(bob1, 'inbound-rtp', 'framesDecoded') - sum(bob0, 'inbound-rtp', 'framesDecoded');
  const nacked = sum(bob1, 'inbound-rtp', 'nackCount') - sum(bob0, 'inbound-rtp', 'nackCount');
  const resent = sum(ada1, 'outbound-rtp', 'retransmitted') - sum(ada0, 'outbound-rtp', 'retransmitted');
  const figures = { decoded, bobNacks: nacked, adaResent: resent, server0, server1,
    relay: { dropped: relay.dropped, passed: relay.passed } };
  console.log(`     ${JSON.stringify(figures)}`);
  // Chromium's fake camera runs at 30 fps; at least a third of 15 s of frames must decode.
  check(decoded >= 150, `Bob decoded ${decoded} frames in 15 s: ${JSON.stringify(figures)}`);
  check(nacked > 0, `Bob asked the SFU to resend: ${JSON.stringify(figures)}`);
  check(resent > 0, `Ada resent what the SFU asked for: ${JSON.stringify(figures)}`);
  check(server1.nacksSent > server0.nacksSent, `the SFU NACKed Ada: ${JSON.stringify(figures)}`);
  check(server1.nacksReceived > server0.nacksReceived, `the SFU got Bob's NACKs: ${JSON.stringify(figures)}`);
  check(server1.resent > server0.resent, `the SFU resent to Bob from its cache: ${JSON.stringify(figures)}`);
});

test("Ada's connection is rated below excellent on Bob's page", async () => {
  const rated = await until("Bob sees Ada's quality drop", () => bob.page.evaluate(id =>
    window.convene.room.quality.get(id) ?? null, ada.id), q => q && q.quality !== 'excellent');
  console.log(`     ${JSON.stringify(rated)}`);
});

run(people, steps, [], () => relay.close());
