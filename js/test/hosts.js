// What the log viewer's and the dashboard's browser tests share (logs.test.js,
// monitor.test.js): an administrator made as an operator makes one, and hosts.
//
// Two kinds of host. `realAgent` runs `switchboard agent` on a temp log file, as an
// operator would. `agent` is a test publisher: a WebSocket client of the browser library
// with an agent token from `switchboard token --agent HOST` (the real CLI, so the token's
// claims are the agent's), publishing what docs/agent.md says an agent publishes
// (`hello` and `sample` on metrics:HOST, line batches on logs:HOST:NAME), but with the
// values, times and failures a test needs to choose (a CPU crossing, a batch out of
// order, 15 minutes of history); the pages cannot tell the two apart.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { BIN, LIBRARY } from './server.js';
import { PASSWORD } from './pages.js';

const { Switchboard } = await import(pathToFileURL(LIBRARY).href);

/** Runs the CLI; resolves to its standard output, rejects on a failure. */
export function cli(args, input = '') {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (err += d));
    proc.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`switchboard ${args.join(' ')}: ${code}\n${out}${err}`))));
    // A command that reads no input may exit before its input is written: the write
    // then fails with EPIPE, which is no failure of the command (its exit code says).
    proc.stdin.on('error', () => {});
    proc.stdin.end(input);
  });
}

/** Creates an administrator in the running server's store, as an operator does. */
export async function addAdmin(server, name) {
  await cli(['user', 'add', '--config', join(server.dataDir, 'test.toml'), '--data-dir', server.dataDir, name, '--admin'], `${PASSWORD}\n`);
}

/** An agent token for `host`, from the CLI. */
export async function agentToken(server, host) {
  const out = await cli(['token', '--agent', host, '--config', join(server.dataDir, 'test.toml'), '--data-dir', server.dataDir]);
  return out.trim();
}

/**
 * A host: connected with its agent token, its `hello` published (announcing `logs`).
 * `lines(name, items)` publishes one batch on logs:HOST:NAME (an item is a text, or
 * [text, time]); `sample(figures)` one sample on metrics:HOST; `every(ms, figures)`
 * samples until `stop()`.
 * @param {any} server
 * @param {string} host
 * @param {string[]} [logs]
 */
export async function agent(server, host, logs = []) {
  const token = await agentToken(server, host);
  const sb = new Switchboard(server.url, { WebSocket, token, transports: ['websocket'] });
  await new Promise((resolve, reject) => {
    const off = sb.on('connected', () => {
      off();
      resolve();
    });
    sb.on('error', (e) => reject(new Error(`${host}: ${e && e.message}`)));
    sb.connect();
  });
  const channel = `metrics:${host}`;
  await sb.publish(channel, { type: 'hello', time: Date.now(), host, version: '0.1.0', os: 'Debian 12', cores: 4, interval_ms: { watched: 1000, idle: 10000 }, logs: logs.map((name) => ({ name, kind: 'file' })) });
  let timer = null;
  const a = {
    sb,
    host,
    async lines(name, items) {
      const lines = items.map((x) => (Array.isArray(x) ? { time: x[1], text: x[0] } : { time: Date.now(), text: x }));
      await sb.publish(`logs:${host}:${name}`, { lines });
    },
    async sample(figures) {
      await sb.publish(channel, { type: 'sample', time: Date.now(), ...figures });
    },
    /**
     * What a host that has been reporting for a while left in history: a sample every
     * 10 s (nobody watching) for the last 15 minutes, then every second for the last
     * minute, each with its own time, `figures(n)` giving the figures.
     */
    async backfill(figures) {
      const now = Date.now();
      const times = [];
      for (let s = 900; s > 60; s -= 10) times.push(now - s * 1000);
      for (let s = 60; s > 0; s--) times.push(now - s * 1000);
      let n = 0;
      for (const time of times) await sb.publish(channel, { type: 'sample', ...figures(n++), time });
    },
    every(ms, figures) {
      a.stop();
      let n = 0;
      timer = setInterval(() => {
        a.sample(figures(n++)).catch(() => {});
      }, ms);
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
    close() {
      a.stop();
      sb.close();
    },
  };
  return a;
}

/** A plausible sample: `cpu` percent, the rest moving with `n`. */
export function figures(cpu, n = 0) {
  const gib = 1024 ** 3;
  return {
    cpu: { total: cpu, cores: [cpu, cpu, cpu, cpu] },
    load: [0.4 + (n % 5) / 10, 0.5, 0.45],
    mem: { total: 8 * gib, used: 3 * gib + (n % 7) * 50e6, available: 4.6 * gib - (n % 7) * 50e6 },
    swap: { total: 2 * gib, used: 0.1 * gib },
    disks: [{ mount: '/', total: 100 * gib, used: 41 * gib }],
    io: { read: 12000 + (n % 3) * 4000, write: 56000 },
    net: [{ iface: 'eth0', rx: 120000 + (n % 4) * 30000, tx: 40000 + (n % 5) * 9000 }],
    procs: 183,
    uptime: 86400 * 3,
    agent: { rss: 7.2e6, cpu: 0.4 },
  };
}


/**
 * The real `switchboard agent` for `host`, tailing `logs` ({name: path}), with its token
 * from `switchboard token --agent` in the environment as an operator would run it.
 * `stop()` ends it (SIGTERM), `kill()` without a goodbye (SIGKILL).
 * @param {any} server
 * @param {string} host
 * @param {Record<string, string>} [logs]
 */
export async function realAgent(server, host, logs = {}) {
  const token = await agentToken(server, host);
  const dir = mkdtempSync(join(tmpdir(), `sb-agent-${host}-`));
  // Idle samples come faster than the tests' stale_after (3 s), as the defaults (10 s and
  // 30 s) are in that order, so a host nobody watches yet is not reported stale.
  let toml = `host = "${host}"\ntail_poll = "50ms"\n\n[interval]\nwatched = "1s"\nidle = "2s"\n`;
  for (const [name, path] of Object.entries(logs)) toml += `\n[[logs]]\nname = "${name}"\npath = "${path}"\nstart = "last:100"\n`;
  const config = join(dir, 'agent.toml');
  writeFileSync(config, toml);
  const proc = spawn(BIN, ['agent', '--server', server.url, '--config', config, '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, SWITCHBOARD_AGENT_TOKEN: token },
  });
  let log = '';
  proc.stderr.on('data', (d) => (log += d));
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  const end = async (signal) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  return { host, log: () => log, stop: () => end('SIGTERM'), kill: () => end('SIGKILL') };
}
