"""The server's side of a cluster: the hooks it gives its adapter, and remote sockets.

* ``ClusterNode``: the ``adapters.base.Node`` of a NanoSocket server, what inbound cluster
  requests reach (describe, disconnect or call a local socket, run server-side event handlers).
* ``RemoteSocket`` (and ``RemoteHandshake``): a socket of another node as ``fetch_sockets``
  returns it: its descriptor, and ``emit`` / ``join`` / ``leave`` / ``disconnect`` carried out
  by the node it is connected to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from ..adapters.base import Adapter, BroadcastTarget, Member, Session, SocketInfo
from ..protocol.envelope import check_emit_name, encode_event
from ..protocol.handshake import Headers
from ..rooms import room_set

if TYPE_CHECKING:
    from .app import NanoSocket
    from .socket import Socket

__all__ = ["ClusterNode", "RemoteHandshake", "RemoteSocket"]


class ClusterNode:
    """What a NanoSocket server lets its adapter do (``Adapter.attach``)."""

    __slots__ = ("_server",)

    def __init__(self, server: NanoSocket) -> None:
        self._server = server

    @property
    def compress_from(self) -> int | None:
        return self._server.compress_from

    def describe(self, member: Member) -> SocketInfo:
        socket = cast("Socket", member)
        handshake = socket.handshake
        return SocketInfo(
            id=socket.id,
            rooms=frozenset(self._server.adapter.rooms_of(socket)),
            headers=handshake.headers,
            query=dict(handshake.query),
            auth=handshake.auth,
            url=handshake.url,
            time=handshake.time,
            address=handshake.address,
            data=socket.data,
            node=self._server.adapter.node_id,
        )

    def disconnect(self, member: Member, close: bool) -> None:
        cast("Socket", member).disconnect(close)

    def expect_ack(self, member: Member, ack_id: int, timeout: float) -> asyncio.Future[Any] | None:
        return cast("Socket", member)._expect_ack(ack_id, timeout)

    async def server_side_event(self, event: str, args: list[Any]) -> Any:
        return await self._server._server_side_event(event, args)

    def session(self, member: Member) -> Session | None:
        return cast("Socket", member)._current_session()

    def session_taken(self, pid: str) -> None:
        socket = self._server._live_sessions.get(pid)
        if socket is not None:
            socket._taken_over()

    def reset_session(self, member: Member) -> None:
        cast("Socket", member)._reset_session()


class RemoteHandshake:
    """What a remote socket's client presented when it connected (as ``Handshake``)."""

    __slots__ = ("_info",)

    def __init__(self, info: SocketInfo) -> None:
        self._info = info

    @property
    def headers(self) -> Headers:
        return self._info.headers

    @property
    def query(self) -> dict[str, str]:
        return self._info.query

    @property
    def auth(self) -> Any:
        return self._info.auth

    @property
    def url(self) -> str:
        return self._info.url

    @property
    def time(self) -> float:
        return self._info.time

    @property
    def address(self) -> str:
        return self._info.address

    def __repr__(self) -> str:
        return f"RemoteHandshake(url={self.url!r}, address={self.address!r}, auth={self.auth!r})"


class RemoteSocket:
    """A socket connected to another node, as it was when ``fetch_sockets`` asked.

    ``id``, ``joined_rooms``, ``handshake`` and ``data`` are a snapshot (``data`` is a copy:
    changing it changes nothing on the socket's node). ``emit``, ``join``, ``leave`` and
    ``disconnect`` are sent to every node and carried out by the one the socket is on; like every
    cluster message they are delivered at most once.
    """

    __slots__ = ("_adapter", "_info")

    #: Whether the socket is connected to this process (False: a RemoteSocket never is).
    local = False

    def __init__(self, info: SocketInfo, adapter: Adapter) -> None:
        self._info = info
        self._adapter = adapter

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def joined_rooms(self) -> set[str]:
        """The rooms it was in (a copy)."""
        return set(self._info.rooms)

    @property
    def handshake(self) -> RemoteHandshake:
        return RemoteHandshake(self._info)

    @property
    def data(self) -> Any:
        return self._info.data

    @property
    def node(self) -> str:
        """The id of the node the socket is connected to."""
        return self._info.node

    def _self(self) -> BroadcastTarget:
        return BroadcastTarget(rooms=frozenset((self._info.id,)))

    def emit(self, event: str, *args: Any) -> None:
        """Send ``event`` to this socket, through its node."""
        payload, binary = encode_event(check_emit_name(event), args)
        self._adapter.broadcast(payload, binary, self._self())

    def join(self, rooms: str | Iterable[str]) -> None:
        self._adapter.add_sockets(self._self(), room_set(rooms))

    def leave(self, rooms: str | Iterable[str]) -> None:
        self._adapter.remove_sockets(self._self(), room_set(rooms))

    def disconnect(self, close: bool = True) -> None:
        self._adapter.disconnect_sockets(self._self(), close)

    def __repr__(self) -> str:
        return f"<RemoteSocket {self.id} on {self.node} {self.handshake.address}>"
