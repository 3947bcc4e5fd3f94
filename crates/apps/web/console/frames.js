// The console's frame log: every frame in and out (time to the millisecond, direction,
// size, opcode), JSON pretty-printed and collapsible, binary as hex and ASCII, with a
// filter, pause, clear, copy, re-send and export as JSON. Built with the text-only DOM
// helpers: a frame's content is always text, never markup.
import { h, replace } from '../lib/dom.js';
import { t, tx } from '../lib/i18n.js';

/** Frames kept (the oldest are dropped past it). */
const MAX_FRAMES = 2000;
/** Characters of a frame shown on its one-line summary. */
const SUMMARY = 160;

const encoder = new TextEncoder();

/**
 * @typedef {{n: number, time: number, dir: 'in' | 'out' | 'event', opcode: string, size: number,
 *   text: string | null, bytes: Uint8Array | null, json: any, isJson: boolean}} Frame
 */

/** `12:03:04.123` */
export function clock(ms) {
  const d = new Date(ms);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** Hex and ASCII, 16 bytes a line: `00000000  68 65 6c 6c 6f …  |hello|`. */
export function hexDump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.subarray(i, i + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0'));
    const left = hex.slice(0, 8).join(' ');
    const right = hex.slice(8).join(' ');
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(8, '0')}  ${left.padEnd(23)}  ${right.padEnd(23)}  |${ascii}|`);
  }
  return lines.join('\n');
}

/** Bytes from hex text (spaces, newlines and `0x` allowed); null when it is not hex. */
export function fromHex(text) {
  const clean = String(text).replace(/0x/gi, '').replace(/[\s,]/g, '');
  if (clean.length % 2 !== 0 || !/^[0-9a-f]*$/i.test(clean)) return null;
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export class FrameLog {
  /**
   * @param {{onResend: (frame: Frame) => void, onStatus: (text: string) => void}} opts
   */
  constructor(opts) {
    this.opts = opts;
    /** @type {Frame[]} */
    this.frames = [];
    this.n = 0;
    this.paused = false;
    /** Frames that arrived while paused, not drawn yet. */
    this.waiting = 0;
    this.filter = '';
    this.list = h('ol', { class: 'frames', id: 'frames', 'aria-live': 'off', ...tx(null, { 'aria-label': 'console.log.title' }) });
    this.count = h('span', { class: 'frames-count', id: 'frames-count' });
    this.pauseBtn = h('button', { class: 'btn small ghost', type: 'button', 'aria-pressed': 'false', on: { click: () => this.setPaused(!this.paused) } }, t('console.log.pause'));
    const filterId = 'frames-filter';
    this.filterInput = h('input', {
      id: filterId,
      class: 'input',
      type: 'search',
      autocomplete: 'off',
      spellcheck: 'false',
      ...tx(null, { placeholder: 'console.log.filter.hint' }),
      on: { input: () => this.setFilter(this.filterInput.value) },
    });
    this.toolbar = h(
      'div',
      { class: 'frames-tools' },
      h('label', { for: filterId, class: 'visually-hidden', ...tx('console.log.filter') }),
      this.filterInput,
      this.pauseBtn,
      h('button', { class: 'btn small ghost', type: 'button', on: { click: () => this.clear() }, ...tx('console.log.clear') }),
      h('button', { class: 'btn small ghost', type: 'button', on: { click: () => this.exportJson() }, ...tx('console.log.export') }),
      this.count,
    );
    this.el = h(
      'section',
      { class: 'panel frames-panel', 'aria-labelledby': 'frames-title' },
      h('div', { class: 'frames-head' }, h('h2', { id: 'frames-title', ...tx('console.log.title') })),
      this.toolbar,
      this.list,
    );
    this.renderCount();
  }

  /**
   * Adds a frame. `data`: a string (text), an ArrayBuffer / Uint8Array (binary), or null.
   * @param {'in' | 'out' | 'event'} dir
   * @param {string} opcode  text, binary, open, close, error, http, sse
   * @param {any} data
   */
  add(dir, opcode, data) {
    let text = null;
    let bytes = null;
    if (typeof data === 'string') text = data;
    else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let json;
    let isJson = false;
    if (text !== null && /^\s*[[{]/.test(text)) {
      try {
        json = JSON.parse(text);
        isJson = true;
      } catch {
        // not JSON: shown as text
      }
    }
    /** @type {Frame} */
    const frame = {
      n: ++this.n,
      time: Date.now(),
      dir,
      opcode,
      size: text !== null ? encoder.encode(text).length : bytes ? bytes.length : 0,
      text,
      bytes,
      json,
      isJson,
    };
    this.frames.push(frame);
    if (this.frames.length > MAX_FRAMES) {
      this.frames.shift();
      const first = this.list.firstElementChild;
      if (first && !this.paused) first.remove();
    }
    if (this.paused) this.waiting++;
    else if (this.matches(frame)) this.list.append(this.row(frame));
    this.renderCount();
    if (!this.paused) this.list.scrollTop = this.list.scrollHeight;
    return frame;
  }

  /** The frame as text (what is copied and searched). */
  static textOf(frame) {
    if (frame.bytes) return hexDump(frame.bytes);
    return frame.text ?? '';
  }

  matches(frame) {
    if (!this.filter) return true;
    const f = this.filter.toLowerCase();
    return `${frame.dir} ${frame.opcode} ${FrameLog.textOf(frame)}`.toLowerCase().includes(f);
  }

  row(frame) {
    const dirLabel = t(`console.dir.${frame.dir}`);
    const arrow = frame.dir === 'in' ? '↓' : frame.dir === 'out' ? '↑' : '•';
    let body;
    if (frame.bytes) {
      body = h('details', { class: 'frame-body' }, h('summary', null, t('console.frame.bytes', { count: frame.bytes.length })), h('pre', { class: 'hex' }, hexDump(frame.bytes)));
    } else if (frame.isJson) {
      const compact = JSON.stringify(frame.json);
      body = h('details', { class: 'frame-body' }, h('summary', null, compact.length > SUMMARY ? `${compact.slice(0, SUMMARY)}…` : compact), h('pre', null, JSON.stringify(frame.json, null, 2)));
    } else {
      body = h('div', { class: 'frame-body frame-text' }, frame.text ?? '');
    }
    const canResend = frame.dir !== 'event' && (frame.text !== null || frame.bytes !== null) && frame.opcode !== 'close';
    return h(
      'li',
      { class: `frame ${frame.dir}`, 'data-dir': frame.dir, 'data-opcode': frame.opcode },
      h(
        'div',
        { class: 'frame-meta' },
        h('span', { class: 'frame-dir', title: dirLabel }, h('span', { 'aria-hidden': 'true' }, arrow), h('span', { class: 'visually-hidden' }, dirLabel)),
        h('time', { class: 'frame-time' }, clock(frame.time)),
        h('span', { class: 'frame-op' }, frame.opcode),
        h('span', { class: 'frame-size' }, t('console.frame.size', { n: frame.size })),
        // One group, so that on a narrow screen the two wrap together, to the right.
        h(
          'span',
          { class: 'frame-actions' },
          h('button', { class: 'linkish', type: 'button', on: { click: () => this.copy(frame) }, 'aria-label': t('console.frame.copyN', { n: frame.n }) }, t('console.frame.copy')),
          canResend ? h('button', { class: 'linkish', type: 'button', on: { click: () => this.opts.onResend(frame) }, 'aria-label': t('console.frame.resendN', { n: frame.n }) }, t('console.frame.resend')) : null,
        ),
      ),
      body,
    );
  }

  redraw() {
    replace(this.list, this.frames.filter((f) => this.matches(f)).map((f) => this.row(f)));
    this.list.scrollTop = this.list.scrollHeight;
    this.renderCount();
  }

  renderCount() {
    const shown = this.filter ? this.frames.filter((f) => this.matches(f)).length : this.frames.length;
    let s = this.filter ? t('console.log.countFiltered', { shown, count: this.frames.length }) : t('console.log.count', { count: this.frames.length });
    if (this.paused && this.waiting) s += ` · ${t('console.log.waiting', { count: this.waiting })}`;
    this.count.textContent = s;
    this.pauseBtn.textContent = this.paused ? t('console.log.resume') : t('console.log.pause');
    this.pauseBtn.setAttribute('aria-pressed', String(this.paused));
  }

  setPaused(paused) {
    this.paused = paused;
    if (!paused && this.waiting) {
      this.waiting = 0;
      this.redraw();
    }
    this.renderCount();
  }

  setFilter(text) {
    this.filter = text.trim();
    this.redraw();
  }

  clear() {
    this.frames = [];
    this.waiting = 0;
    this.redraw();
  }

  async copy(frame) {
    try {
      await navigator.clipboard.writeText(FrameLog.textOf(frame));
      this.opts.onStatus(t('console.frame.copied'));
    } catch {
      this.opts.onStatus(t('console.frame.copyFailed'));
    }
  }

  /** The log as JSON: what a bug report needs. */
  toJSON() {
    return this.frames.map((f) => ({
      time: new Date(f.time).toISOString(),
      direction: f.dir,
      opcode: f.opcode,
      size: f.size,
      ...(f.bytes ? { hex: [...f.bytes].map((b) => b.toString(16).padStart(2, '0')).join('') } : { text: f.text }),
    }));
  }

  exportJson() {
    const blob = new Blob([JSON.stringify(this.toJSON(), null, 2)], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    // A blob: URL of this page's own making (the DOM helpers take http(s) links only).
    a.href = url;
    a.download = `switchboard-frames-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  relabel() {
    this.redraw();
  }
}
