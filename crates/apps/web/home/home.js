// The home page: the apps as tiles with live figures (from the `apps:stats` channel,
// through the browser library as any page would, imported from beside this file: see
// crates/apps/src/pages.rs), the sign-in state, the language switch, the
// docs, and the first look for a developer: curl and Python for this very server.
import { Switchboard } from '../switchboard.js';
import { h, icon, ICONS, avatar, replace } from '../lib/dom.js';
import { t, tx, languageSwitch, onLangChange, apply } from '../lib/i18n.js';
import { number } from '../lib/format.js';
import { me, getToken, signOut } from '../lib/session.js';

/** The default place of the API key, relative to where `switchboard serve` runs. */
const DEFAULT_KEY_FILE = 'switchboard-data/api-key';

const state = {
  me: null,
  /** @type {{online: number | null, rooms: number | null, polls: number | null, hosts: number | null}} */
  stats: { online: null, rooms: null, polls: null, hosts: null },
  live: false,
  snippet: 'curl',
};

/** Reads the figures out of an `apps:stats` publication (or an rpc result). */
function takeStats(d) {
  if (!d || typeof d !== 'object') return;
  const pick = (...keys) => {
    for (const k of keys) if (typeof d[k] === 'number') return d[k];
    return undefined;
  };
  const online = pick('online', 'users_online', 'users');
  const rooms = pick('rooms');
  const polls = pick('polls', 'open_polls');
  const hosts = pick('hosts', 'hosts_reporting');
  if (online !== undefined) state.stats.online = online;
  if (rooms !== undefined) state.stats.rooms = rooms;
  if (polls !== undefined) state.stats.polls = polls;
  if (hosts !== undefined) state.stats.hosts = hosts;
  renderFigures();
}

const fig = (n) => (n === null ? '—' : number(n));

// ---- the page ----------------------------------------------------------------------

const figureOnline = h('dd', { id: 'figure-online' }, '—');
const figureRooms = h('dd', { id: 'figure-rooms' }, '—');
const liveState = h('p', { class: 'note', id: 'live-state', 'aria-live': 'polite' });
const who = h('div', { class: 'who' });
const chatFoot = h('span', { class: 'tile-foot' });
const snippetPre = h('pre', { class: 'code', id: 'snippet', tabindex: '0', role: 'tabpanel', 'aria-labelledby': 'tab-curl' });
const keyNote = h('p', { class: 'note' });
const tabs = {};

function renderFigures() {
  figureOnline.textContent = fig(state.stats.online);
  figureRooms.textContent = fig(state.stats.rooms);
  replace(
    chatFoot,
    h('span', { class: state.live ? 'live-dot' : 'live-dot off', 'aria-hidden': 'true' }),
    state.stats.online === null ? t('home.chat.foot.unknown') : t('home.chat.foot', { count: state.stats.online, rooms: fig(state.stats.rooms) }),
  );
  liveState.textContent = state.live ? t('home.live') : t('home.notLive');
}

function renderWho() {
  const user = state.me && state.me.user;
  if (user) {
    replace(
      who,
      avatar(user.id, user.name, 'avatar small'),
      h('span', { class: 'hide-narrow' }, t('home.signedInAs', { name: user.name })),
      user.guest ? h('span', { class: 'tag', ...tx('common.guest') }) : null,
      h('button', { class: 'btn small', type: 'button', on: { click: () => signOut('/') } }, icon(ICONS.out), h('span', { class: 'label', ...tx('common.signOut') })),
    );
  } else {
    replace(who, h('a', { class: 'btn small primary', href: '/signin?next=%2F', ...tx('common.signIn') }));
  }
}

function origin() {
  return location.origin;
}

function keyFile() {
  return (state.me && state.me.api_key_file) || DEFAULT_KEY_FILE;
}

function snippet(kind) {
  const o = origin();
  const file = keyFile();
  if (kind === 'python') {
    return [
      'import requests  # pip install requests',
      '',
      `SB = "${o}"`,
      `KEY = open("${file}").read().strip()`,
      '',
      `# ${t('home.dev.py.publish')}`,
      'requests.post(f"{SB}/api/publish", headers={"X-API-Key": KEY},',
      '              json={"channel": "room:lobby",',
      '                    "data": {"type": "message", "text": "Deploy finished"}})',
      '',
      `# ${t('home.dev.py.send')}`,
      'requests.post(f"{SB}/api/send", headers={"X-API-Key": KEY},',
      '              json={"user": "alice", "data": {"text": "Your report is ready"}})',
      '',
      `# ${t('home.dev.py.presence')}`,
      'r = requests.post(f"{SB}/api/presence", headers={"X-API-Key": KEY},',
      '                  json={"channel": "room:lobby"})',
      'print(sorted(r.json()["presence"]))',
    ].join('\n');
  }
  return [
    `SB=${o}`,
    `KEY=$(cat ${file})`,
    '',
    `# ${t('home.dev.curl.publish')}`,
    'curl -s -X POST $SB/api/publish -H "X-API-Key: $KEY" \\',
    `     -d '{"channel":"room:lobby","data":{"type":"message","text":"Deploy finished"}}'`,
    '',
    `# ${t('home.dev.curl.presence')}`,
    'curl -s -X POST $SB/api/presence -H "X-API-Key: $KEY" \\',
    `     -d '{"channel":"room:lobby"}'`,
  ].join('\n');
}

function renderSnippet() {
  snippetPre.textContent = snippet(state.snippet);
  snippetPre.setAttribute('aria-labelledby', `tab-${state.snippet}`);
  for (const [k, b] of Object.entries(tabs)) {
    b.setAttribute('aria-selected', String(k === state.snippet));
    b.setAttribute('tabindex', k === state.snippet ? '0' : '-1');
  }
  replace(keyNote, t('home.dev.key.before'), h('code', null, keyFile()), t('home.dev.key.after'));
}

function tabButton(kind, label) {
  const b = h(
    'button',
    {
      type: 'button',
      role: 'tab',
      id: `tab-${kind}`,
      'aria-controls': 'snippet',
      on: {
        click: () => {
          state.snippet = kind;
          renderSnippet();
        },
        keydown: (e) => {
          if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
          state.snippet = state.snippet === 'curl' ? 'python' : 'curl';
          renderSnippet();
          tabs[state.snippet].focus();
        },
      },
    },
    label,
  );
  tabs[kind] = b;
  return b;
}

function tile({ key, href, iconPath, foot, coming }) {
  const inner = [
    h('span', { class: 'tile-icon' }, icon(iconPath)),
    h('h2', tx(`home.tile.${key}`)),
    h('p', tx(`home.tile.${key}.desc`)),
    coming ? h('span', { class: 'tag soon', ...tx('home.coming') }) : null,
    foot ?? h('span', { class: 'tile-foot', ...tx(coming ? 'home.coming.foot' : 'home.open') }),
  ];
  return h('li', null, coming ? h('div', { class: 'tile coming', 'aria-disabled': 'true' }, inner) : h('a', { class: 'tile', href }, inner));
}

function page() {
  const header = h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark' }, icon(ICONS.chat)), 'Switchboard'),
    h('span', { class: 'spacer' }),
    languageSwitch(),
    who,
  );
  const main = h(
    'main',
    { id: 'main' },
    h(
      'section',
      { class: 'hero', 'aria-labelledby': 'hero-title' },
      h('div', null, h('h1', { id: 'hero-title', ...tx('home.heading') }), h('p', tx('home.lead'))),
      h(
        'dl',
        { class: 'figures', 'aria-label': t('home.figures'), 'data-i18n-attr': 'aria-label:home.figures' },
        h('div', { class: 'figure' }, h('dt', tx('home.figure.online')), figureOnline),
        h('div', { class: 'figure' }, h('dt', tx('home.figure.rooms')), figureRooms),
      ),
    ),
    h(
      'section',
      { 'aria-labelledby': 'apps-title' },
      h('h2', { id: 'apps-title', class: 'visually-hidden', ...tx('home.apps') }),
      h(
        'ul',
        { class: 'tiles' },
        tile({ key: 'chat', href: '/chat', iconPath: ICONS.chat, foot: chatFoot }),
        tile({ key: 'vote', href: '/vote', iconPath: ICONS.vote }),
        tile({ key: 'console', href: '/console', iconPath: ICONS.console }),
        tile({ key: 'logs', href: '/logs', iconPath: ICONS.logs }),
        tile({ key: 'monitor', href: '/monitor', iconPath: ICONS.monitor }),
      ),
    ),
    h(
      'div',
      { class: 'panels' },
      h(
        'section',
        { class: 'panel', 'aria-labelledby': 'dev-title' },
        h('h2', { id: 'dev-title', ...tx('home.dev.title') }),
        h('p', tx('home.dev.lead')),
        h('div', { class: 'tabs', role: 'tablist', 'aria-label': t('home.dev.tabs'), 'data-i18n-attr': 'aria-label:home.dev.tabs' }, tabButton('curl', 'curl'), tabButton('python', 'Python')),
        snippetPre,
        keyNote,
      ),
      h(
        'section',
        { class: 'panel', 'aria-labelledby': 'docs-title' },
        h('h2', { id: 'docs-title', ...tx('home.docs.title') }),
        h(
          'ul',
          { class: 'links' },
          h('li', null, h('a', { href: '/switchboard.js' }, '/switchboard.js'), h('span', { class: 'sub', ...tx('home.docs.js') })),
          h('li', null, h('a', { href: '/switchboard.d.ts' }, '/switchboard.d.ts'), h('span', { class: 'sub', ...tx('home.docs.dts') })),
          h('li', null, h('code', null, 'docs/client.md'), h('span', { class: 'sub', ...tx('home.docs.client') })),
          h('li', null, h('code', null, 'docs/protocol.md'), h('span', { class: 'sub', ...tx('home.docs.protocol') })),
          h('li', null, h('code', null, 'docs/api.md'), h('span', { class: 'sub', ...tx('home.docs.api') })),
          h('li', null, h('a', { href: '/metrics' }, '/metrics'), h('span', { class: 'sub', ...tx('home.docs.metrics') })),
        ),
        liveState,
      ),
    ),
    h('p', { class: 'footer', ...tx('home.footer') }),
  );
  document.body.append(h('a', { class: 'skip-link', href: '#main', ...tx('common.skip') }), header, main);
}

// ---- live figures ------------------------------------------------------------------

function connect() {
  const signedIn = !!(state.me && state.me.user);
  // Signed in: the session's token. Otherwise anonymously, where the server allows it;
  // the figures then stay "—" and the page says it is not live.
  const sb = new Switchboard(location.origin, signedIn ? { getToken } : {});
  sb.subscribe('apps:stats', {
    onPublication: (p) => takeStats(p.data),
    onSubscribed: async () => {
      try {
        const h = await sb.history('apps:stats', { limit: 1 });
        const last = h.publications.at(-1);
        if (last) takeStats(last.data);
      } catch {
        // no history in the namespace: the next publication brings the figures
      }
    },
    onError: () => {},
  });
  sb.on('connected', async () => {
    state.live = true;
    renderFigures();
    if (signedIn) {
      try {
        const r = await sb.rpc('chat.rooms', {});
        if (Array.isArray(r.rooms)) {
          const online = r.rooms.reduce((a, x) => a + (x.online || 0), 0);
          if (state.stats.rooms === null) state.stats.rooms = r.rooms.length;
          if (state.stats.online === null) state.stats.online = online;
          renderFigures();
        }
      } catch {
        // the figures come from apps:stats anyway
      }
    }
  });
  sb.on('disconnected', () => {
    state.live = false;
    renderFigures();
  });
  sb.connect();
}

page();
onLangChange(() => {
  renderFigures();
  renderWho();
  renderSnippet();
});
renderFigures();
renderSnippet();
state.me = await me();
renderWho();
renderSnippet();
apply();
connect();
