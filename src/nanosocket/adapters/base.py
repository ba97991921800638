"""The Adapter interface: everything the server asks of rooms, membership and fan-out.

The server talks to its adapter for every operation that would have to cross a process boundary
in a cluster; ``MemoryAdapter`` is the single-process default. Members are the server's sockets,
seen only through the small ``Member`` protocol, so adapters never import server internals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..protocol.deflate import OutgoingMessage

__all__ = ["Adapter", "BroadcastTarget", "Member"]


class Member(Protocol):
    """What an adapter needs of a local socket."""

    @property
    def id(self) -> str: ...

    def __hash__(self) -> int: ...

    def send_frame(self, frame: bytes | OutgoingMessage, volatile: bool = False) -> object:
        """Write a ready-made frame (an OutgoingMessage is framed for this member: compressed when
        it negotiated compression); a volatile frame is dropped rather than queued when slow."""
        ...


@dataclass(frozen=True, slots=True)
class BroadcastTarget:
    """Who a broadcast goes to: members of any of ``rooms`` (all members when empty), except
    members of any of ``except_rooms`` and the members whose id is in ``except_ids``."""

    rooms: frozenset[str] = frozenset()
    except_rooms: frozenset[str] = frozenset()
    except_ids: frozenset[str] = frozenset()
    volatile: bool = False


class Adapter(ABC):
    """Rooms, membership and fan-out for one server."""

    @abstractmethod
    def register(self, member: Member) -> None:
        """A socket connected."""

    @abstractmethod
    def unregister(self, member: Member) -> None:
        """A socket is gone: forget it and take it out of every room."""

    @abstractmethod
    def get(self, member_id: str) -> Member | None:
        """The local member with this id."""

    @abstractmethod
    def local_members(self) -> Iterator[Member]:
        """Every local member."""

    @abstractmethod
    def local_count(self) -> int:
        """How many local members there are."""

    @abstractmethod
    def join(self, member: Member, rooms: Iterable[str]) -> None:
        """Put a member in rooms."""

    @abstractmethod
    def leave(self, member: Member, room: str) -> None:
        """Take a member out of a room."""

    @abstractmethod
    def rooms_of(self, member: Member) -> set[str]:
        """The rooms a member is in (a copy)."""

    @abstractmethod
    def room_names(self) -> list[str]:
        """Every non-empty room."""

    @abstractmethod
    def room_size(self, room: str) -> int:
        """How many members a room has."""

    @abstractmethod
    def delete_room(self, room: str) -> None:
        """Empty a room; its members stay connected."""

    @abstractmethod
    def members(self, target: BroadcastTarget) -> list[Member]:
        """The members a broadcast with this target would reach, each once."""

    @abstractmethod
    def broadcast(self, frame: bytes | OutgoingMessage, target: BroadcastTarget) -> int:
        """Write ``frame`` to every member the target selects; return how many got it.

        An OutgoingMessage is passed to every member as is: it builds each variant of the frame
        (uncompressed, compressed per window size) once, on first need.
        """

    async def close(self) -> None:  # noqa: B027 - a no-op default, not an abstract method
        """Release the adapter's resources when the server closes (nothing to release by default)."""
