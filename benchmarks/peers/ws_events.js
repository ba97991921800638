// The NanoSocket event protocol on Node's `ws`, as a user of that library writes it.
//
// Same events and bytes on the wire as benchmarks/apps/nanosocket_events.py (docs/protocol.md):
// echo -> an `echo` event, join -> joins a room (a Map of Sets) and answers `joined`, publish ->
// `message` to every member (the publisher included; the frame's text is encoded to a Buffer once
// and that Buffer sent to each), call with an `ack` id -> {"ack": id, "data": [data]}.
// permessage-deflate off, no heartbeat. `ws` is installed by the suite into benchmarks/.peers/node/.
//
//     node benchmarks/peers/ws_events.js --port 9007
"use strict";

const { WebSocketServer } = require("ws");

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const host = option("--host", "127.0.0.1");
const port = Number(option("--port", "9007"));
const rooms = new Map(); // room name -> Set of sockets

const wss = new WebSocketServer({ host, port, backlog: 2048, perMessageDeflate: false, maxPayload: 1 << 24 });

wss.on("connection", (ws) => {
  const joined = [];
  ws.on("message", (raw) => {
    const envelope = JSON.parse(raw.toString());
    const data = envelope.data;
    switch (envelope.event) {
      case "echo":
        ws.send(JSON.stringify({ event: "echo", data }));
        break;
      case "call":
        ws.send(JSON.stringify({ ack: envelope.ack, data }));
        break;
      case "publish": {
        const members = rooms.get(data[0]);
        if (members) {
          const frame = Buffer.from(JSON.stringify({ event: "message", data: [data[1]] }));
          for (const member of members) member.send(frame, { binary: false });
        }
        break;
      }
      case "join": {
        const room = data[0];
        let members = rooms.get(room);
        if (!members) rooms.set(room, (members = new Set()));
        members.add(ws);
        joined.push(room);
        ws.send(JSON.stringify({ event: "joined", data: [room] }));
        break;
      }
      default:
        ws.close(1008);
    }
  });
  ws.on("close", () => {
    for (const room of joined) {
      const members = rooms.get(room);
      if (members) {
        members.delete(ws);
        if (members.size === 0) rooms.delete(room);
      }
    }
  });
});

wss.on("listening", () => console.log(`ws event server listening on ws://${host}:${port}`));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => wss.close(() => process.exit(0)));
