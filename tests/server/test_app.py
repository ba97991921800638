"""NanoSocket (server/app.py): options, server events, rooms and broadcasts, lifecycle.

Every test runs a real server on 127.0.0.1 and speaks the wire protocol with raw frames.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from server_kit import Harness, Recorder, until, within

from nanosocket import ConfigurationError, NanoSocket, ServerOptions, Socket
from nanosocket.errors import ConnectionClosedOK

# ------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_payload_length", 0),
        ("max_payload_length", "big"),
        ("max_backpressure", -1),
        ("max_backpressure", True),
        ("idle_timeout", 0),
        ("idle_timeout", float("nan")),
        ("handshake_timeout", -1.0),
        ("handshake_timeout", None),
        ("close_timeout", float("inf")),
        ("max_fragments", 0),
        ("max_handshake_size", 10),
        ("max_headers", 0),
        ("max_pending_messages", 0),
        ("ack_timeout", 0),
        ("path", "chat"),
        ("cors", 5),
        ("cors", ["https://ok.example", ""]),
    ],
)
def test_invalid_option_values_raise_configuration_error_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        NanoSocket(**{option: value})


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_headers"):
        NanoSocket(max_headers=-5)


def test_unknown_option_names_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="max_payload_size"):
        NanoSocket(max_payload_size=10)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("port", -1), ("port", 70000), ("port", "3000"), ("port", True), ("host", 127)],
)
def test_invalid_port_or_host_raise_configuration_error_naming_it(parameter: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=parameter):
        NanoSocket(**{parameter: value})


async def test_listen_refuses_an_invalid_port_by_name(ns: Harness) -> None:
    server = ns.server()
    with pytest.raises(ConfigurationError, match="port"):
        await server.listen(port=65536)
    assert not server.listening


def test_cors_accepts_a_string_or_a_list() -> None:
    assert NanoSocket(cors="https://app.example").options.cors == ("https://app.example",)
    assert NanoSocket(cors=["https://a.example", "https://b.example"]).options.cors == (
        "https://a.example",
        "https://b.example",
    )
    assert NanoSocket(cors="*").options.cors == ("*",)
    assert NanoSocket().options.cors is None


def test_options_are_kept_as_typed_server_options() -> None:
    server = NanoSocket(max_payload_length=2048, ack_timeout=1.5, path="/ws", monitoring=False)
    assert isinstance(server.options, ServerOptions)
    assert server.options.max_payload_length == 2048
    assert server.options.ack_timeout == 1.5
    assert server.options.path == "/ws"
    assert server.options.monitoring is False
    defaults = NanoSocket().options
    assert defaults == ServerOptions()


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.mark.parametrize(
    ("cors", "origin", "status"),
    [
        (["https://app.example"], b"https://app.example", b"101"),
        (["https://app.example"], b"https://evil.example", b"403"),
        ("https://app.example", b"https://app.example", b"101"),
        ("*", b"https://anything.example", b"101"),
        (None, b"https://evil.example", b"403"),
    ],
)
async def test_cors_is_the_origin_policy_of_upgrades(
    ns: Harness, cors: Any, origin: bytes, status: bytes
) -> None:
    server = await ns.start(cors=cors)
    connections = Recorder()
    server.on("connection", connections)
    raw = await ns.tcp(server.port)
    raw.writer.write(UPGRADE + b"Origin: " + origin + b"\r\n\r\n")
    head = await within(raw.reader.readuntil(b"\r\n\r\n"))
    assert head.split(b" ")[1] == status
    if status == b"101":
        await connections.wait()
    else:
        assert connections.calls == [] and server.connection_count == 0


# -------------------------------------------------------------- server events


def test_on_registers_as_decorator_and_as_call() -> None:
    server = NanoSocket()

    @server.on("connection")
    def decorated(socket: Socket) -> None: ...

    def plain(socket: Socket) -> None: ...

    assert server.on("connection", plain) is plain
    assert decorated.__name__ == "decorated"  # the decorator returns the function itself


@pytest.mark.parametrize("event", ["connect", "disconnecting", "connect_error", "", "$x", "a\x00b"])
def test_reserved_names_are_refused_as_server_side_events(event: str) -> None:
    server = NanoSocket()
    with pytest.raises(ValueError, match=r"socket\.on"):
        server.on(event, lambda *args: None)
    with pytest.raises(ValueError):
        server.on(event)
    for reserved in (event, "connection", "close"):
        with pytest.raises(ValueError, match="server-side event"):
            server.server_side_emit(reserved)


@pytest.mark.parametrize("event", ["message", "chat", "config-changed"])
def test_other_names_register_server_side_event_handlers(event: str) -> None:
    server = NanoSocket()

    def handler(a: int, b: int, c: int) -> None: ...

    # Server-side events carry whatever the emitting node passed: no arity check at registration.
    assert server.on(event, handler) is handler
    server.server_side_emit(event, 1, 2, 3)  # a single process: no other node to run it


async def test_both_registration_styles_run_on_connection(ns: Harness) -> None:
    server = await ns.start()
    by_decorator, by_call = Recorder(), Recorder()
    server.on("connection")(by_decorator)
    server.on("connection", by_call)
    await ns.plain(server)
    ((first,),) = await by_decorator.wait()
    ((second,),) = await by_call.wait()
    assert isinstance(first, Socket) and first is second


async def test_listening_and_close_events(ns: Harness) -> None:
    server = ns.server()
    listening, closed = Recorder(), Recorder()
    server.on("listening", listening)
    server.on("close", closed)
    assert not server.listening
    await server.listen()
    assert listening.calls == [()]
    assert server.listening and closed.calls == []
    await server.close()
    assert closed.calls == [()]
    assert not server.listening


async def test_connection_and_disconnect_events_carry_socket_and_reason(ns: Harness) -> None:
    server = await ns.start()
    connections, disconnects = Recorder(), Recorder()
    server.on("connection", connections)
    server.on("disconnect", disconnects)
    peer = await ns.plain(server)
    ((socket,),) = await connections.wait()
    assert socket.connected
    peer.ws.close(1000)
    ((gone, reason),) = await disconnects.wait()
    assert gone is socket and reason == "client disconnect"
    assert not socket.connected


async def test_server_handlers_may_take_fewer_arguments_than_the_event_passes(ns: Harness) -> None:
    server = await ns.start()
    gone: asyncio.Queue[Socket] = asyncio.Queue()

    @server.on("disconnect")
    def only_the_socket(socket: Socket) -> None:
        gone.put_nowait(socket)

    peer = await ns.plain(server)
    peer.ws.close(1000)
    socket = await within(gone.get())
    assert isinstance(socket, Socket)


@pytest.mark.parametrize(("event", "takes"), [("connection", 2), ("listening", 1), ("disconnect", 3)])
def test_server_handlers_needing_more_arguments_are_refused_at_registration(event: str, takes: int) -> None:
    server = NanoSocket(port=0)
    params = ", ".join(f"a{i}" for i in range(takes))
    namespace: dict[str, Any] = {}
    exec(f"def handler({params}): pass", namespace)
    with pytest.raises(TypeError, match=event):
        server.on(event, namespace["handler"])


async def test_async_server_handlers_run(ns: Harness) -> None:
    server = await ns.start()
    seen: list[str] = []
    done = asyncio.Event()

    @server.on("connection")
    async def on_connection(socket: Socket) -> None:
        await asyncio.sleep(0)
        seen.append(socket.id)
        done.set()

    peer = await ns.v1(server)
    await within(done.wait())
    assert seen == [peer.sid]


async def test_error_event_gets_error_and_socket_and_connection_survives(
    ns: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    server = await ns.start()
    errors = Recorder()
    server.on("error", errors)

    @server.on("connection")
    def explode(socket: Socket) -> None:
        raise RuntimeError("connection handler broke")

    @server.on("connection")
    def greet(socket: Socket) -> None:
        socket.emit("hello", "still here")

    with caplog.at_level(logging.ERROR, logger="nanosocket.server"):
        peer = await ns.plain(server)
        assert await peer.expect("hello") == ["still here"]
    ((error, socket),) = await errors.wait()
    assert isinstance(error, RuntimeError) and str(error) == "connection handler broke"
    assert isinstance(socket, Socket) and socket.connected
    assert "connection handler broke" in caplog.text
    assert server.stats.handler_errors == 1


async def test_a_raising_error_handler_is_logged_not_recursed(
    ns: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    server = await ns.start()
    calls: list[BaseException] = []

    @server.on("error")
    def bad_error_handler(error: BaseException, socket: Socket | None) -> None:
        calls.append(error)
        raise ValueError("error handler broke too")

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("boom", lambda: 1 / 0)

    with caplog.at_level(logging.ERROR, logger="nanosocket.server"):
        peer = await ns.plain(server)
        peer.emit("boom", ack=1)
        assert (await peer.expect_ack(1))["error"]["type"] == "ZeroDivisionError"
    assert len(calls) == 1 and isinstance(calls[0], ZeroDivisionError)
    assert "error handler broke too" in caplog.text


async def test_off_removes_server_handlers(ns: Harness) -> None:
    server = await ns.start()
    removed, kept = Recorder(), Recorder()
    server.on("connection", removed)
    server.on("connection", kept)
    server.off("connection", removed)
    await ns.plain(server)
    await kept.wait()
    assert removed.calls == []
    server.off("connection")
    await ns.plain(server)
    await until(lambda: server.connection_count == 2)
    assert len(kept.calls) == 1


# --------------------------------------------------------------------- lifecycle


async def test_listen_on_port_zero_publishes_the_port(ns: Harness) -> None:
    server = ns.server()
    assert server.port == 0
    await server.listen()
    assert server.port > 0
    peer = await ns.plain(server)
    assert peer.ws.open
    with pytest.raises(RuntimeError, match="already listening"):
        await server.listen()


async def test_listen_arguments_override_the_constructor(ns: Harness) -> None:
    server = NanoSocket(port=1, host="192.0.2.1")
    ns.servers.append(server)
    await server.listen(port=0, host="127.0.0.1")
    assert server.host == "127.0.0.1" and server.port > 1
    assert (await ns.plain(server)).ws.open


async def test_close_sends_1001_to_everyone_and_returns_when_all_are_gone(ns: Harness) -> None:
    server = await ns.start()
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    peers = [await ns.plain(server), await ns.v1(server), await ns.plain(server)]
    await until(lambda: server.connection_count == 3)
    await within(server.close())
    # close() returned: every connection is gone, and its handlers have run.
    assert server.connection_count == 0
    assert len(disconnects.calls) == 3
    assert {reason for _, reason in disconnects.calls} == {"server shutting down"}
    for peer in peers:
        closed = await peer.closed()
        assert isinstance(closed, ConnectionClosedOK)
        assert closed.code == 1001
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)
    await server.close()  # closing twice is harmless


async def test_close_fails_pending_calls(ns: Harness) -> None:
    server = await ns.start()
    peer = await ns.v1(server)
    socket = server.sockets[peer.sid or ""]
    call = asyncio.ensure_future(socket.call("never-answered", timeout=30))
    await peer.recv()
    await within(server.close())
    with pytest.raises(ConnectionClosedOK) as info:
        await within(call)
    assert info.value.code == 1001


async def test_close_also_ends_sockets_still_in_their_connect_step(ns: Harness) -> None:
    server = await ns.start()
    started, release = asyncio.Event(), asyncio.Event()

    @server.use
    async def slow(socket: Socket) -> None:
        started.set()
        await release.wait()

    connections = Recorder()
    server.on("connection", connections)
    waiting = await ns.v1_unconnected(server)
    waiting.emit("$connect", None)
    await within(started.wait())
    await within(server.close())
    assert await waiting.close_code() == 1001
    assert connections.calls == []


async def test_a_closed_server_can_listen_again(ns: Harness) -> None:
    server = await ns.start()
    await server.close()
    await server.listen(port=0)
    assert server.listening
    peer = await ns.v1(server)
    assert peer.sid is not None


async def test_async_with_listens_and_closes(ns: Harness) -> None:
    disconnects = Recorder()
    async with NanoSocket(port=0, host="127.0.0.1") as server:
        server.on("disconnect", disconnects)
        assert server.listening and server.port > 0
        peer = await ns.plain(server)
        await until(lambda: server.connection_count == 1)
    assert not server.listening
    assert await peer.close_code() == 1001
    assert [reason for _, reason in disconnects.calls] == ["server shutting down"]


async def test_repr_tells_state_and_connections(ns: Harness) -> None:
    server = ns.server()
    assert "stopped" in repr(server)
    await server.listen()
    await ns.plain(server)
    await until(lambda: server.connection_count == 1)
    assert "listening" in repr(server) and "connections=1" in repr(server)


# ------------------------------------------------------- sockets and rooms


async def test_sockets_mapping_and_connection_count(ns: Harness) -> None:
    server = await ns.start()
    sockets = ns.sockets(server)
    assert server.connection_count == 0 and len(server.sockets) == 0
    a = await ns.v1(server)
    b = await ns.plain(server)
    first = await within(sockets.get())
    second = await within(sockets.get())
    assert first.id == a.sid
    assert server.connection_count == 2
    view = server.sockets
    assert len(view) == 2
    assert set(view) == {first.id, second.id}
    assert view[first.id] is first and view[second.id] is second
    assert first.id in view and "nope" not in view
    with pytest.raises(KeyError):
        view["nope"]
    b.ws.close()
    await until(lambda: server.connection_count == 1)
    assert set(view) == {first.id}  # the view is always current


async def test_rooms_names_sizes_and_delete(ns: Harness) -> None:
    server = await ns.start()
    sockets = ns.sockets(server)
    peers = [await ns.plain(server) for _ in range(3)]
    a, b, c = [await within(sockets.get()) for _ in peers]
    assert server.room_names == []
    a.join("lobby")
    b.join(["lobby", "game"])
    c.join("game")
    assert sorted(server.room_names) == ["game", "lobby"]
    assert server.get_room_size("lobby") == 2
    assert server.get_room_size("game") == 2
    assert server.get_room_size("nowhere") == 0
    server.delete_room("lobby")
    assert server.room_names == ["game"]
    assert server.get_room_size("lobby") == 0
    assert a.joined_rooms == set() and b.joined_rooms == {"game"}
    # Everyone is still connected and reachable.
    assert server.connection_count == 3
    assert server.emit("after", 1) == 3
    for peer in peers:
        assert await peer.expect("after") == [1]
    server.delete_room("never-existed")


async def test_broadcast_and_emit_reach_every_connected_socket(ns: Harness) -> None:
    server = await ns.start()
    peers = [await ns.plain(server), await ns.v1(server), await ns.plain(server)]
    await until(lambda: server.connection_count == 3)
    assert server.broadcast("news", "a", 1) == 3
    assert server.emit("news", "b", 2) == 3
    for peer in peers:
        assert await peer.expect("news") == ["a", 1]
        assert await peer.expect("news") == ["b", 2]
    with pytest.raises(ValueError):
        server.emit("disconnect")
    with pytest.raises(ValueError):
        server.emit("$connect")


async def test_server_to_one_or_several_rooms_sends_one_copy(ns: Harness) -> None:
    server = await ns.start()
    in_both, in_red, outside = [await ns.v1(server) for _ in range(3)]
    both, red, out = (server.sockets[peer.sid or ""] for peer in (in_both, in_red, outside))
    both.join(["red", "blue"])
    red.join("red")
    assert server.to(["red", "blue"]).emit("colour", "x") == 2
    assert server.to("red").to("blue").emit("colour", "y") == 2
    assert server.in_("blue").emit("colour", "z") == 1
    for socket in (both, red, out):
        assert server.to(socket.id).emit("marker") == 1
    assert await in_both.expect("colour") == ["x"]
    assert await in_both.expect("colour") == ["y"]
    assert await in_both.expect("colour") == ["z"]
    await in_both.expect("marker")  # no second copy came before it
    assert await in_red.expect("colour") == ["x"]
    assert await in_red.expect("colour") == ["y"]
    await in_red.expect("marker")
    await outside.expect("marker")


async def test_except_leaves_rooms_and_socket_ids_out(ns: Harness) -> None:
    server = await ns.start()
    sockets = ns.sockets(server)
    peers = [await ns.plain(server) for _ in range(3)]
    a, b, c = [await within(sockets.get()) for _ in peers]
    a.join("muted")
    assert server.except_("muted").emit("hi") == 2
    assert server.except_(["muted", b.id]).emit("only-c") == 1
    assert server.to("muted").except_(a.id).emit("nobody") == 0
    server.emit("end")
    assert await peers[0].expect("end") == []
    assert await peers[1].expect("hi") == []
    assert await peers[1].expect("end") == []
    assert await peers[2].expect("hi") == []
    assert await peers[2].expect("only-c") == []
    assert await peers[2].expect("end") == []
    assert c.connected


async def test_server_to_a_socket_id_targets_that_socket(ns: Harness) -> None:
    server = await ns.start()
    a = await ns.v1(server)
    b = await ns.v1(server)
    assert a.sid is not None
    assert server.to(a.sid).emit("private", "for a") == 1
    server.emit("public")
    assert await a.expect("private") == ["for a"]
    assert await a.expect("public") == []
    assert await b.expect("public") == []


async def test_invalid_room_names_are_refused(ns: Harness) -> None:
    server = await ns.start()
    with pytest.raises(ValueError, match="room names"):
        server.to("")
    with pytest.raises(ValueError, match="room names"):
        server.to(["ok", 5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="room names"):
        server.except_([""])


async def test_volatile_broadcast_reaches_ready_sockets(ns: Harness) -> None:
    server = await ns.start()
    peers = [await ns.plain(server), await ns.plain(server)]
    await until(lambda: server.connection_count == 2)
    assert server.volatile.emit("tick", 1) == 2
    assert server.volatile.to("nobody-here").emit("tick", 2) == 0
    for peer in peers:
        assert await peer.expect("tick") == [1]
    assert server.stats.volatile_dropped == 0
