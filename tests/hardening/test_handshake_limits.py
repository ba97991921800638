"""Hardening, the opening handshake: the request line and head are bounded in size and header
count, and a handshake has a deadline. Oversized or dribbled handshakes are refused without
growing the server's memory, while legitimate clients connect and bystanders are served.
"""

from __future__ import annotations

import asyncio

import pytest
from hardening_kit import Bystanders, KiB, Memory, MiB, forget, start_server
from server_kit import Harness, RawTCP, within

from nanosocket import NanoSocketClient
from nanosocket.protocol.handshake import build_request, generate_key, parse_ws_url


def upgrade_request(port: int, *, pad: int = 0, headers: int = 0) -> bytes:
    """A valid upgrade request, padded with an ``X-Pad`` header and ``headers`` extra lines."""
    extra = [(f"X-Extra-{n}", str(n)) for n in range(headers)]
    if pad:
        extra.append(("X-Pad", "p" * pad))
    return build_request(parse_ws_url(f"ws://127.0.0.1:{port}/"), generate_key(), headers=extra)


async def status_or_reset(raw: RawTCP) -> int | None:
    """The HTTP status the server answered with, or None when it dropped the connection
    (a reset may discard an answer that was on its way: the server closed with unread bytes)."""
    chunks = []
    try:
        while chunk := await within(raw.reader.read(65536)):
            chunks.append(chunk)
    except ConnectionError:  # reset, or a broken pipe reported by an earlier write
        pass
    data = b"".join(chunks)
    if not data:
        return None
    return int(data.split(b" ", 2)[1])


async def v1_round_trip(server_port: int) -> None:
    """A legitimate client connects, calls, and leaves."""
    client = NanoSocketClient(f"ws://127.0.0.1:{server_port}", reconnection=False, timeout=5)
    async with client:
        assert await within(client.call("echo", "hello")) == ["hello"]


OVERSIZED = {
    # A request line of 20 KiB (the head limit is 16 KiB).
    "request-line": lambda port: b"GET /" + b"a" * (20 * KiB) + b" HTTP/1.1\r\n\r\n",
    # One header line of 20 KiB.
    "header-size": lambda port: upgrade_request(port, pad=20 * KiB),
    # 65 header lines and more (the limit is 64).
    "header-count": lambda port: upgrade_request(port, headers=70),
}


@pytest.mark.parametrize("shape", list(OVERSIZED))
async def test_oversized_heads_are_refused_431(ns: Harness, memory: Memory, shape: str) -> None:
    server = await start_server(ns)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    for _ in range(20):
        raw = await ns.tcp(server.port)
        raw.writer.write(OVERSIZED[shape](server.port))
        assert await status_or_reset(raw) in (431, None)
        forget(ns, raw)
        await bystanders.check()
    await v1_round_trip(server.port)
    assert server.stats.connections_total == len(bystanders.peers) + 1  # nobody else got in
    assert memory.peak_growth() < 4 * MiB
    await memory.assert_released()


@pytest.mark.parametrize("delivery", ["whole", "byte-by-byte"])
async def test_an_endless_head_is_cut_at_the_size_limit(ns: Harness, memory: Memory, delivery: str) -> None:
    """A client that sends header bytes forever: the server stops reading it once the head is over
    max_handshake_size, long before the 16 MiB the client tries to send."""
    server = await start_server(ns, max_handshake_size=4 * KiB)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await ns.tcp(server.port)
    raw.writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
    chunk = b"e" * (1 if delivery == "byte-by-byte" else 64 * KiB)
    sent = 0
    while sent < 16 * MiB:
        raw.writer.write(chunk)
        sent += len(chunk)
        try:
            await within(raw.writer.drain())
        except ConnectionError:
            break
        if raw.reader.at_eof() or raw.writer.transport.is_closing():
            break
        if sent % (256 * KiB) == 0 or (delivery == "byte-by-byte" and sent % KiB == 0):
            await bystanders.check()  # served while the head is still arriving
            await asyncio.sleep(0)
    else:
        pytest.fail("the server read 16 MiB of one request head")
    assert await status_or_reset(raw) in (431, None)
    assert sent < 16 * MiB
    forget(ns, raw)
    await bystanders.check()
    await v1_round_trip(server.port)
    assert memory.peak_growth() < 4 * MiB
    await memory.assert_released()


async def test_dribbled_handshakes_are_dropped_at_the_deadline(ns: Harness, memory: Memory) -> None:
    """Many clients dribble a valid upgrade request one byte at a time (slowloris) and others open a
    TCP connection and send nothing: the handshake deadline drops them all, without an answer,
    while a legitimate client connects and bystanders keep being served."""
    server = await start_server(ns, handshake_timeout=0.5)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    request = upgrade_request(server.port, pad=8 * KiB)  # far more bytes than the deadline lets through
    dribblers = [await ns.tcp(server.port) for _ in range(50)]
    silent = [await ns.tcp(server.port) for _ in range(50)]
    await v1_round_trip(server.port)  # a legitimate client gets in meanwhile
    position = 0
    while not all(raw.writer.transport.is_closing() or raw.reader.at_eof() for raw in dribblers):
        for raw in dribblers:
            if not raw.writer.transport.is_closing():
                raw.writer.write(request[position : position + 1])
        position += 1
        assert position < len(request), "a dribbled handshake outlived its deadline"
        await asyncio.sleep(0.005)
        if position % 20 == 0:
            await bystanders.check()
    for raw in dribblers + silent:
        assert await status_or_reset(raw) is None  # dropped, nothing answered
    await bystanders.check()
    await v1_round_trip(server.port)
    assert server.stats.connections_total == len(bystanders.peers) + 2
    # 100 connections each held at most one partial request head (max_handshake_size).
    assert memory.peak_growth() < 100 * 16 * KiB + 2 * MiB
    forget(ns, *dribblers, *silent)
    del dribblers, silent, raw
    await memory.assert_released()


async def test_a_slow_but_timely_handshake_is_accepted(ns: Harness) -> None:
    """The deadline is for the whole handshake, not per byte: a head dribbled quickly enough gets in."""
    server = await start_server(ns, handshake_timeout=5)
    raw = await ns.tcp(server.port)
    for byte in upgrade_request(server.port):
        raw.writer.write(bytes([byte]))
        await raw.writer.drain()
    head = await within(raw.reader.readuntil(b"\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 101 ")
