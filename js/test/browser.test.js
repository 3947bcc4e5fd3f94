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
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { startServer, until, sleep, freePort, LIBRARY } from './server.js';

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
    // A ping's answer follows whatever the server had sent the page before: a duplicate
    // on its way would be in by then.
    await page.evaluate(() => window.sb.ping());
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

/**
 * A site on another origin than the server's (another port): `/` is a page with a status
 * line, `/switchboard.js` a copy of the library, as a web application would serve them.
 */
async function otherSite() {
  const port = await freePort();
  const page = '<!doctype html><meta charset="utf-8"><title>elsewhere</title><p id="status">not connected</p>';
  const http = createServer((req, res) => {
    if (req.url === '/switchboard.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
      res.end(readFileSync(LIBRARY));
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(page);
    }
  });
  await new Promise((ok) => http.listen(port, '127.0.0.1', ok));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => http.close(ok)) };
}

/**
 * On the page of `site`: a client of `server` with the default transports and a short
 * backoff (an endless retry would show within a second), whose events are kept in
 * `window.state` and shown in `#status` as docs/client.md's example page shows them.
 */
async function connectFrom(page, server) {
  await page.evaluate(async (server) => {
    const { Switchboard } = await import('/switchboard.js');
    const state = { connecting: [], disconnects: [], errors: [], ready: null };
    // @ts-ignore
    window.state = state;
    const sb = new Switchboard(server, { minReconnectDelay: 50, maxReconnectDelay: 200 });
    // @ts-ignore
    window.sb = sb;
    const status = document.getElementById('status');
    sb.on('connecting', (ev) => state.connecting.push(ev.transport));
    sb.on('connected', (ev) => (status.textContent = `online (${ev.transport})`));
    sb.on('error', (err) => state.errors.push({ code: err.code, message: err.message }));
    sb.on('disconnected', (ev) => {
      state.disconnects.push(ev);
      status.textContent = ev.reconnect ? `reconnecting in ${ev.delay} ms (${ev.code} ${ev.reason})` : `offline (${ev.code} ${ev.reason})`;
    });
    sb.connect();
    sb.ready().then(
      () => (state.ready = 'open'),
      (err) => (state.ready = err.message),
    );
  }, server);
}

describe('headless Chromium: a page on an origin the server does not allow (issue 11, point 1)', () => {
  test('the library says which origin is refused and how to allow it, and stops retrying', async () => {
    const server = await startServer();
    const site = await otherSite();
    const page = await browser.newPage();
    const refused = () => server.metric('switchboard_refused_origin_total');
    try {
      await page.goto(`${site.url}/`);
      await connectFrom(page, server.url);
      const reason = `origin ${site.url} is not allowed by the server; add it to allowed_origins or --allow-origin`;
      await until(() => page.evaluate(() => window.state.ready !== null), 10000, 'the client to give up');
      const state = await page.evaluate(() => window.state);
      assert.equal(await page.textContent('#status'), `offline (1006 ${reason})`, 'what the page shows');
      assert.deepEqual(state.errors, [{ code: 'origin', message: reason }]);
      assert.deepEqual(state.disconnects, [{ code: 1006, reason, reconnect: false }]);
      assert.equal(state.ready, `closed: 1006 ${reason}`, 'ready() rejects with it');
      assert.deepEqual(state.connecting, ['websocket', 'sse', 'longpoll'], 'one round, each transport once');
      assert.equal(await page.evaluate(() => window.sb.readyState), 3, 'CLOSED');
      // The server refused each transport once and the two requests of the check.
      const count = await refused();
      assert.equal(count, state.connecting.length + 2, 'refusals counted by the server');
      // Nothing more comes: the point is that nothing happens, so this waits. 1 s is five
      // times the largest backoff delay of this client (200 ms): a client that went on
      // retrying would have made at least four more rounds, twelve more refusals.
      await sleep(1000);
      assert.equal(await refused(), count, 'no attempt after giving up');
      assert.equal((await page.evaluate(() => window.state)).connecting.length, 3);

      // Allowed: the same page connects when the application calls connect() again.
      server.opts.allowedOrigins = [site.url];
      await server.restart();
      await page.evaluate(() => window.sb.connect());
      await until(() => page.evaluate(() => window.sb.readyState === 1), 10000, 'the page to connect once allowed');
      assert.equal(await page.textContent('#status'), 'online (websocket)');
      assert.equal(await refused(), 0, 'the restarted server refused nothing');
    } finally {
      await page.close();
      await site.close();
      await server.dispose();
    }
  });

  test('a server that is down is not an origin refusal: the page keeps retrying', async () => {
    const site = await otherSite();
    const page = await browser.newPage();
    try {
      await page.goto(`${site.url}/`);
      const nobody = `http://127.0.0.1:${await freePort()}`; // nothing listens there
      await connectFrom(page, nobody);
      await until(() => page.evaluate(() => window.state.disconnects.length >= 3), 10000, 'three failed rounds');
      const state = await page.evaluate(() => window.state);
      assert.ok(state.disconnects.every((d) => d.reconnect && d.code === 1006), JSON.stringify(state.disconnects));
      assert.deepEqual(state.errors, []);
      assert.equal(state.ready, null, 'still trying');
      assert.match(await page.textContent('#status'), /^reconnecting in \d+ ms \(1006 /);
    } finally {
      await page.close();
      await site.close();
    }
  });
});
