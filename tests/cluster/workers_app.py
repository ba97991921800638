"""The app the worker tests serve with ``nanosocket serve workers_app:server --workers 2``.

Every socket knows the pid of the worker it landed on (``socket.data["pid"]``, and the
``whoami`` event answers it), so a test can prove its clients are on different workers.
No adapter is configured: the workers take theirs from NANOSOCKET_REDIS_URL.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from nanosocket import NanoSocket, RecoveryOptions, Socket


def create_server(**options: Any) -> NanoSocket:
    """The factory (``workers_app:create_server``); ``server`` below is one made by it."""
    server = NanoSocket(port=0, host="127.0.0.1", **options)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.data["pid"] = os.getpid()

        @socket.on("whoami")
        def whoami() -> int:
            return os.getpid()

        @socket.on("join")
        def join(room: str) -> int:
            socket.join(room)
            return os.getpid()

        @socket.on("say")
        def say(room: str, text: str) -> None:
            # Everyone in the room but the sender, on every worker.
            socket.to(room).emit("said", text, os.getpid())

        @socket.on("shout")
        def shout(room: str, text: str) -> None:
            # Everyone in the room, the sender too.
            server.to(room).emit("shouted", text, os.getpid())

    return server


def failing_in_workers() -> NanoSocket:
    """A factory that works in the supervisor (which checks the target) and fails in every worker."""
    if multiprocessing.parent_process() is not None:
        raise RuntimeError("this worker fails at start")
    return create_server()


server = create_server()

#: The same app with connection-state recovery (its workers share the log and sessions in Redis).
recovering = create_server(recovery=RecoveryOptions())
