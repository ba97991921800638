// The benchmark events on Node's socket.io (v4), written the documented way.
//
// Socket.IO speaks its own protocol (Engine.IO v4 / Socket.IO v5 packets such as 42["echo","..."]),
// which the load generator drives with --dialect socketio. The events do what
// benchmarks/apps/nanosocket_events.py does: echo -> socket.emit("echo", data); join ->
// socket.join(room) then socket.emit("joined", room); publish -> io.to(room).emit("message",
// payload) (the publisher is in the room); call -> the acknowledgement callback with data.
// WebSocket transport only (no long-polling), default heartbeat, no compression. socket.io is
// installed by the suite into benchmarks/.peers/node/.
//
//     node benchmarks/peers/socketio_events.js --port 9008
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const host = option("--host", "127.0.0.1");
const port = Number(option("--port", "9008"));

const server = http.createServer();
const io = new Server(server, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });

io.on("connection", (socket) => {
  socket.on("echo", (data) => socket.emit("echo", data));
  socket.on("join", (room) => {
    socket.join(room);
    socket.emit("joined", room);
  });
  socket.on("publish", (room, payload) => io.to(room).emit("message", payload));
  socket.on("call", (data, ack) => ack(data));
});

server.listen({ host, port, backlog: 2048 }, () =>
  console.log(`socket.io server listening on http://${host}:${port}`),
);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
