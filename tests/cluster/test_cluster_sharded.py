"""Sharded mode: a channel per room (SSUBSCRIBE/SPUBLISH), subscribed only where the room has
members, so a node receives only the traffic of rooms it hosts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cluster_kit import Cluster, eventually

from nanosocket import RedisAdapter
from nanosocket.adapters.redis import supports_sharded_pubsub


async def shard_subscribers(cluster: Cluster, room: str) -> int:
    """How many connections are subscribed to the room's sharded channel (PUBSUB SHARDNUMSUB)."""
    channel = f"{cluster.prefix}#room#{room}"
    reply: list[Any] = await cluster.redis().execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def subscribed_by(cluster: Cluster, room: str, count: int) -> None:
    """Wait until ``count`` nodes' subscriptions to the room's channel are in place in Redis."""
    for _ in range(1000):
        if await shard_subscribers(cluster, room) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{room!r} never had {count} subscribers")


async def test_a_node_receives_only_the_rooms_it_hosts(cluster: Cluster) -> None:
    a, b, c = await cluster.nodes_of(3, sharded=True)
    peer_a, socket_a = await cluster.client(a)
    peer_b, socket_b = await cluster.client(b)
    peer_c, _ = await cluster.client(c)
    assert cluster.adapter_of(b).health()["rooms_channels"] == "sharded"
    socket_b.join("game")
    await subscribed_by(cluster, "game", 1)
    before = cluster.adapter_of(c).room_messages_received
    assert a.to("game").emit("move", 1) == 0
    assert await peer_b.expect("move") == [1]
    # Published in order after the room message, on the cluster channel, which c hears: had c
    # been subscribed to the room, the room message would have come first.
    a.emit("marker")
    assert await peer_c.expect("marker") == []
    assert await peer_b.expect("marker") == []
    assert cluster.adapter_of(c).room_messages_received == before
    assert cluster.adapter_of(b).room_messages_received >= 1
    # socket.to(room) from a member on another node: one room, one channel, the sender left out.
    socket_a.join("game")
    await subscribed_by(cluster, "game", 2)
    socket_b.to("game").emit("said")
    assert await peer_a.expect("marker") == []
    assert await peer_a.expect("said") == []
    # Several rooms, exceptions only, everyone: the cluster channel.
    socket_b.join("chat")
    b.to(["game", "chat"]).except_(socket_b.id).emit("multi")
    assert await peer_a.expect("multi") == []
    socket_b.leave("game")
    socket_a.leave("game")
    await subscribed_by(cluster, "game", 0)
    await subscribed_by(cluster, "chat", 1)


async def test_members_that_disconnect_unsubscribe_their_node(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2, sharded=True)
    peer_b, socket_b = await cluster.client(b)
    socket_b.join("lobby")
    await subscribed_by(cluster, "lobby", 1)
    a.to("lobby").emit("hello")
    assert await peer_b.expect("hello") == []
    peer_b.ws.close()
    await subscribed_by(cluster, "lobby", 0)


async def test_remote_room_operations_work_in_sharded_mode(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2, sharded=True)
    peer_b, socket_b = await cluster.client(b)
    socket_b.join("r")
    # A socket id as a room goes on the cluster channel (no node subscribes to socket ids).
    a.to(socket_b.id).emit("direct")
    assert await peer_b.expect("direct") == []
    a.to("r").sockets_join("s")
    await eventually(lambda: socket_b.joined_rooms == {"r", "s"})
    await subscribed_by(cluster, "s", 1)
    a.to("s").emit("in-s")
    assert await peer_b.expect("in-s") == []
    assert await a.fetch_room_size("s") == 1


@pytest.mark.parametrize(
    ("version", "supported"),
    [("7.0.15", True), ("7.2.4", True), ("8.0.0", True), ("6.2.14", False), ("", False)],
)
def test_sharded_pub_sub_needs_redis_7(version: str, supported: bool) -> None:
    assert supports_sharded_pubsub(version) is supported


def test_options_are_checked_when_constructed() -> None:
    from nanosocket import ConfigurationError

    for bad in (
        {"prefix": "a#b"},
        {"prefix": ""},
        {"request_timeout": 0},
        {"canary_interval": -1},
        {"canary_misses": 1},
        {"max_outbox": 0},
        {"sharded": "yes"},
        {"reconnect_delay": 2, "reconnect_delay_max": 1},
    ):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            RedisAdapter(**bad)
    with pytest.raises(ConfigurationError, match="url"):
        RedisAdapter("localhost:6379")
