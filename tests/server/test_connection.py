"""Per-connection glue (server/connection.py) over real sockets: dispatch, acks, batches, binary
frames, reserved names, malformed input and its close codes, backpressure, heartbeats.

Every bad-input case checks the close code the offender gets AND that another client of the same
server keeps working and that the server still accepts new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgpack
import orjson
import pytest
from server_kit import Harness, Peer, Recorder, until, within

from nanosocket import NanoSocket, SendStatus, Socket
from nanosocket.protocol.frames import BINARY, PING, TEXT


async def connected(ns: Harness, server: NanoSocket, *, v1: bool = False) -> tuple[Peer, Socket]:
    """A client and its server-side socket."""
    sockets = ns.sockets(server)
    peer = await ns.v1(server) if v1 else await ns.plain(server)
    return peer, await within(sockets.get())


async def serving(ns: Harness, server: NanoSocket, bystander: Peer) -> None:
    """The server still works: a connected client gets a broadcast, and a new client connects."""
    server.emit("still-serving", 1)
    assert await bystander.expect("still-serving") == [1]
    newcomer = await ns.v1(server)
    newcomer.emit("ping", ack=1)
    assert "error" in await newcomer.expect_ack(1)  # no handler: answered, not closed


def recording_server(server: NanoSocket) -> list[tuple[str, tuple[Any, ...]]]:
    """Every socket records the client events it dispatches (x, a, b, c and bin)."""
    log: list[tuple[str, tuple[Any, ...]]] = []

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        for name in ("x", "a", "b", "c", "bin"):
            socket.on(name, lambda *args, name=name: log.append((name, args)))

    return log


# -------------------------------------------------------------------- dispatch


async def test_data_list_is_spread_as_positional_arguments(ns: Harness) -> None:
    server = await ns.start()
    got: list[tuple[Any, ...]] = []
    server.on("connection", lambda s: s.on("two", lambda text, n: got.append((text, n))))
    peer, _ = await connected(ns, server)
    peer.send({"event": "two", "data": ["a", 1], "ack": 0})
    assert (await peer.expect_ack(0))["data"] == [None]
    assert got == [("a", 1)]


async def test_original_client_bare_data_is_one_argument(ns: Harness) -> None:
    server = await ns.start()
    got: list[Any] = []
    server.on("connection", lambda s: s.on("x", lambda value: got.append(value) or "ok"))
    peer, _ = await connected(ns, server)
    peer.send({"event": "x", "data": "hi", "id": "m-1", "timestamp": 1700000000000})
    peer.send({"event": "x", "data": {"text": "hello"}, "id": "m-2", "timestamp": 1700000000001})
    peer.send({"event": "x", "data": None, "ack": 7})
    assert (await peer.expect_ack(7))["data"] == ["ok"]
    assert got == ["hi", {"text": "hello"}, None]


async def test_missing_data_means_no_arguments(ns: Harness) -> None:
    server = await ns.start()
    got: list[tuple[Any, ...]] = []
    server.on("connection", lambda s: s.on("x", lambda *args: got.append(args)))
    peer, _ = await connected(ns, server)
    peer.send({"event": "x"})
    peer.send({"event": "x", "data": []})
    peer.send({"event": "x", "ack": 1})
    await peer.expect_ack(1)
    assert got == [(), (), ()]


async def test_sync_and_async_return_values_answer_the_ack(ns: Harness) -> None:
    server = await ns.start()

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("sync", lambda a, b: a + b)

        @socket.on("async")
        async def add_later(a: int, b: int) -> dict[str, int]:
            await asyncio.sleep(0.01)
            return {"sum": a + b}

        @socket.on("async-now")
        async def add_now(a: int, b: int) -> int:
            return a * b

        socket.on("none", lambda: None)

    peer, _ = await connected(ns, server)
    peer.emit("sync", 2, 3, ack=1)
    peer.emit("async", 2, 3, ack=2)
    peer.emit("async-now", 2, 3, ack=3)
    peer.emit("none", ack=4)
    replies = {}
    for _ in range(4):
        reply = await peer.recv()
        assert set(reply) == {"ack", "data"}
        replies[reply["ack"]] = reply["data"]
    assert replies == {1: [5], 2: [{"sum": 5}], 3: [6], 4: [None]}


async def test_bytes_result_answers_with_a_binary_ack(ns: Harness) -> None:
    server = await ns.start()
    server.on("connection", lambda s: s.on("get", lambda: b"\x00\xff"))
    peer, _ = await connected(ns, server)
    peer.emit("get", ack=9)
    frame = await peer.recv_raw()
    assert isinstance(frame, bytes)
    assert msgpack.unpackb(frame, raw=False) == {"ack": 9, "data": [b"\x00\xff"]}


async def test_only_the_first_handler_answers_the_ack(ns: Harness) -> None:
    server = await ns.start()
    ran: list[str] = []

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("q", lambda: ran.append("first") or "first")
        socket.on("q", lambda: ran.append("second") or "second")

    peer, _ = await connected(ns, server)
    peer.emit("q", ack=1)
    peer.emit("q")
    peer.emit("sync", ack=2)
    assert (await peer.expect_ack(1))["data"] == ["first"]
    assert "error" in await peer.expect_ack(2)  # no reply to the second handler came between
    assert ran == ["first", "second", "first", "second"]


@pytest.mark.parametrize("style", ["sync", "async-first-step", "async-after-await"])
async def test_a_raising_handler_answers_an_ack_error_and_nothing_else_breaks(
    ns: Harness, caplog: pytest.LogCaptureFixture, style: str
) -> None:
    server = await ns.start()
    errors = Recorder()
    server.on("error", errors)
    socket_errors = Recorder()
    after: list[str] = []

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("error", socket_errors)

        if style == "sync":

            def fail(text: str) -> None:
                raise LookupError(f"no room {text}")

        elif style == "async-first-step":

            async def fail(text: str) -> None:
                raise LookupError(f"no room {text}")

        else:

            async def fail(text: str) -> None:
                await asyncio.sleep(0.01)
                raise LookupError(f"no room {text}")

        socket.on("join", fail)
        socket.on("join", after.append)  # the next handler still runs
        socket.on("echo", lambda text: text)

    with caplog.at_level(logging.ERROR, logger="nanosocket.server"):
        peer, socket = await connected(ns, server)
        other, _ = await connected(ns, server)
        peer.emit("join", "blue", ack=3)
        reply = await peer.expect_ack(3)
        assert reply == {"ack": 3, "error": {"message": "no room blue", "type": "LookupError"}}
        ((error, where),) = await errors.wait()
    assert isinstance(error, LookupError) and where is socket
    ((local,),) = await socket_errors.wait()
    assert local is error
    assert "no room blue" in caplog.text
    assert after == ["blue"]
    # The connection stays, and so do the others.
    peer.emit("echo", "still here", ack=4)
    assert (await peer.expect_ack(4))["data"] == ["still here"]
    other.emit("echo", "me too", ack=1)
    assert (await other.expect_ack(1))["data"] == ["me too"]
    assert server.stats.handler_errors == 1


async def test_a_raising_handler_without_ack_sends_nothing(ns: Harness) -> None:
    server = await ns.start()
    errors = Recorder()
    server.on("error", errors)
    server.on("connection", lambda s: s.on("bad", lambda: {}["missing"]))
    peer, _ = await connected(ns, server)
    peer.emit("bad")
    peer.emit("sync", ack=1)
    assert "no handler" in (await peer.expect_ack(1))["error"]["message"]  # nothing came before it
    ((error, _),) = await errors.wait()
    assert isinstance(error, KeyError)


async def test_wrong_number_of_arguments_is_an_ack_error(ns: Harness) -> None:
    server = await ns.start()
    errors = Recorder()
    server.on("error", errors)
    server.on("connection", lambda s: s.on("pair", lambda a, b: [a, b]))
    peer, socket = await connected(ns, server)
    peer.emit("pair", 1, ack=1)
    reply = await peer.expect_ack(1)
    assert reply["error"]["type"] == "HandlerArityError"
    assert "takes 2 arguments, got 1" in reply["error"]["message"]
    peer.emit("pair", 1, 2, 3, ack=2)
    assert "got 3" in (await peer.expect_ack(2))["error"]["message"]
    peer.emit("pair", 1, 2, ack=3)
    assert (await peer.expect_ack(3))["data"] == [[1, 2]]
    assert socket.connected
    await errors.wait(2)


async def test_an_acked_event_without_handler_is_an_ack_error(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    peer.emit("nobody-listens", 1)  # without ack: silently nothing
    peer.emit("nobody-listens", 2, ack=11)
    assert await peer.expect_ack(11) == {
        "ack": 11,
        "error": {"message": "no handler for event 'nobody-listens'"},
    }
    assert socket.connected


async def test_unencodable_result_is_an_ack_error(ns: Harness) -> None:
    server = await ns.start()
    server.on("connection", lambda s: s.on("obj", object))
    peer, _ = await connected(ns, server)
    peer.emit("obj", ack=1)
    reply = await peer.expect_ack(1)
    assert reply["error"]["type"] == "TypeError"
    assert "cannot be sent" in reply["error"]["message"]


async def test_events_start_in_arrival_order_without_waiting_for_slow_ones(ns: Harness) -> None:
    server = await ns.start()
    log: list[str] = []
    release = asyncio.Event()

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        @socket.on("slow")
        async def slow(n: int) -> str:
            log.append(f"slow {n} start")
            await release.wait()
            log.append(f"slow {n} end")
            return "slow done"

        @socket.on("fast")
        def fast(n: int) -> str:
            log.append(f"fast {n}")
            return "fast done"

    peer, _ = await connected(ns, server)
    peer.emit("slow", 1, ack=1)
    peer.emit("fast", 2, ack=2)
    peer.emit("slow", 3, ack=3)
    peer.emit("fast", 4, ack=4)
    assert (await peer.expect_ack(2))["data"] == ["fast done"]
    assert (await peer.expect_ack(4))["data"] == ["fast done"]
    assert log == ["slow 1 start", "fast 2", "slow 3 start", "fast 4"]
    release.set()
    replies = {(await peer.recv())["ack"] for _ in range(2)}
    assert replies == {1, 3}
    assert log[4:] == ["slow 1 end", "slow 3 end"]


async def test_batches_are_handled_in_order(ns: Harness) -> None:
    server = await ns.start()
    log = recording_server(server)
    server.on("connection", lambda s: s.on("sum", lambda a, b: a + b))
    peer, _ = await connected(ns, server)
    peer.send(
        [
            {"event": "a", "data": [1]},
            {"event": "sum", "data": [1, 2], "ack": 1},
            {"event": "b", "data": "bare"},
            {"event": "sum", "data": [3, 4], "ack": 2},
            {"event": "c"},
        ]
    )
    assert (await peer.expect_ack(1))["data"] == [3]
    assert (await peer.expect_ack(2))["data"] == [7]
    assert log == [("a", (1,)), ("b", ("bare",)), ("c", ())]


@pytest.mark.parametrize("plain", [True, False], ids=["client-layout", "general"])
async def test_a_batch_of_every_kind_of_envelope_is_handled_in_order(ns: Harness, plain: bool) -> None:
    # Written as clients write batches (each envelope in the client layout with plain arguments,
    # which the compiled codec reads without building dicts), or with one argument that is not
    # plain (the whole batch then goes through orjson): handled alike.
    server = await ns.start()
    log = recording_server(server)
    server.on("connection", lambda s: s.on("sum", lambda a, b: a + b))
    peer, _ = await connected(ns, server)
    last = [9] if plain else [{"k": 9}]
    peer.send(
        [
            {"event": "a", "data": [1, "x", True, None]},
            {"event": "sum", "data": [1, 2], "ack": 1},
            {"event": "$ping", "data": [5]},
            {"event": "nobody", "data": [], "ack": 2},
            {"event": "connect", "data": []},
            {"event": "b", "data": last},
        ]
    )
    assert (await peer.expect_ack(1))["data"] == [3]
    assert await peer.expect("$pong") == [5]
    assert "no handler" in (await peer.expect_ack(2))["error"]["message"]
    # The reserved name is refused; the batch goes on.
    assert await peer.expect("$error") == [{"message": "event name 'connect' is reserved"}]
    await until(lambda: len(log) == 2)
    assert log == [("a", (1, "x", True, None)), ("b", tuple(last))]


@pytest.mark.parametrize("plain", [True, False], ids=["client-layout", "general"])
async def test_no_envelope_of_a_batch_runs_after_one_that_disconnected(ns: Harness, plain: bool) -> None:
    server = await ns.start()
    log = recording_server(server)
    server.on("connection", lambda s: s.on("leave", s.disconnect))
    peer, _ = await connected(ns, server)
    arg: Any = 2 if plain else 2.5
    peer.send([{"event": "a", "data": [1]}, {"event": "leave", "data": []}, {"event": "b", "data": [arg]}])
    assert await peer.close_code() is not None
    assert log == [("a", (1,))]


async def test_a_batch_can_carry_ack_replies(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    first = asyncio.ensure_future(socket.call("q1"))
    second = asyncio.ensure_future(socket.call("q2"))
    acks = [(await peer.recv())["ack"], (await peer.recv())["ack"]]
    peer.send([{"ack": acks[1], "data": ["two"]}, {"ack": acks[0], "data": ["one"]}])
    assert await within(asyncio.gather(first, second)) == ["one", "two"]


async def test_binary_frames_are_decoded_and_bytes_stay_bytes(ns: Harness) -> None:
    server = await ns.start()
    log = recording_server(server)
    server.on("connection", lambda s: s.on("len", len))
    peer, _ = await connected(ns, server)
    peer.send_binary({"event": "bin", "data": [b"\x00\x01"]})
    peer.send_binary({"event": "bin", "data": ["text", 1, {"k": b"\xff"}]})
    peer.send_binary([{"event": "a", "data": [b"1"]}, {"event": "b", "data": [2]}])
    peer.send_binary({"event": "len", "data": [b"12345"], "ack": 5})
    assert (await peer.expect_ack(5))["data"] == [5]
    assert log == [
        ("bin", (b"\x00\x01",)),
        ("bin", ("text", 1, {"k": b"\xff"})),
        ("a", (b"1",)),
        ("b", (2,)),
    ]
    assert isinstance(log[0][1][0], bytes)


@pytest.mark.parametrize(
    "name", ["connect", "disconnect", "error", "connect_error", "disconnecting", "$foo", "$connect_error"]
)
async def test_reserved_names_from_a_client_are_refused_never_dispatched(ns: Harness, name: str) -> None:
    server = await ns.start()
    log = recording_server(server)
    errors = Recorder()

    def listen_if_allowed(s: Socket) -> None:
        # Names that can never fire on a socket cannot even be registered (see below).
        with contextlib.suppress(ValueError):
            s.on(name, lambda *args: log.append((name, args)))

    server.on("connection", listen_if_allowed)
    server.on("error", errors)
    peer, socket = await connected(ns, server)
    peer.emit(name, "x")
    (refusal,) = await peer.expect("$error")
    assert refusal == {"message": f"event name {name!r} is reserved"}
    peer.emit(name, "y", ack=4)
    assert await peer.expect_ack(4) == {"ack": 4, "error": {"message": f"event name {name!r} is reserved"}}
    assert await peer.expect("$error") == [refusal]
    peer.emit("a", "after")
    peer.emit("sync", ack=5)
    await peer.expect_ack(5)
    assert log == [("a", ("after",))]
    assert socket.connected and errors.calls == []


@pytest.mark.parametrize("name", ["connect", "connect_error", "reconnecting", "$foo", "", "a\x00b"])
async def test_socket_refuses_handlers_for_events_that_never_fire(ns: Harness, name: str) -> None:
    server = await ns.start()
    _, socket = await connected(ns, server)
    with pytest.raises(ValueError):
        socket.on(name, lambda *args: None)


async def test_local_event_handlers_may_take_fewer_arguments_and_not_more(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    with pytest.raises(TypeError, match="disconnect"):
        socket.on("disconnect", lambda reason, extra: None)
    gone = asyncio.Event()
    socket.on("disconnect", gone.set)
    peer.ws.close(1000)
    await within(gone.wait())


async def test_ping_is_answered_with_pong_carrying_the_same_arguments(ns: Harness) -> None:
    server = await ns.start()
    log = recording_server(server)
    peer, socket = await connected(ns, server)
    peer.emit("$ping")
    assert await peer.expect("$pong") == []
    peer.emit("$ping", 7, "x")
    assert await peer.expect("$pong") == [7, "x"]
    assert log == [] and socket.connected


async def test_unknown_and_late_ack_replies_are_ignored_and_counted(ns: Harness) -> None:
    server = await ns.start()
    peer, socket = await connected(ns, server)
    peer.send({"ack": 123456, "data": ["nobody asked"]})
    peer.send({"ack": 0, "error": {"message": "nobody asked either"}})
    await until(lambda: server.stats.unknown_acks == 2)
    call = asyncio.ensure_future(socket.call("q", timeout=10))
    request = await peer.recv()
    peer.send({"ack": request["ack"], "data": [1]})
    peer.send({"ack": request["ack"], "data": [2]})  # a duplicate is late
    assert await within(call) == 1
    await until(lambda: server.stats.unknown_acks == 3)
    assert socket.connected


# ----------------------------------------------------------- malformed input

TOO_DEEP = "[" * 2000 + "]" * 2000
BATCH_1001 = orjson.dumps([{"event": "x"}] * 1001).decode()

BAD_INPUT: list[tuple[str, str | bytes, int]] = [
    ("malformed-json", '{"event": "x", ', 1007),
    ("trailing-garbage", '{"event": "x"} !', 1007),
    ("json-string", '"hello"', 1008),
    ("json-number", "42", 1008),
    ("json-null", "null", 1008),
    ("json-true", "true", 1008),
    ("no-event-no-ack", '{"data": [1]}', 1008),
    ("empty-event", '{"event": ""}', 1008),
    ("event-not-a-string", '{"event": 5}', 1008),
    ("event-a-list", '{"event": ["x"]}', 1008),
    ("event-with-nul", '{"event": "a\\u0000b"}', 1008),
    ("ack-string", '{"event": "x", "ack": "1"}', 1008),
    ("ack-negative", '{"event": "x", "ack": -1}', 1008),
    ("ack-float", '{"event": "x", "ack": 1.5}', 1008),
    ("ack-bool", '{"event": "x", "ack": true}', 1008),
    ("ack-too-big", '{"event": "x", "ack": 9007199254740992}', 1008),
    ("reply-ack-string", '{"ack": "3", "data": []}', 1008),
    ("reply-error-not-object", '{"ack": 3, "error": "bad"}', 1008),
    ("batch-over-1000", BATCH_1001, 1008),
    ("batch-with-non-object", '[3, {"event": "x"}]', 1008),
    ("nested-2000-deep", TOO_DEEP, 1007),
    ("binary-garbage", b"\xc1\xc1\xc1", 1003),
    ("binary-truncated", b"\x93\x01", 1003),
    ("msgpack-extension", msgpack.packb({"event": "x", "data": [msgpack.ExtType(5, b"ab")]}), 1003),
    ("msgpack-int-keys", msgpack.packb({1: "x"}), 1003),
    ("msgpack-not-envelope", msgpack.packb(12), 1008),
    ("msgpack-no-event", msgpack.packb({"data": [1]}), 1008),
    ("over-max-payload", '{"event": "x", "data": ["' + "y" * 70000 + '"]}', 1009),
    ("binary-over-max-payload", b"\x00" * 70000, 1009),
]


@pytest.mark.parametrize(
    ("payload", "code"), [(p, c) for _, p, c in BAD_INPUT], ids=[n for n, _, _ in BAD_INPUT]
)
@pytest.mark.parametrize("kind", ["plain", "v1"])
async def test_bad_input_closes_only_the_offender(
    ns: Harness, payload: str | bytes, code: int, kind: str
) -> None:
    server = await ns.start(max_payload_length=64 * 1024)
    log = recording_server(server)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    bystander, _ = await connected(ns, server)
    offender, socket = await connected(ns, server, v1=kind == "v1")
    offender.ws.send(payload)
    closed = await offender.closed()
    assert closed.code == code
    ((gone, _),) = await disconnects.wait()
    assert gone is socket
    assert log == []  # nothing of a refused frame was dispatched
    await serving(ns, server, bystander)


async def test_invalid_utf8_text_closes_with_1007(ns: Harness) -> None:
    server = await ns.start()
    bystander, _ = await connected(ns, server)
    raw = await ns.tcp(server.port)
    assert await raw.upgrade(server.port) == 101
    raw.send_frame(TEXT, b'{"event": "x", "data": ["\xff\xfe"]}')
    _, (code, _) = await raw.read_until_close()
    assert code == 1007
    await serving(ns, server, bystander)


@pytest.mark.parametrize("seconds", [1, 2**33, -1], ids=["ts32", "ts64", "ts96"])
def test_msgpack_timestamp_extension_is_refused(seconds: int) -> None:
    """docs/protocol.md: msgpack extension types are refused, the Timestamp extension (-1) too,
    although msgpack decodes it itself without calling ``ext_hook`` (each of its 3 encodings)."""
    from nanosocket.errors import ProtocolError
    from nanosocket.protocol.envelope import decode_binary

    frame = msgpack.packb({"event": "x", "data": [{"at": msgpack.Timestamp(seconds, 0)}]})
    with pytest.raises(ProtocolError) as info:
        decode_binary(frame)
    assert info.value.close_code == 1003


def test_msgpack_bytes_resembling_a_timestamp_are_accepted() -> None:
    from nanosocket.protocol.envelope import decode_binary

    frame = msgpack.packb({"event": "x", "data": [b"\xd7\xff\xd6\xff\xc7\x0c\xff"]})
    assert decode_binary(frame)["data"] == [b"\xd7\xff\xd6\xff\xc7\x0c\xff"]


async def test_protocol_errors_are_counted_and_reason_is_parse_error(ns: Harness) -> None:
    server = await ns.start()
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    peer, _ = await connected(ns, server)
    peer.ws.send("{broken")
    assert await peer.close_code() == 1007
    ((_, reason),) = await disconnects.wait()
    assert reason == "parse error"
    assert server.stats.protocol_errors == 1


async def test_valid_envelopes_before_the_bad_one_in_a_batch_were_handled(ns: Harness) -> None:
    server = await ns.start()
    log = recording_server(server)
    peer, _ = await connected(ns, server)
    peer.send([{"event": "a", "data": [1]}, {"event": ""}, {"event": "b"}])
    assert await peer.close_code() == 1008
    assert log == [("a", (1,))]


# --------------------------------------------------------------- backpressure

KiB = 1024


async def slow_reader(ns: Harness, server: NanoSocket) -> tuple[Any, Socket]:
    """A client that upgrades and then reads nothing (a small receive buffer fills quickly)."""
    sockets = ns.sockets(server)
    raw = await ns.tcp(server.port, rcvbuf=4 * KiB)
    assert await raw.upgrade(server.port) == 101
    return raw, await within(sockets.get())


async def test_a_client_that_stops_reading_is_closed_as_slow_consumer(ns: Harness) -> None:
    server = await ns.start(max_backpressure=16 * KiB, close_timeout=30)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    fast, _ = await connected(ns, server)
    raw, slow = await slow_reader(ns, server)
    chunk = "z" * KiB
    statuses = []
    for n in range(200_000):
        status = slow.emit("fill", n, chunk)
        statuses.append(status)
        if not status:
            break
    assert statuses[-1] is SendStatus.DROPPED
    assert SendStatus.BACKPRESSURE in statuses  # it was reported before the limit was hit
    sent = len(statuses) - 1
    # The slow client now reads: everything accepted before the limit, then a 1008 close.
    frames, (code, reason) = await raw.read_until_close()
    assert (code, reason) == (1008, "backpressure limit exceeded")
    assert [orjson.loads(payload)["data"][0] for _, payload in frames] == list(range(sent))
    ((gone, why),) = await disconnects.wait()
    assert gone is slow and why == "slow consumer"
    assert server.stats.backpressure_closes == 1
    assert slow.emit("fill", "late") is SendStatus.DROPPED
    await serving(ns, server, fast)


async def test_volatile_messages_to_a_slow_client_are_dropped_without_closing(ns: Harness) -> None:
    server = await ns.start(max_backpressure=16 * KiB, close_timeout=30)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    fast, _ = await connected(ns, server)
    raw, slow = await slow_reader(ns, server)
    chunk = "v" * KiB
    sent = 0
    while True:
        status = slow.volatile.emit("pos", sent, chunk)
        if not status:
            break
        sent += 1
        assert sent < 200_000
    assert status is SendStatus.DROPPED
    assert slow.connected
    dropped = server.stats.volatile_dropped
    assert dropped == 1
    # A volatile broadcast reaches the fast client only.
    assert server.volatile.emit("tick", "all") == 1
    assert server.stats.volatile_dropped == dropped + 1
    assert await fast.expect("tick") == ["all"]
    # Once the slow client catches up, it is still connected and gets new messages.
    for n in range(sent):
        opcode, payload = await raw.read_frame()
        assert opcode == TEXT and orjson.loads(payload)["data"][0] == n
    assert slow.emit("after", "catching up") is SendStatus.SUCCESS
    opcode, payload = await raw.read_frame()
    assert orjson.loads(payload) == {"event": "after", "data": ["catching up"]}
    assert disconnects.calls == [] and slow.connected
    await serving(ns, server, fast)


async def test_a_broadcast_loop_closes_only_the_client_that_does_not_read(ns: Harness) -> None:
    server = await ns.start(max_backpressure=256 * KiB, close_timeout=30)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    fast, _ = await connected(ns, server)
    received: list[int] = []

    async def read_fast() -> None:
        while True:
            envelope = orjson.loads(await fast.ws.recv())  # drains all it has without yielding
            if envelope["event"] == "done":
                return
            received.append(envelope["data"][0])

    reader = asyncio.ensure_future(read_fast())
    raw, slow = await slow_reader(ns, server)
    chunk = "b" * KiB
    sent = 0
    while True:
        delivered = server.emit("wave", sent, chunk)
        sent += 1
        if delivered == 1:
            break  # the slow client is over the limit: closed, the fast one still served
        assert delivered == 2 and sent < 200_000
        if sent % 8 == 0:
            await asyncio.sleep(0)  # let the fast client read
    _, (code, reason) = await raw.read_until_close()
    assert (code, reason) == (1008, "backpressure limit exceeded")
    ((gone, why),) = await disconnects.wait()
    assert gone is slow and why == "slow consumer"
    assert server.emit("done") == 1
    await within(reader)
    assert received == list(range(sent))  # the fast client got every message, in order


# ------------------------------------------------------------- wire exactness


async def test_frames_to_a_plain_client_are_exactly_event_and_data(ns: Harness) -> None:
    server = await ns.start()

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.join("room")
        socket.on("ask", lambda: "answer")
        socket.on("fail", lambda: 1 / 0)

    peer, socket = await connected(ns, server)
    await connected(ns, server)
    socket.emit("direct", 1)
    socket.volatile.emit("volatile", 2)
    server.emit("broadcast", 3)
    server.to("room").emit("room", 4)
    server.except_("nowhere").emit("except", 5)
    server.volatile.emit("volatile-broadcast", 6)
    other_socket = next(s for s in server.sockets.values() if s is not socket)
    other_socket.broadcast.emit("from-other", 7)
    other_socket.to("room").emit("from-other-to-room", 8)
    socket.emit("no-args")
    names = []
    for _ in range(9):
        frame = await peer.recv_raw()
        assert isinstance(frame, str)
        envelope = orjson.loads(frame)
        assert set(envelope) == {"event", "data"}, envelope
        assert isinstance(envelope["data"], list)
        names.append(envelope["event"])
    assert names == [
        "direct",
        "volatile",
        "broadcast",
        "room",
        "except",
        "volatile-broadcast",
        "from-other",
        "from-other-to-room",
        "no-args",
    ]
    peer.emit("ask", ack=1)
    assert set(await peer.expect_ack(1)) == {"ack", "data"}
    peer.emit("fail", ack=2)
    reply = await peer.expect_ack(2)
    assert set(reply) == {"ack", "error"} and set(reply["error"]) == {"message", "type"}


# ----------------------------------------------------------------- heartbeat


async def test_a_client_that_never_answers_pings_is_closed_with_ping_timeout(ns: Harness) -> None:
    server = await ns.start(idle_timeout=0.4)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    live, live_socket = await connected(ns, server)  # answers pings (the WebSocket layer does)
    sockets = ns.sockets(server)
    silent = await ns.tcp(server.port)
    assert await silent.upgrade(server.port) == 101
    silent_socket = await within(sockets.get())
    ((gone, reason),) = await disconnects.wait()
    assert gone is silent_socket and reason == "ping timeout"
    frames, (code, close_reason) = await silent.read_until_close()
    assert PING in [opcode for opcode, _ in frames]  # it was asked first
    assert (code, close_reason) == (1011, "ping timeout")
    assert live_socket.connected
    await serving(ns, server, live)


async def test_without_idle_timeout_there_are_no_pings(ns: Harness) -> None:
    server = await ns.start(idle_timeout=None)
    sockets = ns.sockets(server)
    silent = await ns.tcp(server.port)
    assert await silent.upgrade(server.port) == 101
    socket = await within(sockets.get())
    await asyncio.sleep(0.3)
    socket.emit("first")
    opcode, payload = await silent.read_frame()
    assert (opcode, orjson.loads(payload)) == (TEXT, {"event": "first", "data": []})
    assert socket.connected


async def test_binary_frames_from_the_server_use_the_binary_opcode(ns: Harness) -> None:
    server = await ns.start()
    sockets = ns.sockets(server)
    raw = await ns.tcp(server.port)
    assert await raw.upgrade(server.port) == 101
    socket = await within(sockets.get())
    socket.emit("b", b"\x01")
    opcode, payload = await raw.read_frame()
    assert opcode == BINARY
    assert msgpack.unpackb(payload, raw=False) == {"event": "b", "data": [b"\x01"]}
