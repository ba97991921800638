"""At-least-once emits across nodes: a copy of a message reaching another node of a RedisAdapter
cluster is answered with the first run's reply, without running the handler again (SET NX PX
claims, the reply kept under the same key). Real Redis, real sockets.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from cluster_kit import HANG_GUARD, Cluster, Peer, eventually

from nanosocket import NanoSocket, NanoSocketClient, Socket

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from fault_proxy import AckDropper, FaultProxy

MID = "Y2x1c3Rlci1pZHM-1"


def serve_orders(
    server: NanoSocket, commits: list[tuple[str, Any]], release: asyncio.Event | None = None
) -> None:
    node = server.adapter.node_id

    @server.socket_on("order")
    async def order(socket: Socket, n: Any) -> list[Any]:
        if release is not None:
            commits.append(("started", n))
            await release.wait()
        commits.append((node, n))
        return [node, n]


def reliable(peer: Peer, n: Any, ack: int, mid: str = MID) -> None:
    envelope = {"event": "order", "data": [n], "ack": ack, "mid": mid}
    if isinstance(n, bytes):
        peer.send_binary(envelope)
    else:
        peer.send(envelope)


async def kept(cluster: Cluster, mid: str) -> bytes:
    """The value of ``mid``'s key once it holds a reply (``D...``)."""
    redis = cluster.redis()

    async def poll() -> bytes:
        while True:
            value = await redis.get(f"{cluster.prefix}#dedup#{mid}")
            if value is not None and value.startswith(b"D"):
                return bytes(value)
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(poll(), HANG_GUARD)


async def test_a_copy_on_another_node_gets_the_first_reply(cluster: Cluster) -> None:
    first, second = await cluster.nodes_of(2)
    commits: list[tuple[str, Any]] = []
    serve_orders(first, commits)
    serve_orders(second, commits)
    one, _ = await cluster.client(first)
    two, _ = await cluster.client(second)
    reliable(one, 1, ack=1)
    reply = await one.expect_ack(1)
    assert reply == {"ack": 1, "data": [[first.adapter.node_id, 1]]}
    await kept(cluster, MID)
    reliable(two, 1, ack=9)
    assert await two.expect_ack(9) == {"ack": 9, "data": reply["data"]}
    # Once known here, another copy on the same node needs no round trip.
    reliable(two, 1, ack=10)
    assert await two.expect_ack(10) == {"ack": 10, "data": reply["data"]}
    assert commits == [(first.adapter.node_id, 1)]
    assert second.adapter.stats.duplicates == 2


async def test_the_key_holds_the_reply_until_the_window_ends(cluster: Cluster) -> None:
    (node,) = await cluster.nodes_of(1)
    commits: list[tuple[str, Any]] = []
    serve_orders(node, commits)
    one, _ = await cluster.client(node)
    reliable(one, b"\x01", ack=1, mid=MID + "b")
    assert await one.expect_ack(1) == {"ack": 1, "data": [[node.adapter.node_id, b"\x01"]]}
    value = await kept(cluster, MID + "b")
    assert value.startswith(b"Ddb")  # a reply (d), msgpack (b)
    ttl = await cluster.redis().pttl(f"{cluster.prefix}#dedup#{MID}b")
    assert 0 < ttl <= 300_000  # dedup_window, from the claim


async def test_a_copy_while_the_first_runs_on_another_node_gets_no_answer_then_the_reply(
    cluster: Cluster,
) -> None:
    first, second = await cluster.nodes_of(2)
    commits: list[tuple[str, Any]] = []
    release = asyncio.Event()
    serve_orders(first, commits, release)
    serve_orders(second, commits)
    one, _ = await cluster.client(first)
    two, _ = await cluster.client(second)
    reliable(one, 1, ack=1)
    await eventually(lambda: commits == [("started", 1)], "the first node runs it")
    reliable(two, 1, ack=2)  # still running on the first node: nothing comes back
    await eventually(lambda: second.adapter.stats.duplicates == 1, "the copy was seen")
    two.emit("$ping", "marker")
    assert await two.expect("$pong") == ["marker"]  # no ack 2 before it
    release.set()
    assert (await one.expect_ack(1))["data"] == [[first.adapter.node_id, 1]]
    await kept(cluster, MID)
    reliable(two, 1, ack=3)  # the client's next copy
    assert (await two.expect_ack(3))["data"] == [[first.adapter.node_id, 1]]
    assert commits == [("started", 1), (first.adapter.node_id, 1)]


async def test_a_client_retrying_on_another_node_after_a_cut(cluster: Cluster) -> None:
    first, second = await cluster.nodes_of(2)
    commits: list[tuple[str, Any]] = []
    serve_orders(first, commits)
    serve_orders(second, commits)
    dropper = AckDropper(rate=1.0)
    proxy = await FaultProxy(first.port).start()
    proxy.drop_frames(dropper)
    client = NanoSocketClient(
        proxy.url,
        auto_connect=False,
        retries=30,
        ack_timeout=0.2,
        reconnection_delay=0.05,
        reconnection_delay_max=0.1,
        randomization_factor=0,
    )
    try:
        await asyncio.wait_for(client.connect(), HANG_GUARD)
        call = asyncio.ensure_future(client.call("order", 7))
        await eventually(lambda: commits, "the first node ran it")
        # The line is cut; the client comes back through the proxy to the other node.
        proxy.upstream_port = second.port
        dropper.rate = 0.0
        proxy.reset()
        proxy.restore()
        assert await asyncio.wait_for(call, HANG_GUARD) == [first.adapter.node_id, 7]
        assert commits == [(first.adapter.node_id, 7)]
        assert second.adapter.stats.duplicates >= 1
    finally:
        await client.disconnect()
        await proxy.close()


async def test_redis_unreachable_leaves_the_copy_unanswered_and_counted(
    cluster: Cluster, private_redis: Any
) -> None:
    node = await cluster.node(url=private_redis.url)
    commits: list[tuple[str, Any]] = []
    serve_orders(node, commits)
    peer, _ = await cluster.client(node)
    private_redis.kill()
    reliable(peer, 1, ack=1)
    await eventually(lambda: node.adapter.stats.dedup_unavailable == 1, "the claim failed")
    peer.emit("$ping", "marker")
    assert await peer.expect("$pong") == ["marker"]  # no answer to ack 1: the client retries
    assert commits == []
    private_redis.start()
    await asyncio.sleep(0)

    async def answered() -> dict[str, Any]:
        ack = 2
        while True:  # as a client does: a copy after each timeout, until answered
            reliable(peer, 1, ack=ack)
            try:
                reply: dict[str, Any] = await asyncio.wait_for(peer.recv(), 0.5)
                return reply
            except TimeoutError:
                ack += 1

    reply = await asyncio.wait_for(answered(), HANG_GUARD)
    assert reply["data"] == [[node.adapter.node_id, 1]]
    assert commits == [(node.adapter.node_id, 1)]
