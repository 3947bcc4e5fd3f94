// A small QR code encoder (ISO/IEC 18004), written for the vote app's share link: byte
// mode (the text as UTF-8), error correction level M (about 15% of the symbol may be
// damaged), versions 1 to 10 (21×21 to 57×57 modules, up to 213 bytes), the mask chosen
// by the standard's penalty rules. The output is SVG built with the DOM helpers (one path
// of dark modules on a light square with the 4-module quiet zone), so it scales to any
// size and prints sharp.
//
//   const code = encode('https://example.com/vote#Ab3dE5gH1j');  // {version, size, dark(x, y)}
//   parent.append(qrSvg('https://…', { title: 'QR code of the link' }));
//
// The layout and the Reed–Solomon arithmetic follow the standard; the structure follows
// Project Nayuki's reference encoder (MIT), cut down to what the apps need.
import { svg } from './dom.js';

/** Error correction codewords per block, level M, by version (index 0 unused). */
const ECC_PER_BLOCK = [-1, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26];
/** Error correction blocks, level M, by version. */
const BLOCKS = [-1, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5];
/** Format bits of level M. */
const LEVEL_M = 0;
export const MAX_VERSION = 10;

/** Modules that hold data and error correction (all but the function patterns). */
function rawDataModules(ver) {
  let n = (16 * ver + 128) * ver + 64;
  if (ver >= 2) {
    const align = Math.floor(ver / 7) + 2;
    n -= (25 * align - 10) * align - 55;
    if (ver >= 7) n -= 36;
  }
  return n;
}

/** Data codewords (bytes) a symbol of this version holds at level M. */
function dataCodewords(ver) {
  return Math.floor(rawDataModules(ver) / 8) - ECC_PER_BLOCK[ver] * BLOCKS[ver];
}

/** The largest number of bytes a version-10 M symbol holds (mode, count, data). */
export const MAX_BYTES = Math.floor((dataCodewords(MAX_VERSION) * 8 - 4 - 16) / 8);

// ---- GF(256) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 -------------------------

function mul(x, y) {
  let z = 0;
  for (let i = 7; i >= 0; i--) {
    z = (z << 1) ^ ((z >>> 7) * 0x11d);
    z ^= ((y >>> i) & 1) * x;
  }
  return z & 0xff;
}

/** The generator polynomial of `degree` (leading 1 left out), highest power first. */
function divisor(degree) {
  const result = new Array(degree).fill(0);
  result[degree - 1] = 1;
  let root = 1;
  for (let i = 0; i < degree; i++) {
    for (let j = 0; j < result.length; j++) {
      result[j] = mul(result[j], root);
      if (j + 1 < result.length) result[j] ^= result[j + 1];
    }
    root = mul(root, 0x02);
  }
  return result;
}

/** The error correction codewords of `data`: the remainder of data·x^n by the generator. */
function remainder(data, div) {
  const result = new Array(div.length).fill(0);
  for (const b of data) {
    const factor = b ^ /** @type {number} */ (result.shift());
    result.push(0);
    for (let i = 0; i < div.length; i++) result[i] ^= mul(div[i], factor);
  }
  return result;
}

// ---- the symbol --------------------------------------------------------------------

function alignmentPositions(ver) {
  if (ver === 1) return [];
  const count = Math.floor(ver / 7) + 2;
  const size = ver * 4 + 17;
  const step = Math.ceil((ver * 4 + 4) / (count * 2 - 2)) * 2;
  const result = [6];
  for (let pos = size - 7; result.length < count; pos -= step) result.splice(1, 0, pos);
  return result;
}

class Symbol_ {
  constructor(ver) {
    this.ver = ver;
    this.size = ver * 4 + 17;
    /** @type {boolean[][]} rows of modules, true = dark */
    this.modules = Array.from({ length: this.size }, () => new Array(this.size).fill(false));
    /** @type {boolean[][]} modules of the function patterns (never masked) */
    this.fixed = Array.from({ length: this.size }, () => new Array(this.size).fill(false));
  }

  set(x, y, dark) {
    this.modules[y][x] = dark;
    this.fixed[y][x] = true;
  }

  functionPatterns() {
    const n = this.size;
    for (let i = 0; i < n; i++) {
      this.set(6, i, i % 2 === 0);
      this.set(i, 6, i % 2 === 0);
    }
    for (const [cx, cy] of [
      [3, 3],
      [n - 4, 3],
      [3, n - 4],
    ]) {
      for (let dy = -4; dy <= 4; dy++) {
        for (let dx = -4; dx <= 4; dx++) {
          const x = cx + dx;
          const y = cy + dy;
          if (x < 0 || y < 0 || x >= n || y >= n) continue;
          const d = Math.max(Math.abs(dx), Math.abs(dy));
          this.set(x, y, d !== 2 && d !== 4);
        }
      }
    }
    const pos = alignmentPositions(this.ver);
    const last = pos.length - 1;
    pos.forEach((cx, i) => {
      pos.forEach((cy, j) => {
        // not over the three finder patterns
        if ((i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0)) return;
        for (let dy = -2; dy <= 2; dy++) {
          for (let dx = -2; dx <= 2; dx++) this.set(cx + dx, cy + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
        }
      });
    });
    this.formatBits(0);
    if (this.ver >= 7) {
      let rem = this.ver;
      for (let i = 0; i < 12; i++) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
      const bits = (this.ver << 12) | rem;
      for (let i = 0; i < 18; i++) {
        const dark = ((bits >>> i) & 1) !== 0;
        const a = n - 11 + (i % 3);
        const b = Math.floor(i / 3);
        this.set(a, b, dark);
        this.set(b, a, dark);
      }
    }
  }

  /** The 15 format bits (level M, `mask`), BCH-protected, both copies; the dark module. */
  formatBits(mask) {
    const n = this.size;
    const data = (LEVEL_M << 3) | mask;
    let rem = data;
    for (let i = 0; i < 10; i++) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
    const bits = ((data << 10) | rem) ^ 0x5412;
    const bit = (i) => ((bits >>> i) & 1) !== 0;
    for (let i = 0; i <= 5; i++) this.set(8, i, bit(i));
    this.set(8, 7, bit(6));
    this.set(8, 8, bit(7));
    this.set(7, 8, bit(8));
    for (let i = 9; i < 15; i++) this.set(14 - i, 8, bit(i));
    for (let i = 0; i < 8; i++) this.set(n - 1 - i, 8, bit(i));
    for (let i = 8; i < 15; i++) this.set(8, n - 15 + i, bit(i));
    this.set(8, n - 8, true);
  }

  /** Places the codewords in the zigzag order, right to left in column pairs. */
  place(codewords) {
    const n = this.size;
    let i = 0;
    for (let right = n - 1; right >= 1; right -= 2) {
      if (right === 6) right = 5;
      for (let vert = 0; vert < n; vert++) {
        for (let j = 0; j < 2; j++) {
          const x = right - j;
          const upward = ((right + 1) & 2) === 0;
          const y = upward ? n - 1 - vert : vert;
          if (!this.fixed[y][x] && i < codewords.length * 8) {
            this.modules[y][x] = ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) !== 0;
            i++;
          }
        }
      }
    }
  }

  /** Inverts the data modules where mask `k`'s condition holds (twice undoes it). */
  mask(k) {
    const n = this.size;
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        if (this.fixed[y][x]) continue;
        let invert;
        switch (k) {
          case 0: invert = (x + y) % 2 === 0; break;
          case 1: invert = y % 2 === 0; break;
          case 2: invert = x % 3 === 0; break;
          case 3: invert = (x + y) % 3 === 0; break;
          case 4: invert = (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0; break;
          case 5: invert = ((x * y) % 2) + ((x * y) % 3) === 0; break;
          case 6: invert = (((x * y) % 2) + ((x * y) % 3)) % 2 === 0; break;
          default: invert = (((x + y) % 2) + ((x * y) % 3)) % 2 === 0;
        }
        if (invert) this.modules[y][x] = !this.modules[y][x];
      }
    }
  }

  /** The standard's penalty score (lower is easier to read). */
  penalty() {
    const n = this.size;
    const m = this.modules;
    let score = 0;
    const line = (get) => {
      let run = 1;
      for (let i = 1; i <= n; i++) {
        if (i < n && get(i) === get(i - 1)) run++;
        else {
          if (run >= 5) score += 3 + (run - 5);
          run = 1;
        }
      }
      // 1:1:3:1:1 finder-like patterns with four light modules on one side
      for (let i = 0; i + 7 <= n; i++) {
        if (!(get(i) && !get(i + 1) && get(i + 2) && get(i + 3) && get(i + 4) && !get(i + 5) && get(i + 6))) continue;
        const light = (a, b) => {
          for (let k = a; k < b; k++) if (k >= 0 && k < n && get(k)) return false;
          return true;
        };
        if (light(i - 4, i) || light(i + 7, i + 11)) score += 40;
      }
    };
    for (let y = 0; y < n; y++) line((x) => m[y][x]);
    for (let x = 0; x < n; x++) line((y) => m[y][x]);
    let dark = 0;
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        if (m[y][x]) dark++;
        if (x + 1 < n && y + 1 < n) {
          const c = m[y][x];
          if (c === m[y][x + 1] && c === m[y + 1][x] && c === m[y + 1][x + 1]) score += 3;
        }
      }
    }
    const total = n * n;
    score += (Math.ceil(Math.abs(dark * 20 - total * 10) / total) - 1) * 10;
    return score;
  }
}

/** The codewords of `bytes` for `ver`: mode, count, data, terminator, padding, then the
 * blocks' error correction, interleaved. */
function codewords(bytes, ver) {
  const capacity = dataCodewords(ver) * 8;
  /** @type {number[]} */
  const bits = [];
  const put = (value, len) => {
    for (let i = len - 1; i >= 0; i--) bits.push((value >>> i) & 1);
  };
  put(0b0100, 4);
  put(bytes.length, ver <= 9 ? 8 : 16);
  for (const b of bytes) put(b, 8);
  put(0, Math.min(4, capacity - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  const data = [];
  for (let i = 0; i < bits.length; i += 8) data.push(bits.slice(i, i + 8).reduce((a, b) => (a << 1) | b, 0));
  for (let pad = 0xec; data.length < capacity / 8; pad ^= 0xec ^ 0x11) data.push(pad);

  const blocks = BLOCKS[ver];
  const eccLen = ECC_PER_BLOCK[ver];
  const raw = Math.floor(rawDataModules(ver) / 8);
  const short = blocks - (raw % blocks);
  const shortLen = Math.floor(raw / blocks);
  const div = divisor(eccLen);
  const all = [];
  for (let i = 0, k = 0; i < blocks; i++) {
    const dat = data.slice(k, k + shortLen - eccLen + (i < short ? 0 : 1));
    k += dat.length;
    const ecc = remainder(dat, div);
    if (i < short) dat.push(0);
    all.push(dat.concat(ecc));
  }
  const result = [];
  for (let i = 0; i < all[0].length; i++) {
    all.forEach((block, j) => {
      // the placeholder of the short blocks is skipped
      if (i !== shortLen - eccLen || j >= short) result.push(block[i]);
    });
  }
  return result;
}

/**
 * The QR code of `text` (UTF-8, byte mode, level M): the smallest version of 1-10 that
 * holds it, with the best mask. Throws a RangeError past {@link MAX_BYTES} bytes.
 * @param {string} text
 * @returns {{version: number, size: number, mask: number, dark: (x: number, y: number) => boolean}}
 */
export function encode(text) {
  const bytes = new TextEncoder().encode(String(text));
  let ver = 1;
  while (ver <= MAX_VERSION && 4 + (ver <= 9 ? 8 : 16) + bytes.length * 8 > dataCodewords(ver) * 8) ver++;
  if (ver > MAX_VERSION) throw new RangeError(`qr: ${bytes.length} bytes is more than ${MAX_BYTES}`);
  const sym = new Symbol_(ver);
  sym.functionPatterns();
  sym.place(codewords(bytes, ver));
  let best = 0;
  let bestScore = Infinity;
  for (let k = 0; k < 8; k++) {
    sym.mask(k);
    sym.formatBits(k);
    const score = sym.penalty();
    if (score < bestScore) {
      best = k;
      bestScore = score;
    }
    sym.mask(k);
  }
  sym.mask(best);
  sym.formatBits(best);
  const { modules, size } = sym;
  return { version: ver, size, mask: best, dark: (x, y) => x >= 0 && y >= 0 && x < size && y < size && modules[y][x] };
}

/**
 * The QR code of `text` as an SVG element: dark modules as one path on a light square
 * with a 4-module quiet zone, read by assistive technology as one image named `title`.
 * @param {string} text
 * @param {{title?: string, class?: string}} [opts]
 */
export function qrSvg(text, opts = {}) {
  const code = encode(text);
  const quiet = 4;
  const side = code.size + quiet * 2;
  let d = '';
  for (let y = 0; y < code.size; y++) {
    for (let x = 0; x < code.size; x++) if (code.dark(x, y)) d += `M${x + quiet} ${y + quiet}h1v1h-1z`;
  }
  return svg(
    'svg',
    { class: opts.class || 'qr', viewBox: `0 0 ${side} ${side}`, role: 'img', 'aria-label': opts.title || text, 'data-version': code.version },
    svg('title', null, opts.title || text),
    svg('rect', { class: 'qr-light', x: 0, y: 0, width: side, height: side, fill: '#fff' }),
    svg('path', { class: 'qr-dark', d, fill: '#000' }),
  );
}
