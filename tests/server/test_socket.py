"""Socket (server/socket.py): the per-client handle, over real connections with raw frames."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import msgpack
import pytest
from server_kit import Harness, Peer, Recorder, until, within

from nanosocket import (
    AckError,
    AckTimeoutError,
    ConnectionClosed,
    ConnectionClosedError,
    NanoSocket,
    SendStatus,
    Socket,
)
from nanosocket.server.connection import new_socket_id


async def connected(
    ns: Harness, server: NanoSocket, *, v1: bool = True, **kwargs: Any
) -> tuple[Peer, Socket]:
    """A client and its server-side socket."""
    if v1:
        peer = await ns.v1(server, **kwargs)
        assert peer.sid is not None
        return peer, server.sockets[peer.sid]
    sockets = ns.sockets(server)
    peer = await ns.plain(server, **kwargs)
    return peer, await within(sockets.get())


# ------------------------------------------------------------------ identity

ID = re.compile(r"[A-Za-z0-9_-]{20}")


async def test_ids_are_unique_url_safe_and_20_characters(ns: Harness) -> None:
    server = await ns.start()
    peers = [await connected(ns, server, v1=n % 2 == 0) for n in range(6)]
    ids = {socket.id for _, socket in peers}
    assert len(ids) == 6
    for peer, socket in peers:
        assert ID.fullmatch(socket.id)
        if peer.sid is not None:
            assert peer.sid == socket.id  # what the v1 client was told


def test_new_ids_do_not_repeat() -> None:
    ids = {new_socket_id() for _ in range(10000)}
    assert len(ids) == 10000
    assert all(ID.fullmatch(i) for i in ids)
    # 120 random bits: every position takes many values (a counter or a clock would not).
    assert all(len({i[k] for i in ids}) > 32 for k in range(20))


async def test_remote_address_and_handshake(ns: Harness) -> None:
    server = await ns.start()
    before = time.time()
    _, socket = await connected(
        ns, server, auth={"token": "abc"}, path="/rt?room=1&x=", headers={"X-Trace": "t-1"}
    )
    after = time.time()
    assert socket.remote_address == "127.0.0.1"
    handshake = socket.handshake
    assert handshake.address == "127.0.0.1"
    assert handshake.url == "/rt?room=1&x="
    assert handshake.query == {"room": "1", "x": ""}
    assert handshake.auth == {"token": "abc"}
    assert handshake.headers["x-trace"] == "t-1"
    assert handshake.headers.get("X-TRACE") == "t-1"
    assert handshake.headers["sec-websocket-protocol"] == "nanosocket.v1"
    assert before <= handshake.time <= after
    assert "/rt?room=1" in repr(handshake)
    _, plain = await connected(ns, server, v1=False)
    assert plain.handshake.auth == {} and plain.handshake.query == {}


async def test_data_is_a_dictionary_kept_for_the_socket(ns: Harness) -> None:
    server = await ns.start()

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.data["count"] = 0

        @socket.on("bump")
        def bump() -> int:
            socket.data["count"] += 1
            return int(socket.data["count"])

    peer, socket = await connected(ns, server)
    for n in range(1, 4):
        peer.emit("bump", ack=n)
        assert (await peer.expect_ack(n))["data"] == [n]
    assert socket.data == {"count": 3}
    assert socket.data is socket.data


async def test_connected_and_repr_follow_the_connection(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    assert socket.connected
    assert socket.id in repr(socket) and "connected" in repr(socket)
    peer.ws.close()
    await until(lambda: not socket.connected)
    assert "disconnected" in repr(socket)


# ------------------------------------------------------------------- sending


async def test_emit_returns_send_status_and_drops_after_disconnect(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    status = socket.emit("greet", "hi", {"n": 1}, [2, 3], None, True, 1.5)
    assert status is SendStatus.SUCCESS
    assert await peer.expect("greet") == ["hi", {"n": 1}, [2, 3], None, True, 1.5]
    assert socket.volatile.emit("v", 1) is SendStatus.SUCCESS
    assert await peer.expect("v") == [1]
    peer.ws.close()
    await until(lambda: not socket.connected)
    assert socket.emit("greet", "late") is SendStatus.DROPPED
    assert not socket.emit("greet")
    assert socket.volatile.emit("v") is SendStatus.DROPPED


@pytest.mark.parametrize("name", ["connect", "disconnect", "error", "$connect", "$x", "", "a\x00b"])
async def test_emitting_a_reserved_or_invalid_name_raises(ns: Harness, name: str) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    with pytest.raises(ValueError, match="cannot emit"):
        socket.emit(name)
    with pytest.raises(ValueError, match="cannot emit"):
        socket.volatile.emit(name)
    with pytest.raises(ValueError, match="cannot emit"):
        await socket.call(name)
    peer.ws.close()
    await until(lambda: not socket.connected)
    with pytest.raises(ValueError, match="cannot emit"):
        socket.emit(name)


async def test_emitting_bytes_sends_a_binary_msgpack_frame(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    socket.emit("file", "name.bin", b"\x00\x01\xff", {"nested": [b"x"]})
    frame = await peer.recv_raw()
    assert isinstance(frame, bytes)
    assert msgpack.unpackb(frame, raw=False) == {
        "event": "file",
        "data": ["name.bin", b"\x00\x01\xff", {"nested": [b"x"]}],
    }
    socket.emit("text", "no bytes")
    assert isinstance(await peer.recv_raw(), str)


async def test_emitting_an_unencodable_value_raises_and_keeps_the_connection(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    with pytest.raises(TypeError):
        socket.emit("bad", object())
    socket.emit("good")
    assert await peer.expect("good") == []


# ------------------------------------------------------------------------ calls


async def test_call_is_answered_by_the_clients_ack(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    call = asyncio.ensure_future(socket.call("sum", 2, 3, timeout=10))
    request = await peer.recv()
    assert set(request) == {"event", "data", "ack"}
    assert request["event"] == "sum" and request["data"] == [2, 3]
    assert isinstance(request["ack"], int)
    peer.send({"ack": request["ack"], "data": [5]})
    assert await within(call) == 5


async def test_call_results_none_one_or_several(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    for data, expected in (([], None), ([None], None), ([{"a": 1}], {"a": 1}), ([1, 2], (1, 2))):
        call = asyncio.ensure_future(socket.call("q"))
        request = await peer.recv()
        peer.send({"ack": request["ack"], "data": data})
        assert await within(call) == expected


async def test_concurrent_calls_match_their_own_replies(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    calls = [asyncio.ensure_future(socket.call("echo", n)) for n in range(5)]
    requests = [await peer.recv() for _ in calls]
    assert len({r["ack"] for r in requests}) == 5
    for request in reversed(requests):
        peer.send({"ack": request["ack"], "data": [request["data"][0] * 100]})
    assert await within(asyncio.gather(*calls)) == [0, 100, 200, 300, 400]


async def test_call_with_bytes_travels_as_binary_and_takes_a_binary_reply(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    call = asyncio.ensure_future(socket.call("blob", b"\x01\x02"))
    frame = await peer.recv_raw()
    assert isinstance(frame, bytes)
    request = msgpack.unpackb(frame, raw=False)
    assert request["data"] == [b"\x01\x02"]
    peer.send_binary({"ack": request["ack"], "data": [b"\x03"]})
    assert await within(call) == b"\x03"


async def test_call_times_out_with_ack_timeout_error(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    with pytest.raises(AckTimeoutError):
        await within(socket.call("ignored", timeout=0.1))
    assert issubclass(AckTimeoutError, TimeoutError)
    # The connection is fine, and a late reply is ignored (and counted).
    request = await peer.recv()
    peer.send({"ack": request["ack"], "data": ["too late"]})
    call = asyncio.ensure_future(socket.call("next", timeout=10))
    request = await peer.recv()
    peer.send({"ack": request["ack"], "data": ["on time"]})
    assert await within(call) == "on time"
    assert server.stats.unknown_acks == 1


async def test_call_default_timeout_is_the_ack_timeout_option(ns: Harness) -> None:
    server = await ns.start(ack_timeout=0.1)
    _, socket = await connected(ns, server)
    with pytest.raises(AckTimeoutError):
        await within(socket.call("ignored"))


async def test_call_fails_with_ack_error_on_an_error_reply(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    call = asyncio.ensure_future(socket.call("risky"))
    request = await peer.recv()
    peer.send({"ack": request["ack"], "error": {"message": "client handler failed", "code": 7}})
    with pytest.raises(AckError, match="client handler failed") as info:
        await within(call)
    assert info.value.data == {"message": "client handler failed", "code": 7}
    assert socket.connected


async def test_call_fails_with_connection_closed_when_the_client_leaves(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    call = asyncio.ensure_future(socket.call("never-answered", timeout=30))
    await peer.recv()
    peer.ws.abort()
    with pytest.raises(ConnectionClosed):
        await within(call)
    with pytest.raises(ConnectionClosed):
        await socket.call("after")


# ---------------------------------------------------------------- handlers


async def test_on_as_decorator_and_call_once_and_off(ns: Harness) -> None:
    server = await ns.start()
    log: list[str] = []
    handlers: dict[str, Any] = {}

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        @socket.on("a")
        def decorated(x: str) -> None:
            log.append(f"decorated {x}")

        def by_call(x: str) -> None:
            log.append(f"by_call {x}")

        assert socket.on("a", by_call) is by_call

        @socket.once("b")
        def once_decorated() -> None:
            log.append("once decorated")

        socket.once("b", lambda: log.append("once by call"))
        handlers["by_call"] = by_call
        handlers["socket"] = socket

    peer, _ = await connected(ns, server)
    socket = handlers["socket"]
    peer.emit("a", "1")
    peer.emit("b")
    peer.emit("b")
    peer.emit("sync", ack=0)
    socket.on("sync", lambda: None)
    await peer.expect_ack(0)
    assert log == ["decorated 1", "by_call 1", "once decorated", "once by call"]
    log.clear()
    socket.off("a", handlers["by_call"])
    peer.emit("a", "2", ack=1)
    await peer.expect_ack(1)
    assert log == ["decorated 2"]
    socket.off("a")
    peer.emit("a", "3", ack=2)
    assert (await peer.expect_ack(2))["error"]["message"] == "no handler for event 'a'"
    socket.off()
    peer.emit("sync", ack=3)
    assert "error" in await peer.expect_ack(3)
    assert log == ["decorated 2"]


async def test_handlers_are_checked_when_registered(ns: Harness) -> None:
    server = await ns.start()
    _, socket = await connected(ns, server)

    def needs_keyword(value: int, *, required: str) -> None: ...

    with pytest.raises(TypeError, match="keyword-only"):
        socket.on("x", needs_keyword)
    with pytest.raises(TypeError, match="callable"):
        socket.on("x", "not a function")  # type: ignore[call-overload]


# --------------------------------------------------------------------- rooms


async def test_join_leave_and_joined_rooms(ns: Harness) -> None:
    server = await ns.start()
    _, socket = await connected(ns, server)
    assert socket.joined_rooms == set()
    socket.join("a")
    socket.join(["b", "c"])
    socket.join(("c", "d"))
    assert socket.joined_rooms == {"a", "b", "c", "d"}
    copy = socket.joined_rooms
    copy.add("mutated")
    assert "mutated" not in socket.joined_rooms
    socket.leave("b")
    socket.leave("not-joined")
    assert socket.joined_rooms == {"a", "c", "d"}
    assert server.get_room_size("b") == 0 and server.get_room_size("a") == 1
    with pytest.raises(ValueError):
        socket.join("")


async def test_rooms_are_left_on_disconnect(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    socket.join(["x", "y"])
    peer.ws.close()
    await until(lambda: not socket.connected)
    assert server.room_names == [] and server.get_room_size("x") == 0


async def test_socket_to_room_and_broadcast_leave_the_sender_out(ns: Harness) -> None:
    server = await ns.start()
    (pa, a), (pb, b), (pc, c) = [await connected(ns, server) for _ in range(3)]
    a.join("room")
    b.join("room")
    assert a.to("room").emit("in-room", "from a") == 1
    assert a.in_("room").emit("in-room", "again") == 1
    assert c.to(["room"]).emit("in-room", "from c") == 2
    assert a.broadcast.emit("everyone-else") == 2
    for peer in (pa, pb, pc):
        server.to(peer.sid or "").emit("end")
    assert await pa.expect("in-room") == ["from c"]
    assert await pa.expect("end") == []
    assert await pb.expect("in-room") == ["from a"]
    assert await pb.expect("in-room") == ["again"]
    assert await pb.expect("in-room") == ["from c"]
    assert await pb.expect("everyone-else") == []
    assert await pb.expect("end") == []
    assert await pc.expect("everyone-else") == []
    assert await pc.expect("end") == []


# ---------------------------------------------------------------- disconnect


async def test_disconnect_closes_with_1000_and_reason_server_disconnect(ns: Harness) -> None:
    server = await ns.start()
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    peer, socket = await connected(ns, server)
    socket.disconnect()
    socket.disconnect()  # twice is harmless
    closed = await peer.closed()
    assert closed.code == 1000
    ((gone, reason),) = await disconnects.wait()
    assert gone is socket and reason == "server disconnect"
    assert not socket.connected and server.connection_count == 0


async def test_disconnect_without_close_drops_the_connection(ns: Harness) -> None:
    server = await ns.start()
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    peer, socket = await connected(ns, server)
    socket.disconnect(close=False)
    closed = await peer.closed()
    assert isinstance(closed, ConnectionClosedError) and closed.code == 1006
    ((_, reason),) = await disconnects.wait()
    assert reason == "server disconnect"
    socket.disconnect()  # already gone: nothing happens


@pytest.mark.parametrize(
    ("how", "reason"),
    [("close", "client disconnect"), ("going-away", "client going away"), ("abort", "transport close")],
)
async def test_disconnect_reasons_of_client_side_endings(ns: Harness, how: str, reason: str) -> None:
    server = await ns.start()
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    peer, _ = await connected(ns, server)
    if how == "close":
        peer.ws.close(1000)
    elif how == "going-away":
        peer.ws.close(1001)
    else:
        peer.ws.abort()
    ((_, got),) = await disconnects.wait()
    assert got == reason


async def test_disconnecting_sees_the_rooms_then_disconnect_gets_the_reason(ns: Harness) -> None:
    server = await ns.start()
    log: list[Any] = []
    server_disconnects = Recorder()
    server.on("disconnect", server_disconnects)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.join(["a", "b"])
        socket.on("disconnecting", lambda reason: log.append(("disconnecting", reason, socket.joined_rooms)))
        socket.on("disconnect", lambda reason: log.append(("disconnect", reason, socket.joined_rooms)))

    _, socket = await connected(ns, server)
    socket.disconnect()
    await server_disconnects.wait()
    assert log == [
        ("disconnecting", "server disconnect", {"a", "b"}),
        ("disconnect", "server disconnect", set()),
    ]


async def test_socket_disconnect_handler_errors_do_not_break_the_server(ns: Harness) -> None:
    server = await ns.start()
    server_disconnects = Recorder()
    server.on("disconnect", server_disconnects)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("disconnect", lambda reason: 1 / 0)

    peer, _ = await connected(ns, server)
    other, _ = await connected(ns, server)
    peer.ws.close()
    await server_disconnects.wait()
    server.emit("fine")
    assert await other.expect("fine") == []


async def test_error_event_of_the_socket_gets_handler_errors(ns: Harness) -> None:
    server = await ns.start()
    errors = Recorder()

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("error", errors)
        socket.on("bad", lambda: int("x"))

    peer, _ = await connected(ns, server)
    peer.emit("bad")
    ((error,),) = await errors.wait()
    assert isinstance(error, ValueError)
