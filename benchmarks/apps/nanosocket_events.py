"""The NanoSocket event server the benchmark suite measures: the full framework API, as an app uses it.

Events (plain WebSocket clients need no ``$connect``: their events are dispatched at once):

- ``echo(data)``: emits ``echo`` back with the same argument;
- ``join(room)``: joins the room, then emits ``joined`` (the acknowledgement the load generator
  waits for before it counts the socket as subscribed);
- ``publish(room, payload)``: ``server.to(room).emit("message", payload)``; the publisher is in the
  room too, so it gets its own copy (the load generator's publish acknowledgement);
- ``call(data)``: an ack handler that returns its argument.

Handlers are plain (sync) functions registered once for every socket (``server.socket_on``), the
documented way for handlers that need no per-connection state.
Heartbeats are off (``idle_timeout=None``) so that no ping reaches the load generator, and
``max_backpressure`` is large so that a load generator keeping many requests in flight is never
cut off as a slow consumer.

    python benchmarks/apps/nanosocket_events.py --port 9003

The performance guide's focused scenarios (benchmarks/guide.py) start it with ``--middleware N``
(N token-checking middlewares, as examples/middleware_auth.py writes one), ``--no-monitoring``
(``NanoSocket(monitoring=False)``), ``--compression MODE``, ``--publish-loop`` (a publish emits to
each member of the room in a Python loop over the app's own member sets instead of
``server.to(room).emit``), ``--volatile`` (publishes go through ``server.volatile.to(room)``) or
``--max-backpressure BYTES``; the main suite uses none of them.
"""

from __future__ import annotations

import argparse
from typing import Any

from nanosocket import ConnectError, NanoSocket, Socket

#: Outbound bytes one client may leave unread before it counts as a slow consumer.
MAX_BACKPRESSURE = 16 * 1024 * 1024


def create_server(
    port: int,
    host: str = "127.0.0.1",
    *,
    middleware: int = 0,
    monitoring: bool = True,
    compression: str = "off",
    publish_loop: bool = False,
    volatile: bool = False,
    max_backpressure: int = MAX_BACKPRESSURE,
) -> NanoSocket:
    server = NanoSocket(
        port=port,
        host=host,
        idle_timeout=None,
        max_backpressure=max_backpressure,
        monitoring=monitoring,
        compression=compression,
    )
    for _ in range(middleware):

        @server.use
        async def authenticate(socket: Socket) -> None:
            if socket.handshake.query.get("token") == "forged":
                raise ConnectError("invalid token")
            socket.data["user"] = "loadgen"

    # --publish-loop: rooms kept by the app itself, each publish sent member by member.
    members: dict[str, set[Socket]] = {}
    broadcaster = server.volatile if volatile else server

    # Every handler is shared by all sockets (server.socket_on): nothing is created per connection.
    @server.socket_on("echo")
    def echo(socket: Socket, data: Any) -> None:
        socket.emit("echo", data)

    @server.socket_on("join")
    def join(socket: Socket, room: str) -> None:
        socket.join(room)
        if publish_loop:
            members.setdefault(room, set()).add(socket)
        socket.emit("joined", room)

    if publish_loop:

        @server.socket_on("publish")
        def publish_each(socket: Socket, room: str, payload: Any) -> None:
            for member in members.get(room, ()):
                member.emit("message", payload)

        @server.on("disconnect")
        def forget(socket: Socket) -> None:
            for room in members.values():
                room.discard(socket)

    else:

        @server.socket_on("publish")
        def publish(socket: Socket, room: str, payload: Any) -> None:
            broadcaster.to(room).emit("message", payload)

    @server.socket_on("call")
    def call(socket: Socket, data: Any) -> Any:
        return data

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description="NanoSocket event server for the benchmark suite")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9003)
    parser.add_argument("--middleware", type=int, default=0, help="token-checking middlewares (default 0)")
    parser.add_argument("--no-monitoring", action="store_true", help="NanoSocket(monitoring=False)")
    parser.add_argument("--compression", default="off", choices=("off", "shared", "dedicated"))
    parser.add_argument("--publish-loop", action="store_true", help="emit a publish member by member")
    parser.add_argument("--volatile", action="store_true", help="publish with server.volatile.to(room)")
    parser.add_argument(
        "--max-backpressure", type=int, default=MAX_BACKPRESSURE, help="bytes (default 16 MiB)"
    )
    args = parser.parse_args()
    create_server(
        args.port,
        args.host,
        middleware=args.middleware,
        monitoring=not args.no_monitoring,
        compression=args.compression,
        publish_loop=args.publish_loop,
        volatile=args.volatile,
        max_backpressure=args.max_backpressure,
    ).run()


if __name__ == "__main__":
    main()
