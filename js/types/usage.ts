// The library used from TypeScript as docs/client.md uses it from JavaScript, through
// switchboard.d.ts only: tsc checks that the declarations give a page what it needs, with
// the types the docs describe. Nothing here runs.

import Switchboard, {
  CLOSED,
  OPEN,
  TRANSPORTS,
  VERSION,
  Subscription,
  SwitchboardError,
  type DisconnectedEvent,
  type HistoryResult,
  type Position,
  type PrivateMessage,
  type Publication,
  type TransportName,
} from '../../crates/server/assets/switchboard.js';

interface Chat {
  text: string;
}

export async function page(show: (line: string) => void): Promise<void> {
  const sb = new Switchboard('http://127.0.0.1:8000', {
    getToken: () => fetch('/switchboard-token').then((r) => r.text()),
    transports: ['websocket', 'sse', 'longpoll'],
    minReconnectDelay: 500,
    maxReconnectDelay: 20000,
    commandTimeout: 10000,
  });
  const lobby: Subscription<Chat> = sb.subscribe<Chat>('chat:lobby', {
    onPublication: (p: Publication<Chat>) => show(`${p.offset}: ${p.data.text}`),
    onJoin: (e) => show(`${e.info.user} joined`),
    onLeave: (e) => show(`${e.info.user} left`),
    onRecoveryFailed: async (e) => {
      const h: HistoryResult<Chat> = await lobby.history({ limit: 50, since: { epoch: e.epoch, offset: 0 } });
      for (const p of h.publications) show(p.data.text);
    },
    onSubscribed: (e) => show(`subscribed at ${e.offset}, recovered: ${e.recovered ?? 'n/a'}`),
    onUnsubscribed: (e) => show(`${e.channel} ended: ${e.reason}`),
    onError: (err) => show(`${err.code}`),
  });
  const off = sb.on('message', (m: PrivateMessage) => show(`${m.mailbox} from ${m.from?.user ?? 'server'}`));
  sb.on('connecting', (e) => show(`${e.transport} attempt ${e.attempt}`));
  sb.on('connected', (e) => show(`${e.transport} ${e.client} ${e.user} ${e.expires ?? 'no expiry'}`));
  sb.on('disconnected', (e: DisconnectedEvent) =>
    show(e.reconnect ? `reconnecting in ${e.delay} ms (${e.code} ${e.reason})` : `offline (${e.code} ${e.reason})`),
  );
  sb.on('error', (err: SwitchboardError) => {
    const code: number | string = err.code;
    if (err.code === 'origin') show(`fix the server's allowed_origins: ${err.message}`);
    else show(`${err.name} ${code}: ${err.message}`);
  });
  off();
  sb.connect();
  await sb.ready({ signal: AbortSignal.timeout(5000) });
  const state: 0 | 1 | 2 | 3 = sb.readyState;
  if (state === OPEN || state === CLOSED) show(`${state}`);
  const transport: TransportName | null = sb.transport;
  const known: readonly TransportName[] = TRANSPORTS;
  show(`${VERSION} ${transport} ${known.length} ${sb.url} ${sb.client} ${sb.user} ${sb.bufferedAmount}`);

  const pos: Position = await lobby.publish({ text: 'hi' });
  await sb.publish('chat:lobby', { text: 'hi' }, { signal: new AbortController().signal });
  const h = await sb.history<Chat>('chat:lobby', { since: pos });
  show(h.publications.map((p) => p.data.text).join());
  const who = await lobby.presence();
  for (const [user, entry] of Object.entries(who.presence)) show(`${user}: ${entry.connections}`);
  const older = await sb.history<Chat>('chat:lobby', { before: pos.offset, limit: 50 });
  show(`${older.publications.length} older`);
  await lobby.publish({ text: 'typing' }, { ephemeral: true });
  const rooms = await sb.rpc<{ rooms: { name: string }[] }>('chat.rooms', {});
  show(rooms.rooms.map((r) => r.name).join());
  try {
    await sb.rpc('chat.create', { name: 'Not Valid' });
  } catch (err) {
    if (err instanceof SwitchboardError && err.code === 119) show(`refused: ${err.message}`);
  }
  const typing = sb.subscribe<Chat>('chat:typing', {
    onPublication: (p) => show(p.ephemeral ? 'someone is typing' : p.data.text),
  });
  await typing.unsubscribe();
  const sent = await sb.send('bob', { text: 'psst' });
  show(`${sent.mailbox} ${sent.status}`);
  await sb.ping();
  show(`${sb.getSubscription('chat:lobby')?.state}`);
  await lobby.unsubscribe();
  try {
    await sb.publish('logs:x', 1);
  } catch (err) {
    if (err instanceof SwitchboardError && err.code === 103) show('not allowed');
    if (err instanceof SwitchboardError && err.code === 'timeout') show('maybe published');
  }
  await sb.close();
}
