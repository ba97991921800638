"""Broadcasts across nodes (adapters/redis.py): rooms, exceptions, one copy per socket."""

from __future__ import annotations

import msgpack
from cluster_kit import Cluster


async def test_a_room_broadcast_reaches_members_on_every_node(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, socket_a = await cluster.client(a)
    peer_b1, socket_b1 = await cluster.client(b)
    peer_b2, _ = await cluster.client(b)
    socket_a.join("r")
    socket_b1.join("r")
    # Written to the one local member; the other node writes it to its own.
    assert a.to("r").emit("news", "hi", 1) == 1
    assert await peer_a.expect("news") == ["hi", 1]
    assert await peer_b1.expect("news") == ["hi", 1]
    # Not a member: the next thing it gets is the broadcast to everyone.
    a.emit("everyone")
    assert await peer_b2.expect("everyone") == []
    assert await peer_a.expect("everyone") == []
    assert await peer_b1.expect("everyone") == []


async def test_socket_to_and_broadcast_leave_the_sender_out_on_every_node(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, socket_a = await cluster.client(a)
    peer_b1, socket_b1 = await cluster.client(b)
    peer_b2, socket_b2 = await cluster.client(b)
    for socket in (socket_a, socket_b1, socket_b2):
        socket.join("r")
    socket_b1.to("r").emit("said", "from b1")
    assert await peer_a.expect("said") == ["from b1"]
    assert await peer_b2.expect("said") == ["from b1"]
    socket_a.broadcast.emit("all-but-a")
    assert await peer_b1.expect("all-but-a") == []
    assert await peer_b2.expect("all-but-a") == []
    b.emit("marker")
    assert await peer_b1.expect("marker") == []  # b1 never got its own "said"
    assert await peer_a.expect("marker") == []  # a never got its own "all-but-a"


async def test_a_member_of_several_rooms_gets_one_copy_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, socket_a = await cluster.client(a)
    peer_b, socket_b = await cluster.client(b)
    socket_a.join(["x", "y"])
    socket_b.join(["x", "y", "muted"])
    a.to(["x", "y"]).emit("once")
    a.to("x").to("y").except_("muted").emit("not-muted")
    b.to(["x", "y"]).except_(socket_a.id).emit("not-a")
    a.emit("marker")
    assert await peer_a.expect("once") == []
    assert await peer_a.expect("not-muted") == []
    assert await peer_a.expect("marker") == []
    # Messages of one origin keep their order; "not-a" is written by b itself, at once.
    got = [(await peer_b.recv())["event"] for _ in range(3)]
    assert sorted(got) == ["marker", "not-a", "once"]
    assert got.index("once") < got.index("marker")  # and nothing in between from a: one copy


async def test_to_a_socket_id_on_another_node_and_binary_payloads(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_b, socket_b = await cluster.client(b)
    assert a.to(socket_b.id).emit("private", b"\x00\x01", "x") == 0  # not a socket of this node
    frame = await peer_b.recv_raw()
    assert isinstance(frame, bytes)
    assert msgpack.unpackb(frame, raw=False) == {"event": "private", "data": [b"\x00\x01", "x"]}


async def test_volatile_and_compressed_broadcasts_cross_nodes(cluster: Cluster) -> None:
    a = await cluster.node()
    b = await cluster.node()
    await cluster.acquainted([a, b])
    peer_b, _ = await cluster.client(b)
    big = "x" * 5000
    a.volatile.emit("tick", 1)
    a.emit("big", big)
    assert await peer_b.expect("tick") == [1]
    assert await peer_b.expect("big") == [big]
