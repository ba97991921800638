"""The asyncio adapter between a TCP transport and the sans-I/O WebSocket core.

One class, ``WebSocket``, serves both sides. It feeds bytes to ``protocol.websocket``, writes what
comes back (one write per read batch: sends made while a read is handled are corked), runs the
opening and closing handshakes with deadlines, and applies flow control and the backpressure
policy. Protocol decisions stay in ``protocol/``; endpoint decisions (routing, Origin policy,
what to do with an open connection) are made by the endpoint that owns the connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import TYPE_CHECKING, Final, Protocol, cast

from ._speedups import enabled as speedups_enabled
from .errors import HandshakeError, InvalidHandshake, connection_closed
from .options import WebSocketOptions
from .protocol.deflate import ClientDeflate, OutgoingMessage, PerMessageDeflate
from .protocol.frames import CloseCode
from .protocol.handshake import (
    Request,
    RequestReader,
    ResponseReader,
    accept_response,
    check_response,
    http_response,
)
from .protocol.websocket import State, WebSocketConnection

__all__ = ["ClientSide", "Flusher", "Heartbeat", "SendStatus", "ServerEndpoint", "WebSocket"]

logger = logging.getLogger("nanosocket.transport")

#: Bytes sent outside a read that may wait for the end of the loop iteration before a write.
COALESCE_LIMIT = 64 * 1024
#: Connections a deferred flush writes per loop iteration. Between two batches the loop reads:
#: a broadcast to thousands does not hold up every other peer's input until its last write, and
#: broadcasts read meanwhile join the queued output of the recipients not yet written to (one
#: write carries several messages when broadcasts come faster than they can be written one by one).
FLUSH_BATCH = 64
#: Bytes one read takes at most: the size of the buffer the connections of a thread read into.
READ_BUFFER_SIZE = 256 * 1024
#: Messages held for ``recv()`` before reading from the peer pauses.
INBOX_HIGH_WATER = 64


class SendStatus(IntEnum):
    """What became of a send (truthy when the message was accepted: int truth, as DROPPED is 0)."""

    DROPPED = 0  #: not sent: the connection is not open, or the backpressure policy dropped it
    SUCCESS = 1  #: handed to the kernel, or to the single write of this read batch / loop iteration
    BACKPRESSURE = 2  #: accepted, but waits in the outbound buffer: the peer reads slowly


# Enum members as module constants: an attribute of an Enum class costs a metaclass lookup.
_DROPPED: Final = SendStatus.DROPPED
_SUCCESS: Final = SendStatus.SUCCESS
_BACKPRESSURE: Final = SendStatus.BACKPRESSURE
_OPEN: Final = State.OPEN
_CLOSED: Final = State.CLOSED


class ServerEndpoint(Protocol):
    """What a server-side WebSocket asks of the server that accepted its TCP connection."""

    options: WebSocketOptions
    heartbeat: Heartbeat | None
    flusher: Flusher

    def handle_request(self, ws: WebSocket, request: Request) -> None:
        """Answer a complete request head: ``ws.accept(...)``, ``ws.respond(...)`` or ``ws.reject(...)``."""

    def connection_lost(self, ws: WebSocket) -> None:
        """``ws``'s TCP connection is gone (whatever its state)."""


class ClientSide:
    """What a client-side WebSocket needs: its handshake (and the permessage-deflate offer in it, if
    any), the future it resolves, its heartbeat."""

    __slots__ = ("deflate", "flusher", "heartbeat", "key", "request", "subprotocols", "waiter")

    def __init__(
        self,
        request: bytes,
        key: str,
        subprotocols: tuple[str, ...],
        waiter: asyncio.Future[None],
        heartbeat: Heartbeat | None,
        *,
        deflate: ClientDeflate | None = None,
    ) -> None:
        self.request = request
        self.key = key
        self.subprotocols = subprotocols
        self.waiter = waiter
        self.heartbeat = heartbeat
        self.flusher = Flusher()
        self.deflate = deflate


class ReadBuffer(threading.local):
    """The buffer reads go into, one per thread, shared by the connections of its event loop.

    A read is handled, and what is left of it (a partial frame) copied out, before the loop
    makes the next one; a buffer of its own per connection would cost idle connections memory,
    and a new ``bytes`` per read (``data_received``) costs a copy and memory the allocator hands
    back to the kernel and faults in again.
    """

    def __init__(self) -> None:
        self.buffer = bytearray(READ_BUFFER_SIZE)
        self.view = memoryview(self.buffer)


read_buffer = ReadBuffer()


class PyWebSocketCore:
    """The per-message part of ``WebSocket``: reading, delivering text, sending frames, writing.

    This is the spec of its compiled twin (``_speedups/_transport``), which ``WebSocket`` extends
    when it was built; everything else of a connection is ``WebSocket``'s own.
    """

    __slots__ = (
        "_client",
        "_conn",
        "_corked",
        "_endpoint",
        "_flush_pending",
        "_idle_ticks",
        "_lost",
        "_on_message",
        "_options",
        "_transport",
    )

    _client: ClientSide | None
    _conn: WebSocketConnection | None
    _corked: bool
    _endpoint: ServerEndpoint | None
    _flush_pending: bool
    _idle_ticks: int
    _lost: bool
    _on_message: Callable[[str | bytes], object] | None
    _options: WebSocketOptions
    _transport: asyncio.Transport | None

    if TYPE_CHECKING:
        # What the core calls of the class that extends it (WebSocket).
        def _handshake_data(self, data: bytes) -> None: ...
        def _deliver(self, message: str | bytes) -> None: ...
        def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None: ...
        def abort_slow_consumer(self) -> None: ...
        def _flusher(self) -> Flusher: ...
        def _closed_by_protocol(self, conn: WebSocketConnection) -> None: ...

    # The event loop keeps what it calls of a protocol (a bound method each) for every connection:
    # get_buffer is static (one function for all), and there is no data_received (asyncio calls a
    # BufferedProtocol's buffer_updated instead), so a connection costs one bound method, not three.

    @staticmethod
    def get_buffer(sizehint: int) -> memoryview:
        """Where the next read goes (asyncio.BufferedProtocol): the thread's read buffer."""
        return read_buffer.view

    def buffer_updated(self, nbytes: int) -> None:
        data = read_buffer.view[:nbytes]
        if self._conn is None:
            self._handshake_data(bytes(data))  # kept across reads: a copy of its own
            return
        self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        """Bytes from the peer once the connection is open: a read, or what came with the handshake."""
        conn = self._conn
        assert conn is not None
        self._idle_ticks = 0
        self._corked = True
        try:
            conn.receive_data(data)
        finally:
            self._corked = False
        self._flush(conn)

    def text_received(self, text: str) -> None:
        callback = self._on_message
        if callback is None:
            self._deliver(text)
            return
        # _deliver's callback case, inline: one call less per message.
        try:
            callback(text)
        except Exception:
            logger.exception("on_message callback raised; closing with 1011")
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def send_frame(self, frame: bytes | OutgoingMessage, volatile: bool = False) -> SendStatus:
        """Send a ready-made server frame (the same bytes can go to every recipient of a broadcast).

        An OutgoingMessage is framed for this connection: compressed when it negotiated
        permessage-deflate and the message is big enough (a broadcast's compressed frame is built
        once for all), uncompressed otherwise.

        A ``volatile`` frame is dropped when the peer is over ``max_backpressure``, whatever the
        policy: it is a message worth nothing late (a position update, a typing indicator).
        """
        conn = self._conn
        if conn is None or conn.state is not _OPEN:
            return _DROPPED
        transport = self._transport
        if transport is None:
            return _DROPPED
        # buffered_amount and _over_backpressure, inline (this runs once per broadcast recipient).
        buffered = transport.get_write_buffer_size()
        if self._flush_pending:
            buffered += conn.pending_bytes
        options = self._options
        if buffered > options.max_backpressure:
            if not volatile and options.backpressure_policy == "close":
                self.abort_slow_consumer()
            return _DROPPED
        if type(frame) is bytes:
            conn.send_raw(frame)
        else:
            conn.send_message(frame)  # type: ignore[arg-type]  # an OutgoingMessage
        return self._flush_if_uncorked(conn)

    def _flush_if_uncorked(self, conn: WebSocketConnection) -> SendStatus:
        if self._corked:
            # A read batch is being handled: its single write follows.
            return _SUCCESS
        transport = self._transport
        assert transport is not None
        pending = conn.pending_bytes
        if pending >= COALESCE_LIMIT or pending >= self._options.max_backpressure >> 1:
            # A big message or a burst: hand it to the kernel now, so that the buffer (and
            # the backpressure it signals) is real before the backpressure limit is reached.
            self._flush(conn)
        elif not self._flush_pending:
            # Outside a read (a broadcast, a timer): write once at the end of this loop
            # iteration, together with whatever else is sent to this peer meanwhile.
            self._flush_pending = True
            endpoint = self._endpoint
            (endpoint.flusher if endpoint is not None else self._flusher()).add(self)
        # This iteration's own writes are not backpressure: only what the kernel has not taken.
        return _SUCCESS if not transport.get_write_buffer_size() else _BACKPRESSURE

    def _flush(self, conn: WebSocketConnection) -> None:
        """Write what the core queued; then act on a finished close."""
        data = conn.data_to_send()
        transport = self._transport
        if transport is None:
            return
        if data:
            transport.write(data)
        if conn.state is _CLOSED:
            self._closed_by_protocol(conn)


def py_flush_all(pending: list[PyWebSocketCore]) -> None:
    """Write the output of the first FLUSH_BATCH connections of ``pending`` and take them out;
    the rest (if any) in the next loop iteration, after its reads: the Flusher's work."""
    waiting = pending[:FLUSH_BATCH]
    del pending[:FLUSH_BATCH]
    if pending:
        # Scheduled before the writes: a send during them appends to a list whose flush is due.
        asyncio.get_running_loop().call_soon(py_flush_all, pending)
    for ws in waiting:
        ws._flush_pending = False
        conn = ws._conn
        if conn is None or ws._lost:
            continue
        try:
            ws._flush(conn)
        except Exception:
            logger.exception("deferred write failed")


if TYPE_CHECKING:
    WebSocketCore = PyWebSocketCore
    flush_all = py_flush_all
else:
    WebSocketCore, flush_all = PyWebSocketCore, py_flush_all
    if speedups_enabled():
        try:
            from ._speedups._transport import WebSocketCore, flush_all
        except ImportError:  # not compiled: the pure-Python versions above are used
            pass


class WebSocket(WebSocketCore, asyncio.BufferedProtocol):
    """One WebSocket connection over an asyncio transport, server or client side.

    Messages go to ``on_message`` (``str`` for text, ``bytes`` for binary) when it is set, else to
    an inbox read by ``await recv()``. ``on_close(code, reason)`` runs once, when the TCP
    connection is gone; 1006 means it dropped without a close frame.
    """

    __slots__ = (
        "_closed_waiter",
        "_early",
        "_inbox",
        "_inbox_waiter",
        "_lingering",
        "_reader",
        "_timer",
        "on_close",
        "subprotocol",
    )

    def __init__(
        self,
        options: WebSocketOptions,
        *,
        endpoint: ServerEndpoint | None = None,
        client: ClientSide | None = None,
    ) -> None:
        if (endpoint is None) == (client is None):
            raise ValueError("a WebSocket needs exactly one of endpoint (server) or client")
        self._options = options
        self._endpoint = endpoint
        self._client = client
        self._transport: asyncio.Transport | None = None
        self._conn: WebSocketConnection | None = None
        self._reader: RequestReader | ResponseReader | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._corked = False
        self._flush_pending = False
        self._early = b""
        self._idle_ticks = 0
        self._lost = False
        self._lingering = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._inbox: deque[str | bytes] | None = None
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._on_message: Callable[[str | bytes], object] | None = None
        #: Called once with (code, reason) when the connection is gone.
        self.on_close: Callable[[int, str], object] | None = None
        #: The subprotocol both sides agreed on, if any.
        self.subprotocol: str | None = None

    # ------------------------------------------------------------ properties

    @property
    def on_message(self) -> Callable[[str | bytes], object] | None:
        """Called with each message; None sends messages to ``recv()``.

        Setting it first hands over, in order, the messages waiting for ``recv()``: those that
        arrived before the callback could be set (with the upgrade request or the 101 response,
        or while ``connect()`` returned).
        """
        return self._on_message

    @on_message.setter
    def on_message(self, callback: Callable[[str | bytes], object] | None) -> None:
        self._on_message = callback
        inbox = self._inbox
        if callback is None or not inbox:
            return
        was_full = self._inbox_full()
        corked = self._corked
        self._corked = True  # replies to the queued messages go out in one write
        try:
            while inbox and self._on_message is callback:
                self._deliver(inbox.popleft())
        finally:
            self._corked = corked
        conn = self._conn
        if not corked and conn is not None:
            self._flush(conn)
        if was_full and not self._inbox_full() and self._transport is not None and not self._lost:
            self._transport.resume_reading()

    @property
    def is_client(self) -> bool:
        return self._client is not None

    @property
    def open(self) -> bool:
        """Whether messages can be sent now."""
        conn = self._conn
        return conn is not None and conn.state is State.OPEN

    @property
    def closed(self) -> bool:
        """Whether the TCP connection is gone."""
        return self._lost

    @property
    def close_code(self) -> int | None:
        """The close code once closing started (the peer's, ours, or 1006 when dropped)."""
        conn = self._conn
        if conn is None:
            return CloseCode.ABNORMAL if self._lost else None
        return conn.close_code

    @property
    def close_reason(self) -> str:
        conn = self._conn
        return conn.close_reason if conn is not None else ""

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port), while the transport exists."""
        transport = self._transport
        if transport is None:
            return None
        peer = transport.get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted for sending that the kernel has not taken yet."""
        transport = self._transport
        if transport is None:
            return 0
        conn = self._conn
        if self._flush_pending and conn is not None:
            # Sends made outside a read wait for the end of the loop iteration: they count too.
            return transport.get_write_buffer_size() + conn.pending_bytes
        return transport.get_write_buffer_size()

    @property
    def options(self) -> WebSocketOptions:
        return self._options

    @property
    def compression(self) -> PerMessageDeflate | None:
        """permessage-deflate as negotiated for this connection (None: messages go uncompressed)."""
        conn = self._conn
        return conn.deflate if conn is not None else None

    # ------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        options = self._options
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(options.handshake_timeout, self._handshake_timed_out)
        if self._client is not None:
            self._reader = ResponseReader(options.max_handshake_size, options.max_headers)
            self._transport.write(self._client.request)
        else:
            self._reader = RequestReader(options.max_handshake_size, options.max_headers)

    def eof_received(self) -> bool | None:
        # Returning None closes the transport: a half-closed WebSocket has nothing left to do.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._cancel_timer()
        conn = self._conn
        if conn is not None:
            conn.receive_eof()
            code, reason = conn.close_code or CloseCode.ABNORMAL, conn.close_reason
        else:
            code, reason = CloseCode.ABNORMAL, ""
        heartbeat = self._heartbeat()
        if heartbeat is not None:
            heartbeat.discard(self)
        client = self._client
        if client is not None and not client.waiter.done():
            client.waiter.set_exception(InvalidHandshake("connection closed during the opening handshake"))
        if self._endpoint is not None:
            self._endpoint.connection_lost(self)
        waiter = self._inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        closed = self._closed_waiter
        if closed is not None and not closed.done():
            closed.set_result(None)
        callback = self.on_close
        if callback is not None and conn is not None:
            try:
                callback(code, reason)
            except Exception:
                logger.exception("on_close callback raised")

    def pause_writing(self) -> None:
        # The peer reads slower than we write: stop reading its requests until it catches up.
        transport = self._transport
        if transport is not None and self._conn is not None and not self._lingering:
            transport.pause_reading()

    def resume_writing(self) -> None:
        transport = self._transport
        if transport is not None and not self._lost and not self._inbox_full():
            transport.resume_reading()

    # ------------------------------------------------- FrameHandler (protocol)

    def binary_received(self, data: bytes) -> None:
        self._deliver(data)

    def ping_received(self, payload: bytes) -> None:
        """The core has queued the pong already."""

    def pong_received(self, payload: bytes) -> None:
        """Any frame resets the idle counter; nothing else to do."""

    def _deliver(self, message: str | bytes) -> None:
        callback = self._on_message
        if callback is not None:
            try:
                callback(message)
            except Exception:
                logger.exception("on_message callback raised; closing with 1011")
                self.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        waiter = self._inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(inbox) >= INBOX_HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()

    def _inbox_full(self) -> bool:
        inbox = self._inbox
        return inbox is not None and len(inbox) >= INBOX_HIGH_WATER

    # --------------------------------------------------------------- sending

    def send(self, message: str | bytes | bytearray | memoryview) -> SendStatus:
        """Send one message: text for ``str``, binary otherwise."""
        if isinstance(message, str):
            return self.send_text(message)
        return self.send_bytes(message)

    def send_text(self, text: str) -> SendStatus:
        """Send one text message."""
        conn = self._conn
        if conn is None or conn.state is not _OPEN or self._over_backpressure():
            return _DROPPED
        conn.send_text(text)
        return self._flush_if_uncorked(conn)

    def send_bytes(self, data: bytes | bytearray | memoryview) -> SendStatus:
        """Send one binary message."""
        conn = self._conn
        if conn is None or conn.state is not _OPEN or self._over_backpressure():
            return _DROPPED
        conn.send_binary(data)
        return self._flush_if_uncorked(conn)

    def ping(self, payload: bytes = b"") -> SendStatus:
        """Send a ping; the peer's pong resets the idle counter like any frame."""
        conn = self._conn
        if conn is None or conn.state is not _OPEN:
            return _DROPPED
        conn.send_ping(payload)
        return self._flush_if_uncorked(conn)

    def _over_backpressure(self) -> bool:
        """Apply the backpressure policy; True when this send must not happen."""
        if self._transport is None:
            return True
        if self.buffered_amount <= self._options.max_backpressure:
            return False
        if self._options.backpressure_policy == "close":
            self.abort_slow_consumer()
        return True

    def abort_slow_consumer(self) -> None:
        """Close a peer that does not read fast enough (1008), bounded by close_timeout."""
        conn = self._conn
        if conn is None or conn.state is State.CLOSED:
            return
        conn.fail(CloseCode.POLICY_VIOLATION, "backpressure limit exceeded")
        if not self._corked:
            self._flush(conn)

    def _flusher(self) -> Flusher:
        endpoint = self._endpoint
        if endpoint is not None:
            return endpoint.flusher
        assert self._client is not None
        return self._client.flusher

    # --------------------------------------------------------------- receiving

    async def recv(self) -> str | bytes:
        """The next message (when ``on_message`` is not set); raises ConnectionClosed at the end.

        One coroutine at a time may wait in ``recv()``; a second one raises RuntimeError.
        """
        while True:
            inbox = self._inbox
            if inbox:
                message = inbox.popleft()
                if len(inbox) == INBOX_HIGH_WATER - 1 and self._transport is not None and not self._lost:
                    self._transport.resume_reading()
                return message
            if self._lost or (self._conn is not None and self._conn.state is State.CLOSED):
                raise connection_closed(self.close_code or CloseCode.ABNORMAL, self.close_reason)
            if self._inbox_waiter is not None:
                # One waiter slot: a second waiter would leave the first asleep for good.
                raise RuntimeError("another coroutine is already waiting in recv()")
            waiter = self._inbox_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._inbox_waiter = None

    # ---------------------------------------------------------------- closing

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection follows within ``close_timeout``."""
        conn = self._conn
        transport = self._transport
        if transport is None or self._lost:
            return
        if conn is None:
            transport.abort()
            return
        if conn.state is State.OPEN:
            conn.send_close(code, reason)
            if not self._corked:
                transport.write(conn.data_to_send())
            self._set_timer(self._options.close_timeout, self.abort)
        elif conn.state is State.CLOSED:
            self._closed_by_protocol(conn)

    async def wait_closed(self) -> None:
        """Return once the TCP connection is gone."""
        if self._lost:
            return
        waiter = self._closed_waiter
        if waiter is None:
            waiter = self._closed_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        transport = self._transport
        if transport is not None and not self._lost:
            transport.abort()

    def _closed_by_protocol(self, conn: WebSocketConnection) -> None:
        """The close handshake finished or the connection failed: end TCP as RFC 6455 §7.1.1 says."""
        transport = self._transport
        if transport is None or self._lost:
            return
        code = conn.close_code
        if self._lingering:
            return
        if self._client is None and code == CloseCode.MESSAGE_TOO_BIG and transport.can_write_eof():
            # The peer is most likely still sending the rest of a message too big. Closing with
            # its bytes unread would reset the connection, and a reset can destroy the close frame
            # before the peer reads it: half-close instead, and discard what still arrives (the
            # core ignores input once CLOSED) until the peer closes, or close_timeout.
            self._lingering = True
            transport.write_eof()
            if not transport.is_reading():
                transport.resume_reading()
        elif self._client is None or code not in (
            CloseCode.NORMAL,
            CloseCode.GOING_AWAY,
            CloseCode.NO_STATUS,
        ):
            # The server closes TCP first; a failing client does not wait either.
            transport.close()
        # Whoever waits for the other side waits at most close_timeout.
        self._set_timer(self._options.close_timeout, self.abort)

    # ----------------------------------------------------------- heartbeats

    def _heartbeat(self) -> Heartbeat | None:
        endpoint = self._endpoint
        if endpoint is not None:
            return endpoint.heartbeat
        assert self._client is not None
        return self._client.heartbeat

    def heartbeat_tick(self) -> None:
        """Called by the Heartbeat every idle_timeout / 2."""
        ticks = self._idle_ticks = self._idle_ticks + 1
        if ticks >= 3:
            # Silent for at least idle_timeout, although a ping went out half of it ago.
            conn = self._conn
            if conn is not None and conn.state is not State.CLOSED:
                conn.fail(CloseCode.INTERNAL_ERROR, "ping timeout")
                self._flush(conn)
            self._set_timer(self._options.close_timeout, self.abort)
        elif ticks == 2:
            self.ping()

    # ------------------------------------------------------------- handshake

    def _handshake_data(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            # The server endpoint is still deciding: keep early frames, within the handshake limit.
            if self._client is None and self._transport is not None and not self._transport.is_closing():
                self._early += data
                if len(self._early) > self._options.max_handshake_size:
                    self.abort()
            return
        try:
            head = reader.feed(data)
        except InvalidHandshake as exc:
            self._reader = None
            if self._client is not None:
                self._fail_client_handshake(exc)
            else:
                self.reject(exc.status, str(exc))
            return
        if head is None:
            return
        self._reader = None
        trailing = reader.trailing
        client = self._client
        if client is not None:
            assert not isinstance(head, Request)
            deflate = client.deflate
            try:
                self.subprotocol = check_response(head, client.key, client.subprotocols, deflate)
                codec = (
                    deflate.accept(head.headers.get_all("sec-websocket-extensions"))
                    if deflate is not None
                    else None
                )
            except HandshakeError as exc:
                self._fail_client_handshake(exc)
                return
            self._open(b"", codec)
            if not client.waiter.done():
                client.waiter.set_result(None)
            if trailing:
                self._feed_after_connect(trailing)
        else:
            assert isinstance(head, Request) and self._endpoint is not None
            # Frames that arrived with the upgrade request are fed once the endpoint accepts.
            self._early = trailing
            try:
                self._endpoint.handle_request(self, head)
            except Exception:
                logger.exception("request handler raised")
                self.reject(500, "internal error")
                return
            transport = self._transport
            if self._conn is None and transport is not None and not transport.is_closing():
                # The endpoint decides asynchronously: read nothing more until it has.
                transport.pause_reading()

    def _feed_after_connect(self, data: bytes) -> None:
        """Client side: frames that came with the 101 response are fed once the code awaiting
        ``connect()`` in the same Task has run (the waiter's callback was scheduled first), so
        that it can set ``on_message`` before they are handled: a message followed by a frame
        that fails the connection is then answered before the close, not dropped. Reading waits
        until then."""
        transport = self._transport
        if transport is None or self._lost:
            return
        transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._feed_early, data)

    def _feed_early(self, data: bytes) -> None:
        if self._transport is None or self._lost:
            return
        self._feed(data)
        transport = self._transport
        if transport is not None and not self._lost and not self._inbox_full():
            transport.resume_reading()

    def _fail_client_handshake(self, exc: HandshakeError) -> None:
        client = self._client
        assert client is not None
        if not client.waiter.done():
            client.waiter.set_exception(exc)
        self.abort()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._conn is None and not self._lost:
            if self._client is not None:
                self._fail_client_handshake(InvalidHandshake("opening handshake timed out"))
            else:
                self.abort()

    def accept(
        self,
        key: str,
        subprotocol: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        compression: tuple[PerMessageDeflate, str] | None = None,
    ) -> None:
        """Server side: answer 101 and open the connection (feeds frames that came early).

        ``compression``: the codec and Sec-WebSocket-Extensions answer of an accepted
        permessage-deflate offer (ServerDeflate.negotiate).
        """
        transport = self._transport
        if transport is None or self._lost or self._conn is not None:
            return
        self.subprotocol = subprotocol
        codec = None
        if compression is not None:
            codec, answer = compression
            headers = (*headers, ("Sec-WebSocket-Extensions", answer))
        transport.write(accept_response(key, subprotocol, headers))
        early, self._early = self._early, b""
        if not transport.is_reading():
            transport.resume_reading()
        self._open(early, codec)

    def respond(self, response: bytes) -> None:
        """Server side: answer a plain HTTP request with a complete response and close."""
        transport = self._transport
        self._reader = None
        self._early = b""
        if transport is not None and not self._lost:
            transport.write(response)
            transport.close()
            self._set_timer(self._options.close_timeout, self.abort)

    def reject(self, status: int, message: str = "", headers: Iterable[tuple[str, str]] = ()) -> None:
        """Server side: refuse the upgrade with an HTTP status and a short text body."""
        body = (message or "rejected").encode("utf-8", "replace") + b"\n"
        self.respond(http_response(status, body, headers=headers))

    def _open(self, trailing: bytes, deflate: PerMessageDeflate | None = None) -> None:
        self._cancel_timer()
        self._conn = WebSocketConnection(
            self, self._options, client=self._client is not None, deflate=deflate
        )
        heartbeat = self._heartbeat()
        if heartbeat is not None:
            heartbeat.add(self)
        if trailing:
            self._feed(trailing)

    # ----------------------------------------------------------------- timers

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        if self._timer is not None or self._lost:
            return
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None

    def __repr__(self) -> str:
        side = "client" if self._client is not None else "server"
        state = self._conn.state.name if self._conn is not None else "HANDSHAKE"
        return f"<WebSocket {side} {state} {self.remote_address}>"


class Flusher:
    """Writes, once per loop iteration, the output of every connection sent to outside a read.

    Many sends to one peer within an iteration (a burst of broadcasts) become one write; one
    scheduled callback serves every connection of an endpoint.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        # Emptied in place when flushed (so that a sender may hold on to it, see send_frame).
        self._pending: list[WebSocketCore] = []

    def add(self, ws: WebSocketCore) -> None:
        pending = self._pending
        if not pending:
            asyncio.get_running_loop().call_soon(flush_all, pending)
        pending.append(ws)


class Heartbeat:
    """One timer for many connections: every ``idle_timeout / 2`` each connection ticks.

    A connection that received anything since the last tick starts over; after one silent
    period it is pinged, after two it is closed (1011). One timer, not one per connection,
    keeps idle connections cheap.
    """

    __slots__ = ("_connections", "_handle", "_period")

    def __init__(self, idle_timeout: float) -> None:
        self._period = idle_timeout / 2
        # A dict as an ordered set: per member it costs half of what a set does.
        self._connections: dict[WebSocket, None] = {}
        self._handle: asyncio.TimerHandle | None = None

    def add(self, ws: WebSocket) -> None:
        self._connections[ws] = None
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def discard(self, ws: WebSocket) -> None:
        self._connections.pop(ws, None)
        if not self._connections and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        for ws in list(self._connections):
            try:
                ws.heartbeat_tick()
            except Exception:
                logger.exception("heartbeat tick failed")
        if self._connections:
            self._handle = asyncio.get_running_loop().call_later(self._period, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
