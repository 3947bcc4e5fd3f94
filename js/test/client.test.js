// Node tests of the browser library (crates/server/assets/switchboard.js) against a real
// `switchboard serve`. Node 20 has no global WebSocket or EventSource, so the tests pass
// the `ws` and `eventsource` packages through the library's WebSocket and EventSource
// options (a browser uses its own; browser.test.js runs the same library in Chromium).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';
import { getEventListeners } from 'node:events';
import WebSocket, { WebSocketServer } from 'ws';
import { EventSource } from 'eventsource';
import { startServer, until, sleep, freePort, LIBRARY } from './server.js';

const { Switchboard, SwitchboardError, OPEN, CLOSED, CONNECTING } = await import(pathToFileURL(LIBRARY).href);

const TRANSPORTS = ['websocket', 'sse', 'longpoll', 'poll'];
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

/** Every client made by a test, closed when the file ends. */
const clients = [];
function client(server, opts = {}) {
  const sb = new Switchboard(server.url, { WebSocket, EventSource, pollInterval: 100, ...opts });
  clients.push(sb);
  return sb;
}
after(() => clients.forEach((sb) => sb.close()));

/** Resolves with the next event `name` of `sb`. */
function once(sb, name, pred = () => true) {
  return new Promise((resolve) => {
    const off = sb.on(name, (ev) => {
      if (!pred(ev)) return;
      off();
      resolve(ev);
    });
  });
}

/** A subscription that records what it delivers. */
function record(sb, channel, extra = {}) {
  const rec = { got: [], pubs: [], failed: [], joins: [], leaves: [], subscribed: [], errors: [] };
  rec.sub = sb.subscribe(channel, {
    onPublication: (p) => {
      rec.pubs.push(p);
      rec.got.push(p.data.n);
    },
    onRecoveryFailed: (ev) => rec.failed.push(ev),
    onJoin: (ev) => rec.joins.push(ev),
    onLeave: (ev) => rec.leaves.push(ev),
    onSubscribed: (ev) => rec.subscribed.push(ev),
    onError: (err) => rec.errors.push(err),
    ...extra,
  });
  return rec;
}

/**
 * A round trip on the client's connection: the server answers `ping` after whatever it
 * had queued for the connection when the ping came, and every transport delivers in
 * order, so once this resolves nothing the server sent before is still on its way. What
 * must not arrive (a duplicate, a publication after unsubscribing) would have by then.
 */
const fence = (sb) => sb.ping();

/**
 * How long a test watches for something that must not happen at all (a reconnect after a
 * final close code): no message can announce that nothing happened. Those tests give the
 * client minReconnectDelay: 50, so a reconnect, which would start within 50 ms, would
 * show five times over.
 */
const QUIET_MS = 250;

/**
 * The `ws` WebSocket, keeping what goes over it, parsed: `sent` commands, `received`
 * replies and pushes. Tests wait on what the client and the server said to each other.
 */
function wire() {
  const log = { sent: [], received: [] };
  log.WebSocket = class extends WebSocket {
    constructor(...args) {
      super(...args);
      this.on('message', (data) => log.received.push(JSON.parse(String(data))));
    }

    send(data, ...rest) {
      log.sent.push(JSON.parse(String(data)));
      return super.send(data, ...rest);
    }
  };
  return log;
}

/**
 * Resolves once the server answered the client's `ack` of mailbox id `mailbox` (among the
 * commands sent after the first `from`): the messages up to it are out of the mailbox.
 * The client's last ack always names the highest id it handed to the app.
 */
function acked(log, mailbox, from = 0) {
  return until(
    () => {
      const ack = log.sent.slice(from).find((c) => c.cmd === 'ack' && c.mailbox === mailbox);
      return ack && log.received.some((m) => m.id === ack.id && m.result);
    },
    5000,
    `the answer to the ack of mailbox ${mailbox}`,
  );
}

async function publishRange(server, channel, a, b) {
  for (const n of range(a, b)) await server.api('publish', { channel, data: { n } });
}

describe('the served library', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('GET /switchboard.js is the module, as JavaScript, readable from any origin', async () => {
    const res = await fetch(`${server.url}/switchboard.js`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(await res.text(), readFileSync(LIBRARY, 'utf8'));
  });

  test('GET /switchboard.d.ts is its declarations', async () => {
    const res = await fetch(`${server.url}/switchboard.d.ts`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /typescript/);
    assert.match(await res.text(), /export class Switchboard/);
  });
});

for (const transport of TRANSPORTS) {
  describe(`over ${transport}`, () => {
    let server;
    before(async () => {
      server = await startServer();
    });
    after(() => server.dispose());

    test('connects, subscribes and receives publications in order', async () => {
      const sb = client(server, { transports: [transport] });
      const states = [sb.readyState];
      sb.on('connecting', () => states.push(sb.readyState));
      sb.on('connected', () => states.push(sb.readyState));
      const rec = record(sb, `test:basic-${transport}`);
      const connected = once(sb, 'connected');
      sb.connect();
      const ev = await connected;
      assert.equal(ev.transport, transport);
      assert.equal(sb.transport, transport);
      assert.equal(ev.user, '');
      assert.deepEqual(states, [CLOSED, CONNECTING, OPEN]);
      await until(() => rec.sub.state === 'subscribed', 5000, 'the subscribe reply');
      await publishRange(server, `test:basic-${transport}`, 1, 20);
      await until(() => rec.got.length === 20, 5000, '20 publications');
      assert.deepEqual(rec.got, range(1, 20));
      assert.deepEqual(
        rec.pubs.map((p) => p.offset),
        range(1, 20),
      );
      assert.equal(rec.pubs[0].channel, `test:basic-${transport}`);
      assert.equal(typeof rec.pubs[0].epoch, 'string');
      sb.close();
      assert.equal(sb.readyState === CLOSED || sb.readyState === 2, true);
      await until(() => sb.readyState === CLOSED, 3000, 'CLOSED');
    });

    test('publish, history, presence, send and join round trips', async () => {
      const channel = `test:rt-${transport}`;
      const alice = client(server, { transports: [transport], token: server.token('alice', { info: { name: 'Alice' } }) });
      const bob = client(server, { transports: [transport], token: server.token('bob') });
      const a = record(alice, channel);
      const b = record(bob, channel);
      const messages = [];
      bob.on('message', (m) => messages.push(m));
      alice.connect();
      await until(() => a.sub.state === 'subscribed', 5000, 'alice subscribed');
      bob.connect();
      await until(() => b.sub.state === 'subscribed', 5000, 'bob subscribed');
      await until(() => a.joins.some((j) => j.info.user === 'bob'), 5000, 'the join of bob');

      const pos = await alice.publish(channel, { n: 1, text: 'hi' });
      assert.equal(pos.offset, 1);
      assert.equal(typeof pos.epoch, 'string');
      const pos2 = await a.sub.publish({ n: 2 });
      assert.equal(pos2.offset, 2);
      await until(() => a.got.length === 2 && b.got.length === 2, 5000, 'both publications on both');
      assert.deepEqual(b.got, [1, 2]);
      assert.equal(b.pubs[0].info.user, 'alice');
      assert.deepEqual(b.pubs[0].info.info, { name: 'Alice' });

      const hist = await bob.history(channel, { limit: 1 });
      assert.equal(hist.offset, 2);
      assert.deepEqual(hist.publications.map((p) => p.data.n), [2]);
      const since = await b.sub.history({ since: { offset: 0, epoch: pos.epoch } });
      assert.equal(since.complete, true);
      assert.equal(since.publications.length, 2);

      const pres = await alice.presence(channel);
      assert.deepEqual(Object.keys(pres.presence).sort(), ['alice', 'bob']);
      assert.equal((await b.sub.presence()).presence.alice.info.name, 'Alice');

      const sent = await alice.send('bob', { text: 'psst' });
      assert.equal(sent.status, 'delivered');
      await until(() => messages.length === 1, 5000, 'the private message');
      assert.equal(messages[0].from.user, 'alice');
      assert.deepEqual(messages[0].data, { text: 'psst' });
      assert.equal(messages[0].mailbox, sent.mailbox);

      await b.sub.unsubscribe();
      assert.equal(b.sub.state, 'unsubscribed');
      await until(() => a.leaves.some((l) => l.info.user === 'bob'), 5000, 'the leave of bob');
      await alice.publish(channel, { n: 3 });
      await until(() => a.got.length === 3, 5000, 'the third publication');
      await fence(bob);
      assert.deepEqual(b.got, [1, 2], 'nothing after unsubscribe');
    });

    test('error codes reject the promises', async () => {
      const sb = client(server, { transports: [transport] });
      const bad = record(sb, 'nope:x');
      sb.connect();
      await sb.ready();
      await assert.rejects(sb.publish('logs:web-1', 'x'), (e) => e instanceof SwitchboardError && e.code === 103);
      await assert.rejects(sb.history('nohist:a'), (e) => e.code === 108);
      await assert.rejects(sb.presence('test:not-subscribed'), (e) => e.code === 113);
      await assert.rejects(sb.send('bob', 'x'), (e) => e.code === 103, 'anonymous users cannot send');
      await assert.rejects(sb.publish('test:x', 'x'.repeat(40000)), (e) => e.code === 114);
      await until(() => bad.errors.length === 1, 5000, 'the subscribe error');
      assert.equal(bad.errors[0].code, 102);
      assert.equal(bad.sub.state, 'unsubscribed');
      assert.equal(sb.getSubscription('nope:x'), null);
      assert.equal(sb.readyState, OPEN, 'errors leave the connection open');
      assert.deepEqual(await sb.ping(), {});
    });

    test('after a server-API disconnect (4003) it stays closed; connect() again recovers each missed publication once', async () => {
      const channel = `test:cut-${transport}`;
      const user = `cut-${transport}`;
      const sb = client(server, { transports: [transport], token: server.token(user), minReconnectDelay: 50 });
      const rec = record(sb, channel);
      const disconnects = [];
      sb.on('disconnected', (ev) => disconnects.push(ev));
      const connecting = [];
      sb.on('connecting', (ev) => connecting.push(ev));
      sb.connect();
      await until(() => rec.sub.state === 'subscribed', 5000, 'subscribed');
      await publishRange(server, channel, 1, 5);
      await until(() => rec.got.length === 5, 5000, '5 publications');

      const closed = once(sb, 'disconnected');
      assert.deepEqual(await server.api('disconnect', { user }), { disconnected: 1 });
      const ev = await closed;
      assert.equal(ev.code, 4003);
      assert.equal(ev.reconnect, false);
      assert.equal(sb.readyState, CLOSED);
      await assert.rejects(sb.publish(channel, 'x'), (e) => e.code === 'closed');
      await publishRange(server, channel, 6, 10);
      await sleep(QUIET_MS); // a reconnect would have started by now
      assert.equal(connecting.length, 1, 'no reconnect after 4003');
      assert.equal(disconnects.length, 1);

      sb.connect();
      await sb.ready();
      await publishRange(server, channel, 11, 15);
      await until(() => rec.got.length >= 15, 5000, '15 publications');
      await fence(sb);
      assert.deepEqual(rec.got, range(1, 15));
      assert.deepEqual(rec.failed, []);
      assert.equal(rec.subscribed.at(-1).recovered, true);
    });

    test('after a server-API disconnect with reconnect (4008) it reconnects by itself and recovers each missed publication once', async () => {
      const channel = `test:recon-${transport}`;
      const user = `recon-${transport}`;
      // The largest first delay the backoff can draw (0.99 x 1000 ms): the publications
      // below are made while the client is away, so they can only arrive by recovery.
      const sb = client(server, { transports: [transport], token: server.token(user), minReconnectDelay: 1000, random: () => 0.99 });
      const rec = record(sb, channel);
      const disconnects = [];
      sb.on('disconnected', (ev) => disconnects.push(ev));
      const connects = [];
      sb.on('connected', (ev) => connects.push({ ...ev, at: Date.now() }));
      sb.connect();
      await until(() => rec.sub.state === 'subscribed', 5000, 'subscribed');
      await publishRange(server, channel, 1, 5);
      await until(() => rec.got.length === 5, 5000, '5 publications');

      const closed = once(sb, 'disconnected');
      assert.deepEqual(await server.api('disconnect', { user, reconnect: true }), { disconnected: 1 });
      const ev = await closed;
      assert.deepEqual(ev, { code: 4008, reason: 'disconnected by the server; reconnect', reconnect: true, delay: 990 });
      assert.equal(sb.readyState, CONNECTING);
      // A command made while away waits in the queue and goes after the reconnect.
      const queued = sb.publish(channel, { n: 11 });
      await publishRange(server, channel, 6, 10);
      const published = Date.now();
      assert.deepEqual(await queued, { offset: 11, epoch: rec.sub.epoch });
      assert.equal(connects.length, 2, 'one reconnect');
      assert.ok(connects[1].at > published, 'reconnected after the publications it missed');
      assert.equal(connects[1].user, user, 'the same token');
      assert.equal(connects[1].transport, transport);
      await publishRange(server, channel, 12, 15);
      await until(() => rec.got.length >= 15, 5000, '15 publications');
      await fence(sb);
      assert.deepEqual(rec.got, range(1, 15), 'each once, in order');
      assert.deepEqual(rec.failed, []);
      assert.equal(rec.subscribed.length, 2);
      assert.equal(rec.subscribed.at(-1).recovered, true);
      assert.deepEqual(
        disconnects.map((d) => d.code),
        [4008],
      );
    });

    test('a server restart: reconnects by itself with backoff and recovers each missed publication once', async () => {
      const own = await startServer();
      try {
        const channel = `test:restart-${transport}`;
        const sb = client(own, { transports: [transport], token: own.token('r') });
        const rec = record(sb, channel);
        const disconnects = [];
        sb.on('disconnected', (ev) => disconnects.push(ev));
        sb.connect();
        await until(() => rec.sub.state === 'subscribed', 5000, 'subscribed');
        await publishRange(own, channel, 1, 5);
        await until(() => rec.got.length === 5, 5000, '5 publications');
        await own.restart();
        await publishRange(own, channel, 6, 10);
        await until(() => rec.got.length >= 10, 15000, '10 publications');
        await fence(sb);
        assert.deepEqual(rec.got, range(1, 10));
        assert.deepEqual(rec.failed, []);
        assert.ok(disconnects.length >= 1);
        assert.equal(disconnects[0].reconnect, true);
        if (transport === 'websocket') assert.equal(disconnects[0].code, 1001);
        assert.equal(sb.transport, transport);
      } finally {
        await own.dispose();
      }
    });
  });
}

describe('reconnect policy', () => {
  test('backoff: full jitter under a cap that doubles from minReconnectDelay to maxReconnectDelay', async () => {
    const server = await startServer();
    try {
      const sb = client(server, { transports: ['websocket'], minReconnectDelay: 50, maxReconnectDelay: 400, random: () => 1 });
      const delays = [];
      const starts = [];
      sb.on('disconnected', (ev) => delays.push(ev.delay));
      sb.on('connecting', () => starts.push(Date.now()));
      sb.connect();
      await sb.ready();
      await server.stop();
      await until(() => delays.length >= 6 && starts.length >= 7, 10000, '6 reconnect delays');
      assert.deepEqual(delays.slice(0, 6), [50, 100, 200, 400, 400, 400]);
      for (let i = 1; i < 6; i++) {
        assert.ok(starts[i + 1] - starts[i] >= delays[i] - 5, `attempt ${i + 1} waited ${starts[i + 1] - starts[i]} ms, expected ${delays[i]}`);
      }
      await server.start();
      await sb.ready();
      // A successful connect resets the exponent.
      delays.length = 0;
      await server.restart();
      await until(() => delays.length >= 1);
      assert.equal(delays[0], 50);
      await sb.ready();
    } finally {
      await server.dispose();
    }
  });

  test('the jitter is drawn from [0, cap)', async () => {
    const server = await startServer();
    try {
      const draws = [0.5, 0.25, 0];
      const sb = client(server, { transports: ['websocket'], minReconnectDelay: 100, random: () => draws.shift() ?? 0 });
      const delays = [];
      sb.on('disconnected', (ev) => delays.push(ev.delay));
      sb.connect();
      await sb.ready();
      await server.stop();
      await until(() => delays.length >= 3, 5000, '3 delays');
      assert.deepEqual(delays.slice(0, 3), [50, 50, 0]);
    } finally {
      await server.dispose();
    }
  });

  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('4001 (a bad token) is final: no reconnect, queued commands rejected', async () => {
    const sb = client(server, { token: server.token('mallory', { secret: 'wrong' }), minReconnectDelay: 50 });
    const events = [];
    sb.on('disconnected', (ev) => events.push(ev));
    sb.on('connecting', () => events.push('connecting'));
    const queued = sb.publish('test:x', 1);
    sb.connect();
    await assert.rejects(queued, (e) => e.code === 'closed');
    await sleep(QUIET_MS); // a reconnect would have started by now
    assert.deepEqual(
      events.map((e) => (typeof e === 'string' ? e : `${e.code} ${e.reconnect}`)),
      ['connecting', '4001 false'],
    );
    assert.equal(sb.readyState, CLOSED);
    await assert.rejects(sb.ready(), (e) => e.code === 'closed');
  });

  test('4002 (expired) without getToken is final', async () => {
    const sb = client(server, { token: server.token('late', { exp: Math.floor(Date.now() / 1000) - 10 }) });
    const ev = once(sb, 'disconnected');
    sb.connect();
    assert.deepEqual(await ev, { code: 4002, reason: 'the token has expired', reconnect: false });
  });

  test('4002 with getToken: fetches a new token and reconnects', async () => {
    let calls = 0;
    const sb = client(server, {
      token: server.token('late', { exp: Math.floor(Date.now() / 1000) - 10 }),
      getToken: async () => {
        calls++;
        return server.token('late');
      },
    });
    const disc = once(sb, 'disconnected');
    sb.connect();
    const ev = await disc;
    assert.equal(ev.code, 4002);
    assert.equal(ev.reconnect, true);
    await sb.ready();
    assert.equal(sb.user, 'late');
    assert.equal(calls, 1);
  });

  test('4008 with getToken: fetches a new token before reconnecting, and it is in force', async () => {
    let calls = 0;
    const channel = 'test:retoken';
    const sb = client(server, {
      transports: ['websocket'],
      getToken: async () => {
        calls++;
        return server.token('retoken', { info: { version: calls } });
      },
    });
    const rec = record(sb, channel);
    sb.connect();
    await until(() => rec.sub.state === 'subscribed', 5000, 'subscribed');
    const info = async () => (await server.api('presence', { channel })).presence;
    assert.deepEqual(Object.values(await info()).map((e) => e.info), [{ version: 1 }]);
    const disc = once(sb, 'disconnected');
    await server.api('disconnect', { user: 'retoken', reconnect: true });
    const ev = await disc;
    assert.equal(ev.code, 4008);
    assert.equal(ev.reconnect, true);
    await sb.ready();
    await until(() => rec.sub.state === 'subscribed', 5000, 'subscribed again');
    assert.equal(calls, 2);
    await until(async () => {
      const entries = Object.values(await info());
      return entries.length === 1 && entries[0].info.version === 2;
    }, 5000, 'presence to show the new token\'s info');
  });

  test('getToken is called before connecting without a token', async () => {
    const sb = client(server, { getToken: () => server.token('fetched') });
    sb.connect();
    await sb.ready();
    assert.equal(sb.user, 'fetched');
  });

  test('token refresh: getToken before expiry, the connection outlives the first token', async () => {
    let calls = 0;
    const ttl = 2;
    const sb = client(server, {
      token: server.token('fresh', { ttl }),
      getToken: async () => {
        calls++;
        return server.token('fresh', { ttl });
      },
    });
    const disconnects = [];
    sb.on('disconnected', (ev) => disconnects.push(ev));
    const errors = [];
    sb.on('error', (e) => errors.push(e));
    const connected = once(sb, 'connected');
    sb.connect();
    const { expires } = await connected;
    // Past the first token's expiry, when the server would close with 4002 had the
    // refresh not replaced it; 250 ms on, so that its expiry timer has certainly fired.
    await until(() => calls >= 2 && Date.now() > expires * 1000 + 250, 5000, 'the first token to expire');
    await fence(sb); // a 4002 sent at expiry would have come before this answer
    assert.deepEqual(disconnects, []);
    assert.deepEqual(errors, []);
    assert.equal(sb.readyState, OPEN);
  });
});

describe('recovery that cannot succeed', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('more missed than history keeps: onRecoveryFailed, then live publications continue', async () => {
    const sb = client(server, { token: server.token('gone') });
    const rec = record(sb, 'short:busy'); // short: keeps 100
    sb.connect();
    await until(() => rec.sub.state === 'subscribed');
    await publishRange(server, 'short:busy', 1, 3);
    await until(() => rec.got.length === 3);
    await server.api('disconnect', { user: 'gone' });
    await until(() => sb.readyState === CLOSED);
    await publishRange(server, 'short:busy', 4, 153);
    sb.connect();
    await until(() => rec.failed.length === 1, 5000, 'onRecoveryFailed');
    assert.deepEqual(rec.failed[0], { channel: 'short:busy', epoch: rec.pubs[0].epoch, offset: 153 });
    assert.deepEqual(rec.got, [1, 2, 3], 'nothing of the incomplete recovery is delivered');
    await publishRange(server, 'short:busy', 154, 155);
    await until(() => rec.got.length === 5);
    assert.deepEqual(rec.got, [1, 2, 3, 154, 155]);
  });
});

describe('the command queue', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('commands made before connecting wait, count in bufferedAmount, and go once connected', async () => {
    const sb = client(server);
    const rec = record(sb, 'test:queue');
    const p1 = sb.publish('test:queue', { n: 1 });
    const p2 = sb.publish('test:queue', { n: 2 });
    const expected =
      Buffer.byteLength(JSON.stringify({ cmd: 'publish', channel: 'test:queue', data: { n: 1 } })) +
      Buffer.byteLength(JSON.stringify({ cmd: 'publish', channel: 'test:queue', data: { n: 2 } }));
    assert.equal(sb.bufferedAmount, expected);
    sb.connect();
    assert.deepEqual((await p1).offset, 1);
    assert.deepEqual((await p2).offset, 2);
    assert.equal(sb.bufferedAmount, 0);
    // The subscription was sent before the queued commands: it sees both.
    await until(() => rec.got.length === 2, 5000, 'both publications');
    assert.deepEqual(rec.got, [1, 2]);
  });

  test('the queue is bounded, and close() rejects what waits', async () => {
    const sb = client(server, { maxQueue: 2 });
    const a = sb.publish('test:q2', 1);
    const b = sb.history('test:q2');
    await assert.rejects(sb.publish('test:q2', 3), (e) => e.code === 'queue_full');
    sb.close();
    await assert.rejects(a, (e) => e.code === 'closed');
    await assert.rejects(b, (e) => e.code === 'closed');
    await assert.rejects(sb.ping(), (e) => e.code === 'closed');
  });

  test('a command in flight when the connection drops is rejected with disconnected', async () => {
    const sb = client(server, { transports: ['longpoll'], token: server.token('inflight') });
    sb.connect();
    await sb.ready();
    const errs = [];
    // Sent, then the session is cut before the reply can be read.
    const p = sb.history('test:inflight').catch((e) => errs.push(e));
    await server.api('disconnect', { user: 'inflight' });
    await p;
    assert.ok(errs.length === 0 || errs[0].code === 'disconnected' || errs[0].code === 'closed');
  });
});

describe('private messages', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('the mailbox is delivered after connect, acked, and not delivered again', async () => {
    for (const n of [1, 2, 3]) await server.api('send', { user: 'carol', data: { n } });
    const w = wire();
    const sb = client(server, { token: server.token('carol'), WebSocket: w.WebSocket });
    const got = [];
    sb.on('message', (m) => got.push(m));
    sb.connect();
    await until(() => got.length === 3, 5000, '3 messages');
    assert.deepEqual(got.map((m) => m.data.n), [1, 2, 3]);
    await acked(w, got[2].mailbox);
    sb.close();
    const again = client(server, { token: server.token('carol') });
    const got2 = [];
    again.on('message', (m) => got2.push(m.data.n));
    again.connect();
    await again.ready();
    await server.api('send', { user: 'carol', data: { n: 4 } });
    await until(() => got2.length === 1, 5000, 'the new message');
    await fence(again);
    assert.deepEqual(got2, [4]);
  });

  test('without a message listener nothing is acked: the messages wait in the mailbox', async () => {
    await server.api('send', { user: 'dave', data: { n: 1 } });
    const w = wire();
    const deaf = client(server, { token: server.token('dave'), WebSocket: w.WebSocket });
    deaf.connect();
    await deaf.ready();
    // The mailbox's first page follows the connect reply; an ack the client sent on
    // receiving it would have gone before the ping, and been handled before close.
    await fence(deaf);
    assert.ok(w.received.some((m) => m.push === 'message'), 'the message reached the client');
    assert.deepEqual(w.sent.filter((c) => c.cmd === 'ack'), [], 'and was not acked');
    deaf.close();
    const sb = client(server, { token: server.token('dave') });
    const got = [];
    sb.on('message', (m) => got.push(m.data.n));
    sb.connect();
    await until(() => got.length === 1, 5000, 'the waiting message');
  });

  test('a large mailbox comes page by page as the acks go out, in order', async () => {
    for (let n = 1; n <= 600; n++) await server.api('send', { user: 'erin', data: { n } });
    const sb = client(server, { token: server.token('erin'), transports: ['sse'] });
    const got = [];
    sb.on('message', (m) => got.push(m.data.n));
    sb.connect();
    await until(() => got.length === 600, 15000, '600 messages');
    assert.deepEqual(got, range(1, 600));
  });
});

describe('mailbox ids start over (issue 10, point 16)', () => {
  test('a memory store restarted: messages with ids below the last one seen reach the app and are acked', async () => {
    const server = await startServer({ store: 'memory' });
    try {
      const w = wire();
      const sb = client(server, { token: server.token('mia'), minReconnectDelay: 50, WebSocket: w.WebSocket });
      const got = [];
      sb.on('message', (m) => got.push({ n: m.data.n, mailbox: m.mailbox }));
      const connects = [];
      sb.on('connected', () => connects.push(Date.now()));
      sb.connect();
      await sb.ready();
      for (const n of [1, 2, 3]) await server.api('send', { user: 'mia', data: { n } });
      await until(() => got.length === 3, 5000, '3 messages');
      await acked(w, got[2].mailbox);
      // The memory store starts empty: the next ids are 1, 2, below the 3 already seen.
      const sentBefore = w.sent.length;
      await server.restart();
      await until(() => connects.length === 2 && sb.readyState === OPEN, 10000, 'the reconnect');
      for (const n of [4, 5]) await server.api('send', { user: 'mia', data: { n } });
      await until(() => got.length === 5, 5000, 'the 2 messages sent after the restart');
      assert.deepEqual(got.map((m) => m.n), [1, 2, 3, 4, 5]);
      assert.ok(got[3].mailbox <= got[2].mailbox, `the ids started over: ${JSON.stringify(got)}`);
      await acked(w, got[4].mailbox, sentBefore); // the ack of the new series
      await sb.close();
      // Acked: a new client of the same user finds the mailbox empty.
      const again = client(server, { token: server.token('mia') });
      const got2 = [];
      again.on('message', (m) => got2.push(m.data.n));
      again.connect();
      await again.ready();
      await server.api('send', { user: 'mia', data: { n: 6 } });
      await until(() => got2.length >= 1, 5000, 'the next message');
      await fence(again);
      assert.deepEqual(got2, [6]);
    } finally {
      await server.dispose();
    }
  });

  test('getToken switches user: the new user\'s messages with lower ids reach the app and are acked', async () => {
    const server = await startServer();
    try {
      // Bob's messages first, so their ids are the lower ones whatever the store numbers by.
      for (const n of [1, 2]) await server.api('send', { user: 'bob-switch', data: { n } });
      for (const n of [1, 2, 3, 4]) await server.api('send', { user: 'alice-switch', data: { n } });
      let user = 'alice-switch';
      const w = wire();
      const sb = client(server, { transports: ['websocket'], getToken: () => server.token(user), minReconnectDelay: 50, WebSocket: w.WebSocket });
      const got = [];
      sb.on('message', (m) => got.push({ user: sb.user, n: m.data.n, mailbox: m.mailbox }));
      sb.connect();
      await until(() => got.length === 4, 5000, 'alice\'s 4 messages');
      await acked(w, got[3].mailbox);
      const sentBefore = w.sent.length;
      user = 'bob-switch';
      await server.api('disconnect', { user: 'alice-switch', reconnect: true });
      await until(() => got.length === 6, 5000, 'bob\'s 2 messages');
      assert.deepEqual(
        got.map((m) => `${m.user}:${m.n}`),
        ['alice-switch:1', 'alice-switch:2', 'alice-switch:3', 'alice-switch:4', 'bob-switch:1', 'bob-switch:2'],
      );
      assert.ok(got[4].mailbox < got[3].mailbox, `bob's ids are below alice's: ${JSON.stringify(got)}`);
      await acked(w, got[5].mailbox, sentBefore);
      await sb.close();
      for (const who of ['alice-switch', 'bob-switch']) {
        const again = client(server, { token: server.token(who) });
        const left = [];
        again.on('message', (m) => left.push(m.data.n));
        again.connect();
        await again.ready();
        await fence(again); // the mailbox's first page follows the connect reply
        assert.deepEqual(left, [], `${who}'s mailbox was acked`);
        await again.close();
      }
    } finally {
      await server.dispose();
    }
  });
});

describe('close() ends the session at once (issue 10, point 17)', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  // Without the close command an SSE or polling session stays, in presence, for
  // limits.session_idle (60 s here); the leave must come within a few seconds.
  for (const transport of TRANSPORTS) {
    test(`over ${transport}: another client sees the leave at once`, async () => {
      const channel = `test:close-${transport}`;
      const user = `leaver-${transport}`;
      const watcher = client(server, { transports: ['websocket'], token: server.token(`watcher-${transport}`) });
      const w = record(watcher, channel);
      watcher.connect();
      await until(() => w.sub.state === 'subscribed', 5000, 'the watcher subscribed');
      const leaver = client(server, { transports: [transport], token: server.token(user) });
      record(leaver, channel);
      leaver.connect();
      await until(() => w.joins.some((j) => j.info.user === user), 5000, 'the join');
      const started = Date.now();
      const closing = leaver.close();
      assert.equal(leaver.readyState, 2, 'CLOSING until the server confirmed');
      await closing;
      assert.equal(leaver.readyState, CLOSED);
      await until(() => w.leaves.some((l) => l.info.user === user), 3000, 'the leave');
      const took = Date.now() - started;
      assert.deepEqual(Object.keys((await server.api('presence', { channel })).presence), [`watcher-${transport}`]);
      assert.ok(took < 3000, `the leave came ${took} ms after close()`);
    });
  }

  test('close() while the first poll (carrying connect) is in flight ends that session too', async () => {
    const own = await startServer({ limits: { connections_per_user: 1 } });
    try {
      // The first answer is held back until close() was called: the server has connected
      // the session, and the client does not know its id yet.
      let answered = false;
      let release;
      const held = new Promise((r) => (release = r));
      const slow = async (url, init) => {
        const res = await fetch(url, init);
        if (!String(url).includes('session=')) {
          answered = true;
          await held;
        }
        return res;
      };
      const first = client(own, { transports: ['longpoll'], token: own.token('solo'), fetch: slow });
      first.connect();
      await until(() => answered, 5000, 'the server to answer the first poll');
      const closing = first.close(); // waits for the answer, which names the session, then ends it
      release();
      await closing;
      const second = client(own, { transports: ['websocket'], token: own.token('solo') });
      const disconnects = [];
      second.on('disconnected', (ev) => disconnects.push(ev));
      second.connect();
      await second.ready();
      assert.deepEqual(disconnects, [], 'the only connection slot of the user was free');
    } finally {
      await own.dispose();
    }
  });

  test('close() never hangs on a server that does not answer', async () => {
    const own = await startServer();
    try {
      const sb = client(own, { transports: ['sse'], token: own.token('stuck') });
      sb.connect();
      await sb.ready();
      own.proc.kill('SIGSTOP');
      try {
        const started = Date.now();
        await sb.close();
        const took = Date.now() - started;
        assert.equal(sb.readyState, CLOSED);
        assert.ok(took >= 1500 && took < 3000, `close() gave up after ${took} ms (2 s expected)`);
      } finally {
        own.proc.kill('SIGCONT');
      }
    } finally {
      await own.dispose();
    }
  });
});

describe('command timeouts and AbortSignal (issue 10, point 19)', () => {
  /** A WebSocket server that answers `connect` and never anything else. */
  async function silentServer() {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    const commands = [];
    wss.on('connection', (ws) =>
      ws.on('message', (data) => {
        const cmd = JSON.parse(String(data));
        commands.push(cmd.cmd);
        if (cmd.cmd !== 'connect') return;
        const result = { client: 'c', user: '', version: 'silent', ping: 25, expires: null, mailbox_epoch: 'e' };
        ws.send(JSON.stringify({ id: cmd.id, result }));
      }),
    );
    return {
      url: `http://127.0.0.1:${wss.address().port}`,
      commands,
      close() {
        for (const ws of wss.clients) ws.terminate();
        return new Promise((r) => wss.close(r));
      },
    };
  }

  test('a command whose reply never comes rejects with timeout after commandTimeout; nothing is left pending', async () => {
    const silent = await silentServer();
    try {
      const sb = client(silent, { transports: ['websocket'], commandTimeout: 300 });
      const disconnects = [];
      sb.on('disconnected', (ev) => disconnects.push(ev));
      sb.connect();
      await sb.ready();
      const started = Date.now();
      await assert.rejects(
        sb.history('test:x'),
        (e) => e instanceof SwitchboardError && e.code === 'timeout' && e.message === 'no reply to history within 300 ms',
      );
      const took = Date.now() - started;
      assert.ok(took >= 290 && took < 1500, `rejected after ${took} ms`);
      assert.equal(sb._pending.size, 0, 'no pending entry leaks');
      assert.equal(sb.readyState, OPEN, 'the connection stays');
      assert.deepEqual(disconnects, []);
      await sb.close();
    } finally {
      await silent.close();
    }
  });

  test("one of the client's own commands unanswered (subscribe) drops the connection, which reconnects", async () => {
    const silent = await silentServer();
    try {
      const sb = client(silent, { transports: ['websocket'], commandTimeout: 300, minReconnectDelay: 50 });
      sb.subscribe('test:never');
      const disconnected = once(sb, 'disconnected');
      sb.connect();
      const ev = await disconnected;
      assert.equal(ev.code, 1006);
      assert.equal(ev.reason, 'no reply to subscribe within 300 ms');
      assert.equal(ev.reconnect, true);
      await until(() => silent.commands.filter((c) => c === 'connect').length >= 2, 5000, 'the reconnect');
      await sb.close();
    } finally {
      await silent.close();
    }
  });

  test('the real server stopped (SIGSTOP): a command over SSE rejects with timeout', async () => {
    const own = await startServer();
    try {
      const sb = client(own, { transports: ['sse'], commandTimeout: 500 });
      sb.connect();
      await sb.ready();
      own.proc.kill('SIGSTOP');
      try {
        const started = Date.now();
        await assert.rejects(sb.ping(), (e) => e.code === 'timeout');
        const took = Date.now() - started;
        assert.ok(took >= 490 && took < 2000, `rejected after ${took} ms`);
        assert.equal(sb._pending.size, 0);
      } finally {
        own.proc.kill('SIGCONT');
      }
      // The server is back: the same client goes on (its POST may have been cut meanwhile,
      // in which case it reconnected).
      await sb.ready();
      assert.deepEqual(await sb.ping(), {});
    } finally {
      await own.dispose();
    }
  });

  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('a sent command whose signal aborts rejects at once with the abort reason', async () => {
    const sb = client(server, { transports: ['websocket'] });
    sb.connect();
    await sb.ready();
    const controller = new AbortController();
    const pending = sb.history('test:abort', { signal: controller.signal });
    const reason = new Error('the user gave up');
    controller.abort(reason);
    await assert.rejects(pending, (e) => e === reason);
    assert.equal(sb._pending.size, 0);
    // The reply that comes later is ignored, and the client goes on.
    assert.deepEqual(await sb.ping(), {});
  });

  test('a queued command whose signal aborts is never sent; an aborted signal rejects at once', async () => {
    const sb = client(server, { transports: ['websocket'] });
    const controller = new AbortController();
    const queued = sb.publish('test:aborted', { n: 1 }, { signal: controller.signal });
    assert.ok(sb.bufferedAmount > 0);
    controller.abort();
    await assert.rejects(queued, (e) => e.name === 'AbortError');
    assert.equal(sb.bufferedAmount, 0, 'out of the queue');
    await assert.rejects(sb.ping({ signal: controller.signal }), (e) => e.name === 'AbortError');
    sb.connect();
    await sb.ready();
    assert.equal((await sb.publish('test:aborted', { n: 2 })).offset, 1, 'the aborted publication never happened');
  });

  test('a long-lived signal keeps no listener once its commands settled', async () => {
    const sb = client(server, { transports: ['websocket'] });
    const controller = new AbortController();
    const { signal } = controller;
    const queued = sb.ping({ signal });
    sb.connect();
    await queued;
    const rec = record(sb, 'test:signal');
    await until(() => rec.sub.state === 'subscribed');
    for (let i = 0; i < 20; i++) await sb.publish('test:signal', { n: i }, { signal });
    await sb.history('test:signal', { limit: 1, signal });
    await rec.sub.presence({ signal });
    await assert.rejects(sb.history('nohist:x', { signal }), (e) => e.code === 108);
    assert.equal(getEventListeners(signal, 'abort').length, 0);
  });

  test('ready({signal}) rejects with the reason when the signal aborts first', async () => {
    const port = await freePort(); // nothing listens there
    const sb = client({ url: `http://127.0.0.1:${port}` }, { transports: ['websocket'], minReconnectDelay: 50 });
    sb.connect();
    const started = Date.now();
    await assert.rejects(sb.ready({ signal: AbortSignal.timeout(300) }), (e) => e.name === 'TimeoutError');
    assert.ok(Date.now() - started < 2000);
    assert.equal(sb.readyState, CONNECTING, 'the client keeps trying');
    await sb.close();
  });
});

describe('pushes, errors and close codes added by issue 10', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('an unsubscribe push (a refresh that drops private channels) ends the subscriptions and says so', async () => {
    let calls = 0;
    const sb = client(server, {
      transports: ['websocket'],
      // The first token lists both private channels and lives 2 s: the refresh, 1 s before
      // expiry, brings a token that lists neither.
      getToken: () => server.token('demoted', { ttl: 2, channels: ++calls === 1 ? ['team:a', 'team:b'] : [] }),
    });
    const unsubscribed = [];
    const errors = [];
    sb.on('error', (e) => errors.push(e));
    const a = record(sb, 'team:a', { onUnsubscribed: (ev) => unsubscribed.push(ev) });
    const b = record(sb, 'team:b'); // no onUnsubscribed: told as an 'error' event
    sb.connect();
    await until(() => a.sub.state === 'subscribed' && b.sub.state === 'subscribed', 5000, 'both subscribed');
    await server.api('publish', { channel: 'team:a', data: { n: 1 } });
    await until(() => a.got.length === 1, 5000, 'a publication before the refresh');
    await until(() => unsubscribed.length === 1 && errors.length === 1, 5000, 'the unsubscribe pushes');
    assert.ok(calls >= 2, 'refreshed');
    assert.deepEqual(unsubscribed, [{ channel: 'team:a', reason: 'the refreshed token no longer allows this private channel' }]);
    assert.equal(errors[0].code, 'unsubscribed');
    assert.match(errors[0].message, /"team:b"/);
    for (const rec of [a, b]) assert.equal(rec.sub.state, 'unsubscribed');
    assert.equal(sb.getSubscription('team:a'), null);
    await server.api('publish', { channel: 'team:a', data: { n: 2 } });
    await fence(sb);
    assert.deepEqual(a.got, [1], 'nothing after the unsubscribe push');
    assert.equal(sb.readyState, OPEN);
    await sb.close();
  });

  test('presence: users by user id, anonymous connections apart by client id', async () => {
    const channel = 'test:presence-shape';
    const named = client(server, { token: server.token('named', { info: { name: 'N' } }) });
    const anon = client(server);
    const n = record(named, channel);
    const a = record(anon, channel);
    named.connect();
    anon.connect();
    await until(() => n.sub.state === 'subscribed' && a.sub.state === 'subscribed', 5000, 'both subscribed');
    const result = await n.sub.presence();
    assert.deepEqual(result.presence, { named: { user: 'named', connections: 1, info: { name: 'N' } } });
    assert.deepEqual(result.anonymous, { [anon.client]: { user: '', connections: 1 } });
    await anon.close();
    assert.equal((await named.presence(channel)).anonymous, undefined, 'left out when there are none');
  });

  test('117 (storage full) rejects the command like any protocol error; the connection stays', async () => {
    // The memory store: this build's SQLite store does not apply storage.max_bytes.
    const own = await startServer({ store: 'memory', storage: { max_bytes: 1 } });
    try {
      const sb = client(own, { token: own.token('hoarder') });
      sb.connect();
      await sb.ready();
      await assert.rejects(sb.publish('test:full', { n: 1 }), (e) => e instanceof SwitchboardError && e.code === 117);
      await assert.rejects(sb.send('someone', { n: 1 }), (e) => e.code === 117);
      assert.equal(sb.readyState, OPEN);
      assert.deepEqual(await sb.ping(), {});
    } finally {
      await own.dispose();
    }
  });

  for (const transport of ['websocket', 'longpoll']) {
    test(`over ${transport}: 118 then close 1013 (connection limit) reconnects with backoff until there is room`, async () => {
      const own = await startServer({ limits: { connections_per_user: 1 } });
      try {
        const first = client(own, { transports: [transport], token: own.token('capped') });
        first.connect();
        await first.ready();
        const second = client(own, { transports: [transport], token: own.token('capped'), minReconnectDelay: 100, maxReconnectDelay: 400 });
        const disconnects = [];
        second.on('disconnected', (ev) => disconnects.push(ev));
        second.connect();
        await until(() => disconnects.length >= 2, 5000, 'two refused connects');
        for (const ev of disconnects) {
          assert.equal(ev.code, 1013);
          assert.equal(ev.reconnect, true);
          assert.match(ev.reason, /connections_per_user/);
        }
        assert.equal(second.readyState, CONNECTING);
        await first.close();
        await second.ready();
        assert.equal(second.user, 'capped');
      } finally {
        await own.dispose();
      }
    });
  }

  test('4009 (the SSE session resumed elsewhere by its id) is final, with a readable reason, and ends the taken session', async () => {
    const sids = [];
    const spy = (url, init) => {
      const m = /session=([0-9a-f]+)/.exec(String(url));
      if (m) sids.push(m[1]);
      return fetch(url, init);
    };
    const sb = client(server, { transports: ['sse'], token: server.token('victim'), fetch: spy, minReconnectDelay: 50 });
    const events = [];
    sb.on('connecting', () => events.push('connecting'));
    sb.on('disconnected', (ev) => events.push(ev));
    sb.connect();
    await sb.ready();
    // Someone who learnt the session id resumes it, as EventSource would.
    const abort = new AbortController();
    const taken = await fetch(`${server.url}/sse`, { headers: { 'Last-Event-ID': `${sids[0]}:0` }, signal: abort.signal });
    assert.equal(taken.status, 200);
    try {
      await until(() => sb.readyState === CLOSED, 5000, 'the client closed');
      await sleep(QUIET_MS); // a reconnect would have started by now
      assert.deepEqual(events.slice(1), [
        {
          code: 4009,
          reason: 'another stream resumed this session; its id was used elsewhere, so the session was ended',
          reconnect: false,
        },
      ]);
      assert.equal(events.filter((e) => e === 'connecting').length, 1, 'no reconnect');
      await assert.rejects(sb.ping(), (e) => e.code === 'closed');
      // The one who took the session is cut off: the client ended it (close 1000).
      let text = '';
      const decoder = new TextDecoder();
      for await (const chunk of taken.body) {
        text += decoder.decode(chunk, { stream: true });
        if (text.includes('event: close')) break;
      }
      assert.match(text, /event: close\ndata: \{"code":1000/);
    } finally {
      abort.abort();
    }
  });
});

describe('fallback and upgrade', () => {
  test('/ws refused: the default transports fall back to sse and deliver', async () => {
    const server = await startServer({ transports: { websocket: false } });
    try {
      const sb = client(server);
      const tried = [];
      sb.on('connecting', (ev) => tried.push(ev.transport));
      const rec = record(sb, 'test:fallback');
      sb.connect();
      await sb.ready();
      assert.deepEqual(tried, ['websocket', 'sse']);
      assert.equal(sb.transport, 'sse');
      await until(() => rec.sub.state === 'subscribed');
      await publishRange(server, 'test:fallback', 1, 10);
      await until(() => rec.got.length === 10);
      assert.deepEqual(rec.got, range(1, 10));
    } finally {
      await server.dispose();
    }
  });

  test('/ws and /sse refused: falls back to longpoll', async () => {
    const server = await startServer({ transports: { websocket: false, sse: false } });
    try {
      const sb = client(server);
      const tried = [];
      sb.on('connecting', (ev) => tried.push(ev.transport));
      sb.connect();
      await sb.ready();
      assert.deepEqual(tried, ['websocket', 'sse', 'longpoll']);
      assert.equal(sb.transport, 'longpoll');
    } finally {
      await server.dispose();
    }
  });

  test('the transport that worked is retried alone for fallbackAfter ms before the next one', async () => {
    const server = await startServer({ transports: { websocket: false } });
    try {
      const sb = client(server, { minReconnectDelay: 50, maxReconnectDelay: 200, fallbackAfter: 1500 });
      sb.connect();
      await sb.ready();
      assert.equal(sb.transport, 'sse');
      const tried = [];
      sb.on('connecting', (ev) => tried.push({ transport: ev.transport, at: Date.now() }));
      // Back without SSE: the client must keep trying SSE alone for 1.5 s, then fall back.
      server.opts.transports = { websocket: false, sse: false };
      const restarted = Date.now();
      await server.restart();
      await until(() => sb.transport === 'longpoll' && sb.readyState === OPEN, 10000, 'the fallback to longpoll');
      const names = tried.map((t) => t.transport);
      const firstOther = names.findIndex((n) => n !== 'sse');
      assert.ok(firstOther >= 2, `SSE was retried before any other transport: ${names}`);
      assert.ok(
        tried[firstOther].at - restarted >= 1000,
        `no other transport within fallbackAfter of the loss: ${tried[firstOther].at - restarted} ms`,
      );
      assert.equal(names.at(-1), 'longpoll');
    } finally {
      await server.dispose();
    }
  });

  test('on a fallback, it upgrades once the better transport opens again, losing nothing', async () => {
    const server = await startServer({ transports: { websocket: false } });
    try {
      const sb = client(server, { upgradeDelay: 300, minReconnectDelay: 50 });
      const rec = record(sb, 'test:upgrade');
      sb.connect();
      await sb.ready();
      assert.equal(sb.transport, 'sse');
      await until(() => rec.sub.state === 'subscribed');
      await publishRange(server, 'test:upgrade', 1, 5);
      server.opts.transports = { websocket: true };
      await server.restart();
      await publishRange(server, 'test:upgrade', 6, 10);
      await until(() => sb.transport === 'websocket' && sb.readyState === OPEN, 10000, 'the upgrade to websocket');
      await publishRange(server, 'test:upgrade', 11, 15);
      await until(() => rec.got.length >= 15, 5000, '15 publications');
      await fence(sb);
      assert.deepEqual(rec.got, range(1, 15));
      assert.deepEqual(rec.failed, []);
    } finally {
      await server.dispose();
    }
  });
});

describe('upgrade probes', () => {
  test('the SSE probe ends the session it opened, so it holds no pending slot', async () => {
    const server = await startServer({ transports: { websocket: false, sse: false } });
    try {
      const pending = async () => {
        const text = await (await fetch(`${server.url}/metrics`)).text();
        return Number(/^switchboard_pending_connections (\d+)$/m.exec(text)[1]);
      };
      const sb = client(server, { upgradeDelay: 300, minReconnectDelay: 50 });
      sb.connect();
      await sb.ready();
      assert.equal(sb.transport, 'longpoll');
      server.opts.transports = { websocket: false, sse: true };
      await server.restart();
      await until(() => sb.transport === 'sse' && sb.readyState === OPEN, 10000, 'the upgrade to sse');
      // Without the close command the probe's session waits for limits.connect_timeout (10 s).
      await until(async () => (await pending()) === 0, 2000, 'no session left pending');
    } finally {
      await server.dispose();
    }
  });
});

describe('HTTP sessions', () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.dispose());

  test('long polling: lost poll answers lose and duplicate nothing', async () => {
    let polls = 0;
    let dropped = 0;
    // Every third bare poll's answer is read by the "network", then lost.
    const lossy = async (url, init) => {
      const res = await fetch(url, init);
      if (String(url).includes('/poll?session=') && !init.body && ++polls % 3 === 0) {
        await res.text();
        dropped++;
        throw new TypeError('network error (simulated)');
      }
      return res;
    };
    const sb = client(server, { transports: ['longpoll'], fetch: lossy });
    const rec = record(sb, 'test:lossy');
    sb.connect();
    await until(() => rec.sub.state === 'subscribed');
    // Four publications at a time: after each batch the test waits for a poll answer
    // (read, or read and lost) that came after the batch began, so that the 60 are spread
    // over at least 15 answers, every third of which is lost.
    let before = 0;
    for (let n = 1; n <= 60; n++) {
      if (n % 4 === 1) before = polls;
      await server.api('publish', { channel: 'test:lossy', data: { n } });
      if (n % 4 === 0) await until(() => polls > before, 5000, `a poll answer after publication ${n}`);
    }
    await until(() => rec.got.length >= 60, 15000, '60 publications');
    await fence(sb);
    assert.deepEqual(rec.got, range(1, 60));
    assert.ok(dropped >= 5, `only ${dropped} answers were lost`);
    assert.equal(sb.transport, 'longpoll');
  });

  test('SSE: a stream cut mid-way resumes with Last-Event-ID and loses nothing', async () => {
    let cuts = 0;
    // The stream's body fails after some bytes, three times; EventSource reconnects with
    // Last-Event-ID and the server resumes the session.
    const cutting = async (url, init) => {
      const res = await fetch(url, init);
      if (!String(url).includes('/sse') || String(url).includes('/sse/send') || cuts >= 3 || !res.body) return res;
      let seen = 0;
      const reader = res.body.getReader();
      const body = new ReadableStream({
        async pull(controller) {
          const { value, done } = await reader.read();
          if (done) return controller.close();
          seen += value.length;
          if (seen > 1500 && cuts < 3) {
            cuts++;
            controller.enqueue(value.slice(0, Math.floor(value.length / 2)));
            controller.error(new TypeError('connection reset (simulated)'));
            reader.cancel().catch(() => {});
            return;
          }
          controller.enqueue(value);
        },
      });
      return new Response(body, { status: res.status, headers: res.headers });
    };
    class CuttingEventSource extends EventSource {
      constructor(url) {
        super(url, { fetch: cutting });
      }
    }
    const sb = client(server, { transports: ['sse'], EventSource: CuttingEventSource });
    const disconnects = [];
    sb.on('disconnected', (ev) => disconnects.push(ev));
    const rec = record(sb, 'test:sse-cut');
    sb.connect();
    await until(() => rec.sub.state === 'subscribed');
    // Ten at a time, each batch received before the next is published: the streams are
    // cut while publications flow, and each cut stream is resumed before the next batch.
    for (let n = 1; n <= 100; n++) {
      await server.api('publish', { channel: 'test:sse-cut', data: { n, pad: 'x'.repeat(40) } });
      if (n % 10 === 0) await until(() => rec.got.length >= n, 10000, `publication ${n}`);
    }
    await until(() => rec.got.length >= 100, 20000, '100 publications');
    await fence(sb);
    assert.deepEqual(rec.got, range(1, 100));
    assert.equal(cuts, 3);
    assert.deepEqual(disconnects, [], 'the session survived: no reconnect was needed');
  });
});

describe('rpc, history before and ephemeral publications (issue 12)', () => {
  // A small backend behind `[rpc] proxy_url`, as a user's Flask or Django app would be: it
  // answers `echo` with what it was sent (and who sent it) and refuses `refuse`.
  let backend;
  const calls = [];
  let server;
  before(async () => {
    backend = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        const call = JSON.parse(body);
        calls.push(call);
        res.setHeader('Content-Type', 'application/json');
        if (call.method === 'refuse') res.end(JSON.stringify({ error: { message: 'not today' } }));
        else res.end(JSON.stringify({ result: { method: call.method, data: call.data ?? null, user: call.user } }));
      });
    });
    await new Promise((ok) => backend.listen(0, '127.0.0.1', ok));
    server = await startServer({ rpc: { proxy_url: `http://127.0.0.1:${backend.address().port}/rpc` } });
  });
  after(async () => {
    await server.dispose();
    backend.close();
  });

  for (const transport of TRANSPORTS) {
    test(`rpc over ${transport}: the backend's result, its refusal as 119 with its words`, async () => {
      const sb = client(server, { transports: [transport], token: server.token('rita', { info: { name: 'Rita' } }) });
      sb.connect();
      const result = await sb.rpc('echo', { n: 1, text: 'hi' });
      assert.deepEqual(result, { method: 'echo', data: { n: 1, text: 'hi' }, user: 'rita' });
      const call = calls.at(-1);
      assert.equal(call.user, 'rita');
      assert.deepEqual(call.info, { name: 'Rita' });
      assert.equal(call.client, sb.client);
      const err = await sb.rpc('refuse', {}).then(
        () => null,
        (e) => e,
      );
      assert.ok(err instanceof SwitchboardError, `a SwitchboardError: ${err}`);
      assert.equal(err.code, 119);
      assert.match(err.message, /not today/);
      assert.equal(sb.readyState, OPEN, 'the connection stays');
      await sb.close();
    });
  }

  test('rpc made while offline waits in the queue and goes once connected', async () => {
    const sb = client(server, { token: server.token('queued') });
    const pending = sb.rpc('echo', { n: 2 });
    assert.ok(sb.bufferedAmount > 0);
    sb.connect();
    assert.deepEqual((await pending).data, { n: 2 });
    await sb.close();
  });

  test('a method nobody answers is 104 (no proxy configured)', async () => {
    const own = await startServer();
    try {
      const sb = client(own, { token: own.token('lost') });
      sb.connect();
      const err = await sb.rpc('nobody.home', {}).then(
        () => null,
        (e) => e,
      );
      assert.equal(err?.code, 104, `error 104: ${err}`);
      await sb.close();
    } finally {
      await own.dispose();
    }
  });

  test('history before: pages backwards to the first publication, each page oldest first', async () => {
    const channel = 'test:before';
    await publishRange(server, channel, 1, 120);
    const sb = client(server);
    sb.connect();
    const latest = await sb.history(channel, { limit: 50 });
    assert.deepEqual(
      latest.publications.map((p) => p.data.n),
      range(71, 120),
    );
    const pages = [latest.publications];
    for (;;) {
      const first = pages[0][0].offset;
      const page = await sb.history(channel, { before: first, limit: 50 });
      assert.ok(page.publications.every((p) => p.offset < first), 'all below the offset');
      if (page.publications.length === 0) break;
      pages.unshift(page.publications);
    }
    assert.deepEqual(
      pages.map((p) => p.length),
      [20, 50, 50],
    );
    assert.deepEqual(
      pages.flat().map((p) => p.data.n),
      range(1, 120),
    );
    await sb.close();
  });

  test('ephemeral: delivered with ephemeral: true and offset 0, not in history, the position untouched', async () => {
    const channel = 'test:ephemeral';
    const pub = client(server, { token: server.token('typist', { info: { name: 'T' } }) });
    // The reconnect after the cut waits 990 ms, so the test can publish while it is away.
    const sb = client(server, { token: server.token('reader'), minReconnectDelay: 1000, random: () => 0.99 });
    const seen = [];
    const sub = sb.subscribe(channel, { onPublication: (p) => seen.push(p) });
    sb.connect();
    pub.connect();
    await until(() => sub.state === 'subscribed');
    await pub.publish(channel, { n: 1 });
    const eph = await pub.publish(channel, { typing: true }, { ephemeral: true });
    assert.equal(eph.offset, 0, 'no offset for an ephemeral publication');
    await pub.publish(channel, { n: 2 });
    await until(() => seen.filter((p) => !p.ephemeral).length === 2, 5000, 'the two stored publications');
    await fence(sb);
    assert.deepEqual(
      seen.map((p) => (p.ephemeral ? 'typing' : p.data.n)),
      [1, 'typing', 2],
    );
    const typing = seen[1];
    assert.equal(typing.ephemeral, true);
    assert.equal(typing.offset, 0);
    assert.equal(typing.info?.user, 'typist');
    assert.equal(sub.offset, seen[2].offset, 'the position is that of the last stored one');
    const hist = await sb.history(channel, {});
    assert.deepEqual(
      hist.publications.map((p) => p.data.n),
      [1, 2],
      'not in history',
    );

    // Cut the reader; while it is away: stored, ephemeral, stored. Recovery brings the
    // stored ones, each once, and nothing of the ephemeral one.
    const away = once(sb, 'disconnected');
    const reconnected = once(sb, 'connected');
    await server.api('disconnect', { user: 'reader', reconnect: true });
    await away;
    await pub.publish(channel, { n: 3 });
    await pub.publish(channel, { typing: true }, { ephemeral: true });
    await pub.publish(channel, { n: 4 });
    assert.notEqual(sb.readyState, OPEN, 'still away while those were published');
    await reconnected;
    await until(() => seen.filter((p) => !p.ephemeral).length === 4, 5000, 'the two recovered');
    // Live again: an ephemeral one between two stored ones.
    await until(() => sub.state === 'subscribed');
    await pub.publish(channel, { typing: true }, { ephemeral: true });
    await pub.publish(channel, { n: 5 });
    await until(() => seen.filter((p) => !p.ephemeral).length === 5, 5000, 'the fifth');
    await fence(sb);
    assert.deepEqual(
      seen.filter((p) => !p.ephemeral).map((p) => p.data.n),
      [1, 2, 3, 4, 5],
      'each stored publication once, in order',
    );
    assert.equal(seen.filter((p) => p.ephemeral).length, 2, 'the live ephemeral ones only');
    await Promise.all([sb.close(), pub.close()]);
  });
});
