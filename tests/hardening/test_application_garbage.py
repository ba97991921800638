"""Hardening, application-level garbage: well-formed frames whose envelopes are not what the
application expects. Nesting deeper than the codecs allow closes the connection (1007 for JSON,
1003 for msgpack); huge keys and odd-shaped values are only data (delivered, or refused by the
handler's own checks as an ack error); wrong types and arities are ack errors; reserved names are
refused with ``$error`` and never reach a handler; unknown ack ids are counted and dropped. In each
case the other clients are served throughout and memory comes back.

tests/server/test_connection.py checks the exact close code of each malformed envelope once; here
the same garbage comes in volume, next to bystanders.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson
import pytest
from hardening_kit import Bystanders, KiB, Memory, forget, start_server
from server_kit import Harness, Peer, Recorder, until, within

from nanosocket import NanoSocket, Socket
from nanosocket.protocol.envelope import PEER_RESERVED_EVENTS
from nanosocket.protocol.frames import BINARY, TEXT


def nested_json(depth: int) -> bytes:
    return b'{"event":"x","data":[' + b"[" * depth + b"]" * depth + b"]}"


def nested_msgpack(depth: int) -> bytes:
    # {"event": "x", "data": [[[...]]]}: fixarray of one element, depth times, around nil.
    return b"\x82\xa5event\xa1x\xa4data\x91" + b"\x91" * depth + b"\xc0"


def typed_server(server: NanoSocket) -> Recorder:
    """Sockets with handlers that expect particular types, and an ``x`` recorder."""
    seen = Recorder()

    def on_connection(socket: Socket) -> None:
        socket.on("x", seen)

        @socket.on("add")
        def add(a: int, b: int) -> int:
            if type(a) is not int or type(b) is not int:
                raise TypeError("add takes two integers")
            return a + b

        @socket.on("greet")
        def greet(person: dict[str, Any]) -> str:
            return "hello " + person["name"]

        @socket.on("count")
        def count(value: Any) -> int:
            return len(value)

    server.on("connection", on_connection)
    return seen


@pytest.mark.parametrize(
    ("kind", "payload", "code"),
    [
        ("json-2000-deep", nested_json(2000), 1007),
        ("json-100000-deep", nested_json(100_000), 1007),
        ("msgpack-5000-deep", nested_msgpack(5000), 1003),
        ("msgpack-100000-deep", nested_msgpack(100_000), 1003),
    ],
)
async def test_nesting_beyond_the_codecs_limits_closes_only_the_offender(
    ns: Harness, memory: Memory, kind: str, payload: bytes, code: int
) -> None:
    server = await start_server(ns)
    seen = typed_server(server)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    for _ in range(10):
        raw = await ns.tcp(server.port)
        assert await raw.upgrade(server.port) == 101
        raw.send_frame(TEXT if kind.startswith("json") else BINARY, payload)
        _, (got, _) = await raw.read_until_close()
        assert got == code
        forget(ns, raw)
        await bystanders.check()
    del raw
    assert seen.calls == []
    await memory.assert_released()


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_nesting_within_the_limits_is_delivered(ns: Harness, encoding: str) -> None:
    server = await start_server(ns)
    seen = typed_server(server)
    bystanders = await Bystanders.connect(ns, server)
    peer = await ns.v1(server)
    # orjson encodes at most 255 levels (decodes 1024): the client's encoder sets this bound.
    value: Any = []
    for _ in range(200 if encoding == "json" else 500):
        value = [value]
    if encoding == "json":
        peer.emit("x", value)
    else:
        peer.send_binary({"event": "x", "data": [value, b"\x00"]})
    ((got, *_),) = await seen.wait()
    assert got == value
    await bystanders.check()


async def test_huge_keys_and_many_keys_are_only_data(ns: Harness, memory: Memory) -> None:
    """An argument with a 256 KiB key, one with 20 000 keys, an envelope with unknown top-level
    keys of any size: handled as data, answered, released."""
    server = await start_server(ns, max_payload_length=2 * 1024 * KiB)
    typed_server(server)
    bystanders = await Bystanders.connect(ns, server)
    peer = await ns.v1(server)
    await memory.baseline()
    for round_ in range(3):
        peer.emit("count", {"k" * (256 * KiB): 1}, ack=1)
        peer.emit("count", {f"key-{n}": n for n in range(20_000)}, ack=2)
        huge_key = "z" * (256 * KiB)
        peer.send({"event": "count", "data": [[1, 2, 3]], "ack": 3, huge_key: {"nested": [1] * 1000}})
        peer.send({"event": "count", "data": ["abcd"], "ack": 4, **{f"extra{n}": n for n in range(5000)}})
        answers = {}
        for _ in range(4):
            reply = await peer.recv()
            answers[reply["ack"]] = reply["data"]
        assert answers == {1: [1], 2: [20_000], 3: [3], 4: [4]}, round_
        await bystanders.check()
    del huge_key
    await memory.assert_released()


WRONG: list[tuple[str, list[Any], str]] = [
    ("add", ["1", 2], "TypeError"),
    ("add", [None, {}], "TypeError"),
    ("add", [1], "HandlerArityError"),
    ("add", [1, 2, 3], "HandlerArityError"),
    ("greet", ["a string"], "TypeError"),
    ("greet", [{"nom": "x"}], "KeyError"),
    ("greet", [[1, 2]], "TypeError"),
    ("count", [12], "TypeError"),
    ("count", [None], "TypeError"),
]


async def test_wrong_types_are_ack_errors_and_the_socket_carries_on(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns)
    server.on("error", lambda *args: None)
    typed_server(server)
    bystanders = await Bystanders.connect(ns, server)
    peer = await ns.v1(server)
    await memory.baseline()
    for round_ in range(20):
        for n, (event, args, error) in enumerate(WRONG):
            peer.emit(event, *args, ack=n)
            reply = await peer.expect_ack(n)
            assert reply["error"]["type"] == error, (event, args, reply)
        peer.emit("add", 2, 3, ack=99)
        assert await peer.expect_ack(99) == {"ack": 99, "data": [5]}
        if round_ % 5 == 0:
            await bystanders.check()
    assert server.sockets[peer.sid].connected  # type: ignore[index]
    await memory.assert_released()


async def test_reserved_names_never_reach_handlers(ns: Harness, memory: Memory) -> None:
    """Batches mixing every reserved name (and ``$``-names) with ordinary events: the ordinary
    ones are dispatched in order, each reserved one refused with ``$error`` (and an ack error when
    it asked for one), no local-event or server handler runs, and the socket stays."""
    server = await start_server(ns)
    seen = typed_server(server)
    local = Recorder()
    server_side = Recorder()
    for event in ("error", "disconnect"):
        server.on(event, server_side)

    def on_connection(socket: Socket) -> None:
        for event in ("disconnect", "disconnecting", "error"):
            socket.on(event, local)

    server.on("connection", on_connection)
    bystanders = await Bystanders.connect(ns, server)
    peer = await ns.v1(server)
    reserved = [*sorted(PEER_RESERVED_EVENTS), "$connect", "$error", "$pong", "$anything"]
    await memory.baseline()
    for round_ in range(10):
        batch: list[dict[str, Any]] = []
        for n, name in enumerate(reserved):
            batch.append({"event": name, "data": ["evil", n]})
            batch.append({"event": name, "data": [n], "ack": n})
            batch.append({"event": "x", "data": [round_, n]})
        peer.send(batch)
        refusals = acks = 0
        while refusals < 2 * len(reserved) or acks < len(reserved):
            envelope = await peer.recv()
            if envelope.get("event") == "$error":
                refusals += 1
            else:
                assert "is reserved" in envelope["error"]["message"], envelope
                acks += 1
        await bystanders.check()
    assert seen.calls == [(r, n) for r in range(10) for n in range(len(reserved))]
    assert local.calls == [] and server_side.calls == []
    assert server.sockets[peer.sid].connected  # type: ignore[index]
    del batch
    await memory.assert_released()


async def test_unknown_ack_ids_are_counted_and_dropped(ns: Harness, memory: Memory) -> None:
    """Ack replies nobody asked for (in batches of 1000, JSON and msgpack, data and errors) cost
    nothing and do not disturb a real call's answer."""
    server = await start_server(ns)
    bystanders = await Bystanders.connect(ns, server)
    sockets = ns.sockets(server)
    peer = await ns.v1(server)
    socket = await within(sockets.get())
    await memory.baseline()
    for round_ in range(10):
        peer.send([{"ack": round_ * 1000 + n, "data": ["x" * 100]} for n in range(1000)])
        peer.send_binary([{"ack": 2**53 - 1 - n, "error": {"message": "nobody"}} for n in range(1000)])
        await bystanders.check()
    await until(lambda: server.stats.unknown_acks == 20_000)
    call = asyncio.ensure_future(socket.call("question", timeout=10))
    request = await peer.recv()
    assert request["event"] == "question"
    peer.send([{"ack": request["ack"] + 1, "data": ["wrong"]}, {"ack": request["ack"], "data": ["right"]}])
    assert await within(call) == "right"
    assert socket.connected
    await memory.assert_released()


async def test_garbage_in_volume_from_many_clients(ns: Harness, memory: Memory) -> None:
    """Fifty clients each send a mix of bad envelopes until closed; the bystanders never notice."""
    server = await start_server(ns)
    seen = typed_server(server)
    bystanders = await Bystanders.connect(ns, server)
    garbage: list[str | bytes] = [
        '{"event": 5}',
        '{"event": "x", "ack": -1}',
        '{"ack": "1"}',
        "[1, 2, 3]",
        '"just a string"',
        orjson.dumps([{"event": ""}]).decode(),
        msgpack.packb({1: 2}),
        msgpack.packb([{"event": "x", "data": [msgpack.ExtType(1, b"")]}]),
        b"\xc1",
        "{" * 10,
    ]
    await memory.baseline()
    for n in range(50):
        offender: Peer = await ns.v1(server)
        offender.ws.send(garbage[n % len(garbage)])
        assert await offender.close_code() in (1003, 1007, 1008)
        ns.clients.remove(offender.ws)
        if n % 10 == 0:
            await bystanders.check()
    del offender
    await until(lambda: len(server.sockets) == len(bystanders.peers))
    assert seen.calls == []
    await bystanders.check()
    await memory.assert_released()
