// What the administrators' pages (/admin, /console, /logs, /monitor) share: the top bar
// with the links between them, and the refusal a non-administrator sees (the server
// refuses their rpc calls and subscriptions anyway; the page only says so at once).
import { h, icon, ICONS } from './dom.js';
import { tx, languageSwitch } from './i18n.js';
import { signOut } from './session.js';

/** The pages, in the order of the links: [path, label key]. */
const PAGES = [
  ['/admin', 'ops.nav.admin'],
  ['/console', 'ops.nav.console'],
  ['/logs', 'ops.nav.logs'],
  ['/monitor', 'ops.nav.monitor'],
];

/** The links to the other administrators' pages, from the page at `here`. */
export function opsLinks(here) {
  return h('nav', { class: 'ops-navs', ...tx(null, { 'aria-label': 'ops.nav' }) }, PAGES.filter(([path]) => path !== here).map(([path, key]) => h('a', { class: 'ops-nav', href: path, ...tx(key) })));
}

/**
 * The top bar of an administrator's page.
 * @param {{me: {name: string} | null, here: string, crumb: string, iconPath: string, admin: boolean}} opts
 *   `here`: this page's path (not linked); `crumb`: its title's key.
 */
export function opsHeader({ me, here, crumb, iconPath, admin }) {
  return h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark' }, icon(iconPath)), h('span', { class: 'brand-name' }, 'Switchboard')),
    h('span', { class: 'ops-crumb', ...tx(crumb) }),
    h('span', { class: 'spacer' }),
    admin ? opsLinks(here) : null,
    languageSwitch(),
    me
      ? h(
          'span',
          { class: 'who' },
          h('span', { class: 'hide-narrow' }, me.name),
          h('button', { class: 'btn small ghost', type: 'button', on: { click: () => signOut('/') } }, icon(ICONS.out), h('span', { class: 'label', ...tx('common.signOut') })),
        )
      : null,
  );
}

/** The refusal a signed-in non-administrator sees instead of the page. */
export function refusedMain() {
  return h(
    'main',
    { id: 'main', class: 'ops-main' },
    h('section', { class: 'card ops-refused', id: 'refused' }, h('h1', tx('admin.refused.title')), h('p', { class: 'lead', ...tx('admin.refused.body') }), h('a', { class: 'btn primary', href: '/', ...tx('admin.refused.home') })),
  );
}
