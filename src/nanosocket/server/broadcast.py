"""BroadcastOperator: ``server.to(room)``, ``socket.broadcast`` and friends.

A broadcast is encoded once, here; the adapter frames it once per node and writes the same bytes
to every recipient (server frames are unmasked, so one frame fits all). With permessage-deflate
on, a big enough broadcast goes out as an OutgoingMessage: compressed once (per compressor window
size) for every recipient that negotiated compression, framed once uncompressed for the others.
In a cluster the encoded payload travels to the other nodes as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..adapters.base import AckResults, Adapter, BroadcastTarget, Member, SocketInfo
from ..dispatch import new_broadcast_ack_id
from ..options import ServerOptions
from ..protocol.envelope import check_emit_name, encode_event, event_frame
from ..rooms import room_set
from .cluster import RemoteSocket

if TYPE_CHECKING:
    from .socket import Socket

__all__ = ["BroadcastOperator", "build_event_frame", "compress_from", "room_set"]


def build_event_frame(event: str, args: tuple[Any, ...]) -> bytes:
    """The complete server frame of an event (validated name, JSON or msgpack)."""
    return event_frame(event, args)


def compress_from(options: ServerOptions) -> int | None:
    """The size from which a server's messages are compressed; None when compression is off."""
    return None if options.compression == "off" else options.compression_threshold


class BroadcastOperator:
    """Selects recipients (rooms, exceptions, volatility) and emits to them, immutably.

    Everything it does spans the cluster when the server's adapter does (``RedisAdapter``):
    ``emit``, ``call``, ``fetch_sockets``, ``sockets_join`` / ``sockets_leave`` and
    ``disconnect_sockets``; ``sockets()`` alone is local.
    """

    __slots__ = ("_adapter", "_target", "_timeout")

    def __init__(
        self, adapter: Adapter, target: BroadcastTarget | None = None, timeout: float | None = None
    ) -> None:
        self._adapter = adapter
        self._target = target or BroadcastTarget()
        self._timeout = timeout

    def to(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Also target the members of ``rooms`` (a socket in several gets one copy)."""
        target = self._target
        return BroadcastOperator(
            self._adapter, replace(target, rooms=target.rooms | room_set(rooms)), self._timeout
        )

    in_ = to

    def except_(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Leave out the members of ``rooms`` (or the socket whose id is given)."""
        target = self._target
        names = room_set(rooms)
        return BroadcastOperator(
            self._adapter,
            replace(target, except_rooms=target.except_rooms | names, except_ids=target.except_ids | names),
            self._timeout,
        )

    @property
    def volatile(self) -> BroadcastOperator:
        """Drop the message for recipients that are slow, instead of queueing it."""
        return BroadcastOperator(self._adapter, replace(self._target, volatile=True), self._timeout)

    def timeout(self, seconds: float) -> BroadcastOperator:
        """How long ``call`` waits for the acknowledgements."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
        return BroadcastOperator(self._adapter, self._target, float(seconds))

    def emit(self, event: str, *args: Any) -> int:
        """Send ``event`` to every selected socket (on every node); return how many sockets of
        this process it was written to."""
        payload, binary = encode_event(check_emit_name(event), args)
        return self._adapter.broadcast(payload, binary, self._target)

    async def call(self, event: str, *args: Any, timeout: float | None = None) -> AckResults:
        """Send ``event`` to every selected socket asking each for an acknowledgement; wait up to
        the timeout (``timeout=`` or ``.timeout(s)``, required) and return every reply that came,
        with the ids of the sockets that did not answer in time (``AckResults``)."""
        seconds = timeout if timeout is not None else self._timeout
        if seconds is None:
            raise ValueError("a broadcast asking for acks needs a timeout: .timeout(seconds).call(...)")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
        ack_id = new_broadcast_ack_id()
        payload, binary = encode_event(check_emit_name(event), args, ack_id)
        return await self._adapter.broadcast_with_ack(payload, binary, ack_id, self._target, float(seconds))

    emit_with_ack = call

    def sockets(self) -> list[Member]:
        """The selected sockets of this process."""
        return self._adapter.members(self._target)

    async def fetch_sockets(self, timeout: float | None = None) -> list[Socket | RemoteSocket]:
        """The selected sockets of every node: this process's as Socket objects, the others' as
        RemoteSocket descriptors (whose emit/join/leave/disconnect run on their node). Nodes that
        do not answer within ``timeout`` (default: the adapter's request timeout) are left out."""
        found = await self._adapter.fetch_sockets(self._target, timeout)
        adapter = self._adapter
        return [RemoteSocket(item, adapter) if isinstance(item, SocketInfo) else item for item in found]

    def sockets_join(self, rooms: str | Iterable[str]) -> None:
        """Make every selected socket (on every node) join ``rooms``."""
        self._adapter.add_sockets(self._target, room_set(rooms))

    def sockets_leave(self, rooms: str | Iterable[str]) -> None:
        """Make every selected socket (on every node) leave ``rooms``."""
        self._adapter.remove_sockets(self._target, room_set(rooms))

    def disconnect_sockets(self, close: bool = True) -> None:
        """Disconnect every selected socket (on every node)."""
        self._adapter.disconnect_sockets(self._target, close)
