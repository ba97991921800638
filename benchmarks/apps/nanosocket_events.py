"""The NanoSocket event server the benchmark suite measures: the full framework API, as an app uses it.

Events (plain WebSocket clients need no ``$connect``: their events are dispatched at once):

- ``echo(data)``: emits ``echo`` back with the same argument;
- ``join(room)``: joins the room, then emits ``joined`` (the acknowledgement the load generator
  waits for before it counts the socket as subscribed);
- ``publish(room, payload)``: ``server.to(room).emit("message", payload)``; the publisher is in the
  room too, so it gets its own copy (the load generator's publish acknowledgement);
- ``call(data)``: an ack handler that returns its argument.

Handlers are plain (sync) functions registered per socket in ``connection``, the documented way.
Heartbeats are off (``idle_timeout=None``) so that no ping reaches the load generator, and
``max_backpressure`` is large so that a load generator keeping many requests in flight is never
cut off as a slow consumer.

    python benchmarks/apps/nanosocket_events.py --port 9003
"""

from __future__ import annotations

import argparse
from typing import Any

from nanosocket import NanoSocket, Socket

#: Outbound bytes one client may leave unread before it counts as a slow consumer.
MAX_BACKPRESSURE = 16 * 1024 * 1024


def create_server(port: int, host: str = "127.0.0.1") -> NanoSocket:
    server = NanoSocket(port=port, host=host, idle_timeout=None, max_backpressure=MAX_BACKPRESSURE)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        @socket.on("echo")
        def echo(data: Any) -> None:
            socket.emit("echo", data)

        @socket.on("join")
        def join(room: str) -> None:
            socket.join(room)
            socket.emit("joined", room)

        @socket.on("publish")
        def publish(room: str, payload: Any) -> None:
            server.to(room).emit("message", payload)

        @socket.on("call")
        def call(data: Any) -> Any:
            return data

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="NanoSocket event server for the benchmark suite")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9003)
    args = parser.parse_args()
    create_server(args.port, args.host).run()


if __name__ == "__main__":
    main()
