// An echo server built on the Node `ws` library, for tests/client/test_compression.py.
//
//   node ws_echo_server.js '<perMessageDeflate options as JSON>'
//
// Prints {"port": N} once listening. Each connection first receives a JSON text message telling
// what was negotiated ({"offer": ..., "extensions": ...}), then every message comes back as it came.
'use strict';
const { WebSocketServer } = require('ws');

const perMessageDeflate = JSON.parse(process.argv[2] || 'true');
const server = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  perMessageDeflate,
  maxPayload: 64 * 1024 * 1024,
});
server.on('listening', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
server.on('connection', (ws, request) => {
  ws.send(JSON.stringify({
    offer: request.headers['sec-websocket-extensions'] || null,
    extensions: ws.extensions || null,
  }));
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
