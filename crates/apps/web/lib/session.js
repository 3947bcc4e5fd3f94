// The signed-in session: /auth/me, the token endpoint for the library's getToken, and
// signing in, up, as a guest, and out. The session itself is an HttpOnly cookie the page
// never sees; every POST is JSON from this origin (the server refuses others).

/** An error of the auth endpoints: `code` is the server's slug (bad_credentials…) or 'network'. */
export class AuthError extends Error {
  constructor(code, message, status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function post(path, body) {
  let res;
  try {
    res = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body ?? {}),
      credentials: 'same-origin',
    });
  } catch (err) {
    throw new AuthError('network', String(err && err.message ? err.message : err));
  }
  if (res.status === 204) return {};
  let json = null;
  try {
    json = await res.json();
  } catch {
    // not JSON
  }
  if (!res.ok) {
    const e = json && json.error;
    throw new AuthError(e?.code || `http_${res.status}`, e?.message || `${res.status} ${res.statusText}`, res.status);
  }
  return json ?? {};
}

let mePromise = null;

/**
 * `GET /auth/me`: `{user: {id, name, roles, guest} | null, signup, guests, api_key_file?}`.
 * Cached for the page; `me(true)` asks again.
 */
export function me(fresh = false) {
  if (!mePromise || fresh) {
    mePromise = fetch('/auth/me', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : { user: null, signup: false, guests: false }))
      .catch(() => ({ user: null, signup: false, guests: false, offline: true }));
  }
  return mePromise;
}

/** The library's getToken: a fresh connection token for this session. */
export async function getToken() {
  const r = await post('/auth/token', {});
  if (!r.token) throw new AuthError('no_token', 'the token endpoint gave no token');
  return r.token;
}

export const signIn = (name, password) => post('/auth/signin', { name, password });
export const signUp = (name, password, invite) => post('/auth/signup', invite ? { name, password, invite } : { name, password });
export const guest = (name) => post('/auth/guest', { name });

/** Signs out and goes to `to` (the home page by default). */
export async function signOut(to = '/') {
  try {
    await post('/auth/signout', {});
  } finally {
    location.assign(to);
  }
}

/**
 * Where to go after signing in: `?next=` when it is a path of this origin (never
 * `//elsewhere` or `https://…`), else `fallback`.
 */
export function nextPath(search = location.search, fallback = '/chat') {
  const next = new URLSearchParams(search).get('next');
  if (!next || !/^\/(?![/\\])/.test(next)) return fallback;
  try {
    const u = new URL(next, location.origin);
    if (u.origin !== location.origin) return fallback;
    return u.pathname + u.search + u.hash;
  } catch {
    return fallback;
  }
}
