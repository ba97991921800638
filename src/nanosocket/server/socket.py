"""Socket: the per-client handle handed to user code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from ..adapters.base import BroadcastTarget
from ..dispatch import AckTable, check_listen
from ..errors import connection_closed
from ..protocol.envelope import check_emit_name, encode_emit, encode_event
from ..protocol.handshake import Headers, kept_headers, kept_target, target_query
from ..transport import SendStatus
from .broadcast import BroadcastOperator, room_set
from .connection import NO_AUTH, SOCKET_LOCAL_EVENTS, Connection, SocketState
from .connection_core import _CONNECTED, _DROPPED, _SUCCESS

__all__ = ["Handshake", "Socket"]

F = TypeVar("F", bound=Callable[..., Any])


class Handshake:
    """What the client presented when it connected."""

    __slots__ = ("_socket",)

    def __init__(self, socket: Socket) -> None:
        self._socket = socket

    @property
    def headers(self) -> Headers:
        """The upgrade request's headers (case-insensitive)."""
        return kept_headers(self._socket._head, self._socket._key)

    @property
    def query(self) -> dict[str, str]:
        """The URL's query parameters (a repeated name keeps its last value)."""
        return target_query(self.url)

    @property
    def auth(self) -> Any:
        """The auth payload of the client's ``$connect`` (``{}`` when it sent none)."""
        socket = self._socket
        if socket._auth is NO_AUTH:
            socket._auth = {}
        return socket._auth

    @property
    def url(self) -> str:
        """The request target (path and query)."""
        return kept_target(self._socket._head)

    @property
    def time(self) -> float:
        """When the connection was accepted (seconds since the epoch)."""
        return self._socket._time

    @property
    def address(self) -> str:
        """The client's IP address."""
        return self._socket._address

    def __repr__(self) -> str:
        return f"Handshake(url={self.url!r}, address={self.address!r}, auth={self.auth!r})"


class _VolatileEmitter:
    __slots__ = ("_socket",)

    def __init__(self, socket: Socket) -> None:
        self._socket = socket

    def emit(self, event: str, *args: Any) -> SendStatus:
        """Emit, dropping the message (DROPPED) when the client is slow."""
        payload, binary = encode_emit(event, args)
        return self._socket.send_frame(self._socket._frame(payload, binary), volatile=True)


class Socket(Connection):
    """One connected client, as the server's handlers see it."""

    __slots__ = ()

    # ------------------------------------------------------------ properties

    @property
    def connected(self) -> bool:
        """True from acceptance until the connection starts closing."""
        return self._state is SocketState.CONNECTED and self._ws.open

    @property
    def remote_address(self) -> str:
        """The client's IP address."""
        return self._address

    @property
    def handshake(self) -> Handshake:
        return Handshake(self)

    @property
    def data(self) -> dict[str, Any]:
        """A free dictionary for the application (created on first use)."""
        data = self._data
        if data is None:
            data = self._data = {}
        return data

    @property
    def joined_rooms(self) -> set[str]:
        """The rooms this socket is in (a copy)."""
        return self._host.adapter.rooms_of(self)

    # --------------------------------------------------------------- sending

    def _emit_logged(self, event: str, args: tuple[Any, ...]) -> SendStatus:
        """``emit`` with recovery on: the message takes its offset in the log (so a client that
        misses it gets it when it recovers), then goes to the connected socket of this id: this
        one, or the one that recovered its session. With a log shared by the nodes, the adapter
        delivers it (SUCCESS: queued for the log)."""
        payload, binary = encode_emit(event, args)
        adapter = self._host.adapter
        logged = adapter.log_message(payload, binary, BroadcastTarget(rooms=frozenset((self.id,))))
        if logged is None:
            # A shared log delivers it, on whichever node holds this id when it is read.
            return _SUCCESS
        payload = logged
        if self._state is _CONNECTED:
            return self._write_message(payload, binary)
        member = adapter.get(self.id)
        if isinstance(member, Socket) and member is not self and member._state is _CONNECTED:
            return member._write_message(payload, binary)
        return _DROPPED

    @property
    def recovered(self) -> bool:
        """True when this connection recovered the session of an earlier one (its id, rooms,
        data and the messages it missed): connection-state recovery, ``recovery`` option."""
        return self._session is not None

    @property
    def volatile(self) -> _VolatileEmitter:
        """``socket.volatile.emit(...)`` drops the message rather than queue it for a slow client."""
        return _VolatileEmitter(self)

    async def call(self, event: str, *args: Any, timeout: float | None = None) -> Any:
        """Emit ``event`` and wait for the client's acknowledgement; return its value.

        Raises AckTimeoutError after ``timeout`` (default: the server's ack_timeout), AckError when
        the client's handler failed, ConnectionClosed when the connection ends first.
        """
        check_emit_name(event)
        if self._state is not SocketState.CONNECTED:
            raise connection_closed(1006, "socket is not connected")
        acks = self._acks
        if acks is None:
            acks = self._acks = AckTable()
        ack_id, future = acks.create(timeout if timeout is not None else self._host.options.ack_timeout)
        payload, binary = encode_event(event, args, ack_id)
        if not self.send_frame(self._frame(payload, binary)):
            acks.discard(ack_id)
            raise connection_closed(self._ws.close_code or 1006, "could not send")
        return await future

    def _expect_ack(self, ack_id: int, timeout: float) -> asyncio.Future[Any] | None:
        """Register the ack id of a broadcast asking every recipient for an ack (its frame is
        written by the adapter); None when not connected or the id is pending already."""
        if self._state is not SocketState.CONNECTED:
            return None
        acks = self._acks
        if acks is None:
            acks = self._acks = AckTable()
        return acks.expect(ack_id, timeout)

    # ---------------------------------------------------------------- events

    @overload
    def on(self, event: str) -> Callable[[F], F]: ...

    @overload
    def on(self, event: str, handler: F) -> F: ...

    def on(self, event: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register a handler for ``event`` (also usable as ``@socket.on(event)``): a client
        event, or a local one (``disconnect`` (reason), ``disconnecting`` (reason), ``error`` (error))."""
        check_listen(event, SOCKET_LOCAL_EVENTS, handler)
        return self._registry().register(event, handler)

    @overload
    def once(self, event: str) -> Callable[[F], F]: ...

    @overload
    def once(self, event: str, handler: F) -> F: ...

    def once(self, event: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register a handler that runs for the next ``event`` only."""
        check_listen(event, SOCKET_LOCAL_EVENTS, handler)
        return self._registry().register(event, handler, once=True)

    def off(self, event: str | None = None, handler: Callable[..., Any] | None = None) -> None:
        """Remove a handler, all handlers of ``event``, or every handler."""
        if self._handlers is not None:
            self._handlers.off(event, handler)

    # ----------------------------------------------------------------- rooms

    def join(self, rooms: str | Iterable[str]) -> None:
        """Join one room or several."""
        self._host.adapter.join(self, room_set(rooms))

    def leave(self, rooms: str | Iterable[str]) -> None:
        """Leave one room or several."""
        adapter = self._host.adapter
        for room in room_set(rooms):
            adapter.leave(self, room)

    def to(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Broadcast to ``rooms``, leaving this socket out."""
        return BroadcastOperator(
            self._host.adapter, BroadcastTarget(rooms=room_set(rooms), except_ids=frozenset((self.id,)))
        )

    in_ = to

    @property
    def broadcast(self) -> BroadcastOperator:
        """Broadcast to every socket but this one."""
        return BroadcastOperator(self._host.adapter, BroadcastTarget(except_ids=frozenset((self.id,))))

    # ------------------------------------------------------------ disconnect

    def disconnect(self, close: bool = True) -> None:
        """Disconnect this client: with the closing handshake (1000), or dropped at once."""
        if self._state is SocketState.DISCONNECTED:
            return
        self._disconnect_reason = "server disconnect"
        if close:
            self._ws.close(1000, "server disconnect")
        else:
            self._ws.abort()

    def __repr__(self) -> str:
        return f"<Socket {self.id} {self._state.name.lower()} {self._address}>"
