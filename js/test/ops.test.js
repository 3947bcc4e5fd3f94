// Browser tests of the console (/console) and the administration page (/admin), in
// headless Chromium against a real `switchboard serve` (see apps.test.js for the setup).
//
// Covered (issue 13, "Console and admin"): the console in Switchboard mode connects to
// /ws with the signed-in user's token, subscribes, publishes, and shows both frames; raw
// mode talks to `switchboard echo` started by the test (another origin: the console's own
// CSP allows ws:) in text and binary, pings, and closes with a code and reason; a
// non-administrator gets no API tab and a refusal on /console#api and /admin; an
// administrator (made with `switchboard user add --admin`) runs an API command from the
// console, sees the figures and the users online on /admin and disconnects one; axe-core
// finds no serious or critical violation on either page; no page breaks its CSP;
// screenshots docs/screenshots/{console,admin}-{en,zh}-{1280,390}.png.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { startServer, until, freePort, BIN } from './server.js';
import { addAdmin } from './hosts.js';
import { APPS, SHOTS, useChromium, person, online, waitFor, signUp, signIn, axe } from './pages.js';

useChromium();

/** The frames of the log: [direction, opcode, text]. */
const frames = (page) =>
  page.$$eval('#frames .frame', (els) => els.map((e) => [e.getAttribute('data-dir'), e.getAttribute('data-opcode'), e.querySelector('.frame-body')?.textContent ?? '']));
const state = (page) => page.locator('#conn-state').textContent();

/** Puts `text` in the composer and sends it. */
async function compose(page, text, format) {
  if (format) await page.getByLabel('Format').selectOption(format);
  await page.getByLabel('Message to send').fill(text);
  await page.getByRole('button', { name: 'Send', exact: true }).click();
}

/** `switchboard echo` on a free port (stopped by `stop`, even when it never listened). */
async function startEcho(keep) {
  const port = await freePort();
  const proc = spawn(BIN, ['echo', '--listen', `127.0.0.1:${port}`, '--threads', '1', '--protocol', 'chat.v2'], { stdio: ['ignore', 'ignore', 'pipe'] });
  keep({ port, stop: () => proc.kill('SIGTERM') });
  await until(
    () =>
      new Promise((resolve) => {
        const socket = connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      }),
    10000,
    'switchboard echo to listen',
  );
}

describe('console and admin', () => {
  let server;
  let echo;
  let bob;
  let root;
  before(async () => {
    server = await startServer(APPS);
    await addAdmin(server, 'root');
    await startEcho((e) => (echo = e));
  });
  after(async () => {
    for (const p of [bob, root]) if (p) await p.context.close();
    if (echo) echo.stop();
    await server.dispose();
  });

  test('Switchboard mode: connects to /ws, subscribes, publishes, shows both frames', async () => {
    bob = await person();
    await signUp(bob, server.url, 'bob');
    const { page } = bob;
    await page.goto(`${server.url}/console`);
    assert.equal(await page.getByLabel('Token', { exact: true }).inputValue(), 'session');
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await waitFor('the console connected', async () => /open · websocket/.test(await state(page)));
    await compose(page, JSON.stringify({ cmd: 'subscribe', channel: 'test:console' }));
    await waitFor('the subscribe reply', async () => (await frames(page)).some(([d, , text]) => d === 'in' && /"offset"|"epoch"/.test(text)));
    // A template fills the composer with a valid command; this one publishes "hello".
    await page.getByLabel('Template').selectOption('publish');
    assert.match(await page.getByLabel('Message to send').inputValue(), /"cmd": "publish"/);
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    await waitFor('the publish frame and the publication', async () => {
      const f = await frames(page);
      const out = f.some(([d, op, text]) => d === 'out' && op === 'text' && /"cmd":"publish"/.test(text) && /hello/.test(text));
      const back = f.some(([d, , text]) => d === 'in' && /"push":"publication"/.test(text) && /hello/.test(text));
      return out && back;
    });
    // Invalid JSON is refused before anything is sent.
    const before = (await frames(page)).length;
    await compose(page, '{"cmd": "publish",');
    assert.match(await page.locator('#composer-error').textContent(), /Not valid JSON/);
    assert.equal((await frames(page)).length, before);
    // Ping shows a round-trip time; the filter narrows the log.
    await page.getByRole('button', { name: 'Ping', exact: true }).click();
    await waitFor('the RTT', async () => /ping \d+ ms/.test(await page.locator('#conn-rtt').textContent()));
    await page.getByLabel('Filter frames').fill('publication');
    await waitFor('the filter', async () => (await frames(page)).every(([, , text]) => /publication/.test(text)));
    await page.getByLabel('Filter frames').fill('');
    // Saved messages survive a reload.
    await page.getByLabel('Message to send').fill('{"cmd": "ping"}');
    await page.locator('details.saved summary').click();
    await page.getByLabel('Name', { exact: true }).fill('just a ping');
    await page.getByRole('button', { name: 'Save this message' }).click();
    await page.reload();
    await page.locator('details.saved summary').click();
    await page.getByRole('button', { name: 'Load just a ping' }).click();
    assert.equal(await page.getByLabel('Message to send').inputValue(), '{"cmd": "ping"}');
    assert.deepEqual(bob.problems, []);
  });

  test('raw mode: text and binary to switchboard echo, ping, close with a code', async () => {
    const { page } = bob;
    await page.goto(`${server.url}/console#raw`);
    await page.getByLabel('WebSocket URL').fill(`ws://127.0.0.1:${echo.port}`);
    await page.getByLabel('Subprotocols').fill('superchat, chat.v2');
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await waitFor('the raw connection', async () => /Raw: open/.test(await state(page)));
    // The subprotocol echo chose and the extensions it agreed to (Chromium's offer of
    // permessage-deflate, answered without context takeover), in the state and in the log.
    const deflate = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
    assert.equal(await state(page), `Raw: open · chat.v2 · ${deflate}`);
    assert.ok((await frames(page)).some(([d, op, text]) => d === 'event' && text.includes(`subprotocol chat.v2 · extensions ${deflate}`)), JSON.stringify(await frames(page)));
    await compose(page, 'hello echo', 'text');
    await waitFor('the echo', async () => (await frames(page)).some(([d, op, text]) => d === 'in' && op === 'text' && text === 'hello echo'));
    await compose(page, 'de ad be ef 41', 'binary');
    await waitFor('the binary echo', async () => (await frames(page)).some(([d, op, text]) => d === 'in' && op === 'binary' && /de ad be ef 41/.test(text) && /\|\.\.\.\.A\|/.test(text)));
    await compose(page, 'zz', 'binary');
    assert.match(await page.locator('#composer-error').textContent(), /Not hex/);
    await page.getByRole('button', { name: 'Ping', exact: true }).click();
    await waitFor('the raw RTT', async () => /ping \d+ ms/.test(await page.locator('#conn-rtt').textContent()));
    await page.getByLabel('Close code').fill('4000');
    await page.getByLabel('Close reason').fill('bye');
    await page.getByRole('button', { name: 'Close', exact: true }).click();
    await waitFor('closed', async () => /Raw: closed/.test(await state(page)));
    assert.ok((await frames(page)).some(([d, op, text]) => d === 'in' && op === 'close' && /close 4000/.test(text)), JSON.stringify(await frames(page)));
    assert.deepEqual(bob.problems, []);
  });

  test('a non-administrator gets no API tab and a refusal on /admin', async () => {
    const { page } = bob;
    await page.goto(`${server.url}/console`);
    await page.getByRole('tab', { name: 'Raw WebSocket' }).waitFor();
    assert.equal(await page.getByRole('tab').count(), 2);
    await page.goto(`${server.url}/console#api`);
    await page.getByRole('heading', { name: 'Server API: for administrators only' }).waitFor();
    await page.goto(`${server.url}/admin`);
    await page.getByRole('heading', { name: 'For administrators only' }).waitFor();
    assert.equal(await page.locator('#figure-connections').count(), 0);
    // The server refuses too, whatever the page shows.
    const refused = await page.evaluate(async () => {
      const { Switchboard } = await import('/switchboard.js');
      const { getToken } = await import('/apps/lib/session.js');
      const sb = new Switchboard(location.origin, { getToken });
      sb.connect();
      try {
        await sb.rpc('admin.overview', {});
        return 'answered';
      } catch (err) {
        return err.code;
      } finally {
        sb.close();
      }
    });
    assert.equal(refused, 103);
  });

  test('an administrator: the API tab, the figures, disconnecting a user', async () => {
    root = await person();
    await signIn(root, server.url, 'root');
    const { page } = root;
    await page.goto(`${server.url}/console#api`);
    await page.getByLabel('Command').selectOption('channels');
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await waitFor('the API answer', async () => /"channels"/.test(await page.locator('#api-result').textContent()));

    // bob connects in his console over SSE; root sees him on /admin, his stream among
    // the connections by transport, and disconnects him.
    await bob.page.goto(`${server.url}/console`);
    await bob.page.getByLabel('Transport').selectOption('sse');
    await bob.page.getByRole('button', { name: 'Connect', exact: true }).click();
    await waitFor('bob connected', async () => /open/.test(await state(bob.page)));
    await page.goto(`${server.url}/admin`);
    await waitFor('the figures', async () => /\d/.test(await page.locator('#figure-connections').textContent()));
    const transports = page.locator('#figure-connections + .ops-sub');
    await waitFor('bob\'s SSE stream among the transports', async () => /WebSocket [1-9]\d* · SSE 1 · polling \d+/.test(await transports.textContent()));
    await waitFor('a rate', async () => /\d/.test(await page.locator('#figure-publications').textContent()));
    await waitFor('the memory', async () => /MiB/.test(await page.locator('#figure-memory').textContent()));
    await page.locator('#users tr[data-user="bob"]').waitFor();
    await page.getByRole('button', { name: 'Disconnect bob' }).click();
    await page.getByRole('button', { name: 'Confirm: disconnect every connection of bob' }).click();
    await waitFor('bob disconnected', async () => /closed/.test(await state(bob.page)));
    await waitFor('bob gone from the list', async () => (await page.locator('#users tr[data-user="bob"]').count()) === 0);
    assert.deepEqual(root.problems, []);
  });

  test('axe-core: no serious or critical violation on /console and /admin', async () => {
    const p = await person({ bypassCSP: true });
    await p.context.addCookies(await root.context.cookies());
    const found = {};
    await p.page.goto(`${server.url}/console`);
    await p.page.getByRole('button', { name: 'Connect', exact: true }).click();
    await waitFor('connected', async () => /open/.test(await state(p.page)));
    await compose(p.page, JSON.stringify({ cmd: 'subscribe', channel: 'test:axe' }));
    await waitFor('frames', async () => (await frames(p.page)).length > 3);
    found.console = await axe(p.page);
    await p.page.getByRole('tab', { name: 'Raw WebSocket' }).click();
    found.raw = await axe(p.page);
    await p.page.getByRole('tab', { name: 'Server API' }).click();
    found.api = await axe(p.page);
    await p.page.goto(`${server.url}/admin`);
    await waitFor('the figures', async () => /\d/.test(await p.page.locator('#figure-connections').textContent()));
    found.admin = await axe(p.page);
    assert.deepEqual(found, { console: [], raw: [], api: [], admin: [] });
    await p.context.close();
  });

  test('screenshots: console and admin, English and Chinese, desktop and phone', { timeout: 180000 }, async () => {
    mkdirSync(SHOTS, { recursive: true });
    const cookies = await root.context.cookies();
    for (const [lang, locale] of [
      ['en', 'en-US'],
      ['zh', 'zh-CN'],
    ]) {
      for (const [width, height] of [
        [1280, 800],
        [390, 844],
      ]) {
        const out = await person({ locale, viewport: { width, height } });
        await out.context.addCookies(cookies);
        await out.page.goto(`${server.url}/console`);
        await out.page.locator('#conn-state').waitFor();
        await out.page.locator('.console-tabs [role="tab"]').first().waitFor();
        await out.page.locator('#panel-sb button.primary').click();
        await waitFor('connected', async () => /· websocket/.test(await state(out.page)));
        await out.page.locator('#composer-text').fill(JSON.stringify({ cmd: 'subscribe', channel: 'test:shots' }));
        await out.page.locator('.composer-panel button[type="submit"]').click();
        await out.page.locator('#composer-text').fill(JSON.stringify({ cmd: 'publish', channel: 'test:shots', data: { text: lang === 'en' ? 'hello from the console' : '来自控制台的问候', n: 1 } }));
        await out.page.locator('.composer-panel button[type="submit"]').click();
        await waitFor('the publication', async () => (await frames(out.page)).some(([d, , text]) => d === 'in' && /publication/.test(text)));
        await out.page.locator('#frames .frame.in details').last().evaluate((d) => (d.open = true));
        await out.page.evaluate(() => window.scrollTo(0, 0));
        await out.page.screenshot({ path: join(SHOTS, `console-${lang}-${width}.png`), fullPage: width < 600 });
        await out.page.goto(`${server.url}/admin`);
        await waitFor('the rates', async () => /\d/.test(await out.page.locator('#figure-publications').textContent()));
        await out.page.screenshot({ path: join(SHOTS, `admin-${lang}-${width}.png`), fullPage: width < 600 });
        assert.deepEqual(out.problems, []);
        await out.context.close();
      }
    }
  });
});
