"""RecoveryLog: the in-process log of recent messages and the sessions of lost sockets.

Connection-state recovery (docs/guarantees.md) on one process: every logged envelope gets the next
offset of this log (an integer, from 1) and keeps its target; an epoch (random, per log) tells a
client whose offsets came from another log. Bounded by count (``max_messages``) and age
(``max_disconnection``); sessions by count (``max_sessions``) and age (``max_disconnection``).
Synchronous and without I/O: the MemoryAdapter owns one; the RedisAdapter keeps the same shape in
Redis (adapters/redis_log.py) and shares the pure parts here: the entries, the selection of what
to replay, the room-change records, and the msgpack form of a session.

A message is replayed to a socket when the socket was among its recipients when it was sent: its
room changes since its session began are kept as (offset at the change, room, joined) in a
``RoomHistory`` (``TrackedRooms`` records them), so that its rooms at any logged offset can be
told from its rooms at the loss.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from collections.abc import Set as AbstractSet
from itertools import islice
from typing import Any, NamedTuple, Protocol, TypeVar

import msgpack

from ..options import RecoveryOptions
from ..rooms import RoomIndex
from .base import BroadcastTarget, Session

__all__ = [
    "LogEntry",
    "RecoveryLog",
    "RoomHistory",
    "SessionRecord",
    "TrackedRooms",
    "decode_session",
    "encode_session",
    "record_change",
    "select_replay",
    "with_offset",
]

M = TypeVar("M", bound=Hashable)


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


class LogEntry:
    """One logged message: its offset, when it was logged, its target and its envelope."""

    __slots__ = ("binary", "offset", "payload", "target", "time")

    def __init__(
        self, offset: int, now: float, target: BroadcastTarget, payload: bytes, binary: bool
    ) -> None:
        self.offset = offset
        self.time = now
        self.target = target
        self.payload = payload
        self.binary = binary


def _addressed_to(target: BroadcastTarget, socket_id: str, rooms: AbstractSet[str]) -> bool:
    """Whether a broadcast with ``target`` reached a socket with this id in these rooms."""
    if socket_id in target.except_ids:
        return False
    if target.except_rooms and (
        socket_id in target.except_rooms or not target.except_rooms.isdisjoint(rooms)
    ):
        return False
    wanted = target.rooms
    return not wanted or socket_id in wanted or not wanted.isdisjoint(rooms)


class RoomHistory:
    """A socket's room changes since its session began, oldest first: (the log's offset when the
    change was made, room, True for joined / False for left). Only changes that changed something
    are kept (joining a room it is in is none), so undoing them from its rooms at the loss, newest
    first, gives its rooms at any earlier offset. Bounded (``max_room_changes``): ``dropped`` is the
    offset of the newest change let go (0: none), before which no replay can be exact."""

    __slots__ = ("changes", "dropped")

    def __init__(self) -> None:
        self.changes: deque[tuple[int, str, bool]] = deque()
        self.dropped = 0

    def covers(self, offset: int) -> bool:
        """Whether every change that matters for the messages after ``offset`` is kept."""
        return self.dropped <= offset


class ChangeRecorder(Protocol):
    """Where TrackedRooms records room changes: a log that knows its current offset."""

    def record(self, history: RoomHistory, room: str, joined: bool) -> None: ...


def record_change(history: RoomHistory, change: tuple[int, str, bool], first: int, cap: int) -> None:
    """Record in ``history`` a change (the offset of the last message before it, the room,
    joined or left); changes before ``first`` (the oldest offset a replay may still need) are
    let go, and at most ``cap`` are kept."""
    changes = history.changes
    # A change at an offset below the oldest kept message matters to no possible replay
    # (a client's offset is at least the oldest's minus one).
    while changes and changes[0][0] < first:
        history.dropped = max(history.dropped, changes.popleft()[0])
    if len(changes) >= cap:
        history.dropped = changes.popleft()[0]
    changes.append(change)


class TrackedRooms(RoomIndex[M]):
    """The room index of an adapter with recovery on: the room changes of the members it tracks
    (accepted sockets) go to their RoomHistory, with the log's offset at the change;
    ``on_change`` (when given) hears which member changed."""

    __slots__ = ("_histories", "_log", "_on_change")

    def __init__(self, log: ChangeRecorder, on_change: Callable[[M], None] | None = None) -> None:
        super().__init__()
        self._log = log
        self._histories: dict[M, RoomHistory] = {}
        self._on_change = on_change

    def take_over(self, index: RoomIndex[M]) -> None:
        """Hold the memberships of ``index``, the adapter's index before recovery was enabled
        (none of its members is tracked yet, so nothing is recorded)."""
        for room in list(index.room_names()):
            for member in list(index.members(room)):
                self.add(member, (room,))

    def track_session(self, member: M, session: Session | None) -> None:
        """Record ``member``'s room changes from its acceptance on: in the history of the
        ``session`` it recovers (None: a fresh one). Rooms it joined before acceptance (by a
        middleware) besides the session's are recorded as joined now."""
        history = RoomHistory()
        if session is not None:
            if session.history is not None:
                history = session.history
            for room in sorted(self.rooms_of(member) - session.rooms):
                self._log.record(history, room, True)
        self.track(member, history)

    def track(self, member: M, history: RoomHistory) -> None:
        """Record ``member``'s room changes from now on in ``history``."""
        self._histories[member] = history

    def history(self, member: M) -> RoomHistory | None:
        return self._histories.get(member)

    def tracked(self) -> list[M]:
        """The members whose changes are recorded."""
        return list(self._histories)

    def _record(self, member: M, history: RoomHistory, room: str, joined: bool) -> None:
        self._log.record(history, room, joined)
        if self._on_change is not None:
            self._on_change(member)

    def add(self, member: M, rooms: Iterable[str]) -> None:
        history = self._histories.get(member)
        if history is not None:
            rooms = [room for room in rooms if not self.in_room(member, room)]
            for room in rooms:
                self._record(member, history, room, True)
        super().add(member, rooms)

    def remove(self, member: M, room: str) -> bool:
        removed = super().remove(member, room)
        if removed:
            history = self._histories.get(member)
            if history is not None:
                self._record(member, history, room, False)
        return removed

    def remove_member(self, member: M) -> set[str]:
        """Take ``member`` out of all its rooms (it is gone, nothing is recorded) and stop tracking it."""
        self._histories.pop(member, None)
        return super().remove_member(member)

    def delete_room(self, room: str) -> set[M]:
        members = super().delete_room(room)
        histories = self._histories
        for member in members:
            history = histories.get(member)
            if history is not None:
                self._record(member, history, room, False)
        return members


def select_replay(
    session: Session, offset: int, entries: Iterable[LogEntry]
) -> list[tuple[bytes, bool]] | None:
    """Of ``entries`` (every logged message after ``offset``, in order), the envelopes addressed
    to the session's socket: it was a recipient when each was sent (its rooms at the loss, with
    its room changes since ``offset`` undone). None when its changes after ``offset`` are no
    longer all known."""
    history = session.history
    later: list[tuple[int, str, bool]] = []
    if history is not None:
        if not history.covers(offset):
            return None
        later = [change for change in history.changes if change[0] > offset]
    # Its rooms for the first message after ``offset``: its rooms at the loss, with the
    # changes made since undone, newest first.
    rooms = set(session.rooms)
    for _, room, joined in reversed(later):
        if joined:
            rooms.discard(room)
        else:
            rooms.add(room)
    socket_id = session.socket_id
    replayed: list[tuple[bytes, bool]] = []
    pending, count = 0, len(later)
    for entry in entries:
        # A change at offset n was made after message n: it applies from message n + 1 on.
        while pending < count and later[pending][0] < entry.offset:
            _, room, joined = later[pending]
            if joined:
                rooms.add(room)
            else:
                rooms.discard(room)
            pending += 1
        if _addressed_to(entry.target, socket_id, rooms):
            replayed.append((entry.payload, entry.binary))
    return replayed


class SessionRecord(NamedTuple):
    """A session as a shared store keeps it: the session, the epoch of the log its offsets are
    from, and whether its connection was seen lost (False: still live when written)."""

    session: Session
    epoch: str
    lost: bool


def encode_session(session: Session, epoch: str, lost: bool) -> bytes:
    """The msgpack form of a session (never pickle). ``socket.data`` must be msgpack-able as it
    is (None, bool, int, float, str, bytes, lists, tuples, dicts): TypeError (or ValueError)
    otherwise, naming what is not."""
    history = session.history
    changes = [list(change) for change in history.changes] if history is not None else []
    record = [
        1,
        session.socket_id,
        sorted(session.rooms),
        changes,
        history.dropped if history is not None else 0,
        session.data,
        epoch,
        lost,
    ]
    try:
        packed: bytes = msgpack.packb(record, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"socket.data cannot be encoded with msgpack: {exc}") from None
    return packed


def decode_session(pid: str, data: bytes, now: float) -> SessionRecord:
    """The session ``encode_session`` wrote; ValueError for anything else."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_no_ext)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ValueError(f"not a session ({type(exc).__name__})") from None
    if type(value) is not list or len(value) != 8 or value[0] != 1:
        raise ValueError("not a session record of this version")
    _, socket_id, rooms, changes, dropped, session_data, epoch, lost = value
    if (
        type(socket_id) is not str
        or type(rooms) is not list
        or not all(type(room) is str for room in rooms)
        or type(changes) is not list
        or type(dropped) is not int
        or not (session_data is None or type(session_data) is dict)
        or type(epoch) is not str
        or type(lost) is not bool
    ):
        raise ValueError("a session record with a field of the wrong type")
    history = RoomHistory()
    for change in changes:
        if (
            type(change) is not list
            or len(change) != 3
            or type(change[0]) is not int
            or type(change[1]) is not str
            or type(change[2]) is not bool
        ):
            raise ValueError("a session record with a malformed room change")
        history.changes.append((change[0], change[1], change[2]))
    history.dropped = dropped
    return SessionRecord(Session(pid, socket_id, frozenset(rooms), session_data, now, history), epoch, lost)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code}")


class RecoveryLog:
    """Recent messages with their offsets, and the sessions of lost sockets."""

    __slots__ = ("_entries", "_offset", "_options", "_sessions", "epoch")

    def __init__(self, options: RecoveryOptions) -> None:
        self._options = options
        #: Random per log: offsets of another log (another process, a restart) are not ours.
        self.epoch = secrets.token_urlsafe(9)
        self._offset = 0
        self._entries: deque[LogEntry] = deque()
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
        entries.append(LogEntry(offset, now, target, payload, binary))
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

    def record(self, history: RoomHistory, room: str, joined: bool) -> None:
        """A tracked socket joined or left ``room`` now (after the message of the current offset)."""
        first = self._offset - len(self._entries) + 1
        record_change(history, (self._offset, room, joined), first, self._options.max_room_changes)

    def replay(self, session: Session, offset: int) -> list[tuple[bytes, bool]] | None:
        self._prune(time.monotonic())
        if not self.covers(offset):
            return None
        entries = self._entries
        start = len(entries) - (self._offset - offset)
        return select_replay(session, offset, islice(entries, start, None))

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
        if session.history is not None and not session.history.covers(offset):
            return None  # its room changes after ``offset`` are no longer all known
        return session
