"""FaultProxy: a TCP proxy on 127.0.0.1 that cuts the line between a client and a server on demand.

Modes:

* pass-through (the start, and after ``restore()``): bytes flow both ways as they come;
* ``reset()``: every open connection is aborted on both sides (RST, no close handshake) and new
  connections are refused (accepted, then aborted) until ``restore()``;
* ``blackhole()``: nothing is forwarded any more and no side is closed, as when a network path
  fails silently: only heartbeats detect it. Connections opened during the cut are held the same
  way. Connections blackholed stay so until an end closes them; ``restore()`` lets new ones pass;
* ``redirect(port)``: new connections go to another upstream (another node of a cluster).

A frame filter (``drop_frames(predicate)``) reads what the server sends as WebSocket frames (after
its HTTP head; unmasked, RFC 6455) and swallows those the predicate picks: ``AckDropper`` picks
ack replies, at random with a seeded generator or the first few. Frames are seen as on the wire
(compressed ones stay compressed). Only connections made while a filter is set are read as frames
(only whole frames are forwarded): set it before the connections it must see.

Only asyncio streams: no third-party code between the two ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from enum import Enum

__all__ = ["AckDropper", "FaultProxy", "FrameReader", "Mode"]

#: Decides whether a server frame is swallowed: ``predicate(opcode, payload)``.
FramePredicate = Callable[[int, bytes], bool]


class FrameReader:
    """Splits the server's byte stream into its HTTP head and whole WebSocket frames."""

    def __init__(self) -> None:
        self._buffer = b""
        self._head_done = False

    def feed(self, data: bytes, predicate: FramePredicate) -> bytes:
        """The bytes to forward: the head, and each whole frame the predicate keeps."""
        self._buffer += data
        out: list[bytes] = []
        if not self._head_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return b""
            out.append(self._buffer[: end + 4])
            self._buffer = self._buffer[end + 4 :]
            self._head_done = True
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if len(buffer) - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if len(buffer) - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if second & 0x80:
                start += 4  # a masked frame (never from a server): forwarded as it is
            end = start + length
            if end > len(buffer):
                break
            if not predicate(first & 0x0F, buffer[start:end]):
                out.append(buffer[offset:end])
            offset = end
        self._buffer = buffer[offset:]
        return b"".join(out)


class AckDropper:
    """A frame predicate swallowing ack replies (text frames ``{"ack": ...}`` without an event):
    each with probability ``rate`` (a generator seeded with ``seed``), or the first ``first``
    ones, or those whose payload ``matches``. ``dropped`` counts them, ``seen`` all ack replies."""

    def __init__(
        self,
        rate: float = 0.0,
        *,
        seed: int = 0,
        first: int = 0,
        matches: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.rate = rate
        self.first = first
        self.matches = matches
        self.random = random.Random(seed)
        self.dropped = 0
        self.seen = 0

    def __call__(self, opcode: int, payload: bytes) -> bool:
        if opcode != 0x1 or not payload.startswith(b'{"ack":') or b'"event"' in payload:
            return False
        self.seen += 1
        drop = (
            self.dropped < self.first
            or (self.matches is not None and self.matches(payload))
            or (self.rate > 0 and self.random.random() < self.rate)
        )
        if drop:
            self.dropped += 1
        return drop


class Mode(Enum):
    PASS = "pass"
    RESET = "reset"
    BLACKHOLE = "blackhole"


class _Pair:
    """One proxied connection: the client's side and the server's side."""

    __slots__ = ("blackholed", "client", "frames", "server", "tasks")

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.blackholed = False
        self.tasks: list[asyncio.Task[None]] = []
        #: The server's stream as frames, when a filter was set as the connection was made.
        self.frames: FrameReader | None = None

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
        #: Swallows the server frames it picks (None: everything passes).
        self.frame_filter: FramePredicate | None = None

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

    def drop_frames(self, predicate: FramePredicate | None) -> None:
        """Swallow the server frames ``predicate(opcode, payload)`` picks on the connections made
        from now on, and on those made under an earlier filter (None: stop)."""
        self.frame_filter = predicate

    def redirect(self, port: int) -> None:
        """Send new connections to another upstream port (open ones stay where they are): a
        client that reconnects lands on another server, as behind a load balancer."""
        self.upstream_port = port

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
        if self.frame_filter is not None:
            pair.frames = FrameReader()
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(pair, reader, up_writer)),
            asyncio.create_task(self._pump(pair, up_reader, writer, from_server=True)),
        ]

    async def _pump(
        self,
        pair: _Pair,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        from_server: bool = False,
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if from_server and pair.frames is not None:
                    data = pair.frames.feed(data, self.frame_filter or _keep)
                if pair.blackholed:
                    continue  # swallowed: the other end hears nothing
                if not data:
                    continue
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


def _keep(opcode: int, payload: bytes) -> bool:
    return False
