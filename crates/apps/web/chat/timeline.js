// The message list of one conversation (a room or a DM): messages grouped by author,
// day separators, join/leave notices collapsed when many, pending and failed sends, and
// the "load older" edge. Every word of data goes in as text (dom.js); URLs become links
// with linkify. Appends are incremental so that the list's aria-live announces only what
// is new; a prepend (older history) redraws with aria-busy set.
import { h, avatar, linkify, replace } from '../lib/dom.js';
import { t } from '../lib/i18n.js';
import { time, dateTime, day, sameDay } from '../lib/format.js';

/** Consecutive messages of one author within this many ms share one header. */
const GROUP_MS = 5 * 60 * 1000;
/** More notices in a row than this collapse into one summary line. */
const COLLAPSE = 3;

/**
 * @typedef {{kind: 'msg', key: string, user: string, name: string, guest?: boolean, text: string, time: number,
 *   offset?: number, state?: string, late?: boolean, own?: boolean, pending?: boolean, failed?: boolean,
 *   retry?: () => void, discard?: () => void}} MsgItem
 * @typedef {{kind: 'notice', key: string, event: 'join' | 'leave' | 'topic', name: string, topic?: string, time: number}} NoticeItem
 * @typedef {MsgItem | NoticeItem} Item
 */

export class Timeline {
  /**
   * @param {HTMLElement} el the scrolling list (role=log)
   * @param {{stateText: (item: MsgItem) => (string | null), onLoadOlder: () => void}} hooks
   */
  constructor(el, hooks) {
    this.el = el;
    this.hooks = hooks;
    /** @type {Item[]} */ this.items = [];
    this.edge = h('div', { class: 'load-older' });
    /** @type {{title: string, lead: string} | null} the start of the conversation, once reached */
    this.start = null;
    this.loading = false;
    this.canLoadOlder = false;
    /** @type {Map<string, HTMLElement>} rendered element of each item key */
    this.nodes = new Map();
    /** @type {Set<string>} expanded notice groups (by the key of their first notice) */
    this.expanded = new Set();
    /** Whether this conversation is the one on screen: only then is the DOM touched. */
    this.active = false;
  }

  /** Puts this conversation on screen. */
  show() {
    this.active = true;
    this.render();
    this.scrollToBottom();
  }

  hide() {
    this.active = false;
  }

  /** Whether the list is scrolled to (near) its end. */
  atBottom() {
    const el = this.el;
    return el.scrollHeight - el.scrollTop - el.clientHeight < 48;
  }

  scrollToBottom() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  /** Draws everything again (a new conversation, older history, a language switch). */
  render({ keepScroll = false } = {}) {
    const el = this.el;
    const fromBottom = el.scrollHeight - el.scrollTop;
    el.setAttribute('aria-busy', 'true');
    this.nodes.clear();
    replace(el, this.edgeNode());
    let prev = null;
    let i = 0;
    while (i < this.items.length) {
      const item = this.items[i];
      if (item.kind === 'notice') {
        let j = i;
        while (j < this.items.length && this.items[j].kind === 'notice') j++;
        const run = /** @type {NoticeItem[]} */ (this.items.slice(i, j));
        this.addDayIfNeeded(prev, run[0]);
        el.append(this.noticeNode(run));
        prev = run[run.length - 1];
        i = j;
        continue;
      }
      this.addDayIfNeeded(prev, item);
      el.append(this.msgNode(item, prev));
      prev = item;
      i++;
    }
    if (keepScroll) el.scrollTop = el.scrollHeight - fromBottom;
    el.removeAttribute('aria-busy');
  }

  edgeNode() {
    if (this.start) {
      return h('div', { class: 'history-edge' }, h('h2', null, this.start.title), h('p', null, this.start.lead));
    }
    if (!this.canLoadOlder) return h('div', { class: 'load-older', hidden: true });
    return h(
      'div',
      { class: 'load-older' },
      h('button', { class: 'btn small', type: 'button', disabled: this.loading, on: { click: () => this.hooks.onLoadOlder() } }, this.loading ? t('chat.loading') : t('chat.loadOlder')),
    );
  }

  addDayIfNeeded(prev, item) {
    if (prev && sameDay(prev.time, item.time)) return;
    this.el.append(h('div', { class: 'day', role: 'separator' }, h('span', null, day(item.time))));
  }

  /**
   * @param {MsgItem} m
   * @param {Item | null} prev
   */
  msgNode(m, prev) {
    const first =
      !prev || prev.kind !== 'msg' || prev.user !== m.user || m.time - prev.time > GROUP_MS || !sameDay(prev.time, m.time) || prev.pending !== m.pending;
    const cls = ['msg'];
    if (first) cls.push('first');
    if (m.pending) cls.push('pending');
    if (m.failed) cls.push('failed');
    const state = this.hooks.stateText(m);
    const node = h(
      'article',
      { class: cls.join(' '), 'data-key': m.key, 'aria-label': t('chat.msg.label', { name: m.name, time: time(m.time) }) },
      avatar(m.user, m.name),
      h(
        'div',
        { class: 'msg-head' },
        h('span', { class: 'msg-author' }, m.name),
        m.guest ? h('span', { class: 'tag' }, t('common.guest')) : null,
        h('time', { class: 'msg-time', datetime: new Date(m.time).toISOString(), title: dateTime(m.time) }, time(m.time)),
      ),
      h('p', { class: 'msg-body' }, linkify(m.text)),
      state ? h('span', { class: `msg-state${m.late ? ' late' : ''}` }, state) : null,
      m.failed
        ? h(
            'span',
            { class: 'msg-state' },
            h('button', { class: 'linkish', type: 'button', on: { click: () => m.retry && m.retry() } }, t('chat.retry')),
            ' · ',
            h('button', { class: 'linkish', type: 'button', on: { click: () => m.discard && m.discard() } }, t('chat.discard')),
          )
        : null,
    );
    if (!first) node.setAttribute('title', dateTime(m.time));
    this.nodes.set(m.key, node);
    return node;
  }

  /** @param {NoticeItem[]} run */
  noticeNode(run) {
    const key = run[0].key;
    const say = (n) =>
      n.event === 'topic' ? t('chat.notice.topic', { name: n.name, topic: n.topic ?? '' }) : t(n.event === 'join' ? 'chat.notice.join' : 'chat.notice.leave', { name: n.name });
    const node = h('div', { class: 'notice', 'data-key': key });
    if (run.length <= COLLAPSE) {
      run.forEach((n, i) => {
        if (i) node.append(h('span', { 'aria-hidden': 'true' }, '·'));
        node.append(h('span', null, say(n)));
      });
    } else {
      const joins = new Set(run.filter((n) => n.event === 'join').map((n) => n.name));
      const leaves = new Set(run.filter((n) => n.event === 'leave').map((n) => n.name));
      const parts = [];
      if (joins.size) parts.push(t('chat.notice.joined', { count: joins.size }));
      if (leaves.size) parts.push(t('chat.notice.left', { count: leaves.size }));
      const topics = run.filter((n) => n.event === 'topic');
      if (topics.length) parts.push(say(topics[topics.length - 1]));
      const open = this.expanded.has(key);
      node.append(h('span', null, parts.join(' · ')));
      node.append(
        h(
          'button',
          {
            class: 'linkish',
            type: 'button',
            'aria-expanded': String(open),
            on: {
              click: () => {
                if (open) this.expanded.delete(key);
                else this.expanded.add(key);
                node.replaceWith(this.noticeNode(run));
              },
            },
          },
          open ? t('chat.notice.hide') : t('chat.notice.show', { count: run.length }),
        ),
      );
      if (open) node.append(h('ul', { class: 'notice-list' }, run.map((n) => h('li', null, `${time(n.time)} · ${say(n)}`))));
    }
    this.nodes.set(key, node);
    return node;
  }

  /**
   * Adds an item at the end and draws only it (a run of notices is redrawn as one).
   * @param {Item} item
   */
  append(item) {
    const prev = this.items.length ? this.items[this.items.length - 1] : null;
    this.items.push(item);
    if (!this.active) return;
    const stick = this.atBottom();
    if (item.kind === 'notice') {
      let i = this.items.length - 1;
      while (i > 0 && this.items[i - 1].kind === 'notice') i--;
      const run = /** @type {NoticeItem[]} */ (this.items.slice(i));
      const old = this.nodes.get(run[0].key);
      if (old && run.length > 1) old.replaceWith(this.noticeNode(run));
      else {
        this.addDayIfNeeded(prev, item);
        this.el.append(this.noticeNode(run));
      }
    } else {
      this.addDayIfNeeded(prev, item);
      this.el.append(this.msgNode(item, prev));
    }
    if (stick || (item.kind === 'msg' && item.own)) this.scrollToBottom();
  }

  /**
   * Inserts a message in offset order; appended at the end it is drawn alone, otherwise
   * everything is redrawn. Returns false when its offset is there already.
   * @param {MsgItem} m
   */
  insert(m) {
    const msgs = this.items.filter((it) => it.kind === 'msg' && !it.pending && it.offset !== undefined);
    if (msgs.some((it) => it.offset === m.offset)) return false;
    const newest = msgs.length ? msgs[msgs.length - 1].offset : -Infinity;
    // Pending sends always sit last; everything else keeps its place.
    let end = this.items.length;
    while (end > 0 && this.items[end - 1].kind === 'msg' && /** @type {MsgItem} */ (this.items[end - 1]).pending) end--;
    if (m.offset > newest) {
      if (end === this.items.length) {
        this.append(m);
        return true;
      }
      this.items.splice(end, 0, m);
      if (this.active) {
        this.render();
        this.scrollToBottom();
      }
      return true;
    }
    // Older than something shown (history arriving late): before the first newer message.
    const at = this.items.findIndex((it) => it.kind === 'msg' && !it.pending && it.offset !== undefined && it.offset > m.offset);
    this.items.splice(at, 0, m);
    if (this.active) this.render({ keepScroll: !this.atBottom() });
    return true;
  }

  /** Puts older items first and redraws, keeping what is on screen in place. */
  prepend(items) {
    this.items.unshift(...items);
    if (this.active) this.render({ keepScroll: true });
  }

  /** Removes the item with `key`. */
  remove(key) {
    const i = this.items.findIndex((it) => it.key === key);
    if (i < 0) return;
    this.items.splice(i, 1);
    if (this.active) this.render({ keepScroll: !this.atBottom() });
  }

  /** Redraws one message in place (its state changed). */
  refresh(key) {
    if (!this.active) return;
    const node = this.nodes.get(key);
    const i = this.items.findIndex((it) => it.key === key);
    if (!node || i < 0) return;
    const item = /** @type {MsgItem} */ (this.items[i]);
    const prev = i > 0 ? this.items[i - 1] : null;
    node.replaceWith(this.msgNode(item, prev));
  }

  setEdge({ canLoadOlder, loading, start }) {
    this.canLoadOlder = canLoadOlder;
    this.loading = loading;
    this.start = start;
    if (!this.active) return;
    const old = this.el.firstElementChild;
    const fresh = this.edgeNode();
    if (old && (old.classList.contains('load-older') || old.classList.contains('history-edge'))) old.replaceWith(fresh);
    else this.el.prepend(fresh);
  }
}
