"""Hardening, handler misbehaviour: handlers that raise (any exception, in a sync handler or in
any step of an async one, CancelledError included), async handlers that wait for seconds or for
ever, connection and disconnect handlers that raise, middleware that raises or never decides. The
connection concerned carries on (or is refused, for middleware), an ack always completes (with the
handler's error when it failed), the server's other clients are served throughout, nothing escapes
into the event loop (the autouse fixture of conftest.py) and memory comes back afterwards.

tests/server/test_connection.py checks the exact ack error replies and the ``error`` events of one
raising handler; here the same misbehaviour repeats under load, next to bystanders.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hardening_kit import Bystanders, Memory, start_server
from server_kit import Harness, Peer, Recorder, until, within

from nanosocket import NanoSocket, Socket


class Failure(Exception):
    pass


def _sync_raise() -> Any:
    raise Failure("sync")


async def _async_raise_first_step() -> Any:
    raise Failure("first step")


async def _async_raise_later() -> Any:
    await asyncio.sleep(0)
    raise Failure("later step")


def _sync_cancelled() -> Any:
    raise asyncio.CancelledError


async def _async_cancelled_first_step() -> Any:
    # Awaiting a future that was cancelled already raises in the handler's first step.
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    return await future


async def _async_cancelled_later() -> Any:
    await asyncio.sleep(0)
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    return await future


def _deep_recursion() -> Any:
    def down(n: int) -> int:
        return down(n + 1) + 1

    return down(0)


def _unencodable_result() -> Any:
    return {"socket": object()}


RAISING: dict[str, Callable[[], Any]] = {
    "sync": _sync_raise,
    "async-first-step": _async_raise_first_step,
    "async-later-step": _async_raise_later,
    "sync-cancelled-error": _sync_cancelled,
    "async-cancelled-first-step": _async_cancelled_first_step,
    "async-cancelled-later": _async_cancelled_later,
    "recursion-error": _deep_recursion,
    "unencodable-result": _unencodable_result,
}


async def misbehaving_server(ns: Harness, handler: Callable[[], Any]) -> NanoSocket:
    server = await start_server(ns)
    server.on("error", lambda *args: None)  # the errors are expected: keep the log quiet

    def on_connection(socket: Socket) -> None:
        socket.on("bad", handler)
        socket.on("good", lambda n: n)

    server.on("connection", on_connection)
    return server


@pytest.mark.parametrize("kind", list(RAISING))
async def test_a_raising_handler_answers_every_ack_with_an_error_and_the_socket_carries_on(
    ns: Harness, memory: Memory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # The server logs these errors (rate-limited); the test's log capture would keep each record,
    # a RecursionError's long traceback included, and count it as the server's memory.
    caplog.set_level(logging.CRITICAL, logger="nanosocket")
    server = await misbehaving_server(ns, RAISING[kind])
    bystanders = await Bystanders.connect(ns, server)
    peer = await ns.v1(server)
    for round_ in range(6):
        if round_ == 1:
            await memory.baseline()  # after a first round: whatever is created once exists
        for n in range(100):
            ack = round_ * 1000 + n
            peer.emit("bad", ack=ack)
            peer.emit("bad")  # without ack: nothing is sent back
            peer.emit("good", n, ack=ack + 100_000)
        answers: dict[int, dict[str, Any]] = {}
        while len(answers) < 200:
            reply = await peer.recv()
            answers[reply["ack"]] = reply
        for n in range(100):
            ack = round_ * 1000 + n
            assert set(answers[ack]) == {"ack", "error"}, answers[ack]
            assert answers[ack + 100_000] == {"ack": ack + 100_000, "data": [n]}
        await bystanders.check()
    assert server.sockets[peer.sid].connected  # type: ignore[index]
    if kind != "async-cancelled-later":  # a Task that ends cancelled answers, counts nothing
        assert server.stats.handler_errors >= 600
    await memory.assert_released()


async def test_async_handlers_that_wait_for_seconds_block_nobody(ns: Harness, memory: Memory) -> None:
    """Ten calls to a handler that waits two seconds: the same socket and the others are served
    meanwhile, and each call's ack completes when its handler does."""
    server = await start_server(ns)
    started = Recorder()

    def on_connection(socket: Socket) -> None:
        @socket.on("slow")
        async def slow(n: int) -> int:
            started(n)
            await asyncio.sleep(2)
            return n * 2

        socket.on("fast", lambda n: n)

    server.on("connection", on_connection)
    bystanders = await Bystanders.connect(ns, server)
    peer = await ns.v1(server)
    await memory.baseline()
    for n in range(10):
        peer.emit("slow", n, ack=n)
    await started.wait(10)
    # While all ten wait: the same connection answers, and the bystanders are served.
    for n in range(20):
        peer.emit("fast", n, ack=100 + n)
        assert await peer.expect_ack(100 + n) == {"ack": 100 + n, "data": [n]}
        await bystanders.check()
    answers = {}
    for _ in range(10):
        reply = await within(peer.recv())
        answers[reply["ack"]] = reply["data"]
    assert answers == {n: [n * 2] for n in range(10)}
    await bystanders.check()
    await memory.assert_released()


async def test_a_client_leaving_while_its_handlers_wait_costs_nothing_afterwards(
    ns: Harness, memory: Memory
) -> None:
    """Handlers still waiting when their client leaves finish later; their answers are dropped
    and what they held is released."""
    server = await start_server(ns)
    release = asyncio.Event()
    finished = Recorder()

    def on_connection(socket: Socket) -> None:
        @socket.on("wait")
        async def wait(blob: str) -> int:
            await release.wait()
            finished(len(blob))
            return len(blob)

    server.on("connection", on_connection)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    for _ in range(5):
        peer = await ns.v1(server)
        for n in range(20):
            peer.emit("wait", "w" * 10_000, ack=n)
        sid = peer.sid
        await until(lambda sid=sid: sid in server.sockets)
        peer.ws.close()
        await peer.closed()
        await until(lambda sid=sid: sid not in server.sockets)
        ns.clients.remove(peer.ws)
        await bystanders.check()
    del peer
    release.set()
    await finished.wait(100)
    await bystanders.check()
    await memory.assert_released()


@pytest.mark.parametrize("where", ["connection", "disconnect", "disconnecting", "error"])
async def test_raising_lifecycle_handlers_do_not_break_the_server(
    ns: Harness, memory: Memory, where: str
) -> None:
    server = await start_server(ns)
    ran = Recorder()

    def fail(*args: Any) -> None:
        ran(*args)
        raise Failure(where)

    if where == "connection":
        server.on("connection", fail)
    elif where == "error":
        server.on("error", fail)
        server.on("connection", lambda socket: socket.on("bad", _sync_raise))
    else:
        server.on("connection", lambda socket: socket.on(where, fail))
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    for n in range(20):
        peer = await ns.v1(server)
        peer.emit("echo", n, ack=1)
        assert await peer.expect_ack(1) == {"ack": 1, "data": [[n]]}
        if where == "error":
            peer.emit("bad", ack=2)
            assert "error" in await peer.expect_ack(2)
        peer.ws.close()
        await peer.closed()
        ns.clients.remove(peer.ws)
        await bystanders.check()
    del peer
    await until(lambda: len(server.sockets) == len(bystanders.peers))
    assert ran.calls
    await memory.assert_released()


MIDDLEWARE: dict[str, Callable[..., Any]] = {}


def _raise_sync(socket: Socket, next: Callable[..., None]) -> None:
    raise Failure("sync middleware")


async def _raise_async(socket: Socket) -> None:
    await asyncio.sleep(0)
    raise Failure("async middleware")


def _next_then_raise(socket: Socket, next: Callable[..., None]) -> None:
    next()
    raise Failure("after next")


def _cancelled(socket: Socket, next: Callable[..., None]) -> None:
    raise asyncio.CancelledError


MIDDLEWARE.update(
    {"sync": _raise_sync, "async": _raise_async, "after-next": _next_then_raise, "cancelled": _cancelled}
)


@pytest.mark.parametrize("kind", list(MIDDLEWARE))
async def test_raising_middleware_refuses_only_the_connection_it_decides(
    ns: Harness, memory: Memory, kind: str
) -> None:
    server = await start_server(ns)
    bystanders = await Bystanders.connect(ns, server)  # connected before the middleware exists
    server.use(MIDDLEWARE[kind])
    await memory.baseline()
    for _ in range(20):
        peer = await ns.v1_unconnected(server)
        peer.emit("$connect", None)
        envelope = await peer.recv()
        # Raising refuses, even after next(): the error is the middleware's last word.
        assert envelope["event"] == "$connect_error", envelope
        assert await peer.close_code() == 1008
        ns.clients.remove(peer.ws)
        await bystanders.check()
    del peer, envelope
    await until(lambda: len(server.sockets) == len(bystanders.peers))
    await memory.assert_released()


async def test_a_server_closing_with_handlers_still_waiting_answers_nothing_and_leaks_nothing(
    ns: Harness, memory: Memory
) -> None:
    await memory.baseline()
    server = await start_server(ns)
    server.on("connection", lambda socket: socket.on("never", _never))
    peers: list[Peer] = []
    for _ in range(5):
        peer = await ns.v1(server)
        for n in range(10):
            peer.emit("never", ack=n)
        peer.emit("echo", "sync", ack=99)
        await peer.expect_ack(99)
        peers.append(peer)
    await within(server.close())
    for peer in peers:
        await peer.closed()
    ns.servers.remove(server)
    ns.clients.clear()
    del server, peer, peers
    await memory.assert_released(traced_margin=512 * 1024)


async def _never() -> None:
    await asyncio.Event().wait()
