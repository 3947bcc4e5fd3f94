// Browser tests of the built-in apps (crates/apps/web): headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core) against a real `switchboard serve`, whose
// apps crate serves the pages, the sign-in endpoints and the chat rpc methods. The tests
// drive the pages as a person does: they find controls by their labels, type, press
// Enter, and read what is shown. They wait for what they expect, never for a fixed time.
//
// Covered (issue 12, "Proof"): two people sign up and chat in the lobby (messages,
// presence, join/leave, typing; two tabs of one user are one member); unread counts
// follow a reload; a DM to an offline user is delivered, marked late, when they sign in;
// `<img src=x onerror=alert(1)>` shows as text and runs nothing; a server restart in the
// middle of a conversation loses and doubles nothing; a guest signs in; after sign-out the
// token endpoint refuses the old session; axe-core finds no serious or critical violation
// on home, sign-in and chat; no page breaks its Content-Security-Policy; screenshots of
// home, sign-in and chat in English and Chinese at desktop and phone widths go to
// docs/screenshots/ (apps-<page>-<lang>-<width>.png).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer } from './server.js';
import { APPS, SHOTS, useChromium, person, watch, online, waitFor, signUp, signIn, axe } from './pages.js';

useChromium();

/** Types a message into the open conversation and presses Enter. */
async function say(page, text, where = 'Message #lobby') {
  const box = page.getByLabel(where, { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
const bodies = (page) => texts(page, '#messages .msg:not(.pending) .msg-body');
const members = (page) => texts(page, '#member-list .member .name');


/** The unread badge of a room or conversation in the sidebar ('' when none). */
async function badge(page, label) {
  return page.evaluate((label) => {
    for (const b of document.querySelectorAll('#room-list .nav-item, #dm-list .nav-item')) {
      if (b.querySelector('.name')?.textContent === label) return b.querySelector('.badge')?.textContent ?? '';
    }
    return null;
  }, label);
}

describe('chat in the browser', () => {
  let server;
  let alice;
  let bob;
  before(async () => {
    server = await startServer(APPS);
  });
  after(async () => {
    for (const p of [alice, bob]) if (p) await p.context.close();
    await server.dispose();
  });

  test('the pages are served with a strict CSP, and the home page shows the apps', async () => {
    const res = await fetch(`${server.url}/`);
    assert.equal(res.status, 200);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /style-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const p = await person();
    await p.page.goto(`${server.url}/`);
    for (const name of ['Chat', 'Vote', 'Console', 'Logs', 'Monitor']) {
      await p.page.getByRole('heading', { name, exact: true }).waitFor();
    }
    assert.equal(await p.page.locator('.tile.coming').count(), 0, 'every app is live');
    for (const [name, href] of [['Vote', '/vote'], ['Console', '/console'], ['Logs', '/logs'], ['Monitor', '/monitor']]) {
      assert.equal(await p.page.getByRole('link', { name: new RegExp(`^${name}`) }).getAttribute('href'), href);
    }
    const snippet = await p.page.locator('#snippet').textContent();
    assert.ok(snippet.includes(`SB=${server.url}`), `the curl snippet names this server: ${snippet}`);
    assert.match(snippet, /cat switchboard-data\/api-key|cat \S*api/);
    assert.ok(!snippet.includes(server.apiKey), 'never the key itself');
    await p.page.getByRole('tab', { name: 'Python' }).click();
    assert.match(await p.page.locator('#snippet').textContent(), /import requests/);
    assert.deepEqual(p.problems, []);
    await p.context.close();
  });

  test('two people sign up and chat in the lobby: messages, presence, join/leave, typing', async () => {
    alice = await person();
    bob = await person();
    await signUp(alice, server.url, 'alice');
    await signUp(bob, server.url, 'Bob');

    // Presence: each sees both; alice saw Bob join.
    await waitFor('alice to see Bob in the member list', async () => (await members(alice.page)).includes('Bob'));
    await waitFor('Bob to see alice', async () => (await members(bob.page)).includes('alice'));
    await waitFor('the join notice', async () => (await texts(alice.page, '#messages .notice')).some((t) => t.includes('Bob joined')));

    // Typing, then the message.
    await bob.page.getByLabel('Message #lobby', { exact: true }).pressSequentially('hel');
    await waitFor('"Bob is typing…" on alice\'s page', async () => (await alice.page.locator('#typing').textContent()) === 'Bob is typing…');
    await say(bob.page, 'hello alice, see https://example.com/docs.');
    await waitFor('the message on alice\'s page', async () => (await bodies(alice.page)).includes('hello alice, see https://example.com/docs.'));
    await waitFor('the typing line to clear', async () => (await alice.page.locator('#typing').textContent()) === '');
    const link = alice.page.locator('#messages .msg-body a');
    assert.equal(await link.getAttribute('href'), 'https://example.com/docs');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');

    await say(alice.page, 'hi Bob\nsecond line');
    await waitFor('alice\'s message on Bob\'s page', async () => (await bodies(bob.page)).includes('hi Bob\nsecond line'));
    assert.deepEqual(await bodies(bob.page), await bodies(alice.page), 'both see the same conversation');

    // A second tab of Bob is the same member, and closing one tab is no leave.
    const tab = await bob.context.newPage();
    watch(bob, tab);
    await tab.goto(`${server.url}/chat`);
    await online(tab);
    await waitFor('the second tab to list both', async () => (await members(tab)).length === 2);
    await tab.close();
    await alice.page.evaluate(() => window.switchboard.ping());
    assert.deepEqual((await members(alice.page)).sort(), ['Bob', 'alice'].sort(), 'Bob is one member');
    assert.equal((await texts(alice.page, '#messages .notice')).filter((t) => t.includes('Bob joined')).length, 1, 'one join');
    assert.ok(!(await texts(alice.page, '#messages .notice')).some((t) => t.includes('Bob left')), 'no leave while a tab is open');

    // The last tab goes: Bob left.
    await bob.page.goto(`${server.url}/`);
    await waitFor('the leave notice', async () => (await texts(alice.page, '#messages .notice')).some((t) => t.includes('Bob left')));
    await waitFor('Bob out of the member list', async () => !(await members(alice.page)).includes('Bob'));
    await bob.page.goto(`${server.url}/chat`);
    await online(bob.page);
    assert.deepEqual(alice.problems, []);
    assert.deepEqual(bob.problems, []);
  });

  test('HTML in a message is text: <img src=x onerror=alert(1)> is shown and runs nothing', async () => {
    const payload = '<img src=x onerror=alert(1)>';
    await say(bob.page, payload);
    await waitFor('the payload on alice\'s page', async () => (await bodies(alice.page)).includes(payload));
    assert.equal(await alice.page.locator('#messages img').count(), 0, 'no image element');
    await say(alice.page, '<script>alert(2)</script><b>bold?</b>');
    await waitFor('the second payload', async () => (await bodies(bob.page)).includes('<script>alert(2)</script><b>bold?</b>'));
    assert.equal(await bob.page.locator('#messages script, #messages b').count(), 0);
    assert.deepEqual([...alice.dialogs, ...bob.dialogs], [], 'no dialog fired');
  });

  test('the length limit is counted, and Shift+Enter adds a line', async () => {
    const box = alice.page.getByLabel('Message #lobby', { exact: true });
    await box.fill('x'.repeat(2001));
    await waitFor('the counter', async () => (await alice.page.locator('#composer-counter').textContent()) === '2001 / 2000');
    assert.ok(await alice.page.locator('#composer-counter.over').count());
    await box.press('Enter');
    await waitFor('the refusal in words', async () => /at most 2000/.test(await alice.page.locator('#send-error').textContent()));
    await box.fill('');
    await box.pressSequentially('one');
    await box.press('Shift+Enter');
    await box.pressSequentially('two');
    assert.equal(await box.inputValue(), 'one\ntwo', 'Shift+Enter kept a line break, nothing sent');
    await box.fill('');
  });

  test('unread counts follow a reload, and reading clears them on the server', async () => {
    // alice makes a room and goes back to the lobby; Bob joins it and writes three times.
    await alice.page.getByRole('button', { name: 'Create a room' }).click();
    await alice.page.getByLabel('Room name').fill('ops');
    await alice.page.getByRole('button', { name: 'Create room' }).click();
    await waitFor('alice in #ops', async () => (await alice.page.locator('#conversation-title').textContent()) === 'ops');
    await alice.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
    await waitFor('alice back in the lobby', async () => (await alice.page.locator('#conversation-title').textContent()) === 'lobby');

    await bob.page.goto(`${server.url}/chat#ops`);
    await online(bob.page);
    await waitFor('Bob in #ops', async () => (await bob.page.locator('#conversation-title').textContent()) === 'ops');
    for (const n of [1, 2, 3]) await say(bob.page, `ops ${n}`, 'Message #ops');
    await waitFor('3 unread in #ops', async () => (await badge(alice.page, 'ops')) === '3');
    await waitFor('the tab title', async () => (await alice.page.title()).startsWith('(3) '));

    await alice.page.reload();
    await online(alice.page);
    await waitFor('3 unread in #ops after the reload', async () => (await badge(alice.page, 'ops')) === '3');

    await alice.page.locator('#room-list .nav-item', { hasText: 'ops' }).click();
    await waitFor('the badge to go', async () => (await badge(alice.page, 'ops')) === '');
    assert.deepEqual((await bodies(alice.page)).slice(-3), ['ops 1', 'ops 2', 'ops 3']);
    // The read position reaches the server (what another device would get).
    await waitFor('the server to hold the read position', async () => {
      const r = await alice.page.evaluate(() => window.switchboard.rpc('chat.rooms', {}));
      return r.rooms.find((x) => x.name === 'ops')?.unread === 0;
    });
    await alice.page.reload();
    await online(alice.page);
    await waitFor('the rooms after the reload', async () => (await badge(alice.page, 'ops')) !== null);
    assert.equal(await badge(alice.page, 'ops'), '', 'still read after a reload');
    assert.doesNotMatch(await alice.page.title(), /^\(/);
    await alice.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
  });

  test('a DM to an offline user waits and is delivered, marked late, when they sign in', async () => {
    const carol = await person();
    await signUp(carol, server.url, 'carol');
    await waitFor('carol in the lobby', async () => (await members(alice.page)).includes('carol'));
    await carol.context.close();
    await waitFor('carol gone', async () => !(await members(alice.page)).includes('carol'));

    await alice.page.getByRole('button', { name: 'Message someone' }).click();
    await alice.page.getByLabel('Their name').fill('carol');
    await alice.page.getByRole('button', { name: 'Open conversation' }).click();
    await say(alice.page, 'are you there?', 'Message carol');
    await waitFor('the stored state', async () => (await texts(alice.page, '#messages .msg-state')).some((t) => t.startsWith('Stored')));

    const again = await person();
    await signIn(again, server.url, 'carol');
    await waitFor('the conversation with alice, unread', async () => (await badge(again.page, 'alice')) === '1');
    await again.page.locator('#dm-list .nav-item', { hasText: 'alice' }).click();
    await waitFor('the message', async () => (await bodies(again.page)).includes('are you there?'));
    await waitFor('the late mark', async () => (await texts(again.page, '#messages .msg-state')).some((t) => t.startsWith('Delivered late')));
    await waitFor('the sender sees it delivered', async () => (await texts(alice.page, '#messages .msg-state')).some((t) => t.startsWith('Delivered')));

    // A reply goes the other way, live; a reload keeps the conversation.
    await say(again.page, 'here now', 'Message alice');
    await waitFor('the reply', async () => (await bodies(alice.page)).includes('here now'));
    await again.page.reload();
    await online(again.page);
    await again.page.locator('#dm-list .nav-item', { hasText: 'alice' }).click();
    await waitFor('the conversation after a reload', async () => (await bodies(again.page)).join('|') === 'are you there?|here now');
    assert.deepEqual(again.problems, []);
    await again.context.close();
    await alice.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
  });

  test('a server restart mid-conversation: "reconnecting…", then nothing missed and nothing doubled', async () => {
    await waitFor('both in the lobby', async () => (await alice.page.locator('#conversation-title').textContent()) === 'lobby');
    await bob.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
    const before = await bodies(alice.page);
    for (const n of [1, 2, 3]) await say(bob.page, `before restart ${n}`);
    await waitFor('the three on alice\'s page', async () => (await bodies(alice.page)).includes('before restart 3'));

    await server.stop();
    await waitFor('the reconnecting banner', async () => /Reconnecting/.test((await alice.page.locator('#connection-banner').textContent()) ?? ''));
    assert.equal(await alice.page.locator('#connection-banner').isVisible(), true);
    // Written while the server is down: the library queues the rpc until it is back.
    await say(bob.page, 'during the restart');
    await server.start();
    await online(alice.page);
    await online(bob.page);
    await waitFor('the banner to go', async () => !(await alice.page.locator('#connection-banner').isVisible()));
    for (const n of [1, 2, 3]) await say(bob.page, `after restart ${n}`);
    await waitFor('everything on alice\'s page', async () => (await bodies(alice.page)).includes('after restart 3'));
    await alice.page.evaluate(() => window.switchboard.ping());
    const expected = [...before, 'before restart 1', 'before restart 2', 'before restart 3', 'during the restart', 'after restart 1', 'after restart 2', 'after restart 3'];
    assert.deepEqual(await bodies(alice.page), expected, 'each message once, in order');
    await waitFor('Bob\'s page too', async () => (await bodies(bob.page)).join('|') === expected.join('|'));
    assert.equal(await bob.page.locator('#messages .msg.pending').count(), 0, 'no send left pending');
  });

  test('a guest signs in with a display name', async () => {
    const g = await person();
    await g.page.goto(`${server.url}/signin`);
    await g.page.getByLabel('Display name for a guest visit').fill('Visitor');
    await g.page.getByRole('button', { name: 'Continue as guest' }).click();
    await g.page.waitForURL(/\/chat/);
    await online(g.page);
    await waitFor('the guest in alice\'s member list', async () => (await members(alice.page)).includes('Visitor'));
    const row = alice.page.locator('#member-list .member', { hasText: 'Visitor' });
    assert.match(await row.textContent(), /guest/);
    await say(g.page, 'just looking');
    await waitFor('the guest\'s message', async () => (await bodies(alice.page)).includes('just looking'));
    assert.deepEqual(g.problems, []);
    await g.context.close();
  });

  test('after sign-out the token endpoint refuses the old session', async () => {
    const cookies = await bob.context.cookies();
    const session = cookies.find((c) => c.name === 'sb_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    const token = (cookie) =>
      fetch(`${server.url}/auth/token`, { method: 'POST', headers: { 'Content-Type': 'application/json', Cookie: `sb_session=${cookie}` }, body: '{}' });
    assert.equal((await token(session.value)).status, 200, 'the session works before');
    await bob.page.getByRole('button', { name: 'Sign out' }).click();
    await bob.page.waitForURL(`${server.url}/`);
    await bob.page.getByRole('link', { name: 'Sign in' }).waitFor();
    const res = await token(session.value);
    assert.equal(res.status, 401);
    assert.equal((await res.json()).error.code, 'signed_out');
    // And /chat now sends the person to sign in.
    await bob.page.goto(`${server.url}/chat`);
    await bob.page.waitForURL(/\/signin\?next=/);
  });

  test('the language switch translates the page and is remembered', async () => {
    const p = await person();
    await p.page.goto(`${server.url}/signin`);
    await p.page.getByLabel('Language').selectOption('zh-CN');
    await p.page.getByRole('heading', { name: '登录' }).waitFor();
    assert.equal(await p.page.getAttribute('html', 'lang'), 'zh-CN');
    await p.page.reload();
    await p.page.getByRole('heading', { name: '登录' }).waitFor();
    await p.page.goto(`${server.url}/`);
    await p.page.getByRole('heading', { name: '聊天', exact: true }).waitFor();
    await p.context.close();
    // A browser whose first language is Chinese gets Chinese.
    const zh = await person({ locale: 'zh-CN' });
    await zh.page.goto(`${server.url}/signin`);
    await zh.page.getByRole('heading', { name: '登录' }).waitFor();
    await zh.context.close();
  });

  test('axe-core: no serious or critical violation on home, sign-in and chat', async () => {
    // axe is injected as an inline script, which the pages' CSP forbids: this context
    // alone bypasses the CSP (the others prove the pages keep to it).
    const p = await person({ bypassCSP: true });
    await p.page.goto(`${server.url}/signin`);
    await p.page.getByLabel('Name', { exact: true }).waitFor();
    const found = { signin: await axe(p.page) };
    await p.context.addCookies(await alice.context.cookies());
    await p.page.goto(`${server.url}/`);
    await p.page.locator('#figure-online').waitFor();
    found.home = await axe(p.page);
    await p.page.goto(`${server.url}/chat`);
    await online(p.page);
    await waitFor('messages', async () => (await bodies(p.page)).length > 0);
    found.chat = await axe(p.page);
    await p.page.getByRole('button', { name: 'Create a room' }).click();
    found.dialog = await axe(p.page);
    assert.deepEqual(found, { signin: [], home: [], chat: [], dialog: [] });
    await p.context.close();
  });

  test('the home page\'s curl snippet, run as shown, posts into the lobby the chat shows', async () => {
    const p = await person();
    await signUp(p, server.url, 'dana');
    await p.page.goto(`${server.url}/`);
    const snippet = await p.page.locator('#snippet').textContent();
    await p.page.goto(`${server.url}/chat`);
    await online(p.page);
    // The publish command as the page shows it: its path and its body.
    const publish = snippet.match(/curl -s -X POST \$SB(\/api\/publish)[^\n]*\n\s*-d '([^']*)'/);
    assert.ok(publish, `a publish command in the snippet: ${snippet}`);
    const body = JSON.parse(publish[2]);
    const res = await fetch(`${server.url}${publish[1]}`, {
      method: 'POST',
      headers: { 'X-API-Key': server.apiKey, 'Content-Type': 'application/json' },
      body: publish[2],
    });
    assert.equal(res.status, 200, await res.text());
    await waitFor('the backend\'s message in the lobby', async () => (await bodies(p.page)).includes(body.data.text));
    assert.deepEqual(p.problems, []);
    await p.context.close();
  });

  test('leaving a room leaves it on every device of the user', async () => {
    const here = await person();
    await signUp(here, server.url, 'frank');
    await here.page.getByRole('button', { name: 'Create a room' }).click();
    await here.page.getByLabel('Room name').fill('garden');
    await here.page.getByRole('button', { name: 'Create room' }).click();
    await waitFor('frank in #garden', async () => (await here.page.locator('#conversation-title').textContent()) === 'garden');
    const there = await person();
    await signIn(there, server.url, 'frank');
    await waitFor('#garden among frank\'s rooms on the other device', async () => (await there.page.locator('#room-list .nav-item', { hasText: 'garden' }).count()) === 1);

    await here.page.getByRole('button', { name: 'Leave', exact: true }).click();
    await waitFor('frank back in the lobby', async () => (await here.page.locator('#conversation-title').textContent()) === 'lobby');
    await waitFor('the server to forget the room for frank', async () => {
      const r = await here.page.evaluate(() => window.switchboard.rpc('chat.rooms', {}));
      return r.rooms.find((x) => x.name === 'garden')?.read === null;
    });
    await there.page.reload();
    await online(there.page);
    await waitFor('#garden offered to join on the other device', async () => (await there.page.locator('#other-rooms .nav-item', { hasText: 'garden' }).count()) === 1);
    assert.equal(await there.page.locator('#room-list .nav-item', { hasText: 'garden' }).count(), 0, 'not among frank\'s rooms');
    assert.deepEqual(here.problems, []);
    assert.deepEqual(there.problems, []);
    await here.context.close();
    await there.context.close();
  });

  test('history: the last 50 on entry, then "Load older messages" back to the start', async () => {
    const p = await person();
    await signUp(p, server.url, 'gail');
    await p.page.evaluate(() => window.switchboard.rpc('chat.create', { name: 'archive' }));
    const all = Array.from({ length: 60 }, (_, i) => `old ${i + 1}`);
    for (const text of all) {
      const res = await fetch(`${server.url}/api/publish`, {
        method: 'POST',
        headers: { 'X-API-Key': server.apiKey, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel: 'room:archive', data: { type: 'message', text } }),
      });
      assert.equal(res.status, 200);
    }
    await p.page.goto(`${server.url}/chat#archive`);
    await online(p.page);
    await waitFor('the newest 50', async () => (await bodies(p.page)).join('|') === all.slice(10).join('|'));
    await p.page.getByRole('button', { name: 'Load older messages' }).click();
    await waitFor('all 60, oldest first', async () => (await bodies(p.page)).join('|') === all.join('|'));
    await p.page.getByText('This is the start of #archive.').waitFor();
    assert.equal(await p.page.getByRole('button', { name: 'Load older messages' }).count(), 0);
    assert.deepEqual(p.problems, []);
    await p.context.close();
  });

  test('a revisit is one round trip: the page is revalidated, its files come from the cache', async () => {
    const p = await person();
    await signUp(p, server.url, 'hana');
    await p.page.goto(`${server.url}/`);
    await p.page.goto(`${server.url}/chat`);
    await online(p.page);
    // What this visit fetched over the network (transferSize 0: from the cache, unasked),
    // besides the data it asks for (fetch: /auth/me, /auth/token).
    const fetched = await p.page.evaluate(() =>
      performance
        .getEntriesByType('resource')
        .filter((e) => e.initiatorType !== 'fetch' && e.initiatorType !== 'xmlhttprequest' && e.transferSize > 0)
        .map((e) => `${e.initiatorType} ${new URL(e.name).pathname}`),
    );
    assert.deepEqual(fetched, [], 'every file from the cache');
    const files = await p.page.evaluate(() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname));
    assert.ok(files.some((f) => /^\/apps\/v\/[0-9a-f]{16}\/switchboard\.js$/.test(f)), `the library beside the files: ${files}`);
    assert.deepEqual(p.problems, []);
    await p.context.close();
  });

  test('no page broke its CSP or threw', async () => {
    assert.deepEqual(alice.problems, []);
  });
});

describe('shared modules', () => {
  let server;
  before(async () => {
    server = await startServer(APPS);
  });
  after(() => server.dispose());

  test('dom, i18n, format and chart', async () => {
    const p = await person();
    await p.page.goto(`${server.url}/signin`);
    const r = await p.page.evaluate(async () => {
      const dom = await import('/apps/lib/dom.js');
      const { STRINGS } = await import('/apps/lib/strings.js');
      const { barChart } = await import('/apps/lib/chart.js');
      const fmt = await import('/apps/lib/format.js');
      const out = {};
      const frag = dom.linkify('a <b>https://x.org/p?q=1).</b> javascript:alert(1) http://y.cn');
      const div = document.createElement('div');
      div.append(frag);
      out.linkText = div.textContent;
      out.links = [...div.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.rel, a.target]);
      out.elements = div.querySelectorAll('*').length;
      try {
        dom.h('a', { href: 'javascript:alert(1)' });
        out.badHref = 'accepted';
      } catch {
        out.badHref = 'refused';
      }
      try {
        dom.h('div', { onclick: 'alert(1)' });
        out.badAttr = 'accepted';
      } catch {
        out.badAttr = 'refused';
      }
      const keys = (o) => Object.keys(o).sort();
      out.sameKeys = JSON.stringify(keys(STRINGS.en)) === JSON.stringify(keys(STRINGS['zh-CN']));
      const holes = (s) => (typeof s === 'string' ? s : s.other).match(/\{\w+\}/g)?.sort().join() ?? '';
      out.placeholderMismatch = keys(STRINGS.en).filter((k) => holes(STRINGS.en[k]) !== holes(STRINGS['zh-CN'][k]));
      const chart = barChart({ title: 'Lunch' });
      document.body.append(chart.el);
      chart.update([
        { label: 'Noodles', value: 3 },
        { label: 'Rice', value: 1 },
      ]);
      out.chartRole = chart.el.getAttribute('role');
      out.chartDesc = chart.el.querySelector('desc').textContent;
      out.bars = [...chart.el.querySelectorAll('.chart-bar')].map((b) => b.style.getPropertyValue('--fill'));
      chart.update([{ label: 'Rice', value: 2 }]);
      out.barsAfter = chart.el.querySelectorAll('.chart-bar').length;
      const noon = new Date(2026, 0, 5, 12, 0).getTime();
      out.today = fmt.day(noon, noon + 3600000);
      out.yesterday = fmt.day(noon, noon + 86400000);
      out.relative = fmt.relative(noon - 180000, noon);
      return out;
    });
    assert.equal(r.linkText, 'a <b>https://x.org/p?q=1).</b> javascript:alert(1) http://y.cn');
    assert.deepEqual(r.links, [
      ['https://x.org/p?q=1', 'noopener noreferrer', '_blank'],
      ['http://y.cn', 'noopener noreferrer', '_blank'],
    ]);
    assert.equal(r.elements, 2, 'only the two links are elements');
    assert.equal(r.badHref, 'refused');
    assert.equal(r.badAttr, 'refused');
    assert.equal(r.sameKeys, true, 'en and zh-CN have the same keys');
    assert.deepEqual(r.placeholderMismatch, []);
    assert.equal(r.chartRole, 'img');
    assert.equal(r.chartDesc, 'Noodles: 3 (75%); Rice: 1 (25%)');
    assert.deepEqual(r.bars, ['1', '0.3333333333333333']);
    assert.equal(r.barsAfter, 1);
    assert.equal(r.today, 'Today');
    assert.equal(r.yesterday, 'Yesterday');
    assert.equal(r.relative, '3 minutes ago');
    await p.context.close();
  });
});

describe('screenshots', () => {
  let server;
  before(async () => {
    server = await startServer(APPS);
    mkdirSync(SHOTS, { recursive: true });
  });
  after(() => server.dispose());

  test('home, sign-in and chat, English and Chinese, desktop and phone', { timeout: 180000 }, async () => {
    // A conversation worth looking at.
    const people = {};
    for (const name of ['Maya', 'Chen', 'Tom']) {
      people[name] = await person();
      await signUp(people[name], server.url, name);
    }
    const { Maya, Chen, Tom } = people;
    await Maya.page.getByRole('button', { name: 'Create a room' }).click();
    await Maya.page.getByLabel('Room name').fill('design');
    await Maya.page.getByLabel('Topic (optional)').fill('New onboarding flow');
    await Maya.page.getByRole('button', { name: 'Create room' }).click();
    await Maya.page.locator('#room-list .nav-item', { hasText: 'lobby' }).click();
    const lines = [
      [Maya, 'Morning all! The staging deploy is done.'],
      [Maya, 'Release notes: https://example.com/releases/2.4'],
      [Chen, '早上好！我来看看新的聊天页面。'],
      [Tom, 'Looks great on my phone too.'],
      [Tom, 'Can we get the vote app next?'],
      [Chen, 'Agreed, and the log viewer after that.'],
    ];
    for (const [p, text] of lines) {
      await say(p.page, text);
      await waitFor(`"${text}" on Maya's page`, async () => (await bodies(Maya.page)).includes(text));
    }
    // Chen types on until a page shows it: "typing" goes out at most every 2.5 s, and the
    // server drops one that follows the last within 2 s.
    const typing = async (page) => {
      let typed = 0;
      await waitFor(
        'Chen typing',
        async () => {
          if (Date.now() - typed > 1000) {
            typed = Date.now();
            await Chen.page.getByLabel('Message #lobby', { exact: true }).pressSequentially('.');
          }
          return /typing|输入/.test(await page.locator('#typing').textContent());
        },
        15000,
      );
    };
    await typing(Maya.page);
    const cookies = await Maya.context.cookies();

    for (const [lang, locale] of [
      ['en', 'en-US'],
      ['zh', 'zh-CN'],
    ]) {
      for (const [width, height] of [
        [1280, 800],
        [390, 844],
      ]) {
        const shot = (page) => join(SHOTS, `apps-${page}-${lang}-${width}.png`);
        const out = await person({ locale, viewport: { width, height } });
        await out.page.goto(`${server.url}/signin`);
        await out.page.locator('#name').waitFor();
        await out.page.screenshot({ path: shot('signin') });
        await out.context.addCookies(cookies);
        await out.page.goto(`${server.url}/`);
        await waitFor('the live figures', async () => /\d/.test(await out.page.locator('#figure-online').textContent()));
        await out.page.screenshot({ path: shot('home') });
        await out.page.goto(`${server.url}/chat`);
        await online(out.page);
        await waitFor('the conversation', async () => (await bodies(out.page)).length === lines.length);
        await say(Tom.page, lang === 'en' ? `Hi from the ${width}px screen` : `你好，${width}px 的屏幕`);
        await waitFor('the new message', async () => (await bodies(out.page)).length === lines.length + 1);
        await typing(out.page);
        await out.page.screenshot({ path: shot('chat') });
        assert.deepEqual(out.problems, []);
        await out.context.close();
        lines.push([Tom, '']);
      }
    }
    for (const p of Object.values(people)) await p.context.close();
  });
});
