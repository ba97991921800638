"""The hardening tests' kit: bystander clients that must stay unaffected by an attack, a memory
probe of this process (the server under attack runs in it), and an echo-ready server.

* ``Memory``: readings of the process's memory before and after an attack. RSS (/proc/self/statm)
  is checked with a generous margin: the allocators keep some freed memory (pymalloc arenas,
  glibc's heap; ``malloc_trim`` is called first to give back what glibc can), so RSS shows only
  that memory was released *in bulk*. The precise check is tracemalloc's traced size, which must
  come back near its baseline; its peak bounds what an attack cost while it ran.
* ``Bystanders``: connected v1 clients in a room of their own. ``check()`` is one round: a room
  broadcast reaches each of them and each gets the answer to an ``echo`` call. Tests run rounds
  before, during (between the steps of an attack) and after it.

Nothing here measures time: waits are bounded by HANG_GUARD only to turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from server_kit import Harness, Peer, RawTCP, within

from nanosocket import NanoSocket, Socket
from nanosocket.server.metrics import current_rss

KiB = 1024
MiB = 1024 * KiB
BYSTANDER_ROOM = "bystanders"


def _malloc_trim() -> None:
    """Ask glibc to return its free heap memory to the system (a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Memory:
    """This process's memory: a baseline, the peak during an attack, the level after it."""

    def __init__(self) -> None:
        self._started = not tracemalloc.is_tracing()
        if self._started:
            tracemalloc.start()
        self.rss = 0
        self.traced = 0

    @staticmethod
    async def settle() -> None:
        """Let closed connections finish going away, then collect garbage."""
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        _malloc_trim()

    async def baseline(self) -> None:
        await self.settle()
        self.rss = current_rss()
        self.traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    def peak_growth(self) -> int:
        """How far traced memory rose above the baseline since it was taken."""
        return tracemalloc.get_traced_memory()[1] - self.traced

    async def assert_released(self, *, traced_margin: int = 256 * KiB, rss_margin: int = 16 * MiB) -> None:
        """Memory is back near the baseline: traced within ``traced_margin``, RSS within
        ``rss_margin`` (generous: the allocators may keep some of what was freed)."""
        await self.settle()
        traced = tracemalloc.get_traced_memory()[0] - self.traced
        rss = current_rss() - self.rss
        if os.environ.get("NANOSOCKET_MEMORY_REPORT"):
            print(
                f"\n[memory] peak +{self.peak_growth() / KiB:.0f} KiB, after: traced {traced / KiB:+.0f} KiB,"
                f" RSS {rss / KiB:+.0f} KiB",
                file=sys.stderr,
            )
        assert traced <= traced_margin, f"traced memory grew by {traced} bytes and stayed"
        assert rss <= rss_margin, f"RSS grew by {rss} bytes and stayed"

    def stop(self) -> None:
        if self._started:
            tracemalloc.stop()


def forget(ns: Harness, *raws: RawTCP) -> None:
    """Abort attackers' raw connections and drop the harness's references to them, so that the
    client side of an attack (which lives in this process too) is not counted as the server's."""
    for raw in raws:
        raw.abort()
        if raw in ns.raws:
            ns.raws.remove(raw)


async def write_until_closed(
    raw: RawTCP,
    chunks: Iterable[bytes],
    *,
    every: int = 0,
    between: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[tuple[int, bytes]], tuple[int, str]]:
    """Write ``chunks`` one write each, until the server closes; return the frames it sent and its
    close frame's (code, reason). ``between`` runs after every ``every`` writes.

    The frames are read meanwhile, and writing stops once the server closed: a write after that
    fails, and a stream reports its error before the data it had already read.
    """
    reading = asyncio.ensure_future(raw.read_until_close())
    try:
        for n, chunk in enumerate(chunks, 1):
            if reading.done() or raw.writer.transport.is_closing():
                break
            raw.writer.write(chunk)
            await within(raw.writer.drain())
            await asyncio.sleep(0)
            if between is not None and every and n % every == 0 and not reading.done():
                await between()
        result: tuple[list[tuple[int, bytes]], tuple[int, str]] = await within(reading)
        return result
    finally:
        reading.cancel()


def _answer_echo(socket: Socket) -> None:
    socket.on("echo", lambda *args: list(args))


async def start_server(ns: Harness, **options: Any) -> NanoSocket:
    """A listening server whose sockets answer ``echo`` calls with their arguments."""
    server = await ns.start(**options)
    server.on("connection", _answer_echo)
    return server


class Bystanders:
    """Clients that have nothing to do with an attack and must not notice it."""

    def __init__(self, server: NanoSocket, peers: list[Peer]) -> None:
        self.server = server
        self.peers = peers
        self.rounds = 0

    @classmethod
    async def connect(cls, ns: Harness, server: NanoSocket, count: int = 2) -> Bystanders:
        peers = []
        for _ in range(count):
            peer = await ns.v1(server)
            assert peer.sid is not None
            server.sockets[peer.sid].join(BYSTANDER_ROOM)
            peers.append(peer)
        bystanders = cls(server, peers)
        await bystanders.check()
        return bystanders

    async def check(self) -> None:
        """One round: each bystander gets a room broadcast and the answer to its echo call."""
        self.rounds += 1
        tag = self.rounds
        self.server.to(BYSTANDER_ROOM).emit("tick", tag)
        for peer in self.peers:
            peer.emit("echo", "round", tag, ack=tag)
        for peer in self.peers:
            await within(self._expect_round(peer, tag))

    @staticmethod
    async def _expect_round(peer: Peer, tag: int) -> None:
        got_tick = got_echo = False
        while not (got_tick and got_echo):
            envelope = await peer.recv()
            if envelope.get("event") == "tick":
                assert envelope["data"] == [tag], envelope
                got_tick = True
            elif envelope.get("ack") == tag and "event" not in envelope:
                assert envelope["data"] == [["round", tag]], envelope
                got_echo = True
            # Anything else is a broadcast to everyone that the test caused: not ours to check.
        assert peer.ws.open
