"""RoomIndex: the two-way index between rooms and their members, a pure data structure.

Rooms map to member sets and members map to their room sets, so a member's departure costs
O(its rooms), never O(all rooms). Members are any hashable objects (the server uses its sockets).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["RoomIndex", "room_set"]

M = TypeVar("M", bound=Hashable)


def room_set(rooms: str | Iterable[str]) -> frozenset[str]:
    """One room name or several, as a frozenset; room names are non-empty strings (ValueError)."""
    names = frozenset((rooms,)) if isinstance(rooms, str) else frozenset(rooms)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"room names are non-empty strings, got {name!r}")
    return names


class RoomIndex(Generic[M]):
    """Rooms and their members; empty rooms disappear."""

    __slots__ = ("_members", "_rooms")

    def __init__(self) -> None:
        self._members: dict[str, set[M]] = {}
        self._rooms: dict[M, set[str]] = {}

    def add(self, member: M, rooms: Iterable[str]) -> None:
        """Put ``member`` in every room of ``rooms``."""
        joined = self._rooms.get(member)
        for room in rooms:
            members = self._members.get(room)
            if members is None:
                self._members[room] = {member}
            else:
                members.add(member)
            if joined is None:
                joined = self._rooms[member] = {room}
            else:
                joined.add(room)

    def remove(self, member: M, room: str) -> bool:
        """Take ``member`` out of ``room``; False when it was not in it."""
        members = self._members.get(room)
        if members is None or member not in members:
            return False
        members.discard(member)
        if not members:
            del self._members[room]
        joined = self._rooms[member]
        joined.discard(room)
        if not joined:
            del self._rooms[member]
        return True

    def remove_member(self, member: M) -> set[str]:
        """Take ``member`` out of all its rooms; return the rooms it was in."""
        joined = self._rooms.pop(member, None)
        if joined is None:
            return set()
        for room in joined:
            members = self._members[room]
            members.discard(member)
            if not members:
                del self._members[room]
        return joined

    def delete_room(self, room: str) -> set[M]:
        """Remove ``room``; return the members it had."""
        members = self._members.pop(room, None)
        if members is None:
            return set()
        for member in members:
            joined = self._rooms[member]
            joined.discard(room)
            if not joined:
                del self._rooms[member]
        return members

    def members(self, room: str) -> set[M]:
        """The live member set of ``room`` (empty when there is no such room). Do not mutate."""
        return self._members.get(room) or set()

    def union(self, rooms: Iterable[str]) -> set[M]:
        """Members of any of ``rooms``, each once."""
        result: set[M] = set()
        for room in rooms:
            members = self._members.get(room)
            if members:
                result |= members
        return result

    def rooms_of(self, member: M) -> set[str]:
        """A copy of the rooms ``member`` is in."""
        joined = self._rooms.get(member)
        return set(joined) if joined else set()

    def in_room(self, member: M, room: str) -> bool:
        members = self._members.get(room)
        return members is not None and member in members

    def size(self, room: str) -> int:
        members = self._members.get(room)
        return len(members) if members else 0

    def room_names(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        """The number of non-empty rooms."""
        return len(self._members)

    def __contains__(self, room: object) -> bool:
        return room in self._members
