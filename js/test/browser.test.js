// Browser tests: headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// loads /switchboard.js from a real `switchboard serve` and subscribes over each transport
// in turn. A publisher publishes 1,000 messages through the server API while the test
// cuts the page's connection several times (POST /api/disconnect with reconnect: true,
// close 4008) and restarts the server once (close 1001, every session lost); the page
// must receive all 1,000, in order, exactly once. Then the same with /ws refused by the
// server's configuration ([transports] websocket = false) and the default transports: the
// page falls back to SSE and still receives everything.
//
// The page never calls connect() again: after each cut and after the restart, the library
// reconnects by itself and recovers what was published meanwhile.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { startServer, until, sleep, LIBRARY } from './server.js';

// The watcher of the pagehide tests runs in Node.
const { Switchboard } = await import(pathToFileURL(LIBRARY).href);

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TOTAL = 1000;
/** Where the publisher cuts the page's connection, and where it restarts the server. */
const CUTS = new Set([100, 220, 340, 460, 640, 760, 880]);
const RESTART_AT = 550;

let browser;
before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // The machine has no outside network: keep Chromium from reaching for it.
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  if (browser) await browser.close();
});

/**
 * One page, one subscription, 1,000 publications with cuts and a restart.
 * @param {{transports?: string[], server?: object, expect: string}} opts
 */
async function stream(opts) {
  const server = await startServer(opts.server);
  const page = await browser.newPage();
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Chromium logs each failed request: the refused /ws, connections refused during the
    // restart, the 404 of a session the restart forgot. Those are the test's doing.
    const network = /^Failed to load resource|^WebSocket connection to .* failed/.test(msg.text());
    if (msg.type() === 'error' && !network) problems.push(`console: ${msg.text()}`);
  });
  const channel = 'test:browser';
  const user = 'page';
  try {
    await page.goto(`${server.url}/health`);
    await page.evaluate(
      async ({ token, transports, channel }) => {
        const { Switchboard } = await import('/switchboard.js');
        const state = { got: [], failed: 0, disconnects: [], connected: [], errors: [] };
        // @ts-ignore
        window.state = state;
        const options = { token, minReconnectDelay: 100, maxReconnectDelay: 2000 };
        if (transports) options.transports = transports;
        const sb = new Switchboard(location.origin, options);
        // @ts-ignore
        window.sb = sb;
        sb.subscribe(channel, {
          onPublication: (p) => state.got.push(p.data.n),
          onRecoveryFailed: () => state.failed++,
        });
        sb.on('connected', (ev) => state.connected.push(ev.transport));
        sb.on('error', (err) => state.errors.push(err.message));
        sb.on('disconnected', (ev) => state.disconnects.push({ code: ev.code, reconnect: ev.reconnect }));
        sb.connect();
        await sb.ready();
      },
      { token: server.token(user), transports: opts.transports ?? null, channel },
    );
    await until(() => page.evaluate((ch) => window.sb.getSubscription(ch).state === 'subscribed', channel), 10000, 'the subscription');

    // Before each cut, wait until the page is connected and subscribed again, so that
    // every cut (and the restart) hits a live connection; the publications after a cut
    // go out while the page is away, and reach it through recovery.
    const live = () =>
      until(
        () => page.evaluate((ch) => window.sb.readyState === 1 && window.sb.getSubscription(ch).state === 'subscribed', channel),
        20000,
        'the page to be connected',
      );
    let cuts = 0;
    const started = Date.now();
    for (let n = 1; n <= TOTAL; n++) {
      await server.api('publish', { channel, data: { n } });
      if (CUTS.has(n)) {
        await live();
        cuts += (await server.api('disconnect', { user, reconnect: true })).disconnected;
      }
      if (n === RESTART_AT) {
        await live();
        await server.restart();
      }
    }
    const published = Date.now() - started;
    await until(() => page.evaluate(() => window.state.got.length >= 1000), 60000, 'the page to receive 1,000 publications');
    await sleep(300); // anything extra would show now
    const state = await page.evaluate(() => window.state);
    assert.equal(state.got.length, TOTAL, 'exactly 1,000 publications');
    assert.deepEqual(state.got, Array.from({ length: TOTAL }, (_, i) => i + 1), 'in order, each once');
    assert.equal(state.failed, 0, 'recovery never failed');
    assert.equal(cuts, CUTS.size, 'every cut hit a connection');
    const codes = state.disconnects.map((d) => d.code);
    assert.equal(codes.filter((c) => c === 4008).length, cuts, `one 4008 per cut: ${codes}`);
    assert.ok(
      state.disconnects.every((d) => d.reconnect),
      `the library reconnected by itself every time: ${JSON.stringify(state.disconnects)}`,
    );
    assert.ok(
      state.disconnects.some((d) => d.code !== 4008),
      `the restart cut the connection too: ${JSON.stringify(state.disconnects)}`,
    );
    assert.ok(state.connected.length >= cuts + 2, `a connection, then one per cut and after the restart: ${state.connected.length}`);
    assert.ok(state.connected.every((t) => t === opts.expect), `connected over ${state.connected}`);
    assert.deepEqual(problems, []);
    return { cuts, connects: state.connected.length, published };
  } finally {
    await page.close();
    await server.dispose();
  }
}

describe('headless Chromium: 1,000 publications through cuts and a restart', () => {
  for (const transport of ['websocket', 'sse', 'longpoll']) {
    test(`transports: ['${transport}']`, { timeout: 120000 }, async (t) => {
      const r = await stream({ transports: [transport], expect: transport });
      t.diagnostic(`${r.cuts} cuts + 1 restart, ${r.connects} connects, published in ${r.published} ms`);
    });
  }

  test('/ws refused by the server, default transports: falls back to SSE', { timeout: 120000 }, async (t) => {
    const r = await stream({ server: { transports: { websocket: false } }, expect: 'sse' });
    t.diagnostic(`${r.cuts} cuts + 1 restart, ${r.connects} connects over sse, published in ${r.published} ms`);
  });
});

describe('headless Chromium: a page that goes away ends its session (issue 10, point 17)', () => {
  // The page's HTTP session would otherwise stay, in presence, for limits.session_idle
  // (60 s): on pagehide the library hands the close command to navigator.sendBeacon.
  for (const transport of ['sse', 'longpoll']) {
    test(`over ${transport}: navigating away, another client sees the leave at once`, async () => {
      const server = await startServer();
      const page = await browser.newPage();
      const channel = `test:pagehide-${transport}`;
      const watcher = new Switchboard(server.url, { WebSocket, transports: ['websocket'], token: server.token('watcher') });
      try {
        const joins = [];
        const leaves = [];
        watcher.subscribe(channel, { onJoin: (e) => joins.push(e.info.user), onLeave: (e) => leaves.push(e.info.user) });
        watcher.connect();
        await watcher.ready();
        await page.goto(`${server.url}/health`);
        await page.evaluate(
          async ({ token, transport, channel }) => {
            const { Switchboard } = await import('/switchboard.js');
            const sb = new Switchboard(location.origin, { token, transports: [transport] });
            sb.subscribe(channel);
            sb.connect();
            await sb.ready();
          },
          { token: server.token('page'), transport, channel },
        );
        await until(() => joins.includes('page'), 5000, 'the join of the page');
        const started = Date.now();
        await page.goto(`${server.url}/health?page=next`);
        await until(() => leaves.includes('page'), 3000, 'the leave of the page');
        const took = Date.now() - started;
        assert.deepEqual(Object.keys((await server.api('presence', { channel })).presence), ['watcher']);
        assert.ok(took < 3000, `the leave came ${took} ms after the navigation`);
      } finally {
        await watcher.close();
        await page.close();
        await server.dispose();
      }
    });
  }
});
