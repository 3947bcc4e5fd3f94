// Test helpers: a real `switchboard serve` on a free loopback port with a temporary data
// directory and configuration, the server API, and HS256 tokens minted with the
// configured secret.
//
// The binary is $SWITCHBOARD_BIN, or target/release/switchboard of this checkout (what
// scripts/test builds). Nothing here is a mock: every test talks to the real server.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '..', '..');
export const LIBRARY = join(REPO, 'crates', 'server', 'assets', 'switchboard.js');
export const BIN = process.env.SWITCHBOARD_BIN || join(REPO, 'target', 'release', 'switchboard');
/** The redis-server of the cluster tests: $REDIS_SERVER (as crates/redis-fixture reads it). */
export const REDIS_BIN = process.env.REDIS_SERVER || '/usr/bin/redis-server';

/** @returns {Promise<number>} a port that was free a moment ago */
export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
      srv.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until `cond()` is truthy, polling every 10 ms; throws after `ms`.
 * @param {() => any} cond
 * @param {number} [ms]
 * @param {string} [what]
 */
export async function until(cond, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * The namespaces of the tests: `test:` keeps a long history so recovery always works;
 * `short:` keeps 100, so a test can miss more than recovery can bring back (`chat:` did,
 * until the built-in apps came to own the `chat` namespace);
 * `team:` is private (a channel needs its name in the token's `channels`).
 */
const NAMESPACES = `
[[namespaces]]
name = "test"
history_size = 5000
history_ttl = "1h"
presence = true
join_leave = true
publish = true

[[namespaces]]
name = "short"
history_size = 100
history_ttl = "24h"
presence = true
join_leave = true
publish = true

[[namespaces]]
name = "chat"
history_size = 100
history_ttl = "24h"
presence = true
join_leave = true
publish = true

[[namespaces]]
name = "logs"
history_size = 1000
history_ttl = "1h"

[[namespaces]]
name = "nohist"
publish = true

[[namespaces]]
name = "team"
private = true
publish = true
`;

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * A running server. `transports` switches endpoints off (e.g. `{websocket: false}`);
 * `limits`, `storage`, `rpc`, `apps` and `deflate` add settings to `[limits]`, `[storage]`,
 * `[rpc]`, `[apps]` and `[deflate]`; `allowedOrigins` is `allowed_origins`. `namespaces: false` leaves out the
 * test namespaces above except `test:` (the built-in apps then add their own `chat` and
 * `apps` namespaces, as on a real server).
 * @param {{transports?: Record<string, boolean>, limits?: Record<string, string | number>, storage?: Record<string, string | number>, rpc?: Record<string, string | number>, apps?: Record<string, string | number | boolean>, deflate?: Record<string, string | number | boolean>, namespaces?: boolean, port?: number, dataDir?: string, store?: string, allowedOrigins?: string[]}} [opts]
 */
export async function startServer(opts = {}) {
  const server = new TestServer(opts);
  await server.start();
  return server;
}

export class TestServer {
  constructor(opts) {
    this.opts = opts;
    this.dataDir = opts.dataDir || mkdtempSync(join(tmpdir(), 'switchboard-js-'));
    this.ownsDir = !opts.dataDir;
    this.apiKey = opts.apiKey || randomBytes(16).toString('hex');
    this.secret = opts.secret || randomBytes(24).toString('hex');
    this.port = opts.port || 0;
    this.proc = null;
    this.log = '';
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  writeConfig() {
    let toml = `allow_anonymous = true\nstore = "${this.opts.store || 'sqlite'}"\n`;
    if (this.opts.allowedOrigins) toml += `allowed_origins = ${JSON.stringify(this.opts.allowedOrigins)}\n`;
    toml += `\n[auth]\napi_key = "${this.apiKey}"\ntoken_secret = "${this.secret}"\n`;
    for (const section of ['limits', 'storage', 'rpc', 'apps', 'engine', 'deflate']) {
      if (!this.opts[section]) continue;
      toml += `\n[${section}]\n`;
      for (const [k, v] of Object.entries(this.opts[section])) toml += `${k} = ${JSON.stringify(v)}\n`;
    }
    if (this.opts.transports) {
      toml += '\n[transports]\n';
      for (const [k, v] of Object.entries(this.opts.transports)) toml += `${k} = ${v}\n`;
    }
    toml += this.opts.namespaces === false ? NAMESPACES.slice(0, NAMESPACES.indexOf('[[namespaces]]\nname = "chat"')) : NAMESPACES;
    const path = join(this.dataDir, 'test.toml');
    writeFileSync(path, toml);
    return path;
  }

  async start() {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it with cargo build --release -p switchboard`);
    if (!this.port) this.port = await freePort();
    const config = this.writeConfig();
    const args = ['serve', '--config', config, '--data-dir', this.dataDir, '--listen', `127.0.0.1:${this.port}`, '--log-level', 'warn'];
    // The flags, as an operator starts a node (they win over the file's `store`).
    if (this.opts.redis) args.push('--engine', 'redis', '--redis-url', this.opts.redis);
    const proc = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    proc.stderr.on('data', (d) => {
      this.log += d;
    });
    const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    this.exited = exited;
    let gone = null;
    exited.then((e) => {
      gone = e;
    });
    await until(
      async () => {
        if (gone) throw new Error(`switchboard serve exited (${JSON.stringify(gone)}):\n${this.log}`);
        try {
          const res = await fetch(`${this.url}/health`);
          return res.ok;
        } catch {
          return false;
        }
      },
      15000,
      'the server to answer /health',
    );
  }

  /** Stops the server: SIGTERM (graceful, close 1001) or SIGKILL. */
  async stop(signal = 'SIGTERM') {
    if (!this.proc) return;
    const proc = this.proc;
    this.proc = null;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Starts again on the same port, with the same data directory (SQLite keeps history). */
  async restart(signal = 'SIGTERM') {
    await this.stop(signal);
    await this.start();
  }

  async dispose() {
    await this.stop();
    if (this.ownsDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /**
   * A counter or gauge of `GET /metrics`, by its full name (`switchboard_…`).
   * @param {string} name
   */
  async metric(name) {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    const line = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
    if (!line) throw new Error(`/metrics has no ${name}`);
    return Number(line[1]);
  }

  /**
   * `POST /api/<command>`; resolves to the JSON answer, throws on an error status.
   * @param {string} command
   * @param {object} [body]
   */
  async api(command, body = {}) {
    const res = await fetch(`${this.url}/api/${command}`, {
      method: 'POST',
      headers: { 'X-API-Key': this.apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`/api/${command} answered ${res.status}: ${JSON.stringify(json)}`);
    return json;
  }

  /**
   * An HS256 connection token.
   * @param {string} user
   * @param {{ttl?: number, info?: any, exp?: number, secret?: string, channels?: string[]}} [opts] ttl in seconds
   */
  token(user, opts = {}) {
    const claims = { sub: user, exp: opts.exp ?? Math.floor(Date.now() / 1000) + (opts.ttl ?? 3600) };
    if (opts.info !== undefined) claims.info = opts.info;
    if (opts.channels !== undefined) claims.channels = opts.channels;
    const head = b64url(JSON.stringify({ typ: 'JWT', alg: 'HS256' }));
    const body = b64url(JSON.stringify(claims));
    const sig = createHmac('sha256', opts.secret ?? this.secret).update(`${head}.${body}`).digest('base64url');
    return `${head}.${body}.${sig}`;
  }
}

/**
 * Whether a Redis on `port` answers PING (one connection, one command, closed).
 * @param {number} port
 * @returns {Promise<boolean>}
 */
function redisPong(port) {
  return new Promise((ok) => {
    const socket = connect({ host: '127.0.0.1', port });
    let reply = '';
    const done = (v) => {
      socket.destroy();
      ok(v);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d) => {
      reply += d;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

/**
 * A redis-server of the tests' own on a free loopback port, keeping nothing on disk (as
 * crates/redis-fixture starts one for the Rust tests): `url` is `redis://127.0.0.1:PORT/0`.
 * Throws when redis-server is not installed.
 */
export async function startRedis() {
  if (!existsSync(REDIS_BIN)) throw new Error(`${REDIS_BIN} is missing: apt-get install redis-server`);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-js-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
  const proc = spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  let gone = null;
  exited.then((e) => (gone = e));
  await until(
    async () => {
      if (gone) throw new Error(`redis-server exited (${JSON.stringify(gone)}):\n${log}`);
      return redisPong(port);
    },
    10000,
    'redis-server to answer PING',
  );
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    /** Stops it (SIGTERM; SIGKILL after 5 s) and removes its directory. */
    async dispose() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `count` nodes of one group: `switchboard serve --engine redis` over `redis` (from
 * {@link startRedis}), each with its own data directory and port, all with the first
 * node's API key and token secret (a group's nodes must share them: a token minted for
 * one is good on every other). `opts` are {@link startServer}'s, for every node.
 * @param {{url: string}} redis
 * @param {number} count
 * @param {Parameters<typeof startServer>[0]} [opts]
 * @returns {Promise<TestServer[]>}
 */
export async function startCluster(redis, count, opts = {}) {
  const first = await startServer({ ...opts, redis: redis.url });
  const nodes = [first];
  for (let i = 1; i < count; i++) {
    nodes.push(await startServer({ ...opts, redis: redis.url, apiKey: first.apiKey, secret: first.secret }));
  }
  return nodes;
}
