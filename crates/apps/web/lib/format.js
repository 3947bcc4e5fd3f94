// Time and number formatting with Intl, in the page's language (i18n.js).
import { lang } from './i18n.js';

const cache = new Map();
function fmt(kind, options) {
  const key = `${lang()}|${kind}|${JSON.stringify(options)}`;
  let f = cache.get(key);
  if (!f) {
    f = kind === 'rel' ? new Intl.RelativeTimeFormat(lang(), options) : kind === 'num' ? new Intl.NumberFormat(lang(), options) : new Intl.DateTimeFormat(lang(), options);
    cache.set(key, f);
  }
  return f;
}

/** "14:05" (or "下午2:05"): the time of day. */
export function time(ms) {
  return fmt('dt', { hour: 'numeric', minute: '2-digit' }).format(new Date(ms));
}

/** The full date and time, for a title attribute. */
export function dateTime(ms) {
  return fmt('dt', { dateStyle: 'full', timeStyle: 'short' }).format(new Date(ms));
}

/** Whether two times fall on the same local day. */
export function sameDay(a, b) {
  const x = new Date(a);
  const y = new Date(b);
  return x.getFullYear() === y.getFullYear() && x.getMonth() === y.getMonth() && x.getDate() === y.getDate();
}

/** Midnight of the local day of `ms`. */
export function startOfDay(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/**
 * A day separator's words: "Today", "Yesterday" (from Intl.RelativeTimeFormat with
 * numeric: 'auto', so "今天", "昨天"), else "Monday, 3 December" (the year when not this one).
 */
export function day(ms, now = Date.now()) {
  const days = Math.round((startOfDay(now) - startOfDay(ms)) / 86400000);
  if (days === 0 || days === 1) {
    const word = fmt('rel', { numeric: 'auto' }).format(-days, 'day');
    return word.charAt(0).toUpperCase() + word.slice(1);
  }
  const options = { weekday: 'long', month: 'long', day: 'numeric' };
  if (new Date(ms).getFullYear() !== new Date(now).getFullYear()) options.year = 'numeric';
  return fmt('dt', options).format(new Date(ms));
}

/**
 * "3 minutes ago", "in 2 hours", "just now"-like ("now") with Intl.RelativeTimeFormat.
 * `seconds`: under a minute, count the seconds ("8 seconds ago") rather than say "now",
 * for a monitor, where 8 seconds of silence matter.
 */
export function relative(ms, now = Date.now(), seconds = false) {
  const s = Math.round((ms - now) / 1000);
  const abs = Math.abs(s);
  const f = fmt('rel', { numeric: 'auto' });
  if (seconds && abs >= 2 && abs < 60) return f.format(s, 'second');
  if (abs < 45) return f.format(0, 'second');
  if (abs < 45 * 60) return f.format(Math.round(s / 60), 'minute');
  if (abs < 22 * 3600) return f.format(Math.round(s / 3600), 'hour');
  if (abs < 26 * 86400) return f.format(Math.round(s / 86400), 'day');
  if (abs < 320 * 86400) return f.format(Math.round(s / (30 * 86400)), 'month');
  return f.format(Math.round(s / (365 * 86400)), 'year');
}

/** A number with the language's grouping. */
export function number(n) {
  return fmt('num', {}).format(n);
}
