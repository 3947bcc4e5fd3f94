// An echo server on Node's `ws` with permessage-deflate, for crates/ws/tests/node.rs: the
// real server our client negotiates with. Run with NODE_PATH=js/node_modules.
// argv[2]: JSON of ws's perMessageDeflate options (merged over threshold 0, so every
// message is compressed). Prints "PORT n" once listening.
// The first message on each connection reports what ws negotiated; after that, text and
// binary messages come back as they came, compressed. "!fragments N TEXT" is answered
// with TEXT sent as N fragments of one compressed message.
'use strict';
const { WebSocketServer } = require('ws');

const options = JSON.parse(process.argv[2] || '{}');
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  perMessageDeflate: { threshold: 0, ...options },
});
wss.on('listening', () => console.log(`PORT ${wss.address().port}`));
wss.on('connection', (ws, req) => {
  ws.send(JSON.stringify({
    offer: req.headers['sec-websocket-extensions'] || null,
    params: ws._extensions['permessage-deflate']
      ? ws._extensions['permessage-deflate'].params
      : null,
  }));
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? '' : data.toString();
    const m = /^!fragments (\d+) ([\s\S]*)$/.exec(text);
    if (m) {
      const n = Number(m[1]);
      const body = Buffer.from(m[2]);
      const size = Math.ceil(body.length / n);
      for (let i = 0; i < n; i++) {
        const part = body.subarray(i * size, (i + 1) * size);
        ws.send(part, { binary: false, compress: true, fin: i === n - 1 });
      }
      return;
    }
    ws.send(data, { binary: isBinary, compress: true });
  });
});
// Ends with the test: the Rust side kills us, or closes stdin.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
