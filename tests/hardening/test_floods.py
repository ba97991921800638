"""Hardening, floods: the per-connection rate limits (token buckets of messages and bytes per
second: over them a client is closed with 1008 "rate limit exceeded", disconnect reason "rate
limited", counted in stats and /metrics), and floods that need no limit to stay harmless: thousands
of WebSocket pings, of ``$ping`` events, of connections coming and going. Bystanders keep being
served throughout and memory comes back afterwards.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson
import pytest
from hardening_kit import Bystanders, KiB, Memory, MiB, forget, start_server
from server_kit import Harness, RawTCP, Recorder, until, within

from nanosocket import NanoSocket, NanoSocketClient, connect
from nanosocket.protocol.frames import CLOSE, PING, PONG, TEXT


def event_frame(raw: RawTCP, event: str, *args: Any, ack: int | None = None) -> bytes:
    envelope: dict[str, Any] = {"event": event, "data": list(args)}
    if ack is not None:
        envelope["ack"] = ack
    return raw.frame(TEXT, orjson.dumps(envelope))


async def attacker(ns: Harness, server: NanoSocket) -> RawTCP:
    """A plain client (connected once upgraded) driven byte by byte."""
    raw = await ns.tcp(server.port)
    assert await raw.upgrade(server.port) == 101
    return raw


async def closed_by_server(raw: RawTCP) -> tuple[list[tuple[int, bytes]], tuple[int, str]]:
    """Read to the server's close frame and answer it, as a client should."""
    frames, (code, reason) = await raw.read_until_close()
    raw.send_frame(CLOSE, struct.pack("!H", code))
    return frames, (code, reason)


def spam_counter(server: NanoSocket) -> Recorder:
    handled = Recorder()
    server.on("connection", lambda socket: socket.on("spam", handled))
    return handled


async def reasons(disconnects: Recorder, count: int = 1) -> list[str]:
    return [why for _, why in await disconnects.wait(count)]


# ---------------------------------------------------------------------------- rate limits


async def test_a_message_flood_is_cut_at_the_rate_limit(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns, rate_limit_messages=100, rate_limit_messages_burst=50)
    handled = spam_counter(server)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await attacker(ns, server)
    raw.writer.write(b"".join(event_frame(raw, "spam", n) for n in range(1000)))  # one write
    await bystanders.check()
    _, close = await closed_by_server(raw)
    assert close == (1008, "rate limit exceeded")
    assert await reasons(disconnects) == ["rate limited"]
    # The burst passed, in order; the flood did not.
    assert 50 <= len(handled.calls) < 1000
    assert [args for args in handled.calls] == [(n,) for n in range(len(handled.calls))]
    assert server.stats.rate_limited == 1
    metrics = await ns.http(server, "/metrics")
    assert b"nanosocket_rate_limited_total 1.0" in metrics.body
    await bystanders.check()
    forget(ns, raw)
    del raw
    await memory.assert_released()


async def test_a_batch_counts_each_envelope(ns: Harness) -> None:
    server = await start_server(ns, rate_limit_messages=10, rate_limit_messages_burst=50)
    handled = spam_counter(server)
    raw = await attacker(ns, server)
    singles = b"".join(event_frame(raw, "spam", n) for n in range(10))
    batch = raw.frame(TEXT, orjson.dumps([{"event": "spam", "data": [n]} for n in range(10, 55)]))
    raw.writer.write(singles + batch)
    _, close = await closed_by_server(raw)
    assert close == (1008, "rate limit exceeded")
    # 10 singles + a batch of 45 is 55 messages: the batch, over the burst, is refused whole.
    assert handled.calls == [(n,) for n in range(10)]


async def test_a_byte_flood_is_cut_at_the_rate_limit(ns: Harness) -> None:
    server = await start_server(ns, max_payload_length=16 * KiB, rate_limit_bytes=KiB)
    handled = spam_counter(server)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    raw = await attacker(ns, server)
    chunk = "b" * (8 * KiB - 40)
    raw.writer.write(b"".join(event_frame(raw, "spam", chunk) for _ in range(6)))
    _, close = await closed_by_server(raw)
    assert close == (1008, "rate limit exceeded")
    # The burst is max_payload_length (16 KiB): two messages of about 8 KiB.
    assert len(handled.calls) == 2
    assert await reasons(disconnects) == ["rate limited"]


async def test_messages_sent_before_acceptance_are_charged(ns: Harness) -> None:
    server = await start_server(
        ns, rate_limit_messages=10, rate_limit_messages_burst=20, max_pending_messages=500
    )
    handled = spam_counter(server)
    gate = asyncio.Event()

    @server.use
    async def slow_admission(socket: Any) -> None:
        await gate.wait()

    peer = await ns.v1_unconnected(server)
    peer.emit("$connect", None)
    for n in range(100):
        peer.emit("spam", n)
    closed = await peer.closed()
    assert (closed.code, closed.reason) == (1008, "rate limit exceeded")
    gate.set()
    assert handled.calls == []
    assert server.stats.rate_limited == 1
    assert server.connection_count == 0


async def test_a_client_within_the_limit_is_never_cut(ns: Harness) -> None:
    """Rounds of a full burst, each after the previous one was answered and the bucket had time to
    refill (a pause of more than burst / rate, measured from the answer: never timed)."""
    server = await start_server(ns, rate_limit_messages=200, rate_limit_messages_burst=20)
    handled = spam_counter(server)
    async with NanoSocketClient(f"ws://127.0.0.1:{server.port}", reconnection=False, timeout=5) as client:
        await asyncio.sleep(0.15)  # the $connect took a token
        for round_ in range(5):
            for n in range(19):
                assert client.emit("spam", round_, n)
            assert await within(client.call("echo", round_)) == [round_]
            await asyncio.sleep(0.15)  # 30 tokens' worth: the bucket is full again
        assert client.connected
    assert len(handled.calls) == 5 * 19
    assert server.stats.rate_limited == 0


async def test_our_client_is_not_reconnected_after_a_rate_limit_close(ns: Harness) -> None:
    server = await start_server(ns, rate_limit_messages=5, rate_limit_messages_burst=10)
    client = NanoSocketClient(
        f"ws://127.0.0.1:{server.port}", reconnection_delay=0.01, reconnection_delay_max=0.01, timeout=5
    )
    reasons_seen = Recorder()
    attempts = Recorder()
    client.on("disconnect", reasons_seen)
    client.on("reconnecting", attempts)
    await within(client.connect())
    for n in range(50):
        client.emit("spam", n)
    assert await reasons_seen.wait() == [("policy violation",)]
    await asyncio.sleep(0.1)  # a reconnection would have started by now: none may
    assert attempts.calls == [] and not client.connected
    await client.disconnect()


# --------------------------------------------------------------------- floods without a limit


async def test_a_ping_flood_does_not_starve_others(ns: Harness, memory: Memory) -> None:
    """10 000 WebSocket pings from a client that reads nothing while it sends them: each is answered
    with its pong, in order; the server stops reading the flooder while its pongs wait (bounded),
    and bystanders are served between the waves."""
    server = await start_server(ns)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await attacker(ns, server)
    for wave in range(10):
        pings = (raw.frame(PING, struct.pack("!I", n)) for n in range(wave * 1000, (wave + 1) * 1000))
        raw.writer.write(b"".join(pings))
        await bystanders.check()
    # Each pong is 6 bytes (unmasked header and the 4-byte payload): read them all at once.
    pongs = await within(raw.reader.readexactly(10_000 * 6))
    assert pongs == b"".join(bytes((0x80 | PONG, 4)) + struct.pack("!I", n) for n in range(10_000))
    raw.writer.write(event_frame(raw, "echo", "after the flood", ack=1))
    assert await raw.read_frame() == (TEXT, b'{"ack":1,"data":[["after the flood"]]}')
    await bystanders.check()
    assert memory.peak_growth() < 4 * MiB
    forget(ns, raw)
    del raw, pongs
    await memory.assert_released()


async def test_an_event_ping_flood_is_answered_and_others_are_served(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    raw = await attacker(ns, server)
    for wave in range(10):
        batch = [{"event": "$ping", "data": [n]} for n in range(wave * 500, (wave + 1) * 500)]
        raw.writer.write(raw.frame(TEXT, orjson.dumps(batch)))
        await bystanders.check()
    for n in range(5000):
        opcode, payload = await raw.read_frame()
        assert (opcode, orjson.loads(payload)) == (TEXT, {"event": "$pong", "data": [n]})
    await bystanders.check()
    forget(ns, raw)
    del raw, batch
    await memory.assert_released()


@pytest.mark.parametrize("ending", ["close", "drop"])
async def test_connections_coming_and_going_leave_nothing_behind(
    ns: Harness, memory: Memory, ending: str
) -> None:
    server = await start_server(ns)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    for n in range(200):
        ws = await within(connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["nanosocket.v1"]))
        ws.send(orjson.dumps({"event": "$connect", "data": [{"n": n}]}).decode())
        assert orjson.loads(await within(ws.recv()))["event"] == "$connect"
        if ending == "close":
            ws.close()
        else:
            ws.abort()
        await within(ws.wait_closed())
        if n % 50 == 0:
            await bystanders.check()
    await until(lambda: server.connection_count == len(bystanders.peers))
    await bystanders.check()
    await memory.assert_released()
