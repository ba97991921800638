"""The cluster-wide server API on a single process (MemoryAdapter): fetch_sockets, broadcast
acknowledgements, room names and sizes, server-side events with no other node."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from server_kit import Harness, Peer, within

from nanosocket import AckResults, MemoryAdapter, NanoSocket, Socket


async def answer(peer: Peer, value: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = await peer.recv()
    peer.send({"ack": envelope["ack"], "data": [value]})
    return envelope


async def two(ns: Harness, server: NanoSocket) -> tuple[list[Peer], list[Socket]]:
    peers = [await ns.v1(server) for _ in range(2)]
    return peers, [server.sockets[peer.sid or ""] for peer in peers]


async def test_fetch_sockets_returns_this_process_sockets(ns: Harness) -> None:
    server = await ns.start()
    _, (a, b) = await two(ns, server)
    a.join("r")
    assert set(await server.fetch_sockets()) == {a, b}
    assert await server.fetch_sockets("r") == [a]
    assert await server.to("r").fetch_sockets() == [a]
    assert await server.except_("r").fetch_sockets() == [b]


async def test_broadcast_call_gathers_replies_and_lists_the_silent(ns: Harness) -> None:
    server = await ns.start()
    (peer_a, peer_b), (a, b) = await two(ns, server)
    call = asyncio.ensure_future(server.timeout(0.5).call("vote", 1))
    envelope = await answer(peer_a, "yes")
    assert envelope["event"] == "vote" and envelope["data"] == [1] and envelope["ack"] >= 2**52
    assert (await peer_b.recv())["ack"] == envelope["ack"]  # b reads it, never answers
    results = await within(call)
    assert isinstance(results, AckResults)
    assert results.by_socket == {a.id: "yes"} and results.missing == {b.id} and not results.complete
    # A late answer is an unknown ack, nothing more.
    peer_b.send({"ack": envelope["ack"], "data": ["late"]})
    # Everyone answers: done at once, whatever the timeout.
    call = asyncio.ensure_future(server.to([a.id, b.id]).call("again", timeout=60))
    await answer(peer_a, 1)
    await answer(peer_b, 2)
    results = await within(call)
    assert results.complete and sorted(results.replies) == [1, 2] and len(results) == 2


async def test_a_socket_own_calls_and_a_broadcast_call_do_not_mix(ns: Harness) -> None:
    server = await ns.start()
    (peer_a, _), (a, _) = await two(ns, server)
    own = asyncio.ensure_future(a.call("own", timeout=5))
    broadcast = asyncio.ensure_future(server.to(a.id).timeout(5).call("all"))
    first = await peer_a.recv()
    second = await peer_a.recv()
    assert first["ack"] != second["ack"]
    for envelope in (second, first):
        peer_a.send({"ack": envelope["ack"], "data": [envelope["event"]]})
    assert await within(own) == "own"
    assert (await within(broadcast)).by_socket == {a.id: "all"}


async def test_broadcast_call_needs_a_positive_timeout(ns: Harness) -> None:
    server = await ns.start()
    with pytest.raises(ValueError, match="timeout"):
        await server.to("r").call("x")
    with pytest.raises(ValueError, match="timeout"):
        server.timeout(0)
    with pytest.raises(ValueError, match="timeout"):
        await server.to("r").call("x", timeout=-1)
    with pytest.raises(ValueError):
        await server.timeout(1).call("disconnect")


async def test_room_names_sizes_and_server_side_events_on_one_process(ns: Harness) -> None:
    server = await ns.start()
    _, (a, b) = await two(ns, server)
    a.join(["x", "y"])
    b.join("y")
    assert await server.fetch_room_names() == {"x", "y"}
    assert await server.fetch_room_size("y") == 2
    assert await server.fetch_room_size("nowhere") == 0
    ran: list[Any] = []
    server.on("ping", ran.append)
    server.server_side_emit("ping", 1)  # other nodes only: there are none
    assert await server.server_side_emit_with_ack("ping", 1, timeout=1) == []
    assert ran == []
    server.delete_room("y")
    assert await server.fetch_room_names() == {"x"}


def test_an_adapter_serves_one_server() -> None:
    adapter = MemoryAdapter()
    NanoSocket(adapter=adapter)
    with pytest.raises(RuntimeError, match="own"):
        NanoSocket(adapter=adapter)
