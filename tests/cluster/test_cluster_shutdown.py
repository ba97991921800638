"""A node's close while its RedisAdapter re-subscribes (adapters/redis.py).

A node whose loop was busy (a worker closing 12,500 clients) could miss its own canary and
declare its subscription deaf: the subscriber then started a new session, and published a HELLO,
during the shutdown (a closing server now starts no repair: the last test). A task cancelled
while the Redis client is in a command could lose the cancellation (a session in
asyncio.wait_for around SUBSCRIBE on 3.11, the writer in the middle of a publish) and go on
waiting, and the adapter's close() waited for it for good: the worker never exited. Each step of
the loop between the new session and the close is tried, on both loops.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster_kit import Cluster, within

from nanosocket import RedisAdapter


async def new_session(adapter: RedisAdapter, old: Any) -> None:
    """Return in the loop iteration where the subscriber has started a new session."""
    while adapter._session is old:  # noqa: ASYNC110 - counted loop iterations, no event to wait on
        await asyncio.sleep(0)


async def test_close_ends_while_a_deaf_subscription_is_being_repaired(cluster: Cluster) -> None:
    for steps in range(12):
        server = await cluster.node(reconnect_delay=0.01, canary_interval=5.0)
        adapter = cluster.adapter_of(server)
        old = adapter._session
        adapter._became_deaf(1.0)  # what the canary does when its own message does not come back
        await within(new_session(adapter, old))
        for _ in range(steps):
            await asyncio.sleep(0)
        await within(server.close())
        assert adapter._session is None or adapter._session.done(), steps
        assert not any(not task.done() for task in adapter._tasks), steps


async def test_a_closing_server_starts_no_deaf_repair(cluster: Cluster) -> None:
    server = await cluster.node(canary_interval=5.0)
    adapter = cluster.adapter_of(server)
    closing = asyncio.ensure_future(server.close())
    try:
        await asyncio.sleep(0)  # the close's first step tells the adapter
        adapter._became_deaf(1.0)  # what the canary would do if its own message were late now
        subscriber = adapter.health()["subscriber"]
    finally:
        await within(closing)
    assert adapter.stats.deaf_detected == 0
    assert subscriber != "deaf"
    assert adapter.stats.resubscribes == 0
