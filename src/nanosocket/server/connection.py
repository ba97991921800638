"""Per-connection glue: messages in → envelopes dispatched to handlers; frames out.

``Connection`` is the base of ``Socket``: this module owns what happens to a client's frames (the
connect step, decoding, dispatch, acks, errors and their close codes); ``socket.py`` owns the
public API. One object per client, not two.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Callable
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..adapters.base import Adapter, DedupStore, Reply, Session
from ..dispatch import (
    AckTable,
    Handler,
    HandlerRegistry,
    Suspended,
    fitting_args,
    invoke,
    run_eagerly,
)
from ..errors import ConnectError, ProtocolError, connection_closed
from ..options import RateLimits, ServerOptions
from ..protocol.deflate import OutgoingMessage, PerMessageDeflate
from ..protocol.envelope import (
    MAX_BATCH,
    PEER_RESERVED_EVENTS,
    EnvelopeError,
    ack_frame,
    decode_binary,
    decode_text,
    encode,
    encode_ack,
    encode_ack_error,
    encode_emit,
    encode_kept_ack,
    encode_reply_body,
    read_envelope,
)
from ..protocol.envelope import check_message_id as mid_problem
from ..protocol.frames import BINARY, TEXT, build_frame
from ..protocol.handshake import Request, keep_request
from ..transport import SendStatus, WebSocket
from .connection_core import _CONNECTED, _DROPPED, ConnectionCore, SocketState
from .metrics import Stats

if TYPE_CHECKING:
    from .socket import Socket

__all__ = [
    "NO_AUTH",
    "SOCKET_LOCAL_EVENTS",
    "Connection",
    "ConnectionHost",
    "SocketState",
    "TokenBuckets",
    "new_socket_id",
]

logger = logging.getLogger("nanosocket.server")

V1_SUBPROTOCOL = "nanosocket.v1"


def new_socket_id() -> str:
    """An unguessable socket id (120 random bits, URL-safe, 20 characters)."""
    return secrets.token_urlsafe(15)


#: The auth of a client that sent none: ``socket.handshake.auth`` reads it as a new ``{}``.
NO_AUTH: Final = object()

#: Events a socket raises for its own handlers, and how many arguments each passes.
SOCKET_LOCAL_EVENTS: Final = {"disconnect": 1, "disconnecting": 1, "error": 1}


class ConnectionHost(Protocol):
    """What a connection needs of the server that owns it."""

    options: ServerOptions
    adapter: Adapter
    stats: Stats
    #: Async event handlers still running (held so that none is collected while it waits).
    _handler_tasks: set[asyncio.Task[Any]]
    #: Client event handlers shared by every socket: event → handlers, ``handler(socket, *args)``.
    _socket_handlers: dict[str, tuple[Handler, ...]]
    #: Connected sockets by their private session id (connection-state recovery on).
    _live_sessions: dict[str, Socket]
    #: Client message ids of at-least-once emits seen recently, and their replies.
    _dedup: DedupStore

    def _admit(self, socket: Socket) -> asyncio.Task[Any] | None:
        """Run the connect step (middleware) for a socket whose ``$connect`` has arrived; return
        the Task of a chain still running (cancelled if the connection ends first), else None."""

    def _socket_connected(self, socket: Socket) -> None:
        """The socket passed its middleware: count it and run the ``connection`` handlers."""

    def _socket_disconnected(self, socket: Socket, reason: str) -> None:
        """A connected socket is gone: run the ``disconnect`` handlers."""

    def _report_error(self, error: BaseException, socket: Socket | None) -> None:
        """A handler raised: log (rate-limited) and run the ``error`` handlers."""


_monotonic = time.monotonic


class TokenBuckets:
    """One connection's rate limits (``ServerOptions.rate_limit_*``): a message bucket and a byte
    bucket, each full (its burst) at first and refilled at its rate per second. A message that
    finds too few tokens in either is over the limit; the connection is then closed, so a bucket
    never has to recover from debt."""

    __slots__ = ("_bytes", "_limits", "_messages", "_stamp")

    def __init__(self, limits: RateLimits) -> None:
        self._limits = limits
        self._messages = limits.message_burst
        self._bytes = limits.byte_burst
        self._stamp = _monotonic()

    def admit(self, message: str | bytes) -> bool:
        """Take the tokens of one received message (one envelope, its size in bytes)."""
        if type(message) is str and not message.isascii():  # isascii() is O(1) for str
            return self.take(1, len(message.encode("utf-8")))
        return self.take(1, len(message))

    def take(self, messages: int, size: int) -> bool:
        """Take ``messages`` message tokens and ``size`` byte tokens; False when either bucket
        does not hold enough."""
        now = _monotonic()
        elapsed = now - self._stamp
        self._stamp = now
        limits = self._limits
        admitted = True
        rate = limits.message_rate
        if rate is not None:
            tokens = min(limits.message_burst, self._messages + elapsed * rate) - messages
            self._messages = tokens
            admitted = tokens >= 0
        rate = limits.byte_rate
        if rate is not None:
            tokens = min(limits.byte_burst, self._bytes + elapsed * rate) - size
            self._bytes = tokens
            admitted = admitted and tokens >= 0
        return admitted


@lru_cache(maxsize=16)
def _rate_limits(options: ServerOptions) -> RateLimits | None:
    """A server's resolved rate limits, one object for all its connections."""
    return options.rate_limits()


#: Disconnect reasons after which a session is kept for recovery: losses, not decisions (a
#: client's or the server's disconnect, a policy close) of either side.
RECOVERABLE: Final = frozenset(
    {"transport close", "ping timeout", "transport error", "server shutting down", "client going away"}
)


def _close_reason(code: int, reason: str) -> str:
    """The disconnect reason handlers see for a close the server did not initiate itself."""
    if code in (1000, 1005):
        return "client disconnect"
    if code == 1001:
        return "client going away"
    if code == 1006:
        return "transport close"
    if code == 1011 and reason == "ping timeout":
        return "ping timeout"
    if code == 1008 and reason == "backpressure limit exceeded":
        return "slow consumer"
    return "transport error"


class Connection(ConnectionCore):
    """The server side of one client: its connect step, dispatch and acks."""

    __slots__ = (
        "_acks",
        "_address",
        "_admission",
        "_auth",
        "_buckets",
        "_data",
        "_deadline",
        "_disconnect_reason",
        "_head",
        "_key",
        "_pending",
        "_restoring",
        "_session",
        "_time",
        "_v1",
        "id",
    )

    def __init__(self, host: ConnectionHost, ws: WebSocket, request: Request) -> None:
        self.id = new_socket_id()
        self._host = host
        # Every message counts in it (this slot fills what would be padding, as _shared does).
        self._stats = host.stats
        self._ws = ws
        # The server's shared handler table (read on every event; this slot fills what would be
        # padding: the object's size class is the same with or without it).
        self._shared = host._socket_handlers
        # Kept for socket.handshake, compactly (one string, shared by connections whose requests
        # are alike, and the key): most apps never read it after the connect step.
        self._head, self._key = keep_request(request)
        self._time = time.time()
        address = ws.remote_address
        # Interned: behind a proxy, every connection comes from the same address.
        self._address = sys.intern(address[0]) if address is not None else ""
        # The connection's permessage-deflate (ws.compression), read once it is accepted.
        self._codec: PerMessageDeflate | None = None
        # The $connect's auth: None until a v1 client sent it; NO_AUTH when there is none (read
        # as a new {} on first use: no dict per connection that nobody reads).
        self._auth: Any = None
        self._state = SocketState.CONNECTING
        self._v1 = ws.subprotocol == V1_SUBPROTOCOL
        self._handlers: HandlerRegistry | None = None
        self._acks: AckTable | None = None
        self._pending: list[str | bytes] | None = None
        self._data: dict[str, Any] | None = None
        self._disconnect_reason: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._admission: asyncio.Task[Any] | None = None
        # Connection-state recovery: the private session id given to the client (None while
        # recovery is off), and the session it recovered with its offset.
        self._pid: str | None = None
        self._session: tuple[Session, int] | None = None
        # The adapter's work of taking back or replaying a session in a shared store (not
        # cancelled when the connection ends: a session it took is put back).
        self._restoring: asyncio.Task[Any] | None = None
        limits = _rate_limits(host.options)
        self._buckets = TokenBuckets(limits) if limits is not None else None
        ws.on_message = self._receive if limits is None else self._receive_limited
        # The connection itself is the close callback (__call__): a bound method would be 64
        # more bytes per connection, held for its whole life.
        ws.on_close = self

    def _start(self) -> None:
        """Begin the connect step: a v1 client sends ``$connect`` first; others go straight on.

        The whole step (``$connect`` and middleware) must end within ``handshake_timeout``.
        """
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._host.options.handshake_timeout, self._connect_timed_out)
        if not self._v1:
            self._auth = NO_AUTH
            self._admission = self._host._admit(self._as_socket())

    def _connect_timed_out(self) -> None:
        self._deadline = None
        if self._state is SocketState.CONNECTING:
            self._violation(EnvelopeError("the connect step did not finish within handshake_timeout"))

    def _end_connect_step(self) -> None:
        deadline = self._deadline
        if deadline is not None:
            deadline.cancel()
            self._deadline = None

    def _as_socket(self) -> Socket:
        return self  # type: ignore[return-value]  # every Connection is a Socket

    # ------------------------------------------------------------- messages in

    def _receive_limited(self, message: str | bytes) -> None:
        """``_receive`` behind the rate limits (the message handler when they are on). Messages
        that wait for the connect step are charged as they arrive, not again when handled."""
        buckets = self._buckets
        assert buckets is not None
        if buckets.admit(message):
            self._receive(message)
        else:
            self._rate_limited()

    def _rate_limited(self) -> None:
        """Over a rate limit: close with 1008 (what the client sent after it is discarded)."""
        if not self._ws.open:
            return
        self._host.stats.rate_limited += 1
        logger.debug("closing %s: rate limit exceeded", self.id)
        self._disconnect_reason = "rate limited"
        self._ws.close(1008, "rate limit exceeded")

    def _receive_other(self, decoded: Any) -> None:
        """A decoded message that is neither a plain event nor a batch (see
        ConnectionCore._receive): an envelope to read in full."""
        if type(decoded) is dict:
            self._envelope(decoded)
        else:
            raise EnvelopeError("an envelope must be an object")

    def _admit_batch(self, size: int) -> bool:
        """Whether a batch of ``size`` envelopes is handled (ConnectionCore._receive_batch):
        over MAX_BATCH is a violation; over the rate limits, the connection is closed."""
        if size > MAX_BATCH:
            raise EnvelopeError(f"batch of more than {MAX_BATCH} envelopes")
        buckets = self._buckets
        if buckets is not None and size > 1 and not buckets.take(size - 1, 0):
            # A batch of n envelopes counts as n messages (its frame was charged one).
            self._rate_limited()
            return False
        return True

    def _envelope(self, envelope: Any) -> None:
        event, args, ack, error = read_envelope(envelope)
        if event is None:
            assert ack is not None
            acks = self._acks
            if acks is None or not acks.resolve(ack, args, error):
                self._host.stats.unknown_acks += 1
            return
        if "mid" in envelope:
            self._dispatch_once(event, args, ack, envelope["mid"])
            return
        self._dispatch(event, args, ack)

    # ------------------------------------------------------ at-least-once emits

    def _dispatch_once(self, event: str, args: list[Any], ack: int | None, mid: object) -> None:
        """An event with a client message id: its handler runs for the first copy only; every
        copy's ack is answered with the first run's reply (docs/protocol.md)."""
        if event[0] == "$" or event in PEER_RESERVED_EVENTS:
            self._refuse(event, ack)
            return
        problem = mid_problem(mid)
        if ack is None:
            self._send_error("a message with a mid must ask for an ack" if problem is None else problem)
            return
        if problem is not None:
            self._send_ack_error(ack, problem, type="InvalidMessageId")
            return
        assert type(mid) is str
        # Claimed before looking for a handler: a copy is answered even when the first run
        # spent a ``once`` handler (without one, _run_once releases the id).
        claimed = self._host._dedup.claim(mid, partial(self._send_kept, ack))
        if claimed is True:
            self._run_once(event, args, ack, mid)
        elif claimed is not False:
            # A round trip (a shared store): held with the handler tasks until it is answered
            # (and cancelled with them when the server closes).
            task = asyncio.ensure_future(claimed)
            self._host._handler_tasks.add(task)
            task.add_done_callback(partial(self._claim_answered, event, args, ack, mid))

    def _claim_answered(
        self, event: str, args: list[Any], ack: int, mid: str, claim: asyncio.Future[bool]
    ) -> None:
        """A claim that took a round trip (a shared store) is answered."""
        self._host._handler_tasks.discard(claim)  # the Task of the claim
        if claim.cancelled():
            return
        error = claim.exception()
        if error is not None:
            # The store is unreachable: no answer, so that the client sends the message again
            # (counted; logged at debug level only: one line per message would flood the log).
            self._host.adapter.stats.dedup_unavailable += 1
            logger.debug("could not claim message id %s: %s", mid, error)
            return
        if claim.result():
            if self._state is _CONNECTED:
                self._run_once(event, args, ack, mid)
            else:
                self._host._dedup.release(mid)  # gone meanwhile: the next copy runs it

    def _run_once(self, event: str, args: list[Any], ack: int, mid: str) -> None:
        """``_dispatch``'s loop for a claimed message: the first handler's outcome is settled
        under ``mid`` (and answers the ack); the others just run."""
        # Server-level handlers first, then the socket's own (as _dispatch does).
        shared = self._shared.get(event)
        own = self._handlers.get(event) if self._handlers is not None else None
        calls: list[tuple[Handler, list[Any] | tuple[Any, ...]]] = [
            *((handler, (self, *args)) for handler in shared or ()),
            *((handler, args) for handler in own or ()),
        ]
        if not calls:
            self._host._dedup.release(mid)
            self._send_ack_error(ack, f"no handler for event {event!r}")
            return
        first = True
        for handler, call_args in calls:
            try:
                result = invoke(handler, call_args)
            except Exception as exc:
                self._handler_failed(exc, None)
                if first:
                    self._settle(mid, ack, None, exc)
                first = False
                continue
            if type(result) is Suspended:
                self._host._handler_tasks.add(result.task)
                if first:
                    result.task.add_done_callback(partial(self._finished_once, mid, ack))
                else:
                    result.task.add_done_callback(partial(self._handler_finished, None))
            elif first:
                self._settle(mid, ack, result, None)
            first = False

    def _finished_once(self, mid: str, ack: int, task: asyncio.Task[Any]) -> None:
        self._host._handler_tasks.discard(task)
        if task.cancelled():
            # The handler did not finish (the server is closing): no answer, and the id is
            # forgotten, so that the client's next copy runs it.
            self._host._dedup.release(mid)
            return
        error = task.exception()
        if error is not None:
            self._handler_failed(error, None)
            self._settle(mid, ack, None, error)
        else:
            self._settle(mid, ack, task.result(), None)

    def _settle(self, mid: str, ack: int, result: Any, error: BaseException | None) -> None:
        """Keep the first run's reply under ``mid``, answer the copies waiting and this ack."""
        reply: Reply | None = None
        if error is None:
            try:
                reply = Reply(False, *encode_reply_body([result]))
            except TypeError as exc:
                error = TypeError(f"handler result cannot be sent: {exc}")
                self._handler_failed(error, None)
        if reply is None:
            assert error is not None
            detail = {"message": str(error) or type(error).__name__, "type": type(error).__name__}
            reply = Reply(True, encode_reply_body(detail)[0])
        self._host._dedup.settle(mid, reply)
        self._send_kept(ack, reply)

    def _send_kept(self, ack: int, reply: Reply) -> None:
        """Answer ``ack`` with a kept reply (nothing once the socket is gone)."""
        if self._state is _CONNECTED:
            self._write_message(encode_kept_ack(ack, reply.error, reply.body, reply.binary), reply.binary)

    def _send_error(self, message: str) -> None:
        """Tell the client that one of its messages was refused (``$error``); it stays connected."""
        self.send_frame(build_frame(TEXT, encode({"event": "$error", "data": [{"message": message}]})[0]))

    def _handler_finished(self, ack: int | None, task: asyncio.Task[Any]) -> None:
        self._host._handler_tasks.discard(task)
        if task.cancelled():
            if ack is not None:
                self._send_ack_error(ack, "handler cancelled")
            return
        error = task.exception()
        if error is not None:
            self._handler_failed(error, ack)
        elif ack is not None:
            self._send_ack(ack, task.result())

    def _handler_failed(self, error: BaseException, ack: int | None) -> None:
        self._host.stats.handler_errors += 1
        if ack is not None:
            self._send_ack_error(ack, str(error) or type(error).__name__, type=type(error).__name__)
        self._host._report_error(error, self._as_socket())
        self._emit_local("error", error)

    def _refuse(self, event: str, ack: int | None) -> None:
        message = f"event name {event!r} is reserved"
        if ack is not None:
            self._send_ack_error(ack, message)
        self._send_error(message)

    def _violation(self, error: ProtocolError) -> None:
        """Malformed input: close this connection with the error's code, nothing else."""
        self._host.stats.protocol_errors += 1
        logger.debug("closing %s: %s", self.id, error)
        self._disconnect_reason = "parse error"
        self._ws.close(error.close_code, str(error)[:120])

    # -------------------------------------------------------- the connect step

    def _receive_early(self, message: str | bytes) -> None:
        if self._state is SocketState.DISCONNECTED:
            return
        if self._auth is None:
            # A v1 client's first frame must be its $connect.
            try:
                decoded = decode_text(message) if type(message) is str else decode_binary(message)  # type: ignore[arg-type]
                event, args, _, _ = read_envelope(decoded)
                if event != "$connect":
                    raise EnvelopeError("the first message must be $connect")
            except ProtocolError as exc:
                self._violation(exc)
                return
            auth = args[0] if args else None
            self._auth = auth if auth is not None else NO_AUTH
            if len(args) > 1 and self._host.options.recovery is not None:
                # It admits the socket once the adapter has answered (at once for a local log).
                outcome = run_eagerly(self._restore(args[1]))
                if isinstance(outcome, asyncio.Task):
                    self._restoring = outcome
                return
            self._admission = self._host._admit(self._as_socket())
            return
        pending = self._pending
        if pending is None:
            pending = self._pending = []
        if len(pending) >= self._host.options.max_pending_messages:
            self._violation(EnvelopeError("too many messages before the connection was accepted"))
            return
        pending.append(message)

    def _accept(self) -> None:
        """The middleware chain passed: the socket is connected; queued messages follow."""
        self._admission = None
        if self._state is not SocketState.CONNECTING or not self._ws.open:
            return
        host = self._host
        if host.options.recovery is not None and self._v1 and self._session is not None:
            outcome = run_eagerly(self._recover(*self._session))
            if isinstance(outcome, asyncio.Task):
                self._restoring = outcome
            return
        self._connected(None)

    def _connected(self, missed: list[tuple[bytes, bool]] | None) -> None:
        """Connect the accepted socket (with the messages it missed when it recovered a session)."""
        self._end_connect_step()
        self._codec = self._ws.compression
        self._state = SocketState.CONNECTED
        host = self._host
        if host.options.recovery is not None and self._v1:
            self._resume(missed)
        else:
            host.adapter.register(self._as_socket())
            if self._v1:
                answer = {"id": self.id, "dedup_window": host.options.dedup_window}
                self._send_envelope({"event": "$connect", "data": [answer]})
        host._socket_connected(self._as_socket())
        pending, self._pending = self._pending, None
        if pending:
            for message in pending:
                if self._state is not SocketState.CONNECTED:
                    break
                self._receive(message)

    def _reject(self, error: BaseException) -> None:
        """The middleware chain refused: tell the client why and close with 1008."""
        self._admission = None
        if self._state is not SocketState.CONNECTING or not self._ws.open:
            return
        self._end_connect_step()
        self._host.stats.connections_rejected += 1
        detail = error.data if isinstance(error, ConnectError) else getattr(error, "data", None)
        body = {"message": str(error) or type(error).__name__, "data": detail}
        event = "$connect_error" if self._v1 else "connect_error"
        try:
            self._send_envelope({"event": event, "data": [body]})
        except TypeError:
            self._send_envelope({"event": event, "data": [{"message": body["message"], "data": None}]})
        self._ws.close(1008, "connection refused")

    # ------------------------------------------------- connection-state recovery

    async def _restore(self, request: object) -> None:
        """The client asks to recover a session (``$connect``'s second argument): when the
        adapter still has it, take back its id and data (rooms and missed messages follow at
        acceptance), then run the middleware chain. Anything malformed or unknown is a fresh
        start, never an error."""
        host = self._host
        session: Session | None = None
        session_offset: object = None
        if type(request) is dict:
            pid, session_offset = request.get("pid"), request.get("offset")
            if type(pid) is str and (old := host._live_sessions.get(pid)) is not None:
                old._taken_over()
            try:
                session = await host.adapter.take_session(pid, request.get("epoch"), session_offset)
            except Exception as exc:  # the store is unreachable: a fresh start, said once per client
                logger.warning("could not take a session back (%r): the client starts afresh", exc)
        self._restoring = None
        if self._state is not SocketState.CONNECTING or not self._ws.open:
            if session is not None:
                host.adapter.save_session(session)  # gone meanwhile: it waits for a later attempt
            return
        if session is not None:
            assert type(session_offset) is int
            self.id = session.socket_id
            self._data = session.data
            self._session = (session, session_offset)
        self._admission = host._admit(self._as_socket())

    async def _recover(self, session: Session, offset: int) -> None:
        """Accept a socket that recovers ``session``: replay what it missed after ``offset`` and
        connect it in the same step as the adapter answers (nothing is delivered in between)."""
        try:
            missed = await self._host.adapter.replay(session, offset)
        except Exception as exc:  # the store is unreachable
            logger.warning("could not replay a session (%r): the client starts afresh", exc)
            missed = None
        self._restoring = None
        if self._state is not SocketState.CONNECTING or not self._ws.open:
            return  # lost meanwhile: _closed kept the session for a later attempt
        if missed is None:
            self._end_connect_step()
            self._session = None
            self._ws.close(1013, "recovery no longer possible")
            return
        self._connected(missed)

    def _taken_over(self) -> None:
        """This connection's client is back on a new one (it found this one dead before the
        server did): end this one now as lost, so that its session is kept for the new one."""
        self._disconnect_reason = "transport close"
        self._ws.abort()
        if self._state is not SocketState.DISCONNECTED:
            self._closed(1006, "")

    def _resume(self, missed: list[tuple[bytes, bool]] | None) -> None:
        """Accept with recovery on, in one synchronous step: register (with the session's rooms
        when recovering), answer ``$connect`` (pid, epoch, offset, recovered) and write the missed
        messages, so that nothing falls in between."""
        adapter = self._host.adapter
        socket = self._as_socket()
        if adapter.get(self.id) is not None:
            # The id is live again (a recovered socket that the server has not seen lost yet):
            # never two sockets with one id.
            self.id = new_socket_id()
            self._session = missed = self._data = None
        adapter.register(socket)
        if self._session is not None:
            adapter.join(socket, self._session[0].rooms)
        self._pid = pid = secrets.token_urlsafe(18)  # the private session id: 144 random bits
        self._host._live_sessions[pid] = socket
        adapter.track_rooms(socket, self._session[0] if self._session is not None else None)
        epoch, offset = adapter.recovery_position()
        answer = {
            "id": self.id,
            "pid": self._pid,
            "epoch": epoch,
            "offset": offset,
            "recovered": bool(missed is not None),
            "dedup_window": self._host.options.dedup_window,
        }
        self._send_envelope({"event": "$connect", "data": [answer]})
        if missed:
            for payload, binary in missed:
                self._write_message(payload, binary)

    def _current_session(self) -> Session | None:
        """This socket's session as it stands (recovery on and accepted), else None."""
        pid = self._pid
        if pid is None:
            return None
        adapter = self._host.adapter
        socket = self._as_socket()
        rooms = frozenset(adapter.rooms_of(socket))
        return Session(pid, self.id, rooms, self._data, _monotonic(), adapter.room_history(socket))

    def _reset_session(self) -> None:
        """The log positions this socket's client holds are no longer good: close it (1013)
        without keeping a session; the client comes back afresh."""
        if self._state is SocketState.DISCONNECTED or self._pid is None:
            return  # gone, or a client that holds no positions (not v1)
        self._disconnect_reason = "recovery reset"
        self._ws.close(1013, "recovery log reset")

    # ------------------------------------------------------------ frames out

    def _emit_encoded(self, event: str, args: tuple[Any, ...]) -> SendStatus:
        """``emit`` for a client that negotiated compression: framed for it (compressed when
        the message is big enough)."""
        payload, binary = encode_emit(event, args)
        return self._write_message(payload, binary)

    def _frame(self, payload: bytes, binary: bool) -> bytes | OutgoingMessage:
        """A message for this client alone: compressed with its own compressor when it negotiated
        permessage-deflate and the payload reaches the threshold, else a plain frame."""
        codec = self._ws.compression
        if codec is None or len(payload) < codec.threshold:
            return build_frame(BINARY if binary else TEXT, payload)
        return OutgoingMessage(BINARY if binary else TEXT, payload, broadcast=False)

    def _write_message(self, payload: bytes, binary: bool) -> SendStatus:
        """``_write(_frame(payload, binary))`` with the common case inline: an uncompressed frame."""
        ws = self._ws
        codec = self._codec
        if codec is None or len(payload) < codec.threshold:
            frame: bytes | OutgoingMessage = build_frame(BINARY if binary else TEXT, payload)
        else:
            frame = OutgoingMessage(BINARY if binary else TEXT, payload, broadcast=False)
        status = ws.send_frame(frame, False)
        if status is not _DROPPED:
            stats = self._stats
            stats.messages_out += 1
            stats.bytes_out += len(frame) if type(frame) is bytes else frame.last_size  # type: ignore[union-attr]
        return status

    def _send_envelope(self, envelope: dict[str, Any]) -> SendStatus:
        payload, binary = encode(envelope)
        return self._write(build_frame(BINARY if binary else TEXT, payload))

    def _send_ack(self, ack: int, result: Any) -> None:
        codec = self._codec
        try:
            if codec is None:
                # The common case in one call: envelope, JSON and frame.
                frame = ack_frame(ack, [result])
            else:
                payload, binary = encode_ack(ack, [result])
        except TypeError as exc:
            self._handler_failed(TypeError(f"handler result cannot be sent: {exc}"), ack)
            return
        if self._state is not _CONNECTED:
            return
        if codec is None:
            self._write(frame)
        else:
            self._write_message(payload, binary)

    def _send_ack_error(self, ack: int, message: str, **detail: Any) -> None:
        self.send_frame(build_frame(TEXT, encode_ack_error(ack, message, **detail)))

    # ----------------------------------------------------------------- local

    def _registry(self) -> HandlerRegistry:
        handlers = self._handlers
        if handlers is None:
            handlers = self._handlers = HandlerRegistry()
        return handlers

    def _emit_local(self, event: str, *args: Any) -> None:
        """Run this socket's own handlers of a local event (disconnect, error); never raises."""
        handlers = self._handlers.get(event) if self._handlers is not None else None
        if not handlers:
            return
        for handler in handlers:
            try:
                result = invoke(handler, fitting_args(handler, args))
            except Exception:
                logger.exception("socket %r handler raised", event)
                continue
            if type(result) is Suspended:
                result.task.add_done_callback(_log_failure(event))

    def __call__(self, code: int, reason: str) -> None:
        """``ws.on_close``: the connection is gone (for the engine only, never for applications)."""
        self._closed(code, reason)

    def _closed(self, code: int, reason: str) -> None:
        """The connection is gone."""
        was = self._state
        self._state = SocketState.DISCONNECTED
        self._pending = None
        self._end_connect_step()
        admission = self._admission
        if admission is not None:
            # A middleware still deciding about a connection that is gone: stop it.
            self._admission = None
            admission.cancel()
        acks = self._acks
        if acks is not None:
            acks.fail_all(connection_closed(code, reason))
        host = self._host
        if was is not SocketState.CONNECTED:
            restored = self._session
            if restored is not None:
                # Lost again during its connect step: the session waits for the next attempt.
                self._session = None
                host.adapter.save_session(restored[0])
            host.adapter.unregister(self._as_socket())
            return
        why = self._disconnect_reason or _close_reason(code, reason)
        if why == "slow consumer":
            host.stats.backpressure_closes += 1
        # Rooms are still readable in "disconnecting"; they are gone by "disconnect".
        self._emit_local("disconnecting", why)
        pid = self._pid
        if pid is not None:
            live = host._live_sessions
            if live.get(pid) is self:
                del live[pid]
        if pid is not None and why in RECOVERABLE:
            session = self._current_session()
            assert session is not None
            host.adapter.save_session(session)
        host.adapter.unregister(self._as_socket())
        self._emit_local("disconnect", why)
        host._socket_disconnected(self._as_socket(), why)


def _log_failure(event: str) -> Callable[[asyncio.Task[Any]], None]:
    def log(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("socket %r handler raised", event, exc_info=task.exception())

    return log
