// /console: a WebSocket console for Switchboard and for any WebSocket server.
//
// - Switchboard mode: this server or another Switchboard URL, a transport of choice, and
//   the signed-in user's token, a pasted one, or none; it uses the browser library (imported
//   from beside this file, see crates/apps/src/pages.rs) with logging WebSocket, EventSource
//   and fetch wrappers, so the log shows the frames the library really sends and receives.
// - Raw mode: the browser's own WebSocket, subprotocols, text or binary frames.
// - API tab (administrators): the server API run in process by the `admin.api` rpc method
//   (crates/apps/src/ops.rs); the server checks the role.
//
// Other origins: this page's Content-Security-Policy allows `ws:` and `wss:` in
// connect-src (pages.rs, CONSOLE_CSP), so both modes reach any WebSocket URL; SSE and
// polling reach this server only.
import { Switchboard, TRANSPORTS } from '../switchboard.js';
import { h, icon, ICONS, replace } from '../lib/dom.js';
import { t, tx, languageSwitch, onLangChange } from '../lib/i18n.js';
import { me, getToken, signOut } from '../lib/session.js';
import { opsLinks } from '../lib/opsbar.js';
import { FrameLog, fromHex } from './frames.js';

const SAVED_KEY = 'switchboard.console.saved';
const sameOrigin = location.origin;
const wsOrigin = sameOrigin.replace(/^http/, 'ws');

const info = await me();
const ME = info.user;
const isAdmin = !!ME && Array.isArray(ME.roles) && ME.roles.includes('admin');

/** Templates of the protocol's commands: the library's calls (Switchboard mode)… */
const SB_TEMPLATES = {
  subscribe: { cmd: 'subscribe', channel: 'test:console' },
  unsubscribe: { cmd: 'unsubscribe', channel: 'test:console' },
  publish: { cmd: 'publish', channel: 'test:console', data: { text: 'hello' } },
  history: { cmd: 'history', channel: 'test:console', limit: 10 },
  presence: { cmd: 'presence', channel: 'test:console' },
  send: { cmd: 'send', user: 'someone', data: { text: 'hello' } },
  rpc: { cmd: 'rpc', method: 'chat.rooms', data: {} },
  ping: { cmd: 'ping' },
};
/** …and the raw protocol, with ids (raw mode). */
const RAW_TEMPLATES = {
  connect: { id: 1, cmd: 'connect', token: '' },
  ...Object.fromEntries(Object.entries(SB_TEMPLATES).map(([k, v], i) => [k, { id: i + 2, ...v }])),
  close: { id: 20, cmd: 'close' },
};
/** Server API commands and a body for each. */
const API_TEMPLATES = {
  publish: { channel: 'test:console', data: { text: 'from the API' } },
  broadcast: { channels: ['test:a', 'test:b'], data: { text: 'to both' } },
  send: { user: 'someone', data: { text: 'hello' } },
  presence: { channel: 'room:lobby' },
  history: { channel: 'room:lobby', limit: 10 },
  channels: {},
  info: {},
  disconnect: { user: 'someone', reconnect: false },
};

const state = {
  /** 'sb' | 'raw' | 'api' */
  tab: 'sb',
  /** @type {Switchboard | null} */
  sb: null,
  /** @type {WebSocket | null} */
  raw: null,
  sbState: 'closed',
  sbTransport: '',
  rawState: 'closed',
  rtt: null,
  pingId: 100,
  /** @type {{id: number, text: string, at: number} | null} */
  rawPing: null,
};

const status = h('p', { class: 'console-status', id: 'console-status', role: 'status' });
const log = new FrameLog({ onResend: resend, onStatus: (s) => (status.textContent = s) });

// ---- small form helpers -------------------------------------------------------------

let ids = 0;
function field(labelKey, control, hintKey) {
  const id = control.id || `f-${++ids}`;
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id, ...tx(labelKey) }), control, hintKey ? h('span', { class: 'hint', ...tx(hintKey) }) : null);
}
const input = (props = {}) => h('input', { class: 'input', autocomplete: 'off', spellcheck: 'false', ...props });
const select = (options, props = {}) => h('select', { class: 'input', ...props }, options.map(([value, label]) => h('option', { value }, label)));
const button = (key, onClick, cls = 'btn', props = {}) => h('button', { class: cls, type: 'button', on: { click: onClick }, ...tx(key), ...props });

// ---- connection state (always visible) -----------------------------------------------

const stateBadge = h('span', { class: 'conn-state', id: 'conn-state' });
const rttEl = h('span', { class: 'conn-rtt', id: 'conn-rtt' });

function renderState() {
  const raw = state.tab === 'raw';
  const s = raw ? state.rawState : state.sbState;
  stateBadge.className = `conn-state ${s}`;
  let text = `${t(raw ? 'console.mode.raw' : 'console.mode.sb')}: ${t(`console.state.${s}`)}`;
  if (!raw && s === 'open' && state.sbTransport) text += ` · ${state.sbTransport}`;
  if (raw && s === 'open' && state.raw) {
    for (const negotiated of [state.raw.protocol, state.raw.extensions]) if (negotiated) text += ` · ${negotiated}`;
  }
  stateBadge.textContent = text;
  rttEl.textContent = state.rtt === null ? '' : t('console.rtt', { ms: state.rtt });
  sbConnect.disabled = state.sbState !== 'closed';
  sbClose.disabled = state.sbState === 'closed';
  rawConnect.disabled = state.rawState !== 'closed';
  rawClose.disabled = state.rawState === 'closed' || state.rawState === 'closing';
  composeSend.disabled = raw ? state.rawState !== 'open' : state.sbState === 'closed';
  pingBtn.disabled = composeSend.disabled;
}

// ---- Switchboard mode ----------------------------------------------------------------

const sbUrl = input({ type: 'url', value: sameOrigin, name: 'sb-url' });
const sbTransport = select([['auto', ''], ...TRANSPORTS.map((n) => [n, n])], { name: 'transport' });
const tokenSource = select([], { name: 'token-source' });
const tokenPaste = h('textarea', { class: 'input', rows: 3, spellcheck: 'false', name: 'token' });
const tokenPasteField = field('console.sb.pasted', tokenPaste);
const sbConnect = button('console.connect', () => connectSb(), 'btn primary');
const sbClose = button('console.disconnect', () => closeSb(), 'btn ghost');

function fillSelectLabels() {
  sbTransport.options[0].textContent = t('console.sb.transport.auto');
  const keep = tokenSource.value;
  replace(
    tokenSource,
    ME ? h('option', { value: 'session' }, t('console.sb.token.session', { name: ME.name })) : null,
    h('option', { value: 'paste' }, t('console.sb.token.paste')),
    h('option', { value: 'none' }, t('console.sb.token.none')),
  );
  if (keep) tokenSource.value = keep;
  tokenPasteField.hidden = tokenSource.value !== 'paste';
}
tokenSource.addEventListener('change', () => (tokenPasteField.hidden = tokenSource.value !== 'paste'));

/** A WebSocket class that logs every frame (the library takes one as an option). */
function loggingWebSocket() {
  return class LoggedWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      log.add('event', 'open', t('console.ev.opening', { url: String(url) }));
      this.addEventListener('open', () => log.add('event', 'open', t('console.ev.open')));
      this.addEventListener('message', (ev) => log.add('in', typeof ev.data === 'string' ? 'text' : 'binary', ev.data));
      this.addEventListener('close', (ev) => log.add('in', 'close', t('console.ev.close', { code: ev.code, reason: ev.reason || '—' })));
    }

    send(data) {
      log.add('out', typeof data === 'string' ? 'text' : 'binary', data);
      super.send(data);
    }
  };
}

/** An EventSource that logs what the server pushes (SSE transport). */
function loggingEventSource() {
  return class LoggedEventSource extends EventSource {
    constructor(url, init) {
      super(url, init);
      log.add('event', 'sse', t('console.ev.opening', { url: String(url) }));
      for (const name of ['session', 'message', 'close']) this.addEventListener(name, (ev) => log.add('in', `sse ${name}`, /** @type {MessageEvent} */ (ev).data));
    }
  };
}

/** fetch that logs request and response bodies (polling transports, SSE's commands). */
async function loggingFetch(url, init = {}) {
  if (init.body) log.add('out', `http ${init.method || 'GET'}`, typeof init.body === 'string' ? init.body : '');
  const res = await fetch(url, init);
  res
    .clone()
    .text()
    .then((text) => {
      if (text) log.add('in', `http ${res.status}`, text);
    })
    .catch(() => {});
  return res;
}

function connectSb() {
  let url;
  try {
    url = new URL(sbUrl.value.trim() || sameOrigin);
  } catch {
    status.textContent = t('console.badUrl');
    return;
  }
  const opts = {
    WebSocket: loggingWebSocket(),
    EventSource: loggingEventSource(),
    fetch: loggingFetch,
  };
  if (sbTransport.value !== 'auto') opts.transports = [sbTransport.value];
  const source = tokenSource.value;
  if (source === 'session') opts.getToken = getToken;
  if (source === 'paste') opts.token = tokenPaste.value.trim();
  let sb;
  try {
    sb = new Switchboard(url.href.replace(/\/ws\/?$/, ''), opts);
  } catch (err) {
    status.textContent = String(err.message || err);
    return;
  }
  state.sb = sb;
  window.switchboard = sb;
  sb.on('connecting', () => {
    state.sbState = 'connecting';
    renderState();
  });
  sb.on('connected', (ev) => {
    state.sbState = 'open';
    state.sbTransport = ev.transport;
    status.textContent = t('console.connectedAs', { user: ev.user || t('console.anonymous'), client: ev.client || '' });
    renderState();
  });
  sb.on('disconnected', (ev) => {
    state.sbState = ev.reconnect ? 'connecting' : 'closed';
    status.textContent = t('console.disconnected', { code: ev.code, reason: ev.reason || '—' });
    if (!ev.reconnect) state.sb = null;
    renderState();
  });
  sb.on('error', (err) => (status.textContent = String(err && err.message ? err.message : err)));
  state.sbState = 'connecting';
  renderState();
  sb.connect();
}

function closeSb() {
  if (state.sb) state.sb.close();
  state.sb = null;
  state.sbState = 'closed';
  renderState();
}

/** Runs a command through the library's own call for it. */
async function sbCommand(cmd) {
  const sb = state.sb;
  if (!sb) throw new Error(t('console.notConnected'));
  const c = cmd.cmd;
  if (c === 'subscribe') {
    const sub = sb.getSubscription(cmd.channel) || sb.subscribe(cmd.channel);
    return sub;
  }
  if (c === 'unsubscribe') {
    const sub = sb.getSubscription(cmd.channel);
    if (!sub) throw new Error(t('console.notSubscribed', { channel: cmd.channel }));
    sub.unsubscribe();
    return {};
  }
  if (c === 'publish') return sb.publish(cmd.channel, cmd.data, { ephemeral: !!cmd.ephemeral });
  if (c === 'history') return sb.history(cmd.channel, { limit: cmd.limit, since: cmd.since, before: cmd.before });
  if (c === 'presence') return sb.presence(cmd.channel);
  if (c === 'send') return sb.send(cmd.user, cmd.data);
  if (c === 'rpc') return sb.rpc(cmd.method, cmd.data);
  if (c === 'ping') return sb.ping();
  throw new Error(t('console.unknownCmd', { cmd: String(c), list: Object.keys(SB_TEMPLATES).join(', ') }));
}

// ---- raw mode ------------------------------------------------------------------------

const rawUrl = input({ type: 'url', value: `${wsOrigin}/ws`, name: 'raw-url' });
const rawProtocols = input({ name: 'subprotocols', placeholder: 'chat, superchat' });
const rawConnect = button('console.connect', () => connectRaw(), 'btn primary');
const closeCode = input({ type: 'number', value: '1000', min: 1000, max: 4999, name: 'close-code', inputmode: 'numeric' });
const closeReason = input({ name: 'close-reason', maxlength: 123 });
const rawClose = button('console.raw.close', () => closeRaw(), 'btn ghost');

function connectRaw() {
  const protocols = rawProtocols.value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  let ws;
  try {
    ws = new WebSocket(rawUrl.value.trim(), protocols);
  } catch (err) {
    status.textContent = String(err.message || err);
    return;
  }
  ws.binaryType = 'arraybuffer';
  state.raw = ws;
  state.rawState = 'connecting';
  log.add('event', 'open', t('console.ev.opening', { url: rawUrl.value.trim() }));
  ws.onopen = () => {
    state.rawState = 'open';
    const negotiated = { protocol: ws.protocol || '—', extensions: ws.extensions || '—' };
    log.add('event', 'open', t('console.ev.rawOpen', negotiated));
    status.textContent = t('console.raw.opened', negotiated);
    renderState();
  };
  ws.onmessage = (ev) => {
    const frame = log.add('in', typeof ev.data === 'string' ? 'text' : 'binary', ev.data);
    const p = state.rawPing;
    if (p && typeof ev.data === 'string') {
      let id = null;
      try {
        id = JSON.parse(ev.data).id;
      } catch {
        // not JSON
      }
      if (id === p.id || ev.data === p.text) {
        state.rtt = Math.round(frame.time - p.at);
        state.rawPing = null;
        renderState();
      }
    }
  };
  ws.onerror = () => log.add('event', 'error', t('console.ev.error'));
  ws.onclose = (ev) => {
    log.add('in', 'close', t('console.ev.close', { code: ev.code, reason: ev.reason || '—' }));
    status.textContent = t('console.disconnected', { code: ev.code, reason: ev.reason || '—' });
    if (state.raw === ws) {
      state.raw = null;
      state.rawState = 'closed';
    }
    renderState();
  };
  renderState();
}

function closeRaw() {
  const ws = state.raw;
  if (!ws) return;
  const code = Number(closeCode.value || 1000);
  const reason = closeReason.value;
  try {
    ws.close(code, reason);
    log.add('out', 'close', t('console.ev.close', { code, reason: reason || '—' }));
    state.rawState = 'closing';
  } catch (err) {
    status.textContent = String(err.message || err);
  }
  renderState();
}

// ---- composer ------------------------------------------------------------------------

const composeFormat = select([
  ['json', 'JSON'],
  ['text', ''],
  ['binary', ''],
], { name: 'format' });
const composeTemplate = select([], { name: 'template' });
const composeText = h('textarea', { class: 'input composer-text', rows: 6, spellcheck: 'false', name: 'message', id: 'composer-text' });
const composeError = h('p', { class: 'error', role: 'alert', id: 'composer-error' });
const composeSend = h('button', { class: 'btn primary', type: 'submit', ...tx('console.send') });
const pingBtn = button('console.ping', () => ping(), 'btn ghost');
const saveName = input({ name: 'save-name' });
const savedList = h('ul', { class: 'saved-list', id: 'saved-list' });

function fillComposerLabels() {
  composeFormat.options[1].textContent = t('console.format.text');
  composeFormat.options[2].textContent = t('console.format.binary');
  const templates = state.tab === 'raw' ? RAW_TEMPLATES : SB_TEMPLATES;
  replace(composeTemplate, h('option', { value: '' }, t('console.template.pick')), Object.keys(templates).map((k) => h('option', { value: k }, k)));
  composeFormat.disabled = state.tab !== 'raw';
  if (state.tab !== 'raw') composeFormat.value = 'json';
}
composeTemplate.addEventListener('change', () => {
  const templates = state.tab === 'raw' ? RAW_TEMPLATES : SB_TEMPLATES;
  const tpl = templates[composeTemplate.value];
  if (!tpl) return;
  composeFormat.value = 'json';
  composeText.value = JSON.stringify(tpl, null, 2);
  composeTemplate.value = '';
  validate();
  composeText.focus();
});

/** Checks the composer's text against its format; returns what to send, or null. */
function validate() {
  const text = composeText.value;
  const format = composeFormat.value;
  composeError.textContent = '';
  composeText.removeAttribute('aria-invalid');
  if (!text.trim()) return null;
  if (format === 'json') {
    try {
      return { json: JSON.parse(text), text };
    } catch (err) {
      composeError.textContent = t('console.invalidJson', { message: err.message });
      composeText.setAttribute('aria-invalid', 'true');
      return null;
    }
  }
  if (format === 'binary') {
    const bytes = fromHex(text);
    if (!bytes) {
      composeError.textContent = t('console.invalidHex');
      composeText.setAttribute('aria-invalid', 'true');
      return null;
    }
    return { bytes };
  }
  return { text };
}
composeText.addEventListener('input', validate);

async function send() {
  const v = validate();
  if (!v) {
    if (!composeText.value.trim()) composeError.textContent = t('console.empty');
    return;
  }
  if (state.tab === 'raw') {
    const ws = state.raw;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      composeError.textContent = t('console.notConnected');
      return;
    }
    const data = v.bytes ? v.bytes : v.json !== undefined ? JSON.stringify(v.json) : v.text;
    log.add('out', v.bytes ? 'binary' : 'text', data);
    ws.send(data);
    return;
  }
  if (!v.json || typeof v.json !== 'object' || Array.isArray(v.json)) {
    composeError.textContent = t('console.needCommand');
    return;
  }
  try {
    const result = await sbCommand(v.json);
    status.textContent = t('console.done', { cmd: v.json.cmd });
    if (result && typeof result.ready === 'function') await result.ready?.();
  } catch (err) {
    composeError.textContent = t('console.failed', { message: err.message || String(err) });
  }
}

async function ping() {
  if (state.tab === 'raw') {
    const ws = state.raw;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const id = ++state.pingId;
    const text = JSON.stringify({ id, cmd: 'ping' });
    state.rawPing = { id, text, at: Date.now() };
    log.add('out', 'text', text);
    ws.send(text);
    return;
  }
  if (!state.sb) return;
  const start = performance.now();
  try {
    await state.sb.ping({ signal: AbortSignal.timeout(10000) });
    state.rtt = Math.round(performance.now() - start);
  } catch (err) {
    composeError.textContent = t('console.failed', { message: err.message || String(err) });
  }
  renderState();
}

/** Re-sends a logged frame: into the composer, and sent. */
function resend(frame) {
  if (frame.bytes) {
    composeFormat.value = 'binary';
    composeText.value = [...frame.bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  } else if (frame.isJson) {
    composeFormat.value = 'json';
    const json = frame.json;
    if (state.tab !== 'raw' && json && typeof json === 'object' && !Array.isArray(json)) delete json.id;
    composeText.value = JSON.stringify(json, null, 2);
  } else {
    composeFormat.value = 'text';
    composeText.value = frame.text ?? '';
  }
  send();
}

// saved messages (localStorage)

function loadSaved() {
  try {
    const list = JSON.parse(localStorage.getItem(SAVED_KEY) || '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function storeSaved(list) {
  try {
    localStorage.setItem(SAVED_KEY, JSON.stringify(list));
  } catch {
    status.textContent = t('console.saved.failed');
  }
}

function renderSaved() {
  const list = loadSaved();
  replace(
    savedList,
    list.length === 0
      ? h('li', { class: 'ops-empty', ...tx('console.saved.none') })
      : list.map((m, i) =>
          h(
            'li',
            null,
            h('span', { class: 'saved-name' }, m.name),
            h('span', { class: 'saved-format' }, m.format),
            h('span', { class: 'spacer' }),
            h('button', { class: 'linkish', type: 'button', 'aria-label': t('console.saved.loadN', { name: m.name }), on: { click: () => useSaved(m) } }, t('console.saved.load')),
            h('button', { class: 'linkish', type: 'button', 'aria-label': t('console.saved.deleteN', { name: m.name }), on: { click: () => deleteSaved(i) } }, t('console.saved.delete')),
          ),
        ),
  );
}

function useSaved(m) {
  if (state.tab === 'raw' || m.format === 'json') composeFormat.value = m.format;
  composeText.value = m.text;
  validate();
  composeText.focus();
}

function deleteSaved(i) {
  const list = loadSaved();
  list.splice(i, 1);
  storeSaved(list);
  renderSaved();
}

function save() {
  const name = saveName.value.trim() || composeText.value.trim().slice(0, 32);
  if (!composeText.value.trim()) {
    composeError.textContent = t('console.empty');
    return;
  }
  const list = loadSaved().filter((m) => m.name !== name);
  list.unshift({ name, format: composeFormat.value, text: composeText.value });
  storeSaved(list.slice(0, 100));
  saveName.value = '';
  renderSaved();
  status.textContent = t('console.saved.done', { name });
}

// ---- API tab -------------------------------------------------------------------------

const apiCommand = select(Object.keys(API_TEMPLATES).map((k) => [k, k]), { name: 'api-command' });
const apiBody = h('textarea', { class: 'input composer-text', rows: 8, spellcheck: 'false', name: 'api-body' });
const apiResult = h('pre', { class: 'code api-result', id: 'api-result', tabindex: '0' });
const apiError = h('p', { class: 'error', role: 'alert' });
/** @type {Switchboard | null} */
let apiClient = null;

apiCommand.addEventListener('change', () => (apiBody.value = JSON.stringify(API_TEMPLATES[apiCommand.value], null, 2)));
apiBody.value = JSON.stringify(API_TEMPLATES.publish, null, 2);

async function runApi() {
  apiError.textContent = '';
  let body;
  try {
    body = apiBody.value.trim() ? JSON.parse(apiBody.value) : {};
  } catch (err) {
    apiError.textContent = t('console.invalidJson', { message: err.message });
    return;
  }
  if (!apiClient) {
    apiClient = new Switchboard(sameOrigin, { getToken });
    apiClient.connect();
  }
  const started = performance.now();
  try {
    const result = await apiClient.rpc('admin.api', { command: apiCommand.value, body }, { signal: AbortSignal.timeout(15000) });
    apiResult.textContent = JSON.stringify(result, null, 2);
    status.textContent = t('console.api.done', { command: apiCommand.value, ms: Math.round(performance.now() - started) });
  } catch (err) {
    apiResult.textContent = '';
    apiError.textContent = t('console.failed', { message: `${err.code ? `${err.code} ` : ''}${err.message || err}` });
  }
}

// ---- the page ------------------------------------------------------------------------

const tabs = {};
const panels = {};

function tabButton(key) {
  const b = h('button', {
    class: 'tab',
    type: 'button',
    role: 'tab',
    id: `tab-${key}`,
    'aria-controls': `panel-${key}`,
    'aria-selected': 'false',
    tabindex: '-1',
    ...tx(`console.tab.${key}`),
    on: {
      click: () => selectTab(key),
      keydown: (ev) => {
        const keys = Object.keys(tabs);
        const i = keys.indexOf(key);
        const next = ev.key === 'ArrowRight' ? keys[(i + 1) % keys.length] : ev.key === 'ArrowLeft' ? keys[(i - 1 + keys.length) % keys.length] : null;
        if (next) {
          selectTab(next);
          tabs[next].focus();
        }
      },
    },
  });
  tabs[key] = b;
  return b;
}

function selectTab(key) {
  if (key === 'api' && !isAdmin) key = 'refused';
  state.tab = key === 'refused' ? 'api' : key;
  for (const [k, b] of Object.entries(tabs)) {
    const on = k === key;
    b.setAttribute('aria-selected', String(on));
    b.tabIndex = on ? 0 : -1;
  }
  for (const [k, p] of Object.entries(panels)) p.hidden = k !== key;
  workspace.hidden = key === 'api' || key === 'refused';
  fillComposerLabels();
  renderState();
  const hash = key === 'sb' ? '' : `#${key === 'refused' ? 'api' : key}`;
  if (location.hash !== hash) history.replaceState(null, '', `${location.pathname}${hash}`);
}

const sbPanel = h(
  'section',
  { class: 'panel conn-panel', id: 'panel-sb', role: 'tabpanel', 'aria-labelledby': 'tab-sb' },
  h('p', tx('console.sb.lead')),
  field('console.sb.url', sbUrl, 'console.sb.url.hint'),
  h('div', { class: 'field-row' }, field('console.sb.transport', sbTransport), field('console.sb.token', tokenSource)),
  tokenPasteField,
  h('div', { class: 'buttons' }, sbConnect, sbClose),
);
panels.sb = sbPanel;

const rawPanel = h(
  'section',
  { class: 'panel conn-panel', id: 'panel-raw', role: 'tabpanel', 'aria-labelledby': 'tab-raw', hidden: true },
  h('p', tx('console.raw.lead')),
  field('console.raw.url', rawUrl),
  field('console.raw.protocols', rawProtocols, 'console.raw.protocols.hint'),
  h('div', { class: 'buttons' }, rawConnect),
  h('div', { class: 'field-row close-row' }, field('console.raw.code', closeCode), field('console.raw.reason', closeReason), h('div', { class: 'buttons' }, rawClose)),
);
panels.raw = rawPanel;

if (isAdmin) {
  panels.api = h(
    'section',
    { class: 'panel api-panel', id: 'panel-api', role: 'tabpanel', 'aria-labelledby': 'tab-api', hidden: true },
    h('p', tx('console.api.lead')),
    h('div', { class: 'field-row' }, field('console.api.command', apiCommand)),
    field('console.api.body', apiBody),
    apiError,
    h('div', { class: 'buttons' }, button('console.api.run', () => runApi(), 'btn primary')),
    h('h3', tx('console.api.result')),
    apiResult,
  );
} else {
  panels.refused = h('section', { class: 'panel', id: 'panel-refused', hidden: true }, h('h2', tx('console.api.refused.title')), h('p', tx('console.api.refused.body')));
}

const composer = h(
  'form',
  {
    class: 'panel composer-panel',
    novalidate: true,
    'aria-labelledby': 'composer-title',
    on: {
      submit: (e) => {
        e.preventDefault();
        send();
      },
      keydown: (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          send();
        }
      },
    },
  },
  h('h2', { id: 'composer-title', ...tx('console.composer') }),
  h('div', { class: 'field-row' }, field('console.format', composeFormat), field('console.template', composeTemplate)),
  field('console.message', composeText, 'console.message.hint'),
  composeError,
  h('div', { class: 'buttons' }, composeSend, pingBtn),
  h('details', { class: 'saved' }, h('summary', tx('console.saved')), h('div', { class: 'field-row save-row' }, field('console.saved.name', saveName), h('div', { class: 'buttons' }, button('console.saved.save', () => save(), 'btn ghost'))), savedList),
);

const workspace = h('div', { class: 'console-work' }, h('div', { class: 'console-side' }, sbPanel, rawPanel, status, composer), log.el);

function header() {
  return h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark' }, icon(ICONS.console)), h('span', { class: 'brand-name' }, 'Switchboard')),
    h('span', { class: 'ops-crumb', ...tx('console.heading') }),
    h('span', { class: 'spacer' }),
    isAdmin ? opsLinks('/console') : null,
    languageSwitch(),
    ME
      ? h(
          'span',
          { class: 'who' },
          h('span', { class: 'hide-narrow' }, ME.name),
          h('button', { class: 'btn small ghost', type: 'button', on: { click: () => signOut('/') } }, icon(ICONS.out), h('span', { class: 'label', ...tx('common.signOut') })),
        )
      : h('a', { class: 'btn small', href: `/signin?next=${encodeURIComponent('/console')}`, ...tx('common.signIn') }),
  );
}

const main = h(
  'main',
  { id: 'main', class: 'ops-main console-main' },
  h('div', { class: 'ops-title' }, h('h1', tx('console.heading')), h('div', { class: 'conn-bar' }, stateBadge, rttEl)),
  h('div', { class: 'tabs console-tabs', role: 'tablist', ...tx(null, { 'aria-label': 'console.tabs' }) }, tabButton('sb'), tabButton('raw'), isAdmin ? tabButton('api') : null),
  panels.api || panels.refused,
  workspace,
);

document.body.append(h('a', { class: 'skip-link', href: '#main', ...tx('common.skip') }), header(), main);
fillSelectLabels();
renderSaved();
const fromHash = () => {
  const want = location.hash.slice(1);
  selectTab(want === 'raw' || want === 'api' ? want : 'sb');
};
fromHash();
window.addEventListener('hashchange', fromHash);
onLangChange(() => {
  fillSelectLabels();
  fillComposerLabels();
  renderSaved();
  renderState();
  log.relabel();
});
