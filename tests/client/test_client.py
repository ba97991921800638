"""NanoSocketClient against a protocol server on 127.0.0.1 (client_kit.ProtocolServer).

Real sockets, no mocks; waits are bounded by a hang guard and nothing is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
import pytest
from client_kit import Conn, Kit, Recorder, decode, until, within

from nanosocket import (
    AckError,
    AckTimeoutError,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionState,
    InvalidHandshake,
    NanoSocketClient,
    WebSocketOptions,
)
from nanosocket.client import reconnect_delay
from nanosocket.client.client import disconnect_reason
from nanosocket.dispatch import HandlerArityError
from nanosocket.protocol.envelope import MAX_BATCH, PEER_RESERVED_EVENTS
from nanosocket.protocol.frames import TEXT

LOCAL_EVENTS = (
    "connect",
    "disconnect",
    "connecting",
    "reconnecting",
    "reconnect_failed",
    "connect_error",
    "error",
)


def free_port_url() -> str:
    """A URL nobody listens on (a port that was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


# ----------------------------------------------------------------------- connecting


async def test_connect_and_disconnect(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert not client.connected and client.id is None

    await within(client.connect())
    conn = await server.connection()
    assert client.connected and client.connection_state is ConnectionState.CONNECTED
    assert client.id == conn.id
    assert conn.ws.subprotocol == "nanosocket.v1"
    assert orjson.loads(conn.frames[0]) == {"event": "$connect", "data": [None]}
    assert events.names() == ["connecting", "connect"]
    await within(client.connect())  # connected already: nothing happens

    await within(client.disconnect())
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert client.id is None
    assert events.of("disconnect") == [("client disconnect",)]
    await until(lambda: conn.closed is not None)
    assert conn.closed == (1000, "client disconnect")
    assert events.of("reconnecting") == []
    assert len(server.connections) == 1


async def test_auth_and_headers_reach_the_server(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, auth={"token": "secret", "n": [1, 2]}, headers={"X-Trace": "abc"})
    await within(client.connect())
    conn = await server.connection()
    assert conn.auth == {"token": "secret", "n": [1, 2]}
    assert conn.request.headers.get("x-trace") == "abc"


async def test_http_urls_are_mapped_to_ws(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(f"http://127.0.0.1:{server.port}/")
    assert client.url == f"ws://127.0.0.1:{server.port}/"
    await within(client.connect())
    assert client.connected


async def test_rejection_raises_connect_error_and_is_not_retried(kit: Kit) -> None:
    server = await kit.server()
    server.refuse = lambda auth: ("invalid token", {"code": 401}) if auth != "good" else None
    client = kit.client(server, auth="bad")
    events = Recorder(client, *LOCAL_EVENTS)
    with pytest.raises(ConnectError) as caught:
        await within(client.connect())
    assert str(caught.value) == "invalid token"
    assert caught.value.data == {"code": 401}
    assert events.of("connect_error") == [(caught.value,)]
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert events.of("reconnecting") == [] and events.of("connect") == []
    assert len(server.connections) == 1


async def test_plain_connect_error_then_1008_is_a_rejection(kit: Kit) -> None:
    server = await kit.server()
    server.plain_refusal = True
    server.refuse = lambda auth: ("go away", None)
    client = kit.client(server)
    with pytest.raises(ConnectError, match="go away"):
        await within(client.connect())
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert len(server.connections) == 1


async def test_a_1008_close_before_connect_is_not_retried(kit: Kit) -> None:
    server = await kit.server()
    server.answer_connect = False
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    task = asyncio.ensure_future(client.connect())
    await until(lambda: server.connections and server.connections[0].frames)
    conn = server.connections[0]
    conn.close(1008, "handshake timeout")
    with pytest.raises(ConnectionClosedError) as caught:
        await within(task)
    assert caught.value.code == 1008
    assert events.of("reconnecting") == []
    assert client.connection_state is ConnectionState.DISCONNECTED


async def test_an_attempt_is_bounded_by_timeout(kit: Kit) -> None:
    server = await kit.server()
    server.answer_connect = False
    client = kit.client(server, timeout=0.05, reconnection=False)
    events = Recorder(client, *LOCAL_EVENTS)
    with pytest.raises(TimeoutError):
        await within(client.connect())
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert [type(args[0]) for args in events.of("connect_error")] == [TimeoutError]
    assert events.of("reconnect_failed") == []  # reconnection is off: nothing to give up


async def test_a_server_without_the_v1_subprotocol_is_refused(kit: Kit) -> None:
    server = await kit.server(speaks_v1=False)
    client = kit.client(server, reconnection=False)
    with pytest.raises(InvalidHandshake, match=r"nanosocket\.v1"):
        await within(client.connect())
    assert client.connection_state is ConnectionState.DISCONNECTED


async def test_refused_tcp_without_reconnection_raises_at_once(kit: Kit) -> None:
    client = kit.client(free_port_url(), reconnection=False)
    with pytest.raises(OSError):
        await within(client.connect())
    assert client.connection_state is ConnectionState.DISCONNECTED


async def test_connect_keeps_trying_until_the_server_is_up(kit: Kit) -> None:
    url = free_port_url()
    client = kit.client(url)
    events = Recorder(client, *LOCAL_EVENTS)
    task = asyncio.ensure_future(client.connect())
    await events.wait("reconnecting", 2)
    assert not task.done()
    await kit.server(port=int(url.rsplit(":", 1)[1].rstrip("/")))
    await within(task)
    assert client.connected
    attempts = [args[0] for args in events.of("reconnecting")]
    assert attempts == list(range(1, len(attempts) + 1))
    assert all(isinstance(args[0], OSError) for args in events.of("connect_error"))
    assert client.reconnect_attempt == 0


async def test_auto_connect_inside_a_running_loop(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, auto_connect=True)
    assert client.connection_state is ConnectionState.CONNECTING
    events = Recorder(client, "connecting", "connect")
    await events.wait("connect")
    assert events.names() == ["connecting", "connect"]
    assert client.connected


def test_auto_connect_outside_a_loop_waits_for_connect() -> None:
    client = NanoSocketClient("ws://127.0.0.1:9/")
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert client.emit("queued", 1) is True
    assert client.queued == 1


async def test_async_with_connects_and_disconnects(kit: Kit) -> None:
    server = await kit.server()
    async with NanoSocketClient(server.url, reconnection_delay=0.01) as client:
        assert client.connected
        assert await within(client.call("add", 1, 2)) == 3
        conn = await server.connection()
    assert client.connection_state is ConnectionState.DISCONNECTED
    await until(lambda: conn.closed is not None)
    assert conn.closed == (1000, "client disconnect")


async def test_connect_again_after_disconnect(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    await within(client.disconnect())
    await within(client.connect())
    assert client.connected
    assert len(server.accepted) == 2
    assert client.id == server.accepted[1].id


async def test_disconnect_while_connecting_fails_connect(kit: Kit) -> None:
    server = await kit.server()
    server.answer_connect = False
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    task = asyncio.ensure_future(client.connect())
    await until(lambda: server.connections and server.connections[0].frames)
    await within(client.disconnect())
    with pytest.raises(ConnectionClosed):
        await within(task)
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert events.of("disconnect") == []  # it never was connected


# ------------------------------------------------------------------- emit and receive


async def test_emit_and_receive_several_arguments(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    got: list[tuple[Any, ...]] = []
    client.on("echo", lambda *args: got.append(args))
    await within(client.connect())
    assert client.emit("echo", "hi", 1, {"k": [1, 2.5, None]}, None, True) is True
    await until(lambda: got)
    assert got == [("hi", 1, {"k": [1, 2.5, None]}, None, True)]
    conn = await server.connection()
    assert orjson.loads(conn.frames[1]) == {
        "event": "echo",
        "data": ["hi", 1, {"k": [1, 2.5, None]}, None, True],
    }


async def test_bytes_travel_as_binary_msgpack_frames(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    got: list[tuple[Any, ...]] = []
    client.on("echo", lambda *args: got.append(args))
    await within(client.connect())
    client.emit("echo", b"\x00\xffbin", "text", {"nested": b"\x01"})
    await until(lambda: got)
    conn = await server.connection()
    frame = conn.frames[1]
    assert isinstance(frame, bytes)
    assert msgpack.unpackb(frame, raw=False) == {
        "event": "echo",
        "data": [b"\x00\xffbin", "text", {"nested": b"\x01"}],
    }
    assert got == [(b"\x00\xffbin", "text", {"nested": b"\x01"})]


async def test_unencodable_arguments_raise_at_emit(kit: Kit) -> None:
    client = kit.client("ws://127.0.0.1:9/")
    with pytest.raises(TypeError):
        client.emit("x", object())
    assert client.queued == 0


@pytest.mark.parametrize("name", ["", "$custom", "a\x00b", *sorted(PEER_RESERVED_EVENTS)])
async def test_reserved_or_invalid_event_names_are_refused(kit: Kit, name: str) -> None:
    client = kit.client("ws://127.0.0.1:9/")
    with pytest.raises(ValueError):
        client.emit(name)
    with pytest.raises(ValueError):
        await client.call(name)
    assert client.queued == 0


async def test_non_string_event_names_are_refused(kit: Kit) -> None:
    client = kit.client("ws://127.0.0.1:9/")
    with pytest.raises(ValueError):
        client.emit(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.on("$connect", print)


async def test_events_are_handled_in_arrival_order(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    seen: list[int] = []

    async def slow(n: int) -> None:
        seen.append(n)
        await asyncio.sleep(0)

    client.on("sync", seen.append)
    client.on("async", slow)

    def burst(conn: Conn) -> None:
        for n in range(100):
            conn.emit("sync" if n % 2 else "async", n)

    server.on_accept = burst
    await within(client.connect())
    await until(lambda: len(seen) == 100)
    assert seen == list(range(100))


# -------------------------------------------------------------------------- calls


async def test_call_returns_the_reply(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    assert await within(client.call("add", 2, 3)) == 5
    assert await within(client.call("echo", 1, "two")) == (1, "two")
    assert await within(client.call("echo")) is None
    assert await within(client.call("echo", b"\x00")) == b"\x00"
    conn = await server.connection()
    acks = [ack for _, _, ack in conn.events]
    assert len(set(acks)) == 4 and None not in acks


async def test_call_times_out(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, ack_timeout=0.05)
    await within(client.connect())
    with pytest.raises(AckTimeoutError):
        await within(client.call("silent"))
    with pytest.raises(AckTimeoutError):
        await within(client.call("silent", timeout=0.01))
    assert await within(client.call("add", 1, timeout=None)) == 1
    assert client.connected


async def test_call_raises_ack_error_when_the_server_handler_fails(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    with pytest.raises(AckError) as caught:
        await within(client.call("fail", 1))
    assert str(caught.value) == "boom"
    assert caught.value.data == {"message": "boom", "type": "ValueError"}
    with pytest.raises(AckError, match="no handler"):
        await within(client.call("unknown"))


async def test_call_timeout_must_be_positive(kit: Kit) -> None:
    client = kit.client("ws://127.0.0.1:9/")
    for bad in (0, -1, True):
        with pytest.raises(ValueError):
            await client.call("x", timeout=bad)


async def test_pending_calls_fail_on_disconnect(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    pending = asyncio.ensure_future(client.call("silent"))
    conn = await server.connection()
    await until(lambda: conn.events)
    await within(client.disconnect())
    with pytest.raises(ConnectionClosed):
        await within(pending)


async def test_pending_calls_fail_when_the_connection_drops(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, "connect")
    await within(client.connect())
    pending = asyncio.ensure_future(client.call("silent"))
    conn = await server.connection()
    await until(lambda: conn.events)
    conn.drop()
    with pytest.raises(ConnectionClosedError) as caught:
        await within(pending)
    assert caught.value.code == 1006
    await events.wait("connect", 2)  # and the client reconnects


async def test_a_cancelled_call_is_forgotten(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    task = asyncio.ensure_future(client.call("silent"))
    conn = await server.connection()
    await until(lambda: conn.events)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await within(client.call("add", 4)) == 4


# ------------------------------------------------------------ server -> client calls


async def test_server_calls_are_answered_by_return_values(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)

    @client.on("double")
    def double(n: int) -> int:
        return n * 2

    @client.on("later")
    async def later(text: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"got": text}

    client.on("nothing", lambda: None)
    client.on("bytes", lambda: b"\x00raw")
    await within(client.connect())
    conn = await server.connection()
    assert await conn.reply(conn.ask("double", 21)) == {"ack": 100, "data": [42]}
    assert await conn.reply(conn.ask("later", "x")) == {"ack": 101, "data": [{"got": "x"}]}
    assert await conn.reply(conn.ask("nothing")) == {"ack": 102, "data": [None]}
    assert await conn.reply(conn.ask("bytes")) == {"ack": 103, "data": [b"\x00raw"]}
    assert isinstance(conn.frames[-1], bytes)


async def test_server_calls_are_answered_by_exceptions(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    errors = Recorder(client, "error")

    def refuse(room: str) -> None:
        raise PermissionError(f"not allowed in {room}")

    async def refuse_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("gone")

    client.on("join", refuse)
    client.on("later", refuse_later)
    client.on("unsendable", object)
    await within(client.connect())
    conn = await server.connection()
    reply = await conn.reply(conn.ask("join", "lobby"))
    assert reply == {"ack": 100, "error": {"message": "not allowed in lobby", "type": "PermissionError"}}
    reply = await conn.reply(conn.ask("later"))
    assert reply["error"] == {"message": "'gone'", "type": "KeyError"}
    reply = await conn.reply(conn.ask("missing"))
    assert reply["error"]["message"] == "no handler for event 'missing'"
    reply = await conn.reply(conn.ask("unsendable"))
    assert reply["error"]["type"] == "TypeError"
    reply = await conn.reply(conn.ask("join"))  # wrong number of arguments
    assert reply["error"]["type"] == "HandlerArityError"
    assert [type(args[0]) for args in errors.of("error")] == [
        PermissionError,
        KeyError,
        TypeError,
        HandlerArityError,
    ]
    assert client.connected


async def test_only_the_first_handler_answers_an_ack(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    calls: list[str] = []

    def answer(name: str) -> Callable[[], str]:
        def handler() -> str:
            calls.append(name)
            return name

        return handler

    client.on("q", answer("first"))
    client.on("q", answer("second"))
    await within(client.connect())
    conn = await server.connection()
    assert await conn.reply(conn.ask("q")) == {"ack": 100, "data": ["first"]}
    await until(lambda: len(calls) == 2)
    assert len([frame for frame in conn.frames if "ack" in decode(frame)]) == 1


# ---------------------------------------------------------------------- on/off/once


async def test_on_off_once(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    a: list[Any] = []
    b: list[Any] = []
    c: list[Any] = []

    def handler_a(x: Any) -> None:
        a.append(x)

    assert client.on("e", handler_a) is handler_a
    client.on("e", b.append)
    client.once("e", c.append)
    decorated = client.once("f")(c.append)
    assert decorated == c.append
    await within(client.connect())
    conn = await server.connection()

    conn.emit("e", 1)
    conn.emit("f", "f1")
    conn.emit("f", "f2")
    conn.emit("e", 2)
    await until(lambda: len(a) == 2)
    assert a == [1, 2] and b == [1, 2] and c == [1, "f1"]

    client.off("e", handler_a)
    conn.emit("e", 3)
    await until(lambda: len(b) == 3)
    assert a == [1, 2]

    client.off("e")
    client.on("g", a.append)
    conn.emit("e", 4)
    conn.emit("g", "g1")
    await until(lambda: "g1" in a)
    assert b == [1, 2, 3]

    client.off()
    client.on("h", c.append)
    conn.emit("g", "g2")
    conn.emit("h", "h1")
    await until(lambda: "h1" in c)
    assert "g2" not in a


async def test_handler_exceptions_go_to_the_error_event(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    errors = Recorder(client, "error")
    got: list[Any] = []

    def broken(x: int) -> None:
        raise RuntimeError(f"broken {x}")

    async def broken_later(x: int) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(f"later {x}")

    client.on("e", broken)
    client.on("e", broken_later)
    client.on("e", got.append)
    await within(client.connect())
    conn = await server.connection()
    conn.emit("e", 1)
    await errors.wait("error", 2)
    assert sorted(str(args[0]) for args in errors.of("error")) == ["broken 1", "later 1"]
    assert got == [1]
    assert client.connected
    assert await within(client.call("add", 1, 1)) == 2


async def test_an_error_handler_that_raises_is_only_logged(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    server = await kit.server()
    client = kit.client(server)

    def bad_error_handler(error: BaseException) -> None:
        raise ValueError("error handler failed")

    client.on("error", bad_error_handler)
    client.on("e", lambda: 1 / 0)
    await within(client.connect())
    conn = await server.connection()
    conn.emit("e")
    await until(lambda: "an 'error' handler raised" in caplog.text)
    assert client.connected


async def test_local_event_handlers_may_be_async(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    seen: list[str] = []

    async def on_connect() -> None:
        await asyncio.sleep(0)
        seen.append("connect")
        client.emit("echo", "from connect handler")

    client.on("connect", on_connect)
    await within(client.connect())
    await until(lambda: server.events("echo"))
    assert seen == ["connect"]


async def test_server_error_messages_become_error_events(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    errors = Recorder(client, "error")
    await within(client.connect())
    conn = await server.connection()
    conn.emit("$error", {"message": "event name 'x' is reserved"})
    (args,) = await errors.wait("error")
    assert "event name 'x' is reserved" in str(args[0])


@pytest.mark.parametrize("name", ["connect", "disconnect", "error", "$weird"])
async def test_reserved_events_from_the_server_are_never_dispatched(kit: Kit, name: str) -> None:
    server = await kit.server()
    client = kit.client(server)
    dispatched: list[Any] = []
    errors: list[BaseException] = []
    if name[0] != "$":
        client.on(name, lambda *args: dispatched.append(args))
    client.on("error", errors.append)
    await within(client.connect())
    dispatched.clear()
    errors.clear()
    conn = await server.connection()
    reply = await conn.reply(conn.ask(name, "spoofed"))
    assert reply["error"]["message"] == f"event name {name!r} is reserved"
    assert ("spoofed",) not in dispatched
    assert any("reserved" in str(error) for error in errors)
    assert client.connected


async def test_malformed_server_frames_close_with_the_error_code_and_reconnect(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    conn = await server.connection()
    conn.ws.send_text("{not json")
    await events.wait("connect", 2)
    assert conn.closed is not None and conn.closed[0] == 1007
    assert events.of("disconnect") == [("transport error",)]


# -------------------------------------------------------------------- offline queue


async def test_emits_while_disconnected_are_sent_once_in_order_after_connect(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    for n in range(5):
        assert client.emit("echo", n) is True
    assert client.queued == 5
    sent_in_connect: list[bool] = []
    client.on("connect", lambda: sent_in_connect.append(client.emit("echo", "after")))
    await within(client.connect())
    assert client.queued == 0
    await until(lambda: len(server.events("echo")) == 6)
    assert server.events("echo") == [("echo", [n]) for n in range(5)] + [("echo", ["after"])]
    conn = await server.connection()
    # $connect first, then the queue in one batch frame, then what came later.
    assert orjson.loads(conn.frames[1]) == [{"event": "echo", "data": [n]} for n in range(5)]


async def test_queue_overflow_drops_the_oldest_and_counts_it(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, max_queue_size=3)
    for n in range(5):
        assert client.emit("echo", n) is True
    assert client.queued == 3
    assert client.dropped == 2
    await within(client.connect())
    await until(lambda: len(server.events("echo")) == 3)
    assert server.events("echo") == [("echo", [2]), ("echo", [3]), ("echo", [4])]


async def test_a_zero_queue_drops_emits_while_disconnected(kit: Kit) -> None:
    client = kit.client("ws://127.0.0.1:9/", max_queue_size=0)
    assert client.emit("x", 1) is False
    assert client.dropped == 1 and client.queued == 0


async def test_calls_while_disconnected_are_queued(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    result = asyncio.ensure_future(client.call("add", 20, 22))
    await asyncio.sleep(0)
    assert client.queued == 1
    await within(client.connect())
    assert await within(result) == 42


async def test_a_queued_call_times_out_from_the_call_and_is_not_sent(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    with pytest.raises(AckTimeoutError):
        await within(client.call("add", 1, timeout=0.01))
    assert client.queued == 0
    client.emit("echo", "marker")
    await within(client.connect())
    await until(lambda: server.events("echo"))
    assert server.events("add") == []


async def test_a_queued_call_pushed_out_of_the_queue_fails(kit: Kit) -> None:
    client = kit.client("ws://127.0.0.1:9/", max_queue_size=1)
    call = asyncio.ensure_future(client.call("add", 1))
    await asyncio.sleep(0)
    client.emit("x")
    with pytest.raises(ConnectionClosedError, match="offline queue"):
        await within(call)
    assert client.dropped == 1


async def test_disconnect_fails_queued_calls_but_keeps_queued_emits(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    call = asyncio.ensure_future(client.call("add", 1))
    await asyncio.sleep(0)
    client.emit("echo", "kept")
    await within(client.disconnect())
    with pytest.raises(ConnectionClosed):
        await within(call)
    assert client.queued == 1
    await within(client.connect())
    await until(lambda: server.events("echo"))
    assert server.events() == [("echo", ["kept"])]


# --------------------------------------------------------------------- reconnection


async def test_reconnects_after_a_restart_and_delivers_the_queue_once_in_order(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    first_id = client.id
    client.emit("echo", "before")
    await until(lambda: server.events("echo"))

    await server.stop()
    await events.wait("disconnect")
    assert events.of("disconnect") == [("server shutting down",)]
    assert client.connection_state in (ConnectionState.RECONNECTING, ConnectionState.CONNECTING)
    await events.wait("reconnecting", 2)  # the server is down: attempts fail
    for n in range(10):
        assert client.emit("echo", n)
    assert client.queued == 10

    await server.start()
    await events.wait("connect", 2)
    assert client.connected and client.id != first_id
    await until(lambda: len(server.events("echo")) == 11)
    assert server.events("echo") == [("echo", ["before"])] + [("echo", [n]) for n in range(10)]
    assert [sid for sid, *_ in server.log][1:] == [client.id] * 10
    attempts = [args[0] for args in events.of("reconnecting")]
    assert attempts == list(range(1, len(attempts) + 1))
    assert client.reconnect_attempt == 0


async def test_connect_waits_through_a_reconnection(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, "reconnecting")
    await within(client.connect())
    await server.stop()
    await events.wait("reconnecting")
    waiting = asyncio.ensure_future(client.connect())
    await events.wait("reconnecting", 2)
    assert not waiting.done()
    await server.start()
    await within(waiting)
    assert client.connected


@pytest.mark.parametrize(
    ("code", "close_reason", "reason"),
    [
        (1001, "", "server shutting down"),
        (1011, "ping timeout", "ping timeout"),
        (1011, "internal error", "transport error"),
        (4000, "", "transport error"),
        (1003, "", "transport error"),
    ],
)
async def test_losses_worth_retrying_reconnect(kit: Kit, code: int, close_reason: str, reason: str) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    client.emit("kick", code, close_reason)
    await events.wait("connect", 2)
    assert events.of("disconnect") == [(reason,)]
    assert events.of("reconnecting")[0] == (1,)


async def test_a_dropped_connection_reconnects(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    client.emit("cut")
    await events.wait("connect", 2)
    assert events.of("disconnect") == [("transport close",)]


@pytest.mark.parametrize(("code", "reason"), [(1008, "policy violation"), (1000, "server disconnect")])
async def test_a_deliberate_server_close_is_not_retried(kit: Kit, code: int, reason: str) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    client.emit("kick", code, "bye")
    await events.wait("disconnect")
    await until(lambda: client.connection_state is ConnectionState.DISCONNECTED)
    assert events.of("disconnect") == [(reason,)]
    assert events.of("reconnecting") == [] and events.of("reconnect_failed") == []
    assert len(server.connections) == 1
    await within(client.connect())  # connect() starts over
    assert client.connected


async def test_without_reconnection_a_loss_ends_it(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, reconnection=False)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    client.emit("cut")
    await events.wait("disconnect")
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert events.of("reconnecting") == [] and events.of("reconnect_failed") == []


async def test_a_deliberate_disconnect_stops_reconnection(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    await server.stop()
    await events.wait("reconnecting", 2)
    await within(client.disconnect())
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert client.reconnect_attempt == 0
    attempts = len(events.of("reconnecting"))
    await server.start()
    client.emit("echo", "queued")
    assert client.queued == 1  # nobody reconnects on its own
    assert len(events.of("reconnecting")) == attempts
    assert events.of("disconnect") == [("server shutting down",)]
    await within(client.connect())
    await until(lambda: server.events("echo"))


async def test_attempts_are_numbered_and_exhaustion_fails(kit: Kit) -> None:
    client = kit.client(free_port_url(), reconnection_attempts=3)
    events = Recorder(client, *LOCAL_EVENTS)
    with pytest.raises(OSError):
        await within(client.connect())
    assert events.of("reconnecting") == [(1,), (2,), (3,)]
    assert events.of("reconnect_failed") == [()]
    assert len(events.of("connect_error")) == 4  # the first attempt and three reconnections
    assert events.names()[-2:] == ["connect_error", "reconnect_failed"]
    assert client.connection_state is ConnectionState.DISCONNECTED


async def test_exhaustion_after_a_loss(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, reconnection_attempts=2)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    await server.stop()
    await events.wait("reconnect_failed")
    assert events.of("reconnecting") == [(1,), (2,)]
    assert client.connection_state is ConnectionState.DISCONNECTED


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0])
def test_backoff_grows_and_stays_within_bounds(factor: float) -> None:
    delay, delay_max = 0.5, 10.0
    for attempt in range(1, 40):
        base = min(delay * 2 ** (attempt - 1), delay_max)
        low = reconnect_delay(
            attempt, delay=delay, delay_max=delay_max, randomization_factor=factor, rand=lambda: 0.0
        )
        high = reconnect_delay(
            attempt, delay=delay, delay_max=delay_max, randomization_factor=factor, rand=lambda: 0.999999
        )
        mid = reconnect_delay(
            attempt, delay=delay, delay_max=delay_max, randomization_factor=factor, rand=lambda: 0.5
        )
        assert mid == pytest.approx(base)
        assert low == pytest.approx(base * (1 - factor))
        assert high == pytest.approx(min(base * (1 + factor), delay_max), rel=1e-5)
        assert 0 <= low <= mid <= high <= delay_max
        real = reconnect_delay(attempt, delay=delay, delay_max=delay_max, randomization_factor=factor)
        assert 0 <= real <= delay_max
    without_jitter = [
        reconnect_delay(n, delay=delay, delay_max=delay_max, randomization_factor=0) for n in range(1, 8)
    ]
    assert without_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_survives_huge_attempt_numbers_and_refuses_zero() -> None:
    assert reconnect_delay(10**6, delay=1, delay_max=30, randomization_factor=0) == 30
    with pytest.raises(ValueError):
        reconnect_delay(0, delay=1, delay_max=30, randomization_factor=0)


def test_disconnect_reasons() -> None:
    assert disconnect_reason(1000) == "server disconnect"
    assert disconnect_reason(1001) == "server shutting down"
    assert disconnect_reason(1006) == "transport close"
    assert disconnect_reason(1008) == "policy violation"
    assert disconnect_reason(1011, "ping timeout") == "ping timeout"
    assert disconnect_reason(1011, "internal error") == "transport error"
    assert disconnect_reason(1002) == "transport error"


# -------------------------------------------------------------------------- batches


async def test_a_batch_is_one_frame(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    conn = await server.connection()
    with client.batch() as same:
        assert same is client
        for n in range(5):
            assert client.emit("echo", n)
        with client.batch():
            client.emit("echo", "nested")
        assert len(conn.frames) == 1  # nothing sent yet
    await until(lambda: len(server.events("echo")) == 6)
    assert len(conn.frames) == 2
    assert orjson.loads(conn.frames[1]) == [{"event": "echo", "data": [n]} for n in [0, 1, 2, 3, 4, "nested"]]


async def test_binary_emits_in_a_batch_keep_their_order(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    conn = await server.connection()
    with client.batch():
        client.emit("echo", 1)
        client.emit("echo", 2)
        client.emit("echo", b"\x03")
        client.emit("echo", 4)
        client.emit("echo", 5)
    await until(lambda: len(server.events("echo")) == 5)
    assert [args for _, args in server.events("echo")] == [[1], [2], [b"\x03"], [4], [5]]
    kinds = [
        type(decode(frame)).__name__ if isinstance(frame, str) else "binary" for frame in conn.frames[1:]
    ]
    assert kinds == ["list", "binary", "list"]


async def test_large_batches_are_split(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    conn = await server.connection()
    count = 2 * MAX_BATCH + 10
    with client.batch():
        for n in range(count):
            client.emit("echo", n)
    await until(lambda: len(server.events("echo")) == count)
    assert [len(decode(frame)) for frame in conn.frames[1:]] == [MAX_BATCH, MAX_BATCH, 10]
    assert [args[0] for _, args in server.events("echo")] == list(range(count))


async def test_batches_respect_the_payload_limit(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, options=WebSocketOptions(max_payload_length=2000))
    await within(client.connect())
    conn = await server.connection()
    with client.batch():
        for n in range(10):
            client.emit("echo", "x" * 300, n)
    await until(lambda: len(server.events("echo")) == 10)
    assert len(conn.frames) > 2
    assert all(len(frame) <= 2000 for frame in conn.frames[1:])
    assert [args[1] for _, args in server.events("echo")] == list(range(10))


async def test_a_call_inside_a_batch_sends_the_batch_first(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    await within(client.connect())
    with client.batch():
        client.emit("echo", "a")
        client.emit("echo", "b")
        assert await within(client.call("add", 1, 2)) == 3
        client.emit("echo", "c")
    await until(lambda: len(server.events()) == 4)
    assert [(event, args[0]) for event, args in server.events()] == [
        ("echo", "a"),
        ("echo", "b"),
        ("add", 1),
        ("echo", "c"),
    ]


async def test_a_batch_while_disconnected_is_queued(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    with client.batch():
        client.emit("echo", 1)
        client.emit("echo", 2)
    assert client.queued == 2
    await within(client.connect())
    await until(lambda: len(server.events("echo")) == 2)
    assert server.events("echo") == [("echo", [1]), ("echo", [2])]


# ---------------------------------------------------------------- states and options


async def test_state_transitions(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server)
    events = Recorder(client, *LOCAL_EVENTS)
    await within(client.connect())
    await server.stop()
    await events.wait("reconnecting", 2)
    await server.start()
    await events.wait("connect", 2)
    await within(client.disconnect())
    states = events.states
    assert states[0] == ("connecting", "connecting")
    assert states[1] == ("connect", "connected")
    assert states[2] == ("disconnect", "reconnecting")
    assert ("reconnecting", "reconnecting") in states
    assert ("connect_error", "connecting") in states
    assert states[-2] == ("connect", "connected")
    assert states[-1] == ("disconnect", "disconnected")


def test_illegal_transitions_raise() -> None:
    client = NanoSocketClient("ws://127.0.0.1:9/", auto_connect=False)
    for state in (ConnectionState.CONNECTED, ConnectionState.RECONNECTING, ConnectionState.DISCONNECTED):
        with pytest.raises(RuntimeError, match="illegal client state transition"):
            client._transition(state)
    client._transition(ConnectionState.CONNECTING)
    with pytest.raises(RuntimeError):
        client._transition(ConnectionState.CONNECTING)
    client._transition(ConnectionState.CONNECTED)
    with pytest.raises(RuntimeError):
        client._transition(ConnectionState.CONNECTING)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("auto_connect", "yes"),
        ("reconnection", 1),
        ("reconnection_attempts", -1),
        ("reconnection_attempts", 1.5),
        ("reconnection_delay", -0.1),
        ("reconnection_delay", float("nan")),
        ("reconnection_delay_max", 0.5),
        ("randomization_factor", 1.5),
        ("randomization_factor", -0.1),
        ("timeout", 0),
        ("timeout", None),
        ("auth", object()),
        ("headers", {"X-Bad": "a\r\nb"}),
        ("headers", [("only-name",)]),
        ("max_queue_size", -1),
        ("max_queue_size", True),
        ("ack_timeout", 0),
        ("options", {"idle_timeout": 1}),
    ],
)
def test_invalid_options_name_the_option(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        NanoSocketClient("ws://127.0.0.1:9/", **{option: value})


@pytest.mark.parametrize("url", ["ftp://example.com/", "not a url", "ws://", 42])
def test_invalid_urls_are_refused(url: Any) -> None:
    with pytest.raises(ConfigurationError, match="url"):
        NanoSocketClient(url)


def test_options_are_kept(kit: Kit) -> None:
    client = NanoSocketClient(
        "wss://example.com/socket?x=1",
        auto_connect=False,
        reconnection_attempts=0,
        headers=[("A", "b")],
        ack_timeout=5,
    )
    assert client.options.reconnection_attempts == 0
    assert client.options.headers == (("A", "b"),)
    assert client.options.ack_timeout == 5
    assert client.url == "wss://example.com/socket?x=1"
    assert "disconnected" in repr(client)


async def test_a_full_send_buffer_drops_emits_and_fails_calls(kit: Kit, net: Any) -> None:
    """A server that stops reading: once the send buffer is over max_backpressure, sends drop."""
    stop_reading = asyncio.Event()

    async def server(peer: Any) -> None:
        await peer.accept_upgrade(headers=[("Sec-WebSocket-Protocol", "nanosocket.v1")])
        _, _, payload = await peer.read_frame()
        assert orjson.loads(payload)["event"] == "$connect"
        peer.send_frame(TEXT, b'{"event":"$connect","data":[{"id":"raw"}]}')
        await stop_reading.wait()

    port = await net.raw_server(server)
    client = kit.client(
        f"ws://127.0.0.1:{port}/", options=WebSocketOptions(max_backpressure=1, backpressure_policy="drop")
    )
    drops: list[tuple[str, str]] = []
    client.on("drop", lambda why, event: drops.append((why, event)))
    await within(client.connect())
    assert client.id == "raw"
    chunk = "x" * 256 * 1024
    sent = 0
    while client.emit("big", chunk):
        sent += 1
        assert sent < 4096, "the send buffer never filled"
    assert client.dropped == 1
    assert drops == [("send_buffer_full", "big")]
    with pytest.raises(ConnectionClosedError, match="send buffer is full"):
        await within(client.call("big", chunk))
    assert client.dropped == 2
    assert client.connected
    stop_reading.set()


async def test_abandoned_calls_make_room_in_a_full_queue(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, max_queue_size=2)
    with pytest.raises(AckTimeoutError):
        await within(client.call("add", 1, timeout=0.01))
    client.emit("echo", 1)
    client.emit("echo", 2)
    assert client.dropped == 0 and client.queued == 2
    await within(client.connect())
    await until(lambda: len(server.events("echo")) == 2)
    assert server.events() == [("echo", [1]), ("echo", [2])]
