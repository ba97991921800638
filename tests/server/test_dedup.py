"""At-least-once emits on the server: a message with a client message id (``mid``) runs its
handler for the first copy only, and every copy's ack is answered with the first run's reply
(docs/protocol.md "At-least-once emits"). Raw v1 clients over real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from server_kit import Harness, Peer, Recorder, until

from nanosocket import NanoSocket, Socket

MID = "c2VjcmV0cHJlZml4-1"


async def connected(ns: Harness, **options: Any) -> tuple[NanoSocket, Peer, Recorder]:
    """A server whose ``order`` handler records its calls and answers ``("ok", n)``."""
    server = await ns.start(**options)
    runs = Recorder()

    @server.on("connection")
    def connection(socket: Socket) -> None:
        @socket.on("order")
        def order(n: Any) -> Any:
            runs(n)
            return ["ok", n]

        @socket.on("fail")
        def fail(n: Any) -> None:
            runs(n)
            raise ValueError(f"refused {n}")

        @socket.on("blob")
        def blob(size: int) -> bytes:
            runs(size)
            return b"\x00" * size

    return server, await ns.v1(server), runs


def reliable(peer: Peer, event: str, arg: Any, ack: int, mid: str = MID) -> None:
    peer.send({"event": event, "data": [arg], "ack": ack, "mid": mid})


async def test_the_connect_answer_tells_the_window(ns: Harness) -> None:
    server = await ns.start(dedup_window=42.5)
    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    (answer,) = await peer.expect("$connect")
    assert answer["dedup_window"] == 42.5


async def test_a_copy_gets_the_first_runs_reply_and_the_handler_runs_once(ns: Harness) -> None:
    server, peer, runs = await connected(ns)
    reliable(peer, "order", 1, ack=7)
    assert await peer.expect_ack(7) == {"ack": 7, "data": [["ok", 1]]}
    # A copy (its ack lost, say) with the same ack id, then one with another.
    reliable(peer, "order", 1, ack=7)
    assert await peer.expect_ack(7) == {"ack": 7, "data": [["ok", 1]]}
    reliable(peer, "order", 1, ack=8)
    assert await peer.expect_ack(8) == {"ack": 8, "data": [["ok", 1]]}
    assert runs.calls == [(1,)]
    assert server.adapter.stats.duplicates == 2
    # Another id runs the handler again; a copy on another connection (the client reconnected)
    # gets the first reply.
    reliable(peer, "order", 2, ack=9, mid=MID + "0")
    assert await peer.expect_ack(9) == {"ack": 9, "data": [["ok", 2]]}
    other = await ns.v1(server)
    reliable(other, "order", 1, ack=1)
    assert await other.expect_ack(1) == {"ack": 1, "data": [["ok", 1]]}
    assert runs.calls == [(1,), (2,)]


async def test_an_error_reply_is_kept_too(ns: Harness) -> None:
    _, peer, runs = await connected(ns)
    reliable(peer, "fail", 3, ack=1)
    first = await peer.expect_ack(1)
    assert first == {"ack": 1, "error": {"message": "refused 3", "type": "ValueError"}}
    reliable(peer, "fail", 3, ack=2)
    assert await peer.expect_ack(2) == {"ack": 2, "error": first["error"]}
    assert runs.calls == [(3,)]


async def test_a_binary_reply_is_kept_as_msgpack(ns: Harness) -> None:
    _, peer, runs = await connected(ns)
    reliable(peer, "blob", 4, ack=1)
    assert await peer.expect_ack(1) == {"ack": 1, "data": [b"\x00" * 4]}
    reliable(peer, "blob", 4, ack=2)
    raw = await peer.recv_raw()
    assert isinstance(raw, bytes)
    assert msgpack.unpackb(raw) == {"ack": 2, "data": [b"\x00" * 4]}
    assert runs.calls == [(4,)]


async def test_a_copy_while_the_first_run_is_in_progress_is_answered_when_it_completes(ns: Harness) -> None:
    server = await ns.start()
    release = asyncio.Event()
    runs = Recorder()

    @server.on("connection")
    def connection(socket: Socket) -> None:
        @socket.on("slow")
        async def slow(n: int) -> int:
            runs(n)
            await release.wait()
            return n * 10

    first, second = await ns.v1(server), await ns.v1(server)
    reliable(first, "slow", 5, ack=1)
    await runs.wait(1)
    reliable(first, "slow", 5, ack=2)  # same connection
    reliable(second, "slow", 5, ack=3)  # another connection (the client reconnected)
    await until(lambda: server.adapter.stats.duplicates == 2)
    release.set()
    replies = {(await first.recv())["ack"], (await first.recv())["ack"]}
    assert replies == {1, 2}
    assert await second.expect_ack(3) == {"ack": 3, "data": [50]}
    assert runs.calls == [(5,)]


async def test_the_window_ends_and_a_late_copy_runs_again(ns: Harness) -> None:
    _, peer, runs = await connected(ns, dedup_window=0.2)
    reliable(peer, "order", 1, ack=1)
    await peer.expect_ack(1)
    await asyncio.sleep(0.3)  # outlast the window
    reliable(peer, "order", 1, ack=2)
    assert await peer.expect_ack(2) == {"ack": 2, "data": [["ok", 1]]}
    assert runs.calls == [(1,), (1,)]


async def test_the_oldest_ids_go_first_over_the_count_bound(ns: Harness) -> None:
    server, peer, runs = await connected(ns, dedup_max_entries=2)
    for n in range(3):
        reliable(peer, "order", n, ack=n, mid=f"{MID}-{n}")
        await peer.expect_ack(n)
    assert server.adapter.stats.dedup_evicted == 1
    reliable(peer, "order", 2, ack=10, mid=f"{MID}-2")  # still known
    await peer.expect_ack(10)
    reliable(peer, "order", 0, ack=11, mid=f"{MID}-0")  # forgotten: runs again
    await peer.expect_ack(11)
    assert runs.calls == [(0,), (1,), (2,), (0,)]


async def test_the_oldest_replies_go_first_over_the_byte_bound(ns: Harness) -> None:
    server, peer, runs = await connected(ns, dedup_max_bytes=40, dedup_max_reply=40)
    for n in range(3):
        reliable(peer, "blob", 12, ack=n, mid=f"{MID}-{n}")  # 15 bytes of msgpack each
        await peer.expect_ack(n)
    assert server.adapter.stats.dedup_evicted == 1
    reliable(peer, "blob", 12, ack=10, mid=f"{MID}-0")
    await peer.expect_ack(10)
    assert len(runs.calls) == 4


async def test_a_reply_too_big_to_keep_answers_copies_with_an_error(ns: Harness) -> None:
    _, peer, runs = await connected(ns, dedup_max_reply=16)
    reliable(peer, "blob", 100, ack=1)
    assert await peer.expect_ack(1) == {"ack": 1, "data": [b"\x00" * 100]}
    reliable(peer, "blob", 100, ack=2)
    reply = await peer.expect_ack(2)
    assert reply["error"]["type"] == "ReplyNotKept"
    assert "handled" in reply["error"]["message"]
    assert runs.calls == [(100,)]


@pytest.mark.parametrize(
    ("mid", "message"),
    [
        ("short", "mid must be 8 to 64 characters long, got 5"),
        ("x" * 65, "mid must be 8 to 64 characters long, got 65"),
        ("has space!", "mid may only hold the characters A-Z a-z 0-9 _ -"),
        (12345678, "mid must be a string, got int"),
        (None, "mid must be a string, got NoneType"),
    ],
)
async def test_a_malformed_mid_gets_an_ack_error_and_the_connection_survives(
    ns: Harness, mid: Any, message: str
) -> None:
    _, peer, runs = await connected(ns)
    peer.send({"event": "order", "data": [1], "ack": 1, "mid": mid})
    assert await peer.expect_ack(1) == {"ack": 1, "error": {"message": message, "type": "InvalidMessageId"}}
    reliable(peer, "order", 2, ack=2)
    assert await peer.expect_ack(2) == {"ack": 2, "data": [["ok", 2]]}
    assert runs.calls == [(2,)]


async def test_a_mid_without_an_ack_is_refused_with_error(ns: Harness) -> None:
    _, peer, runs = await connected(ns)
    peer.send({"event": "order", "data": [1], "mid": MID})
    assert await peer.expect("$error") == [{"message": "a message with a mid must ask for an ack"}]
    peer.send({"event": "order", "data": [1], "mid": "bad"})
    assert await peer.expect("$error") == [{"message": "mid must be 8 to 64 characters long, got 3"}]
    reliable(peer, "order", 2, ack=2)
    assert await peer.expect_ack(2) == {"ack": 2, "data": [["ok", 2]]}
    assert runs.calls == [(2,)]


async def test_no_handler_claims_nothing(ns: Harness) -> None:
    _, peer, runs = await connected(ns)
    reliable(peer, "nobody", 1, ack=1)
    assert await peer.expect_ack(1) == {"ack": 1, "error": {"message": "no handler for event 'nobody'"}}
    reliable(peer, "order", 1, ack=2)  # the same id, now for a handled event: it runs
    assert await peer.expect_ack(2) == {"ack": 2, "data": [["ok", 1]]}
    assert runs.calls == [(1,)]


async def test_a_reserved_event_with_a_mid_is_refused(ns: Harness) -> None:
    _, peer, _ = await connected(ns)
    reliable(peer, "disconnect", 1, ack=1)
    assert await peer.expect_ack(1) == {"ack": 1, "error": {"message": "event name 'disconnect' is reserved"}}


async def test_reliable_envelopes_in_a_batch_and_binary_frames(ns: Harness) -> None:
    _, peer, runs = await connected(ns)
    peer.send(
        [
            {"event": "order", "data": [1], "ack": 1, "mid": MID},
            {"event": "order", "data": [1], "ack": 2, "mid": MID},
            {"event": "order", "data": [2], "ack": 3},
        ]
    )
    assert [(await peer.recv())["ack"] for _ in range(3)] == [1, 2, 3]
    peer.send_binary({"event": "order", "data": [b"x"], "ack": 4, "mid": MID + "b"})
    assert await peer.expect_ack(4) == {"ack": 4, "data": [["ok", b"x"]]}
    assert runs.calls == [(1,), (2,), (b"x",)]


async def test_a_once_handler_is_spent_by_the_first_copy_only(ns: Harness) -> None:
    server = await ns.start()
    runs = Recorder()

    @server.on("connection")
    def connection(socket: Socket) -> None:
        socket.once("order", lambda n: runs(n) or n)

    peer = await ns.v1(server)
    reliable(peer, "order", 1, ack=1)
    assert await peer.expect_ack(1) == {"ack": 1, "data": [1]}
    reliable(peer, "order", 1, ack=2)
    assert await peer.expect_ack(2) == {"ack": 2, "data": [1]}
    assert runs.calls == [(1,)]


async def test_shared_handlers_run_once_per_id_too(ns: Harness) -> None:
    server = await ns.start()
    runs = Recorder()

    @server.socket_on("order")
    def order(socket: Socket, n: int) -> int:
        runs(socket.id, n)
        return n + 1

    peer = await ns.v1(server)
    reliable(peer, "order", 1, ack=1)
    assert await peer.expect_ack(1) == {"ack": 1, "data": [2]}
    reliable(peer, "order", 1, ack=2)
    assert await peer.expect_ack(2) == {"ack": 2, "data": [2]}
    assert runs.calls == [(peer.sid, 1)]
