"""MemoryAdapter: rooms and fan-out inside one process (the default).

It is also the local half of every cluster adapter: a cluster adapter keeps its node's members and
rooms here and adds the traffic between nodes on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import AckError
from ..options import RecoveryOptions
from ..protocol.deflate import OutgoingMessage, prepare_message
from ..protocol.frames import BINARY, TEXT
from ..rooms import RoomIndex
from .base import NO_REPLY, AckResults, Adapter, AdapterStats, BroadcastTarget, Member, Node, Session
from .recovery import RecoveryLog, RoomHistory, TrackedRooms

__all__ = ["AckCollector", "MemoryAdapter"]


class MemoryAdapter(Adapter):
    """Keeps members and rooms in dictionaries; a broadcast writes one frame to each member."""

    __slots__ = ("_by_id", "_compress_from", "_node", "_recovery", "_rooms", "stats")

    def __init__(self) -> None:
        self._by_id: dict[str, Member] = {}
        self._rooms: RoomIndex[Member] = RoomIndex()
        self._node: Node | None = None
        self._compress_from: int | None = None
        #: The log of recent messages and lost sessions; None while recovery is off.
        self._recovery: RecoveryLog | None = None
        self.stats = AdapterStats()

    def attach(self, node: Node) -> None:
        if self._node is not None and self._node is not node:
            raise RuntimeError("this adapter already serves another server: give each server its own")
        self._node = node
        self._compress_from = node.compress_from

    def _require_node(self) -> Node:
        node = self._node
        if node is None:
            raise RuntimeError("the adapter is not attached to a server")
        return node

    # ---------------------------------------------------------------- local

    def register(self, member: Member) -> None:
        self._by_id[member.id] = member

    def unregister(self, member: Member) -> None:
        if self._by_id.get(member.id) is member:
            del self._by_id[member.id]
        self._rooms.remove_member(member)

    def get(self, member_id: str) -> Member | None:
        return self._by_id.get(member_id)

    def local_members(self) -> Iterator[Member]:
        return iter(list(self._by_id.values()))

    def local_count(self) -> int:
        return len(self._by_id)

    def join(self, member: Member, rooms: Iterable[str]) -> None:
        self._rooms.add(member, rooms)

    def leave(self, member: Member, room: str) -> None:
        self._rooms.remove(member, room)

    def rooms_of(self, member: Member) -> set[str]:
        return self._rooms.rooms_of(member)

    def room_names(self) -> list[str]:
        return list(self._rooms.room_names())

    def room_size(self, room: str) -> int:
        return self._rooms.size(room)

    def members(self, target: BroadcastTarget) -> list[Member]:
        rooms = target.rooms
        if not rooms:
            selected: Iterable[Member] = self._by_id.values()
        elif len(rooms) == 1:
            (room,) = rooms
            selected = self._rooms.members(room)
            if not selected and room in self._by_id:
                # A socket id names the room holding just that socket.
                selected = (self._by_id[room],)
        else:
            selected = self._rooms.union(rooms)
            selected.update(self._by_id[r] for r in rooms if r in self._by_id)
        except_ids = target.except_ids
        if target.except_rooms:
            excluded = self._rooms.union(target.except_rooms)
            return [m for m in selected if m not in excluded and m.id not in except_ids]
        if except_ids:
            return [m for m in selected if m.id not in except_ids]
        # A snapshot: a send may end a connection, and the sets must not change while iterated.
        return list(selected)

    def fan_out(self, frame: bytes | OutgoingMessage, target: BroadcastTarget) -> int:
        volatile = target.volatile
        delivered = 0
        for member in self.members(target):
            if member.send_frame(frame, volatile):
                delivered += 1
        return delivered

    def frame(self, payload: bytes, binary: bool) -> bytes | OutgoingMessage:
        """The frame of a broadcast payload for this node's members (built once for all)."""
        return prepare_message(BINARY if binary else TEXT, payload, self._compress_from)

    # ------------------------------------------------- this node's part of cluster operations

    def broadcast(self, payload: bytes, binary: bool, target: BroadcastTarget) -> int:
        if self._recovery is not None and not target.volatile:
            payload = self._recovery.append(payload, binary, target)
        return self.fan_out(prepare_message(BINARY if binary else TEXT, payload, self._compress_from), target)

    # ---------------------------------------------------------------- recovery

    def enable_recovery(self, options: RecoveryOptions) -> None:
        if self._recovery is None:
            self._recovery = log = RecoveryLog(options)
            # The same rooms, from now on recording the room changes of tracked sockets.
            rooms: TrackedRooms[Member] = TrackedRooms(log)
            rooms.take_over(self._rooms)
            self._rooms = rooms

    def _recovery_log(self) -> RecoveryLog:
        log = self._recovery
        if log is None:
            raise RuntimeError("recovery is not enabled on this adapter")
        return log

    def log_message(self, payload: bytes, binary: bool, target: BroadcastTarget) -> bytes | None:
        return self._recovery_log().append(payload, binary, target)

    def recovery_position(self) -> tuple[str, int]:
        log = self._recovery_log()
        return log.epoch, log.offset

    def track_rooms(self, member: Member, session: Session | None) -> None:
        self._recovery_log()  # recovery must be on
        rooms = self._rooms
        assert isinstance(rooms, TrackedRooms)
        rooms.track_session(member, session)

    def room_history(self, member: Member) -> RoomHistory | None:
        rooms = self._rooms
        return rooms.history(member) if isinstance(rooms, TrackedRooms) else None

    def save_session(self, session: Session) -> None:
        self._recovery_log().save(session)

    async def take_session(self, pid: object, epoch: object, offset: object) -> Session | None:
        return self._recovery_log().take(pid, epoch, offset)

    async def replay(self, session: Session, offset: int) -> list[tuple[bytes, bool]] | None:
        return self._recovery_log().replay(session, offset)

    def add_sockets(self, target: BroadcastTarget, rooms: frozenset[str]) -> None:
        for member in self.members(target):
            self.join(member, rooms)

    def remove_sockets(self, target: BroadcastTarget, rooms: frozenset[str]) -> None:
        for member in self.members(target):
            for room in rooms:
                self.leave(member, room)

    def disconnect_sockets(self, target: BroadcastTarget, close: bool) -> None:
        node = self._require_node()
        for member in self.members(target):
            node.disconnect(member, close)

    def delete_room(self, room: str) -> None:
        self._rooms.delete_room(room)

    async def fetch_sockets(self, target: BroadcastTarget, timeout: float | None = None) -> list[Any]:
        return list(self.members(target))

    def server_side_emit(self, event: str, args: list[Any]) -> None:
        """No other node: nothing to do."""

    async def server_side_emit_with_ack(
        self, event: str, args: list[Any], timeout: float | None = None
    ) -> list[Any]:
        return []

    async def fetch_room_names(self, timeout: float | None = None) -> set[str]:
        return set(self._rooms.room_names())

    async def fetch_room_size(self, room: str, timeout: float | None = None) -> int:
        return self._rooms.size(room)

    async def broadcast_with_ack(
        self, payload: bytes, binary: bool, ack_id: int, target: BroadcastTarget, timeout: float
    ) -> AckResults:
        collector = AckCollector(())
        collector.watch_all(self.send_expecting_acks(payload, binary, ack_id, target, timeout))
        return await collector.wait(timeout)

    def send_expecting_acks(
        self, payload: bytes, binary: bool, ack_id: int, target: BroadcastTarget, timeout: float
    ) -> list[tuple[str, asyncio.Future[Any]]]:
        """Write an envelope asking for ``ack_id`` (encoded in ``payload``) to the selected local
        members, framed once; return (member id, future of its reply) for each it was written to."""
        node = self._require_node()
        members = self.members(target)
        if not members:
            return []
        frame = self.frame(payload, binary)
        sent: list[tuple[str, asyncio.Future[Any]]] = []
        for member in members:
            future = node.expect_ack(member, ack_id, timeout)
            if future is None:
                continue
            if member.send_frame(frame, target.volatile):
                sent.append((member.id, future))
            else:
                future.cancel()
        return sent

    async def run_server_side(self, event: str, args: list[Any]) -> tuple[bool, Any]:
        """Run this node's handlers of a server-side event: (answered, reply)."""
        result = await self._require_node().server_side_event(event, args)
        return (False, None) if result is NO_REPLY else (True, result)


class AckCollector:
    """The acknowledgements of one broadcast: from local futures and from other nodes' reports.

    Done when every node expected to report has said which sockets it sent to, and every one of
    those sockets answered; ``wait(timeout)`` returns what came by then.
    """

    __slots__ = ("_done", "_expected", "_nodes", "by_socket", "errors")

    def __init__(self, nodes: Iterable[str]) -> None:
        self.by_socket: dict[str, Any] = {}
        self.errors: dict[str, AckError] = {}
        self._expected: set[str] = set()
        self._nodes = set(nodes)
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def expect(self, socket_ids: Iterable[str]) -> None:
        """The message was written to these sockets."""
        for socket_id in socket_ids:
            if socket_id not in self.by_socket and socket_id not in self.errors:
                self._expected.add(socket_id)
        self._check()

    def node_reported(self, node: str, socket_ids: Iterable[str]) -> None:
        self._nodes.discard(node)
        self.expect(socket_ids)

    def node_gone(self, node: str) -> None:
        """A node left the cluster: stop waiting for its report."""
        self._nodes.discard(node)
        self._check()

    def answer(self, socket_id: str, value: Any) -> None:
        self._expected.discard(socket_id)
        self.by_socket[socket_id] = value
        self._check()

    def fail(self, socket_id: str, error: AckError) -> None:
        self._expected.discard(socket_id)
        self.errors[socket_id] = error
        self._check()

    def watch_all(self, sent: Iterable[tuple[str, asyncio.Future[Any]]]) -> None:
        """Local sockets the message was written to, with the futures of their replies."""
        sent = list(sent)
        for socket_id, future in sent:
            self.watch(socket_id, future)
        self.expect(socket_id for socket_id, _ in sent)

    @property
    def waiting_nodes(self) -> frozenset[str]:
        """The nodes that have not reported yet."""
        return frozenset(self._nodes)

    def give_up_on_nodes(self) -> None:
        """The request could not reach the other nodes: stop waiting for them (they stay listed
        in ``silent_nodes``)."""
        if self._nodes and not self._done.done() and not self._expected:
            self._done.set_result(None)

    def watch(self, socket_id: str, future: asyncio.Future[Any]) -> None:
        """A local socket's pending ack."""

        def settled(done: asyncio.Future[Any]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is None:
                self.answer(socket_id, done.result())
            elif isinstance(error, AckError):
                self.fail(socket_id, error)
            # Anything else (a timeout, the connection closing) leaves it missing.

        future.add_done_callback(settled)

    def _check(self) -> None:
        if not self._expected and not self._nodes and not self._done.done():
            self._done.set_result(None)

    @property
    def finished(self) -> bool:
        return self._done.done()

    async def wait(self, timeout: float) -> AckResults:
        """The results once complete, or when ``timeout`` seconds have passed."""
        if not self._done.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._done), timeout)
            except TimeoutError:
                pass
        return AckResults(
            dict(self.by_socket), dict(self.errors), frozenset(self._expected), frozenset(self._nodes)
        )
