// ANSI colours in log lines, shown safely: a line is parsed into plain-text segments with
// their style (SGR codes: bold, dim, italic, underline, 16 colours as classes, 256 and
// true colours as a CSS custom property set through the CSSOM); every other escape
// sequence is dropped. The text itself only ever becomes text nodes (see render), so a
// line can hold any byte and stays text.

// CSI sequences (ESC [ … final byte), OSC (ESC ] … BEL or ESC \), and lone escapes.
// eslint-disable-next-line no-control-regex
const ESCAPE = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?/g;

/** The 256-colour palette's colour `n` (16-255) as `rgb(…)`. */
function palette(n) {
  if (n >= 232) {
    const g = 8 + (n - 232) * 10;
    return `rgb(${g} ${g} ${g})`;
  }
  const c = n - 16;
  const level = (v) => (v === 0 ? 0 : 55 + v * 40);
  return `rgb(${level(Math.floor(c / 36))} ${level(Math.floor(c / 6) % 6)} ${level(c % 6)})`;
}

/**
 * @typedef {{bold?: boolean, dim?: boolean, italic?: boolean, underline?: boolean,
 *   fg?: number, bg?: number, fgRgb?: string, bgRgb?: string}} Style
 * @typedef {{text: string, style: Style}} Segment
 */

/** Applies SGR parameters to `style` (a copy). */
function sgr(style, params) {
  const s = { ...style };
  const codes = params === '' ? [0] : params.split(';').map((p) => (p === '' ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) for (const k of Object.keys(s)) delete s[k];
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 22) delete s.bold, delete s.dim;
    else if (c === 23) delete s.italic;
    else if (c === 24) delete s.underline;
    else if (c >= 30 && c <= 37) (s.fg = c - 30), delete s.fgRgb;
    else if (c >= 90 && c <= 97) (s.fg = c - 90 + 8), delete s.fgRgb;
    else if (c === 39) delete s.fg, delete s.fgRgb;
    else if (c >= 40 && c <= 47) (s.bg = c - 40), delete s.bgRgb;
    else if (c >= 100 && c <= 107) (s.bg = c - 100 + 8), delete s.bgRgb;
    else if (c === 49) delete s.bg, delete s.bgRgb;
    else if ((c === 38 || c === 48) && codes[i + 1] === 5 && codes[i + 2] !== undefined) {
      const n = Math.min(255, Math.max(0, codes[i + 2] | 0));
      const key = c === 38 ? 'fg' : 'bg';
      if (n < 16) (s[key] = n), delete s[`${key}Rgb`];
      else (s[`${key}Rgb`] = palette(n)), delete s[key];
      i += 2;
    } else if ((c === 38 || c === 48) && codes[i + 1] === 2 && codes[i + 4] !== undefined) {
      const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.min(255, Math.max(0, v | 0)));
      const key = c === 38 ? 'fg' : 'bg';
      s[`${key}Rgb`] = `rgb(${r} ${g} ${b})`;
      delete s[key];
      i += 4;
    }
  }
  return s;
}

/**
 * A line's segments, and its plain text (what filters match and highlights index).
 * @param {string} line
 * @returns {{plain: string, segments: Segment[]}}
 */
export function parse(line) {
  /** @type {Segment[]} */
  const segments = [];
  let style = {};
  let last = 0;
  let plain = '';
  const s = String(line);
  if (!s.includes('\x1b')) return { plain: s, segments: [{ text: s, style }] };
  for (const m of s.matchAll(ESCAPE)) {
    const at = /** @type {number} */ (m.index);
    if (at > last) {
      segments.push({ text: s.slice(last, at), style });
      plain += s.slice(last, at);
    }
    if (m[2] === 'm') style = sgr(style, m[1]);
    last = at + m[0].length;
  }
  if (last < s.length) {
    segments.push({ text: s.slice(last), style });
    plain += s.slice(last);
  }
  return { plain, segments };
}

/** The classes and custom properties of a style, for dom.js's `h` (`class`, `vars`). */
export function styleProps(style) {
  const cls = [];
  /** @type {Record<string, string>} */
  const vars = {};
  if (style.bold) cls.push('ansi-bold');
  if (style.dim) cls.push('ansi-dim');
  if (style.italic) cls.push('ansi-italic');
  if (style.underline) cls.push('ansi-underline');
  if (style.fg !== undefined) cls.push(`ansi-fg-${style.fg}`);
  if (style.bg !== undefined) cls.push(`ansi-bg-${style.bg}`);
  if (style.fgRgb) {
    cls.push('ansi-fg-rgb');
    vars['ansi-fg'] = style.fgRgb;
  }
  if (style.bgRgb) {
    cls.push('ansi-bg-rgb');
    vars['ansi-bg'] = style.bgRgb;
  }
  return { cls: cls.join(' '), vars };
}
