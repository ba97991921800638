"""Cluster-wide operations through RedisAdapter: fetch_sockets, server-side events, remote
join/leave/disconnect, delete_room, room names and sizes, broadcast acknowledgements."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cluster_kit import Cluster, Peer, eventually, within

from nanosocket import AckResults, RemoteSocket, Socket


async def answer(peer: Peer, value: Any) -> dict[str, Any]:
    """Read the next envelope (a call) and answer its ack with ``value``."""
    envelope: dict[str, Any] = await peer.recv()
    assert "ack" in envelope, envelope
    peer.send({"ack": envelope["ack"], "data": [value]})
    return envelope


async def test_fetch_sockets_gathers_every_node(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    _, socket_a = await cluster.client(a)
    peer_b = await cluster.ns.v1(b, {"token": "t-b"}, path="/?team=blue")
    socket_b = b.sockets[peer_b.sid or ""]
    socket_b.join("blue")
    socket_b.data["name"] = "bob"
    found = await a.fetch_sockets()
    by_id = {s.id: s for s in found}
    assert set(by_id) == {socket_a.id, socket_b.id}
    assert by_id[socket_a.id] is socket_a  # this node's sockets are the real ones
    remote = by_id[socket_b.id]
    assert isinstance(remote, RemoteSocket) and not remote.local
    assert remote.joined_rooms == {"blue"}
    assert remote.data == {"name": "bob"}
    assert remote.node == b.adapter.node_id
    assert remote.handshake.auth == {"token": "t-b"}
    assert remote.handshake.query == {"team": "blue"}
    assert remote.handshake.url == "/?team=blue"
    assert remote.handshake.address == "127.0.0.1"
    assert remote.handshake.headers["host"].startswith("127.0.0.1:")
    assert remote.handshake.time == socket_b.handshake.time
    # A room: only its members, wherever they are.
    assert [s.id for s in await a.fetch_sockets("blue")] == [socket_b.id]
    assert [s.id for s in await a.to("blue").fetch_sockets()] == [socket_b.id]
    assert [s.id for s in await b.except_("blue").fetch_sockets()] == [socket_a.id]


async def test_remote_sockets_act_through_their_node(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_b, socket_b = await cluster.client(b)
    (remote,) = await a.fetch_sockets()
    assert isinstance(remote, RemoteSocket)
    remote.emit("direct", 1)
    assert await peer_b.expect("direct") == [1]
    remote.join(["x", "y"])
    await eventually(lambda: socket_b.joined_rooms == {"x", "y"}, "the remote join")
    remote.leave("x")
    await eventually(lambda: socket_b.joined_rooms == {"y"}, "the remote leave")
    remote.disconnect()
    assert await peer_b.close_code() == 1000


async def test_sockets_join_leave_and_disconnect_span_the_cluster(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, socket_a = await cluster.client(a)
    peer_b1, socket_b1 = await cluster.client(b)
    peer_b2, socket_b2 = await cluster.client(b)
    socket_a.join("old")
    socket_b1.join("old")
    a.to("old").sockets_join(["new", "other"])
    await eventually(lambda: socket_b1.joined_rooms == {"old", "new", "other"}, "b1 joined")
    assert socket_a.joined_rooms == {"old", "new", "other"}  # the local part is done at once
    assert socket_b2.joined_rooms == set()
    # In order: the join reached b before this broadcast did.
    a.to("new").sockets_leave("old")
    a.to("old").emit("still-old")
    a.emit("marker")
    assert await peer_b1.expect("marker") == []  # b1 was no longer in "old"
    assert socket_b1.joined_rooms == {"new", "other"}
    a.to("new").disconnect_sockets()
    assert await peer_a.close_code() == 1000
    assert await peer_b1.close_code() == 1000
    b.emit("still-here")
    assert await peer_b2.expect("marker") == []
    assert await peer_b2.expect("still-here") == []


async def test_delete_room_and_room_names_and_sizes_across_the_cluster(cluster: Cluster) -> None:
    a, b, c = await cluster.nodes_of(3)
    _, socket_a = await cluster.client(a)
    _, socket_b = await cluster.client(b)
    _, socket_c = await cluster.client(c)
    socket_a.join(["shared", "only-a"])
    socket_b.join(["shared", "only-b"])
    socket_c.join("shared")
    assert a.room_names == ["shared", "only-a"] or set(a.room_names) == {"shared", "only-a"}
    assert a.get_room_size("shared") == 1  # the local view
    assert await a.fetch_room_names() == {"shared", "only-a", "only-b"}
    assert await a.fetch_room_size("shared") == 3
    assert await b.fetch_room_size("only-a") == 1
    assert await c.fetch_room_size("nowhere") == 0
    a.delete_room("shared")
    await eventually(lambda: "shared" not in socket_b.joined_rooms and "shared" not in socket_c.joined_rooms)
    assert socket_a.joined_rooms == {"only-a"}
    assert await c.fetch_room_names() == {"only-a", "only-b"}
    assert await b.fetch_room_size("shared") == 0
    assert socket_b.connected and socket_c.connected


async def test_server_side_emit_runs_the_other_nodes_handlers(cluster: Cluster) -> None:
    a, b, c = await cluster.nodes_of(3)
    got: dict[str, asyncio.Queue[tuple[Any, ...]]] = {}
    for name, server in (("a", a), ("b", b), ("c", c)):
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        got[name] = queue
        server.on("config-changed", lambda *args, q=queue: q.put_nowait(args))
    a.server_side_emit("config-changed", {"level": 2}, "x")
    assert await within(got["b"].get()) == ({"level": 2}, "x")
    assert await within(got["c"].get()) == ({"level": 2}, "x")
    # Not the emitting node's own handlers: b's emit reaches a and c only.
    b.server_side_emit("config-changed", "again")
    assert await within(got["a"].get()) == ("again",)
    assert await within(got["c"].get()) == ("again",)
    assert got["a"].empty() and got["b"].empty()


async def test_server_side_emit_with_ack_returns_what_came_in_time(cluster: Cluster) -> None:
    a, b, c, d = await cluster.nodes_of(4)
    never = asyncio.Event()
    b.on("status", lambda what: {"node": "b", "what": what})

    @c.on("status")
    async def slow(what: str) -> dict[str, str]:
        await never.wait()  # this node does not answer
        return {"node": "c"}

    # d has no handler for "status": it says so at once, and is not waited for.
    replies = await a.server_side_emit_with_ack("status", "load", timeout=1.0)
    assert replies == [{"node": "b", "what": "load"}]
    assert a.adapter.stats.requests_timed_out == 1
    never.set()
    # All answer: returns as soon as they did (the timeout is a hang guard here).
    c.off("status")
    c.on("status", lambda what: "c-" + what)
    replies = await a.server_side_emit_with_ack("status", "now", timeout=30)
    assert sorted(map(str, replies)) == sorted(["c-now", str({"node": "b", "what": "now"})])
    # A handler that raises: no reply from that node, and its error is reported there.
    errors: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    b.on("error", lambda *args: errors.put_nowait(args))
    b.off("status")
    b.on("status", lambda what: 1 / 0)
    assert await a.server_side_emit_with_ack("status", "x", timeout=30) == ["c-x"]
    error, socket = await within(errors.get())
    assert isinstance(error, ZeroDivisionError) and socket is None
    del d


async def test_broadcast_acks_across_nodes_list_who_did_not_answer(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, socket_a = await cluster.client(a)
    peer_b1, socket_b1 = await cluster.client(b)
    peer_b2, socket_b2 = await cluster.client(b)
    peer_b3, socket_b3 = await cluster.client(b)
    for socket in (socket_a, socket_b1, socket_b2, socket_b3):
        socket.join("poll")
    call = asyncio.ensure_future(a.to("poll").timeout(1.0).call("vote", "yes?"))
    first = await answer(peer_a, "a-yes")
    assert first["event"] == "vote" and first["data"] == ["yes?"]
    assert (await answer(peer_b1, "b1-yes"))["ack"] == first["ack"]  # one encoding for all
    envelope = await peer_b2.recv()  # b2 reads it and never answers
    assert envelope["ack"] == first["ack"]
    failing = await peer_b3.recv()
    peer_b3.send({"ack": failing["ack"], "error": {"message": "no", "type": "ValueError"}})
    results = await within(call)
    assert isinstance(results, AckResults)
    assert results.by_socket == {socket_a.id: "a-yes", socket_b1.id: "b1-yes"}
    assert sorted(results.replies) == ["a-yes", "b1-yes"]
    assert set(results.errors) == {socket_b3.id}
    assert results.errors[socket_b3.id].data == {"message": "no", "type": "ValueError"}
    assert results.missing == {socket_b2.id}
    assert results.silent_nodes == frozenset()
    assert not results.complete


async def test_broadcast_acks_finish_when_everyone_answered(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, socket_a = await cluster.client(a)
    peer_b, socket_b = await cluster.client(b)
    call = asyncio.ensure_future(a.timeout(60).call("ping"))
    await answer(peer_a, 1)
    await answer(peer_b, 2)
    results = await within(call)  # long before the timeout
    assert results.complete and results.by_socket == {socket_a.id: 1, socket_b.id: 2}
    # Nobody selected on any node: an empty, complete result.
    empty = await within(a.to("nobody").timeout(60).call("ping"))
    assert empty.complete and empty.replies == []
    with pytest.raises(ValueError, match="timeout"):
        await a.to("x").call("ping")


async def test_fetched_local_sockets_are_sockets(cluster: Cluster) -> None:
    (a,) = await cluster.nodes_of(1)
    _, socket_a = await cluster.client(a)
    found = await a.fetch_sockets()
    assert found == [socket_a] and isinstance(found[0], Socket)
