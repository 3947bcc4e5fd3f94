// English and Simplified Chinese for every word of the built-in apps (strings.js holds
// both dictionaries, key for key). The language is the one chosen with the switch
// (remembered in localStorage), else the first of navigator.languages we have, else English.
//
// In HTML: `data-i18n="key"` sets an element's text, `data-i18n-attr="placeholder:key
// aria-label:key2"` sets attributes; both are applied on load and on every switch. In
// code: `t('key', {name})`; a key whose entry is {one, other} is plural, chosen by
// Intl.PluralRules from `count`.
import { STRINGS } from './strings.js';
import { h } from './dom.js';

export const LANGUAGES = [
  ['en', 'English'],
  ['zh-CN', '简体中文'],
];
const KEY = 'switchboard.lang';
const listeners = new Set();
let current = pick();

function pick() {
  let saved = null;
  try {
    saved = localStorage.getItem(KEY);
  } catch {
    // storage blocked: the browser's languages decide
  }
  if (saved && STRINGS[saved]) return saved;
  for (const l of navigator.languages || [navigator.language || 'en']) {
    const lower = String(l).toLowerCase();
    if (lower.startsWith('zh')) return 'zh-CN';
    if (lower.startsWith('en')) return 'en';
  }
  return 'en';
}

/** The current language tag ('en' or 'zh-CN'). */
export function lang() {
  return current;
}

/**
 * The text of `key` with `{name}` placeholders filled from `vars`.
 * @param {string} key
 * @param {Record<string, any>} [vars]
 */
export function t(key, vars = {}) {
  let entry = STRINGS[current][key] ?? STRINGS.en[key];
  if (entry === undefined) {
    console.warn(`i18n: no string ${key}`);
    return key;
  }
  if (typeof entry === 'object') {
    const rule = new Intl.PluralRules(current).select(Number(vars.count ?? 0));
    entry = entry[rule] ?? entry.other;
  }
  return entry.replace(/\{(\w+)\}/g, (m, name) => (vars[name] !== undefined ? String(vars[name]) : m));
}

/**
 * Props for an element whose text is `key`, kept translated on a switch:
 * `h('h2', tx('home.tiles'))`; `attrs` adds translated attributes:
 * `tx(null, {'aria-label': 'chat.send'})`.
 * @param {string | null} key
 * @param {Record<string, string>} [attrs]
 */
export function tx(key, attrs) {
  /** @type {Record<string, any>} */
  const props = {};
  if (key) {
    props['data-i18n'] = key;
    props.text = t(key);
  }
  if (attrs) {
    props['data-i18n-attr'] = Object.entries(attrs)
      .map(([a, k]) => `${a}:${k}`)
      .join(' ');
    for (const [a, k] of Object.entries(attrs)) props[a] = t(k);
  }
  return props;
}

/** Translates `data-i18n` and `data-i18n-attr` under `root`. */
export function apply(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.getAttribute('data-i18n'));
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.getAttribute('data-i18n-attr').split(/\s+/)) {
      const [attr, key] = pair.split(':');
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
  document.documentElement.lang = current;
  const title = document.querySelector('title[data-i18n]');
  if (title) document.title = title.textContent;
}

/** Switches language, remembers it, re-applies the page's strings, tells listeners. */
export function setLang(l) {
  if (!STRINGS[l]) return;
  current = l;
  try {
    localStorage.setItem(KEY, l);
  } catch {
    // not remembered: fine
  }
  apply();
  for (const fn of listeners) fn(l);
}

/** Calls `fn(lang)` after each switch (to re-render what code wrote). */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The language switch: a labelled <select>. */
export function languageSwitch() {
  const id = `lang-${Math.random().toString(36).slice(2, 8)}`;
  const select = h(
    'select',
    { id, class: 'lang-select', on: { change: () => setLang(select.value) } },
    LANGUAGES.map(([code, name]) => h('option', { value: code, lang: code, selected: code === current }, name)),
  );
  const label = h('label', { for: id, class: 'visually-hidden', 'data-i18n': 'language' }, t('language'));
  onLangChange((l) => (select.value = l));
  return h('span', { class: 'lang' }, label, select);
}

apply();
