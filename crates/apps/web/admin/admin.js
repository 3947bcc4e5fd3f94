// /admin: the server's figures, updated every second, and the users online, each of whom
// an administrator may disconnect. Everything comes from the apps' `admin.` rpc methods
// (crates/apps/src/ops.rs) through the browser library, imported from beside this file
// (see crates/apps/src/pages.rs). The server checks the `admin` role on every call; the
// page only spares a non-administrator a page of errors by saying so at once.
//
// `admin.overview` gives counters; rates per second are their differences between two
// answers, divided by the time between them (the server's clock, in each answer).
import { Switchboard } from '../switchboard.js';
import { h, icon, ICONS, replace } from '../lib/dom.js';
import { t, tx, languageSwitch, onLangChange } from '../lib/i18n.js';
import { number } from '../lib/format.js';
import { me, getToken, signOut } from '../lib/session.js';
import { opsLinks } from '../lib/opsbar.js';

const EVERY = 1000;

const info = await me();
if (!info.user) {
  location.replace(`/signin?next=${encodeURIComponent('/admin')}`);
  throw new Error('not signed in');
}
const ME = info.user;
const isAdmin = Array.isArray(ME.roles) && ME.roles.includes('admin');

/** The figures shown, by key: [label key, element]. */
const FIGURES = ['connections', 'users', 'channels', 'subscriptions', 'publications', 'deliveries', 'store', 'memory', 'uptime'];
const figureEls = Object.fromEntries(FIGURES.map((k) => [k, h('dd', { id: `figure-${k}` }, '—')]));
const figureSubs = Object.fromEntries(FIGURES.map((k) => [k, h('dd', { class: 'ops-sub' })]));
const status = h('p', { class: 'note', id: 'admin-status', role: 'status' });
const usersBody = h('tbody');
const usersCount = h('span', { class: 'badge' });
const usersNone = h('p', { class: 'ops-empty', hidden: true, ...tx('admin.users.none') });
const error = h('p', { class: 'error', role: 'alert' });

let last = null;
let previous = null;
let live = false;
/** The user whose Disconnect was pressed once (a second press confirms). */
let confirming = null;

const fixed = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '—');

function uptime(s) {
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = Math.floor(s % 60);
  if (d) return t('admin.uptime.days', { d, h: hh });
  if (hh) return t('admin.uptime.hours', { h: hh, m: mm });
  return t('admin.uptime.minutes', { m: mm, s: ss });
}

function render() {
  status.textContent = live ? t('admin.live') : t('admin.connecting');
  if (!last) return;
  const o = last;
  const set = (k, v, sub = '') => {
    figureEls[k].textContent = v;
    figureSubs[k].textContent = sub;
  };
  const by = o.transports;
  set('connections', number(o.connections), t('admin.sub.transports', { ws: number(by.websocket), sse: number(by.sse), poll: number(by.polling) }));
  set('users', number(o.users_online));
  set('channels', number(o.channels));
  set('subscriptions', number(o.subscriptions));
  let pubs = '—';
  let dels = '—';
  let store = '—';
  if (previous && o.time > previous.time) {
    const dt = (o.time - previous.time) / 1000;
    const rate = (k) => Math.max(0, o.counters[k] - previous.counters[k]) / dt;
    pubs = number(Math.round(rate('publications')));
    dels = number(Math.round(rate('deliveries')));
    const writes = o.counters.store_writes - previous.counters.store_writes;
    if (writes > 0) store = fixed((o.counters.store_write_us - previous.counters.store_write_us) / writes / 1000, 2);
  }
  set('publications', pubs, t('admin.sub.total', { n: number(o.counters.publications) }));
  set('deliveries', dels, t('admin.sub.total', { n: number(o.counters.deliveries) }));
  set('store', store === '—' ? store : t('admin.ms', { n: store }), t('admin.sub.mean', { n: fixed(o.store_write_ms, 2) }));
  set('memory', o.rss_bytes ? t('admin.mib', { n: fixed(o.rss_bytes / 1048576) }) : '—', t('admin.sub.version', { v: o.version }));
  set('uptime', uptime(o.uptime));
  renderUsers();
}

function renderUsers() {
  const users = last ? last.users : [];
  usersCount.textContent = number(users.length);
  usersNone.hidden = users.length > 0;
  replace(
    usersBody,
    users.map((u) => {
      const armed = confirming === u.user;
      const button = h(
        'button',
        {
          class: armed ? 'btn small danger' : 'btn small ghost',
          type: 'button',
          'aria-label': armed ? t('admin.disconnect.confirmUser', { user: u.user }) : t('admin.disconnect.user', { user: u.user }),
          on: { click: () => disconnect(u.user) },
        },
        armed ? t('admin.disconnect.confirm') : t('admin.disconnect'),
      );
      return h('tr', { 'data-user': u.user }, h('th', null, u.user, u.user === ME.id ? h('span', { class: 'tag' }, t('admin.you')) : null), h('td', { class: 'num' }, number(u.connections)), h('td', { class: 'actions' }, button));
    }),
  );
}

async function disconnect(user) {
  if (confirming !== user) {
    confirming = user;
    renderUsers();
    return;
  }
  confirming = null;
  try {
    const r = await sb.rpc('admin.disconnect', { user });
    error.textContent = '';
    status.textContent = t('admin.disconnected', { user, count: r.disconnected });
  } catch (err) {
    error.textContent = t('admin.failed', { message: err.message });
  }
  renderUsers();
}

function header() {
  return h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark' }, icon(ICONS.monitor)), h('span', { class: 'brand-name' }, 'Switchboard')),
    h('span', { class: 'ops-crumb', ...tx('admin.heading') }),
    h('span', { class: 'spacer' }),
    isAdmin ? opsLinks('/admin') : h('a', { class: 'ops-nav', href: '/console', ...tx('admin.toConsole') }),
    languageSwitch(),
    h(
      'span',
      { class: 'who' },
      h('span', { class: 'hide-narrow' }, ME.name),
      h('button', { class: 'btn small ghost', type: 'button', on: { click: () => signOut('/') } }, icon(ICONS.out), h('span', { class: 'label', ...tx('common.signOut') })),
    ),
  );
}

function refused() {
  return h(
    'main',
    { id: 'main', class: 'ops-main' },
    h('section', { class: 'card ops-refused', id: 'refused' }, h('h1', tx('admin.refused.title')), h('p', { class: 'lead', ...tx('admin.refused.body') }), h('a', { class: 'btn primary', href: '/', ...tx('admin.refused.home') })),
  );
}

function dashboard() {
  return h(
    'main',
    { id: 'main', class: 'ops-main' },
    h('div', { class: 'ops-title' }, h('h1', tx('admin.heading')), status),
    error,
    h(
      'section',
      { 'aria-labelledby': 'figures-title' },
      h('h2', { id: 'figures-title', class: 'visually-hidden', ...tx('admin.figures') }),
      h(
        'dl',
        { class: 'ops-figures' },
        FIGURES.map((k) => h('div', { class: 'figure' }, h('dt', tx(`admin.figure.${k}`)), figureEls[k], figureSubs[k])),
      ),
    ),
    h(
      'section',
      { class: 'panel', 'aria-labelledby': 'users-title' },
      h('h2', { id: 'users-title' }, h('span', tx('admin.users')), ' ', usersCount),
      h('p', tx('admin.users.lead')),
      h(
        'div',
        { class: 'ops-table-wrap' },
        h('table', { class: 'ops-table', id: 'users' }, h('thead', null, h('tr', null, h('th', tx('admin.users.user')), h('th', { class: 'num', ...tx('admin.users.connections') }), h('th', { class: 'actions' }, h('span', { class: 'visually-hidden', ...tx('admin.users.actions') })))), usersBody),
      ),
      usersNone,
    ),
  );
}

document.body.append(h('a', { class: 'skip-link', href: '#main', ...tx('common.skip') }), header(), isAdmin ? dashboard() : refused());

/** @type {Switchboard | null} */
let sb = null;
if (isAdmin) {
  sb = new Switchboard(location.origin, { getToken });
  window.switchboard = sb;
  sb.on('connected', () => {
    live = true;
    render();
  });
  sb.on('disconnected', () => {
    live = false;
    render();
  });
  sb.connect();
  const tick = async () => {
    try {
      const o = await sb.rpc('admin.overview', {}, { signal: AbortSignal.timeout(5000) });
      previous = last;
      last = o;
      error.textContent = '';
    } catch (err) {
      if (err && err.code === 103) error.textContent = t('admin.refused.body');
      else if (live) error.textContent = t('admin.failed', { message: err.message });
    }
    render();
    setTimeout(tick, EVERY);
  };
  tick();
  onLangChange(render);
  render();
}
