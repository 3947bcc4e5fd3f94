// /logs: the hosts' logs, live. The hosts and their logs come from the registry
// (`monitor.hosts`, crates/apps/src/monitor); each chosen log is channel `logs:HOST:NAME`,
// whose publications are batches `{"lines": [{"time", "text"}…], "dropped"?, "event"?}`
// (see the issue 14 contract). The page reads them through the browser library as any
// page would: the recent batches from history first, then live; older ones with "load
// older" (history `before`).
//
// What keeps it fast and bounded: lines arrive into a queue and reach the DOM once per
// animation frame; each list keeps at most MAX_LINES lines (the oldest leave while
// following); paused, lines wait in a buffer of at most PAUSE_MAX. Merged lists are kept
// in time order by inserting each line where its time belongs (lines of one log come in
// order, so almost every insert is an append).
//
// Text is data: a line is parsed for ANSI colours (lib/ansi.js) and built from text nodes
// and spans; nothing from a line is ever parsed as HTML.
import { Switchboard } from '../switchboard.js';
import { h, ICONS, replace } from '../lib/dom.js';
import { t, tx, lang, onLangChange } from '../lib/i18n.js';
import { dateTime, number } from '../lib/format.js';
import { me, getToken } from '../lib/session.js';
import { parse, styleProps } from '../lib/ansi.js';
import { opsHeader, refusedMain } from '../lib/opsbar.js';

/** What a log can be, in the agent's `hello` (docs/agent.md). */
const KINDS = ['file', 'command'];

/** Lines each list keeps while following; paging back may double it, never more. */
const MAX_LINES = 5000;
/** Lines held while paused; past it the oldest held are dropped (and counted). */
const PAUSE_MAX = 10000;
/** Batches read per log on opening it and per "load older". */
const PAGE = 20;
/** How often the hosts' list is read again (new hosts, new logs). */
const HOSTS_EVERY = 10000;
/** Within this many pixels of the bottom counts as "at the bottom" (following). */
const BOTTOM_SLACK = 24;

const info = await me();
if (!info.user) {
  location.replace(`/signin?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`);
  throw new Error('not signed in');
}
const ME = info.user;
const isAdmin = Array.isArray(ME.roles) && ME.roles.includes('admin');

// ---- state ------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const state = {
  /** @type {any[]} the registry's hosts */
  hosts: [],
  /** Chosen logs, 'HOST:NAME', in the order chosen. */
  chosen: (params.get('s') || '').split(',').filter((s) => /^[A-Za-z0-9._-]+:[A-Za-z0-9._-]+$/.test(s)),
  layout: params.get('layout') === 'split' ? 'split' : 'merged',
  filter: params.get('q') || '',
  regex: params.get('re') === '1',
  paused: false,
  follow: true,
  live: false,
  /** Lines that came while the tab was hidden (the title shows them). */
  unseen: 0,
  /** Lines held while paused, and how many of those were dropped. */
  held: [],
  heldDropped: 0,
  /** Lines received, not yet on the page (next frame). */
  incoming: [],
  /** The line a link points at: 'HOST:NAME:OFFSET:I'. */
  target: null,
};

/**
 * @typedef {{key: string, src: string, host: string, name: string, time: number, offset: number, i: number,
 *   plain: string, segments: any[], level: string, note?: string, el?: HTMLElement}} Line
 */

/** Per chosen log: its subscription, the oldest offset read, whether history ends there. */
const sources = new Map();
/** Keys of the lines on the page, so history and live never show one twice. */
const shown = new Set();
/** The lists on the page: 'all' (merged) or a log's 'HOST:NAME' (side by side). */
const lists = new Map();

// ---- text -------------------------------------------------------------------------

const LEVELS = [
  ['crit', /\b(FATAL|PANIC|CRIT(ICAL)?|EMERG(ENCY)?|ALERT)\b/i],
  ['error', /\b(ERROR|ERR|FAIL(ED|URE)?|EXCEPTION)\b/i],
  ['warn', /\bWARN(ING)?\b/i],
  ['debug', /\b(DEBUG|TRACE)\b/i],
];

function levelOf(plain) {
  const head = plain.slice(0, 200);
  for (const [level, re] of LEVELS) if (re.test(head)) return level;
  return 'info';
}

let clockFmt = null;
let clockLang = null;
function clock(ms) {
  if (!clockFmt || clockLang !== lang()) {
    clockLang = lang();
    clockFmt = new Intl.DateTimeFormat(clockLang, { hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3, hour12: false });
  }
  return clockFmt.format(new Date(ms));
}

/** The filter as a global, case-insensitive RegExp; null for none; 'bad' when invalid. */
function matcher() {
  if (!state.filter) return null;
  try {
    return new RegExp(state.regex ? state.filter : state.filter.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi');
  } catch {
    return 'bad';
  }
}
let re = matcher();

/** The ranges of `plain` the filter matches ([] when none, null when no filter). */
function ranges(plain) {
  if (!re || re === 'bad') return null;
  const out = [];
  re.lastIndex = 0;
  let m;
  while ((m = re.exec(plain)) !== null) {
    if (m[0] === '') {
      re.lastIndex++;
      continue;
    }
    out.push([m.index, m.index + m[0].length]);
    if (out.length > 100) break;
  }
  return out;
}

/** The line's text: its ANSI segments as spans, the filter's matches as <mark>. */
function textNodes(line, marks) {
  const out = [];
  let at = 0;
  let r = 0;
  for (const seg of line.segments) {
    const { cls, vars } = styleProps(seg.style);
    const parts = [];
    let from = 0;
    const text = seg.text;
    while (from < text.length) {
      const abs = at + from;
      while (marks && r < marks.length && marks[r][1] <= abs) r++;
      const mark = marks && r < marks.length ? marks[r] : null;
      if (mark && mark[0] <= abs) {
        const end = Math.min(text.length, mark[1] - at);
        parts.push(h('mark', null, text.slice(from, end)));
        from = end;
      } else {
        const end = mark ? Math.min(text.length, mark[0] - at) : text.length;
        parts.push(text.slice(from, end));
        from = end;
      }
    }
    at += text.length;
    out.push(cls || Object.keys(vars).length ? h('span', { class: cls || null, vars }, parts) : parts);
  }
  return out;
}

function lineLink(line) {
  return `#line=${line.src}:${line.offset}:${line.i}`;
}

/** Builds (or rebuilds, after a filter change) a line's element. */
function render(line) {
  const marks = ranges(line.plain);
  const el = h(
    'div',
    { class: `log-line lvl-${line.level}${line.note ? ' log-note' : ''}`, 'data-src': line.src, 'data-key': line.key },
    h('a', { class: 'log-time', href: lineLink(line), title: dateTime(line.time) }, clock(line.time)),
    h('span', { class: 'log-src' }, `${line.host} · ${line.name}`),
    h('span', { class: 'log-text' }, line.note ? line.note : textNodes(line, marks)),
  );
  el.hidden = marks !== null && marks.length === 0;
  if (state.target === `${line.src}:${line.offset}:${line.i}`) el.classList.add('is-target');
  line.el = el;
  return el;
}

// ---- the page ---------------------------------------------------------------------

// Not a live region: it changes with every frame of lines.
const status = h('p', { class: 'note', id: 'logs-status' });
const error = h('p', { class: 'error', role: 'alert' });
const sourcesBox = h('div', { class: 'logs-sources', id: 'logs-sources' });
const view = h('div', { class: 'logs-view', id: 'logs-view' });
const filterInput = h('input', { id: 'logs-filter', type: 'search', class: 'input', value: state.filter, autocomplete: 'off', spellcheck: 'false', ...tx(null, { placeholder: 'logs.filter.placeholder' }) });
const regexBox = h('input', { id: 'logs-regex', type: 'checkbox', checked: state.regex });
const layoutSelect = h(
  'select',
  { id: 'logs-layout' },
  h('option', { value: 'merged', selected: state.layout === 'merged', ...tx('logs.layout.merged') }),
  h('option', { value: 'split', selected: state.layout === 'split', ...tx('logs.layout.split') }),
);
const pauseButton = h('button', { class: 'btn small', type: 'button', id: 'logs-pause' });
const heldButton = h('button', { class: 'btn small primary', type: 'button', id: 'logs-held', hidden: true });
const followButton = h('button', { class: 'btn small ghost', type: 'button', id: 'logs-follow', hidden: true, ...tx('logs.follow') });
const olderButton = h('button', { class: 'btn small ghost', type: 'button', id: 'logs-older', ...tx('logs.older') });
const filterError = h('span', { class: 'error small', id: 'logs-filter-error', role: 'alert' });

function toolbar() {
  return h(
    'div',
    { class: 'logs-toolbar', role: 'group', ...tx(null, { 'aria-label': 'logs.toolbar' }) },
    h('label', { class: 'logs-filter' }, h('span', { class: 'visually-hidden', ...tx('logs.filter') }), filterInput),
    h('label', { class: 'logs-check' }, regexBox, h('span', tx('logs.regex'))),
    h('label', { class: 'logs-layout' }, h('span', tx('logs.layout')), layoutSelect),
    pauseButton,
    heldButton,
    followButton,
    filterError,
  );
}

function main() {
  return h(
    'main',
    { id: 'main', class: 'ops-main logs-main' },
    h('div', { class: 'ops-title' }, h('h1', tx('logs.heading')), status),
    error,
    h(
      'div',
      { class: 'logs-work' },
      h('section', { class: 'panel logs-side', 'aria-labelledby': 'logs-sources-title' }, h('h2', { id: 'logs-sources-title', ...tx('logs.sources') }), sourcesBox),
      h('section', { class: 'logs-pane', 'aria-labelledby': 'logs-lines-title' }, h('h2', { id: 'logs-lines-title', class: 'visually-hidden', ...tx('logs.lines') }), toolbar(), view),
    ),
  );
}

document.body.append(
  h('a', { class: 'skip-link', href: '#main', ...tx('common.skip') }),
  opsHeader({ me: ME, here: '/logs', crumb: 'logs.heading', iconPath: ICONS.logs, admin: isAdmin }),
  isAdmin ? main() : refusedMain(),
);

// A non-administrator has the refusal; nothing below is for them (and the server would
// refuse it all anyway).
if (!isAdmin) await new Promise(() => {});

// ---- the sources ------------------------------------------------------------------

/** The logs a host announced, as 'HOST:NAME' with its words. */
function logsOf(host) {
  return (host.logs || []).map((l) => ({ src: `${host.host}:${l.name}`, host: host.host, name: l.name, kind: l.kind }));
}

function renderSources() {
  const hosts = state.hosts.filter((x) => !x.host.startsWith('@'));
  const known = new Set(hosts.flatMap((x) => logsOf(x).map((l) => l.src)));
  // A log chosen by a link before its host announced it still shows, under its host.
  const extra = state.chosen.filter((s) => !known.has(s));
  if (!hosts.length && !extra.length) {
    replace(sourcesBox, h('p', { class: 'ops-empty', ...tx('logs.noHosts') }), h('a', { href: '/monitor', ...tx('logs.addHost') }));
    return;
  }
  const groups = hosts.map((x) => [x.host, logsOf(x), x.stale]);
  for (const s of extra) {
    const [host, name] = s.split(':');
    let g = groups.find(([gh]) => gh === host);
    if (!g) groups.push((g = [host, [], false]));
    g[1].push({ src: s, host, name });
  }
  replace(
    sourcesBox,
    groups.map(([host, logs, stale]) =>
      h(
        'fieldset',
        { class: 'logs-host' },
        h('legend', null, host, stale ? h('span', { class: 'tag', ...tx('logs.stale') }) : null),
        logs.length
          ? logs.map((l) =>
              h(
                'label',
                { class: 'logs-check' },
                h('input', {
                  type: 'checkbox',
                  checked: state.chosen.includes(l.src),
                  'aria-label': t('logs.source', { host: l.host, name: l.name }),
                  'data-src': l.src,
                  on: { change: (e) => choose(l.src, /** @type {HTMLInputElement} */ (e.target).checked) },
                }),
                h('span', null, l.name),
                // The kinds the agent announces have words of their own; another is shown as sent.
                KINDS.includes(l.kind) ? h('span', { class: 'tag', ...tx(`logs.kind.${l.kind}`) }) : l.kind ? h('span', { class: 'tag' }, l.kind) : null,
              ),
            )
          : h('p', { class: 'ops-empty', ...tx('logs.noLogs') }),
      ),
    ),
  );
}

function saveUrl() {
  const p = new URLSearchParams();
  if (state.chosen.length) p.set('s', state.chosen.join(','));
  if (state.layout === 'split') p.set('layout', 'split');
  if (state.filter) p.set('q', state.filter);
  if (state.regex) p.set('re', '1');
  const q = p.toString();
  history.replaceState(null, '', `${location.pathname}${q ? `?${q}` : ''}${location.hash}`);
}

function choose(src, on) {
  if (on && !state.chosen.includes(src)) {
    state.chosen.push(src);
    open(src);
  } else if (!on && state.chosen.includes(src)) {
    state.chosen = state.chosen.filter((s) => s !== src);
    close(src);
  }
  saveUrl();
  relayout();
}

// ---- lines in -----------------------------------------------------------------------

/** Lines of a publication of `src` (a batch), as Line objects. */
function linesOf(src, pub) {
  const [host, name] = src.split(':');
  const d = pub.data;
  if (!d || typeof d !== 'object') return [];
  const out = [];
  const lines = Array.isArray(d.lines) ? d.lines : [];
  lines.forEach((l, i) => {
    if (!l || typeof l.text !== 'string') return;
    const time = Number.isFinite(l.time) ? l.time : pub.time || Date.now();
    const { plain, segments } = parse(l.text);
    out.push({ key: `${src}|${pub.offset}|${i}`, src, host, name, time, offset: pub.offset, i, plain, segments, level: levelOf(plain) });
  });
  // Dropped lines and file events are shown as notes where they happened.
  const notes = [];
  if (Number(d.dropped) > 0) notes.push(t('logs.note.dropped', { count: Number(d.dropped) }));
  if (typeof d.event === 'string' && ['rotated', 'truncated', 'started'].includes(d.event)) notes.push(t(`logs.note.${d.event}`));
  notes.forEach((note, n) => {
    const time = out.length ? out[0].time : pub.time || Date.now();
    out.unshift({ key: `${src}|${pub.offset}|n${n}`, src, host, name, time, offset: pub.offset, i: -1 - n, plain: note, segments: [], level: 'note', note });
  });
  return out;
}

function open(src) {
  if (sources.has(src)) return;
  const s = { oldest: Infinity, complete: false, sub: null };
  sources.set(src, s);
  const channel = `logs:${src}`;
  s.sub = sb.subscribe(channel, {
    onPublication: (pub) => {
      if (!sources.has(src)) return;
      if (pub.offset && pub.offset < s.oldest) s.oldest = pub.offset;
      arrive(linesOf(src, pub));
    },
    onError: (err) => {
      error.textContent = t('logs.failed', { message: `${channel}: ${err.message}` });
    },
  });
  // The recent lines first; live ones may come before them, the order is by time.
  sb.history(channel, { limit: PAGE })
    .then((r) => {
      if (!sources.has(src)) return;
      const pubs = r.publications || [];
      if (pubs.length) s.oldest = Math.min(s.oldest, pubs[0].offset);
      if (pubs.length < PAGE) s.complete = true;
      place(pubs.flatMap((p) => linesOf(src, p)), false);
      aim();
    })
    .catch((err) => (error.textContent = t('logs.failed', { message: err.message })));
}

function close(src) {
  const s = sources.get(src);
  if (!s) return;
  sources.delete(src);
  s.sub?.unsubscribe().catch(() => {});
  state.held = state.held.filter((l) => l.src !== src);
  state.incoming = state.incoming.filter((l) => l.src !== src);
  for (const list of lists.values()) {
    list.entries = list.entries.filter((l) => {
      if (l.src !== src) return true;
      shown.delete(l.key);
      l.el?.remove();
      return false;
    });
  }
}

/** Live lines: held while paused, else on the page at the next frame. */
function arrive(lines) {
  if (!lines.length) return;
  if (document.hidden) {
    state.unseen += lines.length;
    renderTitle();
  }
  if (state.paused) {
    state.held.push(...lines);
    if (state.held.length > PAUSE_MAX) {
      const over = state.held.length - PAUSE_MAX;
      state.held.splice(0, over);
      state.heldDropped += over;
    }
    renderControls();
    return;
  }
  state.incoming.push(...lines);
  schedule();
}

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  // A hidden tab gets no animation frames: a timer keeps the queue short there.
  const run = () => {
    scheduled = false;
    const lines = state.incoming;
    state.incoming = [];
    place(lines, true);
  };
  if (document.hidden) setTimeout(run, 500);
  else requestAnimationFrame(run);
}

/** The list a line goes to. */
function listFor(line) {
  return lists.get(state.layout === 'split' ? line.src : 'all');
}

/** Puts `lines` on the page in time order; `live`: new ones (trim the oldest, follow). */
function place(lines, live) {
  const touched = new Set();
  const scrollers = new Map();
  for (const line of lines) {
    if (shown.has(line.key) || !sources.has(line.src)) continue;
    const list = listFor(line);
    if (!list) continue;
    if (!live && !scrollers.has(list)) scrollers.set(list, list.scroller.scrollHeight - list.scroller.scrollTop);
    shown.add(line.key);
    insert(list, line);
    touched.add(list);
  }
  for (const list of touched) {
    trim(list, live);
    list.empty.hidden = list.entries.length > 0;
  }
  if (state.follow) for (const list of touched) list.scroller.scrollTop = list.scroller.scrollHeight;
  else if (!live) {
    // Older lines above: keep what the reader looks at where it was.
    for (const [list, fromBottom] of scrollers) list.scroller.scrollTop = list.scroller.scrollHeight - fromBottom;
  }
  renderStatus();
}

/** Inserts `line` where its time belongs (after lines of the same time already there). */
function insert(list, line) {
  const e = list.entries;
  const el = render(line);
  const before = (a, b) => a.time < b.time || (a.time === b.time && a.src === b.src && (a.offset < b.offset || (a.offset === b.offset && a.i < b.i)));
  if (!e.length || !before(line, e[e.length - 1])) {
    e.push(line);
    list.el.append(el);
    return;
  }
  let lo = 0;
  let hi = e.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (before(line, e[mid])) hi = mid;
    else lo = mid + 1;
  }
  list.el.insertBefore(el, e[lo].el ?? null);
  e.splice(lo, 0, line);
}

/** Bounds a list: while following, the oldest go past MAX_LINES; never past twice that. */
function trim(list, live) {
  const cap = live && state.follow ? MAX_LINES : 2 * MAX_LINES;
  const e = list.entries;
  if (e.length <= cap) return;
  const gone = live || state.follow ? e.splice(0, e.length - cap) : e.splice(cap);
  for (const l of gone) {
    shown.delete(l.key);
    l.el?.remove();
    // The log's history reaches further back again.
    const s = sources.get(l.src);
    if (s && live) {
      s.complete = false;
      s.oldest = Math.max(s.oldest === Infinity ? 0 : s.oldest, l.offset + 1);
    }
  }
}

/** Lists for the layout; every line on the page moves to its new list. */
function relayout() {
  const all = [...lists.values()].flatMap((l) => l.entries);
  lists.clear();
  shown.clear();
  const keys = state.layout === 'split' ? state.chosen : ['all'];
  const columns = keys.map((key) => {
    const el = h('div', { class: 'log-lines' });
    const empty = h('p', { class: 'ops-empty logs-empty', ...tx(state.chosen.length ? 'logs.waiting' : 'logs.pick') });
    const heading = state.layout === 'split' ? h('h3', { class: 'log-col-title' }, key.replace(':', ' · ')) : null;
    const scroller = h('div', { class: 'log-scroll', role: 'region', tabindex: '0', 'aria-label': state.layout === 'split' ? key.replace(':', ' · ') : t('logs.lines') }, el);
    scroller.addEventListener('scroll', () => onScroll(scroller), { passive: true });
    const list = { el, scroller, empty, entries: [] };
    lists.set(key, list);
    return h('div', { class: 'log-col' }, heading, empty, scroller);
  });
  view.classList.toggle('is-split', state.layout === 'split');
  replace(view, h('div', { class: 'log-older-row' }, olderButton), h('div', { class: 'log-cols' }, columns));
  place(all.sort((a, b) => a.time - b.time), false);
  for (const list of lists.values()) list.empty.hidden = list.entries.length > 0;
  if (state.follow) for (const list of lists.values()) list.scroller.scrollTop = list.scroller.scrollHeight;
  renderControls();
}

function onScroll(scroller) {
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= BOTTOM_SLACK;
  if (atBottom !== state.follow) {
    state.follow = atBottom;
    renderControls();
  }
}

function jumpToEnd() {
  state.follow = true;
  for (const list of lists.values()) list.scroller.scrollTop = list.scroller.scrollHeight;
  renderControls();
}

// ---- controls -----------------------------------------------------------------------

function renderTitle() {
  const base = t('logs.title');
  document.title = state.unseen ? `(${state.unseen > 999 ? '999+' : state.unseen}) ${base}` : base;
}

function renderStatus() {
  const lines = [...lists.values()].reduce((n, l) => n + l.entries.length, 0);
  const words = !state.live ? t('logs.connecting') : state.paused ? t('logs.paused') : t('logs.live');
  status.textContent = `${words} ${t('logs.count', { count: lines, shown: number(lines) })}`;
}

function renderControls() {
  replace(pauseButton, state.paused ? t('logs.resume') : t('logs.pause'));
  pauseButton.setAttribute('aria-pressed', String(state.paused));
  heldButton.hidden = !state.paused || state.held.length === 0;
  heldButton.textContent = t('logs.newLines', { count: state.held.length, n: number(state.held.length) }) + (state.heldDropped ? ` ${t('logs.heldDropped', { count: state.heldDropped })}` : '');
  followButton.hidden = state.follow || state.paused;
  const open = [...sources.values()];
  const done = open.length > 0 && open.every((s) => s.complete);
  olderButton.disabled = !open.length || done;
  olderButton.textContent = done ? t('logs.older.none') : t('logs.older');
  filterError.textContent = re === 'bad' ? t('logs.filter.bad') : '';
  renderStatus();
}

function pause() {
  state.paused = true;
  renderControls();
}

function resume() {
  state.paused = false;
  const held = state.held;
  state.held = [];
  state.heldDropped = 0;
  state.follow = true;
  place(held, true);
  jumpToEnd();
}

async function older() {
  olderButton.disabled = true;
  state.follow = false;
  const work = [...sources.entries()]
    .filter(([, s]) => !s.complete && s.oldest > 1)
    .map(async ([src, s]) => {
      const before = s.oldest === Infinity ? undefined : s.oldest;
      const r = await sb.history(`logs:${src}`, before === undefined ? { limit: PAGE } : { limit: PAGE, before });
      const pubs = r.publications || [];
      if (pubs.length) s.oldest = Math.min(s.oldest, pubs[0].offset);
      if (pubs.length < PAGE || s.oldest <= 1) s.complete = true;
      return pubs.flatMap((p) => linesOf(src, p));
    });
  try {
    const lines = (await Promise.all(work)).flat();
    place(lines, false);
  } catch (err) {
    error.textContent = t('logs.failed', { message: err.message });
  }
  renderControls();
}

function refilter() {
  re = matcher();
  for (const list of lists.values()) {
    for (const line of list.entries) {
      const old = line.el;
      const el = render(line);
      old?.replaceWith(el);
    }
  }
  saveUrl();
  renderControls();
}

let filterTimer = null;
filterInput.addEventListener('input', () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    state.filter = filterInput.value;
    refilter();
  }, 150);
});
regexBox.addEventListener('change', () => {
  state.regex = regexBox.checked;
  refilter();
});
layoutSelect.addEventListener('change', () => {
  state.layout = layoutSelect.value === 'split' ? 'split' : 'merged';
  saveUrl();
  relayout();
});
pauseButton.addEventListener('click', () => (state.paused ? resume() : pause()));
heldButton.addEventListener('click', resume);
followButton.addEventListener('click', jumpToEnd);
olderButton.addEventListener('click', older);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) {
    state.unseen = 0;
    renderTitle();
    if (state.incoming.length) schedule();
  }
});

// ---- a link to a line ---------------------------------------------------------------

/** Reads `#line=HOST:NAME:OFFSET:I`, opens that log, brings the line into view. */
async function fromHash() {
  const m = /^#line=([A-Za-z0-9._-]+):([A-Za-z0-9._-]+):(\d+):(-?\d+)$/.exec(location.hash);
  if (!m) return;
  const src = `${m[1]}:${m[2]}`;
  state.target = `${src}:${m[3]}:${m[4]}`;
  for (const el of view.querySelectorAll('.is-target')) el.classList.remove('is-target');
  if (!state.chosen.includes(src)) {
    state.chosen.push(src);
    saveUrl();
    renderSources();
    open(src);
    relayout();
  }
  const offset = Number(m[3]);
  const s = sources.get(src);
  if (s && offset < s.oldest) {
    try {
      const r = await sb.history(`logs:${src}`, { limit: PAGE, before: offset + 1 });
      const pubs = r.publications || [];
      if (pubs.length) s.oldest = Math.min(s.oldest, pubs[0].offset);
      state.follow = false;
      place(pubs.flatMap((p) => linesOf(src, p)), false);
    } catch (err) {
      error.textContent = t('logs.failed', { message: err.message });
    }
  }
  aim();
}

/** Scrolls to the linked line once it is on the page. */
function aim() {
  if (!state.target) return;
  const [host, name, offset, i] = state.target.split(':');
  const line = view.querySelector(`.log-line[data-key="${CSS.escape(`${host}:${name}|${offset}|${i}`)}"]`);
  if (!line) return;
  line.classList.add('is-target');
  state.follow = false;
  line.scrollIntoView({ block: 'center' });
  renderControls();
}
window.addEventListener('hashchange', fromHash);

// ---- the connection -----------------------------------------------------------------

const sb = new Switchboard(location.origin, { getToken });
window.switchboard = sb;
sb.on('connected', () => {
  state.live = true;
  renderStatus();
});
sb.on('disconnected', () => {
  state.live = false;
  renderStatus();
});
sb.connect();

async function readHosts() {
  try {
    const r = await sb.rpc('monitor.hosts', {}, { signal: AbortSignal.timeout(10000) });
    state.hosts = r.hosts || [];
    error.textContent = '';
    renderSources();
  } catch (err) {
    if (err && err.code === 103) error.textContent = t('admin.refused.body');
    else error.textContent = t('logs.failed', { message: err.message });
  }
}

renderSources();
relayout();
for (const src of state.chosen) open(src);
renderControls();
readHosts().then(fromHash);
setInterval(readHosts, HOSTS_EVERY);
onLangChange(() => {
  renderSources();
  for (const list of lists.values()) for (const line of list.entries) line.el?.replaceWith(render(line));
  renderControls();
  renderTitle();
});
