// /signin: a name and a password; "create account" where sign-up is open (or with an
// invite, ?invite=CODE); "continue as guest" where guests are allowed. Errors are said in
// words; success goes to ?next= (a path of this origin only) or /chat.
import { h, icon, ICONS, replace, avatar } from '../lib/dom.js';
import { t, tx, languageSwitch, onLangChange } from '../lib/i18n.js';
import { me, signIn, signUp, guest, signOut, nextPath } from '../lib/session.js';

const params = new URLSearchParams(location.search);
const invite = params.get('invite') || '';
const NAME_RE = /^[\p{L}\p{N}_.-]{2,32}$/u;

const state = {
  /** 'signin' | 'signup' */
  mode: invite ? 'signup' : params.get('mode') === 'signup' ? 'signup' : 'signin',
  info: { user: null, signup: false, guests: false },
  busy: false,
  /** The last error as an i18n key and vars, kept so a language switch re-says it. */
  error: null,
};

const card = h('div', { class: 'card' });
const errorBox = h('div', { class: 'error', role: 'alert', id: 'signin-error' });

function showError(key, vars = {}) {
  state.error = key ? { key, vars } : null;
  errorBox.textContent = key ? t(key, vars) : '';
}

/** The words for an AuthError from the server. */
function explain(err) {
  const known = {
    bad_credentials: 'signin.err.bad_credentials',
    rate_limited: 'signin.err.rate_limited',
    name_taken: 'signin.err.name_taken',
    signup_closed: 'signin.err.signup_closed',
    invalid_name: 'signin.err.invalid_name',
    invalid_password: 'signin.err.invalid_password',
    guests_disabled: 'signin.err.guests_disabled',
    invalid_invite: 'signin.err.invalid_invite',
    invite_invalid: 'signin.err.invalid_invite',
    network: 'signin.err.network',
    busy: 'signin.err.busy',
    cross_origin: 'signin.err.cross_origin',
  };
  if (known[err.code]) return showError(known[err.code]);
  showError('signin.err.other', { message: err.message || String(err) });
}

function go() {
  location.assign(nextPath(location.search, '/chat'));
}

async function run(fn) {
  if (state.busy) return;
  state.busy = true;
  for (const b of card.querySelectorAll('button')) b.disabled = true;
  showError(null);
  try {
    await fn();
    go();
  } catch (err) {
    explain(err);
    state.busy = false;
    for (const b of card.querySelectorAll('button')) b.disabled = false;
  }
}

function field(id, labelKey, input, hintKey) {
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id, ...tx(labelKey) }),
    input,
    hintKey ? h('span', { class: 'hint', id: `${id}-hint`, ...tx(hintKey) }) : null,
  );
}

function accountForm() {
  const signup = state.mode === 'signup';
  const name = h('input', {
    class: 'input',
    id: 'name',
    name: 'name',
    autocomplete: 'username',
    required: true,
    maxlength: 32,
    spellcheck: 'false',
    'aria-describedby': signup ? 'name-hint' : null,
  });
  const password = h('input', {
    class: 'input',
    id: 'password',
    name: 'password',
    type: 'password',
    autocomplete: signup ? 'new-password' : 'current-password',
    required: true,
    maxlength: 256,
    'aria-describedby': signup ? 'password-hint' : null,
  });
  const form = h(
    'form',
    {
      novalidate: true,
      on: {
        submit: (e) => {
          e.preventDefault();
          const n = name.value.trim();
          const p = password.value;
          if (!n) return showError('signin.err.name_missing'), name.focus();
          if (signup && !NAME_RE.test(n)) return showError('signin.err.invalid_name'), name.focus();
          if (!p) return showError('signin.err.password_missing'), password.focus();
          if (signup && (p.length < 8 || p.length > 256)) return showError('signin.err.invalid_password'), password.focus();
          run(() => (signup ? signUp(n, p, invite || undefined) : signIn(n, p)));
        },
      },
    },
    field('name', 'signin.name', name, signup ? 'signin.name.hint' : null),
    field('password', 'signin.password', password, signup ? 'signin.password.hint' : null),
    h('button', { class: 'btn primary block', type: 'submit', ...tx(signup ? 'signin.create' : 'signin.submit') }),
  );
  return { form, name };
}

function guestForm() {
  const name = h('input', { class: 'input', id: 'guest-name', name: 'guest', autocomplete: 'nickname', maxlength: 32, spellcheck: 'false' });
  return h(
    'form',
    {
      novalidate: true,
      on: {
        submit: (e) => {
          e.preventDefault();
          const n = name.value.trim();
          if (!NAME_RE.test(n)) return showError('signin.err.invalid_name'), name.focus();
          run(() => guest(n));
        },
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'guest-name', ...tx('signin.guest.name') }), h('div', { class: 'guest-row' }, name, h('button', { class: 'btn', type: 'submit', ...tx('signin.guest.submit') }))),
  );
}

function render() {
  const info = state.info;
  const signup = state.mode === 'signup';
  if (info.user) {
    replace(
      card,
      h('h1', tx('signin.already')),
      h('p', { class: 'lead' }, t('signin.already.lead', { name: info.user.name })),
      h('div', { class: 'who' }, avatar(info.user.id, info.user.name), h('strong', null, info.user.name)),
      h('p'),
      h('a', { class: 'btn primary block', href: nextPath(location.search, '/chat'), ...tx('signin.continue') }),
      h('p', { class: 'switch-mode' }, h('button', { class: 'linkish', type: 'button', on: { click: () => signOut('/signin') }, ...tx('common.signOut') })),
    );
    return;
  }
  if (info.external) {
    replace(card, h('h1', tx('signin.heading')), h('p', { class: 'lead', ...tx('signin.external') }));
    return;
  }
  const { form, name } = accountForm();
  const canSignup = info.signup || !!invite;
  replace(
    card,
    h('h1', tx(invite ? 'signin.invite.title' : signup ? 'signin.signup.title' : 'signin.heading')),
    h('p', { class: 'lead', ...tx(invite ? 'signin.invite.lead' : signup ? 'signin.signup.lead' : 'signin.lead') }),
    errorBox,
    form,
    canSignup && !invite
      ? h(
          'p',
          { class: 'switch-mode' },
          h('span', tx(signup ? 'signin.haveAccount' : 'signin.newHere')),
          ' ',
          h('button', {
            class: 'linkish',
            type: 'button',
            ...tx(signup ? 'signin.toSignin' : 'signin.toSignup'),
            on: {
              click: () => {
                state.mode = signup ? 'signin' : 'signup';
                showError(null);
                render();
                card.querySelector('#name')?.focus();
              },
            },
          }),
        )
      : null,
    !canSignup ? h('p', { class: 'switch-mode', ...tx('signin.inviteOnly') }) : null,
    info.guests && !invite ? [h('div', { class: 'divider', ...tx('signin.or') }), guestForm()] : null,
  );
  name.focus();
}

document.body.append(
  h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/' }, h('span', { class: 'brand-mark' }, icon(ICONS.chat)), 'Switchboard'),
    h('span', { class: 'spacer' }),
    languageSwitch(),
  ),
  h('main', { id: 'main' }, card),
);
onLangChange(() => {
  if (state.error) errorBox.textContent = t(state.error.key, state.error.vars);
  if (state.info.user) render();
});
state.info = await me();
render();
