// permessage-deflate with Chromium's own WebSocket: the browser offers the extension on
// every connection, `switchboard serve` takes it by default ([deflate]), and the page
// reads compressed publications and sends compressed commands. The bytes the server wrote
// for the same publications, with the extension and without it, say what it saves for
// chat-sized and log-sized messages.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, until } from './server.js';
import { useChromium, person } from './pages.js';

useChromium();

/** A chat line as the chat app publishes one. */
const chat = (i) => ({ kind: 'message', id: `m${i}`, user: 'ann', name: 'Ann', text: `Shall we meet at ${i} o'clock by the station?`, at: 1765000000000 + i });
/** Twenty access-log lines, as the agent's log tailing publishes them. */
const logs = (i) => ({
  host: 'web-1',
  file: 'access.log',
  lines: Array.from({ length: 20 }, (_, k) => `10.0.${i}.${k} - - [06/Dec/2026:12:00:${String(k).padStart(2, '0')} +0000] "GET /static/app.js?v=${i} HTTP/1.1" 200 5120 "-" "Mozilla/5.0 (X11; Linux x86_64)"`),
});
const COUNT = 20;

/**
 * A page on the server's origin with Chromium's WebSocket on /ws, connected and subscribed
 * to `channel`; returns the extensions the browser reports as negotiated.
 */
async function openPage(server, channel) {
  const p = await person();
  const page = p.page;
  await page.goto(`${server.url}/health`);
  const extensions = await page.evaluate(
    async ({ token, channel }) => {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      const state = { got: [], replies: {} };
      // @ts-ignore
      window.state = state;
      // @ts-ignore
      window.ws = ws;
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.push === 'publication') state.got.push(m.data);
        else if (m.id) state.replies[m.id] = m;
      };
      await new Promise((ok, fail) => {
        ws.onopen = ok;
        ws.onerror = fail;
      });
      const call = (id, command) =>
        new Promise((ok) => {
          ws.send(JSON.stringify({ id, ...command }));
          const wait = () => (state.replies[id] ? ok(state.replies[id]) : setTimeout(wait, 10));
          wait();
        });
      // @ts-ignore
      window.call = call;
      await call(1, { cmd: 'connect', token });
      await call(2, { cmd: 'subscribe', channel });
      return ws.extensions;
    },
    { token: server.token('ann'), channel },
  );
  return { p, page, extensions };
}

/**
 * Publishes COUNT messages made by `make` through the API and waits for the page to have
 * them all; returns what the server wrote to its connections meanwhile, and the page's data.
 */
async function publishAll(server, page, channel, make) {
  const before = await server.metric('switchboard_bytes_out_total');
  const start = await page.evaluate(() => window.state.got.length);
  for (let i = 0; i < COUNT; i++) await server.api('publish', { channel, data: make(i) });
  await until(() => page.evaluate((n) => window.state.got.length >= n, start + COUNT), 10000, 'the publications');
  const got = await page.evaluate((start) => window.state.got.slice(start), start);
  assert.deepEqual(got, Array.from({ length: COUNT }, (_, i) => make(i)), 'every publication arrived intact');
  return (await server.metric('switchboard_bytes_out_total')) - before;
}

describe("Chromium's permessage-deflate through /ws", () => {
  test('negotiated by default, read and written compressed; bytes saved for chat and logs', async (t) => {
    const written = {};
    for (const enabled of [true, false]) {
      const server = await startServer({ deflate: { enabled } });
      const channel = 'test:deflate';
      const { p, page, extensions } = await openPage(server, channel);
      try {
        if (enabled) {
          assert.match(extensions, /^permessage-deflate/, 'Chromium took the extension');
          assert.match(extensions, /server_no_context_takeover/);
          assert.match(extensions, /client_no_context_takeover/);
        } else {
          assert.equal(extensions, '', 'switched off, nothing negotiated');
        }
        written[enabled] = {
          chat: await publishAll(server, page, channel, chat),
          logs: await publishAll(server, page, channel, logs),
        };
        // The page publishes a log batch: Chromium compresses it, the server inflates it,
        // and history holds what the page sent.
        const sent = logs(99);
        const reply = await page.evaluate((data) => window.call(3, { cmd: 'publish', channel: 'test:deflate', data }), sent);
        assert.ok(reply.result, JSON.stringify(reply));
        const history = await server.api('history', { channel, limit: 1 });
        assert.deepEqual(history.publications.at(-1).data, sent);
        assert.deepEqual(p.problems, []);
      } finally {
        await p.context.close();
        await server.dispose();
      }
    }
    for (const kind of ['chat', 'logs']) {
      const ratio = written.true[kind] / written.false[kind];
      t.diagnostic(`${kind}: ${COUNT} publications, ${written.false[kind]} bytes plain, ${written.true[kind]} compressed (${(ratio * 100).toFixed(0)}%)`);
    }
    assert.ok(written.true.logs * 4 < written.false.logs, `log lines shrink more than 4 times: ${JSON.stringify(written)}`);
    assert.ok(written.true.chat < written.false.chat, `chat lines shrink: ${JSON.stringify(written)}`);
  });
});
