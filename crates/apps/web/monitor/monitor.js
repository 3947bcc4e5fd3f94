// /monitor: a card per host with live sparklines and current values, coloured by the
// thresholds of `[apps.monitor]`, stale marking, the event feed; `/monitor?host=NAME`: one
// host's larger charts of the last 15 minutes (from history) and its logs.
//
// The hosts come from the registry (`monitor.hosts`, read again every few seconds for new
// ones); each host's figures from its channel `metrics:HOST` (agents' samples, the hub's
// own as `@hub`), subscribed through the browser library as any page would; the events
// from `metrics:@events`. Subscribing is what tells an agent someone is watching (it then
// reports every second).
//
// What keeps a tab open for a day bounded and 100 hosts at 1 s smooth: every series is a
// ring buffer (lib/ring.js) of a fixed number of points, the event feed keeps its newest
// FEED_MAX, and publications only mark a card dirty: the cards are drawn once per
// animation frame, only the dirty ones.
import { Switchboard } from '../switchboard.js';
import { h, ICONS, replace } from '../lib/dom.js';
import { t, tx, onLangChange } from '../lib/i18n.js';
import { number, relative, time as clockTime, dateTime } from '../lib/format.js';
import { me, getToken } from '../lib/session.js';
import { timeChart } from '../lib/chart.js';
import { Ring } from '../lib/ring.js';
import { parse } from '../lib/ansi.js';
import { opsHeader, refusedMain } from '../lib/opsbar.js';

/** The sparklines' window, and the points each keeps (1 s samples, with room). */
const SPARK_WINDOW = 60000;
const SPARK_POINTS = 90;
/** Samples read from history per host when the page opens (for the sparklines). */
const SPARK_HISTORY = 60;
/** The host page's window and its points (history keeps 1000 samples of a channel). */
const HOST_WINDOW = 15 * 60000;
const HOST_POINTS = 1000;
/** Events kept in the feed. */
const FEED_MAX = 100;
/** How often the registry is read again (new hosts, the server's stale marks). */
const HOSTS_EVERY = 5000;

const info = await me();
if (!info.user) {
  location.replace(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`);
  throw new Error('not signed in');
}
const ME = info.user;
const isAdmin = Array.isArray(ME.roles) && ME.roles.includes('admin');
const ONE = new URLSearchParams(location.search).get('host');
// `@hub` is the server; in a group of nodes each node is `@hub-NODE`.
const HOST_RE = /^(@hub(-[0-9a-f]{1,32})?|[A-Za-z0-9._-]{1,64})$/;
const isHub = (name) => name === '@hub' || name.startsWith('@hub-');
const only = ONE && HOST_RE.test(ONE) ? ONE : null;

// ---- figures ------------------------------------------------------------------------

/** Bytes per second, in SI units ("1.2 MB/s"). */
function rate(n) {
  if (!Number.isFinite(n)) return '—';
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
  let u = 0;
  while (n >= 1000 && u < units.length - 1) {
    n /= 1000;
    u++;
  }
  return `${number(Number(n.toFixed(n < 10 && u ? 1 : 0)))} ${units[u]}`;
}
const pct = (v) => (Number.isFinite(v) ? `${number(Math.round(v))}%` : '—');
const fixed = (v, d = 2) => (Number.isFinite(v) ? number(Number(v.toFixed(d))) : '—');
const mib = (v) => (Number.isFinite(v) ? t('admin.mib', { n: fixed(v / 1048576, 1) }) : '—');
const sum = (list, key) => (Array.isArray(list) && list.length ? list.reduce((a, x) => a + (Number(x && x[key]) || 0), 0) : NaN);

/**
 * The figures of a card, by kind of host: key, label key, how to read it from a sample,
 * its threshold's name (null: none), how to write it, a fixed top for its chart, and the
 * extra series of the host page's chart.
 */
const netOf = (s, key) => sum((s.net || []).filter((n) => n && n.iface !== 'lo'), key);
const AGENT_FIGURES = [
  { key: 'cpu', read: (s) => s.cpu?.total, limit: 'cpu', fmt: pct, max: 100 },
  {
    key: 'mem',
    read: (s) => {
      const m = s.mem;
      if (!m || !(m.total > 0)) return NaN;
      const used = Number.isFinite(m.available) ? m.total - m.available : m.used;
      return (used / m.total) * 100;
    },
    limit: 'mem',
    fmt: pct,
    max: 100,
  },
  { key: 'load', read: (s) => (Array.isArray(s.load) ? s.load[0] : NaN), limit: 'load', perCore: true, fmt: (v) => fixed(v), lines: [(s) => s.load?.[0], (s) => s.load?.[1], (s) => s.load?.[2]] },
  { key: 'net', read: (s) => netOf(s, 'rx') + netOf(s, 'tx'), fmt: rate, lines: [(s) => netOf(s, 'rx'), (s) => netOf(s, 'tx')] },
  {
    key: 'disk',
    read: (s) => (Array.isArray(s.disks) && s.disks.length ? Math.max(...s.disks.map((d) => (d.total > 0 ? (d.used / d.total) * 100 : 0))) : NaN),
    limit: 'disk',
    fmt: pct,
    max: 100,
  },
];
const HUB_FIGURES = [
  { key: 'connections', read: (s) => s.hub?.connections, fmt: (v) => (Number.isFinite(v) ? number(v) : '—') },
  { key: 'publications', read: (s) => s.hub?.publications_per_s, fmt: (v) => fixed(v, 1) },
  { key: 'deliveries', read: (s) => s.hub?.deliveries_per_s, fmt: (v) => fixed(v, 1) },
  { key: 'store', read: (s) => s.hub?.store_write_ms, fmt: (v) => (Number.isFinite(v) ? t('admin.ms', { n: fixed(v, 2) }) : '—') },
  { key: 'rss', read: (s) => s.mem?.used, fmt: mib },
];
const figuresOf = (name) => (isHub(name) ? HUB_FIGURES : AGENT_FIGURES);

// ---- state --------------------------------------------------------------------------

/** @type {{stale_after: number, thresholds: Record<string, {warn: number, crit: number}>}} */
let config = { stale_after: 30, thresholds: {} };
/** Hosts by name. */
const hosts = new Map();
/** The event feed, newest last. */
const feed = new Ring(FEED_MAX);
let live = false;
/** Cards to draw at the next frame. */
const dirty = new Set();
let feedDirty = false;

function newHost(name) {
  const figures = figuresOf(name);
  const points = only ? HOST_POINTS : SPARK_POINTS;
  const host = {
    name,
    info: {},
    sample: null,
    /** per figure: a ring of [time, value…] */
    series: Object.fromEntries(figures.map((f) => [f.key, new Ring(points)])),
    /** When this page last heard from it (its clock). */
    heard: 0,
    /** Figures came since the card was last drawn (else only its level and age move). */
    fresh: true,
    stale: false,
    card: null,
    sub: null,
  };
  hosts.set(name, host);
  return host;
}

function levelOf(fig, value, host) {
  const th = fig.limit && config.thresholds[fig.limit];
  if (!th || !Number.isFinite(value)) return 'ok';
  const cores = host.info.cores || host.sample?.cpu?.cores?.length || 0;
  const v = fig.perCore ? (cores ? value / cores : NaN) : value;
  if (!Number.isFinite(v)) return 'ok';
  return v >= th.crit ? 'crit' : v >= th.warn ? 'warn' : 'ok';
}

function isStale(host) {
  if (host.stale) return true;
  return host.heard > 0 && Date.now() - host.heard > config.stale_after * 1000;
}

const RANK = { ok: 0, warn: 1, crit: 2 };
function hostLevel(host) {
  if (isStale(host)) return 'stale';
  if (!host.sample) return 'ok';
  let worst = 'ok';
  for (const fig of figuresOf(host.name)) {
    const l = levelOf(fig, fig.read(host.sample), host);
    if (RANK[l] > RANK[worst]) worst = l;
  }
  return worst;
}

/** Takes one publication of `metrics:HOST`. */
function take(host, pub, fromHistory = false) {
  const d = pub.data;
  if (!d || typeof d !== 'object') return;
  if (!fromHistory) host.heard = Date.now();
  if (d.type === 'hello') {
    host.info = { ...host.info, version: d.version, os: d.os, cores: d.cores, logs: d.logs, interval_ms: d.interval_ms };
    host.fresh = true;
  } else if (d.type === 'sample') {
    const at = Number.isFinite(d.time) ? d.time : pub.time || Date.now();
    for (const fig of figuresOf(host.name)) {
      // [time, the card's value, the host page's lines when they differ]
      const point = [at, Number(fig.read(d))];
      for (const line of fig.lines || []) point.push(Number(line(d)));
      host.series[fig.key].push(point);
    }
    if (!d.late && (!host.sample || at >= (host.sample.time || 0))) host.sample = d;
    host.fresh = true;
  } else if (d.type === 'custom' && d.metrics && typeof d.metrics === 'object') {
    host.info = { ...host.info, custom: { ...(host.info.custom || {}), ...d.metrics } };
    host.fresh = true;
  }
  if (!fromHistory) host.stale = false;
  dirty.add(host);
  schedule();
}

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  const run = () => {
    scheduled = false;
    draw();
  };
  // A hidden tab gets no animation frames; a timer keeps it current, slowly.
  if (document.hidden) setTimeout(run, 1000);
  else requestAnimationFrame(run);
}

// ---- the page -----------------------------------------------------------------------

const status = h('p', { class: 'note', id: 'monitor-status' });
const error = h('p', { class: 'error', role: 'alert' });
const cards = h('ul', { class: 'mon-cards', id: 'mon-cards' });
const noHosts = h('p', { class: 'ops-empty', id: 'mon-none', hidden: true, ...tx('monitor.none') });
// Focusable: it scrolls, and a keyboard must reach what it holds.
const feedList = h('ol', { class: 'mon-feed', id: 'mon-feed', tabindex: '0', 'aria-labelledby': 'mon-feed-title' });
const feedNone = h('p', { class: 'ops-empty', ...tx('monitor.feed.none') });

/** The "add a host" form: a host name in, an agent token and its command out. */
function addHost() {
  const input = h('input', { id: 'mon-add-host', class: 'input', autocomplete: 'off', spellcheck: 'false', maxlength: 64, pattern: '[A-Za-z0-9._\\-]{1,64}', required: true });
  const out = h('div', { class: 'mon-add-out', 'aria-live': 'polite' });
  const form = h(
    'form',
    {
      class: 'mon-add-form',
      on: {
        submit: async (e) => {
          e.preventDefault();
          try {
            const r = await sb.rpc('monitor.token', { host: input.value.trim(), server: location.origin });
            replace(out, h('p', tx('monitor.add.run')), h('pre', { class: 'code', tabindex: '0' }, r.command));
          } catch (err) {
            replace(out, h('p', { class: 'error' }, t('monitor.failed', { message: err.message })));
          }
        },
      },
    },
    h('label', { for: 'mon-add-host', ...tx('monitor.add.host') }),
    h('div', { class: 'mon-add-row' }, input, h('button', { class: 'btn primary', type: 'submit', ...tx('monitor.add.create') })),
  );
  return h('details', { class: 'panel mon-add' }, h('summary', tx('monitor.add')), h('p', { class: 'note', ...tx('monitor.add.lead') }), form, out);
}

function overview() {
  return h(
    'main',
    { id: 'main', class: 'ops-main mon-main' },
    h('div', { class: 'ops-title' }, h('h1', tx('monitor.heading')), status),
    error,
    h(
      'div',
      { class: 'mon-layout' },
      h('section', { class: 'mon-hosts', 'aria-labelledby': 'mon-hosts-title' }, h('h2', { id: 'mon-hosts-title', class: 'visually-hidden', ...tx('monitor.hosts') }), noHosts, cards),
      h('aside', { class: 'mon-side' }, h('section', { class: 'panel mon-events', 'aria-labelledby': 'mon-feed-title' }, h('h2', { id: 'mon-feed-title', ...tx('monitor.feed') }), feedNone, feedList), addHost()),
    ),
  );
}

// The host page's parts.
const hostTitle = h('h1', null, only ?? '');
const hostMeta = h('p', { class: 'note mon-meta' });
const hostLevelTag = h('span', { class: 'mon-level' });
const hostNow = h('dl', { class: 'mon-now' });
const hostCharts = h('div', { class: 'mon-charts' });
const hostLogs = h('div', { class: 'mon-logs' });
/** @type {Record<string, {chart: any, fig: any}>} */
const bigCharts = {};

function hostPage() {
  return h(
    'main',
    { id: 'main', class: 'ops-main mon-main' },
    h('p', { class: 'mon-back' }, h('a', { href: '/monitor', ...tx('monitor.back') })),
    h('div', { class: 'ops-title' }, hostTitle, hostLevelTag, status),
    hostMeta,
    error,
    h('section', { 'aria-labelledby': 'mon-now-title' }, h('h2', { id: 'mon-now-title', class: 'visually-hidden', ...tx('monitor.now') }), hostNow),
    h('section', { class: 'panel', 'aria-labelledby': 'mon-charts-title' }, h('h2', { id: 'mon-charts-title', ...tx('monitor.last15') }), hostCharts),
    h(
      'div',
      { class: 'mon-layout mon-host-bottom' },
      h('section', { class: 'panel', 'aria-labelledby': 'mon-logs-title' }, h('h2', { id: 'mon-logs-title', ...tx('monitor.logs') }), hostLogs),
      h('section', { class: 'panel mon-events', 'aria-labelledby': 'mon-feed-title' }, h('h2', { id: 'mon-feed-title', ...tx('monitor.feed') }), feedNone, feedList),
    ),
  );
}

document.body.append(
  h('a', { class: 'skip-link', href: '#main', ...tx('common.skip') }),
  opsHeader({ me: ME, here: '/monitor', crumb: 'monitor.heading', iconPath: ICONS.monitor, admin: isAdmin }),
  !isAdmin ? refusedMain() : only ? hostPage() : overview(),
);
// A non-administrator has the refusal; nothing below is for them (and the server would
// refuse it all anyway).
if (!isAdmin) await new Promise(() => {});

// ---- cards --------------------------------------------------------------------------

const hostLabel = (name) => (name === '@hub' ? t('monitor.hub') : isHub(name) ? `${t('monitor.hub')} ${name.slice(5)}` : name);

function makeCard(host) {
  const figs = figuresOf(host.name).map((fig) => {
    const value = h('dd', { class: 'mon-value' }, '—');
    const chart = timeChart({ title: t(`monitor.fig.${fig.key}`), window: SPARK_WINDOW, max: fig.max, height: 28 });
    return { fig, value, chart, box: h('div', { class: 'mon-fig', 'data-fig': fig.key }, h('dt', tx(`monitor.fig.${fig.key}`)), value, h('dd', { class: 'mon-spark' }, chart.el)) };
  });
  const level = h('span', { class: 'mon-level' });
  const meta = h('p', { class: 'mon-meta' });
  const foot = h('p', { class: 'mon-foot' });
  const custom = h('ul', { class: 'mon-custom' });
  const el = h(
    'li',
    { class: 'mon-card', 'data-host': host.name },
    h('div', { class: 'mon-card-head' }, h('h3', null, h('a', { href: `/monitor?host=${encodeURIComponent(host.name)}` }, hostLabel(host.name))), level),
    meta,
    h('dl', { class: 'mon-figs' }, figs.map((f) => f.box)),
    custom,
    foot,
  );
  host.card = { el, figs, level, meta, foot, custom, stale: null };
  // In name order, the hub (each node of a group) first.
  const after = [...cards.children].find((c) => {
    const other = c.getAttribute('data-host');
    if (isHub(host.name) !== isHub(other)) return isHub(host.name);
    return other > host.name;
  });
  cards.insertBefore(el, after ?? null);
  noHosts.hidden = true;
}

function metaWords(host) {
  if (isHub(host.name)) return t('monitor.hub.meta');
  const i = host.info;
  const parts = [];
  if (i.os) parts.push(i.os);
  if (i.cores) parts.push(t('monitor.cores', { count: i.cores }));
  if (i.version) parts.push(t('monitor.version', { v: i.version }));
  return parts.join(' · ');
}

function levelTag(el, level) {
  el.className = `mon-level tag lvl-${level}`;
  el.textContent = t(`monitor.level.${level}`);
}

function drawCard(host) {
  if (!host.card) makeCard(host);
  const c = host.card;
  const now = Date.now();
  const level = hostLevel(host);
  const stale = level === 'stale';
  c.el.className = `mon-card lvl-${level}`;
  levelTag(c.level, level);
  const seen = host.heard || host.info.last_seen;
  c.foot.textContent = seen ? t('monitor.seen', { when: relative(seen, now, true) }) : '';
  // The clock's tick moves only the level and the age; the figures and charts wait for
  // figures (a hundred cards redrawn each second for nothing cost frames).
  if (!host.fresh && c.stale === stale) return;
  host.fresh = false;
  c.stale = stale;
  c.meta.textContent = metaWords(host);
  for (const f of c.figs) {
    const v = host.sample ? f.fig.read(host.sample) : NaN;
    const l = stale ? 'stale' : levelOf(f.fig, v, host);
    f.box.className = `mon-fig lvl-${l}`;
    f.value.textContent = f.fig.fmt(v);
    const points = host.series[f.fig.key].toArray();
    const line = points.map((p) => [p[0], p[1]]);
    if (line.length > 1 && line.some((p, i) => i && p[0] < line[i - 1][0])) line.sort((a, b) => a[0] - b[0]);
    f.chart.update([line], Math.max(now, host.sample?.time || 0), `${t(`monitor.fig.${f.fig.key}`)}: ${f.fig.fmt(v)}`);
  }
  const custom = Object.entries(host.info.custom || {}).slice(0, 8);
  replace(c.custom, custom.map(([k, v]) => h('li', null, h('span', { class: 'mon-custom-name' }, k), ' ', h('span', { class: 'mon-custom-value' }, Number.isFinite(v) ? number(v) : String(v)))));
}

// ---- the host page ------------------------------------------------------------------

function makeBigCharts(host) {
  for (const fig of figuresOf(host.name)) {
    const series = fig.lines ? fig.lines.length : 1;
    const chart = timeChart({ title: t(`monitor.fig.${fig.key}`), window: HOST_WINDOW, max: fig.max, height: 90, axis: true, series, gap: 60000, format: fig.key === 'net' ? rate : fig.max ? pct : (v) => fixed(v, 1), labels: [t('monitor.ago15'), t('monitor.nowLabel')] });
    const legend = fig.lines ? h('p', { class: 'mon-legend', ...tx(`monitor.legend.${fig.key}`) }) : null;
    bigCharts[fig.key] = { chart, fig };
    hostCharts.append(h('figure', { class: 'mon-big', 'data-fig': fig.key }, h('figcaption', tx(`monitor.fig.${fig.key}`)), chart.el, legend));
  }
}

function drawHostPage(host) {
  const level = hostLevel(host);
  levelTag(hostLevelTag, level);
  hostTitle.textContent = hostLabel(host.name);
  hostMeta.textContent = metaWords(host);
  const now = Date.now();
  const rows = [];
  for (const fig of figuresOf(host.name)) {
    const v = host.sample ? fig.read(host.sample) : NaN;
    const l = isStale(host) ? 'stale' : levelOf(fig, v, host);
    rows.push(h('div', { class: `figure lvl-${l}`, 'data-fig': fig.key }, h('dt', tx(`monitor.fig.${fig.key}`)), h('dd', null, fig.fmt(v))));
    const points = host.series[fig.key].toArray();
    if (points.some((p, i) => i && p[0] < points[i - 1][0])) points.sort((a, b) => a[0] - b[0]);
    const data = fig.lines ? fig.lines.map((_, i) => points.map((p) => [p[0], p[2 + i]])) : [points.map((p) => [p[0], p[1]])];
    bigCharts[fig.key]?.chart.update(data, now, `${t(`monitor.fig.${fig.key}`)}: ${fig.fmt(v)}`);
  }
  const s = host.sample || {};
  // One mount is the Disk figure already; several are listed each.
  if (Array.isArray(s.disks) && s.disks.length > 1) for (const d of s.disks.slice(0, 8)) rows.push(h('div', { class: 'figure' }, h('dt', null, t('monitor.mount', { mount: d.mount })), h('dd', null, pct(d.total > 0 ? (d.used / d.total) * 100 : NaN))));
  if (Number.isFinite(s.procs)) rows.push(h('div', { class: 'figure' }, h('dt', tx('monitor.procs')), h('dd', null, number(s.procs))));
  if (Array.isArray(s.temps)) for (const x of s.temps.slice(0, 4)) rows.push(h('div', { class: 'figure' }, h('dt', null, t('monitor.temp', { label: x.label })), h('dd', null, `${fixed(x.celsius, 0)} °C`)));
  for (const [k, v] of Object.entries(host.info.custom || {}).slice(0, 16)) rows.push(h('div', { class: 'figure' }, h('dt', null, k), h('dd', null, Number.isFinite(v) ? number(v) : String(v))));
  replace(hostNow, rows);
}

async function loadHostLogs(host) {
  const logs = (host.info.logs || []).filter((l) => l && typeof l.name === 'string');
  if (isHub(host.name) || !logs.length) {
    replace(hostLogs, h('p', { class: 'ops-empty', ...tx('monitor.logs.none') }));
    return;
  }
  const all = logs.map((l) => `${host.name}:${l.name}`).join(',');
  const boxes = await Promise.all(
    logs.slice(0, 8).map(async (l) => {
      let lines = [];
      try {
        const r = await sb.history(`logs:${host.name}:${l.name}`, { limit: 5 });
        lines = (r.publications || []).flatMap((p) => (Array.isArray(p.data?.lines) ? p.data.lines : [])).slice(-8);
      } catch {
        // The log's lines are on /logs anyway.
      }
      return h(
        'div',
        { class: 'mon-log' },
        h('h3', null, h('a', { href: `/logs?s=${encodeURIComponent(`${host.name}:${l.name}`)}` }, l.name)),
        lines.length ? h('pre', { class: 'mon-log-lines', tabindex: '0' }, lines.map((x) => `${clockTime(x.time)}  ${parse(String(x.text)).plain}\n`)) : h('p', { class: 'ops-empty', ...tx('monitor.logs.empty') }),
      );
    }),
  );
  replace(hostLogs, h('p', null, h('a', { href: `/logs?s=${encodeURIComponent(all)}`, ...tx('monitor.logs.all') })), boxes);
}

/** Reads the host's last 15 minutes from history, newest pages first. */
async function loadWindow(host) {
  const channel = `metrics:${host.name}`;
  const from = Date.now() - HOST_WINDOW;
  const pubs = [];
  let before;
  for (let page = 0; page < 5; page++) {
    const r = await sb.history(channel, before === undefined ? { limit: 250 } : { limit: 250, before });
    const got = r.publications || [];
    pubs.unshift(...got);
    if (got.length < 250 || !got.length || (got[0].time && got[0].time < from)) break;
    before = got[0].offset;
  }
  for (const p of pubs) take(host, p, true);
}

// ---- the feed -----------------------------------------------------------------------

function takeEvent(e) {
  if (!e || e.type !== 'event' || typeof e.host !== 'string') return;
  feed.push(e);
  feedDirty = true;
  const host = hosts.get(e.host);
  if (host && e.metric === 'reporting') {
    host.stale = e.level === 'stale';
    dirty.add(host);
  }
  schedule();
}

function drawFeed() {
  const events = feed.toArray().filter((e) => !only || e.host === only).reverse();
  feedNone.hidden = events.length > 0;
  replace(
    feedList,
    events.map((e) => {
      const metric = e.metric.startsWith('disk:') ? t('monitor.mount', { mount: e.metric.slice(5) }) : t(`monitor.fig.${e.metric}`);
      const what =
        e.metric === 'reporting'
          ? e.level === 'stale'
            ? t('monitor.event.stale', { s: fixed(e.value, 0) })
            : t('monitor.event.back')
          : `${metric} ${t('monitor.event.value', { value: fixed(e.value, 1), threshold: fixed(e.threshold, 1) })}`;
      return h(
        'li',
        { class: `mon-event lvl-${e.level}`, 'data-host': e.host, 'data-level': e.level },
        h('time', { datetime: new Date(e.time).toISOString(), title: dateTime(e.time) }, clockTime(e.time)),
        h('span', { class: 'mon-event-host' }, hostLabel(e.host)),
        h('span', { class: `tag lvl-${e.level}` }, t(`monitor.level.${e.level}`)),
        h('span', { class: 'mon-event-what' }, what),
      );
    }),
  );
}

/** Cards drawn in one frame at most: a burst of samples from every host (they all report
 * on the second) is spread over a few frames instead of blocking one. */
const CARDS_PER_FRAME = 20;

function draw() {
  let drawn = 0;
  for (const host of dirty) {
    if (drawn++ >= CARDS_PER_FRAME) break;
    dirty.delete(host);
    if (only) {
      if (host.name === only) drawHostPage(host);
    } else drawCard(host);
  }
  if (dirty.size) schedule();
  if (feedDirty) {
    feedDirty = false;
    drawFeed();
  }
  const count = only ? 1 : hosts.size;
  status.textContent = `${live ? t('monitor.live') : t('monitor.connecting')}${only ? '' : ` ${t('monitor.count', { count })}`}`;
}

// ---- the connection -----------------------------------------------------------------

const sb = new Switchboard(location.origin, { getToken });
window.switchboard = sb;
sb.on('connected', () => {
  live = true;
  schedule();
});
sb.on('disconnected', () => {
  live = false;
  schedule();
});
sb.connect();

function watch(host) {
  host.sub = sb.subscribe(`metrics:${host.name}`, {
    onPublication: (pub) => take(host, pub),
    onError: (err) => (error.textContent = t('monitor.failed', { message: `${host.name}: ${err.message}` })),
  });
}

async function readHosts(first = false) {
  try {
    const r = await sb.rpc('monitor.hosts', {}, { signal: AbortSignal.timeout(10000) });
    error.textContent = '';
    const seen = r.hosts || [];
    for (const x of seen) {
      if (x.host === '@events' || (only && x.host !== only)) continue;
      let host = hosts.get(x.host);
      const fresh = !host;
      if (!host) host = newHost(x.host);
      host.info = { ...host.info, version: x.version ?? host.info.version, os: x.os ?? host.info.os, cores: x.cores ?? host.info.cores, logs: x.logs ?? host.info.logs, custom: { ...(x.custom || {}), ...(host.info.custom || {}) }, last_seen: x.last_seen };
      host.stale = !!x.stale;
      if (!host.sample && x.sample) host.sample = x.sample;
      dirty.add(host);
      if (fresh) {
        if (only) {
          makeBigCharts(host);
          loadWindow(host).catch((err) => (error.textContent = t('monitor.failed', { message: err.message })));
          loadHostLogs(host);
        } else {
          sb.history(`metrics:${x.host}`, { limit: SPARK_HISTORY })
            .then((h2) => {
              for (const p of h2.publications || []) take(host, p, true);
            })
            .catch(() => {});
        }
        watch(host);
      }
    }
    if (only && !hosts.has(only) && first) error.textContent = t('monitor.unknown', { host: only });
    if (!only) noHosts.hidden = hosts.size > 0;
    schedule();
  } catch (err) {
    if (err && err.code === 103) error.textContent = t('admin.refused.body');
    else error.textContent = t('monitor.failed', { message: err.message });
  }
}

try {
  config = await sb.rpc('monitor.config', {}, { signal: AbortSignal.timeout(10000) });
} catch (err) {
  error.textContent = t('monitor.failed', { message: err.message });
}
sb.subscribe('metrics:@events', { onPublication: (pub) => takeEvent(pub.data) });
sb.history('metrics:@events', { limit: 30 })
  .then((r) => {
    for (const p of r.publications || []) takeEvent(p.data);
  })
  .catch(() => {});
await readHosts(true);
setInterval(readHosts, HOSTS_EVERY);
// Stale marks and "seen … ago" move with the clock, not only with publications.
setInterval(() => {
  for (const host of hosts.values()) dirty.add(host);
  schedule();
}, 1000);
onLangChange(() => {
  for (const host of hosts.values()) {
    if (host.card) {
      host.card.el.remove();
      host.card = null;
    }
    host.fresh = true;
    dirty.add(host);
  }
  for (const { chart } of Object.values(bigCharts)) chart.setLabels(t('monitor.ago15'), t('monitor.nowLabel'));
  feedDirty = true;
  schedule();
});
