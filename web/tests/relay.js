// The UDP relay impairment.js and bandwidth.js put between Chromium and the SFU (impairment.sh
// makes the server advertise 127.0.0.2, where the relay listens, and relays to the SFU's real
// socket on 127.0.0.1, one back socket per client as a NAT would). This kernel has no netem, so
// the relay does the impairing itself:
// - `relay.loss`: the share of datagrams dropped, each way, for every client (a fixed
//   pseudo-random sequence, so runs lose alike);
// - `relay.cap(ports, bitsPerSecond, maxDelayMs)`: a token bucket on what the SFU sends to the
//   clients whose (Chromium) UDP ports are listed (`'all'`: every client), with a queue holding at most `maxDelayMs` of
//   traffic at that rate; datagrams that do not fit in the queue are dropped. `relay.cap(null)`
//   lifts it (what is still queued goes out at once, in order).

const dgram = require('dgram');

/** A started relay from `127.0.0.2:mediaPort` to `127.0.0.1:mediaPort`. */
function startRelay(mediaPort) {
  const relay = { loss: 0, dropped: 0, passed: 0, capped: null, capDropped: 0, capPassed: 0, capBytes: 0 };
  let seed = 0x2545f491;
  const drop = () => {
    // xorshift32
    seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
    const lost = seed / 2 ** 32 < relay.loss;
    if (lost) relay.dropped++; else relay.passed++;
    return lost;
  };

  const front = dgram.createSocket('udp4');

  // The token bucket: `tokens` bytes may leave now (at most one burst); the rest waits in
  // `queue` (bytes in `queued`) until the rate has earned its size.
  const BURST = 3000;
  let tokens = BURST, filled = Date.now(), queue = [], queued = 0, timer = null;
  const refill = () => {
    const now = Date.now();
    if (relay.capped) tokens = Math.min(BURST, tokens + (now - filled) * relay.capped.rate / 8000);
    filled = now;
  };
  const drain = () => {
    timer = null;
    refill();
    while (queue.length && (!relay.capped || tokens >= queue[0].msg.length)) {
      const { msg, to } = queue.shift();
      queued -= msg.length;
      if (relay.capped) tokens -= msg.length;
      front.send(msg, to.port, to.address);
    }
    if (queue.length) {
      const wait = (queue[0].msg.length - tokens) * 8000 / relay.capped.rate;
      timer = setTimeout(drain, Math.max(1, Math.ceil(wait)));
    }
  };
  const toClient = (msg, to) => {
    const cap = relay.capped;
    if (!cap || (cap.ports !== 'all' && !cap.ports.has(to.port))) {
      front.send(msg, to.port, to.address);
      return;
    }
    if (queued + msg.length > cap.rate / 8000 * cap.maxDelayMs) {
      relay.capDropped++;
      return;
    }
    relay.capPassed++;
    relay.capBytes += msg.length;
    queue.push({ msg, to });
    queued += msg.length;
    if (!timer) drain();
  };
  relay.cap = (ports, rate, maxDelayMs) => {
    refill();
    relay.capped = ports ? { ports: ports === 'all' ? 'all' : new Set(ports), rate, maxDelayMs } : null;
    if (!relay.capped) {
      clearTimeout(timer);
      drain();
    }
  };

  const backs = new Map(); // client "addr:port" → socket towards the SFU
  front.on('message', (msg, from) => {
    const key = `${from.address}:${from.port}`;
    let back = backs.get(key);
    if (!back) {
      back = dgram.createSocket('udp4');
      back.bind(0, '127.0.0.1');
      back.on('message', reply => { if (!drop()) toClient(reply, from); });
      backs.set(key, back);
    }
    if (!drop()) back.send(msg, mediaPort, '127.0.0.1');
  });
  front.bind(mediaPort, '127.0.0.2');
  relay.close = () => {
    clearTimeout(timer);
    front.close();
    for (const b of backs.values()) b.close();
  };
  return relay;
}

module.exports = { startRelay };
