"""Hardening, message sizes: a size over the limit declared in a frame header, or reached by
fragments, or by inflating a compressed message; fragment floods; frames dribbled one byte per
write. Each is closed with 1009 (or handled, when legitimate) within bounded memory, while a
legitimate 1 MiB message written in thousands of small TCP writes is still delivered.
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import orjson
import pytest
from hardening_kit import Bystanders, KiB, Memory, MiB, forget, start_server, write_until_closed
from server_kit import Harness, RawTCP, Recorder, within

from nanosocket import NanoSocket
from nanosocket.protocol.handshake import build_request, generate_key, parse_ws_url

FIN, RSV1, TEXT, BINARY, CONTINUATION = 0x80, 0x40, 0x1, 0x2, 0x0


def header(first: int, length: int, key: bytes) -> bytes:
    if length < 126:
        return bytes((first, 0x80 | length)) + key
    if length < 65536:
        return struct.pack("!BBH", first, 0x80 | 126, length) + key
    return struct.pack("!BBQ", first, 0x80 | 127, length) + key


def frame(first: int, payload: bytes) -> bytes:
    key = os.urandom(4)
    return header(first, len(payload), key) + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def fragments(kind: int, payload: bytes, size: int) -> list[bytes]:
    """``payload`` as a fragmented message of ``size``-byte frames."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return [
        frame((kind if n == 0 else CONTINUATION) | (FIN if n == len(pieces) - 1 else 0), piece)
        for n, piece in enumerate(pieces)
    ]


def sizer(server: NanoSocket) -> Recorder:
    """Sockets answer ``size`` with the length of their argument (and record it)."""
    handled = Recorder()

    def on_connection(socket: Any) -> None:
        def size(value: str | bytes) -> int:
            handled(len(value))
            return len(value)

        socket.on("size", size)

    server.on("connection", on_connection)
    return handled


def envelope_of_size(total: int, *, ack: int = 1) -> tuple[bytes, int]:
    """A ``size`` event asking for ``ack`` whose JSON text is exactly ``total`` bytes, and the
    length of its argument (what the handler answers)."""
    argument = total - len(orjson.dumps({"event": "size", "data": [""], "ack": ack}))
    data = orjson.dumps({"event": "size", "data": ["s" * argument], "ack": ack})
    assert len(data) == total
    return data, argument


async def upgraded(ns: Harness, server: NanoSocket) -> RawTCP:
    raw = await ns.tcp(server.port)
    assert await raw.upgrade(server.port) == 101
    return raw


async def close_code(raw: RawTCP) -> int:
    _, (code, _) = await raw.read_until_close()
    return code


# ----------------------------------------------------------------------- over the limit


@pytest.mark.parametrize("declared", [64 * KiB + 1, 2**30, 2**62], ids=["limit+1", "1GiB", "2^62"])
@pytest.mark.parametrize("delivery", ["whole", "dribbled"])
async def test_a_declared_size_over_the_limit_closes_from_the_header(
    ns: Harness, memory: Memory, declared: int, delivery: str
) -> None:
    """Only the header is ever sent: the server refuses from it, without waiting for (or making
    room for) the payload."""
    server = await start_server(ns, max_payload_length=64 * KiB)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await upgraded(ns, server)
    head = header(FIN | TEXT, declared, os.urandom(4))
    # Dribbled, bystanders are served while the header trickles in.
    chunks = [head] if delivery == "whole" else [head[n : n + 1] for n in range(len(head))]
    _, (code, _) = await write_until_closed(raw, chunks, every=4, between=bystanders.check)
    assert code == 1009
    await bystanders.check()
    forget(ns, raw)
    del raw
    assert memory.peak_growth() < MiB
    await memory.assert_released()


@pytest.mark.parametrize("kind", [TEXT, BINARY], ids=["text", "binary"])
async def test_fragments_adding_up_over_the_limit_close_1009(ns: Harness, memory: Memory, kind: int) -> None:
    server = await start_server(ns, max_payload_length=64 * KiB)
    handled = sizer(server)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await upgraded(ns, server)
    pieces = fragments(kind, b"f" * (256 * KiB), KiB)
    _, (code, _) = await write_until_closed(raw, pieces, every=32, between=bystanders.check)
    assert code == 1009
    assert handled.calls == []
    forget(ns, raw)
    del raw, pieces
    # At most one message's worth (the limit) was ever held, not the 256 KiB sent.
    assert memory.peak_growth() < 64 * KiB + MiB
    await bystanders.check()
    await memory.assert_released()


async def test_a_fragment_flood_closes_1009_at_max_fragments(ns: Harness) -> None:
    server = await start_server(ns)  # max_fragments=1024
    handled = sizer(server)
    bystanders = await Bystanders.connect(ns, server)
    raw = await upgraded(ns, server)
    flood = frame(TEXT, b"") + frame(CONTINUATION, b"") * 5000
    raw.writer.write(flood)
    assert await close_code(raw) == 1009
    assert handled.calls == []
    await bystanders.check()


async def test_empty_fragments_under_a_raised_limit_cost_nothing(ns: Harness, memory: Memory) -> None:
    """50 000 empty fragments (max_fragments raised) hold no memory while they arrive; the message
    they end is delivered."""
    server = await start_server(ns, max_fragments=100_000)
    handled = sizer(server)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await upgraded(ns, server)
    body, argument = envelope_of_size(100)
    raw.writer.write(frame(TEXT, body[:50]))
    empty = frame(CONTINUATION, b"")
    for _ in range(10):
        raw.writer.write(empty * 5000)
        await within(raw.writer.drain())
        await bystanders.check()
    raw.writer.write(frame(FIN | CONTINUATION, body[50:]))
    assert await raw.read_frame() == (TEXT, b'{"ack":1,"data":[%d]}' % argument)
    assert handled.calls == [(argument,)]
    forget(ns, raw)
    del raw
    assert memory.peak_growth() < MiB
    await memory.assert_released()


def bomb(total: int) -> bytes:
    """A permessage-deflate payload inflating to ``total`` zero bytes (``total // 1000`` or so)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    piece = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return (piece * (total // MiB))[:-4]


async def test_a_decompression_bomb_is_cut_at_the_limit(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns, compression="shared")
    handled = sizer(server)
    bystanders = await Bystanders.connect(ns, server)
    payload = bomb(256 * MiB)
    await memory.baseline()
    raw = await ns.tcp(server.port)
    raw.writer.write(
        build_request(
            parse_ws_url(f"ws://127.0.0.1:{server.port}/"), generate_key(), extensions="permessage-deflate"
        )
    )
    head = await within(raw.reader.readuntil(b"\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" in head
    raw.writer.write(frame(FIN | RSV1 | BINARY, payload))
    assert await close_code(raw) == 1009
    assert handled.calls == []
    forget(ns, raw)
    del raw, payload
    # 256 MiB once inflated; the server stopped at the limit (1 MiB).
    assert memory.peak_growth() < 4 * MiB
    await bystanders.check()
    await memory.assert_released()


# --------------------------------------------------------------------- legitimate and slow


@pytest.mark.parametrize(
    ("shape", "write_size"),
    [("one-frame", 256), ("1024-fragments", KiB)],
)
async def test_a_1mib_message_in_thousands_of_small_writes_is_delivered(
    ns: Harness, memory: Memory, shape: str, write_size: int
) -> None:
    server = await start_server(ns)  # max_payload_length 1 MiB, max_fragments 1024
    handled = sizer(server)
    bystanders = await Bystanders.connect(ns, server)
    # The attacker's side (building the message costs this process memory too) before the baseline.
    body, expected = envelope_of_size(MiB)
    wire = frame(FIN | TEXT, body) if shape == "one-frame" else b"".join(fragments(TEXT, body, KiB))
    # Decoding the message is the server's one big transient cost: orjson's parser allocates
    # several times the document's size while it parses. Measured here, on the same message.
    await memory.baseline()
    orjson.loads(body)
    decoding = memory.peak_growth()
    del body
    await memory.baseline()
    raw = await upgraded(ns, server)
    writes = 0
    for start in range(0, len(wire), write_size):
        raw.writer.write(wire[start : start + write_size])
        await within(raw.writer.drain())
        writes += 1
        if writes % 512 == 0:
            await bystanders.check()
            await asyncio.sleep(0)
    assert writes >= 1024
    assert await raw.read_frame() == (TEXT, b'{"ack":1,"data":[%d]}' % expected)
    assert handled.calls == [(expected,)]
    await bystanders.check()
    forget(ns, raw)
    del raw, wire
    # Beyond decoding, the frame's bytes (1 MiB, kept once while they arrive) and the text.
    assert memory.peak_growth() < decoding + 4 * MiB
    await memory.assert_released()


async def test_a_message_dribbled_one_byte_per_write_is_delivered(ns: Harness) -> None:
    server = await start_server(ns)
    handled = sizer(server)
    bystanders = await Bystanders.connect(ns, server)
    raw = await upgraded(ns, server)
    body, argument = envelope_of_size(3000, ack=7)
    wire = b"".join(fragments(TEXT, body, 1000))
    for n in range(len(wire)):
        raw.writer.write(wire[n : n + 1])
        await within(raw.writer.drain())
        if n % 500 == 0:
            await bystanders.check()
    assert await raw.read_frame() == (TEXT, b'{"ack":7,"data":[%d]}' % argument)
    assert handled.calls == [(argument,)]
