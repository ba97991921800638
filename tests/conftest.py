"""Shared fixtures: every async test runs on asyncio and on uvloop; real sockets on 127.0.0.1.

``net`` starts servers and opens peers (ours, the ``websockets`` library's, and hand-driven raw
TCP peers that write exact bytes) and tears all of them down after the test, peers first.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import pytest
import uvloop
import websockets.asyncio.client
import websockets.asyncio.server

from nanosocket import WebSocket, WebSocketServer, connect, serve
from nanosocket.protocol.frames import CLOSE, build_frame, parse_close
from nanosocket.protocol.handshake import Request, accept_key, build_request, generate_key, parse_ws_url

#: Upper bound for waiting on something that must happen: a guard against hangs, never a
#: measurement (machines are shared and noisy).
HANG_GUARD = 10.0


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """The same suite on both event loops (DESIGN.md): each async test runs once per loop."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def echo(ws: WebSocket, request: Request) -> None:
    """The simplest connect handler: every message goes back as it came."""
    ws.on_message = ws.send


class Closes:
    """An ``on_close`` callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self._event = asyncio.Event()

    def __call__(self, code: int, reason: str) -> None:
        self.calls.append((code, reason))
        self._event.set()

    async def wait(self) -> tuple[int, str]:
        """The (code, reason) of the first call, once there is one."""
        await asyncio.wait_for(self._event.wait(), HANG_GUARD)
        return self.calls[0]


class Accepted:
    """A connect handler that records each server-side connection and its ``on_close`` calls.

    ``setup`` then runs as the connect handler proper (echo by default).
    """

    def __init__(self, setup: Callable[[WebSocket, Request], object] | None = echo) -> None:
        self.setup = setup
        self.requests: list[Request] = []
        self.closes: dict[WebSocket, Closes] = {}
        self._queue: asyncio.Queue[WebSocket] = asyncio.Queue()

    def __call__(self, ws: WebSocket, request: Request) -> None:
        closes = self.closes[ws] = Closes()
        ws.on_close = closes
        self.requests.append(request)
        self._queue.put_nowait(ws)
        if self.setup is not None:
            self.setup(ws, request)

    async def next(self) -> WebSocket:
        """The next connection the server accepted."""
        return await asyncio.wait_for(self._queue.get(), HANG_GUARD)

    async def closed(self, ws: WebSocket) -> tuple[int, str]:
        """What ``ws``'s on_close saw (waits for it)."""
        return await self.closes[ws].wait()


class RawPeer:
    """A hand-driven WebSocket peer over a plain asyncio stream: writes exact bytes, reads frames.

    As a client (the default) it masks what it sends, as RFC 6455 requires; ``mask=False``
    sends a frame unmasked on purpose.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, client: bool = True):
        self.reader = reader
        self.writer = writer
        self.client = client
        self.status: int | None = None
        self.head = b""

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def send_frame(
        self, opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool | None = None
    ) -> None:
        masked = self.client if mask is None else mask
        self.writer.write(build_frame(opcode, payload, fin=fin, mask_key=os.urandom(4) if masked else None))

    async def handshake(
        self, port: int, *, path: str = "/", headers: Iterable[tuple[str, str]] = (), extra: bytes = b""
    ) -> int:
        """Send an upgrade request (and ``extra`` bytes in the same write); return the status."""
        request = build_request(parse_ws_url(f"ws://127.0.0.1:{port}{path}"), generate_key(), headers=headers)
        self.writer.write(request + extra)
        return await self.read_head()

    async def accept_upgrade(
        self, *, accept: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Server side: read an upgrade request and answer 101 (``accept`` overrides the key answer)."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        key = ""
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-key":
                key = value.strip()
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept if accept is not None else accept_key(key)}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def read_head(self) -> int:
        """Read an HTTP response head; return its status."""
        self.head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(self.head.split(b" ", 2)[1])
        return self.status

    def header(self, name: str) -> str | None:
        """A header of the response head read last (first occurrence)."""
        for line in self.head.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """The next frame: (fin, opcode, unmasked payload)."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        key = await self.reader.readexactly(4) if second & 0x80 else b""
        payload = await self.reader.readexactly(length)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    async def read_close(self) -> tuple[int, str]:
        """Skip frames up to the close frame; return its (code, reason)."""
        while True:
            _, opcode, payload = await self.read_frame()
            if opcode == CLOSE:
                return parse_close(payload)

    async def read_to_eof(self) -> bytes:
        """Everything until the peer ends the TCP connection (a reset counts as the end)."""
        chunks = []
        try:
            while chunk := await self.reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)

    def abort(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


class Net:
    """What one test started on 127.0.0.1; ``aclose`` ends peers first, then servers."""

    def __init__(self) -> None:
        self.servers: list[WebSocketServer] = []
        self.clients: list[WebSocket] = []
        self.raw_peers: list[RawPeer] = []
        self.raw_servers: list[asyncio.Server] = []
        self.raw_tasks: list[asyncio.Task[Any]] = []
        self.ws_clients: list[websockets.asyncio.client.ClientConnection] = []
        self.ws_servers: list[websockets.asyncio.server.Server] = []

    # ---------------------------------------------------------------- ours

    def accepting(self, setup: Callable[[WebSocket, Request], object] | None = echo) -> Accepted:
        return Accepted(setup)

    def record_close(self, ws: WebSocket) -> Closes:
        """Install a recording on_close on ``ws``."""
        closes = Closes()
        ws.on_close = closes
        return closes

    async def serve(self, handler: Callable[..., Any] = echo, **kwargs: Any) -> WebSocketServer:
        server = await serve(handler, "127.0.0.1", 0, **kwargs)
        self.servers.append(server)
        return server

    async def connect(self, url: str | int, **kwargs: Any) -> WebSocket:
        """Our client; an int is the port of a server on 127.0.0.1."""
        if isinstance(url, int):
            url = f"ws://127.0.0.1:{url}/"
        ws = await asyncio.wait_for(connect(url, **kwargs), HANG_GUARD)
        self.clients.append(ws)
        return ws

    # ---------------------------------------------------------- websockets

    async def ws_connect(self, port: int, path: str = "/", **kwargs: Any) -> Any:
        """The websockets library's client (no proxy lookup, no compression)."""
        kwargs.setdefault("compression", None)
        ws = await websockets.asyncio.client.connect(
            f"ws://127.0.0.1:{port}{path}", proxy=None, open_timeout=HANG_GUARD, **kwargs
        )
        self.ws_clients.append(ws)
        return ws

    async def ws_serve(self, handler: Callable[[Any], Awaitable[None]], **kwargs: Any) -> int:
        """A websockets library server; returns its port."""
        kwargs.setdefault("compression", None)
        server = await websockets.asyncio.server.serve(handler, "127.0.0.1", 0, **kwargs)
        self.ws_servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    # ----------------------------------------------------------------- raw

    async def raw(self, port: int, *, rcvbuf: int | None = None) -> RawPeer:
        """A plain TCP connection to ``port`` (no handshake yet); ``rcvbuf`` shrinks its receive buffer."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        peer = RawPeer(reader, writer)
        self.raw_peers.append(peer)
        return peer

    async def raw_server(self, handler: Callable[[RawPeer], Awaitable[None]]) -> int:
        """A plain TCP server whose connections ``handler`` drives by hand; returns its port."""
        peers = self.raw_peers
        tasks = self.raw_tasks

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = RawPeer(reader, writer, client=False)
            peers.append(peer)
            task = asyncio.current_task()
            assert task is not None
            tasks.append(task)
            try:
                await handler(peer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        self.raw_servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------ teardown

    async def aclose(self) -> None:
        for peer in self.raw_peers:
            peer.abort()
        for ws in self.clients:
            ws.abort()
        for ws_client in self.ws_clients:
            ws_client.transport.abort()
        for ws_server in self.ws_servers:
            ws_server.close()
            await asyncio.wait_for(ws_server.wait_closed(), HANG_GUARD)
        for raw_server in self.raw_servers:
            raw_server.close()
        if self.raw_tasks:
            # The raw server handlers end once their peers are aborted.
            await asyncio.wait_for(asyncio.gather(*self.raw_tasks, return_exceptions=True), HANG_GUARD)
        for server in self.servers:
            await asyncio.wait_for(server.close(), HANG_GUARD)


@pytest.fixture
async def net() -> AsyncIterator[Net]:
    started = Net()
    try:
        yield started
    finally:
        await started.aclose()
