// Browser tests of the vote app (crates/apps/web/vote, the `vote.*` rpc methods of the
// apps crate) and of its QR encoder (crates/apps/web/lib/qr.js): headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core) against a real `switchboard serve`,
// as apps.test.js does. The QR codes are drawn by Chromium from the encoder's SVG onto a
// canvas and decoded by jsQR (a maintained decoder, not ours).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';

import { chromium } from 'playwright-core';
import jsQR from 'jsqr';
import { startServer, until } from './server.js';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** The server of the apps: the apps' own namespaces (chat, apps, poll), open sign-up, guests. */
const APPS = { namespaces: false, apps: { guests: true } };

let browser;
before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  if (browser) await browser.close();
});

/** A browser context with one page recording page errors, console errors (CSP among them). */
async function person(opts = {}) {
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 800 }, ...opts });
  const page = await context.newPage();
  const p = { context, page, problems: [] };
  page.on('pageerror', (err) => p.problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    const network = /^Failed to load resource|^WebSocket connection to .* failed/.test(text);
    if ((msg.type() === 'error' && !network) || /Content Security Policy/i.test(text)) p.problems.push(`console: ${text}`);
  });
  return p;
}

const waitFor = (what, fn, ms = 10000) => until(fn, ms, what);

/**
 * Draws an SVG element (serialized, as a data: image, which the CSP allows) onto a canvas
 * in the page, `scale` pixels per unit, and decodes the pixels with jsQR in Node.
 * @param {import('playwright-core').Page} page
 * @param {string} selectorOrText a selector of an SVG on the page, or text to encode there
 */
async function decodeQr(page, { selector, text, scale = 4 }) {
  const img = await page.evaluate(
    async ({ selector, text, scale }) => {
      let el;
      if (selector) el = document.querySelector(selector);
      else el = (await import('/apps/lib/qr.js')).qrSvg(text);
      const copy = el.cloneNode(true);
      copy.setAttribute('xmlns', 'http://www.w3.org/2000/svg');
      const [, , w, h] = copy.getAttribute('viewBox').split(' ').map(Number);
      copy.setAttribute('width', String(w * scale));
      copy.setAttribute('height', String(h * scale));
      const xml = new XMLSerializer().serializeToString(copy);
      const image = new Image();
      image.src = `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(xml)))}`;
      await image.decode();
      const canvas = document.createElement('canvas');
      canvas.width = w * scale;
      canvas.height = h * scale;
      const ctx = canvas.getContext('2d');
      ctx.drawImage(image, 0, 0);
      const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      return { width: canvas.width, height: canvas.height, pixels: Array.from(data), version: Number(el.getAttribute('data-version')) };
    },
    { selector, text, scale },
  );
  const found = jsQR(Uint8ClampedArray.from(img.pixels), img.width, img.height);
  return { text: found ? found.data : null, version: img.version };
}

describe('lib/qr.js', () => {
  let server;
  before(async () => {
    server = await startServer(APPS);
  });
  after(() => server.dispose());

  test('its SVG, drawn by Chromium, decodes with jsQR: versions 1 to 10, UTF-8, the longest text', async () => {
    const p = await person();
    await p.page.goto(`${server.url}/signin`);
    const { MAX_BYTES } = await p.page.evaluate(async () => ({ MAX_BYTES: (await import('/apps/lib/qr.js')).MAX_BYTES }));
    assert.equal(MAX_BYTES, 213, 'version 10, level M, byte mode');
    const texts = [
      'A',
      `${server.url}/vote#Ab3dE5gH1j`,
      '投票：午饭吃什么？ ✓',
      'x'.repeat(MAX_BYTES),
    ];
    // Lengths that need each version from 1 to 10.
    for (const n of [10, 20, 40, 60, 80, 100, 120, 150, 180, 200]) texts.push(Array.from({ length: n }, (_, i) => String.fromCharCode(33 + ((i * 31 + n) % 90))).join(''));
    const versions = new Set();
    for (const text of texts) {
      const r = await decodeQr(p.page, { text });
      versions.add(r.version);
      assert.equal(r.text, text, `version ${r.version}, ${text.length} characters`);
    }
    assert.deepEqual([...versions].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const tooLong = await p.page.evaluate(async (n) => {
      try {
        (await import('/apps/lib/qr.js')).encode('x'.repeat(n));
        return 'accepted';
      } catch (err) {
        return err.name;
      }
    }, MAX_BYTES + 1);
    assert.equal(tooLong, 'RangeError');
    assert.deepEqual(p.problems, []);
    await p.context.close();
  });
});
