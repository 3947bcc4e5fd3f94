// DOM helpers for the built-in apps. Data is text: these helpers only ever create elements
// by tag name, set text with textContent (text nodes), and set attributes from a fixed list
// (an `href` only when it is http(s), a path or a fragment). Nothing here, and nothing in
// the pages, uses innerHTML, insertAdjacentHTML or document.write; the pages' strict CSP
// (script-src 'self', style-src 'self') would stop an injected script or style anyway.

const ATTRIBUTES = new Set([
  'id', 'class', 'for', 'type', 'name', 'value', 'placeholder', 'href', 'rel', 'target', 'role', 'title',
  'tabindex', 'hidden', 'disabled', 'autocomplete', 'maxlength', 'minlength', 'required', 'rows', 'lang',
  'datetime', 'dir', 'spellcheck', 'enterkeyhint', 'inputmode', 'pattern', 'min', 'max', 'checked',
  'autofocus', 'method', 'action', 'novalidate', 'open', 'selected', 'src', 'alt', 'width', 'height',
  'viewBox', 'x', 'y', 'x1', 'x2', 'y1', 'y2', 'rx', 'ry', 'cx', 'cy', 'r', 'd', 'fill', 'stroke',
  'text-anchor', 'dominant-baseline', 'focusable', 'xmlns', 'preserveAspectRatio', 'points',
]);

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Whether `url` may be a link target: http(s), or a path/fragment of this origin. */
export function safeUrl(url) {
  const s = String(url);
  if (/^(\/(?!\/)|#|\?)/.test(s)) return true;
  try {
    const u = new URL(s);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

/**
 * @param {Element} el
 * @param {string} name
 * @param {any} value
 */
export function setAttr(el, name, value) {
  if (!ATTRIBUTES.has(name) && !/^(aria|data)-[a-z0-9-]+$/.test(name)) {
    throw new Error(`dom: attribute ${name} is not allowed`);
  }
  if (value === false || value === null || value === undefined) {
    el.removeAttribute(name);
    return;
  }
  if ((name === 'href' || name === 'src' || name === 'action') && !safeUrl(value)) {
    throw new Error(`dom: refused ${name} ${value}`);
  }
  el.setAttribute(name, value === true ? '' : String(value));
}

/**
 * Appends children: strings and numbers become text nodes; null/false are skipped;
 * arrays are flattened.
 * @param {Node} parent
 * @param {any[]} children
 */
export function append(parent, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return parent;
}

function build(el, props, children) {
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (k === 'on') {
        for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      } else if (k === 'text') {
        el.textContent = v ?? '';
      } else if (k === 'vars') {
        // CSS custom properties through the CSSOM (allowed by style-src 'self').
        for (const [name, val] of Object.entries(v)) el.style.setProperty(`--${name}`, String(val));
      } else {
        setAttr(el, k, v);
      }
    }
  }
  return append(el, ...children);
}

/**
 * An HTML element: `h('button', {class: 'primary', on: {click}}, 'Send')`.
 * @param {string} tag
 * @param {Record<string, any> | null} [props]
 * @param {...any} children
 * @returns {HTMLElement}
 */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/**
 * An SVG element (for chart.js and icons).
 * @param {string} tag
 * @param {Record<string, any> | null} [props]
 * @param {...any} children
 * @returns {SVGElement}
 */
export function svg(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

/** Removes every child, then appends `children`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, ...children);
}

/** `document.querySelector`, throwing when the page lacks the element. */
export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`missing ${selector}`);
  return el;
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+/gi;

/**
 * Text with its http(s) URLs as links, built with DOM calls: a DocumentFragment of text
 * nodes and <a rel="noopener noreferrer" target="_blank">. Trailing punctuation stays
 * out of the link ("see https://x.org." links https://x.org).
 * @param {string} text
 */
export function linkify(text) {
  const frag = document.createDocumentFragment();
  const s = String(text);
  let last = 0;
  for (const m of s.matchAll(URL_RE)) {
    let url = m[0];
    let trail = '';
    while (/[.,;:!?)\]}'"。，！？）]$/.test(url)) {
      // keep a closing parenthesis that has its opening one in the URL
      if (url.endsWith(')') && (url.match(/\(/g) || []).length >= (url.match(/\)/g) || []).length) break;
      trail = url.slice(-1) + trail;
      url = url.slice(0, -1);
    }
    const start = /** @type {number} */ (m.index);
    if (start > last) frag.appendChild(document.createTextNode(s.slice(last, start)));
    if (safeUrl(url)) frag.appendChild(h('a', { href: url, rel: 'noopener noreferrer', target: '_blank' }, url));
    else frag.appendChild(document.createTextNode(url));
    last = start + url.length;
  }
  if (last < s.length) frag.appendChild(document.createTextNode(s.slice(last)));
  return frag;
}

/** A small inline SVG icon from a path (decorative: hidden from assistive technology). */
export function icon(d, cls = 'icon') {
  return svg('svg', { class: cls, viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false' }, svg('path', { d }));
}

/** Icon paths (24×24, stroked in CSS). */
export const ICONS = {
  hash: 'M5 9h14M5 15h14M10 3 8 21M16 3l-2 18',
  plus: 'M12 5v14M5 12h14',
  menu: 'M4 6h16M4 12h16M4 18h16',
  users: 'M16 19v-1a4 4 0 0 0-4-4H7a4 4 0 0 0-4 4v1M9.5 10a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7M21 19v-1a4 4 0 0 0-3-3.9M15.5 3.1a3.5 3.5 0 0 1 0 6.8',
  send: 'M4 12 20 4l-6 16-3-7z',
  bell: 'M6 9a6 6 0 0 1 12 0c0 7 3 8 3 8H3s3-1 3-8M10 21h4',
  close: 'M6 6l12 12M18 6 6 18',
  chat: 'M4 5h16v11H9l-5 4z',
  vote: 'M5 20V10M12 20V4M19 20v-7',
  console: 'M4 6l6 6-6 6M12 18h8',
  logs: 'M5 5h14M5 9h14M5 13h10M5 17h12',
  monitor: 'M3 12h4l3-7 4 14 3-7h4',
  edit: 'M4 20h4L19 9l-4-4L4 16zM14 6l4 4',
  out: 'M15 12H4M8 8l-4 4 4 4M13 4h6v16h-6',
  at: 'M16 12a4 4 0 1 1-8 0 4 4 0 0 1 8 0v1.5a2.5 2.5 0 0 0 5 0V12a9 9 0 1 0-4 7.5',
  check: 'M5 12l5 5L20 7',
  globe: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18M3 12h18M12 3c3 3 3 15 0 18M12 3c-3 3-3 15 0 18',
};

/** A stable hue (0-359) for a user id: the avatar colour. */
export function hue(id) {
  let x = 2166136261;
  for (const ch of String(id)) x = Math.imul(x ^ ch.codePointAt(0), 16777619);
  return (x >>> 0) % 360;
}

/** The first letter (grapheme) of a name, upper-cased: the avatar initial. */
export function initial(name) {
  const s = String(name || '?').trim();
  const seg = typeof Intl.Segmenter === 'function' ? new Intl.Segmenter().segment(s)[Symbol.iterator]().next().value : null;
  return (seg ? seg.segment : [...s][0] || '?').toUpperCase();
}

/** An avatar: a coloured circle with the initial, hidden from assistive technology. */
export function avatar(id, name, cls = 'avatar') {
  return h('span', { class: cls, 'aria-hidden': 'true', vars: { hue: hue(id) } }, initial(name));
}
