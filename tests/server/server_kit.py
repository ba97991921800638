"""The server tests' kit: NanoSocket servers on 127.0.0.1 and clients that speak the wire
protocol by hand, so every assertion is about the exact frames the server sends.

* ``Peer``: the raw client of ``nanosocket.connect`` sending and reading envelopes as JSON text
  or msgpack binary frames (it answers pings by itself, like any WebSocket client);
* ``RawTCP``: a plain TCP connection that writes exact bytes (invalid UTF-8, a client that never
  reads, one that never answers pings);
* ``Recorder``: a handler that records its calls and lets a test wait for them;
* ``Harness``: starts servers and opens clients, and closes all of them afterwards (the ``ns``
  fixture of conftest.py).

Waits are bounded by HANG_GUARD only to turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgpack
import orjson

from nanosocket import ConnectionClosed, NanoSocket, Socket, WebSocket, connect
from nanosocket.protocol.frames import CLOSE, build_frame, parse_close
from nanosocket.protocol.handshake import build_request, generate_key, parse_ws_url

HANG_GUARD = 10.0
V1 = "nanosocket.v1"


async def within(awaitable: Awaitable[Any]) -> Any:
    """Await with a hang guard (a failure instead of a hang, never a measurement)."""
    return await asyncio.wait_for(awaitable, HANG_GUARD)


async def until(condition: Callable[[], object]) -> None:
    """Wait (bounded) for a condition that changes through loop events."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - these conditions have no event to wait on
            await asyncio.sleep(0.005)

    await within(poll())


def decode(message: str | bytes) -> Any:
    """A frame's envelope: JSON for text, msgpack for binary."""
    if isinstance(message, str):
        return orjson.loads(message)
    return msgpack.unpackb(message, raw=False)


class Recorder:
    """A handler (sync, any arguments) that records each call's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._changed: asyncio.Event | None = None

    def __call__(self, *args: Any) -> None:
        self.calls.append(args)
        if self._changed is not None:
            self._changed.set()

    async def wait(self, count: int = 1) -> list[tuple[Any, ...]]:
        """Every call so far, once there are at least ``count``."""

        async def wait() -> None:
            while len(self.calls) < count:
                self._changed = asyncio.Event()
                await self._changed.wait()

        await within(wait())
        return self.calls


class Peer:
    """A NanoSocket client driven by hand: envelopes in, envelopes out, nothing automatic
    (except the pong to each ping, which the WebSocket layer sends)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        #: The socket id a v1 client received in the answer to its $connect.
        self.sid: str | None = None

    def send(self, envelope: Any) -> None:
        """One envelope (or a batch) as a JSON text frame."""
        assert self.ws.send(orjson.dumps(envelope).decode())

    def send_binary(self, envelope: Any) -> None:
        """One envelope as a msgpack binary frame."""
        assert self.ws.send(msgpack.packb(envelope, use_bin_type=True))

    def emit(self, event: str, *args: Any, ack: int | None = None) -> None:
        envelope: dict[str, Any] = {"event": event, "data": list(args)}
        if ack is not None:
            envelope["ack"] = ack
        self.send(envelope)

    async def recv_raw(self) -> str | bytes:
        return await within(self.ws.recv())

    async def recv(self) -> Any:
        """The next envelope (decoded)."""
        return decode(await self.recv_raw())

    async def expect(self, event: str) -> list[Any]:
        """The next envelope must be ``event``; return its data."""
        envelope = await self.recv()
        assert envelope.get("event") == event, envelope
        data: list[Any] = envelope["data"]
        return data

    async def expect_ack(self, ack: int) -> dict[str, Any]:
        """The next envelope must be the answer to ``ack``."""
        envelope: dict[str, Any] = await self.recv()
        assert envelope.get("ack") == ack and "event" not in envelope, envelope
        return envelope

    async def closed(self) -> ConnectionClosed:
        """Read (and drop) messages until the connection ends; the ConnectionClosed it ends with."""
        while True:
            try:
                await within(self.ws.recv())
            except ConnectionClosed as exc:
                return exc

    async def close_code(self) -> int:
        return (await self.closed()).code


class RawTCP:
    """A TCP connection that writes exact bytes: an upgrade request, masked frames, nothing more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head = b""

    async def upgrade(
        self, port: int, *, path: str = "/", subprotocols: tuple[str, ...] = (), extra: bytes = b""
    ) -> int:
        """Send an upgrade request (``extra`` bytes in the same write); return the status."""
        url = parse_ws_url(f"ws://127.0.0.1:{port}{path}")
        self.writer.write(build_request(url, generate_key(), subprotocols=subprotocols) + extra)
        self.head = await within(self.reader.readuntil(b"\r\n\r\n"))
        return int(self.head.split(b" ", 2)[1])

    def frame(self, opcode: int, payload: bytes) -> bytes:
        return build_frame(opcode, payload, mask_key=os.urandom(4))

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.writer.write(self.frame(opcode, payload))

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server (unmasked): (opcode, payload)."""
        reader = self.reader
        first, second = await within(reader.readexactly(2))
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await within(reader.readexactly(2)))
        elif length == 127:
            (length,) = struct.unpack("!Q", await within(reader.readexactly(8)))
        assert not second & 0x80, "server frames are never masked"
        return first & 0x0F, await within(reader.readexactly(length))

    async def read_until_close(self) -> tuple[list[tuple[int, bytes]], tuple[int, str]]:
        """Every frame up to the close frame, and the close frame's (code, reason)."""
        frames = []
        while True:
            opcode, payload = await self.read_frame()
            if opcode == CLOSE:
                return frames, parse_close(payload)
            frames.append((opcode, payload))

    def abort(self) -> None:
        if not self.writer.transport.is_closing():
            self.writer.transport.abort()


class Reply:
    """A plain HTTP response, read to the end of the connection."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self) -> Any:
        return orjson.loads(self.body)


class Harness:
    """Starts servers and opens clients for one test; ``aclose`` ends the clients, then the servers."""

    def __init__(self) -> None:
        self.servers: list[NanoSocket] = []
        self.clients: list[WebSocket] = []
        self.raws: list[RawTCP] = []

    def server(self, **options: Any) -> NanoSocket:
        """A server on 127.0.0.1 with a free port, not yet listening (closed after the test)."""
        server = NanoSocket(port=0, host="127.0.0.1", **options)
        self.servers.append(server)
        return server

    async def start(self, **options: Any) -> NanoSocket:
        """A listening server (``server.port`` is its port)."""
        server = self.server(**options)
        await within(server.listen())
        return server

    def sockets(self, server: NanoSocket) -> asyncio.Queue[Socket]:
        """A queue of the server's sockets as they connect (a ``connection`` handler)."""
        queue: asyncio.Queue[Socket] = asyncio.Queue()
        server.on("connection", queue.put_nowait)
        return queue

    async def websocket(
        self, server: NanoSocket, *, path: str = "/", subprotocols: Iterable[str] = (), **kwargs: Any
    ) -> WebSocket:
        ws = await within(connect(f"ws://127.0.0.1:{server.port}{path}", subprotocols=subprotocols, **kwargs))
        self.clients.append(ws)
        return ws

    async def plain(self, server: NanoSocket, *, path: str = "/", **kwargs: Any) -> Peer:
        """A client like the original nano-socket's: no subprotocol, no $connect."""
        return Peer(await self.websocket(server, path=path, **kwargs))

    async def v1_unconnected(self, server: NanoSocket, *, path: str = "/", **kwargs: Any) -> Peer:
        """A v1 client that has upgraded but not sent its $connect yet."""
        peer = Peer(await self.websocket(server, path=path, subprotocols=[V1], **kwargs))
        assert peer.ws.subprotocol == V1
        return peer

    async def v1(self, server: NanoSocket, auth: Any = None, *, path: str = "/", **kwargs: Any) -> Peer:
        """A v1 client past its connect step (its $connect answered with the socket id)."""
        peer = await self.v1_unconnected(server, path=path, **kwargs)
        peer.emit("$connect", auth)
        (answer,) = await peer.expect("$connect")
        assert set(answer) == {"id", "dedup_window"}
        peer.sid = answer["id"]
        return peer

    async def tcp(self, port: int, *, rcvbuf: int | None = None) -> RawTCP:
        """A plain TCP connection (``rcvbuf`` shrinks its receive buffer)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await within(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock)
        raw = RawTCP(reader, writer)
        self.raws.append(raw)
        return raw

    async def http(
        self, server: NanoSocket, path: str, method: str = "GET", headers: Iterable[tuple[str, str]] = ()
    ) -> Reply:
        """One plain HTTP/1.1 request; the server answers and closes."""
        reader, writer = await within(asyncio.open_connection("127.0.0.1", server.port))
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
            lines.extend(f"{name}: {value}" for name, value in headers)
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            return Reply(await within(reader.read()))
        finally:
            writer.close()

    async def aclose(self) -> None:
        for raw in self.raws:
            raw.abort()
        for ws in self.clients:
            ws.abort()
        for server in self.servers:
            await within(server.close())
