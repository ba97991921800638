"""BroadcastOperator: ``server.to(room)``, ``socket.broadcast`` and friends.

A broadcast is encoded once and framed once; the adapter writes the same bytes to every
recipient (server frames are unmasked, so one frame fits all). With permessage-deflate on, a big
enough broadcast goes out as an OutgoingMessage: compressed once (per compressor window size) for
every recipient that negotiated compression, framed once uncompressed for the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..adapters.base import Adapter, BroadcastTarget, Member
from ..options import ServerOptions
from ..protocol.deflate import OutgoingMessage
from ..protocol.envelope import check_emit_name, encode_event
from ..protocol.frames import BINARY, TEXT, build_frame

__all__ = ["BroadcastOperator", "build_event_frame", "build_event_message", "compress_from", "room_set"]


def room_set(rooms: str | Iterable[str]) -> frozenset[str]:
    """One room name or several, as a frozenset; room names are non-empty strings."""
    names = frozenset((rooms,)) if isinstance(rooms, str) else frozenset(rooms)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"room names are non-empty strings, got {name!r}")
    return names


def build_event_frame(event: str, args: tuple[Any, ...]) -> bytes:
    """The complete server frame of an event (validated name, JSON or msgpack)."""
    payload, binary = encode_event(check_emit_name(event), args)
    return build_frame(BINARY if binary else TEXT, payload)


def compress_from(options: ServerOptions) -> int | None:
    """The size from which a server's messages are compressed; None when compression is off."""
    return None if options.compression == "off" else options.compression_threshold


def build_event_message(
    event: str, args: tuple[Any, ...], compress_from: int | None
) -> bytes | OutgoingMessage:
    """A broadcast's frame: plain bytes, unless compression is on (``compress_from`` is the
    threshold, None when off) and the payload reaches it; then an OutgoingMessage, framed for each
    recipient (compressed once for all that negotiated compression)."""
    payload, binary = encode_event(check_emit_name(event), args)
    if compress_from is None or len(payload) < compress_from:
        return build_frame(BINARY if binary else TEXT, payload)
    return OutgoingMessage(BINARY if binary else TEXT, payload)


class BroadcastOperator:
    """Selects recipients (rooms, exceptions, volatility) and emits to them, immutably.

    ``compress_from``: the server's compression threshold (None: compression off).
    """

    __slots__ = ("_adapter", "_compress_from", "_target")

    def __init__(
        self, adapter: Adapter, target: BroadcastTarget | None = None, compress_from: int | None = None
    ) -> None:
        self._adapter = adapter
        self._target = target or BroadcastTarget()
        self._compress_from = compress_from

    def to(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Also target the members of ``rooms`` (a socket in several gets one copy)."""
        target = self._target
        return BroadcastOperator(
            self._adapter, replace(target, rooms=target.rooms | room_set(rooms)), self._compress_from
        )

    in_ = to

    def except_(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Leave out the members of ``rooms`` (or the socket whose id is given)."""
        target = self._target
        names = room_set(rooms)
        return BroadcastOperator(
            self._adapter,
            replace(target, except_rooms=target.except_rooms | names, except_ids=target.except_ids | names),
            self._compress_from,
        )

    @property
    def volatile(self) -> BroadcastOperator:
        """Drop the message for recipients that are slow, instead of queueing it."""
        return BroadcastOperator(self._adapter, replace(self._target, volatile=True), self._compress_from)

    def emit(self, event: str, *args: Any) -> int:
        """Send ``event`` to every selected socket; return how many it was written to."""
        return self._adapter.broadcast(build_event_message(event, args, self._compress_from), self._target)

    def sockets(self) -> list[Member]:
        """The selected sockets of this process."""
        return self._adapter.members(self._target)

    def sockets_join(self, rooms: str | Iterable[str]) -> None:
        """Make every selected socket join ``rooms``."""
        names = room_set(rooms)
        for member in self.sockets():
            self._adapter.join(member, names)

    def sockets_leave(self, rooms: str | Iterable[str]) -> None:
        """Make every selected socket leave ``rooms``."""
        names = room_set(rooms)
        for member in self.sockets():
            for room in names:
                self._adapter.leave(member, room)

    def disconnect_sockets(self, close: bool = True) -> None:
        """Disconnect every selected socket."""
        for member in self.sockets():
            disconnect = getattr(member, "disconnect", None)
            if disconnect is not None:
                disconnect(close)
