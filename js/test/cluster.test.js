// Browser tests of the built-in apps across a group (issue 15): two `switchboard serve
// --engine redis` nodes over one redis-server of the test's own, each person's browser
// (headless Chromium through playwright-core, as apps.test.js drives it) on one node. The
// apps keep accounts, rooms, conversations and polls in Redis, and the hub carries
// publications, presence, private messages and the mailbox between the nodes, so what
// people do on one node shows to people on the other as if there were one server.
//
// Covered: Alice signs up on node 1, Bob on node 2; in the lobby each sees the other's
// messages, typing, presence and join; a room Alice creates is offered live on node 2, and
// Bob's posts there are unread on node 1; Bob's DM reaches Alice's page live (and Bob sees
// it delivered); her sign-out on node 1 ends her session on node 2 too; a DM sent while
// she is signed out is kept, and she gets it, marked late, when she signs in on node 2; a
// poll Alice creates on node 1 takes votes through both nodes, and every page's chart, the
// owner's on node 1 first, converges to the same counts (each node coalesces its own
// pushes; the `seq` of a tally comes from the store, so the newest wins whichever node
// sent it); the watchers are counted over the group; closing on node 1 locks the ballots
// on node 2; the home page shows the group's people online and rooms on either node.
// Screenshots of both people's chat and vote pages (English, desktop):
// docs/screenshots/cluster-{chat,vote}-node{1,2}.png.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startRedis, startCluster } from './server.js';
import { APPS, SHOTS, useChromium, person, online, waitFor, signUp, signIn } from './pages.js';

useChromium();

const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
const bodies = (page) => texts(page, '#messages .msg:not(.pending) .msg-body');
const members = (page) => texts(page, '#member-list .member .name');
const states = (page) => texts(page, '#messages .msg-state');
const title = (page) => page.locator('#conversation-title').textContent();

/** Types a message into the open conversation and presses Enter. */
async function say(page, text, where = 'Message #lobby') {
  const box = page.getByLabel(where, { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** The unread badge of a conversation in the sidebar ('' when none, null when absent). */
function badge(page, label) {
  return page.evaluate((label) => {
    for (const b of document.querySelectorAll('#room-list .nav-item, #dm-list .nav-item')) {
      if (b.querySelector('.name')?.textContent === label) return b.querySelector('.badge')?.textContent ?? '';
    }
    return null;
  }, label);
}

/** Creates a poll through the vote page's form (results always shown, votes changeable); resolves to its id. */
async function createPoll(page, url, question, options) {
  await page.goto(`${url}/vote`);
  await online(page);
  await page.getByLabel('Question').fill(question);
  for (let i = 0; i < options.length; i++) {
    if (i >= 2) await page.getByRole('button', { name: 'Add an option' }).click();
    await page.getByLabel(`Option ${i + 1}`, { exact: true }).fill(options[i]);
  }
  await page.getByLabel('Show the results').selectOption({ label: 'Always, live' });
  const box = page.getByLabel('Voters may change their vote');
  if (!(await box.isChecked())) await box.click();
  await page.getByRole('button', { name: 'Create poll' }).click();
  await page.waitForURL(/\/vote\?p=/);
  await online(page);
  await page.locator('#poll-title').filter({ hasText: question }).waitFor();
  return new URL(page.url()).searchParams.get('p');
}

/** Opens poll `id` on the node at `url` and waits for its ballot. */
async function openPoll(page, url, id) {
  await page.goto(`${url}/vote?p=${id}`);
  await online(page);
  await page.locator('#ballot .choice').first().waitFor();
}

const choose = (page, text) => page.locator('#ballot .choice', { hasText: text }).click();

/** The counts the page's chart shows, top to bottom, as `[n, …]` in JSON ('null' while there is none). */
function chart(page) {
  return page.evaluate(() => {
    const el = document.querySelector('#results .chart');
    if (!el || el.hasAttribute('hidden')) return 'null';
    const y = (row) => Number(/translate\(0 (\d+)/.exec(row.getAttribute('transform'))[1]);
    const rows = [...el.querySelectorAll('.chart-row')].sort((a, b) => y(a) - y(b));
    return JSON.stringify(rows.map((r) => Number(r.querySelector('.chart-value').textContent.split('·')[0].replace(/\D/g, ''))));
  });
}

describe('two nodes, one Redis: chat and vote across the group', () => {
  let redis;
  /** @type {import('./server.js').TestServer[]} */
  let nodes = [];
  let one;
  let two;
  const people = {};
  /** The poll of the vote test, for the tests after it. */
  let pollId;

  before(async () => {
    redis = await startRedis();
    nodes = await startCluster(redis, 2, APPS);
    [one, two] = nodes;
    mkdirSync(SHOTS, { recursive: true });
  });
  after(async () => {
    for (const p of Object.values(people)) await p.context.close();
    for (const node of nodes) await node.dispose();
    if (redis) await redis.dispose();
  });

  test('the nodes are one group: each lists both', async () => {
    // A node answers /health once it listens; the others hear of it with its first
    // heartbeat, a moment later.
    for (const node of nodes) {
      await waitFor(`${node.url} to list both nodes`, async () => (await node.api('info')).nodes?.length === 2);
    }
    const ids = (await one.api('info')).nodes.map((n) => n.id);
    assert.equal(new Set(ids).size, 2, `two node ids: ${ids}`);
  });

  test('Alice on node 1 and Bob on node 2 chat in the lobby: messages, presence, the join', async () => {
    people.alice = await person();
    people.bob = await person();
    const { alice, bob } = people;
    await signUp(alice, one.url, 'Alice');
    await signUp(bob, two.url, 'Bob');

    await waitFor('Alice (node 1) to see Bob (node 2) in the member list', async () => (await members(alice.page)).includes('Bob'));
    await waitFor('Bob to see Alice', async () => (await members(bob.page)).includes('Alice'));
    await waitFor('the join notice on node 1', async () => (await texts(alice.page, '#messages .notice')).some((t) => t.includes('Bob joined')));

    await bob.page.getByLabel('Message #lobby', { exact: true }).pressSequentially('Hi');
    await waitFor('"Bob is typing…" on node 1', async () => (await alice.page.locator('#typing').textContent()) === 'Bob is typing…');
    const lines = [
      [bob, 'Hi Alice! I am on node 2.'],
      [alice, 'Hello Bob, node 1 here. One Redis, one lobby.'],
      [bob, 'Shall we vote on the release name?'],
      [alice, 'Yes: I will make a poll.'],
    ];
    for (const [p, text] of lines) {
      await say(p.page, text);
      for (const q of [alice, bob]) await waitFor(`"${text}" on both pages`, async () => (await bodies(q.page)).includes(text));
    }
    assert.deepEqual(await bodies(bob.page), await bodies(alice.page), 'one conversation, in one order, on both nodes');
    assert.deepEqual((await members(alice.page)).sort(), ['Alice', 'Bob']);
    assert.deepEqual((await members(bob.page)).sort(), ['Alice', 'Bob']);

    await alice.page.screenshot({ path: join(SHOTS, 'cluster-chat-node1.png') });
    await bob.page.screenshot({ path: join(SHOTS, 'cluster-chat-node2.png') });
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
  });

  test('a room Alice creates on node 1 is offered on node 2; Bob\'s posts there are unread on node 1', async () => {
    const { alice, bob } = people;
    await alice.page.getByRole('button', { name: 'Create a room' }).click();
    await alice.page.getByLabel('Room name').fill('release');
    await alice.page.getByLabel('Topic (optional)').fill('Naming the next release');
    await alice.page.getByRole('button', { name: 'Create room' }).click();
    await waitFor('Alice in #release', async () => (await title(alice.page)) === 'release');
    await alice.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
    await waitFor('Alice back in the lobby', async () => (await title(alice.page)) === 'lobby');

    // Live, through `apps:rooms` from node 1: no reload on node 2.
    await waitFor('#release offered on node 2', async () => (await bob.page.locator('#other-rooms .nav-item', { hasText: 'release' }).count()) === 1);
    await bob.page.locator('#other-rooms .nav-item', { hasText: 'release' }).click();
    await waitFor('Bob in #release', async () => (await title(bob.page)) === 'release');
    for (const n of [1, 2]) await say(bob.page, `name idea ${n}`, 'Message #release');
    await waitFor('2 unread in #release on node 1', async () => (await badge(alice.page, 'release')) === '2');
    await alice.page.locator('#room-list .nav-item', { hasText: 'release' }).click();
    await waitFor('the posts on node 1', async () => (await bodies(alice.page)).join('|') === 'name idea 1|name idea 2');
    await waitFor('the badge to go', async () => (await badge(alice.page, 'release')) === '');
    for (const p of [alice, bob]) await p.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
  });

  test('a DM from Bob (node 2) reaches Alice (node 1) live, and Bob sees it delivered', async () => {
    const { alice, bob } = people;
    await bob.page.getByRole('button', { name: 'Message someone' }).click();
    await bob.page.getByLabel('Their name').fill('Alice');
    await bob.page.getByRole('button', { name: 'Open conversation' }).click();
    await say(bob.page, 'A private word: the poll is a good idea.', 'Message Alice');
    await waitFor('the unread DM on node 1', async () => (await badge(alice.page, 'Bob')) === '1');
    await alice.page.locator('#dm-list .nav-item', { hasText: 'Bob' }).click();
    await waitFor('the DM on Alice\'s page', async () => (await bodies(alice.page)).includes('A private word: the poll is a good idea.'));
    await waitFor('"Delivered" on Bob\'s page', async () => (await states(bob.page)).some((t) => t.startsWith('Delivered')));
    assert.ok(!(await states(bob.page)).some((t) => t.startsWith('Stored')), 'delivered live, never stored');

    // Alice answers from node 1.
    await say(alice.page, 'Thanks!', 'Message Bob');
    await waitFor('the answer on node 2', async () => (await bodies(bob.page)).includes('Thanks!'));
    // Alice has read the conversation: the server holds it (the page says so after a pause).
    await waitFor('the read position on the server', async () => {
      const r = await alice.page.evaluate(() => window.switchboard.rpc('chat.rooms', {}));
      return r.dms.find((d) => d.user === 'bob')?.unread === 0;
    });
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
  });

  test('a DM sent while Alice is signed out reaches her, marked late, when she signs in on node 2', async () => {
    const { alice, bob } = people;
    const session = (await alice.context.cookies()).find((c) => c.name === 'sb_session');
    assert.ok(session, 'Alice has a session cookie');
    const token = (node) =>
      fetch(`${node.url}/auth/token`, { method: 'POST', headers: { 'Content-Type': 'application/json', Cookie: `sb_session=${session.value}` }, body: '{}' });
    assert.equal((await token(two)).status, 200, 'the session made on node 1 works on node 2');
    await alice.page.getByRole('button', { name: 'Sign out' }).click();
    await alice.page.waitForURL(`${one.url}/`);
    const refused = await token(two);
    assert.equal(refused.status, 401, 'signed out on node 1 is signed out on node 2');
    assert.equal((await refused.json()).error.code, 'signed_out');
    await waitFor('Alice gone from Bob\'s member list', async () => {
      if ((await title(bob.page)) !== 'lobby') await bob.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
      return !(await members(bob.page)).includes('Alice');
    });
    await bob.page.locator('#dm-list .nav-item', { hasText: 'Alice' }).click();
    await waitFor('the conversation with Alice', async () => (await title(bob.page)) === 'Alice');
    await say(bob.page, 'While you were away: the poll has 3 options.', 'Message Alice');
    await waitFor('the stored state', async () => (await states(bob.page)).some((t) => t.startsWith('Stored')));

    // The other node: her session cookie went with the sign-out, so she signs in again.
    await signIn(alice, two.url, 'Alice');
    await waitFor('the conversation with Bob, unread, on node 2', async () => (await badge(alice.page, 'Bob')) === '1');
    await alice.page.locator('#dm-list .nav-item', { hasText: 'Bob' }).click();
    await waitFor('the message', async () => (await bodies(alice.page)).includes('While you were away: the poll has 3 options.'));
    await waitFor('the late mark', async () => (await states(alice.page)).some((t) => t.startsWith('Delivered late')));
    await waitFor('Bob sees it delivered', async () => (await states(bob.page)).filter((t) => t.startsWith('Delivered')).length === 2);
    // The live message can be shown before the conversation's history has loaded.
    const whole = ['A private word: the poll is a good idea.', 'Thanks!', 'While you were away: the poll has 3 options.'];
    await waitFor('the whole conversation on the other node', async () => (await bodies(alice.page)).length >= whole.length);
    assert.deepEqual(await bodies(alice.page), whole, 'the whole conversation, once each, on the other node');
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
  });

  test('a poll made on node 1 takes votes through both nodes; the owner\'s live chart on node 1 shows them', async () => {
    const { alice, bob } = people;
    people.cai = await person();
    const { cai } = people;
    await signUp(cai, one.url, 'Cai');
    // Alice is back on node 1, where she makes the poll and watches its chart.
    await alice.page.goto(`${one.url}/chat`);
    await online(alice.page);
    const id = await createPoll(alice.page, one.url, 'What do we call the release?', ['Aurora', 'Basalt', 'Cirrus']);
    assert.match(id, /^[A-Za-z0-9]{10}$/);
    await waitFor('the owner\'s empty chart', async () => (await chart(alice.page)) === '[0,0,0]');

    await openPoll(bob.page, two.url, id);
    await choose(bob.page, 'Basalt');
    await waitFor('Bob\'s vote (node 2) on the owner\'s chart (node 1)', async () => (await chart(alice.page)) === '[0,1,0]', 5000);
    await waitFor('and on Bob\'s', async () => (await chart(bob.page)) === '[0,1,0]', 5000);

    // Votes through both nodes at once, one changed: both nodes coalesce their own
    // pushes, and every chart ends at the newest tally.
    await openPoll(cai.page, one.url, id);
    await Promise.all([choose(cai.page, 'Aurora'), choose(bob.page, 'Aurora')]);
    await choose(bob.page, 'Cirrus');
    for (const [p, where] of [
      [alice, 'the owner (node 1)'],
      [bob, 'Bob (node 2)'],
      [cai, 'Cai (node 1)'],
    ]) {
      await waitFor(`[1,0,1] on ${where}`, async () => (await chart(p.page)) === '[1,0,1]', 5000);
    }
    assert.equal(await alice.page.locator('#totals').textContent(), '2 votes');
    assert.equal(await bob.page.locator('#ballot .choice', { hasText: 'Cirrus' }).getAttribute('aria-pressed'), 'true');
    // The watchers are people over the group: three, on two nodes.
    await waitFor('three watching on node 1', async () => /3 watching/.test(await alice.page.locator('#watchers').textContent()), 8000);
    await waitFor('three watching on node 2', async () => /3 watching/.test(await bob.page.locator('#watchers').textContent()), 8000);

    // A reload on the other node reads the same counts from the store.
    await openPoll(cai.page, two.url, id);
    await waitFor('the counts through node 2', async () => (await chart(cai.page)) === '[1,0,1]');

    // The bars move by a CSS transition: the pictures wait for it to end.
    for (const p of [alice, bob]) await p.page.waitForFunction(() => document.getAnimations().length === 0);
    await alice.page.screenshot({ path: join(SHOTS, 'cluster-vote-node1.png') });
    await bob.page.screenshot({ path: join(SHOTS, 'cluster-vote-node2.png') });
    for (const p of [alice, bob, cai]) assert.deepEqual(p.problems, []);
    pollId = id;
  });

  test('the owner closes the poll on node 1: the voters\' pages on node 2 show it closed', async () => {
    const { alice, bob, cai } = people;
    await alice.page.getByRole('button', { name: 'Close poll' }).click();
    for (const p of [bob, cai]) {
      await waitFor('"Closed" on node 2', async () => (await p.page.locator('#poll-state').textContent()) === 'Closed', 5000);
      await waitFor('the ballot locked on node 2', async () => p.page.locator('#ballot .choice').first().isDisabled());
    }
    const refused = await bob.page.evaluate((poll) => window.switchboard.rpc('vote.cast', { poll, choices: [1] }).then(
      () => 'accepted',
      (err) => err.message,
    ), pollId);
    assert.notEqual(refused, 'accepted', 'a closed poll takes no vote through node 2');
    for (const p of [alice, bob, cai]) assert.deepEqual(p.problems, []);
  });

  test('the home page\'s figures are the group\'s, on either node: people online and rooms', async () => {
    // Online now: Alice (node 1), Bob and Cai (node 2). Rooms: the lobby and #release.
    const visitor = await person();
    await visitor.context.addCookies(await people.alice.context.cookies());
    for (const node of [one, two]) {
      await visitor.page.goto(`${node.url}/`);
      await waitFor(
        `3 online and 2 rooms on ${node.url}`,
        async () => (await visitor.page.locator('#figure-online').textContent()) === '3' && (await visitor.page.locator('#figure-rooms').textContent()) === '2',
        8000,
      );
    }
    assert.deepEqual(visitor.problems, []);
    await visitor.context.close();
  });
});
