// Browser tests of the log viewer (/logs), in headless Chromium against a real
// `switchboard serve` (see apps.test.js for the setup).
//
// Covered (issue 14, "Log viewer"): a line shows within 1 s of its publication; the recent
// lines show first on opening; pause holds new lines ("N new lines") and resume shows
// them; two hosts' logs merge in time order whatever order their batches came in, and
// show side by side; the filter (substring and regex) hides and highlights; ANSI colours
// are rendered as classes and markup in a line stays text; levels are coloured; "load
// older" pages back through history; a link to a line brings it back after a reload; the
// unread count in the title while the tab is hidden; following stops when the reader
// scrolls up and comes back with "Follow new lines"; the scrollback (5,000 lines) and
// the pause buffer (10,000) are bounded; a non-administrator is refused;
// axe-core finds no serious or critical violation; no CSP violation; screenshots
// docs/screenshots/logs-{en,zh}-{1280,390}.png.
//
// When the binary has `switchboard agent`, a real agent tails a temporary file and a line
// appended to it must show within 1 s of the write. The other hosts are test publishers:
// WebSocket clients with agent tokens from
// `switchboard token --agent HOST` publishing what the issue 14 contract says an agent
// publishes (hello on metrics:HOST, line batches on logs:HOST:NAME).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from './server.js';
import { APPS, SHOTS, useChromium, person, online, waitFor, signUp, signIn, axe } from './pages.js';
import { addAdmin, agent, realAgent } from './hosts.js';

useChromium();

/** The texts of the lines shown, in page order (only the visible ones). */
const shown = (page) => page.$$eval('.log-line:not([hidden]) .log-text', (els) => els.map((e) => e.textContent));

describe('log viewer', () => {
  let server;
  let root;
  let web1;
  let web2;
  before(async () => {
    server = await startServer(APPS);
    await addAdmin(server, 'root');
    web1 = await agent(server, 'web1', ['app', 'db']);
    web2 = await agent(server, 'web2', ['app']);
  });
  after(async () => {
    for (const a of [web1, web2]) if (a) a.close();
    if (root) await root.context.close();
    await server.dispose();
  });

  test('recent lines first, then a new line within 1 s of its publication', async () => {
    await web1.lines('app', ['boot 1', 'boot 2', 'boot 3']);
    root = await person();
    await signIn(root, server.url, 'root');
    const { page } = root;
    await page.goto(`${server.url}/logs`);
    await online(page);
    await page.getByLabel('web1 · app').check();
    await waitFor('the recent lines', async () => (await shown(page)).join() === 'boot 1,boot 2,boot 3');
    assert.match(page.url(), /\?s=web1%3Aapp|\?s=web1:app/);
    const t0 = Date.now();
    await web1.lines('app', ['fresh line']);
    await page.locator('.log-line', { hasText: 'fresh line' }).waitFor({ timeout: 1000 });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 1000, `shown after ${elapsed} ms`);
    // Each line says where and when it comes from.
    const line = page.locator('.log-line', { hasText: 'fresh line' });
    assert.equal(await line.locator('.log-src').textContent(), 'web1 · app');
    assert.match(await line.locator('.log-time').textContent(), /^\d\d:\d\d:\d\d\.\d\d\d$/);
    assert.deepEqual(root.problems, []);
  });

  test('the real agent: a line written to a file shows within 1 s', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sb-logs-'));
    const file = join(dir, 'app.log');
    writeFileSync(file, 'before the agent 1\nbefore the agent 2\n');
    const real = await realAgent(server, 'real1', { app: file });
    try {
      const { page } = root;
      await page.goto(`${server.url}/logs?s=real1:app`);
      await online(page);
      await page.locator('.log-line', { hasText: 'before the agent 2' }).waitFor({ timeout: 15000 });
      for (let i = 0; i < 3; i++) {
        const text = `written at ${Date.now()} #${i}`;
        const t0 = Date.now();
        appendFileSync(file, `${text}\n`);
        await page.locator('.log-line', { hasText: text }).waitFor({ timeout: 5000 });
        const elapsed = Date.now() - t0;
        assert.ok(elapsed < 1000, `line ${i} shown ${elapsed} ms after its write`);
      }
      assert.deepEqual(root.problems, []);
    } finally {
      await real.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('pause holds new lines; resume shows them in order', async () => {
    const { page } = root;
    await page.goto(`${server.url}/logs?s=web1:app`);
    await online(page);
    await page.locator('.log-line', { hasText: 'fresh line' }).waitFor();
    await page.getByRole('button', { name: 'Pause', exact: true }).click();
    await web1.lines('app', ['held 1', 'held 2']);
    await web1.lines('app', ['held 3']);
    const held = page.getByRole('button', { name: '3 new lines' });
    await held.waitFor();
    assert.ok(!(await shown(page)).includes('held 1'), 'paused: not shown yet');
    await held.click();
    await waitFor('the held lines', async () => (await shown(page)).slice(-3).join() === 'held 1,held 2,held 3');
    assert.equal(await page.getByRole('button', { name: 'Pause', exact: true }).count(), 1);
    assert.deepEqual(root.problems, []);
  });

  test('two hosts merge in time order, and show side by side', async () => {
    const { page } = root;
    await page.goto(`${server.url}/logs?s=web1:db,web2:app`);
    await online(page);
    const t = Date.now();
    // web2's batch comes first, but web1's lines are older or between.
    await web2.lines('app', [
      ['B1', t + 1],
      ['B3', t + 3],
    ]);
    await web1.lines('db', [
      ['A0', t],
      ['A2', t + 2],
      ['A4', t + 4],
    ]);
    await waitFor('the merged lines', async () => (await shown(page)).filter((x) => /^[AB]\d$/.test(x)).length === 5);
    assert.deepEqual((await shown(page)).filter((x) => /^[AB]\d$/.test(x)), ['A0', 'B1', 'A2', 'B3', 'A4']);
    await page.getByLabel('Layout').selectOption('split');
    const columns = page.locator('.log-col');
    await waitFor('two columns', async () => (await columns.count()) === 2);
    assert.deepEqual(await columns.nth(0).locator('.log-text').allTextContents(), ['A0', 'A2', 'A4']);
    assert.deepEqual(await columns.nth(1).locator('.log-text').allTextContents(), ['B1', 'B3']);
    await page.getByLabel('Layout').selectOption('merged');
    assert.deepEqual(root.problems, []);
  });

  test('filter and highlight; ANSI colours; markup stays text; levels', async () => {
    const { page } = root;
    await page.goto(`${server.url}/logs?s=web1:app`);
    await online(page);
    await web1.lines('app', ['\x1b[31mred alert\x1b[0m and \x1b[1;32mgreen\x1b[0m', '<img src=x onerror="window.pwned=1"> not markup', 'ERROR disk full', 'WARN slow request', 'job b42 done']);
    await page.locator('.log-line', { hasText: 'job b42 done' }).waitFor();
    const red = page.locator('.log-line', { hasText: 'red alert' });
    assert.equal(await red.locator('.ansi-fg-1').textContent(), 'red alert');
    assert.equal(await red.locator('.ansi-bold.ansi-fg-2').textContent(), 'green');
    assert.ok(!(await red.textContent()).includes('\x1b'), 'no escape shown');
    assert.equal(await page.locator('.log-lines img').count(), 0);
    assert.ok(await page.locator('.log-line', { hasText: '<img src=x' }).count());
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.match(await page.locator('.log-line', { hasText: 'ERROR disk full' }).getAttribute('class'), /lvl-error/);
    assert.match(await page.locator('.log-line', { hasText: 'WARN slow request' }).getAttribute('class'), /lvl-warn/);

    await page.getByLabel('Filter lines').fill('disk');
    await waitFor('the filter', async () => (await shown(page)).every((x) => /disk/i.test(x)) && (await shown(page)).length > 0);
    assert.equal(await page.locator('.log-line:not([hidden]) mark').first().textContent(), 'disk');
    await page.getByLabel('Regular expression').check();
    await page.getByLabel('Filter lines').fill('b\\d+');
    await waitFor('the regex', async () => (await shown(page)).join() === 'job b42 done');
    assert.equal(await page.locator('.log-line:not([hidden]) mark').textContent(), 'b42');
    await page.getByLabel('Filter lines').fill('(');
    await page.getByText('Not a valid regular expression.').waitFor();
    await page.getByLabel('Filter lines').fill('');
    await page.getByLabel('Regular expression').uncheck();
    await waitFor('no filter', async () => (await shown(page)).length >= 5);
    assert.deepEqual(root.problems, []);
  });

  test('load older pages back; a link to a line; the unread count while hidden', async () => {
    const texts = Array.from({ length: 30 }, (_, i) => `old ${i}`);
    for (const text of texts) await web2.lines('history', [text]);
    const { page } = root;
    await page.goto(`${server.url}/logs?s=web2:history`);
    await online(page);
    await waitFor('the recent 20', async () => (await shown(page)).filter((x) => x.startsWith('old ')).length === 20);
    assert.equal((await shown(page))[0], 'old 10');
    await page.getByRole('button', { name: 'Load older lines' }).click();
    await waitFor('the older lines', async () => (await shown(page))[0] === 'old 0');
    await page.getByRole('button', { name: 'Start of history' }).waitFor();

    // A line's link: its time. After a reload, the line is marked and in view.
    const target = page.locator('.log-line', { hasText: 'old 3' });
    const href = await target.locator('.log-time').getAttribute('href');
    assert.match(href, /^#line=web2:history:\d+:0$/);
    await page.goto(`${server.url}/logs${href}`);
    await online(page);
    await page.locator('.log-line.is-target', { hasText: 'old 3' }).waitFor();
    assert.ok(await page.locator('.log-line.is-target', { hasText: 'old 3' }).isVisible());

    // Hidden: the title counts what came meanwhile; visible again: it is gone.
    await page.evaluate(() => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await web2.lines('history', ['while away 1', 'while away 2']);
    await waitFor('the unread count', async () => (await page.title()).startsWith('(2) Logs'));
    await page.evaluate(() => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => false });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await waitFor('the count gone', async () => (await page.title()) === 'Logs · Switchboard');
    assert.deepEqual(root.problems, []);
  });

  test('following stops when the reader scrolls up, and comes back', async () => {
    const { page } = root;
    await page.goto(`${server.url}/logs?s=web1:db`);
    await online(page);
    await web1.lines('db', Array.from({ length: 80 }, (_, i) => `row ${i}`));
    await page.locator('.log-line', { hasText: 'row 79' }).waitFor();
    const scroller = page.locator('.log-scroll');
    const atBottom = () => scroller.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 30);
    await waitFor('following', atBottom);
    await scroller.evaluate((el) => el.scrollTo(0, 0));
    await page.getByRole('button', { name: 'Follow new lines' }).waitFor();
    await web1.lines('db', ['row 80']);
    await page.locator('.log-line', { hasText: 'row 80' }).waitFor({ state: 'attached' });
    assert.equal(await scroller.evaluate((el) => el.scrollTop), 0, 'the reader stays where they are');
    await page.getByRole('button', { name: 'Follow new lines' }).click();
    await waitFor('following again', atBottom);
    await web1.lines('db', ['row 81']);
    await page.locator('.log-line', { hasText: 'row 81' }).waitFor();
    await waitFor('still at the bottom', atBottom);
    assert.deepEqual(root.problems, []);
  });

  test('the scrollback and the pause buffer are bounded', { timeout: 120000 }, async () => {
    // A host of its own: 6,000 lines while following (the list keeps 5,000), then 10,500
    // while paused (the buffer holds 10,000 and says how many it dropped).
    const flood = await agent(server, 'flood', ['big']);
    const p = await person();
    try {
      await signIn(p, server.url, 'root');
      const { page } = p;
      await page.goto(`${server.url}/logs?s=flood:big`);
      await online(page);
      const batches = async (from, to) => {
        for (let n = from; n < to; n += 100) {
          await flood.lines('big', Array.from({ length: 100 }, (_, i) => `line ${n + i}`));
        }
      };
      const count = () => page.locator('.log-line').count();
      await batches(0, 6000);
      await page.locator('.log-text', { hasText: /^line 5999$/ }).waitFor({ timeout: 30000 });
      await waitFor('the oldest lines to leave', async () => (await count()) === 5000);
      assert.equal((await shown(page))[0], 'line 1000');

      await page.getByRole('button', { name: 'Pause', exact: true }).click();
      await batches(6000, 16500);
      await page.getByRole('button', { name: '10,000 new lines (500 dropped)' }).waitFor({ timeout: 30000 });
      assert.equal(await count(), 5000, 'nothing shown while paused');
      await page.getByRole('button', { name: '10,000 new lines (500 dropped)' }).click();
      await page.locator('.log-text', { hasText: /^line 16499$/ }).waitFor();
      await waitFor('the list back at its bound', async () => (await count()) === 5000);
      assert.equal((await shown(page))[0], 'line 11500');
      assert.deepEqual(p.problems, []);
    } finally {
      flood.close();
      await p.context.close();
    }
  });

  test('a non-administrator is refused', async () => {
    const bob = await person();
    await signUp(bob, server.url, 'bob');
    await bob.page.goto(`${server.url}/logs`);
    await bob.page.getByRole('heading', { name: 'For administrators only' }).waitFor();
    assert.equal(await bob.page.locator('#logs-view').count(), 0);
    assert.deepEqual(bob.problems, []);
    await bob.context.close();
  });

  test('axe-core and screenshots, English and Chinese, desktop and phone', { timeout: 180000 }, async () => {
    mkdirSync(SHOTS, { recursive: true });
    const cookies = await root.context.cookies();
    const t = Date.now() - 5000;
    await web1.lines('app', [
      ['GET /api/orders 200 12ms', t],
      ['\x1b[33mWARN\x1b[0m slow query: 840 ms (orders by customer)', t + 400],
      ['GET /health 200 1ms', t + 900],
      ['\x1b[31mERROR\x1b[0m payment gateway timeout after 5000 ms', t + 1500],
      ['retrying payment 7f3a (attempt 2)', t + 1600],
    ]);
    await web2.lines('app', [
      ['worker 2 picked job 9912', t + 200],
      ['job 9912 done in 310 ms', t + 520],
      ['DEBUG cache hit ratio 0.93', t + 1100],
      ['worker 2 idle', t + 1700],
    ]);
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
        await out.page.goto(`${server.url}/logs?s=web1:app,web2:app`);
        await online(out.page);
        await out.page.locator('.log-line', { hasText: 'worker 2 idle' }).waitFor();
        await out.page.locator('.log-line', { hasText: 'payment gateway' }).waitFor();
        if (lang === 'en' && width === 1280) {
          const p = await person({ bypassCSP: true });
          await p.context.addCookies(cookies);
          await p.page.goto(`${server.url}/logs?s=web1:app,web2:app`);
          await p.page.locator('.log-line', { hasText: 'worker 2 idle' }).waitFor();
          assert.deepEqual(await axe(p.page), []);
          await p.page.getByRole('button', { name: 'Pause', exact: true }).click();
          await web1.lines('app', ['held for axe']);
          await p.page.getByRole('button', { name: '1 new line' }).waitFor();
          assert.deepEqual(await axe(p.page), []);
          await p.context.close();
        }
        await out.page.evaluate(() => window.scrollTo(0, 0));
        await out.page.screenshot({ path: join(SHOTS, `logs-${lang}-${width}.png`), fullPage: width < 600 });
        assert.deepEqual(out.problems, []);
        await out.context.close();
      }
    }
  });
});
