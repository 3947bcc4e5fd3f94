// /chat: rooms, direct messages, presence, typing, unread counts kept on the server, all
// through the browser library as a user's page would use it (the server's /switchboard.js,
// imported from beside this file so that it shares the files' cache version; see
// crates/apps/src/pages.rs). The server side is the apps
// crate's `chat.*` rpc methods (docs in crates/apps): messages go through `chat.post`
// and come back as publications on `room:ROOM` (the apps' namespace); direct messages through `chat.dm.send`
// and come as private messages (the mailbox keeps them for a user who is offline).
//
// Rooms the user has joined are all subscribed, so their unread counts are live; the
// member list of a room is its presence (a user with several tabs is one member). The
// library recovers what a dropped connection missed, so after "reconnecting…" nothing is
// missing and nothing is doubled; the page only deduplicates its own pending sends.
import { Switchboard } from '../switchboard.js';
import { h, icon, ICONS, avatar, replace } from '../lib/dom.js';
import { t, tx, languageSwitch, onLangChange } from '../lib/i18n.js';
import { me, getToken, signOut, AuthError } from '../lib/session.js';
import { Timeline } from './timeline.js';

const MAX_TEXT = 2000;
/** A room's channel: the apps keep rooms in a namespace of their own. */
const channelOf = (room) => `room:${room}`;
const PAGE = 50;
const TYPING_EVERY = 2500;
const TYPING_SHOWN = 5000;
const ROOM_RE = /^[a-z0-9-]{1,32}$/;
const NOTIFY_KEY = 'switchboard.chat.notify';

const info = await me();
if (!info.user) {
  location.replace(`/signin?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`);
  throw new Error('not signed in');
}
const ME = info.user;

/**
 * @typedef {{name: string, topic: string, online: number, offset: number, read: number, unread: number,
 *   joined: boolean, sub: any, members: Map<string, {user: string, name: string, guest: boolean, connections: number}>,
 *   timeline: Timeline, loaded: boolean, oldest: number | null, complete: boolean, typing: Map<string, {name: string, until: number}>,
 *   latest: number}} Room
 * @typedef {{user: string, name: string, unread: number, last: any, timeline: Timeline, loaded: boolean,
 *   oldest: any, complete: boolean, lastId: any}} Dm
 */

/** @type {Map<string, Room>} */
const rooms = new Map();
/** @type {Map<string, Dm>} */
const dms = new Map();
/** DM items by id, to update their state. @type {Map<string, any>} */
const dmItems = new Map();
/** @type {{kind: 'room' | 'dm', id: string}} */
let current = { kind: 'room', id: 'lobby' };
let pendingSeq = 0;
let initialOpened = false;
let connectedOnce = false;
/** True between a connect reply and the answer to the ping sent then: private messages
 * pushed meanwhile came from the mailbox, so they waited for this user: delivered late. */
let replaying = false;

const store = {
  get(key, fallback) {
    try {
      const v = JSON.parse(localStorage.getItem(key) ?? 'null');
      return v ?? fallback;
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch {
      // not remembered on this device: fine
    }
  },
};
// The rooms this page joined. Which rooms are the user's is kept on the server (a read
// position in the room), so a join or a leave follows the user to every device.
const joinedNames = new Set(['lobby']);
let notify = store.get(NOTIFY_KEY, false) && typeof Notification !== 'undefined' && Notification.permission === 'granted';

// ---- the library -------------------------------------------------------------------

const sb = new Switchboard(location.origin, {
  getToken: async () => {
    try {
      return await getToken();
    } catch (err) {
      // The session is gone (signed out elsewhere, expired): sign in again.
      if (err instanceof AuthError && err.status === 401) location.assign(`/signin?next=${encodeURIComponent('/chat')}`);
      throw err;
    }
  },
});

// ---- the page's elements -------------------------------------------------------------

const els = {
  root: h('div', { class: 'chat', id: 'chat' }),
  roomList: h('ul', { class: 'nav-list', id: 'room-list' }),
  otherList: h('ul', { class: 'nav-list', id: 'other-rooms' }),
  otherHead: h('div', { class: 'section-head' }, h('h2', tx('chat.otherRooms'))),
  dmList: h('ul', { class: 'nav-list', id: 'dm-list' }),
  title: h('h1', { id: 'conversation-title' }),
  topic: h('button', { class: 'topic', type: 'button', id: 'topic' }),
  leave: h('button', { class: 'btn small ghost', type: 'button', id: 'leave-room' }),
  banner: h('div', { class: 'banner', role: 'status', hidden: true, id: 'connection-banner' }),
  messages: h('div', { class: 'messages', role: 'log', 'aria-live': 'polite', id: 'messages', tabindex: '0' }),
  typing: h('div', { class: 'typing', 'aria-live': 'polite', id: 'typing' }),
  input: h('textarea', { id: 'composer-input', rows: 1, enterkeyhint: 'send', 'aria-describedby': 'composer-hint composer-counter' }),
  inputLabel: h('label', { for: 'composer-input', class: 'visually-hidden' }),
  counter: h('span', { class: 'counter', id: 'composer-counter' }),
  sendError: h('div', { class: 'error', role: 'alert', id: 'send-error' }),
  members: h('ul', { id: 'member-list' }),
  membersTitle: h('h2', { id: 'members-title' }),
  meState: h('span', { class: 'me-state', id: 'me-state' }),
  bell: h('button', { class: 'icon-btn', type: 'button', id: 'notify-toggle' }),
};

function iconButton(iconPath, labelKey, onClick, extra = {}) {
  return h('button', { class: 'icon-btn', type: 'button', ...tx(null, { 'aria-label': labelKey, title: labelKey }), on: { click: onClick }, ...extra }, icon(iconPath));
}

// ---- dialogs -----------------------------------------------------------------------

function dialog(id, titleKey, fields, submitKey, onSubmit) {
  const error = h('div', { class: 'error', role: 'alert' });
  const submit = h('button', { class: 'btn primary', type: 'submit', ...tx(submitKey) });
  const form = h(
    'form',
    { method: 'dialog', novalidate: true },
    h('h2', { id: `${id}-title`, ...tx(titleKey) }),
    error,
    fields,
    h('div', { class: 'dialog-actions' }, h('button', { class: 'btn', type: 'button', ...tx('common.cancel'), on: { click: () => d.close() } }), submit),
  );
  const d = h('dialog', { id, 'aria-labelledby': `${id}-title` }, form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const problem = await onSubmit();
      if (problem) error.textContent = problem;
      else d.close();
    } catch (err) {
      error.textContent = rpcWords(err);
    } finally {
      submit.disabled = false;
    }
  });
  d.addEventListener('close', () => {
    error.textContent = '';
    form.reset();
  });
  document.body.append(d);
  return d;
}

function textField(id, labelKey, props = {}, hintKey = null) {
  const input = h('input', { class: 'input', id, name: id, autocomplete: 'off', spellcheck: 'false', ...props });
  const field = h('div', { class: 'field' }, h('label', { for: id, ...tx(labelKey) }), input, hintKey ? h('span', { class: 'hint', ...tx(hintKey) }) : null);
  return { input, field };
}

const createName = textField('new-room-name', 'chat.create.name', { maxlength: 32, 'aria-describedby': 'new-room-hint' });
createName.field.append(h('span', { class: 'hint', id: 'new-room-hint', ...tx('chat.create.hint') }));
const createTopic = textField('new-room-topic', 'chat.create.topic', { maxlength: 200 });
const createDialog = dialog('create-room', 'chat.create.title', [createName.field, createTopic.field], 'chat.create.submit', async () => {
  const name = createName.input.value.trim().toLowerCase();
  if (!ROOM_RE.test(name)) return t('chat.create.invalid');
  const topic = createTopic.input.value.trim();
  const r = await sb.rpc('chat.create', topic ? { name, topic } : { name });
  const room = ensureRoom({ name: (r && r.room && r.room.name) || (typeof r.room === 'string' ? r.room : name), topic });
  joinRoom(room);
  claim(room);
  open({ kind: 'room', id: room.name });
  return null;
});

const topicInput = textField('topic-input', 'chat.topic.label', { maxlength: 200 });
const topicDialog = dialog('edit-topic', 'chat.topic.title', [topicInput.field], 'common.save', async () => {
  await sb.rpc('chat.topic', { room: current.id, topic: topicInput.input.value.trim() });
  return null;
});

const dmName = textField('dm-name', 'chat.dm.name', { maxlength: 32 });
const dmDialog = dialog('new-dm', 'chat.dm.title', [dmName.field], 'chat.dm.start', async () => {
  const name = dmName.input.value.trim();
  if (!name) return t('chat.dm.nameMissing');
  const id = name.toLowerCase();
  if (id === ME.id) return t('chat.dm.self');
  const dm = ensureDm(id, name);
  open({ kind: 'dm', id: dm.user });
  return null;
});

// ---- words -------------------------------------------------------------------------

/** An rpc error in words: the server's own message for a refusal, ours otherwise. */
function rpcWords(err) {
  if (!err) return t('chat.err.unknown');
  if (err.code === 119 && err.message) return err.message;
  if (err.code === 'disconnected') return t('chat.err.disconnected');
  if (err.code === 'timeout') return t('chat.err.timeout');
  if (err.code === 'closed') return t('chat.err.closed');
  if (err.code === 111 || err.code === 'too_many_requests') return t('chat.err.rate');
  if (err.code === 103) return t('chat.err.denied');
  return err.message || String(err);
}

function displayName(pubInfo) {
  return (pubInfo && pubInfo.info && pubInfo.info.name) || (pubInfo && pubInfo.user) || t('chat.server');
}

function msTime(x) {
  const n = Number(x);
  if (!Number.isFinite(n) || n <= 0) return Date.now();
  return n < 1e12 ? n * 1000 : n;
}

// ---- rooms -------------------------------------------------------------------------

/** @returns {Room} */
function ensureRoom(r) {
  let room = rooms.get(r.name);
  if (!room) {
    room = {
      name: r.name,
      topic: r.topic || '',
      online: r.online || 0,
      offset: r.offset || 0,
      read: r.read || 0,
      // The server's read position: null until the user first opened the room (the
      // server counts nothing unread before, and it makes the room the user's).
      serverRead: typeof r.read === 'number' ? r.read : null,
      // Whether the last room list from the server had a read position here.
      seenOnServer: false,
      unread: r.unread || 0,
      joined: false,
      sub: null,
      members: new Map(),
      timeline: null,
      loaded: false,
      oldest: null,
      complete: false,
      typing: new Map(),
      latest: r.offset || 0,
    };
    const roomRef = room;
    room.timeline = new Timeline(els.messages, { stateText: stateText, onLoadOlder: () => loadOlderRoom(roomRef) });
    rooms.set(r.name, room);
  } else {
    if (r.topic !== undefined) room.topic = r.topic || '';
    if (typeof r.online === 'number' && !room.joined) room.online = r.online;
    if (typeof r.offset === 'number') room.offset = Math.max(room.offset, r.offset);
  }
  return room;
}

/** Subscribes to the room: its messages, presence and typing from now on. */
function joinRoom(room) {
  joinedNames.add(room.name);
  if (room.joined) return;
  room.joined = true;
  room.sub = sb.subscribe(channelOf(room.name), {
    onPublication: (p) => onRoomPublication(room, p),
    onJoin: (e) => onPresence(room, e.info, 1),
    onLeave: (e) => onPresence(room, e.info, -1),
    onSubscribed: () => onRoomSubscribed(room),
    onRecoveryFailed: () => reloadRoom(room),
    onError: (err) => {
      room.joined = false;
      room.sub = null;
      showSendError(rpcWords(err));
      renderSidebar();
    },
  });
  renderSidebar();
}

/**
 * Makes a room the user's on the server: a first read position, at the room's newest
 * offset (joining does not make its past unread). From then on the server counts its
 * unread messages for the user, and the room is joined on the user's other devices.
 */
function claim(room) {
  if (room.serverRead !== null) return;
  room.serverRead = room.offset;
  room.read = Math.max(room.read, room.offset);
  sb.rpc('chat.read', { room: room.name, offset: room.offset }).catch(() => {
    room.serverRead = null;
  });
}

/** Leaves the room: on the server (every device), then here. */
async function leaveRoom(room) {
  if (room.name === 'lobby' || !room.sub) return;
  await sb.rpc('chat.leave', { room: room.name }).catch(() => {});
  await dropRoom(room);
}

/** Stops following the room on this page (left here or on another device). */
async function dropRoom(room) {
  if (room.name === 'lobby' || !room.sub) return;
  joinedNames.delete(room.name);
  room.serverRead = null;
  room.seenOnServer = false;
  const sub = room.sub;
  room.sub = null;
  room.joined = false;
  room.members.clear();
  room.loaded = false;
  room.timeline.items = [];
  room.timeline.start = null;
  await sub.unsubscribe().catch(() => {});
  open({ kind: 'room', id: 'lobby' });
}

async function onRoomSubscribed(room) {
  try {
    const p = await room.sub.presence();
    room.members.clear();
    for (const e of Object.values(p.presence || {})) {
      room.members.set(e.user, { user: e.user, name: (e.info && e.info.name) || e.user, guest: !!(e.info && e.info.guest), connections: e.connections || 1 });
    }
    room.online = room.members.size;
  } catch {
    // the next join/leave events keep the list going
  }
  if (!room.loaded) await loadRoomHistory(room);
  renderSidebar();
  if (isCurrent('room', room.name)) {
    renderMembers();
    maybeMarkRead();
  }
}

async function loadRoomHistory(room) {
  try {
    const hist = await sb.history(channelOf(room.name), { limit: PAGE });
    const items = hist.publications.filter((p) => p.data && p.data.type === 'message').map((p) => roomItem(p));
    room.loaded = true;
    room.latest = Math.max(room.latest, hist.offset || 0);
    if (hist.publications.length) room.oldest = hist.publications[0].offset;
    room.complete = hist.publications.length < PAGE;
    // Publications delivered while history was on its way are kept; history fills in before them.
    const known = new Set(room.timeline.items.filter((i) => i.kind === 'msg' && i.offset !== undefined).map((i) => i.offset));
    const older = items.filter((i) => !known.has(i.offset));
    room.timeline.items.unshift(...older);
    room.timeline.items.sort((a, b) => order(a) - order(b));
    updateEdge(room);
    if (isCurrent('room', room.name)) room.timeline.show();
  } catch (err) {
    showSendError(rpcWords(err));
  }
}

/** Sort key keeping messages in offset order, notices and pending sends after them. */
function order(item) {
  if (item.kind === 'msg' && item.offset !== undefined && !item.pending) return item.offset;
  return Number.MAX_SAFE_INTEGER;
}

function updateEdge(room) {
  room.timeline.setEdge({
    canLoadOlder: !room.complete && room.oldest !== null,
    loading: false,
    start: room.complete ? { title: `#${room.name}`, lead: t('chat.start.room', { room: room.name }) } : null,
  });
}

async function loadOlderRoom(room) {
  if (room.oldest === null || room.complete) return;
  room.timeline.setEdge({ canLoadOlder: true, loading: true, start: null });
  try {
    const hist = await sb.history(channelOf(room.name), { before: room.oldest, limit: PAGE });
    if (hist.publications.length) room.oldest = hist.publications[0].offset;
    room.complete = hist.publications.length < PAGE;
    const items = hist.publications.filter((p) => p.data && p.data.type === 'message').map((p) => roomItem(p));
    updateEdge(room);
    room.timeline.prepend(items);
  } catch (err) {
    updateEdge(room);
    showSendError(rpcWords(err));
  }
}

/** Too much was missed to recover: start the room over from history. */
async function reloadRoom(room) {
  room.loaded = false;
  room.oldest = null;
  room.complete = false;
  room.timeline.items = room.timeline.items.filter((i) => i.kind === 'msg' && i.pending);
  await loadRoomHistory(room);
}

function roomItem(p) {
  const user = (p.info && p.info.user) || '';
  return {
    kind: 'msg',
    key: `o${p.offset}`,
    user: user || 'server',
    name: displayName(p.info),
    guest: !!(p.info && p.info.info && p.info.info.guest),
    text: String((p.data && p.data.text) ?? ''),
    time: msTime(p.time),
    offset: p.offset,
    own: user === ME.id,
  };
}

function onRoomPublication(room, p) {
  const d = p.data || {};
  if (p.ephemeral) {
    if (d.type === 'typing' && p.info && p.info.user !== ME.id) {
      room.typing.set(p.info.user, { name: displayName(p.info), until: Date.now() + TYPING_SHOWN });
      if (isCurrent('room', room.name)) renderTyping();
      setTimeout(() => isCurrent('room', room.name) && renderTyping(), TYPING_SHOWN + 50);
    }
    return;
  }
  room.latest = Math.max(room.latest, p.offset);
  room.offset = Math.max(room.offset, p.offset);
  if (d.type === 'topic') {
    room.topic = String(d.topic ?? '');
    room.timeline.append({ kind: 'notice', key: `o${p.offset}`, event: 'topic', name: displayName(p.info), topic: room.topic, time: msTime(p.time) });
    if (isCurrent('room', room.name)) renderHeader();
    return;
  }
  if (d.type !== 'message') return;
  const item = roomItem(p);
  if (p.info) room.typing.delete(p.info.user);
  // Our own send, shown as pending until now: it becomes this message.
  const pending = room.timeline.items.find((i) => i.kind === 'msg' && i.pending && i.offset === p.offset);
  if (pending) room.timeline.items.splice(room.timeline.items.indexOf(pending), 1);
  const added = room.timeline.insert(item);
  if (pending && room.timeline.active) room.timeline.render();
  if (!added) return;
  if (isCurrent('room', room.name)) renderTyping();
  if (!item.own && p.offset > room.read) {
    if (isCurrent('room', room.name) && visible() && room.timeline.atBottom()) maybeMarkRead();
    else {
      room.unread++;
      notifyUser(`#${room.name}`, item.name, item.text, { kind: 'room', id: room.name });
    }
  }
  renderSidebar();
}

function onPresence(room, who, delta) {
  if (!who || !who.user) return;
  const m = room.members.get(who.user);
  const name = (who.info && who.info.name) || who.user;
  if (delta > 0) {
    if (m) m.connections++;
    else {
      room.members.set(who.user, { user: who.user, name, guest: !!(who.info && who.info.guest), connections: 1 });
      if (who.user !== ME.id) room.timeline.append({ kind: 'notice', key: `n${++pendingSeq}`, event: 'join', name, time: Date.now() });
    }
  } else if (m) {
    m.connections--;
    if (m.connections <= 0) {
      room.members.delete(who.user);
      room.typing.delete(who.user);
      if (who.user !== ME.id) room.timeline.append({ kind: 'notice', key: `n${++pendingSeq}`, event: 'leave', name, time: Date.now() });
    }
  }
  room.online = room.members.size;
  renderSidebar();
  if (isCurrent('room', room.name)) {
    renderMembers();
    renderTyping();
  }
}

// ---- direct messages ---------------------------------------------------------------

/** @returns {Dm} */
function ensureDm(user, name) {
  let dm = dms.get(user);
  if (!dm) {
    dm = { user, name: name || user, unread: 0, last: null, timeline: null, loaded: false, oldest: null, complete: false, lastId: null };
    const ref = dm;
    dm.timeline = new Timeline(els.messages, { stateText, onLoadOlder: () => loadOlderDm(ref) });
    dms.set(user, dm);
  } else if (name && dm.name === dm.user) dm.name = name;
  return dm;
}

function dmItem(m, dm) {
  const own = m.from === ME.id;
  const item = {
    kind: 'msg',
    key: `d${m.id}`,
    id: m.id,
    user: m.from,
    name: own ? ME.name : m.from_name || dm.name,
    text: String(m.text ?? ''),
    time: msTime(m.time),
    state: m.state || 'delivered',
    late: !!m.late,
    own,
    peer: own ? m.to : m.from,
  };
  dmItems.set(String(m.id), item);
  return item;
}

async function loadDmHistory(dm, before) {
  const r = await sb.rpc('chat.dm.history', before !== undefined ? { with: dm.user, before, limit: PAGE } : { with: dm.user, limit: PAGE });
  const messages = (r && r.messages) || [];
  if (messages.length) dm.oldest = messages[0].id;
  dm.complete = messages.length < PAGE;
  const items = [];
  for (const m of messages) {
    const shown = dmItems.get(String(m.id));
    if (!shown) {
      items.push(dmItem(m, dm));
      continue;
    }
    // Already shown (a push): the server's word on its state and lateness wins.
    if (m.late) shown.late = true;
    if (shown.own && m.state) shown.state = m.state;
  }
  // Ours to confirm: messages to us that the server still holds as stored.
  const undelivered = messages.filter((m) => m.to === ME.id && m.state === 'stored').map((m) => m.id);
  if (undelivered.length) sb.rpc('chat.dm.delivered', { ids: undelivered }).catch(() => {});
  return items;
}

async function openDmHistory(dm) {
  if (dm.loaded) return;
  try {
    const items = await loadDmHistory(dm);
    dm.timeline.items.unshift(...items);
    dm.timeline.items.sort((a, b) => (a.pending ? 1 : 0) - (b.pending ? 1 : 0) || a.time - b.time);
    dm.loaded = true;
    const last = dm.timeline.items.filter((i) => i.kind === 'msg' && !i.pending).at(-1);
    if (last) dm.lastId = last.id;
    updateDmEdge(dm);
    if (isCurrent('dm', dm.user)) {
      dm.timeline.show();
      maybeMarkRead();
    }
  } catch (err) {
    showSendError(rpcWords(err));
  }
}

function updateDmEdge(dm) {
  dm.timeline.setEdge({
    canLoadOlder: !dm.complete && dm.oldest !== null,
    loading: false,
    start: dm.complete ? { title: dm.name, lead: t('chat.start.dm', { name: dm.name }) } : null,
  });
}

async function loadOlderDm(dm) {
  dm.timeline.setEdge({ canLoadOlder: true, loading: true, start: null });
  try {
    const items = await loadDmHistory(dm, dm.oldest);
    updateDmEdge(dm);
    dm.timeline.prepend(items);
  } catch (err) {
    updateDmEdge(dm);
    showSendError(rpcWords(err));
  }
}

const toConfirm = new Set();
function confirmDelivered(id) {
  toConfirm.add(id);
  if (toConfirm.size > 1) return;
  queueMicrotask(() => {
    const ids = [...toConfirm];
    toConfirm.clear();
    sb.rpc('chat.dm.delivered', { ids }).catch(() => {});
  });
}

function onPrivateMessage(m) {
  const d = m.data || {};
  if (d.type === 'dm.state') {
    const item = dmItems.get(String(d.id));
    if (!item) return;
    if (d.state === 'delivered' && item.state === 'stored') item.late = true;
    item.state = d.state;
    const dm = dms.get(item.own ? dmPeerOf(item) : item.user);
    if (dm) dm.timeline.refresh(item.key);
    return;
  }
  if (d.type !== 'dm') return;
  const own = d.from === ME.id;
  const peer = own ? d.to : d.from;
  const dm = ensureDm(peer, own ? undefined : d.from_name);
  dm.last = msTime(d.time);
  if (dmItems.has(String(d.id))) {
    // our own send, echoed to this device: already shown
    const item = dmItems.get(String(d.id));
    if (item.pending) {
      item.pending = false;
      dm.timeline.refresh(item.key);
    }
    return;
  }
  const item = dmItem({ ...d, state: own ? d.state || 'sent' : 'delivered', late: !own && replaying }, dm);
  dm.timeline.append(item);
  dm.lastId = d.id;
  if (!own) {
    confirmDelivered(d.id);
    if (isCurrent('dm', peer) && visible() && dm.timeline.atBottom()) maybeMarkRead();
    else {
      dm.unread++;
      notifyUser(dm.name, dm.name, item.text, { kind: 'dm', id: peer });
    }
  }
  renderSidebar();
}

function dmPeerOf(item) {
  return item.peer || (current.kind === 'dm' ? current.id : '');
}

// ---- sending -----------------------------------------------------------------------

function stateText(item) {
  if (item.pending) return item.failed ? t('chat.state.failed') : t('chat.state.sending');
  if (!item.key.startsWith('d')) return null;
  if (item.late && !item.own) return t('chat.state.late');
  if (!item.own) return null;
  if (item.state === 'stored') return t('chat.state.stored', { name: (dms.get(dmPeerOf(item)) || { name: '' }).name });
  if (item.state === 'delivered') return item.late ? t('chat.state.deliveredLate') : t('chat.state.delivered');
  return t('chat.state.sent');
}

async function send() {
  const text = els.input.value;
  if (!text.trim()) return;
  if ([...text].length > MAX_TEXT) {
    showSendError(t('chat.err.tooLong', { max: MAX_TEXT }));
    return;
  }
  els.input.value = '';
  lastTyping = 0; // the next keystroke says "typing" again at once
  updateCounter();
  showSendError('');
  const target = { ...current };
  const tl = conversation(target).timeline;
  const item = { kind: 'msg', key: `p${++pendingSeq}`, user: ME.id, name: ME.name, guest: !!ME.guest, text, time: Date.now(), pending: true, own: true };
  item.peer = target.kind === 'dm' ? target.id : undefined;
  const attempt = async () => {
    item.failed = false;
    tl.refresh(item.key);
    try {
      if (target.kind === 'room') {
        const r = await sb.rpc('chat.post', { room: target.id, text });
        const room = rooms.get(target.id);
        if (room && room.timeline.items.some((i) => i.kind === 'msg' && !i.pending && i.offset === r.offset)) tl.remove(item.key);
        else item.offset = r.offset;
      } else {
        const r = await sb.rpc('chat.dm.send', { to: target.id, text });
        const dm = dms.get(target.id);
        const echoed = dmItems.get(String(r.id));
        if (echoed && echoed !== item) {
          // The copy sent to this user's devices came first: it stays, with the state.
          echoed.state = r.state;
          tl.remove(item.key);
        } else {
          item.pending = false;
          item.key = `d${r.id}`;
          item.id = r.id;
          item.state = r.state;
          item.time = msTime(r.time);
          dmItems.set(String(r.id), item);
          if (dm) {
            dm.last = item.time;
            dm.lastId = r.id;
          }
          tl.render();
          renderSidebar();
        }
      }
    } catch (err) {
      item.failed = true;
      showSendError(rpcWords(err));
      tl.refresh(item.key);
    }
  };
  item.retry = () => attempt();
  item.discard = () => tl.remove(item.key);
  tl.append(item);
  tl.scrollToBottom();
  await attempt();
}

let lastTyping = 0;
function typed() {
  updateCounter();
  if (current.kind !== 'room' || !els.input.value.trim()) return;
  const now = Date.now();
  if (now - lastTyping < TYPING_EVERY) return;
  lastTyping = now;
  sb.rpc('chat.typing', { room: current.id }).catch(() => {});
}

function updateCounter() {
  const n = [...els.input.value].length;
  els.counter.textContent = t('chat.counter', { n, max: MAX_TEXT });
  els.counter.classList.toggle('over', n > MAX_TEXT);
}

function showSendError(text) {
  els.sendError.textContent = text;
}

// ---- read positions and the title -------------------------------------------------

function visible() {
  return document.visibilityState === 'visible';
}

let readTimer = null;
function maybeMarkRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    readTimer = null;
    markRead();
  }, 300);
}

function markRead() {
  if (!visible()) return;
  const c = conversation(current);
  if (!c || !c.timeline.atBottom()) return;
  if (current.kind === 'room') {
    const room = /** @type {Room} */ (c);
    const offset = Math.max(room.latest, room.offset);
    if (!room.joined || !room.loaded) return;
    if (room.serverRead !== null && offset <= room.serverRead && room.unread === 0) return;
    room.read = Math.max(room.read, offset);
    room.serverRead = room.read;
    room.unread = 0;
    sb.rpc('chat.read', { room: room.name, offset: room.read }).catch(() => {
      room.serverRead = null; // said again next time
    });
  } else {
    const dm = /** @type {Dm} */ (c);
    if (dm.unread === 0 && dm.lastId === dm.readId) return;
    dm.unread = 0;
    if (dm.lastId !== null && dm.lastId !== undefined) {
      dm.readId = dm.lastId;
      sb.rpc('chat.read', { dm: dm.user, id: dm.lastId }).catch(() => {});
    }
  }
  renderSidebar();
}

function totalUnread() {
  let n = 0;
  for (const r of rooms.values()) if (r.joined) n += r.unread;
  for (const d of dms.values()) n += d.unread;
  return n;
}

function updateTitle() {
  const n = totalUnread();
  const where = current.kind === 'room' ? `#${current.id}` : (dms.get(current.id) || { name: current.id }).name;
  document.title = `${n ? `(${n}) ` : ''}${where} · Switchboard`;
}

// ---- notifications -----------------------------------------------------------------

function notifyUser(where, name, text, target) {
  if (!notify || visible() || typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
  try {
    const n = new Notification(`${name} · ${where}`, { body: text.slice(0, 200), tag: `${target.kind}:${target.id}` });
    n.onclick = () => {
      window.focus();
      open(target);
      n.close();
    };
  } catch {
    // some browsers only allow notifications from a service worker
  }
}

async function toggleNotify() {
  if (typeof Notification === 'undefined') return;
  if (notify) {
    notify = false;
  } else {
    const p = Notification.permission === 'default' ? await Notification.requestPermission() : Notification.permission;
    notify = p === 'granted';
  }
  store.set(NOTIFY_KEY, notify);
  renderMe();
}

// ---- rendering -------------------------------------------------------------------

function isCurrent(kind, id) {
  return current.kind === kind && current.id === id;
}

function conversation(target) {
  return target.kind === 'room' ? rooms.get(target.id) : dms.get(target.id);
}

/**
 * A sidebar entry. What the eye gets from the counts, a screen reader gets as words in
 * the button's text (visually hidden), so its accessible name contains what is seen.
 */
function navItem({ label, iconNode, count, unread, currentItem, onClick, prefix }) {
  return h(
    'li',
    null,
    h(
      'button',
      {
        class: `nav-item${unread ? ' unread' : ''}`,
        type: 'button',
        'aria-current': currentItem ? 'true' : null,
        on: { click: onClick },
      },
      iconNode,
      prefix ? h('span', { class: 'visually-hidden' }, prefix) : null,
      h('span', { class: 'name' }, label),
      count !== null && count !== undefined
        ? [
            h('span', { class: 'count', 'aria-hidden': 'true' }, h('span', { class: `presence-dot${count > 0 ? ' on' : ''}` }), String(count)),
            h('span', { class: 'visually-hidden' }, `, ${t('chat.a11y.online', { count })}`),
          ]
        : null,
      unread
        ? [h('span', { class: 'badge', 'aria-hidden': 'true' }, unread > 99 ? '99+' : String(unread)), h('span', { class: 'visually-hidden' }, `, ${t('chat.a11y.unread', { count: unread })}`)]
        : null,
    ),
  );
}

function isOnline(user) {
  for (const r of rooms.values()) if (r.members.has(user)) return true;
  return false;
}

function renderSidebar() {
  const joined = [...rooms.values()].filter((r) => r.joined).sort((a, b) => (a.name === 'lobby' ? -1 : b.name === 'lobby' ? 1 : a.name.localeCompare(b.name)));
  const others = [...rooms.values()].filter((r) => !r.joined).sort((a, b) => a.name.localeCompare(b.name));
  replace(
    els.roomList,
    joined.map((r) =>
      navItem({
        label: r.name,
        iconNode: icon(ICONS.hash),
        count: r.online,
        unread: r.unread,
        currentItem: isCurrent('room', r.name),
        onClick: () => open({ kind: 'room', id: r.name }),
      }),
    ),
  );
  els.otherHead.hidden = others.length === 0;
  replace(
    els.otherList,
    others.map((r) =>
      navItem({
        label: r.name,
        iconNode: icon(ICONS.hash),
        count: r.online,
        unread: 0,
        currentItem: isCurrent('room', r.name),
        prefix: t('chat.joinPrefix'),
        onClick: () => {
          joinRoom(r);
          claim(r);
          open({ kind: 'room', id: r.name });
        },
      }),
    ),
  );
  for (const b of els.otherList.querySelectorAll('.nav-item')) b.classList.add('other');
  const list = [...dms.values()].sort((a, b) => (Number(b.last) || 0) - (Number(a.last) || 0));
  replace(
    els.dmList,
    list.length
      ? list.map((d) =>
          navItem({
            label: d.name,
            iconNode: h('span', { class: `presence-dot${isOnline(d.user) ? ' on' : ''}`, 'aria-hidden': 'true' }),
            count: null,
            unread: d.unread,
            currentItem: isCurrent('dm', d.user),
            onClick: () => open({ kind: 'dm', id: d.user }),
          }),
        )
      : h('li', { class: 'nav-empty', ...tx('chat.dm.none') }),
  );
  updateTitle();
}

function renderHeader() {
  if (current.kind === 'room') {
    const room = rooms.get(current.id);
    replace(els.title, icon(ICONS.hash), h('span', null, current.id));
    els.topic.textContent = room && room.topic ? room.topic : t('chat.topic.none');
    els.topic.classList.remove('static');
    els.topic.disabled = false;
    els.topic.setAttribute('aria-label', t('chat.topic.edit', { topic: room && room.topic ? room.topic : t('chat.topic.none') }));
    els.leave.hidden = current.id === 'lobby' || !(room && room.joined);
    els.leave.textContent = t('chat.leave');
    els.inputLabel.textContent = t('chat.input.room', { room: current.id });
    els.input.setAttribute('placeholder', t('chat.input.room', { room: current.id }));
    els.messages.setAttribute('aria-label', t('chat.messages.room', { room: current.id }));
  } else {
    const dm = dms.get(current.id);
    const name = dm ? dm.name : current.id;
    replace(els.title, icon(ICONS.at), h('span', null, name));
    els.topic.textContent = t('chat.dm.with', { name });
    els.topic.classList.add('static');
    els.topic.disabled = true;
    els.topic.removeAttribute('aria-label');
    els.leave.hidden = true;
    els.inputLabel.textContent = t('chat.input.dm', { name });
    els.input.setAttribute('placeholder', t('chat.input.dm', { name }));
    els.messages.setAttribute('aria-label', t('chat.messages.dm', { name }));
  }
  updateTitle();
}

function renderMembers() {
  const room = current.kind === 'room' ? rooms.get(current.id) : null;
  const members = room ? [...room.members.values()].sort((a, b) => (a.user === ME.id ? -1 : b.user === ME.id ? 1 : a.name.localeCompare(b.name))) : [];
  els.membersTitle.textContent = room ? t('chat.members.count', { count: members.length }) : t('chat.members');
  replace(
    els.members,
    members.map((m) => {
      const self = m.user === ME.id;
      const canDm = !self && !ME.guest && !m.guest;
      return h(
        'li',
        null,
        h(
          'button',
          {
            class: `member${canDm ? '' : ' self'}`,
            type: 'button',
            disabled: canDm ? null : true,
            on: {
              click: () => {
                if (!canDm) return;
                ensureDm(m.user, m.name);
                open({ kind: 'dm', id: m.user });
              },
            },
          },
          avatar(m.user, m.name, 'avatar small'),
          h('span', { class: 'name' }, m.name),
          canDm ? h('span', { class: 'visually-hidden' }, `, ${t('chat.member.dmHint')}`) : null,
          m.guest ? h('span', { class: 'tag' }, t('common.guest')) : null,
          self ? h('span', { class: 'tag' }, t('chat.you')) : null,
        ),
      );
    }),
  );
  if (!room) els.members.append(h('li', { class: 'empty' }, t('chat.members.dm')));
}

function renderTyping() {
  const room = current.kind === 'room' ? rooms.get(current.id) : null;
  const now = Date.now();
  const names = [];
  if (room) {
    for (const [user, v] of room.typing) {
      if (v.until < now || !room.members.has(user)) room.typing.delete(user);
      else names.push(v.name);
    }
  }
  let text = '';
  if (names.length === 1) text = t('chat.typing.one', { name: names[0] });
  else if (names.length === 2) text = t('chat.typing.two', { a: names[0], b: names[1] });
  else if (names.length > 2) text = t('chat.typing.many');
  if (els.typing.textContent !== text) els.typing.textContent = text;
}

function renderMe() {
  const state = sb.readyState === 1 ? t('chat.me.online') : t('chat.me.connecting');
  els.meState.textContent = ME.guest ? `${t('common.guest')} · ${state}` : state;
  replace(els.bell, icon(ICONS.bell));
  els.bell.setAttribute('aria-pressed', String(notify));
  const label = notify ? t('chat.notify.off') : t('chat.notify.on');
  els.bell.setAttribute('aria-label', label);
  els.bell.setAttribute('title', label);
  els.bell.hidden = typeof Notification === 'undefined';
}

let bannerState = 'connecting';
function renderBanner() {
  if (bannerState === 'ok') {
    els.banner.hidden = true;
    return;
  }
  els.banner.hidden = false;
  if (bannerState === 'offline') {
    replace(
      els.banner,
      h('span', null, t('chat.offline')),
      h('button', { class: 'btn small', type: 'button', on: { click: () => sb.connect() } }, t('chat.reconnect')),
    );
  } else {
    replace(els.banner, h('span', { class: 'spinner', 'aria-hidden': 'true' }), h('span', null, t(bannerState === 'connecting' ? 'chat.connecting' : 'chat.reconnecting')));
  }
}

/** Shows a conversation. */
function open(target) {
  // A read position still waiting for its timer belongs to the conversation being left:
  // say it now, or switching within the delay would lose it.
  if (readTimer !== null) {
    clearTimeout(readTimer);
    readTimer = null;
    markRead();
  }
  const before = conversation(current);
  if (before) before.timeline.hide();
  current = { ...target };
  history.replaceState(null, '', target.kind === 'room' ? `/chat#${target.id}` : `/chat#@${target.id}`);
  closeDrawers();
  const c = conversation(current);
  renderHeader();
  renderSidebar();
  renderMembers();
  renderTyping();
  showSendError('');
  if (!c) return;
  c.timeline.show();
  if (current.kind === 'room') {
    const room = /** @type {Room} */ (c);
    if (room.joined && room.loaded) updateEdge(room);
  } else {
    const dm = /** @type {Dm} */ (c);
    if (!dm.loaded) openDmHistory(dm);
    else updateDmEdge(dm);
  }
  maybeMarkRead();
}

function closeDrawers() {
  els.root.classList.remove('drawer-open', 'members-open');
}

function toggleMembers() {
  if (window.matchMedia('(max-width: 760px)').matches) {
    els.root.classList.toggle('members-open');
  } else {
    els.root.classList.toggle('members-hidden');
  }
}

function layout() {
  const me = h(
    'div',
    { class: 'me' },
    avatar(ME.id, ME.name),
    h('div', { class: 'me-name' }, ME.name, els.meState),
    els.bell,
    iconButton(ICONS.out, 'common.signOut', () => {
      sb.close();
      signOut('/');
    }),
  );
  const sidebar = h(
    'nav',
    { class: 'sidebar', id: 'sidebar', ...tx(null, { 'aria-label': 'chat.sidebar' }) },
    h(
      'div',
      { class: 'sidebar-head' },
      h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark' }, icon(ICONS.chat)), 'Switchboard'),
      h('span', { class: 'spacer' }),
      languageSwitch(),
    ),
    h(
      'div',
      { class: 'sidebar-scroll' },
      h('div', { class: 'section-head' }, h('h2', tx('chat.rooms')), iconButton(ICONS.plus, 'chat.create.title', () => createDialog.showModal())),
      els.roomList,
      els.otherHead,
      els.otherList,
      // Direct conversations need an account (the server refuses guests).
      ME.guest ? null : h('div', { class: 'section-head' }, h('h2', tx('chat.dms')), iconButton(ICONS.plus, 'chat.dm.title', () => dmDialog.showModal())),
      ME.guest ? null : els.dmList,
    ),
    me,
  );
  els.leave.addEventListener('click', () => {
    const room = rooms.get(current.id);
    if (room) leaveRoom(room);
  });
  els.topic.addEventListener('click', () => {
    if (current.kind !== 'room') return;
    topicInput.input.value = (rooms.get(current.id) || { topic: '' }).topic;
    topicDialog.showModal();
  });
  const head = h(
    'header',
    { class: 'room-head' },
    iconButton(ICONS.menu, 'chat.openRooms', () => els.root.classList.add('drawer-open'), { class: 'icon-btn menu-btn' }),
    els.title,
    els.topic,
    els.leave,
    iconButton(ICONS.users, 'chat.toggleMembers', toggleMembers),
  );
  const send = h('button', { class: 'btn primary send', type: 'submit', ...tx(null, { 'aria-label': 'chat.send', title: 'chat.send' }) }, icon(ICONS.send));
  const composer = h(
    'form',
    {
      class: 'composer',
      novalidate: true,
      on: {
        submit: (e) => {
          e.preventDefault();
          send.blur();
          send.disabled = false;
          sendMessage();
        },
      },
    },
    els.sendError,
    h('div', { class: 'composer-box' }, els.inputLabel, els.input, send),
    h('div', { class: 'composer-foot' }, h('span', { id: 'composer-hint', ...tx('chat.hint') }), els.counter),
  );
  const main = h('main', { class: 'main', id: 'main' }, head, els.banner, els.messages, els.typing, composer);
  const aside = h(
    'aside',
    { class: 'members', id: 'members', 'aria-labelledby': 'members-title' },
    h('div', { class: 'members-head' }, els.membersTitle, iconButton(ICONS.close, 'common.close', toggleMembers, { class: 'icon-btn menu-btn' })),
    els.members,
  );
  const scrim = h('div', { class: 'scrim', on: { click: closeDrawers } });
  els.root.append(sidebar, main, aside, scrim);
  if (window.matchMedia('(max-width: 1100px) and (min-width: 761px)').matches) els.root.classList.add('members-hidden');
  document.body.append(h('a', { class: 'skip-link', href: '#composer-input', ...tx('chat.skip') }), els.root);
}

function sendMessage() {
  send().catch((err) => showSendError(rpcWords(err)));
}

// ---- wiring ------------------------------------------------------------------------

layout();
updateCounter();
renderMe();
renderBanner();

els.input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    sendMessage();
  }
});
els.input.addEventListener('input', typed);
els.messages.addEventListener('scroll', () => {
  if (conversation(current)?.timeline.atBottom()) maybeMarkRead();
});
document.addEventListener('visibilitychange', () => visible() && maybeMarkRead());
window.addEventListener('focus', () => maybeMarkRead());
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && (els.root.classList.contains('drawer-open') || els.root.classList.contains('members-open'))) closeDrawers();
});
setInterval(() => renderTyping(), 1000);

sb.on('message', onPrivateMessage);
sb.on('connecting', () => {
  if (!connectedOnce) bannerState = 'connecting';
  renderBanner();
  renderMe();
});
sb.on('connected', async () => {
  connectedOnce = true;
  bannerState = 'ok';
  renderBanner();
  renderMe();
  replaying = true;
  sb.ping().then(
    () => (replaying = false),
    () => (replaying = false),
  );
  await refreshRooms();
});
sb.on('disconnected', (e) => {
  bannerState = e.reconnect ? 'reconnecting' : 'offline';
  renderBanner();
  renderMe();
});

let roomsTimer = null;
sb.subscribe('apps:rooms', {
  onPublication: () => {
    clearTimeout(roomsTimer);
    roomsTimer = setTimeout(refreshRooms, 250);
  },
  onError: () => {},
});

/** Asks the server for the rooms and DM conversations, with unread counts. */
async function refreshRooms() {
  let r;
  try {
    r = await sb.rpc('chat.rooms', {});
  } catch (err) {
    showSendError(rpcWords(err));
    return;
  }
  for (const x of r.rooms || []) {
    const room = ensureRoom(x);
    if (typeof x.read === 'number') {
      room.read = Math.max(room.read, x.read);
      room.serverRead = Math.max(room.serverRead ?? 0, x.read);
    }
    if (typeof x.unread === 'number') room.unread = isCurrent('room', room.name) && visible() && room.timeline.atBottom() && room.loaded ? 0 : x.unread;
    // The user's rooms are those with a read position on the server (joined here or on
    // another device); one that had a position and lost it was left on another device.
    const hasRead = typeof x.read === 'number';
    const wanted = joinedNames.has(room.name) || room.name === 'lobby' || hasRead;
    if (wanted && !room.joined) joinRoom(room);
    if (room.joined && !hasRead) {
      // Only a position the server itself reported counts as lost: a claim still on its
      // way is not a leave.
      if (room.seenOnServer && room.name !== 'lobby') dropRoom(room);
      else claim(room);
    }
    room.seenOnServer = hasRead;
  }
  for (const x of r.dms || []) {
    const dm = ensureDm(x.user, x.name);
    if (typeof x.unread === 'number') dm.unread = isCurrent('dm', dm.user) && visible() ? 0 : x.unread;
    if (x.last !== undefined && x.last !== null) dm.last = typeof x.last === 'object' ? msTime(x.last.time) : msTime(x.last);
  }
  renderSidebar();
  if (!conversation(current) && current.kind === 'room') open({ kind: 'room', id: 'lobby' });
  else if (!initialOpened) {
    initialOpened = true;
    open(current);
  } else {
    renderHeader();
    maybeMarkRead();
  }
}

onLangChange(() => {
  renderSidebar();
  renderHeader();
  renderMembers();
  renderTyping();
  renderMe();
  renderBanner();
  updateCounter();
  const c = conversation(current);
  if (c) {
    if (current.kind === 'room') updateEdge(/** @type {Room} */ (c));
    else updateDmEdge(/** @type {Dm} */ (c));
    c.timeline.render({ keepScroll: true });
  }
});

/** #room or #@user in the address: that conversation (null when neither). */
function fromHash() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith('@') && hash.length > 1) {
    ensureDm(hash.slice(1), hash.slice(1));
    return { kind: 'dm', id: hash.slice(1) };
  }
  if (ROOM_RE.test(hash)) return { kind: 'room', id: hash };
  return null;
}
const start = ME.guest && location.hash.startsWith('#@') ? null : fromHash();
if (start) {
  current = start;
  if (start.kind === 'room') joinedNames.add(start.id);
}
window.addEventListener('hashchange', async () => {
  const target = fromHash();
  if (!target || isCurrent(target.kind, target.id)) return;
  if (target.kind === 'room') {
    if (!rooms.has(target.id)) await refreshRooms();
    const room = rooms.get(target.id);
    if (!room) return;
    joinRoom(room);
  }
  open(target);
});
ensureRoom({ name: 'lobby' });
joinRoom(rooms.get('lobby'));
renderHeader();
renderSidebar();
sb.connect();

// For tests and the curious: the page's client.
Object.defineProperty(window, 'switchboard', { value: sb });
