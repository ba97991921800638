"""RecoveryLog: offsets, targets, bounds and one-use sessions, with values only (no sockets)."""

from __future__ import annotations

import time
from collections import deque

import msgpack
import orjson
import pytest

from nanosocket.adapters.base import BroadcastTarget, Session
from nanosocket.adapters.recovery import (
    RecoveryLog,
    RoomHistory,
    TrackedRooms,
    decode_session,
    encode_session,
    with_offset,
)
from nanosocket.errors import ConfigurationError
from nanosocket.options import RecoveryOptions


def envelope(n: int) -> bytes:
    return orjson.dumps({"event": "e", "data": [n]})


def session(pid: str = "p", sid: str = "s", rooms: frozenset[str] = frozenset({"a"})) -> Session:
    return Session(pid, sid, rooms, {"k": 1}, time.monotonic())


def test_offsets_are_spliced_into_json_and_msgpack() -> None:
    assert orjson.loads(with_offset(envelope(1), False, 7)) == {"event": "e", "data": [1], "o": 7}
    packed = msgpack.packb({"event": "e", "data": [b"\x00"]}, use_bin_type=True)
    assert msgpack.unpackb(with_offset(packed, True, 8), raw=False) == {
        "event": "e",
        "data": [b"\x00"],
        "o": 8,
    }


def test_offsets_increase_and_replay_follows_targets() -> None:
    log = RecoveryLog(RecoveryOptions())
    assert log.offset == 0 and log.covers(0)
    targets = [
        BroadcastTarget(rooms=frozenset({"a"})),  # 1: its room
        BroadcastTarget(rooms=frozenset({"b"})),  # 2: another room
        BroadcastTarget(rooms=frozenset({"s"})),  # 3: its id
        BroadcastTarget(),  # 4: everyone
        BroadcastTarget(except_rooms=frozenset({"a"})),  # 5: everyone but its room
        BroadcastTarget(rooms=frozenset({"a"}), except_ids=frozenset({"s"})),  # 6: socket.to from it
        BroadcastTarget(rooms=frozenset({"a", "b"}), except_rooms=frozenset({"x"})),  # 7
    ]
    for n, target in enumerate(targets, 1):
        assert orjson.loads(log.append(envelope(n), False, target))["o"] == n
    replayed = log.replay(session(), 0)
    assert replayed is not None
    assert [orjson.loads(payload)["data"][0] for payload, _ in replayed] == [1, 3, 4, 7]
    tail = log.replay(session(), 3)
    assert tail is not None and [orjson.loads(p)["o"] for p, _ in tail] == [4, 7]
    assert log.replay(session(), 7) == []
    assert log.replay(session(), 8) is None  # an offset the log never had


def test_the_log_is_bounded_and_says_when_it_lost_a_gap() -> None:
    log = RecoveryLog(RecoveryOptions(max_messages=3))
    for n in range(1, 6):
        log.append(envelope(n), False, BroadcastTarget())
    assert len(log) == 3 and log.offset == 5
    assert not log.covers(1) and log.covers(2) and log.covers(5)
    assert log.replay(session(), 1) is None
    replayed = log.replay(session(), 2)
    assert replayed is not None and len(replayed) == 3


def test_sessions_are_taken_once_and_need_the_epoch() -> None:
    log = RecoveryLog(RecoveryOptions())
    log.save(session("p1"))
    assert log.take("unknown", log.epoch, 0) is None
    assert log.take("p1", "another epoch", 0) is None  # spent all the same
    assert log.take("p1", log.epoch, 0) is None
    log.save(session("p2"))
    taken = log.take("p2", log.epoch, 0)
    assert taken is not None and taken.socket_id == "s" and taken.data == {"k": 1}
    assert log.take("p2", log.epoch, 0) is None
    assert log.take(None, log.epoch, 0) is None
    log.save(session("p3"))
    assert log.take("p3", log.epoch, "0") is None


def test_sessions_are_bounded_and_expire() -> None:
    log = RecoveryLog(RecoveryOptions(max_sessions=2))
    for n in range(3):
        log.save(session(f"p{n}"))
    assert log.session_count == 2
    assert log.take("p0", log.epoch, 0) is None
    assert log.take("p2", log.epoch, 0) is not None
    short = RecoveryLog(RecoveryOptions(max_disconnection=0.5))
    short.save(Session("old", "s", frozenset(), None, time.monotonic() - 1.0))
    assert short.take("old", short.epoch, 0) is None


def test_two_logs_have_different_epochs() -> None:
    assert RecoveryLog(RecoveryOptions()).epoch != RecoveryLog(RecoveryOptions()).epoch


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_disconnection", 0),
        ("max_messages", 0),
        ("max_sessions", -1),
        ("skip_middleware", 1),
        ("max_room_changes", 0),
    ],
)
def test_options_are_validated(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=f"recovery.{field}"):
        RecoveryOptions(**{field: value})  # type: ignore[arg-type]


def numbers(replayed: list[tuple[bytes, bool]] | None) -> list[int]:
    assert replayed is not None
    return [orjson.loads(payload)["data"][0] for payload, _ in replayed]


def test_replay_follows_the_rooms_at_each_offset() -> None:
    log = RecoveryLog(RecoveryOptions())
    rooms: TrackedRooms[str] = TrackedRooms(log)
    rooms.add("s", ["a"])  # before tracking: where it starts
    history = RoomHistory()
    rooms.track("s", history)
    to = {name: BroadcastTarget(rooms=frozenset({name})) for name in "abc"}
    log.append(envelope(1), False, to["b"])  # 1: not in b yet
    rooms.add("s", ["b", "a"])  # only b is a change
    log.append(envelope(2), False, to["b"])  # 2
    log.append(envelope(3), False, BroadcastTarget(except_rooms=frozenset({"a"})))  # 3: in a
    rooms.remove("s", "a")
    log.append(envelope(4), False, to["a"])  # 4: left a
    log.append(envelope(5), False, BroadcastTarget(except_rooms=frozenset({"a"})))  # 5
    rooms.add("s", ["a"])
    log.append(envelope(6), False, to["a"])  # 6: back in a
    rooms.delete_room("b")
    log.append(envelope(7), False, to["b"])  # 7: b is gone
    assert history.changes == deque([(1, "b", True), (3, "a", False), (5, "a", True), (6, "b", False)])
    lost = Session("p", "s", frozenset(rooms.rooms_of("s")), None, time.monotonic(), history)
    assert lost.rooms == {"a"}
    assert numbers(log.replay(lost, 0)) == [2, 5, 6]
    assert numbers(log.replay(lost, 3)) == [5, 6]
    assert numbers(log.replay(lost, 6)) == []
    # Leaving the index stops the tracking.
    assert rooms.remove_member("s") == {"a"}
    rooms.add("s", ["z"])
    assert len(history.changes) == 4


def test_a_history_beyond_its_cap_refuses_older_offsets() -> None:
    log = RecoveryLog(RecoveryOptions(max_room_changes=2))
    rooms: TrackedRooms[str] = TrackedRooms(log)
    history = RoomHistory()
    rooms.track("s", history)
    log.append(envelope(1), False, BroadcastTarget())
    rooms.add("s", ["a"])  # at 1
    log.append(envelope(2), False, BroadcastTarget())
    rooms.remove("s", "a")  # at 2
    rooms.add("s", ["a"])  # at 2: the change at 1 goes
    assert history.dropped == 1 and len(history.changes) == 2
    log.save(Session("p1", "s", frozenset({"a"}), None, time.monotonic(), history))
    assert log.take("p1", log.epoch, 0) is None  # needs the change at 1
    log.save(Session("p2", "s", frozenset({"a"}), None, time.monotonic(), history))
    assert log.replay(Session("p", "s", frozenset({"a"}), None, time.monotonic(), history), 0) is None
    taken = log.take("p2", log.epoch, 1)
    assert taken is not None and numbers(log.replay(taken, 1)) == [2]


def test_changes_older_than_the_log_are_let_go() -> None:
    log = RecoveryLog(RecoveryOptions(max_messages=2))
    rooms: TrackedRooms[str] = TrackedRooms(log)
    history = RoomHistory()
    rooms.track("s", history)
    for n in range(1, 5):
        log.append(envelope(n), False, BroadcastTarget(rooms=frozenset({"a"})))
        if n % 2:
            rooms.add("s", ["a"])
        else:
            rooms.remove("s", "a")
    # The log keeps 3 and 4: a client is at 2 or later, for which the changes made at 1 and 2
    # are in its rooms already.
    assert [offset for offset, _, _ in history.changes] == [3, 4] and history.dropped == 2
    session = Session("p", "s", frozenset(), None, time.monotonic(), history)
    assert numbers(log.replay(session, 2)) == [4]


# ------------------------------------------------------------- session records (RedisAdapter)


def test_a_session_record_round_trips_through_msgpack() -> None:
    history = RoomHistory()
    history.changes.extend([(3, "a", True), (5, "b", False)])
    history.dropped = 2
    kept = Session("p", "s", frozenset({"a", "c"}), {"k": [1, "x", b"\x00"], "n": None}, 0.0, history)
    record = decode_session("p", encode_session(kept, "E", True), 5.0)
    assert record.epoch == "E" and record.lost is True
    back = record.session
    assert (back.pid, back.socket_id, back.rooms, back.data, back.time) == (
        "p",
        "s",
        kept.rooms,
        kept.data,
        5.0,
    )
    assert back.history is not None and list(back.history.changes) == list(history.changes)
    assert back.history.dropped == 2


def test_socket_data_msgpack_cannot_encode_is_a_clear_error() -> None:
    kept = Session("p", "s", frozenset(), {"when": object()}, 0.0)
    with pytest.raises(TypeError, match=r"socket\.data cannot be encoded with msgpack"):
        encode_session(kept, "E", False)


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # not msgpack
        msgpack.packb([2, "s", [], [], 0, None, "E", False]),  # another version
        msgpack.packb([1, "s", ["a", 1], [], 0, None, "E", False]),  # a room that is not a string
        msgpack.packb([1, "s", [], [[1, "a"]], 0, None, "E", False]),  # a malformed change
        msgpack.packb([1, "s", [], [], 0, [1], "E", False]),  # data that is not a dict
        msgpack.packb(msgpack.ExtType(1, b"x")),  # an extension type
    ],
)
def test_a_malformed_session_record_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="session"):
        decode_session("p", data, 0.0)
