"""The client tests' kit: a small server speaking the server side of docs/protocol.md by hand.

``ProtocolServer`` is built on the raw ``nanosocket.serve()``: it answers ``$connect`` (or
refuses it), records every frame each connection sends, runs a few built-in events and lets a
test drive connections (emit, call the client with an ack, close with a code, drop the TCP
connection), stop, and restart on the same port. Envelopes are encoded here with orjson and
msgpack directly, not with the codec under test.

``Recorder`` records a client's local events. Waits are bounded by HANG_GUARD only to turn a
hang into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import orjson

from nanosocket import NanoSocketClient, WebSocket, WebSocketOptions, WebSocketServer, serve
from nanosocket.protocol.handshake import Request

HANG_GUARD = 10.0
V1 = "nanosocket.v1"


async def within(awaitable: Awaitable[Any]) -> Any:
    """Await with a hang guard (a failure instead of a hang, never a measurement)."""
    return await asyncio.wait_for(awaitable, HANG_GUARD)


async def until(condition: Callable[[], object]) -> None:
    """Wait (bounded) for a condition that changes through loop events."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - these conditions have no event to wait on
            await asyncio.sleep(0.002)

    await within(poll())


def decode(message: str | bytes) -> Any:
    if isinstance(message, str):
        return orjson.loads(message)
    return msgpack.unpackb(message, raw=False)


def _has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_bytes(item) for item in value)
    if isinstance(value, dict):
        return any(_has_bytes(item) for item in value.values())
    return False


class Conn:
    """The server side of one client connection."""

    def __init__(self, server: ProtocolServer, ws: WebSocket, request: Request, number: int) -> None:
        self.server = server
        self.ws = ws
        self.request = request
        self.id = f"sid-{number}"
        self.auth: Any = None
        self.accepted = False
        #: Every message the client sent, as it came (str for text frames, bytes for binary).
        self.frames: list[str | bytes] = []
        #: Every event the client sent after $connect, as (event, args, ack).
        self.events: list[tuple[str, list[Any], int | None]] = []
        #: Replies to the acks this server asked for: ack id -> envelope.
        self.replies: dict[int, dict[str, Any]] = {}
        self.closed: tuple[int, str] | None = None
        self._acks = itertools.count(100)
        ws.on_message = self._receive
        ws.on_close = self._on_close

    # ------------------------------------------------------------- sending

    def send(self, envelope: Any) -> None:
        if _has_bytes(envelope):
            self.ws.send_bytes(msgpack.packb(envelope, use_bin_type=True))
        else:
            self.ws.send_text(orjson.dumps(envelope).decode())

    def emit(self, event: str, *args: Any) -> None:
        self.send({"event": event, "data": list(args)})

    def ask(self, event: str, *args: Any) -> int:
        """Emit asking for an ack; return its id (the reply lands in ``replies``)."""
        ack = next(self._acks)
        self.send({"event": event, "data": list(args), "ack": ack})
        return ack

    async def reply(self, ack: int) -> dict[str, Any]:
        await until(lambda: ack in self.replies)
        return self.replies[ack]

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.ws.close(code, reason)

    def drop(self) -> None:
        self.ws.abort()

    # ----------------------------------------------------------- receiving

    def _on_close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def _receive(self, message: str | bytes) -> None:
        self.frames.append(message)
        self.server.frames_total += 1
        decoded = decode(message)
        envelopes = decoded if isinstance(decoded, list) else [decoded]
        for envelope in envelopes:
            self._envelope(envelope)

    def _envelope(self, envelope: dict[str, Any]) -> None:
        event = envelope.get("event")
        data = envelope.get("data", [])
        args = data if isinstance(data, list) else [data]
        ack = envelope.get("ack")
        if event is None:
            assert isinstance(ack, int)
            self.replies[ack] = envelope
            return
        if not self.accepted:
            assert event == "$connect", f"first message must be $connect, got {envelope!r}"
            self.auth = args[0] if args else None
            self.server.admit(self)
            return
        self.events.append((event, args, ack))
        self.server.log.append((self.id, event, args))
        handler = self.server.handlers.get(event)
        if handler is None:
            if ack is not None:
                self.send({"ack": ack, "error": {"message": f"no handler for event {event!r}"}})
            return
        try:
            result = handler(self, *args)
        except Exception as exc:
            if ack is not None:
                self.send({"ack": ack, "error": {"message": str(exc), "type": type(exc).__name__}})
            return
        if ack is not None and result is not NO_REPLY:
            self.send({"ack": ack, "data": result if isinstance(result, Results) else [result]})


class Results(list[Any]):
    """A handler result that is the whole ``data`` list of an ack reply (several values)."""


NO_REPLY: Any = object()


def _echo(conn: Conn, *args: Any) -> Results:
    conn.emit("echo", *args)
    return Results(args)


def _fail(conn: Conn, *args: Any) -> Any:
    raise ValueError("boom")


def _kick(conn: Conn, code: int = 1000, reason: str = "") -> Any:
    conn.close(code, reason)
    return NO_REPLY


def _drop(conn: Conn) -> Any:
    conn.drop()
    return NO_REPLY


class ProtocolServer:
    """A raw ``serve()`` server speaking just enough of the server side of the protocol.

    Built-in events: ``echo`` (emits ``echo`` back, acks with the same arguments), ``add``
    (acks the sum), ``fail`` (acks an error), ``silent`` (never answers), ``kick`` (closes with
    the given code), ``drop`` (drops the TCP connection).
    """

    def __init__(self) -> None:
        self.server: WebSocketServer | None = None
        self.port = 0
        self.connections: list[Conn] = []
        #: Every event of every connection in arrival order: (socket id, event, args).
        self.log: list[tuple[str, str, list[Any]]] = []
        self.frames_total = 0
        #: Decides each $connect: None accepts; (message, data) refuses with $connect_error.
        self.refuse: Callable[[Any], tuple[str, Any] | None] = lambda auth: None
        #: Refuse as an original server does: a plain ``connect_error`` event, then 1008.
        self.plain_refusal = False
        #: Whether the upgrade agrees to the nanosocket.v1 subprotocol (read by ``start``).
        self.speaks_v1 = True
        #: Whether $connect is answered at all (False: the client waits until its timeout).
        self.answer_connect = True
        #: Called with each accepted connection (to emit right after $connect, say).
        self.on_accept: Callable[[Conn], None] | None = None
        self.handlers: dict[str, Callable[..., Any]] = {
            "echo": _echo,
            "add": lambda conn, *numbers: sum(numbers),
            "fail": _fail,
            "silent": lambda conn, *args: NO_REPLY,
            "kick": _kick,
            "cut": _drop,
        }
        self._numbers = itertools.count(1)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def accepted(self) -> list[Conn]:
        return [conn for conn in self.connections if conn.accepted]

    async def start(self) -> ProtocolServer:
        """Listen (on the port of the previous run, if any)."""
        options = WebSocketOptions(subprotocols=(V1,) if self.speaks_v1 else ())
        self.server = await serve(self._connected, "127.0.0.1", self.port, options=options)
        self.port = self.server.port
        return self

    async def stop(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop listening and close every connection with ``code``."""
        server, self.server = self.server, None
        if server is not None:
            await within(server.close(code, reason))

    def _connected(self, ws: WebSocket, request: Request) -> None:
        self.connections.append(Conn(self, ws, request, next(self._numbers)))

    def admit(self, conn: Conn) -> None:
        refusal = self.refuse(conn.auth)
        if refusal is not None:
            message, data = refusal
            event = "connect_error" if self.plain_refusal else "$connect_error"
            conn.send({"event": event, "data": [{"message": message, "data": data}]})
            conn.close(1008, "connection refused")
            return
        if not self.answer_connect:
            return
        conn.accepted = True
        conn.send({"event": "$connect", "data": [{"id": conn.id}]})
        if self.on_accept is not None:
            self.on_accept(conn)

    async def connection(self, index: int = -1) -> Conn:
        """The accepted connection ``index`` (waits for the first one)."""
        await until(lambda: self.accepted)
        return self.accepted[index]

    def events(self, name: str | None = None) -> list[tuple[str, list[Any]]]:
        """(event, args) of every connection, in arrival order."""
        return [(event, args) for _, event, args in self.log if name is None or event == name]


class Recorder:
    """Records a client's events: ``calls`` holds (event, args) in order."""

    def __init__(self, client: NanoSocketClient, *events: str) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.states: list[tuple[str, str]] = []
        for event in events:
            client.on(event, self._recorder(event))

    def _recorder(self, event: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.calls.append((event, args))
            self.states.append((event, self.client.connection_state.value))

        return record

    def of(self, event: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == event]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def wait(self, event: str, count: int = 1) -> list[tuple[Any, ...]]:
        await until(lambda: len(self.of(event)) >= count)
        return self.of(event)


class Kit:
    """What one test started (the ``kit`` fixture): clients are disconnected, then servers stopped."""

    def __init__(self) -> None:
        self.servers: list[ProtocolServer] = []
        self.clients: list[NanoSocketClient] = []

    async def server(self, port: int = 0, *, speaks_v1: bool = True) -> ProtocolServer:
        server = ProtocolServer()
        server.port = port
        server.speaks_v1 = speaks_v1
        await server.start()
        self.servers.append(server)
        return server

    def client(self, url: str | ProtocolServer, **options: Any) -> NanoSocketClient:
        """A client with fast reconnection that connects when told (unless options say otherwise)."""
        options.setdefault("auto_connect", False)
        options.setdefault("reconnection_delay", 0.01)
        options.setdefault("reconnection_delay_max", 0.05)
        options.setdefault("timeout", HANG_GUARD)
        client = NanoSocketClient(url if isinstance(url, str) else url.url, **options)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            await within(client.disconnect())
        for server in self.servers:
            await server.stop()
