"""Redis failures are loud and survivable: killed, paused, subscribers disconnected, a deaf
subscription (and a blocked loop, which is not one), poisoned messages on the channel."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
from cluster_kit import Cluster, Peer, RedisServer, eventually
from server_kit import Harness

from nanosocket import NanoSocket
from nanosocket.adapters.base import BroadcastTarget
from nanosocket.adapters.messages import VERSION, MessageType, encode, encode_target


async def health(ns: Harness, server: NanoSocket) -> dict[str, Any]:
    reply = await ns.http(server, "/health")
    assert reply.status == 200
    data: dict[str, Any] = reply.json()
    return data


async def everyone_gets(server: NanoSocket, peers: list[Peer], event: str, maybe: str | None = None) -> None:
    """A broadcast from ``server`` to everyone reaches every one of ``peers`` (who may have got
    the event ``maybe`` first: a publish that timed out, which Redis may still deliver later)."""
    server.emit(event)
    for peer in peers:
        envelope = await peer.recv()
        if maybe is not None and envelope.get("event") == maybe:
            envelope = await peer.recv()
        assert envelope == {"event": event, "data": []}


async def test_redis_killed_and_restarted(private_redis: RedisServer, cluster: Cluster) -> None:
    a = await cluster.node(url=private_redis.url, command_timeout=0.5)
    b = await cluster.node(url=private_redis.url, command_timeout=0.5)
    await cluster.acquainted([a, b])
    peers_a = [(await cluster.client(a))[0] for _ in range(2)]
    peers_b = [(await cluster.client(b))[0] for _ in range(2)]
    assert (await health(cluster.ns, a))["status"] == "ok"
    private_redis.kill()
    await eventually(lambda: a.health()["status"] == b.health()["status"] == "degraded", "degraded")
    report = await health(cluster.ns, a)
    assert report["status"] == "degraded" and report["degraded"] == ["adapter"]
    assert "redis-subscriber" in report["adapter"]["failing"]
    assert report["adapter"]["error"]
    metrics = (await cluster.ns.http(a, "/metrics")).body.decode()
    assert "nanosocket_cluster_up 0.0" in metrics
    # Local delivery goes on; what could not cross is counted.
    failures = a.adapter.stats.publish_failures
    assert a.emit("local-only") == 2
    for peer in peers_a:
        assert await peer.expect("local-only") == []
    await eventually(lambda: a.adapter.stats.publish_failures > failures, "the failed publish is counted")
    # Cluster requests return what this node has instead of hanging.
    assert len(await a.fetch_sockets(timeout=0.5)) == 2
    private_redis.start()
    await eventually(lambda: a.health()["status"] == b.health()["status"] == "ok", "healthy again")
    assert a.adapter.stats.resubscribes >= 1 and b.adapter.stats.resubscribes >= 1
    await cluster.acquainted([a, b])
    # Every client, on both nodes, gets what is sent after the recovery.
    await everyone_gets(a, peers_a + peers_b, "after-recovery")
    await everyone_gets(b, peers_a + peers_b, "from-b")
    assert len(await a.fetch_sockets()) == 4
    assert a.listening and b.listening


async def test_redis_paused_and_resumed(private_redis: RedisServer, cluster: Cluster) -> None:
    a = await cluster.node(url=private_redis.url, command_timeout=0.5)
    b = await cluster.node(url=private_redis.url, command_timeout=0.5)
    await cluster.acquainted([a, b])
    peer_a, _ = await cluster.client(a)
    peer_b, _ = await cluster.client(b)
    private_redis.pause()
    try:
        # The canary's publish times out: the node knows Redis is not answering.
        await eventually(lambda: a.health()["status"] == b.health()["status"] == "degraded", "degraded")
        assert a.health()["adapter"]["publisher"] == "failing"
        assert a.emit("while-paused") == 1
        assert await peer_a.expect("while-paused") == []
    finally:
        private_redis.resume()
    await eventually(lambda: a.health()["status"] == b.health()["status"] == "ok", "healthy again")
    # A publish that timed out was counted as failed, yet Redis may deliver it once it runs again:
    # "at most once" means it may be lost, never that it certainly was.
    await everyone_gets(a, [peer_a, peer_b], "after-pause", maybe="while-paused")


async def test_a_killed_subscriber_connection_is_noticed_and_replaced(
    private_redis: RedisServer, cluster: Cluster
) -> None:
    a = await cluster.node(url=private_redis.url)
    b = await cluster.node(url=private_redis.url)
    await cluster.acquainted([a, b])
    peer_a, _ = await cluster.client(a)
    peer_b, _ = await cluster.client(b)
    before = [a.adapter.stats.resubscribes, b.adapter.stats.resubscribes]
    killed = await cluster.redis(private_redis.url).client_kill_filter(_type="pubsub")
    assert killed == 2
    await eventually(
        lambda: (
            [a.adapter.stats.resubscribes, b.adapter.stats.resubscribes] > before
            and a.adapter.stats.resubscribes > before[0]
            and b.adapter.stats.resubscribes > before[1]
            and a.health()["status"] == b.health()["status"] == "ok"
        ),
        "both re-subscribed",
    )
    await everyone_gets(a, [peer_a, peer_b], "after-kill")
    await everyone_gets(b, [peer_a, peer_b], "from-b")


async def test_a_deaf_node_hears_its_canary_missing_and_subscribes_again(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, _ = await cluster.client(a)
    peer_b, _ = await cluster.client(b)
    adapter = cluster.adapter_of(b)
    # Behind b's back, its connection stops receiving the cluster's channel: still connected and
    # subscribed to its own channel, but deaf to everything else (and to its own canary).
    pubsub = adapter._pubsub
    assert pubsub is not None
    await pubsub.unsubscribe(f"{cluster.prefix}#all")
    await eventually(lambda: adapter.stats.deaf_detected == 1, "deafness detected")
    await eventually(lambda: b.health()["status"] == "ok" and adapter.stats.resubscribes >= 1, "repaired")
    metrics = (await cluster.ns.http(b, "/metrics")).body.decode()
    assert "nanosocket_cluster_deaf_detected_total 1.0" in metrics
    await cluster.acquainted([a, b])
    await everyone_gets(a, [peer_a, peer_b], "heard-again")


async def test_a_blocked_loop_is_not_deafness(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_a, _ = await cluster.client(a)
    peer_b, _ = await cluster.client(b)
    adapters = [cluster.adapter_of(a), cluster.adapter_of(b)]
    deadline = max(adapter.canary_interval * adapter.canary_misses for adapter in adapters)
    # A callback holds the loop (both nodes') for twice the canary's deadline, as a worker
    # closing thousands of clients does: no canary can be read meanwhile, yet the
    # subscriptions are fine.
    asyncio.get_running_loop().call_soon(time.sleep, 2 * deadline)
    await asyncio.sleep(0)  # the callback runs before this task resumes
    unblocked = time.monotonic()
    await eventually(
        lambda: all(adapter._last_own_canary > unblocked + deadline for adapter in adapters),
        "own canaries heard for a whole deadline after the stall",
    )
    for adapter in adapters:
        assert adapter.stats.deaf_detected == 0, adapter.node_id
        assert adapter.stats.resubscribes == 0, adapter.node_id
        assert adapter.health()["status"] == "ok", adapter.health()
    await cluster.acquainted([a, b])
    await everyone_gets(a, [peer_a, peer_b], "after-the-stall")
    # Real deafness after the stall is still found and repaired.
    pubsub = adapters[1]._pubsub
    assert pubsub is not None
    await pubsub.unsubscribe(f"{cluster.prefix}#all")
    await eventually(lambda: adapters[1].stats.deaf_detected == 1, "deafness detected")
    await eventually(lambda: b.health()["status"] == "ok" and adapters[1].stats.resubscribes >= 1, "repaired")
    assert adapters[0].stats.deaf_detected == 0
    await cluster.acquainted([a, b])
    await everyone_gets(a, [peer_a, peer_b], "heard-again")


async def test_poisoned_messages_are_dropped_counted_and_survived(cluster: Cluster) -> None:
    a, b = await cluster.nodes_of(2)
    peer_b, _ = await cluster.client(b)
    channel = f"{cluster.prefix}#all"
    target = encode_target(BroadcastTarget())
    poison = [
        b"\xff\x00garbage",  # not msgpack
        b"hello",  # msgpack of something else
        msgpack.packb({"event": "x"}),  # not an array
        msgpack.packb([VERSION + 1, int(MessageType.BROADCAST), "evil", [b"{}", False, target]]),
        msgpack.packb([VERSION, 999, "evil", []]),  # unknown type
        msgpack.packb([VERSION, int(MessageType.BROADCAST), "evil", ["not bytes", False, target]]),
        msgpack.packb([VERSION, int(MessageType.BROADCAST), "", [b"{}", False, target]]),
        msgpack.packb([VERSION, int(MessageType.FETCH_ROOM_SIZE), "evil", [-1, "r"]]),
        msgpack.packb(msgpack.ExtType(5, b"x")),
    ]
    redis = cluster.redis()
    for data in poison:
        await redis.publish(channel, data)
    # A valid message from a node nobody knows is handled like any other.
    stranger = encode(
        MessageType.BROADCAST, "stranger", b'{"event":"from-stranger","data":[]}', False, target
    )
    await redis.publish(channel, stranger)
    assert await peer_b.expect("from-stranger") == []
    stats = cluster.adapter_of(b).stats
    assert stats.dropped == {"malformed": 5, "version": 1, "type": 1, "field": 2}
    metrics = (await cluster.ns.http(b, "/metrics")).body.decode()
    assert 'nanosocket_cluster_messages_dropped_total{reason="malformed"} 5.0' in metrics
    assert 'nanosocket_cluster_messages_dropped_total{reason="version"} 1.0' in metrics
    # The listener lives on.
    await everyone_gets(a, [peer_b], "still-listening")
    assert b.health()["status"] == "ok"
