"""BroadcastOperator (server/broadcast.py): selecting recipients and fanning one frame out."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
from server_kit import Harness, Peer, Recorder, until

from nanosocket import BroadcastOperator, NanoSocket, Socket
from nanosocket.server.broadcast import room_set
from nanosocket.transport import FLUSH_BATCH


async def three(ns: Harness, server: NanoSocket) -> tuple[list[Peer], list[Socket]]:
    peers = [await ns.v1(server) for _ in range(3)]
    return peers, [server.sockets[peer.sid or ""] for peer in peers]


async def test_operators_are_immutable(ns: Harness) -> None:
    server = await ns.start()
    _, (a, b, _) = await three(ns, server)
    a.join("a")
    b.join("b")
    only_a = server.to("a")
    a_and_b = only_a.to("b")
    assert isinstance(only_a, BroadcastOperator)
    assert only_a.emit("x") == 1
    assert a_and_b.emit("x") == 2
    assert only_a.except_("a").emit("x") == 0
    assert only_a.emit("x") == 1  # still just room a
    assert {s.id for s in a_and_b.sockets()} == {a.id, b.id}
    assert {s.id for s in only_a.sockets()} == {a.id}


async def test_in_is_to(ns: Harness) -> None:
    server = await ns.start()
    peers, (a, _, _) = await three(ns, server)
    a.join("r")
    assert server.in_("r").in_("nowhere").emit("hi") == 1
    assert await peers[0].expect("hi") == []


async def test_sockets_lists_the_selection(ns: Harness) -> None:
    server = await ns.start()
    _, (a, b, c) = await three(ns, server)
    a.join("r")
    b.join("r")
    assert {s.id for s in server.to("r").sockets()} == {a.id, b.id}
    assert {s.id for s in server.except_("r").sockets()} == {c.id}
    assert {s.id for s in server.to("r").except_(a.id).sockets()} == {b.id}
    assert {s.id for s in a.broadcast.sockets()} == {b.id, c.id}
    assert {s.id for s in a.to("r").sockets()} == {b.id}


async def test_sockets_join_and_leave_move_the_selection(ns: Harness) -> None:
    server = await ns.start()
    peers, (a, b, c) = await three(ns, server)
    a.join("old")
    b.join("old")
    server.to("old").sockets_join(["new", "other"])
    assert a.joined_rooms == b.joined_rooms == {"old", "new", "other"}
    assert c.joined_rooms == set()
    server.to("new").sockets_leave("old")
    assert server.get_room_size("old") == 0
    server.except_("new").sockets_join("outsiders")
    assert c.joined_rooms == {"outsiders"}
    assert server.to("new").emit("moved") == 2
    assert await peers[0].expect("moved") == []
    assert await peers[1].expect("moved") == []


@pytest.mark.parametrize(("close", "code"), [(True, 1000), (False, 1006)])
async def test_disconnect_sockets_ends_the_selection(ns: Harness, close: bool, code: int) -> None:
    server = await ns.start()
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    peers, (a, b, c) = await three(ns, server)
    a.join("kick")
    b.join("kick")
    server.to("kick").disconnect_sockets(close)
    for peer in peers[:2]:
        assert await peer.close_code() == code
    await disconnects.wait(2)
    assert {reason for _, reason in disconnects.calls} == {"server disconnect"}
    assert {s.id for s, _ in disconnects.calls} == {a.id, b.id}
    assert c.connected and server.connection_count == 1
    server.emit("left")
    assert await peers[2].expect("left") == []


async def test_a_broadcast_with_bytes_is_one_binary_frame_for_all(ns: Harness) -> None:
    server = await ns.start()
    peers, _ = await three(ns, server)
    assert server.emit("blob", b"\x00" * 10, "label") == 3
    frames = [await peer.recv_raw() for peer in peers]
    assert all(isinstance(frame, bytes) for frame in frames)
    assert frames[0] == frames[1] == frames[2]
    assert msgpack.unpackb(frames[0], raw=False) == {"event": "blob", "data": [b"\x00" * 10, "label"]}


async def test_invalid_event_names_fail_before_anything_is_sent(ns: Harness) -> None:
    server = await ns.start()
    peers, (a, _, _) = await three(ns, server)
    for name in ("", "error", "$x", "connect"):
        with pytest.raises(ValueError):
            server.emit(name)
        with pytest.raises(ValueError):
            a.broadcast.emit(name)
    server.emit("valid")
    for peer in peers:
        assert await peer.expect("valid") == []  # nothing came before it


async def test_a_broadcast_skips_sockets_that_left(ns: Harness) -> None:
    server = await ns.start()
    peers, (a, b, _) = await three(ns, server)
    a.join("r")
    b.join("r")
    peers[0].ws.close()
    await until(lambda: not a.connected)
    assert server.to("r").emit("hi") == 1
    assert await peers[1].expect("hi") == []


async def test_a_room_of_several_flush_batches_gets_a_burst_of_broadcasts_in_order(ns: Harness) -> None:
    server = await ns.start()

    @server.socket_on("publish")
    def publish(socket: Socket, n: int) -> None:
        server.to("r").emit("tick", n)

    members = [await ns.v1(server) for _ in range(3 * FLUSH_BATCH + 1)]
    for peer in members:
        server.sockets[peer.sid or ""].join("r")
    publisher = await ns.v1(server)
    # One publish per loop iteration: each is read while earlier broadcasts are being written.
    for n in range(10):
        publisher.emit("publish", n)
        await asyncio.sleep(0)
    for peer in members:
        assert [(await peer.expect("tick"))[0] for _ in range(10)] == list(range(10))


def test_room_set_validates_names() -> None:
    assert room_set("a") == frozenset({"a"})
    assert room_set(["a", "b", "a"]) == frozenset({"a", "b"})
    assert room_set(()) == frozenset()
    with pytest.raises(ValueError):
        room_set([""])
    with pytest.raises(ValueError):
        room_set([None])  # type: ignore[list-item]
