"""The per-message part of a server connection: an event in, its handlers run, frames out.

``PyConnectionCore`` is the spec of its compiled twin (``_speedups/_connection``), which
``Connection`` extends when it was built: a message received, dispatched to its handlers (their
ack answered), an emit and a broadcast recipient's frame then run without a Python frame of the
framework between the engine and the application's handler. Everything else of a connection (the
connect step, a batch's admission, message ids, errors, closing) is ``Connection``'s own, called by name.
"""

from __future__ import annotations

import asyncio
from enum import IntEnum
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final

from .._speedups import enabled as speedups_enabled
from ..dispatch import Handler, HandlerCancelled, HandlerRegistry, Suspended, invoke, run_started
from ..errors import ProtocolError
from ..protocol.deflate import OutgoingMessage, PerMessageDeflate
from ..protocol.envelope import (
    PEER_RESERVED_EVENTS,
    ack_frame,
    check_emit_name,
    decode_event,
    encode,
    event_frame,
)
from ..protocol.frames import BINARY, TEXT, build_frame
from ..transport import SendStatus, WebSocket

if TYPE_CHECKING:
    from .connection import ConnectionHost

__all__ = ["ConnectionCore", "MessageCounters", "PyConnectionCore", "PyMessageCounters", "SocketState"]


class SocketState(IntEnum):
    """Where a socket is in its life."""

    CONNECTING = 0  #: upgraded; waiting for ``$connect`` and the middleware chain
    CONNECTED = 1  #: accepted: events flow
    DISCONNECTED = 2  #: gone


# Enum members as module constants: an attribute of an Enum class costs a metaclass lookup.
_CONNECTED: Final = SocketState.CONNECTED
_DROPPED: Final = SendStatus.DROPPED
_SUCCESS: Final = SendStatus.SUCCESS


def pong_frame(args: list[Any]) -> bytes:
    """The frame answering a client's ``$ping`` with ``args``."""
    payload, binary = encode({"event": "$pong", "data": args})
    return build_frame(BINARY if binary else TEXT, payload)


PONG_FRAME: Final = pong_frame([])


class PyMessageCounters:
    """The server's counters that every message moves (the base of ``metrics.Stats``): in the
    compiled twin they are C integers, which the compiled core adds to without a Python int."""

    __slots__ = ("bytes_out", "messages_in", "messages_out", "volatile_dropped")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.volatile_dropped = 0


class PyConnectionCore:
    """See the module docstring: the spec of ``_speedups/_connection.ConnectionCore``."""

    __slots__ = ("_codec", "_handlers", "_host", "_pid", "_shared", "_state", "_stats", "_ws")

    _codec: PerMessageDeflate | None
    _handlers: HandlerRegistry | None
    _host: ConnectionHost
    _pid: str | None
    _shared: dict[str, Any]
    _state: SocketState
    #: The host's ``stats`` (the counters every message moves), reached without the host.
    _stats: PyMessageCounters
    _ws: WebSocket

    if TYPE_CHECKING:
        # What the core calls of the class that extends it (Connection, Socket).
        def _receive_early(self, message: str | bytes) -> None: ...
        def _receive_other(self, decoded: Any) -> None: ...
        def _admit_batch(self, size: int) -> bool: ...
        def _envelope(self, envelope: Any) -> None: ...
        def _violation(self, error: ProtocolError) -> None: ...
        def _refuse(self, event: str, ack: int | None) -> None: ...
        def _send_ack_error(self, ack: int, message: str, **detail: Any) -> None: ...
        def _handler_failed(self, error: BaseException, ack: int | None) -> None: ...
        def _handler_finished(self, ack: int | None, task: asyncio.Task[Any]) -> None: ...
        def _send_ack(self, ack: int, result: Any) -> None: ...
        def _emit_logged(self, event: str, args: tuple[Any, ...]) -> SendStatus: ...
        def _emit_encoded(self, event: str, args: tuple[Any, ...]) -> SendStatus: ...

    # ------------------------------------------------------------- messages in

    def _receive(self, message: str | bytes) -> None:
        """A message from the client (the WebSocket's on_message)."""
        if self._state is not _CONNECTED:
            self._receive_early(message)
            return
        self._stats.messages_in += 1
        try:
            decoded = decode_event(message)
            if type(decoded) is tuple:
                # The common case, sorted by decode_event: an event whose arguments are a list,
                # without an ack or with a valid ack id (what read_envelope accepts as is).
                event, args, ack = decoded
                self._dispatch(event, args, ack)
            elif type(decoded) is list:
                self._receive_batch(decoded)
            else:
                self._receive_other(decoded)
        except ProtocolError as exc:
            self._violation(exc)

    def _receive_batch(self, batch: list[Any]) -> None:
        """A batch, as decode_event sorted it: its events dispatched and its other envelopes read
        in full, in order; none after one that closed the connection (or began to: frames that
        follow our close are discarded, and so are the rest of a batch)."""
        if not self._admit_batch(len(batch)):
            return
        for envelope in batch:
            if type(envelope) is tuple:
                event, args, ack = envelope
                self._dispatch(event, args, ack)
            else:
                self._envelope(envelope)
            if self._state is not _CONNECTED or not self._ws.open:
                break

    def _dispatch(self, event: str, args: list[Any], ack: int | None) -> None:
        """Run the handlers of a client event; the first one answers ``ack``."""
        if event[0] == "$" or event in PEER_RESERVED_EVENTS:
            if event == "$ping":
                # Application-level heartbeat for clients that cannot see WebSocket pings
                # (browsers): answered at once, with the same arguments.
                self.send_frame(PONG_FRAME if not args else pong_frame(args))
                return
            self._refuse(event, ack)
            return
        # Server-level handlers first (one lookup: most sockets have no registry of their own),
        # then the socket's own; only the first handler of an event answers its ack.
        table = self._shared
        shared = table.get(event) if table else None
        own = self._handlers
        handlers = own.get(event) if own is not None else None
        arguments: list[Any] | tuple[Any, ...] = args
        if handlers is None:
            if shared is None:
                if ack is not None:
                    self._send_ack_error(ack, f"no handler for event {event!r}")
                return
            handlers, arguments = shared, (self, *args)
        elif shared is not None:
            # Both kinds: the shared handlers run (and answer the ack) first.
            self._run_handlers(shared, (self, *args), ack)
            ack = None
        self._run_handlers(handlers, arguments, ack)

    def _run_handlers(
        self, handlers: tuple[Handler, ...], arguments: list[Any] | tuple[Any, ...], ack: int | None
    ) -> None:
        """Run the handlers of one client event in order; the first one answers ``ack``."""
        for handler in handlers:
            try:
                count = len(arguments)
                if handler.is_async or count < handler.min_args or count > handler.most_args:
                    result = invoke(handler, arguments)
                else:
                    # invoke's common case, inline: a sync handler called with what it takes.
                    try:
                        result = handler.fn(*arguments)
                    except asyncio.CancelledError as exc:
                        raise HandlerCancelled from exc
                    if type(result) is CoroutineType:
                        result = run_started(result)
            except Exception as exc:
                self._handler_failed(exc, ack)
                ack = None
                continue
            if type(result) is Suspended:
                # Held until it finishes: a Task only the event loop knows of may be collected
                # while it waits (on a future nothing else references).
                self._host._handler_tasks.add(result.task)
                result.task.add_done_callback(partial(self._handler_finished, ack))
            elif ack is not None:
                if self._codec is None:
                    # _send_ack's common case, inline: one call for envelope, JSON and frame.
                    try:
                        frame = ack_frame(ack, [result])
                    except TypeError:
                        self._send_ack(ack, result)  # reports what cannot be sent
                    else:
                        if self._state is _CONNECTED:
                            self._write(frame)
                else:
                    self._send_ack(ack, result)
            ack = None

    # ------------------------------------------------------------ frames out

    def emit(self, event: str, *args: Any) -> SendStatus:
        """Send ``event`` with ``args`` to this client; DROPPED when it is not connected."""
        if self._pid is not None:
            return self._emit_logged(event, args)
        if self._state is not _CONNECTED:
            check_emit_name(event)
            return _DROPPED
        if self._codec is not None:
            return self._emit_encoded(event, args)
        # The common case: envelope, JSON and frame in one call.
        return self._write(event_frame(event, args))

    def send_frame(self, frame: bytes | OutgoingMessage, volatile: bool = False) -> SendStatus:
        """Write a ready-made frame (the adapter's fan-out calls this for every recipient); an
        OutgoingMessage is framed for this client (compressed if it negotiated compression).

        Nothing reaches a client before its connect step ends (not even what a room it joined in
        a middleware gets): DROPPED until the socket is connected.
        """
        if self._state is not _CONNECTED:
            return _DROPPED
        return self._write(frame, volatile)

    def _write(self, frame: bytes | OutgoingMessage, volatile: bool = False) -> SendStatus:
        """Write a frame to the WebSocket and count it."""
        status = self._ws.send_frame(frame, volatile)
        stats = self._stats
        if status is not _DROPPED:
            stats.messages_out += 1
            stats.bytes_out += len(frame) if type(frame) is bytes else frame.last_size  # type: ignore[union-attr]
        elif volatile:
            stats.volatile_dropped += 1
        return status


if TYPE_CHECKING:
    ConnectionCore = PyConnectionCore
    MessageCounters = PyMessageCounters
else:
    ConnectionCore, MessageCounters = PyConnectionCore, PyMessageCounters
    if speedups_enabled():
        try:
            from .._speedups._connection import ConnectionCore, MessageCounters
        except ImportError:  # not compiled: the pure-Python versions above are used
            pass
