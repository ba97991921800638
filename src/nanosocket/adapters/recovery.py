"""RecoveryLog: the in-process log of recent messages and the sessions of lost sockets.

Connection-state recovery (docs/guarantees.md) on one process: every logged envelope gets the next
offset of this log (an integer, from 1) and keeps its target; an epoch (random, per log) tells a
client whose offsets came from another log. Bounded by count (``max_messages``) and age
(``max_disconnection``); sessions by count (``max_sessions``) and age (``max_disconnection``).
Synchronous and without I/O: the MemoryAdapter owns one; a cluster adapter would keep the same
shape in a shared store.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from itertools import islice
from typing import Any

import msgpack

from ..options import RecoveryOptions
from .base import BroadcastTarget, Session

__all__ = ["RecoveryLog", "with_offset"]


def with_offset(payload: bytes, binary: bool, offset: int) -> bytes:
    """The encoded envelope ``payload`` with ``"o": offset`` added (JSON: spliced in; msgpack:
    decoded and encoded again, as binary envelopes are rare)."""
    if not binary:
        # orjson encodes an envelope (a non-empty object) ending with '}'.
        return b'%s,"o":%d}' % (payload[:-1], offset)
    envelope: dict[str, Any] = msgpack.unpackb(payload, raw=False)
    envelope["o"] = offset
    packed: bytes = msgpack.packb(envelope, use_bin_type=True, datetime=False)
    return packed


class _Entry:
    __slots__ = ("binary", "offset", "payload", "target", "time")

    def __init__(
        self, offset: int, now: float, target: BroadcastTarget, payload: bytes, binary: bool
    ) -> None:
        self.offset = offset
        self.time = now
        self.target = target
        self.payload = payload
        self.binary = binary


def _addressed_to(target: BroadcastTarget, socket_id: str, rooms: frozenset[str]) -> bool:
    """Whether a broadcast with ``target`` reached a socket with this id in these rooms."""
    if socket_id in target.except_ids:
        return False
    if target.except_rooms and (
        socket_id in target.except_rooms or not target.except_rooms.isdisjoint(rooms)
    ):
        return False
    wanted = target.rooms
    return not wanted or socket_id in wanted or not wanted.isdisjoint(rooms)


class RecoveryLog:
    """Recent messages with their offsets, and the sessions of lost sockets."""

    __slots__ = ("_entries", "_offset", "_options", "_sessions", "epoch")

    def __init__(self, options: RecoveryOptions) -> None:
        self._options = options
        #: Random per log: offsets of another log (another process, a restart) are not ours.
        self.epoch = secrets.token_urlsafe(9)
        self._offset = 0
        self._entries: deque[_Entry] = deque()
        # pid -> session, oldest loss first (insertion order).
        self._sessions: dict[str, Session] = {}

    @property
    def offset(self) -> int:
        """The offset of the latest message logged (0 before the first)."""
        return self._offset

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # ----------------------------------------------------------------- the log

    def append(self, payload: bytes, binary: bool, target: BroadcastTarget) -> bytes:
        """Log an envelope for ``target``; return it with its offset."""
        offset = self._offset = self._offset + 1
        payload = with_offset(payload, binary, offset)
        now = time.monotonic()
        entries = self._entries
        entries.append(_Entry(offset, now, target, payload, binary))
        self._prune(now)
        return payload

    def _prune(self, now: float) -> None:
        entries = self._entries
        limit = self._options.max_messages
        while len(entries) > limit:
            entries.popleft()
        oldest = now - self._options.max_disconnection
        while entries and entries[0].time < oldest:
            entries.popleft()
        sessions = self._sessions
        while sessions:
            first = next(iter(sessions.values()))
            if first.time >= oldest:
                break
            del sessions[first.pid]

    def covers(self, offset: int) -> bool:
        """Whether every message after ``offset`` is still in the log."""
        first = self._offset - len(self._entries) + 1  # the oldest kept (offset + 1 when empty)
        return first - 1 <= offset <= self._offset

    def replay(self, session: Session, offset: int) -> list[tuple[bytes, bool]] | None:
        self._prune(time.monotonic())
        if not self.covers(offset):
            return None
        entries = self._entries
        start = len(entries) - (self._offset - offset)
        socket_id, rooms = session.socket_id, session.rooms
        return [
            (entry.payload, entry.binary)
            for entry in islice(entries, start, None)
            if _addressed_to(entry.target, socket_id, rooms)
        ]

    # ---------------------------------------------------------------- sessions

    def save(self, session: Session) -> None:
        sessions = self._sessions
        sessions.pop(session.pid, None)
        sessions[session.pid] = session
        while len(sessions) > self._options.max_sessions:
            del sessions[next(iter(sessions))]
        self._prune(time.monotonic())

    def take(self, pid: object, epoch: object, offset: object) -> Session | None:
        if type(pid) is not str:
            return None
        session = self._sessions.pop(pid, None)  # one use, whatever follows
        if session is None or epoch != self.epoch or type(offset) is not int:
            return None
        now = time.monotonic()
        self._prune(now)
        if now - session.time > self._options.max_disconnection or not self.covers(offset):
            return None
        return session
