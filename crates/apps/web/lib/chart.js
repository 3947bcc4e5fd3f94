// Small SVG charts: a bar chart (horizontal bars: label, bar, value) for the vote app, and
// a time chart (lines over a time window: the monitor's sparklines and its larger charts). Bars grow with a CSS transition on a custom property set through the CSSOM (the
// CSP allows that; no style attribute is written), and the chart reads to a screen reader
// as one image whose title and description list every bar ("Yes: 12 (60%)").
//
//   const chart = barChart({ title: 'Lunch?' });
//   parent.append(chart.el);
//   chart.update([{ label: 'Noodles', value: 12 }, { label: 'Rice', value: 8 }]);
import { h, svg } from './dom.js';
import { number } from './format.js';

const ROW = 34;
const WIDTH = 480;
const LABEL = 140;
const VALUE = 64;

let counter = 0;

/**
 * @param {{title: string, percent?: boolean, describe?: (items: {label: string, value: number}[], total: number) => string}} opts
 *   `percent`: each value also as its share of the total ("12 · 60%").
 */
export function barChart(opts) {
  const id = `chart-${++counter}`;
  const valueWidth = opts.percent ? VALUE + 56 : VALUE;
  const title = svg('title', { id: `${id}-title` }, opts.title);
  const desc = svg('desc', { id: `${id}-desc` });
  const rows = svg('g', { class: 'chart-rows' });
  const el = svg(
    'svg',
    { class: 'chart', role: 'img', 'aria-labelledby': `${id}-title ${id}-desc`, viewBox: `0 0 ${WIDTH} ${ROW}`, preserveAspectRatio: 'xMinYMin meet' },
    title,
    desc,
    rows,
  );
  /** @type {Map<string, {g: SVGElement, bar: SVGElement, value: SVGElement, label: SVGElement}>} */
  const bars = new Map();

  function row(label) {
    const g = svg('g', { class: 'chart-row' });
    const text = svg('text', { class: 'chart-label', x: 0, y: ROW / 2, 'dominant-baseline': 'middle' }, label);
    const track = svg('rect', { class: 'chart-track', x: LABEL, y: 8, width: WIDTH - LABEL - valueWidth, height: ROW - 16, rx: 4 });
    const bar = svg('rect', { class: 'chart-bar', x: LABEL, y: 8, width: WIDTH - LABEL - valueWidth, height: ROW - 16, rx: 4, vars: { fill: 0 } });
    const value = svg('text', { class: 'chart-value', x: WIDTH, y: ROW / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle' }, '0');
    g.append(text, track, bar, value);
    return { g, bar, value, label: text };
  }

  /** @param {{label: string, value: number}[]} items */
  function update(items) {
    const total = items.reduce((a, b) => a + Math.max(0, b.value), 0);
    const max = Math.max(1, ...items.map((i) => i.value));
    const seen = new Set();
    items.forEach((item, i) => {
      let b = bars.get(item.label);
      if (!b) {
        b = row(item.label);
        bars.set(item.label, b);
        rows.append(b.g);
        // Start from 0 so the first value animates in too.
        b.bar.getBoundingClientRect();
      }
      seen.add(item.label);
      b.g.setAttribute('transform', `translate(0 ${i * ROW})`);
      b.bar.style.setProperty('--fill', String(Math.max(0, item.value) / max));
      b.value.textContent = opts.percent ? `${number(item.value)} · ${total ? Math.round((Math.max(0, item.value) / total) * 100) : 0}%` : number(item.value);
    });
    for (const [label, b] of bars) {
      if (!seen.has(label)) {
        b.g.remove();
        bars.delete(label);
      }
    }
    el.setAttribute('viewBox', `0 0 ${WIDTH} ${Math.max(1, items.length) * ROW}`);
    desc.textContent = opts.describe
      ? opts.describe(items, total)
      : items.map((i) => `${i.label}: ${number(i.value)}${total ? ` (${Math.round((i.value / total) * 100)}%)` : ''}`).join('; ');
  }

  return { el, update };
}

const TW = 240;

/**
 * A chart of values over time: one line per series over the last `window` ms, with a
 * filled area under the first; with `axis`, the top value above it and the window's edges
 * under it (`el` is then a <div> around the drawing). Points outside the window are not
 * drawn; a gap longer than `gap` ms breaks the line (a host that stopped reporting shows
 * as a gap, not a slope). It reads
 * to a screen reader as one image: `title`, and a description the caller gives with each
 * update (the current values).
 *
 *   const c = timeChart({ title: 'CPU', window: 60000, max: 100 });
 *   c.update([[[t0, 12], [t1, 15]]], Date.now(), 'CPU 15%');
 *
 * @param {{title: string, window: number, max?: number, height?: number, axis?: boolean,
 *   gap?: number, series?: number, format?: (v: number) => string, labels?: [string, string]}} opts
 *   `max`: a fixed top (100 for percentages), else the largest value shown;
 *   `labels`: the words at the left and right edges under an axis chart.
 */
export function timeChart(opts) {
  const id = `chart-${++counter}`;
  const height = opts.height ?? 40;
  const pad = opts.axis ? 4 : 2;
  const series = opts.series ?? 1;
  const title = svg('title', { id: `${id}-title` }, opts.title);
  const desc = svg('desc', { id: `${id}-desc` });
  const area = svg('path', { class: 'tc-area', d: '' });
  const lines = Array.from({ length: series }, (_, i) => svg('path', { class: `tc-line tc-line-${i}`, d: '' }));
  // An axis chart's words are HTML around the drawing: the drawing stretches to its box
  // (preserveAspectRatio none), which would stretch text drawn in it too.
  const top = opts.axis ? h('span', { class: 'tc-top', 'aria-hidden': 'true' }) : null;
  const left = opts.axis ? h('span', null, opts.labels?.[0] ?? '') : null;
  const right = opts.axis ? h('span', null, opts.labels?.[1] ?? '') : null;
  const grid = opts.axis ? svg('path', { class: 'tc-grid', d: `M0 ${pad}H${TW}M0 ${height - pad}H${TW}` }) : null;
  const drawing = svg(
    'svg',
    { class: opts.axis ? 'tc tc-large' : 'tc', role: 'img', 'aria-labelledby': `${id}-title ${id}-desc`, viewBox: `0 0 ${TW} ${height}`, preserveAspectRatio: 'none' },
    title,
    desc,
    grid,
    area,
    ...lines,
  );
  const el = opts.axis ? h('div', { class: 'tc-wrap' }, top, drawing, h('div', { class: 'tc-foot', 'aria-hidden': 'true' }, left, right)) : drawing;

  /**
   * @param {Array<Array<[number, number]>>} data per series, points [time ms, value], oldest first
   * @param {number} now the right edge
   * @param {string} [words] the description (current values)
   */
  function update(data, now, words = '') {
    const from = now - opts.window;
    let max = opts.max ?? 0;
    if (opts.max === undefined) {
      for (const points of data) for (const [t, v] of points) if (t >= from && v > max) max = v;
      if (max <= 0) max = 1;
    }
    const x = (t) => ((t - from) / opts.window) * TW;
    const y = (v) => height - pad - (Math.min(Math.max(v, 0), max) / max) * (height - 2 * pad);
    const gap = opts.gap ?? opts.window / 4;
    data.forEach((points, i) => {
      if (!lines[i]) return;
      let d = '';
      let prev = null;
      let firstX = null;
      let lastX = null;
      let fill = '';
      for (const [t, v] of points) {
        if (t < from || !Number.isFinite(v)) continue;
        const px = x(t).toFixed(1);
        const py = y(v).toFixed(1);
        const move = prev === null || t - prev > gap;
        d += `${move ? 'M' : 'L'}${px} ${py}`;
        if (i === 0) {
          if (move) {
            if (firstX !== null) fill += `L${lastX} ${height - pad}L${firstX} ${height - pad}Z`;
            fill += `M${px} ${height - pad}L${px} ${py}`;
            firstX = px;
          } else fill += `L${px} ${py}`;
          lastX = px;
        }
        prev = t;
      }
      if (i === 0) {
        if (firstX !== null) fill += `L${lastX} ${height - pad}L${firstX} ${height - pad}Z`;
        area.setAttribute('d', fill);
      }
      lines[i].setAttribute('d', d);
    });
    if (top) top.textContent = opts.format ? opts.format(max) : number(max);
    desc.textContent = words;
  }

  /** Changes the words under an axis chart (on a language switch). */
  function setLabels(a, b) {
    if (left) left.textContent = a;
    if (right) right.textContent = b;
  }

  return { el, update, setLabels };
}
