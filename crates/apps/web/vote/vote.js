// /vote: live polls. `/vote` lists the user's polls and the open ones and creates a poll;
// `/vote?p=ID` is a poll (vote with one click, the live chart, who is watching, the
// countdown, the owner's controls, the share link and its QR code); `/vote?p=ID#present`
// is the presenter's view of it (full screen, large type: chart, QR code, total).
//
// The server side is the apps crate's `vote.*` rpc methods (docs/apps.md, "Vote"). The
// tally comes live as publications on `poll:ID` ({type: 'tally', counts, total, voters}
// or {type: 'tally', total, voters, hidden: true} while this user may not see the
// counts; {type: 'state', closed}); the namespace has no join/leave events, so the
// watcher count is the channel's presence, asked every few seconds.
import { Switchboard } from '../switchboard.js';
import { h, icon, ICONS, avatar, replace } from '../lib/dom.js';
import { t, tx, lang, languageSwitch, onLangChange } from '../lib/i18n.js';
import { number, dateTime } from '../lib/format.js';
import { me, getToken, signOut, AuthError } from '../lib/session.js';
import { barChart } from '../lib/chart.js';
import { qrSvg } from '../lib/qr.js';

const MIN_OPTIONS = 2;
const MAX_OPTIONS = 20;
const MAX_QUESTION = 300;
const MAX_OPTION = 200;
const PRESENCE_EVERY = 3000;
const POLL_RE = /^[A-Za-z0-9]{1,32}$/;
/** Durations offered for "closes in", in minutes (0: stays open until closed by hand). */
const DURATIONS = [0, 1, 5, 15, 60, 1440];

const info = await me();
if (!info.user) {
  location.replace(`/signin?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`);
  throw new Error('not signed in');
}
const ME = info.user;
const pollId = new URLSearchParams(location.search).get('p');

const sb = new Switchboard(location.origin, {
  getToken: async () => {
    try {
      return await getToken();
    } catch (err) {
      if (err instanceof AuthError && err.status === 401) location.assign(`/signin?next=${encodeURIComponent(location.pathname + location.search)}`);
      throw err;
    }
  },
});

/** An rpc error in words: the server's own message for a refusal, ours otherwise. */
function rpcWords(err) {
  if (!err) return t('vote.err.unknown');
  if (err.code === 119 && err.message) return err.message;
  if (err.code === 'disconnected') return t('chat.err.disconnected');
  if (err.code === 'timeout') return t('chat.err.timeout');
  if (err.code === 'closed') return t('chat.err.closed');
  if (err.code === 111 || err.code === 'too_many_requests') return t('chat.err.rate');
  if (err.code === 103) return t('chat.err.denied');
  if (err.code === 102 || err.code === 104) return t('vote.err.missing');
  return err.message || String(err);
}

const pollUrl = (id) => `${location.origin}/vote?p=${encodeURIComponent(id)}`;

// ---- the frame ---------------------------------------------------------------------

const who = h('div', { class: 'who' });
const banner = h('div', { class: 'banner', role: 'status', id: 'connection-banner', hidden: true });
const main = h('main', { id: 'main', class: 'vote-main' });

function renderWho() {
  replace(
    who,
    avatar(ME.id, ME.name, 'avatar small'),
    h('span', { class: 'hide-narrow' }, ME.name),
    ME.guest ? h('span', { class: 'tag', ...tx('common.guest') }) : null,
    h('button', { class: 'btn small', type: 'button', on: { click: () => signOut('/') } }, icon(ICONS.out), h('span', { class: 'label', ...tx('common.signOut') })),
  );
}

document.body.append(
  h('a', { class: 'skip-link', href: '#main', ...tx('common.skip') }),
  h(
    'header',
    { class: 'topbar' },
    h('a', { class: 'brand', href: '/', 'aria-label': 'Switchboard' }, h('span', { class: 'brand-mark' }, icon(ICONS.vote)), h('span', { class: 'hide-narrow' }, 'Switchboard')),
    h('a', { class: 'btn small ghost', href: '/vote', id: 'nav-polls' }, h('span', tx('vote.nav.polls'))),
    h('span', { class: 'spacer' }),
    languageSwitch(),
    who,
  ),
  banner,
  main,
);
renderWho();

sb.on('connected', () => {
  banner.hidden = true;
});
sb.on('disconnected', () => {
  banner.textContent = t('vote.reconnecting');
  banner.hidden = false;
});

// ---- creating a poll -----------------------------------------------------------------

function field(id, labelKey, control, hintKey) {
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id, ...tx(labelKey) }),
    control,
    hintKey ? h('span', { class: 'hint', id: `${id}-hint`, ...tx(hintKey) }) : null,
  );
}

function createForm() {
  const error = h('div', { class: 'error', role: 'alert', id: 'create-error' });
  const question = h('input', { class: 'input', id: 'poll-question', name: 'question', maxlength: MAX_QUESTION, required: true, autocomplete: 'off' });
  const list = h('ol', { class: 'option-list', id: 'option-list' });
  /** @type {HTMLInputElement[]} */
  let inputs = [];
  const addBtn = h('button', { class: 'btn small', type: 'button', id: 'add-option', on: { click: () => addOption('', true) } }, icon(ICONS.plus), h('span', tx('vote.create.addOption')));

  function renumber() {
    inputs = [...list.querySelectorAll('input')];
    inputs.forEach((input, i) => {
      const n = i + 1;
      input.id = `option-${n}`;
      input.setAttribute('aria-label', t('vote.create.option', { n }));
      input.placeholder = t('vote.create.option', { n });
      const row = /** @type {HTMLElement} */ (input.closest('li'));
      const [up, down, remove] = row.querySelectorAll('button');
      up.setAttribute('aria-label', t('vote.create.up', { n }));
      up.title = up.getAttribute('aria-label');
      down.setAttribute('aria-label', t('vote.create.down', { n }));
      down.title = down.getAttribute('aria-label');
      remove.setAttribute('aria-label', t('vote.create.remove', { n }));
      remove.title = remove.getAttribute('aria-label');
      /** @type {HTMLButtonElement} */ (up).disabled = i === 0;
      /** @type {HTMLButtonElement} */ (down).disabled = i === inputs.length - 1;
      /** @type {HTMLButtonElement} */ (remove).disabled = inputs.length <= MIN_OPTIONS;
    });
    addBtn.disabled = inputs.length >= MAX_OPTIONS;
    max.max = String(Math.max(1, inputs.length));
  }

  function addOption(text, focus) {
    if (list.children.length >= MAX_OPTIONS) return;
    const input = h('input', { class: 'input', type: 'text', maxlength: MAX_OPTION, autocomplete: 'off', value: text });
    input.addEventListener('keydown', (e) => {
      // Enter in the last option adds another one.
      if (e.key === 'Enter' && !e.isComposing && input === inputs.at(-1) && input.value.trim()) {
        e.preventDefault();
        addOption('', true);
      }
    });
    const row = h('li', { class: 'option-row' });
    const move = (by) => {
      const sibling = by < 0 ? row.previousElementSibling : row.nextElementSibling;
      if (!sibling) return;
      if (by < 0) list.insertBefore(row, sibling);
      else list.insertBefore(sibling, row);
      renumber();
      /** @type {HTMLButtonElement} */ (row.querySelectorAll('button')[by < 0 ? 0 : 1]).focus();
    };
    row.append(
      input,
      h('button', { class: 'icon-btn', type: 'button', on: { click: () => move(-1) } }, icon('M12 19V5M5 12l7-7 7 7')),
      h('button', { class: 'icon-btn', type: 'button', on: { click: () => move(1) } }, icon('M12 5v14M5 12l7 7 7-7')),
      h('button', { class: 'icon-btn', type: 'button', on: { click: () => { row.remove(); renumber(); inputs[0]?.focus(); } } }, icon(ICONS.close)),
    );
    list.append(row);
    renumber();
    if (focus) input.focus();
  }

  const multi = h('input', { type: 'checkbox', id: 'poll-multi', name: 'multi' });
  const max = h('input', { class: 'input narrow', type: 'number', id: 'poll-max', name: 'max', min: 2, max: 2, value: 2, disabled: true, inputmode: 'numeric' });
  const maxField = field('poll-max', 'vote.create.max', max);
  maxField.hidden = true;
  multi.addEventListener('change', () => {
    max.disabled = !multi.checked;
    maxField.hidden = !multi.checked;
  });
  const results = h(
    'select',
    { class: 'input', id: 'poll-results', name: 'results' },
    ['always', 'voted', 'closed'].map((r) => h('option', { value: r, ...tx(`vote.results.${r}`) })),
  );
  const closes = h(
    'select',
    { class: 'input', id: 'poll-closes', name: 'closes' },
    DURATIONS.map((m) => h('option', { value: m, ...tx(`vote.closes.${m}`) })),
  );
  const changeable = h('input', { type: 'checkbox', id: 'poll-changeable', name: 'changeable', checked: true });
  const anonymous = h('input', { type: 'checkbox', id: 'poll-anonymous', name: 'anonymous', checked: true });
  const check = (input, key) => h('label', { class: 'check', for: input.id }, input, h('span', tx(key)));
  const submit = h('button', { class: 'btn primary', type: 'submit', id: 'create-submit', ...tx('vote.create.submit') });

  const form = h(
    'form',
    { class: 'panel create', id: 'create-form', novalidate: true, 'aria-labelledby': 'create-title' },
    h('h2', { id: 'create-title', ...tx('vote.create.title') }),
    field('poll-question', 'vote.create.question', question),
    h('fieldset', { class: 'options' }, h('legend', tx('vote.create.options')), list, addBtn),
    h('fieldset', { class: 'settings' }, h('legend', tx('vote.create.settings')),
      check(multi, 'vote.create.multi'),
      maxField,
      field('poll-results', 'vote.create.results', results),
      field('poll-closes', 'vote.create.closes', closes),
      check(changeable, 'vote.create.changeable'),
      check(anonymous, 'vote.create.anonymous'),
    ),
    error,
    h('div', { class: 'form-actions' }, submit),
  );
  addOption('', false);
  addOption('', false);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const q = question.value.trim();
    const options = inputs.map((i) => i.value.trim()).filter(Boolean);
    if (!q) {
      error.textContent = t('vote.create.needQuestion');
      question.focus();
      return;
    }
    if (options.length < MIN_OPTIONS) {
      error.textContent = t('vote.create.needOptions', { min: MIN_OPTIONS });
      return;
    }
    if (new Set(options).size !== options.length) {
      error.textContent = t('vote.create.duplicate');
      return;
    }
    const minutes = Number(closes.value);
    const body = {
      question: q,
      options,
      max_choices: multi.checked ? Math.max(2, Math.min(options.length, Number(max.value) || 2)) : 1,
      results: results.value,
      changeable: changeable.checked,
      closes_at: minutes ? Date.now() + minutes * 60000 : null,
      anonymous: anonymous.checked,
    };
    submit.disabled = true;
    try {
      const r = await sb.rpc('vote.create', body);
      location.assign(`/vote?p=${encodeURIComponent(r.poll)}`);
    } catch (err) {
      error.textContent = rpcWords(err);
      submit.disabled = false;
    }
  });
  onLangChange(renumber);
  return form;
}

// ---- the lists -----------------------------------------------------------------------

function pollLink(s, showOwner) {
  const total = typeof s.total === 'number' ? s.total : typeof s.voters === 'number' ? s.voters : 0;
  return h(
    'li',
    null,
    h(
      'a',
      { class: 'poll-link', href: `/vote?p=${encodeURIComponent(s.id)}` },
      h('span', { class: 'poll-q' }, s.question || s.id),
      h(
        'span',
        { class: 'sub' },
        t('vote.votes', { count: total, n: number(total) }),
        s.closed ? ` · ${t('vote.closed')}` : '',
        showOwner && s.owner_name ? ` · ${t('vote.by', { name: s.owner_name })}` : '',
      ),
    ),
  );
}

async function renderLists(mine, open) {
  try {
    const r = await sb.rpc('vote.list', {});
    const fill = (ul, items, emptyKey, showOwner) => replace(ul, items && items.length ? items.map((s) => pollLink(s, showOwner)) : h('li', { class: 'empty', ...tx(emptyKey) }));
    const own = new Set((r.mine || []).map((s) => s.id));
    fill(mine, r.mine, 'vote.list.mineEmpty', false);
    // Everyone's open polls but the user's own (listed above).
    fill(open, (r.open || []).filter((s) => !own.has(s.id)), 'vote.list.openEmpty', true);
  } catch (err) {
    replace(mine, h('li', { class: 'error' }, rpcWords(err)));
  }
}

function homeView() {
  document.body.classList.add('vote-home');
  const mine = h('ul', { class: 'poll-list', id: 'my-polls', 'aria-labelledby': 'mine-title' });
  const open = h('ul', { class: 'poll-list', id: 'open-polls', 'aria-labelledby': 'open-title' });
  replace(
    main,
    h('h1', { class: 'visually-hidden', ...tx('vote.heading') }),
    h(
      'div',
      { class: 'vote-grid' },
      createForm(),
      h(
        'div',
        { class: 'lists' },
        h('section', { class: 'panel', 'aria-labelledby': 'mine-title' }, h('h2', { id: 'mine-title', ...tx('vote.list.mine') }), mine),
        h('section', { class: 'panel', 'aria-labelledby': 'open-title' }, h('h2', { id: 'open-title', ...tx('vote.list.open') }), open),
      ),
    ),
  );
  sb.on('connected', () => renderLists(mine, open));
  sb.connect();
}

// ---- a poll --------------------------------------------------------------------------

/**
 * @typedef {{id: string, question: string, options: string[], max_choices: number, results: string,
 *   changeable: boolean, closes_at: number | null, anonymous: boolean, owner: string, owner_name: string,
 *   closed: boolean, created: number}} Poll
 */

function pollView(id) {
  document.body.classList.add('vote-poll');
  /** @type {Poll | null} */
  let poll = null;
  /** @type {number[] | null} */
  let mine = null;
  /** @type {{counts?: number[], total: number, voters: number} | null} */
  let tally = null;
  /** The `seq` of the tally shown. */
  let seq = -1;
  let visible = false;
  let watchers = null;
  /** The choices ticked and not yet sent (several-choice polls). */
  let picked = new Set();
  let busy = false;

  const title = h('h1', { id: 'poll-title', class: 'poll-title' });
  const meta = h('p', { class: 'poll-meta', id: 'poll-meta' });
  const status = h('p', { class: 'poll-status', id: 'poll-status' });
  const countdown = h('span', { class: 'countdown', id: 'countdown', role: 'timer' });
  const watching = h('span', { class: 'watchers', id: 'watchers' });
  const ballot = h('div', { class: 'ballot', id: 'ballot', role: 'group', 'aria-labelledby': 'poll-title' });
  const ballotNote = h('p', { class: 'note', id: 'ballot-note' });
  const voteError = h('div', { class: 'error', role: 'alert', id: 'vote-error' });
  const submitChoices = h('button', { class: 'btn primary', type: 'button', id: 'submit-choices', hidden: true, on: { click: () => cast([...picked]) } });
  const chart = barChart({ title: '', percent: true, describe: (items, total) => describe(items, total) });
  const chartBox = h('div', { class: 'chart-box', id: 'results' });
  const hiddenNote = h('p', { class: 'note results-hidden', id: 'results-hidden', hidden: true });
  const totals = h('p', { class: 'totals', id: 'totals' });
  const owner = h('div', { class: 'owner-controls', id: 'owner-controls', hidden: true });
  const ownerError = h('div', { class: 'error', role: 'alert' });
  const link = h('input', { class: 'input', id: 'share-link', value: pollUrl(id) });
  link.setAttribute('readonly', '');
  const copied = h('span', { class: 'note', 'aria-live': 'polite', id: 'copied' });
  const qrBox = h('div', { class: 'qr-box', id: 'qr' });
  const present = h('section', { class: 'present', id: 'present', 'aria-labelledby': 'present-title', hidden: true });

  function describe(items, total) {
    return items.map((i) => `${i.label}: ${number(i.value)}${total ? ` (${Math.round((i.value / total) * 100)}%)` : ''}`).join('; ');
  }

  function labels() {
    const seen = new Map();
    return (poll ? poll.options : []).map((text) => {
      const n = (seen.get(text) || 0) + 1;
      seen.set(text, n);
      const short = [...text].length > 24 ? `${[...text].slice(0, 23).join('')}…` : text;
      return n > 1 ? `${short} (${n})` : short;
    });
  }

  function renderHead() {
    if (!poll) return;
    title.textContent = poll.question;
    document.title = `${poll.question} · ${t('vote.title')}`;
    const parts = [t('vote.by', { name: poll.owner_name || poll.owner })];
    parts.push(poll.max_choices > 1 ? t('vote.upTo', { max: poll.max_choices }) : t('vote.single'));
    parts.push(t(poll.anonymous ? 'vote.anonymous' : 'vote.named'));
    if (poll.changeable) parts.push(t('vote.changeable'));
    meta.textContent = parts.join(' · ');
    replace(status, h('span', { class: poll.closed ? 'tag' : 'tag live', id: 'poll-state' }, t(poll.closed ? 'vote.closed' : 'vote.open')), ' ', countdown, ' ', watching);
    renderWatchers();
    tick();
  }

  function renderWatchers() {
    watching.textContent = watchers === null ? '' : t('vote.watching', { count: watchers, n: number(watchers) });
  }

  function tick() {
    if (!poll || poll.closed || !poll.closes_at) {
      countdown.textContent = '';
      return;
    }
    const left = poll.closes_at - Date.now();
    if (left <= 0) {
      countdown.textContent = t('vote.closing');
      return;
    }
    const s = Math.ceil(left / 1000);
    const hms = s >= 3600 ? `${Math.floor(s / 3600)}:${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}` : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
    countdown.textContent = t('vote.closesIn', { time: hms });
    countdown.title = dateTime(poll.closes_at);
  }

  function renderBallot() {
    if (!poll) return;
    const several = poll.max_choices > 1;
    const locked = poll.closed || (mine !== null && !poll.changeable);
    const chosen = new Set(mine || []);
    replace(
      ballot,
      poll.options.map((text, i) => {
        const on = several ? picked.has(i) : chosen.has(i);
        const b = h(
          'button',
          {
            class: on ? 'choice chosen' : 'choice',
            type: 'button',
            'aria-pressed': String(on),
            'data-index': i,
            disabled: locked || busy,
            on: {
              click: () => {
                if (several) {
                  if (picked.has(i)) picked.delete(i);
                  else if (picked.size < poll.max_choices) picked.add(i);
                  renderBallot();
                } else cast([i]);
              },
            },
          },
          h('span', { class: 'choice-mark', 'aria-hidden': 'true' }, on ? icon(ICONS.check) : null),
          h('span', { class: 'choice-text' }, text),
          chosen.has(i) ? h('span', { class: 'tag' }, t('vote.yourChoice')) : null,
        );
        return b;
      }),
    );
    submitChoices.hidden = !several || locked;
    submitChoices.textContent = mine ? t('vote.change') : t('vote.submit');
    submitChoices.disabled = busy || picked.size === 0;
    let note = '';
    if (poll.closed) note = t('vote.note.closed');
    else if (mine && !poll.changeable) note = t('vote.note.final');
    else if (mine) note = t('vote.note.change');
    else note = several ? t('vote.note.several', { max: poll.max_choices }) : t('vote.note.one');
    ballotNote.textContent = note;
  }

  function renderResults() {
    if (!poll) return;
    const counts = visible && tally && Array.isArray(tally.counts) ? tally.counts : null;
    chart.el.querySelector('title').textContent = poll.question;
    if (counts) {
      const names = labels();
      chart.update(names.map((label, i) => ({ label, value: counts[i] || 0 })));
    }
    chart.el.toggleAttribute('hidden', !counts);
    hiddenNote.hidden = !!counts;
    hiddenNote.textContent = poll.results === 'closed' ? t('vote.hidden.closed') : t('vote.hidden.voted');
    const total = tally ? tally.total || 0 : 0;
    const voters = tally ? tally.voters || 0 : 0;
    totals.textContent = poll.max_choices > 1 ? `${t('vote.votes', { count: total, n: number(total) })} · ${t('vote.voters', { count: voters, n: number(voters) })}` : t('vote.votes', { count: total, n: number(total) });
    renderPresent();
  }

  function renderOwner() {
    const mayManage = poll && (poll.owner === ME.id || (ME.roles || []).includes('admin'));
    owner.hidden = !mayManage;
    if (!mayManage || !poll) return;
    const act = (key, fn, cls = 'btn small') => h('button', { class: cls, type: 'button', on: { click: fn } }, t(key));
    const run = (method) => async () => {
      ownerError.textContent = '';
      try {
        await sb.rpc(method, { poll: id });
        await load();
      } catch (err) {
        ownerError.textContent = rpcWords(err);
      }
    };
    let armed = false;
    const del = act('vote.owner.delete', async () => {
      if (!armed) {
        armed = true;
        del.textContent = t('vote.owner.confirmDelete');
        setTimeout(() => {
          armed = false;
          del.textContent = t('vote.owner.delete');
        }, 5000);
        return;
      }
      try {
        await sb.rpc('vote.delete', { poll: id });
        location.assign('/vote');
      } catch (err) {
        ownerError.textContent = rpcWords(err);
      }
    }, 'btn small danger');
    del.id = 'delete-poll';
    replace(
      owner,
      h('h2', tx('vote.owner.title')),
      h(
        'div',
        { class: 'row' },
        poll.closed ? act('vote.owner.reopen', run('vote.reopen')) : act('vote.owner.close', run('vote.close')),
        act('vote.owner.csv', () => exportAs('csv')),
        act('vote.owner.json', () => exportAs('json')),
        del,
      ),
      ownerError,
    );
  }

  async function exportAs(format) {
    ownerError.textContent = '';
    try {
      const r = await sb.rpc('vote.export', { poll: id, format });
      const blob = new Blob([r.content], { type: format === 'csv' ? 'text/csv;charset=utf-8' : 'application/json' });
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = r.filename || `poll-${id}.${format}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (err) {
      ownerError.textContent = rpcWords(err);
    }
  }

  async function cast(choices) {
    if (!poll || busy) return;
    busy = true;
    voteError.textContent = '';
    renderBallot();
    try {
      const r = await sb.rpc('vote.cast', { poll: id, choices });
      mine = choices;
      picked = new Set(choices);
      if (r && r.tally && fresh(r.seq)) {
        tally = r.tally;
        visible = true;
      }
      busy = false;
      renderBallot();
      renderResults();
      // The visibility may have changed with this vote ("after voting"): ask again.
      if (!r || !r.tally) await load();
    } catch (err) {
      busy = false;
      voteError.textContent = rpcWords(err);
      renderBallot();
    }
  }

  async function load() {
    try {
      const r = await sb.rpc('vote.get', { poll: id });
      poll = r.poll;
      mine = Array.isArray(r.mine) ? r.mine : null;
      if (mine && picked.size === 0) picked = new Set(mine);
      visible = !!r.visible && !!r.tally;
      // A push newer than this answer may have come meanwhile: keep the newer tally.
      if (fresh(r.seq)) tally = r.tally || (r.tally === null && tally ? { total: tally.total, voters: tally.voters } : null);
      else if (!visible && tally) tally = { total: tally.total, voters: tally.voters };
      renderHead();
      renderBallot();
      renderResults();
      renderOwner();
    } catch (err) {
      gone(rpcWords(err));
    }
  }

  /** The poll is not there (any more): say so, with the way back to the list. */
  function gone(words) {
    replace(main, h('div', { class: 'panel', id: 'poll-gone' }, h('h1', tx('vote.missing.title')), h('p', null, words), h('a', { class: 'btn', href: '/vote', ...tx('vote.nav.polls') })));
  }

  /**
   * Whether a tally numbered `s` is not older than the one shown (a tally's `seq` rises
   * with every vote, close and reopen; pushes and answers may arrive in any order).
   */
  function fresh(s) {
    if (typeof s !== 'number') return true;
    if (s < seq) return false;
    seq = s;
    return true;
  }

  function onData(d) {
    if (!d || typeof d !== 'object') return;
    if (d.type === 'tally') {
      if (d.hidden && visible) {
        refreshSoon();
        return;
      }
      if (!fresh(d.seq)) return;
      if (d.hidden || !Array.isArray(d.counts)) {
        // The counts are hidden from those who may not see them ("after voting": the push
        // is the same for every watcher). A user who may see them asks for them.
        if (visible) {
          refreshSoon();
          return;
        }
        tally = { total: d.total || 0, voters: d.voters || 0 };
      } else {
        tally = { counts: d.counts, total: d.total || 0, voters: d.voters || 0 };
        visible = true;
      }
      renderResults();
    } else if (d.type === 'state') {
      if (poll) poll.closed = !!d.closed;
      load();
    } else if (d.type === 'deleted') {
      sub.unsubscribe().catch(() => {});
      gone(t('vote.deleted'));
    }
  }

  let refreshTimer = 0;
  /** `vote.get` once within the next 250 ms, however many pushes ask for it. */
  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = 0;
      load();
    }, 250);
  }

  async function countWatchers() {
    if (!sub) return;
    try {
      const p = await sub.presence();
      watchers = Object.keys(p.presence || {}).length + Object.keys(p.anonymous || {}).length;
      renderWatchers();
      renderPresent();
    } catch {
      // the next round tries again
    }
  }

  // ---- presenter mode ----

  const presentTitle = h('h1', { id: 'present-title', class: 'present-title' });
  const presentTotal = h('p', { class: 'present-total', id: 'present-total' });
  const presentChart = barChart({ title: '', percent: true, describe: (items, total) => describe(items, total) });
  const presentHidden = h('p', { class: 'present-hidden', hidden: true });
  const presentQr = h('div', { class: 'present-qr' });
  const presentLink = h('p', { class: 'present-link' }, pollUrl(id).replace(/^https?:\/\//, ''));
  const presentTimer = h('p', { class: 'present-timer', role: 'timer' });
  present.append(
    h(
      'div',
      { class: 'present-bar' },
      h('button', { class: 'btn small', type: 'button', id: 'fullscreen', ...tx('vote.present.fullscreen'), on: { click: () => document.documentElement.requestFullscreen?.().catch(() => {}) } }),
      h('a', { class: 'btn small', href: '#', id: 'exit-present', on: { click: (e) => { e.preventDefault(); history.replaceState(null, '', location.pathname + location.search); route(); } }, ...tx('vote.present.exit') }),
    ),
    presentTitle,
    h('div', { class: 'present-body' }, h('div', { class: 'present-chart' }, presentChart.el, presentHidden), h('div', { class: 'present-side' }, presentQr, presentLink, presentTotal, presentTimer)),
  );

  function renderPresent() {
    if (present.hidden || !poll) return;
    presentTitle.textContent = poll.question;
    const counts = visible && tally && Array.isArray(tally.counts) ? tally.counts : null;
    presentChart.el.querySelector('title').textContent = poll.question;
    if (counts) presentChart.update(labels().map((label, i) => ({ label, value: counts[i] || 0 })));
    presentChart.el.toggleAttribute('hidden', !counts);
    presentHidden.hidden = !!counts;
    presentHidden.textContent = poll.results === 'closed' ? t('vote.hidden.closed') : t('vote.hidden.voted');
    const total = tally ? tally.total || 0 : 0;
    presentTotal.textContent = t('vote.votes', { count: total, n: number(total) });
    presentTimer.textContent = poll.closed ? t('vote.closed') : countdown.textContent;
  }

  function route() {
    const presenting = location.hash === '#present';
    document.body.classList.toggle('presenting', presenting);
    present.hidden = !presenting;
    page.hidden = presenting;
    if (presenting && !presentQr.firstChild) presentQr.append(qrSvg(pollUrl(id), { title: t('vote.share.qr') }));
    renderPresent();
  }

  const page = h(
    'div',
    { class: 'poll-page' },
    h(
      'section',
      { class: 'panel poll', 'aria-labelledby': 'poll-title' },
      title,
      meta,
      status,
      ballot,
      h('div', { class: 'row' }, submitChoices),
      ballotNote,
      voteError,
    ),
    h(
      'section',
      { class: 'panel results', 'aria-labelledby': 'results-title' },
      h('h2', { id: 'results-title', ...tx('vote.results.title') }),
      chartBox,
      hiddenNote,
      totals,
    ),
    h(
      'section',
      { class: 'panel share', 'aria-labelledby': 'share-title' },
      h('h2', { id: 'share-title', ...tx('vote.share.title') }),
      h('label', { for: 'share-link', class: 'visually-hidden', ...tx('vote.share.link') }),
      h(
        'div',
        { class: 'row' },
        link,
        h('button', {
          class: 'btn small', type: 'button', id: 'copy-link', ...tx('vote.share.copy'),
          on: {
            click: async () => {
              try {
                await navigator.clipboard.writeText(pollUrl(id));
                copied.textContent = t('vote.share.copied');
              } catch {
                link.select();
                copied.textContent = t('vote.share.select');
              }
            },
          },
        }),
      ),
      copied,
      qrBox,
      h('a', { class: 'btn', href: '#present', id: 'open-present' }, icon(ICONS.monitor), h('span', tx('vote.present.open'))),
    ),
    owner,
  );
  chartBox.append(chart.el);
  qrBox.append(qrSvg(pollUrl(id), { title: t('vote.share.qr') }));
  replace(main, page, present);
  link.addEventListener('focus', () => link.select());
  window.addEventListener('hashchange', route);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && location.hash === '#present' && !document.fullscreenElement) {
      history.replaceState(null, '', location.pathname + location.search);
      route();
    }
  });

  const sub = sb.subscribe(`poll:${id}`, {
    onPublication: (p) => onData(p.data),
    onSubscribed: () => {
      load();
      countWatchers();
    },
    onRecoveryFailed: () => load(),
    onError: (err) => {
      voteError.textContent = rpcWords(err);
    },
  });
  setInterval(() => {
    tick();
    if (!present.hidden) presentTimer.textContent = poll && poll.closed ? t('vote.closed') : countdown.textContent;
    // Past the closing time without a state push: ask.
    if (poll && !poll.closed && poll.closes_at && Date.now() > poll.closes_at + 1500 && !busy) {
      poll.closes_at = null;
      load();
    }
  }, 1000);
  setInterval(() => {
    if (document.visibilityState === 'visible') countWatchers();
  }, PRESENCE_EVERY);
  onLangChange(() => {
    renderHead();
    renderBallot();
    renderResults();
    renderOwner();
    replace(qrBox, qrSvg(pollUrl(id), { title: t('vote.share.qr') }));
    replace(presentQr, qrSvg(pollUrl(id), { title: t('vote.share.qr') }));
  });
  route();
  sb.connect();
  Object.defineProperty(window, 'vote', { value: { get poll() { return poll; }, get tally() { return tally; } } });
}

if (pollId && POLL_RE.test(pollId)) pollView(pollId);
else homeView();
document.documentElement.lang = lang();

// For tests and the curious: the page's client.
Object.defineProperty(window, 'switchboard', { value: sb });
