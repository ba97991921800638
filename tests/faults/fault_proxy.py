"""FaultProxy: a TCP proxy on 127.0.0.1 that cuts the line between a client and a server on demand.

Modes:

* pass-through (the start, and after ``restore()``): bytes flow both ways as they come;
* ``reset()``: every open connection is aborted on both sides (RST, no close handshake) and new
  connections are refused (accepted, then aborted) until ``restore()``;
* ``blackhole()``: nothing is forwarded any more and no side is closed, as when a network path
  fails silently: only heartbeats detect it. Connections opened during the cut are held the same
  way. Connections blackholed stay so until an end closes them; ``restore()`` lets new ones pass.

Only asyncio streams: no third-party code between the two ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from enum import Enum

__all__ = ["FaultProxy", "Mode"]


class Mode(Enum):
    PASS = "pass"
    RESET = "reset"
    BLACKHOLE = "blackhole"


class _Pair:
    """One proxied connection: the client's side and the server's side."""

    __slots__ = ("blackholed", "client", "server", "tasks")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.blackholed = False
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.server):
            _abort(writer)
        for task in self.tasks:
            task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0, then abort the transport."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


class FaultProxy:
    """``async with FaultProxy(upstream_port) as proxy``: clients connect to ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode = Mode.PASS
        self.port = 0
        #: Connections accepted since the start (refused ones included).
        self.accepted = 0
        self._pairs: set[_Pair] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for pair in list(self._pairs):
            pair.abort()
        self._pairs.clear()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    # ------------------------------------------------------------------ faults

    def reset(self) -> None:
        """Abort every connection on both sides (RST) and refuse new ones until ``restore()``."""
        self.mode = Mode.RESET
        for pair in list(self._pairs):
            pair.abort()
        self._pairs.clear()

    def blackhole(self) -> None:
        """Stop forwarding on every connection, closing nothing (until ``restore()`` for new ones)."""
        self.mode = Mode.BLACKHOLE
        for pair in self._pairs:
            pair.blackholed = True

    def restore(self) -> None:
        """Pass new connections through again."""
        self.mode = Mode.PASS

    # -------------------------------------------------------------- forwarding

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode is Mode.RESET or self._server is None:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            _abort(writer)
            return
        pair = _Pair(writer, up_writer)
        pair.blackholed = self.mode is Mode.BLACKHOLE
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(pair, reader, up_writer)),
            asyncio.create_task(self._pump(pair, up_reader, writer)),
        ]

    async def _pump(self, pair: _Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if pair.blackholed:
                    continue  # swallowed: the other end hears nothing
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # One end is gone. Through a blackhole the other end never learns it.
        if pair.blackholed:
            return
        self._pairs.discard(pair)
        pair.abort()
