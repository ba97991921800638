"""Hardening, slow consumers: clients that stop reading while their room is busy. Once a client's
outbound buffer is over ``max_backpressure`` it is cut off with 1008 "backpressure limit exceeded"
(disconnect reason "slow consumer"); volatile messages are dropped for it instead, without closing
it. The fast members of the room get every message in order, other clients are served throughout,
at most about ``max_backpressure`` per slow client is ever held, and memory comes back once they
are gone.

tests/server/test_connection.py checks the send statuses and the close of one slow client of
``emit``; here whole rooms are busy, with several slow clients, compression, and memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hardening_kit import Bystanders, KiB, Memory, MiB, forget, start_server
from server_kit import Harness, Peer, RawTCP, Recorder, until, within

from nanosocket import NanoSocket, Socket

ROOM = "busy"
LIMIT = 32 * KiB


async def slow_member(ns: Harness, server: NanoSocket) -> tuple[RawTCP, Socket]:
    """A room member that upgrades and then reads nothing (its receive buffer is small)."""
    sockets = ns.sockets(server)
    raw = await ns.tcp(server.port, rcvbuf=4 * KiB)
    assert await raw.upgrade(server.port) == 101
    socket = await within(sockets.get())
    socket.join(ROOM)
    return raw, socket


class FastMember:
    """A room member that reads everything as it comes, recording the sequence numbers."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.received: list[int] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            envelope = orjson.loads(await self.peer.ws.recv())
            if envelope["event"] == "done":
                return
            if envelope["event"] == "wave":
                self.received.append(envelope["data"][0])

    @classmethod
    async def join(cls, ns: Harness, server: NanoSocket) -> FastMember:
        peer = await ns.v1(server)
        assert peer.sid is not None
        server.sockets[peer.sid].join(ROOM)
        return cls(peer)


async def flood_room(
    server: NanoSocket, bystanders: Bystanders, until_: Any, *, volatile: bool = False, size: int = KiB
) -> int:
    """Broadcast numbered messages to the room until ``until_()``; bystanders are checked every
    so often (so they are served during the flood). Returns how many were sent."""
    chunk = "w" * size
    sent = 0
    target = server.volatile.to(ROOM) if volatile else server.to(ROOM)
    while not until_():
        target.emit("wave", sent, chunk)
        sent += 1
        assert sent < 100_000, "the slow clients were never cut off"
        if sent % 8 == 0:
            await asyncio.sleep(0)  # the fast members read
        if sent % 256 == 0:
            await bystanders.check()
    return sent


def all_cut_off(sockets: list[Socket]) -> Any:
    return lambda: not any(socket.connected for socket in sockets)


async def finish(server: NanoSocket, fast: list[FastMember], sent: int) -> None:
    server.to(ROOM).emit("done")
    for member in fast:
        await within(member.task)
        assert member.received == list(range(sent))  # every message, in order


@pytest.mark.parametrize("compression", ["off", "dedicated"])
async def test_slow_members_of_a_busy_room_are_cut_off(ns: Harness, memory: Memory, compression: str) -> None:
    server = await start_server(ns, max_backpressure=LIMIT, close_timeout=30, compression=compression)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    fast = [await FastMember.join(ns, server) for _ in range(3)]
    slow = [await slow_member(ns, server) for _ in range(5)]
    # Compressed ("dedicated"), the limit counts wire bytes: it takes more messages to reach.
    sent = await flood_room(server, bystanders, all_cut_off([socket for _, socket in slow]))
    peak = memory.peak_growth()
    for raw, _ in slow:
        frames, (code, reason) = await raw.read_until_close()
        assert (code, reason) == (1008, "backpressure limit exceeded")
        del frames
    gone = await disconnects.wait(5)
    assert sorted(why for _, why in gone) == ["slow consumer"] * 5
    assert server.stats.backpressure_closes == 5
    await finish(server, fast, sent)
    await bystanders.check()
    # Each slow client held at most about the limit (plus what its kernel buffer took).
    assert peak < 5 * (LIMIT + 256 * KiB) + 2 * MiB
    forget(ns, *(raw for raw, _ in slow))
    for member in fast:
        member.peer.ws.close()
        await member.peer.closed()
        ns.clients.remove(member.peer.ws)
    del slow, fast, gone, raw
    await until(lambda: len(server.sockets) == len(bystanders.peers))
    await memory.assert_released()


async def test_volatile_floods_skip_slow_members_without_closing_them(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns, max_backpressure=LIMIT, close_timeout=30)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    fast = [await FastMember.join(ns, server) for _ in range(2)]
    slow = [await slow_member(ns, server) for _ in range(3)]
    dropped = server.stats.volatile_dropped
    sent = await flood_room(
        server, bystanders, lambda: server.stats.volatile_dropped >= dropped + 3 * 500, volatile=True
    )
    assert all(socket.connected for _, socket in slow) and disconnects.calls == []
    await finish(server, fast, sent)
    await bystanders.check()
    forget(ns, *(raw for raw, _ in slow))
    for member in fast:
        member.peer.ws.close()
        await member.peer.closed()
        ns.clients.remove(member.peer.ws)
    del slow, fast
    await until(lambda: len(server.sockets) == len(bystanders.peers))
    await memory.assert_released()
