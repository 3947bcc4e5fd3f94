// Browser test of the built-in apps over TLS (issue 16): `switchboard serve` with
// `[tls]` (the certificate of a CA made in the test by openssl, for 127.0.0.1; the keys
// live in a temp directory and are removed after), headless Chromium (Debian's, through
// playwright-core) trusting exactly that certificate's key, two people signing up and
// chatting through the pages over https:// and wss://.
//
// Covered: the pages, the sign-in and the WebSocket all run over TLS (every socket the
// pages open is wss://, the page is a secure context); the session cookie is Secure and
// HttpOnly; messages and typing go both ways; a browser that does not trust the
// certificate gets no page, and its refused handshake is counted in
// switchboard_tls_handshake_failures_total. Screenshots of both people's chat (English,
// desktop): docs/screenshots/tls-chat-{alice,bob}.png.
//
// Chromium is told to trust the server's key with --ignore-certificate-errors-spki-list
// (one SPKI hash, honoured with the --user-data-dir playwright passes) rather than
// ignoreHTTPSErrors, which would let any certificate through: a certificate with another
// key would still fail.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { BIN, TestServer, freePort, until } from './server.js';
import { APPS, CHROMIUM, SHOTS, online, signUp, waitFor, watch } from './pages.js';

const OPENSSL = process.env.OPENSSL || '/usr/bin/openssl';

/**
 * A test CA and a server certificate it signs for 127.0.0.1 and localhost, made by
 * openssl in a temp directory: the paths, the CA's PEM, and the base64 SHA-256 of the
 * server key's SubjectPublicKeyInfo (what Chromium's SPKI list takes).
 */
function makeCertificates() {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-tls-'));
  const path = (name) => join(dir, name);
  const openssl = (...args) => execFileSync(OPENSSL, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path('ca-key.pem'), '-out', path('ca.pem'), '-days', '2', '-subj', '/CN=Switchboard test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path('key.pem'), '-out', path('server.csr'), '-subj', '/CN=127.0.0.1');
  writeFileSync(path('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl('x509', '-req', '-in', path('server.csr'), '-CA', path('ca.pem'), '-CAkey', path('ca-key.pem'), '-CAcreateserial', '-out', path('leaf.pem'), '-days', '2', '-extfile', path('server.ext'));
  // The chain the server presents: its own certificate, then the CA's.
  writeFileSync(path('cert.pem'), readFileSync(path('leaf.pem'), 'utf8') + readFileSync(path('ca.pem'), 'utf8'));
  const publicKey = execFileSync(OPENSSL, ['x509', '-in', path('leaf.pem'), '-pubkey', '-noout']);
  const spki = execFileSync(OPENSSL, ['pkey', '-pubin', '-outform', 'der'], { input: publicKey });
  const hash = execFileSync(OPENSSL, ['dgst', '-sha256', '-binary'], { input: spki }).toString('base64');
  return { dir, cert: path('cert.pem'), key: path('key.pem'), ca: readFileSync(path('ca.pem')), spki: hash };
}

/** GET over HTTPS trusting only `ca`; resolves to {status, headers, body}, rejects on a TLS or connection error. */
function httpsGet(url, ca) {
  return new Promise((resolve, reject) => {
    const req = get(url, { ca }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

/**
 * The test server with `[tls]`: https:// on its port, nothing else. Started by hand (the
 * readiness check goes over HTTPS trusting the test CA, which fetch cannot be told to do).
 */
class TlsServer extends TestServer {
  constructor(opts, certs) {
    super(opts);
    this.certs = certs;
  }

  get url() {
    return `https://127.0.0.1:${this.port}`;
  }

  writeConfig() {
    const path = super.writeConfig();
    appendFileSync(path, `\n[tls]\ncert = ${JSON.stringify(this.certs.cert)}\nkey = ${JSON.stringify(this.certs.key)}\n`);
    return path;
  }

  async start() {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it with cargo build --release -p switchboard`);
    if (!this.port) this.port = await freePort();
    const config = this.writeConfig();
    const proc = spawn(BIN, ['serve', '--config', config, '--data-dir', this.dataDir, '--listen', `127.0.0.1:${this.port}`, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    let gone = null;
    this.exited.then((e) => (gone = e));
    await until(
      async () => {
        if (gone) throw new Error(`switchboard serve exited (${JSON.stringify(gone)}):\n${this.log}`);
        return httpsGet(`${this.url}/health`, this.certs.ca).then((r) => r.status === 200, () => false);
      },
      15000,
      'the server to answer /health over HTTPS',
    );
  }

  /** A counter of /metrics, read over HTTPS. */
  async metric(name) {
    const { body } = await httpsGet(`${this.url}/metrics`, this.certs.ca);
    const line = new RegExp(`^${name} (\\d+)$`, 'm').exec(body);
    if (!line) throw new Error(`/metrics has no ${name}`);
    return Number(line[1]);
  }
}

const texts = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));
const bodies = (page) => texts(page, '#messages .msg:not(.pending) .msg-body');
const members = (page) => texts(page, '#member-list .member .name');

/** Types a message into the lobby and presses Enter. */
async function say(page, text) {
  const box = page.getByLabel('Message #lobby', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

/** Launches Chromium; with `spki`, trusting the certificate of that key. */
function launch(spki) {
  const args = ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
  if (spki) args.push(`--ignore-certificate-errors-spki-list=${spki}`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/** A person: a browser context with one page, its problems recorded, the URLs of the WebSockets it opens. */
async function person(browser) {
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const p = { context, page, problems: [], dialogs: [], sockets: [] };
  watch(p, page);
  page.on('websocket', (ws) => p.sockets.push(ws.url()));
  return p;
}

describe('the apps over TLS: https:// and wss:// in Chromium', () => {
  let certs;
  let server;
  let browser;
  const people = {};

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
    certs = makeCertificates();
    server = new TlsServer(APPS, certs);
    await server.start();
    browser = await launch(certs.spki);
    mkdirSync(SHOTS, { recursive: true });
  });
  after(async () => {
    for (const p of Object.values(people)) await p.context.close();
    if (browser) await browser.close();
    if (server) await server.dispose();
    if (certs) rmSync(certs.dir, { recursive: true, force: true });
  });

  test('plain HTTP on the TLS port gets no page, HTTPS trusting the test CA does', async () => {
    await assert.rejects(fetch(`http://127.0.0.1:${server.port}/health`), 'plain HTTP is not served');
    const res = await httpsGet(`${server.url}/health`, certs.ca);
    assert.equal(res.status, 200);
  });

  test('two people sign up and chat over wss://: the cookie is Secure, every socket is wss://', async () => {
    people.alice = await person(browser);
    people.bob = await person(browser);
    const { alice, bob } = people;
    await signUp(alice, server.url, 'alice');
    await signUp(bob, server.url, 'Bob');

    await waitFor('alice to see Bob in the member list', async () => (await members(alice.page)).includes('Bob'));
    await waitFor('Bob to see alice', async () => (await members(bob.page)).includes('alice'));
    await bob.page.getByLabel('Message #lobby', { exact: true }).pressSequentially('Hi');
    await waitFor('"Bob is typing…" on alice\'s page', async () => (await alice.page.locator('#typing').textContent()) === 'Bob is typing…');
    const lines = [
      [bob, 'Hello alice, this came over wss://.'],
      [alice, 'Hi Bob, and this over wss:// too.'],
      [bob, 'And the cookie is Secure.'],
    ];
    for (const [who, text] of lines) {
      await say(who.page, text);
      for (const p of [alice, bob]) await waitFor(`"${text}" on every page`, async () => (await bodies(p.page)).includes(text));
    }
    assert.deepEqual(await bodies(alice.page), await bodies(bob.page), 'both see the same conversation');

    for (const p of [alice, bob]) {
      assert.deepEqual(await p.page.evaluate(() => [location.protocol, window.isSecureContext]), ['https:', true]);
      assert.ok(p.sockets.length > 0, 'the page opened a WebSocket');
      for (const url of p.sockets) assert.ok(url.startsWith(`wss://127.0.0.1:${server.port}/`), `a wss:// socket: ${url}`);
      const cookies = await p.context.cookies(server.url);
      const session = cookies.find((c) => c.name === 'sb_session');
      assert.ok(session, `a session cookie: ${JSON.stringify(cookies)}`);
      assert.equal(session.secure, true, 'the session cookie is Secure');
      assert.equal(session.httpOnly, true);
      assert.deepEqual(p.problems, []);
      assert.deepEqual(p.dialogs, []);
    }
    await alice.page.screenshot({ path: join(SHOTS, 'tls-chat-alice.png') });
    await bob.page.screenshot({ path: join(SHOTS, 'tls-chat-bob.png') });
  });

  test('a browser that does not trust the certificate gets no page; the failed handshake is counted', async () => {
    const before = await server.metric('switchboard_tls_handshake_failures_total');
    const other = await launch(null);
    try {
      const page = await (await other.newContext()).newPage();
      await assert.rejects(page.goto(`${server.url}/signin`), /ERR_CERT_AUTHORITY_INVALID/);
    } finally {
      await other.close();
    }
    await waitFor('the refused handshake in the metric', async () => (await server.metric('switchboard_tls_handshake_failures_total')) > before);
    // The people's sessions are untouched by it.
    await say(people.alice.page, 'still here');
    await waitFor('the message after the refusal', async () => (await bodies(people.bob.page)).includes('still here'));
    await online(people.bob.page);
  });
});
