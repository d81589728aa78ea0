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
const { sleep, until, check, api, accountsAndRoom, enter, run } = require('./lib');

const steps = [];
const test = (name, fn) => steps.push({ name, fn });

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
const bob = { name: 'Bob', username: 'bob_q' };
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
  roomId = await accountsAndRoom(people, 'Tone');
});

test('both join; Bob publishes a disabled (silent) microphone', async () => {
  // Bob's page disables every microphone track it captures, before it is published.
  await bob.context.addInitScript(() => {
    const native = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async constraints => {
      const stream = await native(constraints);
      for (const t of stream.getAudioTracks()) t.enabled = false;
      return stream;
    };
  });
  for (const p of people) {
    await enter(p, roomId);
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
      if (!(['excellent', 'good'].includes(t.quality) && t.label === t.quality)) {
        const room = await api('GET', `/rooms/${roomId}`, ada.auth.access_token);
        check(false, `${me.name} sees ${p.name}'s loopback connection as ${t.quality} (${t.label}); ` +
          `live view: ${JSON.stringify(room.live)}`);
      }
    }
  }
  const room = await api('GET', `/rooms/${roomId}`, ada.auth.access_token);
  for (const p of people) {
    const live = room.live.participants.find(l => l.id === p.id);
    check(live?.connection_quality?.participant === p.id && typeof live.connection_quality.bitrate_kbps === 'number',
      `the live view rates ${p.name}: ${JSON.stringify(room.live)}`);
  }
});

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'convene-quality-'));
const wav = path.join(dir, 'tone.wav');
toneWav(wav);
run(people, steps, [`--use-file-for-fake-audio-capture=${wav}`], () => fs.rmSync(dir, { recursive: true, force: true }));
