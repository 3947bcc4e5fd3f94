// Type declarations of switchboard.js, the browser client of Switchboard (served at
// /switchboard.d.ts next to /switchboard.js). docs/client.md describes the library and
// docs/protocol.md the protocol underneath.

export const VERSION: string;

export const CONNECTING: 0;
export const OPEN: 1;
export const CLOSING: 2;
export const CLOSED: 3;
export type ReadyState = 0 | 1 | 2 | 3;

export type TransportName = 'websocket' | 'sse' | 'longpoll' | 'poll';
export const TRANSPORTS: readonly TransportName[];

/**
 * Client-side error codes; protocol errors have numeric codes (100-119). 'origin' is the
 * `error` event of a page whose origin the server refuses (the client then stops).
 */
export type ClientErrorCode = 'closed' | 'disconnected' | 'queue_full' | 'timeout' | 'token' | 'unsubscribed' | 'origin';

export class SwitchboardError extends Error {
  constructor(code: number | ClientErrorCode, message: string);
  /** The protocol's error code (see docs/protocol.md, "Errors"), or a client-side code. */
  code: number | ClientErrorCode;
}

/** A position in a channel's stream. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A connection as others see it. */
export interface ClientInfo {
  user: string;
  client: string;
  /** The `info` claim of the user's token. */
  info?: unknown;
}

export interface Publication<T = unknown> {
  channel: string;
  epoch: string;
  offset: number;
  data: T;
  /** The publisher; absent when published through the server API. */
  info?: ClientInfo;
  /** When the server accepted it, in Unix milliseconds. */
  time?: number;
  /**
   * An ephemeral publication (published with `ephemeral: true`): not stored, `offset` is 0,
   * and it does not move the subscription's position. Delivered live or never.
   */
  ephemeral?: true;
}

export interface PrivateMessage<T = unknown> {
  /** Its mailbox id; ids increase. */
  mailbox: number;
  /** The sender; absent when sent through the server API. */
  from?: ClientInfo;
  data: T;
  time?: number;
}

export interface PresenceEvent {
  channel: string;
  info: ClientInfo;
}

export interface UnsubscribedEvent {
  channel: string;
  /** Why the server ended it, for people. */
  reason: string;
}

export interface SubscribedEvent {
  channel: string;
  epoch: string;
  offset: number;
  recoverable: boolean;
  /** Present after a resubscribe that asked to recover. */
  recovered?: boolean;
}

export interface RecoveryFailedEvent {
  channel: string;
  /** The position the subscription continues from. */
  epoch: string;
  offset: number;
}

export interface SubscribeHandlers<T = unknown> {
  /** Each publication once, in offset order, across reconnects. */
  onPublication?: (pub: Publication<T>) => void;
  onJoin?: (ev: PresenceEvent) => void;
  onLeave?: (ev: PresenceEvent) => void;
  /** A resubscribe could not recover everything missed: reload the channel's state. */
  onRecoveryFailed?: (ev: RecoveryFailedEvent) => void;
  /** Every successful subscribe and resubscribe. */
  onSubscribed?: (ev: SubscribedEvent) => void;
  /** The subscribe was refused (e.g. 102, 103, 106); the subscription is then over. */
  onError?: (err: SwitchboardError) => void;
  /**
   * The server ended the subscription (a refreshed token no longer lists the private
   * channel); it is over. Without this handler, an 'error' event with code 'unsubscribed'.
   */
  onUnsubscribed?: (ev: UnsubscribedEvent) => void;
}

export interface SwitchboardOptions {
  /** A connection token (JWT). Without it and without getToken, the client is anonymous. */
  token?: string;
  /** Gives a new token: before connecting without one, after close 4002 or 4008, and before expiry. */
  getToken?: () => string | Promise<string>;
  /** Transports to try, best first. Default ['websocket', 'sse', 'longpoll']. */
  transports?: TransportName[];
  /** First reconnect delay cap in ms (default 500); doubles per failed attempt. */
  minReconnectDelay?: number;
  /** Largest reconnect delay cap in ms (default 20000). */
  maxReconnectDelay?: number;
  /** ms to open a transport and get the connect reply, and to answer a ping (default 10000). */
  timeout?: number;
  /**
   * ms a command, once sent, waits for its reply before rejecting with 'timeout' (default
   * 10000). Time in the queue while not connected does not count.
   */
  commandTimeout?: number;
  /** Commands queued while not connected before `queue_full` (default 1000). */
  maxQueue?: number;
  /** ms on a fallback transport before checking that a better one opens (default 60000). */
  upgradeDelay?: number;
  /**
   * ms the transport that worked last is retried alone, when it fails to open, before the
   * others are tried (default 5000).
   */
  fallbackAfter?: number;
  /** ms between short polls (transport 'poll'; default 1000). */
  pollInterval?: number;
  /** Source of jitter in [0, 1) (default Math.random); for tests. */
  random?: () => number;
  /** A WebSocket class, where there is no global one (Node < 22: the `ws` package). */
  WebSocket?: unknown;
  /** An EventSource class, where there is no global one (Node: the `eventsource` package). */
  EventSource?: unknown;
  fetch?: typeof fetch;
}

/** Options every command takes. */
export interface CallOptions {
  /**
   * Cancels the command: it rejects at once with `signal.reason`; a queued command is then
   * never sent (one already sent may still be executed).
   */
  signal?: AbortSignal;
}

export interface PublishOptions extends CallOptions {
  /** Not stored in history and given no offset (typing indicators); the reply's offset is 0. */
  ephemeral?: boolean;
}

export interface HistoryOptions extends CallOptions {
  /** At most this many publications (with `before`: the newest ones below it). */
  limit?: number;
  /** Publications after this position. */
  since?: Position;
  /** Publications below this offset, to page backwards; still listed oldest first. */
  before?: number;
}

export interface ConnectingEvent {
  transport: TransportName;
  /** Failed rounds since the last connection (the backoff exponent). */
  attempt: number;
}

export interface ConnectedEvent {
  transport: TransportName;
  client: string;
  user: string;
  /** Token expiry in Unix seconds, or null without a token. */
  expires: number | null;
  ping: number;
  version: string;
}

export interface DisconnectedEvent {
  /** A close code (docs/protocol.md, "Close codes"); 1006 when the transport just failed. */
  code: number;
  reason: string;
  /**
   * Whether the client reconnects by itself: false after 1009, 4001, 4003 (a server-API
   * disconnect), 4009 (an SSE session resumed elsewhere by its id) and 4002 without
   * getToken, after the server refused the page's origin (1006, with an 'origin' error
   * event), `close()`, or the page's `pagehide` (a page restored from the back/forward
   * cache reconnects); true otherwise, 4008 (a server-API disconnect asking for a
   * reconnect) included.
   */
  reconnect: boolean;
  /** With reconnect: the ms before the next attempt. */
  delay?: number;
}

export interface EventMap {
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: SwitchboardError;
  message: PrivateMessage;
}

export interface HistoryResult<T = unknown> {
  epoch: string;
  offset: number;
  publications: { offset: number; data: T; info?: ClientInfo; time?: number }[];
  complete?: boolean;
}

export interface PresenceEntry {
  /** The user id; "" for an anonymous connection. */
  user: string;
  /** How many of the user's connections are subscribed (1 for an anonymous one). */
  connections: number;
  /** The `info` claim of the user's token. */
  info?: unknown;
}

export interface PresenceResult {
  /** Users with a token, by user id. */
  presence: Record<string, PresenceEntry>;
  /** Anonymous connections, apart, by client id; absent when there are none. */
  anonymous?: Record<string, PresenceEntry>;
}

export class Subscription<T = unknown> {
  /** Made by `Switchboard.subscribe()`, never by a page. */
  private constructor(client: Switchboard, channel: string, handlers: SubscribeHandlers<T>);
  readonly channel: string;
  state: 'subscribing' | 'subscribed' | 'unsubscribed';
  /** The last position delivered (null before the first subscribe reply). */
  epoch: string | null;
  offset: number | null;
  recoverable: boolean | null;
  unsubscribe(): Promise<void>;
  presence(opts?: CallOptions): Promise<PresenceResult>;
  history(opts?: HistoryOptions): Promise<HistoryResult<T>>;
  publish(data: T, opts?: PublishOptions): Promise<Position>;
}

export class Switchboard {
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;

  /** @param url the server's base URL (`http(s)://host:port`); defaults to the page's origin */
  constructor(url?: string, options?: SwitchboardOptions);

  readonly url: string;
  readonly readyState: ReadyState;
  /** Bytes of commands queued and not yet handed to the network. */
  readonly bufferedAmount: number;
  /** The transport in use, or null. */
  readonly transport: TransportName | null;
  readonly client: string | null;
  readonly user: string | null;

  connect(): this;
  /** Resolves once OPEN; rejects if the client is closed first, or when `signal` aborts. */
  ready(opts?: CallOptions): Promise<void>;
  /**
   * Ends the session (the `close` command, so that an SSE or polling session leaves at
   * once) and stops reconnecting; resolves once CLOSED, at most 2 s later. Also done on
   * the page's `pagehide`, by beacon.
   */
  close(): Promise<void>;

  on<K extends keyof EventMap>(event: K, fn: (ev: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(event: K, fn: (ev: EventMap[K]) => void): void;

  subscribe<T = unknown>(channel: string, handlers?: SubscribeHandlers<T>): Subscription<T>;
  getSubscription(channel: string): Subscription | null;

  publish(channel: string, data: unknown, opts?: PublishOptions): Promise<Position>;
  history<T = unknown>(channel: string, opts?: HistoryOptions): Promise<HistoryResult<T>>;
  /**
   * Calls `method` on the server's application (a built-in handler, or the backend behind
   * `[rpc] proxy_url`). Resolves to its result; rejects with a SwitchboardError: 119 when
   * the handler refused (its message), 104 for a method nobody answers.
   */
  rpc<R = any>(method: string, data?: unknown, opts?: CallOptions): Promise<R>;
  presence(channel: string, opts?: CallOptions): Promise<PresenceResult>;
  send(user: string, data: unknown, opts?: CallOptions): Promise<{ mailbox: number; status: 'delivered' | 'stored' }>;
  ping(opts?: CallOptions): Promise<Record<string, never>>;
}

export default Switchboard;
