"""NanoSocketClient: the Python client of the NanoSocket protocol (docs/protocol.md).

One client keeps one logical connection to one server URL. A runner task owns its life:

* an attempt opens a WebSocket offering ``nanosocket.v1``, sends ``$connect`` (with ``auth``) and
  waits for the server's ``$connect`` (its socket id), all within ``timeout``; a
  ``$connect_error`` is a rejection (ConnectError), never retried;
* while connected, it reads frames and handles their envelopes in arrival order: events go to
  the handlers (an ``ack`` is answered by the first handler's return value or exception), ack
  replies resolve calls;
* after an unexpected loss (or a failed attempt) it waits ``reconnect_delay(n)`` and tries
  again, until it connects, is rejected, or ``reconnection_attempts`` are spent.

Emits and calls made while not connected wait in a bounded offline queue (the oldest is dropped
first, and reported) and are written, in order, right after the next ``$connect``; with
``retries``, calls are at-least-once and go one at a time (``outbox``). Handlers and acks use
``dispatch``, the logic the server's sockets use too.

States (``ConnectionState``; any other transition raises)::

    DISCONNECTED -> CONNECTING -> CONNECTED -> RECONNECTING -> CONNECTING -> ...
    CONNECTING -> RECONNECTING (attempt failed)    any but DISCONNECTED -> DISCONNECTED
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from enum import Enum
from functools import partial
from ssl import SSLContext
from typing import Any, Final, TypeVar, overload

from ..dispatch import AckTable, HandlerRegistry, call_handler, check_listen, fitting_args, pack_result
from ..endpoint import connect as open_websocket
from ..errors import (
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    NanoSocketError,
    ProtocolError,
    connection_closed,
)
from ..options import ClientOptions, MiB, WebSocketOptions
from ..protocol.envelope import (
    MAX_BATCH,
    PEER_RESERVED_EVENTS,
    check_emit_name,
    decode_binary,
    decode_text,
    encode,
    encode_ack,
    encode_ack_error,
    encode_event,
    iter_envelopes,
    read_envelope,
)
from ..protocol.handshake import parse_ws_url
from ..transport import WebSocket
from .outbox import Outbox, Outgoing

__all__ = [
    "V1_SUBPROTOCOL",
    "ConnectionState",
    "NanoSocketClient",
    "client_options",
    "disconnect_reason",
    "normalize_url",
    "reconnect_delay",
]

logger = logging.getLogger("nanosocket.client")

F = TypeVar("F", bound=Callable[..., Any])

#: The subprotocol a NanoSocket v1 client offers.
V1_SUBPROTOCOL: Final = "nanosocket.v1"

#: The transport options of a client that passes none: a full send buffer drops a send (emit
#: returns False) rather than closing the connection, and the buffer may hold a flushed queue.
DEFAULT_WEBSOCKET_OPTIONS: Final = WebSocketOptions(max_backpressure=1 * MiB, backpressure_policy="drop")


class ConnectionState(Enum):
    """Where a client is in its life."""

    DISCONNECTED = "disconnected"  #: not connected and not trying
    CONNECTING = "connecting"  #: an attempt is running (TCP, upgrade, ``$connect``)
    CONNECTED = "connected"  #: the server answered ``$connect``: events flow
    RECONNECTING = "reconnecting"  #: waiting for the next attempt after a loss or a failure


# An Enum member as a module constant: an attribute of an Enum class costs a metaclass lookup.
_CONNECTED: Final = ConnectionState.CONNECTED

_TRANSITIONS: Final[dict[ConnectionState, frozenset[ConnectionState]]] = {
    ConnectionState.DISCONNECTED: frozenset({ConnectionState.CONNECTING}),
    ConnectionState.CONNECTING: frozenset(
        {ConnectionState.CONNECTED, ConnectionState.RECONNECTING, ConnectionState.DISCONNECTED}
    ),
    ConnectionState.CONNECTED: frozenset({ConnectionState.RECONNECTING, ConnectionState.DISCONNECTED}),
    ConnectionState.RECONNECTING: frozenset({ConnectionState.CONNECTING, ConnectionState.DISCONNECTED}),
}

#: The disconnect reason of a connection the server closed (or that dropped), by close code.
_REASONS: Final = {
    1000: "server disconnect",
    1005: "server disconnect",
    1001: "server shutting down",
    1006: "transport close",
    1008: "policy violation",
}
#: Losses worth a reconnection. A server that closed on purpose (1000: it disconnected this
#: client) or for a policy (1008: rejection, slow consumer) would only do it again.
_RETRIED: Final = frozenset({"server shutting down", "transport close", "ping timeout", "transport error"})


def disconnect_reason(code: int, reason: str = "") -> str:
    """The ``disconnect`` reason of a connection that ended with ``code`` without our asking."""
    if code == 1011 and reason == "ping timeout":
        return "ping timeout"
    return _REASONS.get(code, "transport error")


def reconnect_delay(
    attempt: int,
    *,
    delay: float,
    delay_max: float,
    randomization_factor: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnection attempt ``attempt`` (1, 2, ...).

    ``min(delay * 2**(attempt-1), delay_max)``, randomized by up to ``randomization_factor``
    of itself either way, and kept within ``0 .. delay_max``.
    """
    if attempt < 1:
        raise ValueError(f"attempts are numbered from 1, got {attempt}")
    base = min(delay * 2.0 ** min(attempt - 1, 64), delay_max)
    if randomization_factor:
        base += base * randomization_factor * (2.0 * rand() - 1.0)
    return min(max(base, 0.0), delay_max)


def normalize_url(url: str) -> str:
    """The ws:// or wss:// URL a client connects to (http:// and https:// are mapped)."""
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        url = ("ws" if scheme.lower() == "http" else "wss") + "://" + rest
    try:
        parse_ws_url(url)
    except InvalidHandshake as exc:
        raise ConfigurationError(
            f"url must be a ws://, wss://, http:// or https:// URL, got {url!r}"
        ) from exc
    return url


def client_options(
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    **values: Any,
) -> ClientOptions:
    """Build ClientOptions from the client's keyword arguments (headers as a mapping or pairs)."""
    pairs: tuple[tuple[str, str], ...] = ()
    if headers is not None:
        try:
            items = headers.items() if isinstance(headers, Mapping) else headers
            pairs = tuple((name, value) for name, value in items)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError("headers must be a mapping or (name, value) pairs") from exc
    unknown = sorted(set(values) - set(ClientOptions.__dataclass_fields__))
    if unknown:
        raise ConfigurationError(f"unknown client option(s): {', '.join(unknown)}")
    return ClientOptions(headers=pairs, **values)


class _Unset(Enum):
    UNSET = 0


_UNSET: Final = _Unset.UNSET


#: Events the client raises for its own handlers, and how many arguments each passes.
CLIENT_LOCAL_EVENTS: Final = {
    "connect": 0,
    "disconnect": 1,
    "connecting": 0,
    "reconnecting": 1,
    "reconnect_failed": 0,
    "connect_error": 1,
    "error": 1,
    "drop": 2,
}


def _first_dict(args: list[Any]) -> dict[str, Any]:
    return args[0] if args and isinstance(args[0], dict) else {}


class NanoSocketClient:
    """A NanoSocket client: events, acknowledgements, reconnection and an offline queue.

    ``NanoSocketClient(url, *, auto_connect=True, reconnection=True, reconnection_attempts=None,
    reconnection_delay=1.0, reconnection_delay_max=30.0, randomization_factor=0.5, timeout=20.0,
    auth=None, headers=None, max_queue_size=1000, max_queue_bytes=4 MiB, max_queue_age=300.0,
    ack_timeout=None, retries=0, options=None, compression=False, ssl=None)``; the options are
    those of ``ClientOptions``. Invalid values raise ConfigurationError naming the option.
    ``ssl`` is the TLS context of a wss:// URL (default: the system's, which verifies the server's
    certificate).
    """

    __slots__ = (
        "_acks",
        "_batch",
        "_batch_depth",
        "_connect_frame",
        "_deliberate",
        "_epoch",
        "_handlers",
        "_inflight",
        "_local_cause",
        "_offset",
        "_options",
        "_outbox",
        "_pid",
        "_ready",
        "_reconnect_attempt",
        "_recovered",
        "_runner",
        "_span_checked",
        "_state",
        "_url",
        "_ws",
        "_ws_options",
        "id",
    )

    def __init__(
        self,
        url: str,
        *,
        auto_connect: bool = True,
        reconnection: bool = True,
        reconnection_attempts: int | None = None,
        reconnection_delay: float = 1.0,
        reconnection_delay_max: float = 30.0,
        randomization_factor: float = 0.5,
        timeout: float = 20.0,
        auth: Any = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        max_queue_size: int = 1000,
        max_queue_bytes: int = 4 * MiB,
        max_queue_age: float | None = 300.0,
        ack_timeout: float | None = None,
        retries: int = 0,
        options: WebSocketOptions | None = None,
        compression: bool = False,
        ssl: SSLContext | None = None,
    ) -> None:
        self._url = normalize_url(url)
        self._options = client_options(
            auto_connect=auto_connect,
            reconnection=reconnection,
            reconnection_attempts=reconnection_attempts,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
            randomization_factor=randomization_factor,
            timeout=timeout,
            auth=auth,
            headers=headers,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            max_queue_age=max_queue_age,
            ack_timeout=ack_timeout,
            retries=retries,
            options=options,
            compression=compression,
            ssl=ssl,
        )
        if ssl is not None and not self._url.startswith("wss://"):
            raise ConfigurationError(f"ssl is for wss:// (or https://) URLs, got {self._url!r}")
        self._ws_options = options if options is not None else DEFAULT_WEBSOCKET_OPTIONS
        if compression and self._ws_options.compression == "off":
            # permessage-deflate with context takeover both ways (options may choose "shared").
            self._ws_options = replace(self._ws_options, compression="dedicated")
        try:
            payload, binary = encode({"event": "$connect", "data": [auth]})
        except TypeError as exc:
            raise ConfigurationError(f"auth must be a JSON (or msgpack) value, got {auth!r}") from exc
        self._connect_frame = Outgoing(payload, binary)
        self._state = ConnectionState.DISCONNECTED
        #: The socket id the server gave this connection (None while not connected).
        self.id: str | None = None
        self._handlers = HandlerRegistry()
        self._acks = AckTable()
        self._inflight: set[int] = set()  # ack ids of plain calls written on the current connection
        self._outbox = Outbox(self._options, self._acks, self._report_drop)
        self._span_checked = False
        self._batch: list[Outgoing] | None = None
        self._batch_depth = 0
        self._ws: WebSocket | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._reconnect_attempt = 0
        self._deliberate = False
        self._local_cause: str | None = None
        # Connection-state recovery: the session the server offered (private id, its log's epoch)
        # and the offset of the last message received; sent back in the next $connect.
        self._pid: str | None = None
        self._epoch: str | None = None
        self._offset = 0
        self._recovered = False
        if auto_connect:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self._start()

    # ------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        return self._url

    @property
    def options(self) -> ClientOptions:
        return self._options

    @property
    def connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    @property
    def connection_state(self) -> ConnectionState:
        return self._state

    @property
    def recovered(self) -> bool:
        """True when the current connection recovered the previous one's session: the same id
        and rooms, and the messages sent meanwhile (delivered right after ``connect``); False on
        a fresh session (docs/guarantees.md)."""
        return self._recovered

    @property
    def reconnect_attempt(self) -> int:
        """The number of the current reconnection attempt (0 when connected or not retrying)."""
        return self._reconnect_attempt

    @property
    def dropped(self) -> int:
        """Messages that were never written: pushed out of the offline queue (over
        ``max_queue_size`` or ``max_queue_bytes``), expired in it (``max_queue_age``), or refused
        by a full send buffer. Each is also reported: a call fails with MessageDropped, an emit
        goes to the ``drop`` handlers."""
        return self._outbox.dropped

    @property
    def queued(self) -> int:
        """Messages waiting unsent: emits and calls in the offline queue, and at-least-once calls
        waiting for their turn."""
        return self._outbox.queued

    @property
    def pending(self) -> int:
        """At-least-once calls not answered yet (the one in flight included)."""
        return self._outbox.pending

    # ------------------------------------------------------------ connecting

    async def connect(self) -> None:
        """Connect (if not connected) and return once the server has accepted the connection.

        Raises ConnectError when the server refuses, and the last error of the attempts when
        they are spent (``reconnection_attempts``, or at once without ``reconnection``).
        """
        runner = self._runner
        if runner is not None and (self._deliberate or self._state is ConnectionState.DISCONNECTED):
            await asyncio.wait([runner])  # the previous run is ending: start afresh
        if self._state is ConnectionState.CONNECTED:
            return
        if self._runner is None:
            self._start()
        ready = self._ready
        assert ready is not None
        await asyncio.shield(ready)

    async def disconnect(self) -> None:
        """Close the connection (1000) and stop reconnecting until ``connect()`` is called.

        Pending calls fail with ConnectionClosed; queued emits stay queued for the next connect.
        """
        runner = self._runner
        if runner is None:
            self._outbox.fail_calls(ConnectionClosedOK(1000, "client disconnect"))
            return
        self._deliberate = True
        self._pid = None  # a deliberate disconnect ends the session
        ws = self._ws
        if self._state is ConnectionState.CONNECTED and ws is not None:
            ws.close(1000, "client disconnect")
        else:
            runner.cancel()
        await asyncio.wait([runner])
        if ws is not None:
            await ws.wait_closed()

    async def __aenter__(self) -> NanoSocketClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    # --------------------------------------------------------------- sending

    def emit(self, event: str, *args: Any) -> bool:
        """Send ``event`` with ``args``; while not connected, queue it for the next connection.

        False when the message was dropped (a full send buffer, or ``max_queue_size=0``).
        Arguments holding bytes go as one binary (msgpack) frame.
        """
        check_emit_name(event)
        payload, binary = encode_event(event, args)
        ws = self._ws
        if not binary and self._batch is None and self._state is _CONNECTED and ws is not None and ws.open:
            # The common case of _send_or_queue, inline: one text frame written now (no item to
            # keep unless it is dropped).
            if ws.send_text(payload.decode()):
                return True
            self._outbox.drop(Outgoing(payload, binary, event), "send_buffer_full")
            return False
        return self._send_or_queue(Outgoing(payload, binary, event))

    async def call(
        self,
        event: str,
        *args: Any,
        timeout: float | _Unset | None = _UNSET,
        retries: int | None = None,
    ) -> Any:
        """Emit ``event`` asking for an acknowledgement and return the server handler's result.

        One result is returned as is, none as None, several as a tuple. Raises AckTimeoutError
        after ``timeout`` seconds (default ``ack_timeout``; None waits as long as it takes),
        AckError when the server's handler raised, ConnectionClosed when the connection ends
        first (MessageDropped when the call was dropped unsent). While not connected the call is
        queued; its timeout runs from now.

        With ``retries`` (default: the client's ``retries`` option) above 0 the call is
        **at-least-once**: it carries a message id, and a copy is sent again each time
        ``timeout`` passes without a reply, up to ``retries`` more, across reconnections; the
        server runs the handler once and answers every copy with its reply. Such calls go one at
        a time, in order. DeliveryTimeoutError (an AckTimeoutError) when no copy was answered:
        the handler may or may not have run.
        """
        check_emit_name(event)
        if timeout is _UNSET:
            timeout = self._options.ack_timeout
        elif timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if retries is None:
            retries = self._options.retries
        elif isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if retries:
            if timeout is None:
                raise ValueError("retries needs a timeout: the seconds each copy waits for its reply")
            return await self._call_once(event, args, timeout, retries)
        acks = self._acks
        ack, future = acks.create(timeout)
        try:
            payload, binary = encode_event(event, args, ack)
        except BaseException:
            acks.discard(ack)
            raise
        future.add_done_callback(partial(self._forget, ack))
        # A dropped call (full queue or send buffer) has its future failed already.
        self._send_or_queue(Outgoing(payload, binary, event, ack, future), batchable=False)
        try:
            return await future
        except asyncio.CancelledError:
            acks.discard(ack)
            raise

    async def _call_once(self, event: str, args: tuple[Any, ...], timeout: float, retries: int) -> Any:
        """An at-least-once call: lined up in the outbox, which sends its copies."""
        acks = self._acks
        ack, future = acks.create(None)  # the outbox times each copy
        outbox = self._outbox
        mid = outbox.new_mid()
        try:
            payload, binary = encode({"event": event, "data": args, "ack": ack, "mid": mid})
        except BaseException:
            acks.discard(ack)
            raise
        item = Outgoing(payload, binary, event, ack, future)
        item.mid = mid
        item.retries = retries
        item.timeout = timeout
        collected = self._batch
        if collected:
            # What was collected before the call goes first.
            self._batch = []
            self._deliver(collected)
        outbox.submit(item)
        try:
            return await future
        except asyncio.CancelledError:
            acks.discard(ack)
            raise

    def _send_copy(self, ws: WebSocket, item: Outgoing) -> None:
        """Write one copy of an at-least-once call (refused by a full buffer: retried later)."""
        if item.binary:
            ws.send_bytes(item.payload)
        else:
            ws.send_text(item.payload.decode())

    def _report_drop(self, why: str, event: str) -> None:
        self._emit_local("drop", why, event)

    @contextmanager
    def batch(self) -> Iterator[NanoSocketClient]:
        """Collect the emits made inside and send them as one frame holding a JSON array.

        Batches over ``MAX_BATCH`` envelopes (or the payload limit) are split; binary emits go
        as frames of their own, in order. A call made inside sends what was collected first.
        """
        self._batch_depth += 1
        if self._batch is None:
            self._batch = []
        try:
            yield self
        finally:
            self._batch_depth -= 1
            if not self._batch_depth:
                collected, self._batch = self._batch, None
                if collected:
                    self._deliver(collected)

    def _send_or_queue(self, item: Outgoing, *, batchable: bool = True) -> bool:
        collected = self._batch
        if collected is not None:
            if batchable:
                collected.append(item)
                return True
            if collected:
                self._batch = []
                self._deliver(collected)
        return self._deliver([item])

    def _deliver(self, items: list[Outgoing]) -> bool:
        """Write ``items`` now when connected, else queue them; False if any was dropped."""
        ws = self._ws
        if self._state is ConnectionState.CONNECTED and ws is not None and ws.open:
            return self._write(ws, items)
        queued = True
        for item in items:
            queued = self._enqueue(item) and queued
        return queued

    def _enqueue(self, item: Outgoing) -> bool:
        return self._outbox.enqueue(item)

    def _write(self, ws: WebSocket, items: Iterable[Outgoing]) -> bool:
        """Write ``items`` in order: JSON envelopes grouped in batch frames, binary ones alone."""
        limit = self._ws_options.max_payload_length
        run: list[Outgoing] = []
        size = 1
        written = True
        for item in items:
            if item.abandoned:
                continue
            if run and (item.binary or len(run) >= MAX_BATCH or size + len(item.payload) + 1 > limit):
                written = self._send(ws, run) and written
                run, size = [], 1
            if item.binary:
                written = self._send(ws, [item]) and written
            else:
                run.append(item)
                size += len(item.payload) + 1
        if run:
            written = self._send(ws, run) and written
        return written

    def _send(self, ws: WebSocket, items: list[Outgoing]) -> bool:
        """One frame: a single envelope, or a JSON array of several."""
        if len(items) == 1:
            item = items[0]
            status = ws.send_bytes(item.payload) if item.binary else ws.send_text(item.payload.decode())
        else:
            status = ws.send_text((b"[" + b",".join(item.payload for item in items) + b"]").decode())
        if status:
            for item in items:
                if item.ack is not None:
                    self._inflight.add(item.ack)
            return True
        for item in items:
            self._outbox.drop(item, "send_buffer_full")
        return False

    def _forget(self, ack: int, future: asyncio.Future[Any]) -> None:
        self._inflight.discard(ack)

    # ---------------------------------------------------------------- events

    @overload
    def on(self, event: str) -> Callable[[F], F]: ...

    @overload
    def on(self, event: str, handler: F) -> F: ...

    def on(self, event: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register a handler for a server event or a local one (``connect``, ``disconnect``,
        ``connecting``, ``reconnecting``, ``reconnect_failed``, ``connect_error``, ``error``);
        usable as ``@client.on(event)``. Sync or async; server events pass their arguments."""
        check_listen(event, CLIENT_LOCAL_EVENTS, handler)
        return self._handlers.register(event, handler)

    @overload
    def once(self, event: str) -> Callable[[F], F]: ...

    @overload
    def once(self, event: str, handler: F) -> F: ...

    def once(self, event: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register a handler that runs for the next ``event`` only."""
        check_listen(event, CLIENT_LOCAL_EVENTS, handler)
        return self._handlers.register(event, handler, once=True)

    def off(self, event: str | None = None, handler: Callable[..., Any] | None = None) -> None:
        """Remove ``handler`` from ``event``, every handler of ``event``, or every handler."""
        self._handlers.off(event, handler)

    def _emit_local(self, event: str, *args: Any) -> None:
        """Run the handlers of a local event; what they raise goes to ``error`` and the log."""
        handlers = self._handlers.get(event)
        if handlers is None:
            return
        done = partial(self._local_done, event)
        for handler in tuple(handlers):
            call_handler(handler, fitting_args(handler, args), done)

    def _local_done(self, event: str, result: Any, error: BaseException | None) -> None:
        if error is None or isinstance(error, asyncio.CancelledError):
            return
        if event == "error":
            logger.error("an 'error' handler raised", exc_info=error)
            return
        self._handler_failed(event, error)

    def _handler_failed(self, event: str, error: BaseException) -> None:
        logger.error("handler of %r raised", event, exc_info=error)
        self._emit_local("error", error)

    # ------------------------------------------------------------ the runner

    def _transition(self, state: ConnectionState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"illegal client state transition {self._state.name} -> {state.name}")
        self._state = state

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._deliberate = False
        self._transition(ConnectionState.CONNECTING)
        self._ready = loop.create_future()
        self._runner = loop.create_task(self._run(), name=f"NanoSocketClient {self._url}")

    def _may_retry(self, attempts_done: int) -> bool:
        options = self._options
        limit = options.reconnection_attempts
        return options.reconnection and (limit is None or attempts_done < limit)

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            error = await self._lifecycle()
        except asyncio.CancelledError:
            error = ConnectionClosedOK(1000, "client disconnect")
            raise
        except Exception as exc:
            logger.exception("the client's connection runner failed")
            error = exc
        finally:
            self._finish(error)

    async def _lifecycle(self) -> BaseException:
        """Connect, read, reconnect, until stopped; return the error that ended it."""
        attempt = 0
        while True:
            if self._state is ConnectionState.RECONNECTING:
                self._transition(ConnectionState.CONNECTING)
            self._emit_local("connecting")
            try:
                ws, socket_id, rest = await self._attempt()
            except ConnectError as exc:
                self._emit_local("connect_error", exc)
                return exc
            except (OSError, TimeoutError, NanoSocketError) as exc:
                self._emit_local("connect_error", exc)
                if isinstance(exc, ConnectionClosed) and exc.code == 1008:
                    return exc
                if not self._may_retry(attempt):
                    if self._options.reconnection:
                        self._emit_local("reconnect_failed")
                    return exc
                attempt += 1
                await self._retry(attempt)
                continue
            attempt = 0
            self._connected(ws, socket_id, rest)
            code, reason = await self._read(ws)
            closed = connection_closed(code, reason)
            why = (
                "client disconnect"
                if self._deliberate
                else self._local_cause or disconnect_reason(code, reason)
            )
            retry = why in _RETRIED and self._may_retry(0)
            self._lost(closed, why, retry)
            if not retry:
                if why in _RETRIED and self._options.reconnection:
                    self._emit_local("reconnect_failed")
                return closed
            attempt = 1
            await self._retry(attempt)

    async def _retry(self, attempt: int) -> None:
        if self._state is ConnectionState.CONNECTING:
            self._transition(ConnectionState.RECONNECTING)
        self._reconnect_attempt = attempt
        self._emit_local("reconnecting", attempt)
        options = self._options
        await asyncio.sleep(
            reconnect_delay(
                attempt,
                delay=options.reconnection_delay,
                delay_max=options.reconnection_delay_max,
                randomization_factor=options.randomization_factor,
            )
        )

    async def _attempt(self) -> tuple[WebSocket, str | None, Sequence[Any]]:
        """One connection attempt within ``timeout``: the WebSocket, ``$connect`` and its answer."""
        options = self._options
        ws: WebSocket | None = None
        try:
            async with asyncio.timeout(options.timeout):
                ws = await open_websocket(
                    self._url,
                    headers=options.headers,
                    subprotocols=(V1_SUBPROTOCOL,),
                    timeout=options.timeout,
                    options=self._ws_options,
                    ssl=options.ssl,
                )
                self._ws = ws
                if ws.subprotocol != V1_SUBPROTOCOL:
                    raise InvalidHandshake(f"the server did not accept the {V1_SUBPROTOCOL} subprotocol")
                frame = self._connect_frame if self._pid is None else self._recovery_frame()
                if not (
                    ws.send_bytes(frame.payload) if frame.binary else ws.send_text(frame.payload.decode())
                ):
                    raise ConnectionClosedError(ws.close_code or 1006, "could not send $connect")
                return await self._handshake(ws)
        except ConnectError:
            self._ws = None
            assert ws is not None
            ws.close()  # the server closes with 1008 right after its refusal
            raise
        except TimeoutError as exc:
            self._abandon(ws)
            raise TimeoutError(f"could not connect to {self._url} within {options.timeout} s") from exc
        except BaseException:
            self._abandon(ws)
            raise

    def _recovery_frame(self) -> Outgoing:
        """``$connect`` asking to recover the session: ``[auth, {pid, epoch, offset}]`` (a server
        without recovery reads the auth and ignores the rest)."""
        session = {"pid": self._pid, "epoch": self._epoch, "offset": self._offset}
        payload, binary = encode({"event": "$connect", "data": [self._options.auth, session]})
        return Outgoing(payload, binary)

    def _session_offered(self, answer: dict[str, Any]) -> None:
        """Read the recovery part of the server's answer to ``$connect`` (none from a server
        without recovery)."""
        self._window_told(answer.get("dedup_window"))
        pid = answer.get("pid")
        self._recovered = recovered = answer.get("recovered") is True and self._pid is not None
        if not isinstance(pid, str):
            self._pid = self._epoch = None
            return
        self._pid = pid
        if not recovered:
            # A fresh session: positions count from the server's latest offset.
            epoch, offset = answer.get("epoch"), answer.get("offset")
            self._epoch = epoch if isinstance(epoch, str) else None
            self._offset = offset if type(offset) is int else 0

    def _window_told(self, window: object) -> None:
        """The server's de-duplication window: no copy of an at-least-once call is sent after
        it; a client whose retries span more is told once (``error``)."""
        if not isinstance(window, (int, float)) or isinstance(window, bool) or not window > 0:
            self._outbox.window = None
            return
        self._outbox.window = float(window)
        options = self._options
        if options.retries and options.ack_timeout is not None and not self._span_checked:
            self._span_checked = True
            span = (options.retries + 1) * options.ack_timeout
            if span >= window:
                error = ConfigurationError(
                    f"retries={options.retries} with ack_timeout={options.ack_timeout} span {span:g} s, "
                    f"not less than the server's de-duplication window ({window:g} s): copies that "
                    "would arrive after it are not sent (DeliveryTimeoutError instead)"
                )
                logger.warning("%s", error)
                self._emit_local("error", error)

    def _abandon(self, ws: WebSocket | None) -> None:
        self._ws = None
        if ws is not None:
            ws.abort()

    async def _handshake(self, ws: WebSocket) -> tuple[WebSocket, str | None, Sequence[Any]]:
        """Read up to the server's answer to ``$connect``; return what followed it in its frame."""
        while True:
            message = await ws.recv()
            try:
                envelopes = iter_envelopes(
                    decode_text(message) if isinstance(message, str) else decode_binary(message)
                )
                for index, envelope in enumerate(envelopes):
                    event, args, _, _ = read_envelope(envelope)
                    if event == "$connect":
                        answer = _first_dict(args)
                        self._session_offered(answer)
                        socket_id = answer.get("id")
                        return ws, socket_id if isinstance(socket_id, str) else None, envelopes[index + 1 :]
                    if event in ("$connect_error", "connect_error"):
                        detail = _first_dict(args)
                        raise ConnectError(
                            str(detail.get("message") or "connection refused"), detail.get("data")
                        )
                    if event == "$error":
                        self._emit_local("error", _remote_error(args))
                    # Nothing else comes before the answer to $connect: ignored.
            except ProtocolError as exc:
                ws.close(exc.close_code, str(exc)[:120])
                raise

    def _connected(self, ws: WebSocket, socket_id: str | None, rest: Sequence[Any]) -> None:
        self._ws = ws
        self.id = socket_id
        self._reconnect_attempt = 0
        self._local_cause = None
        self._transition(ConnectionState.CONNECTED)
        outbox = self._outbox
        items = outbox.take_queue()
        if items:
            self._write(ws, items)
        outbox.connected(partial(self._send_copy, ws))
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)
        self._emit_local("connect")
        if rest:
            self._receive_envelopes(ws, rest)

    async def _read(self, ws: WebSocket) -> tuple[int, str]:
        """Handle the server's frames until the connection ends; return its close code and reason."""
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                return exc.code, exc.reason
            if self._local_cause is None:
                try:
                    decoded = decode_text(message) if isinstance(message, str) else decode_binary(message)
                except ProtocolError as exc:
                    self._violation(ws, exc)
                    continue
                self._receive_envelopes(ws, (decoded,))

    def _lost(self, closed: ConnectionClosed, why: str, retry: bool) -> None:
        self._ws = None
        self.id = None
        self._outbox.disconnected()
        self._fail_inflight(closed)
        if retry:
            self._transition(ConnectionState.RECONNECTING)
            self._ready = asyncio.get_running_loop().create_future()
        else:
            self._transition(ConnectionState.DISCONNECTED)
        self._emit_local("disconnect", why)

    def _finish(self, error: BaseException | None) -> None:
        """The runner ends: whatever it held is released and whoever waits is told."""
        ws = self._ws
        self._ws = None
        if ws is not None and ws.close_code is None:
            ws.abort()
        was_connected = self._state is ConnectionState.CONNECTED
        if self._state is not ConnectionState.DISCONNECTED:
            self._transition(ConnectionState.DISCONNECTED)
        self.id = None
        self._reconnect_attempt = 0
        if isinstance(error, ConnectionClosed):
            closed = error
        else:
            closed = ConnectionClosedError(1006, f"not connected: {error}")
            closed.__cause__ = error
        self._fail_inflight(closed)
        self._outbox.fail_calls(closed)
        ready = self._ready
        self._ready = None
        if ready is not None and not ready.done():
            ready.set_exception(error if error is not None else closed)
            ready.exception()  # nobody may be waiting (auto_connect): no "never retrieved" warning
        if self._runner is asyncio.current_task():
            self._runner = None
        if was_connected:
            self._emit_local("disconnect", "client disconnect")

    def _fail_inflight(self, error: ConnectionClosed) -> None:
        inflight, self._inflight = self._inflight, set()
        for ack in inflight:
            self._acks.fail(ack, error)

    # --------------------------------------------------------------- receiving

    def _violation(self, ws: WebSocket, error: ProtocolError) -> None:
        """The server sent something malformed: close with the error's code (then reconnect)."""
        logger.warning("closing the connection to %s: %s", self._url, error)
        self._local_cause = "transport error"
        ws.close(error.close_code, str(error)[:120])
        self._emit_local("error", error)

    def _receive_envelopes(self, ws: WebSocket, decoded: Iterable[Any]) -> None:
        try:
            for frame in decoded:
                for envelope in iter_envelopes(frame):
                    self._envelope(ws, envelope)
                    if self._local_cause is not None:
                        return
        except ProtocolError as exc:
            self._violation(ws, exc)

    def _envelope(self, ws: WebSocket, envelope: Any) -> None:
        if type(envelope) is dict and "o" in envelope:
            # A logged message (recovery on): each offset is handled once, in order.
            offset = envelope["o"]
            if type(offset) is int:
                if offset <= self._offset:
                    return
                self._offset = offset
        event, args, ack, error = read_envelope(envelope)
        if event is None:
            assert ack is not None
            if not self._acks.resolve(ack, args, error):
                logger.debug("ignoring the reply to ack %d: no longer pending", ack)
            return
        if event[0] == "$" or event in PEER_RESERVED_EVENTS:
            self._protocol_event(ws, event, args, ack)
            return
        handlers = self._handlers.get(event)
        if handlers is None:
            if ack is not None:
                self._send_ack_error(ws, ack, f"no handler for event {event!r}")
            return
        for handler in tuple(handlers):
            if ack is not None:
                # The first handler answers the request; the others just run.
                call_handler(handler, args, partial(self._answer, ws, ack, event))
                ack = None
            else:
                call_handler(handler, args, partial(self._handled, event))

    def _protocol_event(self, ws: WebSocket, event: str, args: list[Any], ack: int | None) -> None:
        if event == "$error":
            self._emit_local("error", _remote_error(args))
            return
        if event == "$connect":
            return  # a repeated answer to our $connect: nothing new
        # A reserved or unknown protocol name is never dispatched (docs/protocol.md §3).
        logger.warning("the server sent the reserved event %r; not dispatched", event)
        if ack is not None:
            self._send_ack_error(ws, ack, f"event name {event!r} is reserved")
        self._emit_local("error", NanoSocketError(f"the server sent the reserved event {event!r}"))

    def _handled(self, event: str, result: Any, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, asyncio.CancelledError):
            self._handler_failed(event, error)

    def _answer(self, ws: WebSocket, ack: int, event: str, result: Any, error: BaseException | None) -> None:
        """Answer the server's request ``ack`` on the connection it came on."""
        if error is None:
            try:
                payload, binary = encode_ack(ack, pack_result(result))
            except TypeError as exc:
                error = TypeError(f"handler result cannot be sent: {exc}")
            else:
                if binary:
                    ws.send_bytes(payload)
                else:
                    ws.send_text(payload.decode())
                return
        if not isinstance(error, asyncio.CancelledError):
            self._handler_failed(event, error)
        self._send_ack_error(ws, ack, str(error) or type(error).__name__, type=type(error).__name__)

    def _send_ack_error(self, ws: WebSocket, ack: int, message: str, **detail: Any) -> None:
        ws.send_text(encode_ack_error(ack, message, **detail).decode())

    def __repr__(self) -> str:
        return f"<NanoSocketClient {self._url} {self._state.value} id={self.id}>"


def _remote_error(args: list[Any]) -> NanoSocketError:
    """The local ``error`` for a ``$error`` message: the server refused one of ours."""
    message = _first_dict(args).get("message") or "message refused"
    return NanoSocketError(f"the server refused a message: {message}")
