// A small SVG bar chart (horizontal bars: label, bar, value), for the vote app and the
// monitor. Bars grow with a CSS transition on a custom property set through the CSSOM (the
// CSP allows that; no style attribute is written), and the chart reads to a screen reader
// as one image whose title and description list every bar ("Yes: 12 (60%)").
//
//   const chart = barChart({ title: 'Lunch?' });
//   parent.append(chart.el);
//   chart.update([{ label: 'Noodles', value: 12 }, { label: 'Rice', value: 8 }]);
import { svg } from './dom.js';
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
