"""Connection middleware (server/middleware.py) and the connect step it runs in (server/connection.py).

Middleware run after the WebSocket upgrade and before any event of the socket is dispatched; a
refusal reaches a v1 client as ``$connect_error`` (a plain client as ``connect_error``), then 1008.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from server_kit import Harness, Peer, Recorder, until, within

from nanosocket import ConnectError, NanoSocket, SendStatus, Socket


async def refused(peer: Peer, event: str = "$connect_error") -> dict[str, Any]:
    """The refusal the client got; asserts the connection then closes with 1008."""
    (body,) = await peer.expect(event)
    closed = await peer.closed()
    assert closed.code == 1008
    assert closed.reason == "connection refused"
    assert isinstance(body, dict)
    return body


async def test_sync_middleware_calling_next_accepts(ns: Harness) -> None:
    server = await ns.start()
    seen: list[Socket] = []

    @server.use
    def allow(socket: Socket, next: Callable[..., None]) -> None:
        seen.append(socket)
        next()

    connections = Recorder()
    server.on("connection", connections)
    peer = await ns.v1(server)
    ((socket,),) = await connections.wait()
    assert seen == [socket] and socket.id == peer.sid
    assert server.connection_count == 1


async def test_sync_middleware_next_with_error_refuses_v1_client(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def deny(socket: Socket, next: Callable[..., None]) -> None:
        next(Exception("not welcome"))

    connections, disconnects = Recorder(), Recorder()
    server.on("connection", connections)
    server.on("disconnect", disconnects)
    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", {"token": "x"})
    assert await refused(peer) == {"message": "not welcome", "data": None}
    assert connections.calls == [] and disconnects.calls == []
    assert server.connection_count == 0
    assert server.stats.connections_rejected == 1


@pytest.mark.parametrize("decision", ["accept", "refuse"])
async def test_next_called_later_from_a_timer(ns: Harness, decision: str) -> None:
    server = await ns.start()

    @server.use
    def later(socket: Socket, next: Callable[..., None]) -> None:
        loop = asyncio.get_running_loop()
        if decision == "accept":
            loop.call_later(0.05, next)
        else:
            loop.call_later(0.05, next, ConnectError("decided later", {"code": 42}))

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    if decision == "accept":
        (answer,) = await peer.expect("$connect")
        assert answer["id"] in server.sockets
    else:
        assert await refused(peer) == {"message": "decided later", "data": {"code": 42}}
        assert server.connection_count == 0


async def test_next_called_twice_keeps_the_first_decision(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def twice(socket: Socket, next: Callable[..., None]) -> None:
        next()
        next(Exception("too late"))

    peer = await ns.v1(server)
    server.emit("ok")
    assert await peer.expect("ok") == []


async def test_async_middleware_returning_accepts(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    async def check(socket: Socket) -> None:
        await asyncio.sleep(0.01)
        socket.data["user"] = socket.handshake.auth["user"]

    users = []
    server.on("connection", lambda socket: users.append(socket.data["user"]))
    await ns.v1(server, {"user": "ada"})
    assert users == ["ada"]


async def test_async_middleware_raising_refuses_with_message_and_data(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    async def check(socket: Socket) -> None:
        await asyncio.sleep(0.01)
        raise ConnectError("bad token", {"retry": False})

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", {"token": "forged"})
    assert await refused(peer) == {"message": "bad token", "data": {"retry": False}}


async def test_any_exception_data_attribute_is_sent(ns: Harness) -> None:
    class Unauthorized(Exception):
        def __init__(self) -> None:
            super().__init__("who are you?")
            self.data = {"login": "/login"}

    server = await ns.start()

    @server.use
    async def check(socket: Socket) -> None:
        raise Unauthorized

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    assert await refused(peer) == {"message": "who are you?", "data": {"login": "/login"}}


async def test_unserializable_data_is_left_out_but_the_message_is_sent(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def check(socket: Socket) -> None:
        raise ConnectError("no", data=object())

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    assert await refused(peer) == {"message": "no", "data": None}


async def test_an_exception_without_message_is_named_by_its_type(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def check(socket: Socket) -> None:
        raise PermissionError

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    assert (await refused(peer))["message"] == "PermissionError"


async def test_sync_middleware_without_next_raising_refuses(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def check(socket: Socket) -> None:
        if socket.handshake.query.get("key") != "open-sesame":
            raise PermissionError("wrong key")

    welcome = await ns.plain(server, path="/?key=open-sesame")
    server.emit("welcome")
    assert await welcome.expect("welcome") == []
    stranger = await ns.plain(server, path="/?key=guess")
    assert await refused(stranger, "connect_error") == {"message": "wrong key", "data": None}
    assert server.connection_count == 1


async def test_plain_client_refusal_is_connect_error_then_1008(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def deny(socket: Socket, next: Callable[..., None]) -> None:
        next(ConnectError("closed for maintenance", {"back": "soon"}))

    peer = await ns.plain(server)
    assert await refused(peer, "connect_error") == {
        "message": "closed for maintenance",
        "data": {"back": "soon"},
    }


async def test_middleware_run_in_order_and_stop_at_the_first_refusal(ns: Harness) -> None:
    server = await ns.start()
    order: list[str] = []

    def first(socket: Socket, next: Callable[..., None]) -> None:
        order.append("first")
        next()

    async def second(socket: Socket) -> None:
        await asyncio.sleep(0)
        order.append("second")

    def third(socket: Socket) -> None:
        order.append("third")
        if socket.handshake.auth.get("deny"):
            raise ConnectError("third says no")

    def fourth(socket: Socket, next: Callable[..., None]) -> None:
        order.append("fourth")
        next()

    for middleware in (first, second, third, fourth):
        assert server.use(middleware) is middleware
    await ns.v1(server, {"deny": False})
    assert order == ["first", "second", "third", "fourth"]
    order.clear()
    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", {"deny": True})
    assert (await refused(peer))["message"] == "third says no"
    assert order == ["first", "second", "third"]


async def test_middleware_sees_the_handshake(ns: Harness) -> None:
    server = await ns.start()
    seen: dict[str, Any] = {}

    @server.use
    def inspect(socket: Socket) -> None:
        handshake = socket.handshake
        seen["header"] = handshake.headers.get("x-client-version")
        seen["query"] = handshake.query
        seen["auth"] = handshake.auth
        seen["address"] = handshake.address
        seen["remote"] = socket.remote_address
        seen["url"] = handshake.url
        seen["time"] = handshake.time
        seen["connected"] = socket.connected

    await ns.v1(server, {"token": "t0k"}, path="/chat?room=42&lang=en", headers={"X-Client-Version": "7"})
    assert seen["header"] == "7"
    assert seen["query"] == {"room": "42", "lang": "en"}
    assert seen["auth"] == {"token": "t0k"}
    assert seen["address"] == seen["remote"] == "127.0.0.1"
    assert seen["url"] == "/chat?room=42&lang=en"
    assert isinstance(seen["time"], float) and seen["time"] > 0
    assert seen["connected"] is False  # not yet: the middleware decides


@pytest.mark.parametrize(("auth", "expected"), [(None, {}), ({"a": 1}, {"a": 1}), ("token", "token")])
async def test_auth_of_v1_clients(ns: Harness, auth: Any, expected: Any) -> None:
    server = await ns.start()
    seen: list[Any] = []
    server.use(lambda socket: seen.append(socket.handshake.auth))
    await ns.v1(server, auth)
    assert seen == [expected]


async def test_plain_clients_have_empty_auth(ns: Harness) -> None:
    server = await ns.start()
    seen: list[Any] = []
    server.use(lambda socket: seen.append(socket.handshake.auth))
    sockets = ns.sockets(server)
    await ns.plain(server)
    await until(lambda: seen)
    assert seen == [{}]
    # Made on first use, then the same dict: what a middleware puts in it stays.
    socket = await within(sockets.get())
    socket.handshake.auth["user"] = "ada"
    assert socket.handshake.auth == {"user": "ada"} and socket.handshake.auth is seen[0]


async def test_no_event_is_dispatched_before_the_middleware_finish(ns: Harness) -> None:
    server = await ns.start()
    log: list[Any] = []
    release = asyncio.Event()
    captured: list[Socket] = []

    @server.use
    async def gate(socket: Socket) -> None:
        captured.append(socket)
        log.append("middleware start")
        await release.wait()
        log.append("middleware end")

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        log.append("connection")
        socket.on("step", lambda n: log.append(("step", n)) or n * 10)

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    peer.emit("step", 1)
    peer.emit("step", 2, ack=5)
    peer.send([{"event": "step", "data": [3]}, {"event": "step", "data": [4]}])
    await until(lambda: captured)
    # The messages wait in the socket's queue while the middleware runs.
    await until(lambda: len(captured[0]._pending or ()) == 3)
    assert log == ["middleware start"]
    release.set()
    (answer,) = await peer.expect("$connect")
    assert answer == {"id": captured[0].id, "dedup_window": 300.0}
    assert (await peer.expect_ack(5))["data"] == [20]
    assert log == ["middleware start", "middleware end", "connection", *(("step", n) for n in (1, 2, 3, 4))]


async def test_plain_client_messages_wait_for_the_middleware_too(ns: Harness) -> None:
    server = await ns.start()
    release = asyncio.Event()
    got: list[int] = []
    captured: list[Socket] = []

    @server.use
    async def gate(socket: Socket) -> None:
        captured.append(socket)
        await release.wait()

    server.on("connection", lambda socket: socket.on("n", got.append))
    peer = await ns.plain(server)
    for n in range(5):
        peer.emit("n", n)
    peer.emit("n", 5, ack=0)
    await until(lambda: captured and len(captured[0]._pending or ()) == 6)
    assert got == []
    release.set()
    assert (await peer.expect_ack(0))["data"] == [None]
    assert got == [0, 1, 2, 3, 4, 5]


async def test_v1_client_without_connect_is_closed_after_handshake_timeout(ns: Harness) -> None:
    server = await ns.start(handshake_timeout=0.3)
    connections = Recorder()
    server.on("connection", connections)
    other = await ns.v1(server)
    silent = await ns.v1_unconnected(server)
    closed = await silent.closed()
    assert closed.code == 1008
    assert "handshake_timeout" in closed.reason
    assert len(connections.calls) == 1  # only the other one
    server.emit("still-serving")
    assert await other.expect("still-serving") == []


async def test_middleware_that_never_decides_is_cut_by_handshake_timeout(ns: Harness) -> None:
    server = await ns.start(handshake_timeout=0.3)
    server.use(lambda socket, next: None)  # forgets to call next
    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    assert await peer.close_code() == 1008
    assert server.connection_count == 0


async def test_connect_step_within_the_deadline_is_not_cut(ns: Harness) -> None:
    server = await ns.start(handshake_timeout=0.5)
    peer = await ns.v1(server)
    await asyncio.sleep(0.6)  # past the deadline: the connected socket is unaffected
    server.emit("alive")
    assert await peer.expect("alive") == []


async def test_too_many_early_messages_close_with_1008(ns: Harness) -> None:
    server = await ns.start(max_pending_messages=3)
    release = asyncio.Event()

    @server.use
    async def gate(socket: Socket) -> None:
        await release.wait()

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    for n in range(4):
        peer.emit("early", n)
    closed = await peer.closed()
    assert closed.code == 1008
    assert "too many messages" in closed.reason
    release.set()
    # Other clients are fine, up to the limit.
    ok = await ns.v1_unconnected(server)
    ok.emit("$connect", None)
    for n in range(3):
        ok.emit("early", n)
    (answer,) = await ok.expect("$connect")
    assert answer["id"] in server.sockets


async def test_first_frame_of_a_v1_client_must_be_connect(ns: Harness) -> None:
    server = await ns.start()
    peer = await ns.v1_unconnected(server)
    peer.emit("chat", "hi")
    assert await peer.close_code() == 1008


async def test_malformed_connect_frame_closes(ns: Harness) -> None:
    server = await ns.start()
    peer = await ns.v1_unconnected(server)
    peer.ws.send("{not json")
    assert await peer.close_code() == 1007


async def test_a_second_connect_is_refused_with_error_event(ns: Harness) -> None:
    server = await ns.start()
    peer = await ns.v1(server)
    peer.emit("$connect", None, ack=3)
    assert (await peer.expect_ack(3))["error"]["message"] == "event name '$connect' is reserved"
    (error,) = await peer.expect("$error")
    assert "$connect" in error["message"]
    assert server.connection_count == 1


async def test_client_leaving_during_middleware_is_never_connected(ns: Harness) -> None:
    server = await ns.start()
    started, release = asyncio.Event(), asyncio.Event()
    connections, disconnects = Recorder(), Recorder()
    server.on("connection", connections)
    server.on("disconnect", disconnects)
    captured: list[Socket] = []

    @server.use
    async def gate(socket: Socket) -> None:
        captured.append(socket)
        started.set()
        await release.wait()

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    await within(started.wait())
    peer.ws.abort()
    await until(lambda: captured[0]._ws.closed)
    release.set()
    await until(lambda: not server._admissions)
    assert connections.calls == [] and disconnects.calls == []
    assert server.connection_count == 0 and not captured[0].connected


async def test_middleware_may_disconnect_the_socket(ns: Harness) -> None:
    server = await ns.start()
    connections = Recorder()
    server.on("connection", connections)

    @server.use
    def bounce(socket: Socket, next: Callable[..., None]) -> None:
        socket.disconnect()
        next()

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    closed = await peer.closed()
    assert closed.code == 1000
    assert connections.calls == [] and server.connection_count == 0


def test_use_refuses_callables_that_cannot_be_middleware() -> None:
    server = NanoSocket()
    with pytest.raises(TypeError, match="middleware"):
        server.use(lambda: None)
    with pytest.raises(TypeError, match="middleware"):
        server.use(lambda a, b, c: None)
    with pytest.raises(TypeError):
        server.use("not callable")  # type: ignore[arg-type]


@pytest.mark.parametrize("decision", ["accept", "refuse"])
async def test_nothing_reaches_a_client_before_its_connect_step_ends(ns: Harness, decision: str) -> None:
    server = await ns.start()
    started, release = asyncio.Event(), asyncio.Event()
    captured: list[Socket] = []

    @server.use
    async def gate(socket: Socket) -> None:
        if not socket.handshake.auth.get("wait"):
            return
        socket.join("members")  # joining during the connect step is allowed...
        captured.append(socket)
        started.set()
        await release.wait()
        if decision == "refuse":
            raise ConnectError("not a member after all")

    member = await ns.v1(server)
    assert member.sid is not None
    server.sockets[member.sid].join("members")
    waiting = await ns.v1_unconnected(server)
    waiting.emit("$connect", {"wait": True})
    await within(started.wait())
    # ...but what the room gets does not reach a socket that is not connected yet.
    assert server.to("members").emit("members-only", "secret") == 1
    assert captured[0].volatile.emit("volatile", "secret") is SendStatus.DROPPED
    assert captured[0].emit("direct", "secret") is SendStatus.DROPPED
    assert await member.expect("members-only") == ["secret"]
    release.set()
    if decision == "accept":
        (answer,) = await waiting.expect("$connect")
        assert answer == {"id": captured[0].id, "dedup_window": 300.0}
        assert server.to("members").emit("members-only", "welcome") == 2
        assert await waiting.expect("members-only") == ["welcome"]
    else:
        assert (await refused(waiting))["message"] == "not a member after all"
        await until(lambda: server.get_room_size("members") == 1)  # the refused socket left the room


@pytest.mark.parametrize("ending", ["client leaves", "handshake timeout"])
async def test_a_running_middleware_is_cancelled_when_the_connection_ends(ns: Harness, ending: str) -> None:
    server = await ns.start(handshake_timeout=0.3 if ending == "handshake timeout" else 10)
    started, cancelled = asyncio.Event(), asyncio.Event()

    @server.use
    async def gate(socket: Socket) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never decides
        except asyncio.CancelledError:
            cancelled.set()
            raise

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    await within(started.wait())
    if ending == "client leaves":
        peer.ws.abort()
    else:
        assert await peer.close_code() == 1008
    await within(cancelled.wait())
    await until(lambda: not server._admissions)
    assert server.stats.connections_rejected == 0
