// @ts-check
/**
 * switchboard.js: the browser client of Switchboard, one ES module with no dependencies and
 * no build step. The server serves it at `/switchboard.js` (types at `/switchboard.d.ts`).
 *
 * ```js
 * import { Switchboard } from 'http://127.0.0.1:8000/switchboard.js';
 * const sb = new Switchboard('http://127.0.0.1:8000', { getToken: fetchTokenFromMyBackend });
 * sb.subscribe('chat:lobby', { onPublication: (p) => show(p.data) });
 * sb.connect();
 * ```
 *
 * What it does (docs/client.md says it for people; docs/protocol.md is the wire protocol):
 * - speaks the protocol over WebSocket, Server-Sent Events (+ POST for commands), long
 *   polling or short polling, falling back along `transports` when one cannot open;
 * - reconnects with exponential backoff and full jitter, except after close codes that say
 *   retrying cannot help (4001, 4003, 1009, 4009; 4002 without `getToken`); 4008 is the
 *   server asking for a reconnect, so it reconnects then too (fetching a new token with
 *   `getToken`), and so does 1013 (a connection limit: the backoff waits for room);
 * - ends a subscription the server ended (an `unsubscribe` push) and tells the app;
 * - resubscribes every channel with `recover` = the last epoch and offset it delivered, and
 *   drops any publication at or below that offset, so the application sees each
 *   publication once and in order, or is told by `onRecoveryFailed` to reload; ephemeral
 *   publications (no offset) are handed over as they come and leave that position alone;
 * - calls the server's application with `rpc` (one request, one result);
 * - acknowledges private messages and drops redeliveries by mailbox id (ids start over
 *   when the user or the connect reply's `mailbox_epoch` changes);
 * - tells a server that refuses the page's origin apart from one that is down, which look
 *   the same to a page (originRefusal), and then stops with a reason naming the fix;
 * - refreshes the token with `getToken` shortly before it expires;
 * - queues commands while not connected and sends them once connected; a command sent
 *   rejects after `commandTimeout` without a reply, and any command takes an AbortSignal;
 * - ends its session with the `close` command on close(), on `pagehide` (by beacon) and
 *   when it gives up on a session, so that an SSE or polling session does not linger.
 *
 * Layout: constants and errors; the Switchboard client (connection state machine, commands,
 * pushes, recovery, mailbox, token, liveness, upgrade probe); Subscription; the three
 * transports (WebSocket, SSE, polling), which all turn a connection into "send these
 * commands" and "here is a reply or push" and report one close.
 */

/** The library's version. */
export const VERSION = '0.1.0';

/**
 * `readyState` values, as on the browser's WebSocket.
 * @typedef {0 | 1 | 2 | 3} ReadyState
 */
export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;

/** Close code of an SSE stream whose session another stream resumed. */
const SESSION_TAKEN = 4009;

/** Every transport the client knows, best first. */
export const TRANSPORTS = /** @type {const} */ (['websocket', 'sse', 'longpoll', 'poll']);
/** @typedef {typeof TRANSPORTS[number]} TransportName */
/** @type {TransportName[]} */
const DEFAULT_TRANSPORTS = ['websocket', 'sse', 'longpoll'];

/**
 * Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes"): 1009
 * (a command too large: it would be sent again), 4001 (the token is invalid), 4003 (the
 * backend disconnected the user on purpose), 4009 (over SSE, someone else resumed this
 * session with its id: the id leaked, and the application should know rather than have
 * the client carry on quietly). 4002 (token expired) is here too unless a `getToken`
 * callback can fetch a new token. Not here: 4008, the backend disconnecting the user so
 * that the client reconnects (see `_afterClose`), nor 1013, the server or the user at
 * their connection limit (a reconnect with backoff may find room).
 */
const FINAL_CODES = new Set([1009, 4001, 4003, SESSION_TAKEN]);

/** Close code of a server-API disconnect that asks the client to reconnect. */
const RECONNECT = 4008;

/**
 * ms a closing transport waits for the server to confirm the `close` command. Closing
 * must never hang on a server that does not answer, and nothing is lost by giving up: a
 * session the server was not told about ends by itself after `limits.session_idle`.
 */
const CLOSE_WAIT = 2000;

/**
 * The client's own error codes (docs/client.md, "Commands and errors").
 * @typedef {'closed' | 'disconnected' | 'queue_full' | 'timeout' | 'token' | 'unsubscribed' | 'origin'} ClientErrorCode
 */

/**
 * Error of a command (`code` is the protocol's error code, 100-119, see docs/protocol.md)
 * or of the client itself (`code` is a ClientErrorCode string).
 */
export class SwitchboardError extends Error {
  /**
   * @param {number | ClientErrorCode} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'SwitchboardError';
    /** @type {number | ClientErrorCode} */
    this.code = code;
  }
}

/**
 * @typedef {object} Position
 * @property {number} offset
 * @property {string} epoch
 *
 * @typedef {object} ClientInfo
 * @property {string} user
 * @property {string} client
 * @property {any} [info]
 *
 * @typedef {object} Publication
 * @property {string} channel
 * @property {string} epoch
 * @property {number} offset
 * @property {any} data
 * @property {ClientInfo} [info]
 * @property {number} [time]
 * @property {true} [ephemeral]  an ephemeral publication (not stored, no offset: `offset`
 *   is 0 and the subscription's position is left as it was)
 *
 * @typedef {object} PrivateMessage
 * @property {number} mailbox
 * @property {ClientInfo} [from]
 * @property {any} data
 * @property {number} [time]
 *
 * @typedef {object} SubscribeHandlers
 * @property {(pub: Publication) => void} [onPublication]
 * @property {(ev: {channel: string, info: ClientInfo}) => void} [onJoin]
 * @property {(ev: {channel: string, info: ClientInfo}) => void} [onLeave]
 * @property {(ev: {channel: string, epoch: string, offset: number}) => void} [onRecoveryFailed]
 * @property {(ev: {channel: string, epoch: string, offset: number, recoverable: boolean, recovered?: boolean}) => void} [onSubscribed]
 * @property {(err: SwitchboardError) => void} [onError]
 * @property {(ev: {channel: string, reason: string}) => void} [onUnsubscribed]
 *
 * @typedef {object} CallOptions
 * @property {AbortSignal} [signal]  cancels the command: it rejects at once with the
 *   signal's reason (a queued command is then never sent)
 *
 * @typedef {object} PublishOptions
 * @property {AbortSignal} [signal]
 * @property {boolean} [ephemeral]  not stored in history and given no offset (typing
 *   indicators): subscribers get it live or never; the reply's offset is 0
 *
 * @typedef {object} HistoryOptions
 * @property {AbortSignal} [signal]
 * @property {number} [limit]     at most this many publications (the newest ones with `before`)
 * @property {Position} [since]   publications after this position
 * @property {number} [before]    publications below this offset (paging backwards); the
 *   reply still lists them oldest first
 *
 * @typedef {object} SwitchboardOptions
 * @property {string} [token]
 * @property {() => (string | Promise<string>)} [getToken]
 * @property {TransportName[]} [transports]
 * @property {number} [minReconnectDelay]
 * @property {number} [maxReconnectDelay]
 * @property {number} [timeout]
 * @property {number} [commandTimeout]
 * @property {number} [maxQueue]
 * @property {number} [upgradeDelay]
 * @property {number} [fallbackAfter]
 * @property {number} [pollInterval]
 * @property {() => number} [random]
 * @property {any} [WebSocket]
 * @property {any} [EventSource]
 * @property {typeof fetch} [fetch]
 */

/**
 * @typedef {object} Transport
 * @property {TransportName} name
 * @property {(connect: object) => void} open   starts; `connect` is the first command
 * @property {(commands: object[]) => void} send
 * @property {(command?: object | null, wait?: number) => Promise<void>} close
 *   ends it, no callback after this; with `command` (the `close` command) the server's
 *   session is ended first, when there is one: resolves once it confirmed, or after `wait`
 * @property {(command: object) => void} beacon
 *   the page is going away: hands `command` to the browser to deliver, and ends at once
 * @property {number} bufferedAmount
 *
 * @typedef {object} Sink
 * @property {(msg: any) => void} message       one reply or push
 * @property {() => void} activity              something arrived
 * @property {(info: CloseInfo) => void} close  the transport ended (once)
 *
 * @typedef {object} CloseInfo
 * @property {number} code
 * @property {string} reason
 * @property {boolean} [failed]   the transport itself failed (no protocol close code)
 * @property {number} [switchTo]  internal: an upgrade to this transport index
 * @property {boolean} [refused]  the server refuses the page's origin (final)
 *
 * @typedef {object} Call  a command in the queue, or sent and waiting for its reply
 * @property {Record<string, any>} cmd
 * @property {(result: any) => void} resolve
 * @property {(err: any) => void} reject
 * @property {boolean} [internal]  the client's own (subscribe, ack, refresh, ping, connect)
 * @property {number} [bytes]      its size, while queued
 * @property {number} [id]         once sent
 * @property {any} [timer]         once sent: the commandTimeout
 */

const encoder = new TextEncoder();
/** @param {string} s */
const byteLength = (s) => encoder.encode(s).length;

/**
 * A connection to a Switchboard server, with its subscriptions, that reconnects by itself.
 */
export class Switchboard {
  /** @readonly */ static CONNECTING = CONNECTING;
  /** @readonly */ static OPEN = OPEN;
  /** @readonly */ static CLOSING = CLOSING;
  /** @readonly */ static CLOSED = CLOSED;

  /**
   * @param {string} [url] the server's base URL, `http(s)://host:port` (a `ws(s)://` one
   *   works too); defaults to the page's origin
   * @param {SwitchboardOptions} [options]
   */
  constructor(url, options = {}) {
    if (url === undefined || url === null || url === '') {
      const origin = globalThis.location && globalThis.location.origin;
      if (!origin || origin === 'null') throw new TypeError('Switchboard: a server URL is required');
      url = origin;
    }
    const base = new URL(String(url));
    if (base.protocol === 'ws:') base.protocol = 'http:';
    if (base.protocol === 'wss:') base.protocol = 'https:';
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`Switchboard: unsupported URL ${url}`);
    }
    /** The server's base URL, without a trailing slash. */
    this.url = (base.origin + base.pathname).replace(/\/+$/, '');

    const transports = options.transports ?? DEFAULT_TRANSPORTS;
    if (!Array.isArray(transports) || transports.length === 0) {
      throw new TypeError('Switchboard: transports must be a non-empty array');
    }
    for (const t of transports) {
      if (!TRANSPORTS.includes(/** @type {any} */ (t))) {
        throw new TypeError(`Switchboard: unknown transport ${JSON.stringify(t)} (known: ${TRANSPORTS.join(', ')})`);
      }
    }
    /** @internal @type {TransportName[]} */ this._transports = [...transports];
    /** @internal */ this._opts = {
      minReconnectDelay: options.minReconnectDelay ?? 500,
      maxReconnectDelay: options.maxReconnectDelay ?? 20000,
      timeout: options.timeout ?? 10000,
      commandTimeout: options.commandTimeout ?? 10000,
      maxQueue: options.maxQueue ?? 1000,
      upgradeDelay: options.upgradeDelay ?? 60000,
      fallbackAfter: options.fallbackAfter ?? 5000,
      pollInterval: options.pollInterval ?? 1000,
      random: options.random ?? Math.random,
    };
    /** @internal */ this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    /** @internal */ this._EventSource = options.EventSource ?? globalThis.EventSource;
    /** @internal */ this._fetch = options.fetch ?? (globalThis.fetch && globalThis.fetch.bind(globalThis));
    /** @internal @type {string | null} */ this._token = options.token ?? null;
    /** @internal */ this._getToken = options.getToken ?? null;

    /** @internal @type {ReadyState} */ this._readyState = CLOSED;
    /** @internal Set by close() and by a final close code; commands are then refused. */
    this._closed = false;
    /** @internal Bumped whenever the connection is abandoned: stale callbacks check it. */
    this._gen = 0;
    /** @internal @type {Map<string, Set<Function>>} */ this._listeners = new Map();
    /** @internal @type {Map<string, Subscription>} */ this._subs = new Map();
    /** @internal @type {Call[]} */
    this._queue = [];
    /** @internal @type {Map<number, Call>} */
    this._pending = new Map();
    /** @internal */ this._nextId = 1;
    /** @internal @type {Transport | null} */ this._transport = null;
    /** @internal */ this._transportIndex = -1;
    /** @internal The transport that last reached OPEN: connection attempts start with it. */
    this._preferred = 0;
    /** @internal @type {number[]} */ this._round = [];
    /** @internal @type {string | null} The transport that reached OPEN last. */
    this._lastWorked = null;
    /**
     * @internal When the transport that worked last first failed to open again (ms), or null.
     * @type {number | null}
     */
    this._failingSince = null;
    /** @internal @type {CloseInfo | null} */ this._lastClose = null;
    /** @internal Failed rounds since the last successful connect: the backoff exponent. */
    this._attempt = 0;
    /** @internal */ this._upgradeWait = this._opts.upgradeDelay;
    /** @internal The transport index an upgrade is switching to, or -1. */
    this._switching = -1;
    /** @internal @type {Record<string, any>} */ this._timers = {};
    /** @internal */ this._lastReceive = 0;
    /** @internal */ this._pingMs = 25000;
    /** @internal The highest mailbox id handed to the app, within `_mailboxSeries`. */
    this._lastMailbox = 0;
    /** @internal */ this._ackWanted = 0;
    /** @internal */ this._ackSent = 0;
    /**
     * @internal The user and `mailbox_epoch` of the last connect reply: mailbox ids only
     * compare within one user's mailbox and one epoch, so the three counters above start
     * over when either changes.
     * @type {string | null}
     */
    this._mailboxSeries = null;
    /** @internal */ this._ackInFlight = false;
    /** @internal @type {{client: string, user: string, expires: number | null, ping: number, version: string} | null} */
    this._session = null;
    /** @internal @type {Promise<void> | null} What close() returns while CLOSING. */
    this._closing = null;
    /** @internal Closed by `pagehide`: a page restored from the back/forward cache reconnects. */
    this._hidden = false;
    /** @internal The window listeners (added while connecting or connected). */
    this._pageListeners = {
      pagehide: () => this._onPageHide(),
      pageshow: (/** @type {any} */ ev) => this._onPageShow(ev),
    };
  }

  /** CONNECTING (0), OPEN (1), CLOSING (2) or CLOSED (3), as on WebSocket. */
  get readyState() {
    return this._readyState;
  }

  /** Bytes of commands queued and not yet handed to the network. */
  get bufferedAmount() {
    let n = 0;
    for (const q of this._queue) n += q.bytes ?? 0;
    if (this._transport) n += this._transport.bufferedAmount;
    return n;
  }

  /** The transport in use ('websocket', 'sse', 'longpoll', 'poll'), or null. */
  get transport() {
    return this._transport ? this._transport.name : null;
  }

  /** This connection's client id and user, from the connect reply (null until then). */
  get client() {
    return this._session ? this._session.client : null;
  }

  get user() {
    return this._session ? this._session.user : null;
  }

  /**
   * Adds a listener: 'connecting', 'connected', 'disconnected', 'error' or 'message'.
   * Returns a function that removes it.
   * @param {string} event
   * @param {Function} fn
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  /**
   * Starts connecting (and reconnecting after drops). Commands and subscriptions made
   * before are sent once connected. Returns the client.
   */
  connect() {
    if (this._readyState === OPEN || this._readyState === CONNECTING) return this;
    this._closed = false;
    this._hidden = false;
    this._attempt = 0;
    this._watchPage(true);
    this._setState(CONNECTING);
    this._startRound();
    return this;
  }

  /**
   * Resolves once the client is OPEN (at once if it is); rejects if it is closed first
   * (at once if it was closed by `close()` or by a final close code), or with the
   * signal's reason when `signal` aborts (`AbortSignal.timeout(ms)` bounds the wait).
   * @param {CallOptions} [opts]
   * @returns {Promise<void>}
   */
  ready(opts = {}) {
    const signal = opts.signal;
    if (signal && signal.aborted) return Promise.reject(signal.reason);
    if (this._readyState === OPEN) return Promise.resolve();
    if (this._closed) return Promise.reject(new SwitchboardError('closed', 'the client is closed'));
    return new Promise((resolve, reject) => {
      const stop = () => {
        offs.forEach((f) => f());
        if (signal) signal.removeEventListener('abort', aborted);
      };
      const aborted = () => {
        stop();
        reject(/** @type {AbortSignal} */ (signal).reason);
      };
      const offs = [
        this.on('connected', () => {
          stop();
          resolve();
        }),
        this.on('disconnected', (/** @type {any} */ ev) => {
          if (ev.reconnect) return;
          stop();
          reject(new SwitchboardError('closed', `closed: ${ev.code} ${ev.reason}`));
        }),
      ];
      if (signal) signal.addEventListener('abort', aborted);
    });
  }

  /**
   * Closes the connection and stops reconnecting. The server is told first (the `close`
   * command), so that an SSE or polling session ends at once rather than after
   * `limits.session_idle`, and others see this client leave at once; the wait for its
   * answer is bounded (CLOSE_WAIT, 2 s). Commands waiting for a reply or in the queue are
   * rejected with code 'closed'. Subscriptions stay registered: a later `connect()`
   * resubscribes them and recovers what was missed.
   * @returns {Promise<void>} resolves once CLOSED
   */
  close() {
    this._watchPage(false);
    this._hidden = false;
    return this._end('closed by the client', false);
  }

  /**
   * close(), or the page going away (`beacon`: the close command is handed to the browser
   * to deliver after the page is gone, and nothing is waited for).
   * @internal
   * @param {string} reason
   * @param {boolean} beacon
   * @returns {Promise<void>}
   */
  _end(reason, beacon) {
    if (this._readyState === CLOSING && this._closing) return this._closing;
    this._closed = true;
    const wasClosed = this._readyState === CLOSED;
    this._abandon();
    this._rejectAll('closed', beacon ? 'the page was hidden' : 'the client was closed');
    for (const sub of this._subs.values()) sub._reset();
    this._switching = -1;
    if (wasClosed) return Promise.resolve();
    const t = this._transport;
    this._transport = null;
    this._setState(CLOSING);
    const done = () => {
      this._closing = null;
      if (this._readyState !== CLOSING) return; // connect() was called meanwhile
      this._setState(CLOSED);
      this._emit('disconnected', { code: 1000, reason, reconnect: false });
    };
    const command = { id: this._nextId++, cmd: 'close' };
    if (!t || beacon) {
      if (t) t.beacon(command);
      done();
      return Promise.resolve();
    }
    this._closing = t.close(command, CLOSE_WAIT).then(done, done);
    return this._closing;
  }

  /**
   * Listens to the page's `pagehide` and `pageshow` (where there is a window).
   * @internal
   * @param {boolean} on
   */
  _watchPage(on) {
    const target = /** @type {any} */ (globalThis);
    if (typeof target.addEventListener !== 'function') return;
    for (const [name, fn] of Object.entries(this._pageListeners)) {
      if (on) target.addEventListener(name, fn);
      else target.removeEventListener(name, fn);
    }
  }

  /**
   * The page is going away (or into the back/forward cache): end the session now, since
   * nothing will run to end it later, and an HTTP session would otherwise stay, in
   * presence, for `limits.session_idle`.
   * @internal
   */
  _onPageHide() {
    if (this._closed || this._readyState === CLOSED) return;
    this._hidden = true;
    this._end('the page was hidden', true);
  }

  /**
   * A page restored from the back/forward cache reconnects if `pagehide` closed it.
   * @internal
   * @param {{persisted?: boolean}} ev
   */
  _onPageShow(ev) {
    if (!ev || !ev.persisted || !this._hidden) return;
    this.connect();
  }

  /**
   * Subscribes to a channel. The subscription lasts until `unsubscribe()`, across
   * reconnects.
   * @param {string} channel
   * @param {SubscribeHandlers} [handlers]
   */
  subscribe(channel, handlers = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('Switchboard: a channel name is required');
    if (this._subs.has(channel)) throw new SwitchboardError(105, `already subscribed to ${JSON.stringify(channel)}`);
    const sub = new Subscription(this, channel, handlers);
    this._subs.set(channel, sub);
    if (this._readyState === OPEN) this._sendSubscribe(sub);
    return sub;
  }

  /**
   * The subscription to `channel`, if any.
   * @param {string} channel
   */
  getSubscription(channel) {
    return this._subs.get(channel) ?? null;
  }

  /**
   * Publishes `data` to `channel`; resolves to `{offset, epoch}`. With `ephemeral: true`
   * the publication is not stored and gets no offset (the reply's offset is 0).
   * @param {string} channel
   * @param {any} data
   * @param {PublishOptions} [opts]
   */
  publish(channel, data, opts = {}) {
    /** @type {Record<string, any>} */
    const cmd = { cmd: 'publish', channel, data };
    if (opts.ephemeral) cmd.ephemeral = true;
    return this._call(cmd, opts);
  }

  /**
   * Reads a channel's history; resolves to `{epoch, offset, publications, complete?}`,
   * publications oldest first. `before` pages backwards: the newest `limit` publications
   * below that offset.
   * @param {string} channel
   * @param {HistoryOptions} [opts]
   */
  history(channel, opts = {}) {
    /** @type {Record<string, any>} */
    const cmd = { cmd: 'history', channel };
    if (opts.limit !== undefined) cmd.limit = opts.limit;
    if (opts.since !== undefined) cmd.since = { offset: opts.since.offset, epoch: opts.since.epoch };
    if (opts.before !== undefined) cmd.before = opts.before;
    return this._call(cmd, opts);
  }

  /**
   * Calls `method` on the server (a handler registered by the server's application, or the
   * backend behind `[rpc] proxy_url`); resolves to its result, or rejects with a
   * SwitchboardError (119 when the handler refused, with its message; 104 for a method no
   * one answers).
   * @param {string} method
   * @param {any} [data]
   * @param {CallOptions} [opts]
   * @returns {Promise<any>}
   */
  rpc(method, data, opts) {
    if (typeof method !== 'string' || method === '') {
      return Promise.reject(new TypeError('Switchboard: rpc needs a method name'));
    }
    /** @type {Record<string, any>} */
    const cmd = { cmd: 'rpc', method };
    if (data !== undefined) cmd.data = data;
    return this._call(cmd, opts);
  }

  /**
   * Who is subscribed to `channel` (this client must be); resolves to `{presence,
   * anonymous?}`: users by user id, anonymous connections apart by client id.
   * @param {string} channel
   * @param {CallOptions} [opts]
   */
  presence(channel, opts) {
    return this._call({ cmd: 'presence', channel }, opts);
  }

  /**
   * Sends a private message to `user`; resolves to `{mailbox, status}`.
   * @param {string} user
   * @param {any} data
   * @param {CallOptions} [opts]
   */
  send(user, data, opts) {
    return this._call({ cmd: 'send', user, data }, opts);
  }

  /**
   * An application-level ping; resolves to `{}`.
   * @param {CallOptions} [opts]
   */
  ping(opts) {
    return this._call({ cmd: 'ping' }, opts);
  }

  // ---- commands -------------------------------------------------------------------------

  /**
   * Sends a command now when OPEN, queues it otherwise. Once sent, the reply is awaited
   * `commandTimeout` ms; the time in the queue does not count (the queue is there to
   * ride out a reconnect; `signal` bounds the whole wait when the app wants that).
   * @internal
   * @param {Record<string, any>} cmd
   * @param {CallOptions} [opts]
   * @returns {Promise<any>}
   */
  _call(cmd, opts = {}) {
    const signal = opts.signal;
    return new Promise((resolve, reject) => {
      if (signal && signal.aborted) {
        reject(signal.reason);
        return;
      }
      if (this._closed) {
        reject(new SwitchboardError('closed', 'the client is closed'));
        return;
      }
      const open = this._readyState === OPEN && this._transport;
      if (!open && this._queue.length >= this._opts.maxQueue) {
        reject(new SwitchboardError('queue_full', `${this._queue.length} commands are already waiting for the connection`));
        return;
      }
      /** @type {Call} */
      const call = { cmd, resolve, reject };
      if (signal) {
        // Removed once settled: an app may pass one long-lived signal to many commands.
        const aborted = () => this._abort(call, signal.reason);
        signal.addEventListener('abort', aborted);
        call.resolve = (result) => {
          signal.removeEventListener('abort', aborted);
          resolve(result);
        };
        call.reject = (err) => {
          signal.removeEventListener('abort', aborted);
          reject(err);
        };
      }
      if (open) this._transmit(call);
      else {
        call.bytes = byteLength(JSON.stringify(cmd));
        this._queue.push(call);
      }
    });
  }

  /**
   * Sends a call and awaits its reply for `commandTimeout` ms.
   * @internal
   * @param {Call} call
   */
  _transmit(call) {
    const id = this._nextId++;
    call.id = id;
    call.timer = setTimeout(() => this._expire(id), this._opts.commandTimeout);
    this._pending.set(id, call);
    /** @type {Transport} */ (this._transport).send([{ id, ...call.cmd }]);
  }

  /**
   * Takes the call waiting for reply `id` out of the pending ones.
   * @internal
   * @param {number} id
   * @returns {Call | undefined}
   */
  _settle(id) {
    const call = this._pending.get(id);
    if (call) {
      this._pending.delete(id);
      clearTimeout(call.timer);
    }
    return call;
  }

  /**
   * No reply within `commandTimeout`. The app's command rejects with 'timeout' (the
   * server may still have executed it) and the connection stays. One of the client's own
   * commands left unanswered would leave a subscription pending or the acks stuck, and
   * what it does is redone after a reconnect: the connection is dropped.
   * @internal
   * @param {number} id
   */
  _expire(id) {
    const call = this._settle(id);
    if (!call) return;
    const message = `no reply to ${call.cmd.cmd} within ${this._opts.commandTimeout} ms`;
    if (call.internal) this._lost({ code: 1006, reason: message });
    else call.reject(new SwitchboardError('timeout', message));
  }

  /**
   * The call's signal aborted: out of the queue or of the pending ones, rejected with the
   * signal's reason. A command already sent may still be executed by the server.
   * @internal
   * @param {Call} call
   * @param {any} reason
   */
  _abort(call, reason) {
    if (call.id !== undefined) {
      if (!this._settle(call.id)) return;
    } else {
      const i = this._queue.indexOf(call);
      if (i < 0) return;
      this._queue.splice(i, 1);
    }
    call.reject(reason);
  }

  /**
   * An internal command: its failure is handled by the caller, and a lost connection
   * drops it silently (what it did is redone after the next connect).
   * @internal
   * @param {Record<string, any>} cmd
   * @param {(result: any) => void} onResult
   * @param {(err: SwitchboardError) => void} [onError]
   */
  _internal(cmd, onResult, onError) {
    if (!this._transport) return;
    this._transmit({
      cmd,
      internal: true,
      resolve: onResult,
      reject: onError ?? ((/** @type {SwitchboardError} */ err) => this._error(err)),
    });
  }

  /**
   * @internal
   * @param {ClientErrorCode} code
   * @param {string} message
   */
  _rejectAll(code, message) {
    this._rejectPending(code, message);
    const queue = this._queue;
    this._queue = [];
    for (const q of queue) q.reject(new SwitchboardError(code, message));
  }

  /**
   * @internal
   * @param {ClientErrorCode} code
   * @param {string} message
   */
  _rejectPending(code, message) {
    const pending = this._pending;
    this._pending = new Map();
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      if (!p.internal) p.reject(new SwitchboardError(code, message));
    }
  }

  // ---- connection state machine ---------------------------------------------------------

  /**
   * @internal
   * @param {ReadyState} state
   */
  _setState(state) {
    this._readyState = state;
  }

  /**
   * Forgets the current attempt or connection: timers off, stale callbacks ignored.
   * @internal
   */
  _abandon() {
    this._gen++;
    for (const key of Object.keys(this._timers)) {
      clearTimeout(this._timers[key]);
      delete this._timers[key];
    }
  }

  /**
   * @internal
   * @param {string} name
   * @param {() => void} fn
   * @param {number} ms
   */
  _timer(name, fn, ms) {
    clearTimeout(this._timers[name]);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, Math.max(0, ms));
  }

  /**
   * @internal
   * @param {string} name
   */
  _clearTimer(name) {
    clearTimeout(this._timers[name]);
    delete this._timers[name];
  }

  /**
   * One round of attempts: every transport once, starting with the preferred one.
   * @internal
   */
  async _startRound() {
    const gen = ++this._gen;
    if (!this._token && this._getToken) {
      try {
        const token = await this._getToken();
        if (gen !== this._gen) return;
        if (typeof token !== 'string' || token === '') throw new Error('getToken() gave no token');
        this._token = token;
      } catch (err) {
        if (gen !== this._gen) return;
        this._error(new SwitchboardError('token', `getToken() failed: ${errorMessage(err)}`));
        this._afterClose({ code: 1006, reason: `getToken() failed: ${errorMessage(err)}`, failed: true });
        return;
      }
    }
    const n = this._transports.length;
    const first = Math.min(this._preferred, n - 1);
    this._round = [];
    for (let i = 0; i < n; i++) this._round.push((first + i) % n);
    this._lastClose = null;
    this._tryNext();
  }

  /** @internal */
  _tryNext() {
    const index = this._round.shift();
    if (index === undefined) {
      this._checkOrigin(this._lastClose ?? { code: 1006, reason: 'no transport could open', failed: true });
      return;
    }
    const gen = ++this._gen;
    const name = this._transports[index];
    /** @type {Sink} */
    const sink = {
      message: (msg) => gen === this._gen && this._onMessage(msg),
      activity: () => {
        if (gen === this._gen) this._lastReceive = Date.now();
      },
      close: (info) => gen === this._gen && this._lost(info),
    };
    const transport = makeTransport(name, this, sink);
    this._transport = transport;
    this._transportIndex = index;
    this._session = null;
    this._emit('connecting', { transport: name, attempt: this._attempt });
    this._timer(
      'open',
      () => this._lost({ code: 1006, reason: `${name}: no connect reply within ${this._opts.timeout} ms`, failed: true }),
      this._opts.timeout,
    );
    const id = this._nextId++;
    this._pending.set(id, {
      cmd: { cmd: 'connect' },
      internal: true, // bounded by the 'open' timer
      resolve: (/** @type {any} */ result) => gen === this._gen && this._onConnected(result),
      reject: (/** @type {SwitchboardError} */ err) => {
        if (gen !== this._gen) return;
        // A refused token always closes the connection (101 -> 4001, 109 -> 4002), and so
        // does a connection limit (118 -> 1013, try again later: the usual backoff); act
        // on it at once rather than wait for the close.
        if (err.code === 101) this._lost({ code: 4001, reason: err.message });
        else if (err.code === 109) this._lost({ code: 4002, reason: err.message });
        else if (err.code === 118) this._lost({ code: 1013, reason: err.message });
        else this._lost({ code: 1011, reason: `connect failed: ${err.message}` });
      },
    });
    /** @type {Record<string, any>} */
    const connect = { id, cmd: 'connect' };
    if (this._token) connect.token = this._token;
    try {
      transport.open(connect);
    } catch (err) {
      this._lost({ code: 1006, reason: `${name}: ${errorMessage(err)}`, failed: true });
    }
  }

  /**
   * No transport of the round could open. In a page, the server may be up and refusing
   * the page's origin, which looks the same from here as a server that is down (the
   * browser hides the 403 of `/ws` and the CORS failure of the HTTP transports): ask
   * (originRefusal) before backing off. A refused origin is final: only the server's
   * configuration can change it, so retrying would only fill the server's log.
   * @internal
   * @param {CloseInfo} info
   */
  _checkOrigin(info) {
    const origin = pageOrigin();
    if (origin === null) {
      this._afterClose(info);
      return;
    }
    const gen = ++this._gen;
    originRefusal(this, origin).then((reason) => {
      if (gen !== this._gen) return; // closed meanwhile
      this._afterClose(reason === null ? info : { code: 1006, reason, failed: true, refused: true });
    });
  }

  /**
   * @internal
   * @param {any} result
   */
  _onConnected(result) {
    this._clearTimer('open');
    this._session = {
      client: result.client,
      user: result.user,
      expires: result.expires ?? null,
      ping: result.ping,
      version: result.version,
    };
    // A user switched by getToken(), or a store whose ids started over (a restarted
    // memory store): the ids remembered belong to another series, and messages with
    // lower ids would be dropped unseen and then deleted by the next ack.
    const series = JSON.stringify([result.user, result.mailbox_epoch ?? null]);
    if (series !== this._mailboxSeries) {
      this._mailboxSeries = series;
      this._lastMailbox = 0;
      this._ackWanted = 0;
      this._ackSent = 0;
    }
    this._preferred = this._transportIndex;
    this._attempt = 0;
    this._lastWorked = /** @type {Transport} */ (this._transport).name;
    this._failingSince = null;
    this._lastReceive = Date.now();
    this._pingMs = (typeof result.ping === 'number' && result.ping > 0 ? result.ping : 25) * 1000;
    this._setState(OPEN);
    const name = /** @type {Transport} */ (this._transport).name;
    this._emit('connected', { transport: name, ...this._session });
    if (this._readyState !== OPEN) return; // a listener closed the client
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    const queue = this._queue;
    this._queue = [];
    for (const q of queue) this._transmit(q);
    this._scheduleRefresh();
    this._armLiveness();
    if (this._switching >= 0) {
      // An upgrade that did not reach its transport waits twice as long before the next.
      if (this._transportIndex === this._switching) this._upgradeWait = this._opts.upgradeDelay;
      else this._upgradeWait = Math.min(this._upgradeWait * 2, 16 * this._opts.upgradeDelay);
      this._switching = -1;
    }
    if (this._transportIndex > 0) this._timer('upgrade', () => this._probeUpgrade(), this._upgradeWait);
  }

  /**
   * The current transport ended (or is being dropped by the client).
   * @internal
   * @param {CloseInfo} info
   */
  _lost(info) {
    const transport = this._transport;
    const wasOpen = this._readyState === OPEN;
    this._transport = null;
    this._abandon();
    // Told to the server when the client is the one dropping it (an upgrade's switch, a
    // timeout), so that an HTTP session does not linger in presence; a transport that
    // ended by itself sends nothing.
    if (transport) transport.close({ id: this._nextId++, cmd: 'close' }, CLOSE_WAIT);
    this._rejectPending('disconnected', `the connection was lost before the reply (${info.code} ${info.reason})`);
    this._ackInFlight = false;
    for (const sub of this._subs.values()) sub._reset();
    if (this._closed) return;
    if (!wasOpen && info.failed) {
      // It could not open, or was cut during open. The transport that worked last is
      // retried alone, after a backoff, until it has failed for `fallbackAfter` ms: a
      // server restarting refuses every transport for a moment, and the next one in the
      // round could be the first to find it back up, leaving the client on a worse
      // transport for `upgradeDelay`.
      // Not after an upgrade's switch: its target is not the transport that worked last.
      const firstOfRound = this._round.length === this._transports.length - 1;
      if (firstOfRound && transport && transport.name === this._lastWorked) {
        const now = Date.now();
        this._failingSince ??= now;
        if (now - this._failingSince < this._opts.fallbackAfter) {
          this._afterClose(info);
          return;
        }
      }
      // Otherwise try the next transport now.
      this._lastClose = info;
      this._tryNext();
      return;
    }
    this._afterClose(info);
  }

  /**
   * Decides what follows a close: a reconnect after a backoff delay, or the end.
   * @internal
   * @param {CloseInfo} info
   */
  _afterClose(info) {
    if (this._closed) return;
    this._abandon();
    const final = info.refused || FINAL_CODES.has(info.code) || (info.code === 4002 && !this._getToken);
    if (final) {
      this._closed = true;
      this._watchPage(false);
      this._setState(CLOSED);
      this._rejectAll('closed', `the connection was closed: ${info.code} ${info.reason}`);
      if (info.refused) this._error(new SwitchboardError('origin', info.reason));
      this._emit('disconnected', { code: info.code, reason: info.reason, reconnect: false });
      return;
    }
    // getToken() before the next connect: after 4002 the token is dead; after 4008 the
    // backend may have changed what it puts in the user's token (channels, info).
    if (info.code === 4002 || (info.code === RECONNECT && this._getToken)) this._token = null;
    let delay;
    if (info.switchTo !== undefined) {
      this._preferred = info.switchTo;
      this._switching = info.switchTo;
      delay = 0;
    } else {
      const cap = Math.min(this._opts.maxReconnectDelay, this._opts.minReconnectDelay * 2 ** this._attempt);
      delay = Math.floor(this._opts.random() * cap);
      if (info.code === 4005) delay = Math.max(delay, 5000); // rate limited: pause
      this._attempt++;
    }
    this._setState(CONNECTING);
    this._emit('disconnected', { code: info.code, reason: info.reason, reconnect: true, delay });
    if (this._closed || this._readyState !== CONNECTING) return;
    this._timer('reconnect', () => this._startRound(), delay);
  }

  // ---- incoming -------------------------------------------------------------------------

  /**
   * @internal
   * @param {any} msg
   */
  _onMessage(msg) {
    this._lastReceive = Date.now();
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.push === 'string') {
      this._onPush(msg);
      return;
    }
    const handler = typeof msg.id === 'number' ? this._settle(msg.id) : undefined;
    if (!handler) {
      if (msg.error) this._error(new SwitchboardError(msg.error.code, msg.error.message));
      return;
    }
    if (msg.error) handler.reject(new SwitchboardError(msg.error.code, msg.error.message));
    else handler.resolve(msg.result ?? {});
  }

  /**
   * @internal
   * @param {any} push
   */
  _onPush(push) {
    switch (push.push) {
      case 'publication': {
        const sub = this._subs.get(push.channel);
        if (sub) sub._onPublication(push);
        break;
      }
      case 'join':
      case 'leave': {
        const sub = this._subs.get(push.channel);
        if (sub) sub._onPresenceEvent(push);
        break;
      }
      case 'message':
        this._onPrivateMessage(push);
        break;
      case 'unsubscribe': {
        const sub = this._subs.get(push.channel);
        if (sub) sub._onUnsubscribed(push);
        break;
      }
      default:
        break; // kinds added later are ignored (docs/protocol.md, "Pushes")
    }
  }

  /**
   * Delivery is at least once: drop what was already delivered, ack what was processed.
   * @internal
   * @param {any} push
   */
  _onPrivateMessage(push) {
    const id = push.mailbox;
    if (typeof id !== 'number') return;
    if (id <= this._lastMailbox) {
      this._wantAck(this._lastMailbox);
      return;
    }
    const listeners = this._listeners.get('message');
    if (!listeners || listeners.size === 0) return; // left in the mailbox until someone listens
    this._lastMailbox = id;
    /** @type {PrivateMessage} */
    const message = { mailbox: id, data: push.data };
    if (push.from !== undefined) message.from = push.from;
    if (push.time !== undefined) message.time = push.time;
    this._emit('message', message);
    this._wantAck(id);
  }

  /**
   * One ack in flight at a time, always for the highest id processed.
   * @internal
   * @param {number} id
   */
  _wantAck(id) {
    if (id > this._ackWanted) this._ackWanted = id;
    if (this._ackInFlight || this._readyState !== OPEN || !this._transport) return;
    if (this._ackWanted <= this._ackSent) return;
    const mailbox = this._ackWanted;
    this._ackInFlight = true;
    const gen = this._gen;
    const done = () => {
      if (gen !== this._gen) return;
      this._ackInFlight = false;
      if (this._ackWanted > mailbox) this._wantAck(this._ackWanted);
    };
    this._internal(
      { cmd: 'ack', mailbox },
      () => {
        if (mailbox > this._ackSent) this._ackSent = mailbox;
        done();
      },
      (err) => {
        this._error(err);
        done();
      },
    );
  }

  // ---- subscriptions --------------------------------------------------------------------

  /**
   * @internal
   * @param {Subscription} sub
   */
  _sendSubscribe(sub) {
    /** @type {Record<string, any>} */
    const cmd = { cmd: 'subscribe', channel: sub.channel };
    if (sub.epoch !== null && sub.offset !== null) cmd.recover = { offset: sub.offset, epoch: sub.epoch };
    sub.state = 'subscribing';
    sub._buffer = [];
    this._internal(
      cmd,
      (result) => {
        if (this._subs.get(sub.channel) === sub) sub._onSubscribed(result);
      },
      (err) => {
        if (this._subs.get(sub.channel) !== sub) return;
        this._subs.delete(sub.channel);
        sub.state = 'unsubscribed';
        sub._fail(err);
      },
    );
  }

  // ---- token refresh --------------------------------------------------------------------

  /** @internal */
  _scheduleRefresh() {
    this._clearTimer('refresh');
    const expires = this._session && this._session.expires;
    if (!this._getToken || typeof expires !== 'number') return;
    const remaining = expires * 1000 - Date.now();
    // Refresh a fifth of the remaining lifetime early: 1 to 60 s before expiry.
    const lead = Math.min(60000, Math.max(1000, remaining / 5));
    this._timer('refresh', () => this._refresh(), remaining - lead);
  }

  /** @internal */
  async _refresh() {
    const gen = this._gen;
    const getToken = /** @type {() => any} */ (this._getToken);
    let token;
    try {
      token = await getToken();
      if (typeof token !== 'string' || token === '') throw new Error('getToken() gave no token');
    } catch (err) {
      if (gen !== this._gen) return;
      this._error(new SwitchboardError('token', `getToken() failed: ${errorMessage(err)}`));
      this._timer('refresh', () => this._refresh(), 5000);
      return;
    }
    this._token = token; // used by the next connect in any case
    if (gen !== this._gen || this._readyState !== OPEN) return;
    this._internal(
      { cmd: 'refresh', token },
      (result) => {
        if (this._session) this._session.expires = result.expires ?? null;
        this._scheduleRefresh();
      },
      (err) => {
        // The old token stays in force until it expires; the server then closes with 4002
        // and the reconnect asks getToken() again.
        this._error(err);
      },
    );
  }

  // ---- liveness -------------------------------------------------------------------------

  /**
   * A page cannot see WebSocket pings, and an HTTP session shows nothing while idle: after
   * `ping` seconds without anything received, send the `ping` command, and drop the
   * connection if nothing comes back within `timeout`.
   * @internal
   */
  _armLiveness() {
    const idle = Date.now() - this._lastReceive;
    this._timer(
      'liveness',
      () => {
        if (this._readyState !== OPEN) return;
        if (Date.now() - this._lastReceive < this._pingMs) {
          this._armLiveness();
          return;
        }
        const gen = this._gen;
        this._timer(
          'pong',
          () => gen === this._gen && this._lost({ code: 1006, reason: `no reply to ping within ${this._opts.timeout} ms` }),
          this._opts.timeout,
        );
        this._internal(
          { cmd: 'ping' },
          () => {
            this._clearTimer('pong');
            this._armLiveness();
          },
          () => {
            this._clearTimer('pong');
            this._armLiveness();
          },
        );
      },
      this._pingMs - idle,
    );
  }

  // ---- upgrade --------------------------------------------------------------------------

  /**
   * Connected on a fallback: check whether a better transport opens now, and switch to it
   * when it does (a reconnect with recovery, done while no command awaits its reply).
   * @internal
   */
  async _probeUpgrade() {
    const gen = this._gen;
    const current = this._transportIndex;
    for (let i = 0; i < current; i++) {
      const ok = await probeTransport(this._transports[i], this);
      if (gen !== this._gen || this._readyState !== OPEN) return;
      if (ok) {
        this._switchWhenIdle(i, gen);
        return;
      }
    }
    this._upgradeWait = Math.min(this._upgradeWait * 2, 16 * this._opts.upgradeDelay);
    this._timer('upgrade', () => this._probeUpgrade(), this._upgradeWait);
  }

  /**
   * @internal
   * @param {number} index
   * @param {number} gen
   */
  _switchWhenIdle(index, gen) {
    if (gen !== this._gen || this._readyState !== OPEN) return;
    const busy = [...this._pending.values()].some((p) => !p.internal);
    if (busy) {
      this._timer('upgrade', () => this._switchWhenIdle(index, gen), 200);
      return;
    }
    this._lost({ code: 1000, reason: `switching to ${this._transports[index]}`, switchTo: index });
  }

  // ---- events ---------------------------------------------------------------------------

  /**
   * @internal
   * @param {string} event
   * @param {any} arg
   */
  _emit(event, arg) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) callSafely(fn, arg);
  }

  /**
   * @internal
   * @param {SwitchboardError} err
   */
  _error(err) {
    this._emit('error', err);
  }
}

/**
 * One channel subscription. Created by `Switchboard.subscribe`; it keeps the last position
 * delivered (`epoch`, `offset`) and recovers from it after every reconnect.
 */
export class Subscription {
  /**
   * @param {Switchboard} client
   * @param {string} channel
   * @param {SubscribeHandlers} handlers
   */
  constructor(client, channel, handlers) {
    /** @internal */ this._client = client;
    this.channel = channel;
    /** @internal */ this._handlers = handlers;
    /**
     * 'subscribing' (also while disconnected), 'subscribed' or 'unsubscribed'.
     * @type {'subscribing' | 'subscribed' | 'unsubscribed'}
     */
    this.state = 'subscribing';
    /** The epoch of the last position delivered (null before the first subscribe reply). @type {string | null} */
    this.epoch = null;
    /** The offset of the last publication delivered (or of the subscribe reply). @type {number | null} */
    this.offset = null;
    /** Whether the channel keeps history, so that recovery can work. @type {boolean | null} */
    this.recoverable = null;
    /** @internal Publications pushed while the subscribe reply is awaited. @type {any[]} */
    this._buffer = [];
  }

  /** Stops the subscription; resolves once the server confirmed (or at once offline). */
  unsubscribe() {
    const client = this._client;
    if (this.state === 'unsubscribed' || client._subs.get(this.channel) !== this) {
      this.state = 'unsubscribed';
      return Promise.resolve();
    }
    client._subs.delete(this.channel);
    this.state = 'unsubscribed';
    this._buffer = [];
    if (client.readyState !== OPEN) return Promise.resolve();
    return client._call({ cmd: 'unsubscribe', channel: this.channel }).then(
      () => undefined,
      (err) => {
        // Not subscribed (113) or dropped meanwhile: the aim is reached anyway.
        if (err.code === 113 || err.code === 'disconnected') return undefined;
        throw err;
      },
    );
  }

  /**
   * The channel's presence; resolves to `{presence, anonymous?}`.
   * @param {CallOptions} [opts]
   */
  presence(opts) {
    return this._client.presence(this.channel, opts);
  }

  /**
   * The channel's history.
   * @param {HistoryOptions} [opts]
   */
  history(opts) {
    return this._client.history(this.channel, opts);
  }

  /**
   * Publishes to the channel.
   * @param {any} data
   * @param {PublishOptions} [opts]
   */
  publish(data, opts) {
    return this._client.publish(this.channel, data, opts);
  }

  /** @internal The connection is gone: the next one resubscribes. */
  _reset() {
    if (this.state !== 'unsubscribed') this.state = 'subscribing';
    this._buffer = [];
  }

  /**
   * @internal
   * @param {any} r
   */
  _onSubscribed(r) {
    this.recoverable = !!r.recoverable;
    if (r.recovered === false) {
      this.epoch = r.epoch;
      this.offset = r.offset;
      this.state = 'subscribed';
      this._call('onRecoveryFailed', { channel: this.channel, epoch: r.epoch, offset: r.offset });
    } else {
      if (r.recovered === true) {
        for (const p of r.publications ?? []) this._deliver({ channel: this.channel, epoch: r.epoch, ...p });
      }
      if (this.epoch !== r.epoch || this.offset === null || r.offset > this.offset) {
        this.epoch = r.epoch;
        this.offset = r.offset;
      }
      this.state = 'subscribed';
    }
    /** @type {any} */
    const info = { channel: this.channel, epoch: r.epoch, offset: r.offset, recoverable: this.recoverable };
    if (r.recovered !== undefined) info.recovered = r.recovered;
    this._call('onSubscribed', info);
    const buffered = this._buffer;
    this._buffer = [];
    for (const p of buffered) this._deliver(p);
  }

  /**
   * @internal
   * @param {any} push
   */
  _onPublication(push) {
    if (push.ephemeral === true) {
      // Not in the stream: no offset to order or deduplicate by, nothing to recover. It is
      // handed over as it comes and leaves the position alone.
      if (this.state === 'unsubscribed') return;
      /** @type {Publication} */
      const pub = { channel: this.channel, epoch: push.epoch ?? this.epoch ?? '', offset: 0, data: push.data, ephemeral: true };
      if (push.info !== undefined) pub.info = push.info;
      if (push.time !== undefined) pub.time = push.time;
      this._call('onPublication', pub);
      return;
    }
    if (this.state === 'subscribing') this._buffer.push(push);
    else if (this.state === 'subscribed') this._deliver(push);
  }

  /**
   * Delivers a publication unless it is at or below the last position of its epoch.
   * @internal
   * @param {any} p
   */
  _deliver(p) {
    if (this.state === 'unsubscribed') return;
    if (p.epoch === this.epoch && this.offset !== null && p.offset <= this.offset) return;
    this.epoch = p.epoch;
    this.offset = p.offset;
    /** @type {Publication} */
    const pub = { channel: this.channel, epoch: p.epoch, offset: p.offset, data: p.data };
    if (p.info !== undefined) pub.info = p.info;
    if (p.time !== undefined) pub.time = p.time;
    this._call('onPublication', pub);
  }

  /**
   * @internal
   * @param {any} push
   */
  _onPresenceEvent(push) {
    this._call(push.push === 'join' ? 'onJoin' : 'onLeave', { channel: this.channel, info: push.info });
  }

  /**
   * The server ended the subscription (a refreshed token no longer allows the private
   * channel). It is over, as after unsubscribe(): not resubscribed on reconnects. Told to
   * `onUnsubscribed`, or as an 'error' event without one, so that it is never silent.
   * @internal
   * @param {any} push
   */
  _onUnsubscribed(push) {
    const client = this._client;
    if (client._subs.get(this.channel) === this) client._subs.delete(this.channel);
    this.state = 'unsubscribed';
    this._buffer = [];
    const reason = String(push.reason ?? '');
    if (this._handlers.onUnsubscribed) this._call('onUnsubscribed', { channel: this.channel, reason });
    else client._error(new SwitchboardError('unsubscribed', `the server ended the subscription to ${JSON.stringify(this.channel)}: ${reason}`));
  }

  /**
   * @internal
   * @param {SwitchboardError} err
   */
  _fail(err) {
    if (this._handlers.onError) this._call('onError', err);
    else this._client._error(err);
  }

  /**
   * @internal
   * @param {keyof SubscribeHandlers} name
   * @param {any} arg
   */
  _call(name, arg) {
    const fn = this._handlers[name];
    if (typeof fn === 'function') callSafely(fn, arg);
  }
}

/**
 * Calls an application callback; what it throws is reported asynchronously (the console,
 * or the process's uncaught exception handler), never into the client's state machine.
 * @param {Function} fn
 * @param {any} arg
 */
function callSafely(fn, arg) {
  try {
    fn(arg);
  } catch (err) {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}

/** @param {unknown} err */
function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}

/**
 * @param {TransportName} name
 * @param {Switchboard} client
 * @param {Sink} sink
 * @returns {Transport}
 */
function makeTransport(name, client, sink) {
  switch (name) {
    case 'websocket':
      return new WebSocketTransport(client, sink);
    case 'sse':
      return new SseTransport(client, sink);
    case 'longpoll':
      return new PollTransport(client, sink, true);
    default:
      return new PollTransport(client, sink, false);
  }
}

/**
 * Whether a transport can open now, without a session: used to upgrade from a fallback.
 * @param {TransportName} name
 * @param {Switchboard} client
 * @returns {Promise<boolean>}
 */
function probeTransport(name, client) {
  const timeout = client._opts.timeout;
  return new Promise((resolve) => {
    let settled = false;
    /** @type {() => void} */
    let cleanup = () => {};
    /** @param {boolean} ok */
    const done = (ok) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        cleanup();
      } catch {
        // already closed
      }
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeout);
    try {
      if (name === 'websocket') {
        if (!client._WebSocket) return done(false);
        const ws = new client._WebSocket(wsUrl(client.url));
        cleanup = () => ws.close(1000);
        ws.onopen = () => done(true);
        ws.onerror = () => done(false);
        ws.onclose = () => done(false);
      } else if (name === 'sse') {
        if (!client._EventSource) return done(false);
        const es = new client._EventSource(`${client.url}/sse`);
        cleanup = () => es.close();
        es.addEventListener('session', (/** @type {MessageEvent} */ ev) => {
          done(true);
          // The probe's session would hold one of the server's slots for connections
          // not yet connected until `limits.connect_timeout`: end it now.
          try {
            const sid = String(JSON.parse(ev.data).session);
            postCommand(client, `${client.url}/sse/send?session=${encodeURIComponent(sid)}`, { cmd: 'close' }, timeout);
          } catch {
            // no id: it expires by itself
          }
        });
        es.onerror = () => done(false);
      } else {
        if (!client._fetch) return done(false);
        // A short poll opens a session; the close command in it ends it in the same request.
        postAnswered(client, `${client.url}/poll?wait=0`, { cmd: 'close' }, timeout).then(done);
      }
    } catch {
      done(false);
    }
  });
}

/**
 * The origin the browser sends as `Origin` from here, or null outside a page or worker
 * (Node, Deno: no `Origin` header, so no origin to refuse).
 * @returns {string | null}
 */
function pageOrigin() {
  const location = /** @type {any} */ (globalThis).location;
  return location && typeof location.origin === 'string' ? location.origin : null;
}

/**
 * Whether the server refuses `origin`, asked after every transport failed to open.
 * Resolves to the reason to tell the developer, or null when the origin is allowed or the
 * answer is not known (the server is down or unreachable: the usual backoff follows).
 *
 * The browser does not let a page read why a cross-origin request failed, so this reads
 * what it can: first `HEAD /switchboard.js`, which any origin may read, proves the server
 * up and answering this host name (a Host refusal, 421, is not readable); then the two
 * Origin-checked endpoints are asked for nothing (`GET /poll` of no session, `POST
 * /sse/send` without a session: no session is opened). An allowed origin reads their
 * error answer (404, 400: CORS lets it through); a refused one gets a 403 that is either
 * unreadable (another origin, no `Access-Control-Allow-Origin`) or readable (the same
 * origin, where a proxy rewrote the Host). Both failing while the module is readable is
 * the refusal: the one other way to get there is a server with both HTTP transports
 * switched off, whose 404s carry no CORS headers, while its WebSocket fails for another
 * reason (docs/client.md says so).
 * @param {Switchboard} client
 * @param {string} origin
 * @returns {Promise<string | null>}
 */
async function originRefusal(client, origin) {
  const fetch = client._fetch;
  if (!fetch) return null;
  /**
   * The answer to one request, or null when it failed (network, CORS) or timed out.
   * @param {string} path
   * @param {string} method
   * @returns {Promise<Response | null>}
   */
  const ask = async (path, method) => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), client._opts.timeout);
    try {
      const res = await fetch(`${client.url}${path}`, { method, cache: 'no-store', signal: abort.signal });
      await safeText(res);
      return res;
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  };
  const up = await ask('/switchboard.js', 'HEAD');
  if (!up || !up.ok) return null;
  for (const [path, method] of [
    ['/poll?session=-&wait=0', 'GET'],
    ['/sse/send', 'POST'],
  ]) {
    const res = await ask(path, method);
    if (res && res.status === 403) break;
    if (res) return null;
  }
  return `origin ${origin} is not allowed by the server; add it to allowed_origins or --allow-origin`;
}

/** @param {string} base */
function wsUrl(base) {
  return `${base.replace(/^http/, 'ws')}/ws`;
}

// ---- transports -------------------------------------------------------------------------

/** Commands go one per text message; each message from the server is one JSON object. */
class WebSocketTransport {
  /**
   * @param {Switchboard} client
   * @param {Sink} sink
   */
  constructor(client, sink) {
    /** @type {TransportName} */
    this.name = 'websocket';
    this.client = client;
    this.sink = sink;
    /** @type {any} */
    this.ws = null;
    this.dead = false;
    this.opened = false;
    /** @type {string[]} */
    this.out = [];
    /** @type {(() => void) | null} */
    this.onClosed = null;
  }

  get bufferedAmount() {
    let n = this.ws && this.opened ? this.ws.bufferedAmount || 0 : 0;
    for (const s of this.out) n += byteLength(s);
    return n;
  }

  /** @param {object} connect */
  open(connect) {
    const WS = this.client._WebSocket;
    if (!WS) throw new Error('WebSocket is not available here (pass the WebSocket option)');
    this.out.push(JSON.stringify(connect));
    const ws = new WS(wsUrl(this.client.url));
    this.ws = ws;
    ws.onopen = () => {
      if (this.dead) return;
      this.opened = true;
      this.sink.activity();
      const out = this.out;
      this.out = [];
      for (const s of out) ws.send(s);
    };
    ws.onmessage = (/** @type {MessageEvent} */ ev) => {
      if (this.dead || typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.sink.message(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (/** @type {CloseEvent} */ ev) => {
      if (this.onClosed) this.onClosed();
      if (this.dead) return;
      this.dead = true;
      const code = ev.code || 1006;
      this.sink.close({
        code,
        reason: ev.reason || (this.opened ? 'the connection was lost' : 'the WebSocket could not open'),
        failed: code === 1006 || code === 1002 || code === 1015,
      });
    };
  }

  /** @param {object[]} commands */
  send(commands) {
    for (const c of commands) {
      const s = JSON.stringify(c);
      if (this.opened && this.ws.readyState === 1) this.ws.send(s);
      else this.out.push(s);
    }
  }

  /**
   * The close command goes just before the close frame: the server handles frames in
   * order, so it has handled every command before either; the close frame alone would end
   * the session too, the command makes every transport end the same way.
   * @param {object | null} [command]
   * @param {number} [wait]
   */
  close(command = null, wait = CLOSE_WAIT) {
    this.dead = true;
    const ws = this.ws;
    if (!ws || ws.readyState === 2 || ws.readyState === 3) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, wait);
      this.onClosed = () => {
        clearTimeout(timer);
        resolve(undefined);
      };
      try {
        if (command && this.opened && ws.readyState === 1) ws.send(JSON.stringify(command));
        ws.close(1000, 'client closed');
      } catch {
        clearTimeout(timer);
        resolve(undefined);
      }
    });
  }

  /** @param {object} command */
  beacon(command) {
    // A socket's last frames are sent even as the page goes away.
    this.close(command, 0);
  }
}

/**
 * The commands of an HTTP transport waiting for their request. Requests that carry
 * commands go one at a time, so the server executes them in order; a batch of several is
 * sent as a JSON array.
 */
class CommandPoster {
  constructor() {
    /** @type {object[]} */
    this.out = [];
    this.inFlightBytes = 0;
    this.busy = false;
  }

  get bufferedAmount() {
    let n = this.inFlightBytes;
    for (const c of this.out) n += byteLength(JSON.stringify(c));
    return n;
  }

  /** Takes every queued command as one body, or null. */
  take() {
    if (this.out.length === 0) return null;
    const batch = this.out.length === 1 ? JSON.stringify(this.out[0]) : JSON.stringify(this.out);
    this.out = [];
    return batch;
  }
}

/**
 * Server-Sent Events: `GET /sse` streams every reply and push (`id: <sid>:<seq>`);
 * commands go to `POST /sse/send?session=<sid>`. The browser's EventSource resumes a cut
 * stream with Last-Event-ID and the server re-sends what was not received; messages seen
 * before (by seq) are dropped.
 */
class SseTransport {
  /**
   * @param {Switchboard} client
   * @param {Sink} sink
   */
  constructor(client, sink) {
    /** @type {TransportName} */
    this.name = 'sse';
    this.client = client;
    this.sink = sink;
    /** @type {any} */
    this.es = null;
    this.dead = false;
    /** @type {string | null} */
    this.sid = null;
    this.lastSeq = 0;
    /** @type {any} */
    this.resumeTimer = null;
    /** @type {AbortController | null} */
    this.abort = null;
    this.poster = new CommandPoster();
  }

  get bufferedAmount() {
    return this.poster.bufferedAmount;
  }

  /** @param {object} connect */
  open(connect) {
    const ES = this.client._EventSource;
    if (!ES) throw new Error('EventSource is not available here (pass the EventSource option)');
    if (!this.client._fetch) throw new Error('fetch is not available here (pass the fetch option)');
    this.poster.out.push(connect);
    const es = new ES(`${this.client.url}/sse`);
    this.es = es;
    es.addEventListener('session', (/** @type {MessageEvent} */ ev) => {
      if (this.dead) return;
      let sid;
      try {
        sid = JSON.parse(ev.data).session;
      } catch {
        return;
      }
      if (this.sid === null) {
        this.sid = sid;
        this.sink.activity();
        this.pump();
      } else if (sid !== this.sid) {
        // The resume found no session: everything it held is gone. Reconnect properly.
        this.fail('the SSE session was lost', true);
      }
    });
    es.addEventListener('message', (/** @type {MessageEvent} */ ev) => {
      if (this.dead) return;
      const id = String(ev.lastEventId || '');
      const colon = id.lastIndexOf(':');
      const seq = Number(id.slice(colon + 1));
      if (colon < 0 || id.slice(0, colon) !== this.sid || !Number.isFinite(seq)) return;
      if (seq <= this.lastSeq) return; // re-sent after a resume
      this.lastSeq = seq;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.sink.message(msg);
    });
    es.addEventListener('close', (/** @type {MessageEvent} */ ev) => {
      // After close(command): the server confirmed the end; stop EventSource from
      // reconnecting to the session that just ended.
      if (this.dead) {
        es.close();
        return;
      }
      let info = { code: 1006, reason: 'the server ended the stream' };
      try {
        const d = JSON.parse(ev.data);
        info = { code: Number(d.code) || 1006, reason: String(d.reason ?? '') };
      } catch {
        // keep the default
      }
      if (info.code === SESSION_TAKEN) {
        // Someone holding this session's id resumed it: the session is still open, as us,
        // for them. End it rather than leave it to them.
        info.reason = `${info.reason || 'another stream resumed this session'}; its id was used elsewhere, so the session was ended`;
        if (this.sid !== null) sendBeacon(this.client, this.closeUrl(), { cmd: 'close' });
      }
      this.end(info);
    });
    es.onopen = () => {
      if (this.dead) return;
      clearTimeout(this.resumeTimer);
      this.resumeTimer = null;
      this.sink.activity();
    };
    es.onerror = () => {
      if (this.dead) return;
      if (this.sid === null || es.readyState === 2) {
        this.fail(this.sid === null ? 'the event stream could not open' : 'the event stream failed');
        return;
      }
      // EventSource reconnects by itself and the server resumes the session; give it
      // `timeout` to do so.
      if (!this.resumeTimer) {
        this.resumeTimer = setTimeout(() => this.fail('the event stream did not resume'), this.client._opts.timeout);
      }
    };
  }

  /** @param {object[]} commands */
  send(commands) {
    this.poster.out.push(...commands);
    this.pump();
  }

  pump() {
    if (this.dead || this.sid === null || this.poster.busy) return;
    const body = this.poster.take();
    if (body === null) return;
    this.poster.busy = true;
    this.poster.inFlightBytes = byteLength(body);
    const abort = new AbortController();
    this.abort = abort;
    const timer = setTimeout(() => abort.abort(), this.client._opts.timeout);
    /** @type {typeof fetch} */ (this.client._fetch)(this.sendUrl(), {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      body,
      signal: abort.signal,
    }).then(
      async (res) => {
        clearTimeout(timer);
        if (this.dead) return;
        if (res.status === 404) return this.fail('the SSE session was lost', true);
        if (!res.ok) return this.fail(`POST /sse/send answered ${res.status} ${await safeText(res)}`);
        this.poster.busy = false;
        this.poster.inFlightBytes = 0;
        this.pump();
      },
      (err) => {
        clearTimeout(timer);
        // Whether the server executed the commands is unknown: reconnect and recover.
        if (!this.dead) this.fail(`POST /sse/send failed: ${errorMessage(err)}`);
      },
    );
  }

  /**
   * Gives up on the session; unless the server said it is `gone`, it may still hold it
   * (only a stream or a poll failed), so it is told to end it. By beacon: a page being
   * unloaded sees its requests fail before `pagehide`, and only a beacon gets out then.
   * @param {string} reason
   * @param {boolean} [gone]
   */
  fail(reason, gone = false) {
    if (!this.dead && !gone && this.sid !== null) sendBeacon(this.client, this.closeUrl(), { cmd: 'close' });
    this.end({ code: 1006, reason, failed: true });
  }

  /** @param {CloseInfo} info */
  end(info) {
    if (this.dead) return;
    this.close();
    this.sink.close(info);
  }

  /**
   * @param {object | null} [command]
   * @param {number} [wait]
   */
  close(command = null, wait = CLOSE_WAIT) {
    if (this.dead) return Promise.resolve();
    this.dead = true;
    clearTimeout(this.resumeTimer);
    if (this.abort) this.abort.abort();
    const es = this.es;
    // Without a session id, `connect` has not been sent: the server's session is not
    // connected and ends by itself at `limits.connect_timeout`.
    if (!command || this.sid === null) {
      if (es) es.close();
      return Promise.resolve();
    }
    // The stream stays open until the command is answered, so that the server tells the
    // end to it (a `close` event) instead of keeping the ended session for a later stream.
    return postCommand(this.client, this.sendUrl(), command, wait).then(() => es.close());
  }

  /** @param {object} command */
  beacon(command) {
    if (this.dead) return;
    if (this.sid !== null) sendBeacon(this.client, this.closeUrl(), command);
    this.close();
  }

  sendUrl() {
    return `${this.client.url}/sse/send?session=${encodeURIComponent(/** @type {string} */ (this.sid))}`;
  }

  closeUrl() {
    return this.sendUrl();
  }
}

/**
 * Long polling (`wait=1`) and short polling (`wait=0`) on `POST /poll`: each request
 * acknowledges with `ack` the last seq received and carries the commands queued since the
 * last one; the answer holds every message not yet acknowledged, so a lost answer loses
 * nothing (messages seen before, by seq, are dropped). Requests that carry commands go one
 * at a time, in order; a new one answers the pending long poll at once.
 */
class PollTransport {
  /**
   * @param {Switchboard} client
   * @param {Sink} sink
   * @param {boolean} long
   */
  constructor(client, sink, long) {
    /** @type {TransportName} */
    this.name = long ? 'longpoll' : 'poll';
    this.client = client;
    this.sink = sink;
    this.long = long;
    this.dead = false;
    /** @type {string | null} */
    this.sid = null;
    this.lastSeq = 0;
    this.poster = new CommandPoster();
    /** Generation of the latest request; only its answer starts the next one. */
    this.gen = 0;
    this.busy = false;
    this.latestCarries = false;
    this.errors = 0;
    /** @type {any} */
    this.timer = null;
    this.kickQueued = false;
    /** @type {Set<AbortController>} */
    this.aborts = new Set();
    /**
     * Set by close() while the first request (carrying `connect`) is in flight: called
     * with its answer, which names the session to end.
     * @type {(() => void) | null}
     */
    this.afterOpen = null;
  }

  get bufferedAmount() {
    return this.poster.bufferedAmount;
  }

  /** @param {object} connect */
  open(connect) {
    if (!this.client._fetch) throw new Error('fetch is not available here (pass the fetch option)');
    this.poster.out.push(connect);
    this.request();
  }

  /** @param {object[]} commands */
  send(commands) {
    this.poster.out.push(...commands);
    if (this.kickQueued) return;
    this.kickQueued = true;
    // Commands sent in the same tick go in one request.
    queueMicrotask(() => {
      this.kickQueued = false;
      if (this.dead || this.sid === null || this.poster.out.length === 0) return;
      if (this.busy && this.latestCarries) return; // they follow its answer
      // Otherwise a bare poll is pending (the new request answers it at once) or a timer
      // waits (short-poll interval, retry): send now.
      clearTimeout(this.timer);
      this.timer = null;
      this.request();
    });
  }

  request() {
    if (this.dead) return;
    this.timer = null;
    const body = this.poster.take();
    const carries = body !== null;
    const gen = ++this.gen;
    this.busy = true;
    this.latestCarries = carries;
    this.poster.inFlightBytes = carries ? byteLength(/** @type {string} */ (body)) : 0;
    const abort = new AbortController();
    this.aborts.add(abort);
    // Commands are answered at once; a bare long poll is held up to 25 s by default.
    const limit = carries || !this.long ? this.client._opts.timeout : 90000;
    const timer = setTimeout(() => abort.abort(), limit);
    /** @type {RequestInit} */
    const init = { method: 'POST', signal: abort.signal };
    if (carries) {
      init.body = body;
      init.headers = { 'Content-Type': 'text/plain;charset=UTF-8' };
    }
    /** @type {typeof fetch} */ (this.client._fetch)(this.pollUrl(this.long), init)
      .then(async (res) => {
        if (this.dead) return this.closing(res.ok ? await res.json().catch(() => null) : null);
        if (res.status === 404) return this.fail(`the polling session was lost (${await safeText(res)})`, true);
        if (!res.ok) {
          const text = await safeText(res);
          if (carries || this.sid === null || res.status < 500) return this.fail(`POST /poll answered ${res.status} ${text}`);
          throw new Error(`POST /poll answered ${res.status} ${text}`);
        }
        const answer = await res.json();
        if (this.dead) return this.closing(answer);
        if (gen === this.gen) {
          this.busy = false;
          this.poster.inFlightBytes = 0;
        }
        this.errors = 0;
        this.handle(answer);
        if (!this.dead && gen === this.gen) this.next();
      })
      .catch((err) => {
        if (this.dead) return this.closing(null);
        // Commands that may or may not have been executed: reconnect and recover.
        if (carries || this.sid === null) return this.fail(`POST /poll failed: ${errorMessage(err)}`);
        if (gen !== this.gen) return; // superseded: its messages come again
        this.busy = false;
        this.errors++;
        if (this.errors > 3) return this.fail(`POST /poll failed ${this.errors} times: ${errorMessage(err)}`);
        this.timer = setTimeout(() => this.request(), 100 * 2 ** (this.errors - 1));
      })
      .finally(() => {
        clearTimeout(timer);
        this.aborts.delete(abort);
      });
  }

  /** The latest request was answered: poll again. */
  next() {
    if (this.long || this.poster.out.length > 0) this.request();
    else this.timer = setTimeout(() => this.request(), this.client._opts.pollInterval);
  }

  /** @param {any} answer */
  handle(answer) {
    if (!answer || typeof answer !== 'object') return;
    if (this.sid === null) this.sid = String(answer.session);
    else if (answer.session !== undefined && answer.session !== this.sid) return this.fail('the polling session changed');
    this.sink.activity();
    const messages = Array.isArray(answer.messages) ? answer.messages : [];
    const last = Number(answer.seq);
    if (Number.isFinite(last)) {
      const first = last - messages.length + 1;
      for (let i = 0; i < messages.length && !this.dead; i++) {
        const seq = first + i;
        if (seq <= this.lastSeq) continue; // received in an earlier answer
        this.lastSeq = seq;
        this.sink.message(messages[i]);
      }
    }
    if (answer.closed && !this.dead) {
      this.end({ code: Number(answer.closed.code) || 1006, reason: String(answer.closed.reason ?? '') });
    }
  }

  /**
   * Gives up on the session; unless the server said it is `gone`, it may still hold it
   * (only a stream or a poll failed), so it is told to end it. By beacon: a page being
   * unloaded sees its requests fail before `pagehide`, and only a beacon gets out then.
   * @param {string} reason
   * @param {boolean} [gone]
   */
  fail(reason, gone = false) {
    if (!this.dead && !gone && this.sid !== null) sendBeacon(this.client, this.closeUrl(), { cmd: 'close' });
    this.end({ code: 1006, reason, failed: true });
  }

  /** @param {CloseInfo} info */
  end(info) {
    if (this.dead) return;
    this.close();
    this.sink.close(info);
  }

  /**
   * @param {object | null} [command]
   * @param {number} [wait]
   */
  close(command = null, wait = CLOSE_WAIT) {
    if (this.dead) return Promise.resolve();
    this.dead = true;
    clearTimeout(this.timer);
    // The first request opens the session and connects it: its answer names the session,
    // which must be ended too, or it would stay connected for `limits.session_idle`.
    const opening = this.sid === null && this.busy;
    if (!command || (this.sid === null && !opening)) {
      this.abortAll();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      let settled = false;
      const finish = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.afterOpen = null;
        this.abortAll();
        resolve(undefined);
      };
      const timer = setTimeout(finish, wait);
      const send = () => {
        if (settled) return;
        if (this.sid === null) return finish(); // the session never opened
        // The waiting long poll is answered by this one anyway.
        this.abortAll();
        postCommand(this.client, this.pollUrl(false), command, wait).then(finish);
      };
      if (opening) this.afterOpen = send;
      else send();
    });
  }

  /**
   * An answer (or failure: null) that came after close(): the first one names the session
   * close() waits to end.
   * @param {any} answer
   */
  closing(answer) {
    const send = this.afterOpen;
    if (!send) return;
    this.afterOpen = null;
    if (this.sid === null && answer && typeof answer.session === 'string') this.sid = answer.session;
    send();
  }

  /** @param {object} command */
  beacon(command) {
    if (this.dead) return;
    if (this.sid !== null) sendBeacon(this.client, this.closeUrl(), command);
    this.close();
  }

  closeUrl() {
    return this.pollUrl(false);
  }

  abortAll() {
    for (const a of this.aborts) a.abort();
    this.aborts.clear();
  }

  /**
   * `/poll` with the session, the ack of everything received, and `wait`.
   * @param {boolean} wait
   */
  pollUrl(wait) {
    const params = new URLSearchParams();
    if (this.sid !== null) params.set('session', this.sid);
    params.set('ack', String(this.lastSeq));
    params.set('wait', wait ? '1' : '0');
    return `${this.client.url}/poll?${params}`;
  }
}

/**
 * POSTs one command (the `close` command) and settles, never rejecting, once it is
 * answered, failed, or `wait` ms passed (it is aborted then).
 * @param {Switchboard} client
 * @param {string} url
 * @param {object} command
 * @param {number} wait
 * @returns {Promise<void>}
 */
function postCommand(client, url, command, wait) {
  return postAnswered(client, url, command, wait).then(() => undefined);
}

/**
 * postCommand(), resolving to whether the answer was a 2xx.
 * @param {Switchboard} client
 * @param {string} url
 * @param {object} command
 * @param {number} wait
 * @returns {Promise<boolean>}
 */
function postAnswered(client, url, command, wait) {
  if (!client._fetch) return Promise.resolve(false);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), wait);
  return client
    ._fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      body: JSON.stringify(command),
      signal: abort.signal,
    })
    .then(async (res) => {
      await safeText(res);
      return res.ok;
    })
    .then(
      (ok) => {
        clearTimeout(timer);
        return ok;
      },
      () => {
        clearTimeout(timer);
        return false;
      },
    );
}

/**
 * Sends one command as the page goes away. `navigator.sendBeacon` is made for this: the
 * browser delivers it after the page is gone. A string body goes as `text/plain`, which the
 * server reads like any command body and which needs no CORS preflight. Where there is no
 * beacon (or it refused), a `keepalive` fetch does the same.
 * @param {Switchboard} client
 * @param {string} url
 * @param {object} command
 */
function sendBeacon(client, url, command) {
  const body = JSON.stringify(command);
  const nav = /** @type {any} */ (globalThis).navigator;
  try {
    if (nav && typeof nav.sendBeacon === 'function' && nav.sendBeacon(url, body)) return;
  } catch {
    // fall through to fetch
  }
  try {
    /** @type {typeof fetch} */ (client._fetch)(url, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      body,
      keepalive: true,
    }).catch(() => {});
  } catch {
    // nothing more can be done while the page goes
  }
}

/** @param {Response} res */
async function safeText(res) {
  try {
    return (await res.text()).slice(0, 200);
  } catch {
    return '';
  }
}

export default Switchboard;
