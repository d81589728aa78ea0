// Three people hold a meeting through the web client, each in their own headless Chromium
// context with fake devices: they register, one sets up a team and a room, all join from the
// rooms list, see and hear each other, share a screen, mute, drop a socket, and leave.
// Steps run in order and share state; a step after a failure is reported as not run.
// Run through run.sh, which starts the server and sets BASE_URL.

const { BASE, until, check, openPage, run } = require('./lib');

const steps = [];
const test = (name, fn) => steps.push({ name, fn });

const people = [
  { name: 'Ada', username: 'ada' },
  { name: 'Bob', username: 'bob' },
  { name: 'Cyd', username: 'cyd' },
];
const [ada, bob, cyd] = people;
const others = me => people.filter(p => p !== me && !p.gone);

/** What a participant's page sees of the room: tiles, participants list and inbound stats. */
const view = page => page.evaluate(async () => ({
  tiles: [...document.querySelectorAll('#grid .tile')].map(t => ({
    participant: t.dataset.participant,
    source: t.dataset.source,
    caption: t.querySelector('figcaption').textContent,
    width: t.querySelector('video').videoWidth,
    videoOff: t.classList.contains('video-off'),
    micOff: t.classList.contains('mic-off'),
  })),
  people: [...document.querySelectorAll('#people li')].map(li => li.textContent),
  notice: document.querySelector('.notice')?.textContent ?? null,
  stats: window.convene?.room ? await window.convene.room.stats() : [],
}));

const remote = (v, who, source) => v.stats.filter(s => s.participantId === who.id && s.source === source);
const tileOf = (v, who, source = 'camera') => v.tiles.find(t => t.participant === who.id && t.source === source);

test('the binary serves the client at / and keeps JSON 404s for the API', async () => {
  const index = await fetch(`${BASE}/`);
  check(index.ok && index.headers.get('content-type').startsWith('text/html'), `GET / → ${index.status}`);
  check((await index.text()).includes('app.js'), 'index.html loads app.js');
  const sdk = await fetch(`${BASE}/convene.js`);
  check(sdk.ok && sdk.headers.get('content-type').startsWith('text/javascript'), `GET /convene.js → ${sdk.status}`);
  const etag = sdk.headers.get('etag');
  const again = await fetch(`${BASE}/convene.js`, { headers: { 'if-none-match': etag } });
  check(again.status === 304, `conditional GET → ${again.status}`);
  const api = await fetch(`${BASE}/api/v1/nothing-here`);
  check(api.status === 404 && (await api.json()).error.code === 'not_found', `GET /api/v1/nothing-here → ${api.status}`);
  check((await fetch(`${BASE}/nothing-here.js`)).status === 404, 'a missing file is a 404');
  check((await fetch(`${BASE}/tests/run.sh`)).status === 404, 'the tests are not served');
});

test('three people create accounts through the sign-in page', async () => {
  for (const p of people) {
    await p.page.goto(BASE);
    const form = p.page.locator('form.register');
    await form.getByLabel('Name', { exact: true }).fill(p.name);
    await form.getByLabel('Username').fill(p.username);
    await form.getByLabel('E-mail').fill(`${p.username}@example.com`);
    await form.getByLabel('Password').fill('correct horse battery');
    await form.getByRole('button', { name: 'Create account' }).click();
    await p.page.locator('.bar .who', { hasText: p.name }).waitFor();
  }
});

test('signing out and in again works', async () => {
  await bob.page.getByRole('button', { name: 'Sign out' }).click();
  const form = bob.page.locator('form.signin');
  await form.getByLabel('E-mail or username').fill('bob');
  await form.getByLabel('Password').fill('wrong password');
  await form.getByRole('button', { name: 'Sign in' }).click();
  await form.getByRole('alert').filter({ hasText: /./ }).waitFor();
  await form.getByLabel('Password').fill('correct horse battery');
  await form.getByRole('button', { name: 'Sign in' }).click();
  await bob.page.locator('.bar .who', { hasText: 'Bob' }).waitFor();
});

test('Ada creates a team, adds Bob and Cyd, and creates a room', async () => {
  const page = ada.page;
  await page.locator('form.new-team').getByLabel('Team name').fill('Core');
  await page.locator('form.new-team').getByRole('button').click();
  const team = page.locator('.team[data-team="Core"]');
  for (const [i, p] of [bob, cyd].entries()) {
    await team.locator('form.add-member input').fill(p.username);
    await team.locator('form.add-member button').click();
    await team.locator('h2', { hasText: `${i + 2} members` }).waitFor();
  }
  await team.locator('form.new-room input').fill('Standup');
  await team.locator('form.new-room button').click();
  await page.locator('.team[data-team="Core"] li[data-room="Standup"]').waitFor();
  if (process.env.SCREENSHOTS) await page.screenshot({ path: `${process.env.SCREENSHOTS}/rooms.png` });
});

test('all three join the room from their rooms list', async () => {
  for (const p of people) {
    await p.page.getByRole('button', { name: 'Refresh' }).click();
    await p.page.locator('li[data-room="Standup"]').getByRole('link', { name: 'Join' }).click();
    await p.page.locator('#grid .tile.self').waitFor();
    p.id = await until('joined', () => p.page.evaluate(() => window.convene?.room?.me?.id), Boolean);
  }
});

test("each decodes the others' video and receives their audio", async () => {
  for (const me of people) {
    const v = await until(`${me.name} sees and hears the others`, () => view(me.page), v =>
      others(me).every(o =>
        remote(v, o, 'camera').some(s => s.framesDecoded > 0) &&
        remote(v, o, 'microphone').some(s => s.packetsReceived > 0) &&
        tileOf(v, o)?.width > 0));
    for (const o of others(me)) check(tileOf(v, o).caption === o.name, `${me.name} labels ${o.name}'s tile`);
    check(v.people.length === 3 && others(me).every(o => v.people.some(name => name.startsWith(o.name))),
      `${me.name}'s participants list: ${v.people}`);
    check(v.notice === '', `${me.name} is shown no error: ${v.notice}`);
  }
});

test("a chat message reaches everyone through the room's meeting chat, and stays", async () => {
  const chat = ada.page.locator('form.say');
  await chat.getByLabel('Message').fill('Hello from Ada');
  await chat.getByRole('button', { name: 'Send' }).click();
  await ada.page.locator('#chat li', { hasText: 'Ada (you) Hello from Ada' }).waitFor();
  for (const me of [bob, cyd]) await me.page.locator('#chat li', { hasText: 'Ada Hello from Ada' }).waitFor();
  // Kept with the room: a reload shows it again, once.
  await cyd.page.reload();
  await cyd.page.locator('#grid .tile.self').waitFor();
  await cyd.page.locator('#chat li', { hasText: 'Ada Hello from Ada' }).waitFor();
  check(await cyd.page.locator('#chat li').count() === 1, 'the message is shown once after a reload');
});

test('muting the microphone and stopping the camera show on the others\' tiles', async () => {
  await bob.page.getByRole('button', { name: 'Mute' }).click();
  await bob.page.getByRole('button', { name: 'Stop video' }).click();
  for (const me of [ada, cyd]) {
    await until(`${me.name} sees Bob muted with his camera off`, () => view(me.page),
      v => tileOf(v, bob)?.micOff && tileOf(v, bob)?.videoOff);
  }
  if (process.env.SCREENSHOTS) await ada.page.screenshot({ path: `${process.env.SCREENSHOTS}/muted.png` });
  await bob.page.getByRole('button', { name: 'Unmute' }).click();
  await bob.page.getByRole('button', { name: 'Start video' }).click();
  for (const me of [ada, cyd]) {
    const before = (await view(me.page)).stats.filter(s => s.participantId === bob.id && s.source === 'camera')
      .reduce((n, s) => n + s.framesDecoded, 0);
    await until(`${me.name} sees Bob back`, () => view(me.page), v =>
      !tileOf(v, bob)?.micOff && !tileOf(v, bob)?.videoOff &&
      remote(v, bob, 'camera').reduce((n, s) => n + s.framesDecoded, 0) > before);
  }
});

test('Cyd shares her screen and the others decode it', async () => {
  await cyd.page.getByRole('button', { name: 'Share screen' }).click();
  await cyd.page.getByRole('button', { name: 'Stop sharing' }).waitFor();
  for (const me of [ada, bob]) {
    const v = await until(`${me.name} decodes Cyd's screen`, () => view(me.page), v =>
      remote(v, cyd, 'screen').some(s => s.framesDecoded > 0) && tileOf(v, cyd, 'screen')?.width > 0);
    check(tileOf(v, cyd, 'screen').caption === 'Cyd (screen)', 'the screen tile is labelled');
  }
  if (process.env.SCREENSHOTS) await ada.page.screenshot({ path: `${process.env.SCREENSHOTS}/meeting.png` });
});

test('Cyd stops sharing and the screen tile goes away', async () => {
  await cyd.page.getByRole('button', { name: 'Stop sharing' }).click();
  await cyd.page.getByRole('button', { name: 'Share screen' }).waitFor();
  for (const me of [ada, bob]) {
    await until(`${me.name} drops Cyd's screen`, () => view(me.page), v => !tileOf(v, cyd, 'screen') && tileOf(v, cyd));
  }
});

test('a dropped signaling socket resumes the session without losing media', async () => {
  const sockets = () => ada.page.evaluate(() => window.testSockets.map(ws => ws.readyState));
  const before = (await sockets()).length;
  await ada.page.evaluate(() => window.testSockets.at(-1).close());
  await until('Ada reconnects', sockets, states => states.length === before + 1 && states.at(-1) === 1 /* OPEN */);
  await until('Ada resumed', () => ada.page.locator('.notice').textContent(), text => text === '');
  // Signaling works both ways again: Bob's mute reaches Ada, and Ada's reaches Bob.
  await bob.page.getByRole('button', { name: 'Mute' }).click();
  await ada.page.getByRole('button', { name: 'Mute' }).click();
  await until('Ada sees Bob mute', () => view(ada.page), v => tileOf(v, bob)?.micOff);
  await until('Bob sees Ada mute', () => view(bob.page), v => tileOf(v, ada)?.micOff);
  await bob.page.getByRole('button', { name: 'Unmute' }).click();
  await ada.page.getByRole('button', { name: 'Unmute' }).click();
  await until('Ada sees Bob unmute', () => view(ada.page), v => !tileOf(v, bob)?.micOff);
  const v = await view(ada.page);
  const frames = v.stats.filter(s => s.participantId === bob.id && s.source === 'camera').reduce((n, s) => n + s.framesDecoded, 0);
  await until("Ada still decodes Bob's video", () => view(ada.page), w =>
    remote(w, bob, 'camera').reduce((n, s) => n + s.framesDecoded, 0) > frames);
});

test("Cyd leaves and the others' pages drop her", async () => {
  await cyd.page.getByRole('button', { name: 'Leave' }).click();
  await cyd.page.getByText('You left the meeting.').waitFor();
  cyd.gone = true;
  for (const me of [ada, bob]) {
    const v = await until(`${me.name} drops Cyd`, () => view(me.page), v =>
      v.tiles.every(t => t.participant !== cyd.id) && v.people.length === 2);
    check(others(me).every(o => tileOf(v, o)), `${me.name} still shows the others`);
  }
});

test("Cyd's dashboard draws the team's meeting minutes and a sprint's burndown", async () => {
  const page = cyd.page;
  // A project with a running sprint, set up through the API with Cyd's saved sign-in.
  const api = (path, body) => page.evaluate(async ([path, body]) => {
    const auth = JSON.parse(localStorage.getItem('convene.auth'));
    const res = await fetch(`/api/v1${path}`, {
      method: body ? 'POST' : 'GET',
      headers: { authorization: `Bearer ${auth.access_token}`, 'content-type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: await res.json() };
  }, [path, body]);
  const teams = await api('/teams');
  const team = teams.body.items.find(t => t.name === 'Core');
  const project = await api('/projects', { team_id: team.id, name: 'Web', key: 'WEB' });
  check(project.status === 201, `project: ${JSON.stringify(project)}`);
  const day = n => new Date(Date.now() + n * 86_400_000).toISOString().slice(0, 10);
  const sprint = await api(`/projects/${project.body.id}/sprints`, { name: 'Sprint 1', start_date: day(0), end_date: day(9) });
  check(sprint.status === 201, `sprint: ${JSON.stringify(sprint)}`);
  for (const estimate of [3, 5]) {
    const task = await api(`/projects/${project.body.id}/tasks`, { title: `t${estimate}`, estimate, sprint_id: sprint.body.id });
    check(task.status === 201, `task: ${JSON.stringify(task)}`);
  }
  check((await api(`/sprints/${sprint.body.id}/start`, {})).status === 200, 'sprint starts');

  await page.goto(`${BASE}/dashboard/`);
  check(await page.locator('h1', { hasText: 'Dashboard' }).isVisible(), 'the dashboard page at /dashboard/');
  const styled = await page.locator('#me .card').first().evaluate(e => getComputedStyle(e).borderTopStyle);
  check(styled === 'solid', `the dashboard's stylesheet applies (the CSP allows no inline styles): ${styled}`);
  const meetings = page.locator('svg[aria-label="Meeting minutes per member"]');
  await meetings.waitFor();
  const bars = await meetings.locator('rect').evaluateAll(rs => rs.map(r => ({
    label: r.querySelector('title').textContent, height: Number(r.getAttribute('height')),
  })));
  for (const p of people) {
    const bar = bars.find(b => b.label.startsWith(`${p.name}:`));
    check(bar && bar.height > 0, `${p.name} has meeting minutes: ${JSON.stringify(bars)}`);
  }
  const burndown = page.locator('svg[aria-label="Remaining points of Sprint 1"]');
  await burndown.waitFor();
  check((await burndown.locator('path').count()) === 2, 'remaining and ideal lines');
  const heading = await page.locator('#project-overview h2').textContent();
  check(heading.includes('Sprint 1') && heading.includes('active'), `burndown heading: ${heading}`);
});

test('closing the tab leaves at once, without waiting out the resume grace period', async () => {
  await bob.page.close({ runBeforeUnload: true });
  bob.gone = true;
  // Well under the server's 15 s grace for a dropped socket.
  const v = await until('Ada drops Bob', () => view(ada.page), v =>
    v.tiles.every(t => t.participant !== bob.id) && v.people.length === 1, 5000);
  check(v.tiles.length === 1 && v.tiles[0].participant === 'me', `Ada is alone: ${JSON.stringify(v.tiles)}`);
});

// Networks that block everything but the relay: media only through the embedded TURN server,
// with the ICE servers the join endpoint hands out (run.sh lets the relay reach 127.0.0.1).
// Each protocol alone: offered both, Chrome's choice between a UDP and a TCP relay pair depends on
// how it enumerates this host's networks (it prefers a TCP relay on a cheaper network to a UDP relay
// on a costlier one, and the set of relay candidates per network varied between runs).
for (const [mode, protocol] of [['relay-udp', 'udp'], ['relay-tcp', 'tcp']]) {
  test(`Ada and Cyd meet through the TURN relay only (${protocol})`, async () => {
    const room = await ada.page.evaluate(() => location.hash);
    check(room.startsWith('#/rooms/'), `Ada is in the room: ${room}`);
    cyd.gone = false;
    for (const p of [ada, cyd]) {
      await p.page.goto(`${BASE}/?ice=${mode}${room}`);
      await p.page.locator('#grid .tile.self').waitFor();
    }
    for (const [me, other] of [[ada, cyd], [cyd, ada]]) {
      await until(`${me.name} decodes ${other.name} through the relay`, () => view(me.page), v =>
        remote(v, other, 'camera').some(s => s.framesDecoded > 0) &&
        remote(v, other, 'microphone').some(s => s.packetsReceived > 0));
      // The selected pair may still be an earlier one while checks finish (no event says
      // when it is final), so it is polled; a timeout reports the last one seen.
      await until(`${me.name}'s connections use the relay over ${protocol}`,
        () => me.page.evaluate(() => window.convene.room.transport()),
        t => t.publisher === `relay/${protocol}` && t.subscriber === `relay/${protocol}`);
    }
  });
}

// One context per person: separate storage, as on separate machines.
run(people, steps, ['--auto-select-desktop-capture-source=Entire screen'], undefined, {
  async prepare(p) {
    // Keep a handle on the page's WebSockets so a test can drop one.
    await p.context.addInitScript(() => {
      const Native = window.WebSocket;
      window.testSockets = [];
      window.WebSocket = class extends Native {
        constructor(...args) {
          super(...args);
          window.testSockets.push(this);
        }
      };
    });
    await openPage(p);
  },
  async explain() {
    for (const p of people) {
      const shown = await p.page?.locator('[role=alert], .notice').allTextContents().catch(() => []);
      const text = shown?.filter(Boolean).join(' | ');
      if (text) console.log(`     ${p.name}'s page says: ${text}`);
    }
  },
});
