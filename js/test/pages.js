// What the browser tests of the built-in apps share (apps.test.js, vote.test.js,
// ops.test.js): Debian's Chromium through playwright-core, a "person" (a browser context
// with one page that records what went wrong in it), signing up and in through the page,
// waiting for the page's client, and the axe-core scan.

import { before, after } from 'node:test';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { until, REPO } from './server.js';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** axe-core's script, injected into a page to scan it (installed by npm, never committed). */
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
/** Where the screenshots go. */
export const SHOTS = join(REPO, 'docs', 'screenshots');
export const PASSWORD = 'correct horse battery';
/** The server of the apps: the apps' own namespaces, open sign-up (loopback), guests. */
export const APPS = { namespaces: false, apps: { guests: true } };

let browser;

/** Launches Chromium before the file's tests and closes it after them. */
export function useChromium() {
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
}

/**
 * A browser context (a person's browser: its own cookies and storage) with one page that
 * records page errors, console errors (CSP violations among them) and dialogs.
 */
export async function person(opts = {}) {
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 800 }, ...opts });
  const page = await context.newPage();
  const p = { context, page, problems: [], dialogs: [] };
  watch(p, page);
  return p;
}

/** Records `page`'s problems and dialogs in `p` (for a person's second tab too). */
export function watch(p, page) {
  page.on('pageerror', (err) => p.problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    const text = msg.text();
    // Chromium logs failed requests: refused connections while the server restarts, 401
    // from /auth/token after sign-out. Those are the tests' doing; anything else is not.
    const network = /^Failed to load resource|^WebSocket connection to .* failed/.test(text);
    if ((msg.type() === 'error' && !network) || /Content Security Policy/i.test(text)) p.problems.push(`console: ${text}`);
  });
  page.on('dialog', (d) => {
    p.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
}

/** Waits until the page's client is connected. */
export const online = (page) => page.waitForFunction(() => window.switchboard && window.switchboard.readyState === 1, null, { timeout: 20000 });

/** Waits until `fn()` (async) returns something truthy; says what it waited for. */
export const waitFor = (what, fn, ms = 10000) => until(fn, ms, what);

/** Creates an account through the sign-in page; resolves once the chat is connected. */
export async function signUp(p, url, name) {
  const { page } = p;
  await page.goto(`${url}/signin`);
  await page.getByRole('button', { name: 'Create an account' }).click();
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(/\/chat/);
  await online(page);
}

/** Signs in through the sign-in page; resolves once the chat is connected. */
export async function signIn(p, url, name) {
  const { page } = p;
  await page.goto(`${url}/signin`);
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(/\/chat/);
  await online(page);
}

/** axe-core's serious and critical violations on the page, in words. */
export async function axe(page) {
  await page.addScriptTag({ content: AXE });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}
