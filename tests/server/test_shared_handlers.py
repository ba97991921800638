"""Server-level socket event handlers (``server.socket_on``) over real sockets: one table for every
socket, called as ``handler(socket, *args)``; sync and async, acks, errors, the order relative to a
socket's own handlers, ``socket.off`` and ``server.socket_off``, and registration checks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from server_kit import Harness, Peer, Recorder, within

from nanosocket import NanoSocket, Socket


async def connected(ns: Harness, server: NanoSocket) -> tuple[Peer, Socket]:
    sockets = ns.sockets(server)
    peer = await ns.plain(server)
    return peer, await within(sockets.get())


async def test_sync_and_async_handlers_get_the_socket_and_answer_acks(ns: Harness) -> None:
    server = await ns.start()
    seen: list[Socket] = []

    @server.socket_on("sync")
    def add(socket: Socket, a: int, b: int) -> int:
        seen.append(socket)
        return a + b

    @server.socket_on("async-now")
    async def multiply(socket: Socket, a: int, b: int) -> int:
        return a * b

    @server.socket_on("async-later")
    async def later(socket: Socket, a: int, b: int) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"id": socket.id, "sum": a + b}

    server.socket_on("none", lambda socket: None)

    peer, socket = await connected(ns, server)
    peer.emit("sync", 2, 3, ack=1)
    peer.emit("async-later", 2, 3, ack=2)
    peer.emit("async-now", 2, 3, ack=3)
    peer.emit("none", ack=4)
    replies = {}
    for _ in range(4):
        reply = await peer.recv()
        assert set(reply) == {"ack", "data"}
        replies[reply["ack"]] = reply["data"]
    assert replies == {1: [5], 2: [{"id": socket.id, "sum": 5}], 3: [6], 4: [None]}
    assert seen == [socket]


async def test_one_handler_serves_every_socket_without_a_registry_per_socket(ns: Harness) -> None:
    server = await ns.start()
    server.socket_on("echo", lambda socket, text: socket.emit("echo", f"{text} {socket.id}"))
    first, first_socket = await connected(ns, server)
    second, second_socket = await connected(ns, server)
    first.emit("echo", "a")
    second.emit("echo", "b")
    assert await first.expect("echo") == [f"a {first_socket.id}"]
    assert await second.expect("echo") == [f"b {second_socket.id}"]
    # Sockets that registered nothing of their own got no handler registry.
    assert first_socket._handlers is None and second_socket._handlers is None


async def test_a_handler_registered_later_serves_sockets_already_connected(ns: Harness) -> None:
    server = await ns.start()
    peer, _ = await connected(ns, server)
    peer.emit("late", ack=1)
    assert "no handler" in (await peer.expect_ack(1))["error"]["message"]
    server.socket_on("late", lambda socket: "now")
    peer.emit("late", ack=2)
    assert (await peer.expect_ack(2))["data"] == ["now"]


async def test_shared_handlers_run_before_the_sockets_own_and_the_first_answers(ns: Harness) -> None:
    server = await ns.start()
    ran: list[str] = []
    server.socket_on("q", lambda socket: ran.append("shared 1") or "shared 1")
    server.socket_on("q", lambda socket: ran.append("shared 2") or "shared 2")

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("q", lambda: ran.append("own") or "own")
        socket.on("only-own", lambda: "own")

    peer, _ = await connected(ns, server)
    peer.emit("q", ack=1)
    peer.emit("only-own", ack=2)
    assert (await peer.expect_ack(1))["data"] == ["shared 1"]
    assert (await peer.expect_ack(2))["data"] == ["own"]  # no reply of another handler came between
    assert ran == ["shared 1", "shared 2", "own"]


@pytest.mark.parametrize("style", ["sync", "async-first-step", "async-after-await"])
async def test_a_raising_handler_answers_an_ack_error_and_the_connection_stays(
    ns: Harness, caplog: pytest.LogCaptureFixture, style: str
) -> None:
    server = await ns.start()
    errors = Recorder()
    server.on("error", errors)
    socket_errors = Recorder()
    after: list[str] = []

    if style == "sync":

        def fail(socket: Socket, text: str) -> None:
            raise LookupError(f"no room {text}")

    elif style == "async-first-step":

        async def fail(socket: Socket, text: str) -> None:
            raise LookupError(f"no room {text}")

    else:

        async def fail(socket: Socket, text: str) -> None:
            await asyncio.sleep(0.01)
            raise LookupError(f"no room {text}")

    server.socket_on("join", fail)
    server.socket_on("echo", lambda socket, text: text)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("error", socket_errors)
        socket.on("join", after.append)  # the socket's own handler still runs

    with caplog.at_level(logging.ERROR, logger="nanosocket.server"):
        peer, socket = await connected(ns, server)
        peer.emit("join", "blue", ack=3)
        reply = await peer.expect_ack(3)
        assert reply == {"ack": 3, "error": {"message": "no room blue", "type": "LookupError"}}
        ((error, where),) = await errors.wait()
    assert isinstance(error, LookupError) and where is socket
    ((local,),) = await socket_errors.wait()
    assert local is error
    assert "no room blue" in caplog.text
    assert after == ["blue"]
    peer.emit("echo", "still here", ack=4)
    assert (await peer.expect_ack(4))["data"] == ["still here"]
    assert socket.connected
    assert server.stats.handler_errors == 1


async def test_wrong_argument_count_is_an_ack_error_counting_the_socket(ns: Harness) -> None:
    server = await ns.start()
    server.on("error", Recorder())
    server.socket_on("pair", lambda socket, a, b: [a, b])
    peer, socket = await connected(ns, server)
    peer.emit("pair", 1, ack=1)
    reply = await peer.expect_ack(1)
    assert reply["error"]["type"] == "HandlerArityError"
    assert "takes 3 arguments, got 2" in reply["error"]["message"]
    peer.emit("pair", 1, 2, ack=2)
    assert (await peer.expect_ack(2))["data"] == [[1, 2]]
    assert socket.connected


async def test_socket_off_removes_only_the_sockets_own_handlers(ns: Harness) -> None:
    server = await ns.start()
    ran: list[str] = []
    server.socket_on("q", lambda socket: ran.append("shared") or "shared")

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("q", lambda: ran.append("own"))

    peer, socket = await connected(ns, server)
    socket.off("q")
    peer.emit("q", ack=1)
    assert (await peer.expect_ack(1))["data"] == ["shared"]
    socket.off()
    peer.emit("q", ack=2)
    assert (await peer.expect_ack(2))["data"] == ["shared"]
    assert ran == ["shared", "shared"]


async def test_socket_off_at_server_level_leaves_the_sockets_own(ns: Harness) -> None:
    server = await ns.start()

    def shared(socket: Socket) -> str:
        return "shared"

    def other(socket: Socket) -> str:
        return "other"

    server.socket_on("q", shared)
    server.socket_on("q", other)
    server.socket_on("r", shared)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("r", lambda: "own")

    peer, _ = await connected(ns, server)
    server.socket_off("q", shared)
    peer.emit("q", ack=1)
    assert (await peer.expect_ack(1))["data"] == ["other"]
    server.socket_off("q")
    peer.emit("q", ack=2)
    assert (await peer.expect_ack(2))["error"]["message"] == "no handler for event 'q'"
    server.socket_off()
    peer.emit("r", ack=3)
    assert (await peer.expect_ack(3))["data"] == ["own"]
    server.socket_off("unknown", shared)  # nothing registered: nothing to do


def test_registration_checks_the_name_and_the_signature_once() -> None:
    server = NanoSocket(port=0)

    @server.socket_on("echo")
    def echo(socket: Socket, text: str) -> None:
        pass

    assert echo.__name__ == "echo"  # the decorator returns the function
    with pytest.raises(TypeError, match="takes no arguments"):
        server.socket_on("x", lambda: None)
    with pytest.raises(TypeError, match="callable"):
        server.socket_on("x", "not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keyword-only"):

        @server.socket_on("x")
        def keyword(socket: Socket, *, required: int) -> None:
            pass

    for name in ("disconnect", "error", "connect", "disconnecting"):
        with pytest.raises(ValueError, match="not a client event"):
            server.socket_on(name, echo)
    for bad in ("", "$ping", "a\x00b", 7):
        with pytest.raises(ValueError, match="cannot listen"):
            server.socket_on(bad, echo)  # type: ignore[arg-type]
    assert list(server._socket_handlers) == ["echo"]
    # "connection" and the other server events are client event names here: no ambiguity with
    # server.on, which keeps them for the server's own events.
    server.socket_on("connection", echo)
    assert list(server._socket_handlers) == ["echo", "connection"]


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 20])
async def test_any_number_of_arguments_reaches_shared_and_own_handlers(ns: Harness, count: int) -> None:
    # The compiled core passes up to eight arguments (the socket counts for shared handlers)
    # from where they are and more through a tuple: both sides of that bound, both kinds.
    server = await ns.start()
    got: list[tuple[str, tuple[Any, ...]]] = []

    @server.socket_on("many")
    def shared(socket: Socket, *args: Any) -> int:
        got.append(("shared", (socket, *args)))
        return len(args)

    server.on("connection", lambda s: s.on("many", lambda *args: got.append(("own", args))))
    peer, socket = await connected(ns, server)
    data = [f"a{index}" if index % 2 else index for index in range(count)]
    peer.send({"event": "many", "data": data, "ack": 1})
    assert (await peer.expect_ack(1))["data"] == [count]
    assert got == [("shared", (socket, *data)), ("own", tuple(data))]
