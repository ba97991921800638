"""MemoryAdapter: rooms and fan-out inside one process (the default)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..protocol.deflate import OutgoingMessage
from ..rooms import RoomIndex
from .base import Adapter, BroadcastTarget, Member

__all__ = ["MemoryAdapter"]


class MemoryAdapter(Adapter):
    """Keeps members and rooms in dictionaries; a broadcast writes one frame to each member."""

    __slots__ = ("_by_id", "_rooms")

    def __init__(self) -> None:
        self._by_id: dict[str, Member] = {}
        self._rooms: RoomIndex[Member] = RoomIndex()

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

    def delete_room(self, room: str) -> None:
        self._rooms.delete_room(room)

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

    def broadcast(self, frame: bytes | OutgoingMessage, target: BroadcastTarget) -> int:
        volatile = target.volatile
        delivered = 0
        for member in self.members(target):
            if member.send_frame(frame, volatile):
                delivered += 1
        return delivered
