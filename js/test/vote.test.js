// Browser tests of the vote app (crates/apps/web/vote, the `vote.*` rpc methods of the
// apps crate) and of its QR encoder (crates/apps/web/lib/qr.js): headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core) against a real `switchboard serve`,
// as apps.test.js does. The QR codes are drawn by Chromium from the encoder's SVG onto a
// canvas and decoded by jsQR (a maintained decoder, not ours).
//
// Covered (issue 13, "Proof"): three voters in three browsers see the same counts within
// 1 s of the last vote; a vote changes; a restart keeps the counts; results hidden until
// the close (the owner sees them); several choices; the CSV export downloads; the QR code
// decodes to the poll's link, on the page and in presenter mode; axe-core finds no serious
// or critical violation on the list, a poll and the presenter view; no page breaks its CSP;
// screenshots docs/screenshots/vote-{create,vote,present}-{en,zh}-{1280,390}.png.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import jsQR from 'jsqr';
import { startServer } from './server.js';
import { APPS, SHOTS, useChromium, person, online, waitFor, signUp, axe } from './pages.js';

useChromium();

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

// ---- the vote page ---------------------------------------------------------------------


/**
 * Creates a poll through the page's form; resolves to its id (the page goes to it).
 * @param {import('playwright-core').Page} page
 */
async function createPoll(page, url, { question, options, results = 'Always, live', changeable = true, closes = null, several = 0 }) {
  await page.goto(`${url}/vote`);
  await online(page);
  await page.getByLabel('Question').fill(question);
  for (let i = 0; i < options.length; i++) {
    if (i >= 2) await page.getByRole('button', { name: 'Add an option' }).click();
    await page.getByLabel(`Option ${i + 1}`, { exact: true }).fill(options[i]);
  }
  await page.getByLabel('Show the results').selectOption({ label: results });
  if (closes) await page.getByLabel('Closes').selectOption({ label: closes });
  if (several) {
    await page.getByLabel('Allow several choices').check();
    await page.getByLabel('At most this many choices').fill(String(several));
  }
  const box = page.getByLabel('Voters may change their vote');
  if ((await box.isChecked()) !== changeable) await box.click();
  await page.getByRole('button', { name: 'Create poll' }).click();
  await page.waitForURL(/\/vote\?p=/);
  await online(page);
  await page.locator('#poll-title').filter({ hasText: question }).waitFor();
  return new URL(page.url()).searchParams.get('p');
}

/** The counts the page's chart shows, in option order (null while hidden). */
async function shown(page) {
  return page.evaluate(() => {
    const chart = document.querySelector('#results .chart');
    if (!chart || chart.hasAttribute('hidden')) return null;
    return [...chart.querySelectorAll('.chart-row')]
      .sort((a, b) => Number(/translate\(0 (\d+)/.exec(a.getAttribute('transform'))[1]) - Number(/translate\(0 (\d+)/.exec(b.getAttribute('transform'))[1]))
      .map((r) => Number(r.querySelector('.chart-value').textContent.split('·')[0].replace(/\D/g, '')));
  });
}

const choose = (page, text) => page.locator('#ballot .choice', { hasText: text }).click();

async function openPoll(p, url, id) {
  await p.page.goto(`${url}/vote?p=${id}`);
  await online(p.page);
  await p.page.locator('#ballot .choice').first().waitFor();
}

describe('the vote page', () => {
  let server;
  const people = {};
  before(async () => {
    server = await startServer(APPS);
    for (const name of ['owner', 'ann', 'ben', 'cai']) {
      people[name] = await person();
      await signUp(people[name], server.url, name);
    }
  });
  after(async () => {
    for (const p of Object.values(people)) await p.context.close();
    await server.dispose();
  });

  test('three voters in three browsers see the same counts within 1 s; a vote changes; a restart keeps the counts', async () => {
    const { owner, ann, ben, cai } = people;
    const id = await createPoll(owner.page, server.url, { question: 'Lunch?', options: ['Noodles', 'Rice', 'Salad'] });
    assert.match(id, /^[A-Za-z0-9]{10}$/);
    const voters = [ann, ben, cai];
    for (const p of voters) await openPoll(p, server.url, id);
    await choose(ann.page, 'Noodles');
    await choose(ben.page, 'Noodles');
    await choose(cai.page, 'Rice');
    const voted = Date.now();
    const want = [2, 1, 0];
    await Promise.all([owner, ...voters].map((p) => waitFor('the three votes everywhere', async () => JSON.stringify(await shown(p.page)) === JSON.stringify(want), 1000)));
    assert.ok(Date.now() - voted <= 1000, `${Date.now() - voted} ms`);
    // The chosen option is highlighted (pressed) on the voter's page.
    assert.equal(await cai.page.locator('#ballot .choice.chosen').textContent(), 'Riceyour vote');
    assert.equal(await cai.page.locator('#ballot .choice', { hasText: 'Rice' }).getAttribute('aria-pressed'), 'true');

    // Cai changes to Salad: everyone sees it.
    await choose(cai.page, 'Salad');
    await Promise.all([owner, ...voters].map((p) => waitFor('the changed vote', async () => JSON.stringify(await shown(p.page)) === '[2,0,1]', 2000)));
    assert.equal(await cai.page.locator('#totals').textContent(), '3 votes');

    // Watchers: the owner and the three voters have the poll open.
    await waitFor('four watching', async () => /4 watching/.test(await owner.page.locator('#watchers').textContent()), 8000);

    // A restart: the pages reconnect and the counts are the same, before and after a reload.
    await server.restart();
    await online(ann.page);
    await ann.page.reload();
    await online(ann.page);
    await waitFor('the counts after the restart', async () => JSON.stringify(await shown(ann.page)) === '[2,0,1]');
    await choose(ben.page, 'Rice');
    await waitFor('a vote after the restart', async () => JSON.stringify(await shown(ann.page)) === '[1,1,1]', 5000);
    for (const p of [owner, ...voters]) assert.deepEqual(p.problems, []);
  });

  test('results hidden until the poll closes, then shown to everyone; a closed poll takes no vote', async () => {
    const { owner, ann, ben } = people;
    const id = await createPoll(owner.page, server.url, { question: 'Secret ballot?', options: ['Yes', 'No'], results: 'When the poll closes' });
    for (const p of [ann, ben]) await openPoll(p, server.url, id);
    await choose(ann.page, 'Yes');
    await choose(ben.page, 'No');
    await waitFor('two votes counted', async () => (await owner.page.locator('#totals').textContent()) === '2 votes');
    // The owner sees the counts (as an export would show them anyway); the voters do not.
    await waitFor('the counts on the owner\'s page', async () => JSON.stringify(await shown(owner.page)) === '[1,1]');
    for (const p of [ann, ben]) {
      assert.equal(await shown(p.page), null, 'no counts before the close');
      assert.equal(await p.page.locator('#results-hidden').textContent(), 'The results show when the poll closes.');
      assert.equal(await p.page.locator('#totals').textContent(), '2 votes');
    }
    await owner.page.getByRole('button', { name: 'Close poll' }).click();
    await Promise.all([owner, ann, ben].map((p) => waitFor('the results after the close', async () => JSON.stringify(await shown(p.page)) === '[1,1]', 5000)));
    assert.equal(await ann.page.locator('#poll-state').textContent(), 'Closed');
    assert.equal(await ann.page.locator('#ballot .choice').first().isDisabled(), true);
    // The owner downloads the results.
    const [download] = await Promise.all([owner.page.waitForEvent('download'), owner.page.getByRole('button', { name: 'Export CSV' }).click()]);
    assert.match(download.suggestedFilename(), /\.csv$/);
    const csv = readFileSync(await download.path(), 'utf8');
    assert.ok(csv.length > 0, 'the CSV has content');
    for (const p of [owner, ann, ben]) assert.deepEqual(p.problems, []);
  });

  test('several choices: up to the maximum, sent with one button; a final vote cannot change', async () => {
    const { owner, ann } = people;
    const id = await createPoll(owner.page, server.url, { question: 'Which days?', options: ['Mon', 'Tue', 'Wed', 'Thu'], several: 2, changeable: false });
    await openPoll(ann, server.url, id);
    for (const day of ['Mon', 'Wed', 'Thu']) await choose(ann.page, day);
    // The third pick is over the maximum: not taken.
    assert.deepEqual(await ann.page.$$eval('#ballot .choice[aria-pressed="true"] .choice-text', (e) => e.map((x) => x.textContent)), ['Mon', 'Wed']);
    await ann.page.getByRole('button', { name: 'Vote', exact: true }).click();
    await waitFor('two choices counted', async () => JSON.stringify(await shown(owner.page)) === '[1,0,1,0]', 5000);
    assert.equal(await owner.page.locator('#totals').textContent(), '2 votes · 1 voter');
    await waitFor('the ballot locked', async () => ann.page.locator('#ballot .choice').first().isDisabled());
    assert.equal(await ann.page.locator('#ballot-note').textContent(), 'Your vote counts. This poll does not allow changing it.');
    assert.deepEqual(ann.problems, []);
  });

  test('the QR code decodes to the poll\'s link; presenter mode shows chart, QR code and total; axe finds nothing serious', async () => {
    const { owner, ann } = people;
    const id = await createPoll(owner.page, server.url, { question: 'Ship it?', options: ['Yes', 'Not yet'] });
    const link = `${server.url}/vote?p=${id}`;
    assert.equal(await owner.page.locator('#share-link').inputValue(), link);
    assert.equal((await decodeQr(owner.page, { selector: '#qr svg' })).text, link);

    await openPoll(ann, server.url, id);
    await choose(ann.page, 'Yes');
    await owner.page.getByRole('link', { name: 'Present' }).click();
    await owner.page.locator('#present').waitFor();
    await waitFor('the presenter total', async () => (await owner.page.locator('#present-total').textContent()) === '1 vote');
    assert.equal(await owner.page.locator('#present-title').textContent(), 'Ship it?');
    assert.equal(await owner.page.locator('.topbar').isVisible(), false);
    assert.equal((await decodeQr(owner.page, { selector: '#present .qr' })).text, link);
    await openPoll(people.ben, server.url, id);
    await choose(people.ben.page, 'Not yet');
    await waitFor('a vote live in presenter mode', async () => (await owner.page.locator('#present-total').textContent()) === '2 votes', 5000);
    await owner.page.keyboard.press('Escape');
    await owner.page.locator('#poll-title').waitFor();

    const a = await person({ bypassCSP: true });
    await a.context.addCookies(await owner.context.cookies());
    await a.page.goto(`${server.url}/vote`);
    await online(a.page);
    await a.page.locator('#my-polls a').first().waitFor();
    const found = { list: await axe(a.page) };
    await a.page.goto(`${server.url}/vote?p=${id}`);
    await online(a.page);
    await waitFor('the chart', async () => (await shown(a.page)) !== null);
    found.poll = await axe(a.page);
    await a.page.goto(`${server.url}/vote?p=${id}#present`);
    await online(a.page);
    await a.page.locator('#present-total').filter({ hasText: 'vote' }).waitFor();
    found.present = await axe(a.page);
    assert.deepEqual(found, { list: [], poll: [], present: [] });
    await a.context.close();
    assert.deepEqual(owner.problems, []);
  });
});

describe('vote screenshots', () => {
  let server;
  before(async () => {
    server = await startServer(APPS);
    mkdirSync(SHOTS, { recursive: true });
  });
  after(() => server.dispose());

  test('create, vote and present, English and Chinese, desktop and phone', { timeout: 180000 }, async () => {
    const people = {};
    for (const name of ['Maya', 'Chen', 'Tom', 'Ana']) {
      people[name] = await person();
      await signUp(people[name], server.url, name);
    }
    const { Maya } = people;
    const id = await createPoll(Maya.page, server.url, {
      question: 'Where should the team offsite be?',
      options: ['Lisbon', 'Kyoto', 'Mexico City', 'Reykjavík'],
      closes: 'In 1 day',
    });
    await createPoll(Maya.page, server.url, { question: 'Friday demo: which feature first?', options: ['Vote app', 'Console'] });
    await createPoll(people.Chen.page, server.url, { question: 'Team lunch on Friday?', options: ['Dumplings', 'Pizza', 'Tacos'] });
    const votes = [
      ['Chen', 'Kyoto'],
      ['Tom', 'Lisbon'],
      ['Ana', 'Kyoto'],
    ];
    for (const [name, option] of votes) {
      await openPoll(people[name], server.url, id);
      await choose(people[name].page, option);
    }
    const cookies = await Maya.context.cookies();
    const tomCookies = await people.Tom.context.cookies();
    for (const [lang, locale] of [
      ['en', 'en-US'],
      ['zh', 'zh-CN'],
    ]) {
      for (const [width, height] of [
        [1280, 800],
        [390, 844],
      ]) {
        const shot = (page) => join(SHOTS, `vote-${page}-${lang}-${width}.png`);
        const out = await person({ locale, viewport: { width, height } });
        await out.context.addCookies(cookies);
        await out.page.goto(`${server.url}/vote`);
        await online(out.page);
        await out.page.locator('#my-polls a').first().waitFor();
        await out.page.locator('#poll-question').fill(lang === 'en' ? 'Which day works for the retro?' : '复盘会哪天开比较好？');
        await out.page.locator('#option-1').fill(lang === 'en' ? 'Tuesday' : '周二');
        await out.page.locator('#option-2').fill(lang === 'en' ? 'Thursday' : '周四');
        await out.page.screenshot({ path: shot('create'), fullPage: width < 800 });
        await out.context.close();

        const voter = await person({ locale, viewport: { width, height } });
        await voter.context.addCookies(tomCookies);
        await openPoll(voter, server.url, id);
        await waitFor('the chart', async () => (await shown(voter.page)) !== null);
        await voter.page.waitForTimeout(600); // the bars' transition
        await voter.page.screenshot({ path: shot('vote'), fullPage: width < 800 });
        await voter.page.goto(`${server.url}/vote?p=${id}#present`);
        await online(voter.page);
        await voter.page.locator('#present-total').filter({ hasText: /3/ }).waitFor();
        await voter.page.waitForTimeout(600);
        await voter.page.screenshot({ path: shot('present') });
        assert.deepEqual(voter.problems, []);
        await voter.context.close();
      }
    }
    for (const p of Object.values(people)) await p.context.close();
  });
});
