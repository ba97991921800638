"""The server the cluster benchmarks run in worker processes or as nodes.

``nanosocket serve benchmarks.cluster_app:server --workers N`` (from the repository's root): the
events of the suite's event server (benchmarks/apps/nanosocket_events.py), as the load generator
speaks them:

- ``echo(data)``: emits ``echo`` back;
- ``join(room)``: joins the room, then emits ``joined`` (what the load generator waits for);
- ``publish(room, payload)``: ``server.to(room).emit("message", payload)``, the publisher included
  (its own copy is the load generator's publish acknowledgement), on every worker or node;
- ``whoami()``: answers the pid of the worker (an acknowledgement), for the round-trip probe;
- ``shout(room, stamp)``: ``server.to(room).emit("shouted", stamp)``, for the round-trip probe.

No adapter is configured: with more than one worker, the workers take a RedisAdapter from
``NANOSOCKET_REDIS_URL``; ``CLUSTER_BENCH_REDIS`` (a URL) gives the server a RedisAdapter of its
own (one node of several on separate ports), with ``NANOSOCKET_REDIS_PREFIX`` as prefix.
``CLUSTER_BENCH_RECOVERY=1`` turns connection-state recovery on (with a RedisAdapter, logged
broadcasts then travel through the shared Redis Stream).
Heartbeats are off and ``max_backpressure`` is large, as in the suite's event server.
"""

from __future__ import annotations

import os
from typing import Any

from nanosocket import Adapter, NanoSocket, RecoveryOptions, RedisAdapter, Socket

#: Outbound bytes one client may leave unread before it counts as a slow consumer.
MAX_BACKPRESSURE = 16 * 1024 * 1024


def create_server() -> NanoSocket:
    adapter: Adapter | None = None
    if url := os.environ.get("CLUSTER_BENCH_REDIS"):
        adapter = RedisAdapter(url, prefix=os.environ.get("NANOSOCKET_REDIS_PREFIX", "nanosocket"))
    server = NanoSocket(
        port=int(os.environ.get("CLUSTER_BENCH_PORT", "9100")),
        host="127.0.0.1",
        adapter=adapter,
        idle_timeout=None,
        max_backpressure=MAX_BACKPRESSURE,
        recovery=RecoveryOptions() if os.environ.get("CLUSTER_BENCH_RECOVERY") == "1" else None,
    )

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

        @socket.on("whoami")
        def whoami() -> int:
            return os.getpid()

        @socket.on("shout")
        def shout(room: str, stamp: Any) -> None:
            server.to(room).emit("shouted", stamp)

    return server


server = create_server()
