"""Message ids of at-least-once emits shared by the nodes of a RedisAdapter cluster.

Each id is one key, ``<prefix>#dedup#<mid>``, living ``dedup_window`` from the first claim:

* claim: ``SET key R NX GET PX window``: nil means this node claimed it and runs the handler; a
  value starting with ``R`` means the first run is still in progress on some node; ``D`` a reply;
* settle: ``SET key D<kind><body> XX KEEPTTL`` (the reply replaces the marker, same expiry);
* release: ``DEL key`` (a handler cancelled before it finished: the next copy runs it).

Ids this node claimed or saw answered are also kept locally (``LocalDedup``), so a copy on the
same node is answered without a round trip, and one arriving while the run is in progress here
waits for it. A copy arriving while the run is in progress on **another** node gets no answer:
its client sends it again later, by when the reply is usually kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from ..options import ServerOptions
from .dedup import NOT_KEPT, DedupStore, LocalDedup, Reply, Waiter

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .base import AdapterStats

__all__ = ["RedisDedup"]

logger = logging.getLogger("nanosocket.redis")

_RUNNING: Final = b"R"
_DONE: Final = b"D"


def _pack(reply: Reply) -> bytes:
    return _DONE + (b"e" if reply.error else b"d") + (b"b" if reply.binary else b"j") + reply.body


def _unpack(value: bytes) -> Reply | None:
    if len(value) < 3 or value[:1] != _DONE:
        return None
    return Reply(value[1:2] == b"e", value[3:], value[2:3] == b"b")


def _noop(reply: Reply) -> None:
    return None


class RedisDedup(DedupStore):
    """Claims and replies in Redis (shared by the nodes), with this node's in ``LocalDedup``."""

    __slots__ = ("_client", "_local", "_max_reply", "_prefix", "_stats", "_tasks", "_window_ms")

    def __init__(
        self,
        options: ServerOptions,
        stats: AdapterStats,
        client: Callable[[], aioredis.Redis | None],
        prefix: str,
    ) -> None:
        self._local = LocalDedup(options, stats)
        self._stats = stats
        self._client = client
        self._prefix = f"{prefix}#dedup#"
        self._window_ms = max(1, round(options.dedup_window * 1000))
        self._max_reply = options.dedup_max_reply
        #: Writes in the background (settle, release), held until done.
        self._tasks: set[asyncio.Task[Any]] = set()

    def claim(self, mid: str, waiter: Waiter) -> bool | Awaitable[bool]:
        known = self._local.claim_local(mid, waiter)
        if known is not None:
            return known
        return self._claim_shared(mid, waiter)

    async def _claim_shared(self, mid: str, waiter: Waiter) -> bool:
        client = self._client()
        if client is None:
            raise ConnectionError("the adapter is not connected to Redis")
        previous = await client.set(self._prefix + mid, _RUNNING, nx=True, px=self._window_ms, get=True)
        if previous is None:
            # Claimed here; a copy on this node that came meanwhile is in the local store now.
            return self._local.claim(mid, waiter)
        self._stats.duplicates += 1
        reply = _unpack(previous) if isinstance(previous, bytes) else None
        if reply is not None:
            if self._local.claim(mid, _noop):  # keep it here too, for the next copies
                self._local.settle(mid, reply)
            waiter(reply)
        return False

    def settle(self, mid: str, reply: Reply) -> None:
        self._local.settle(mid, reply)
        kept = reply if len(reply.body) <= self._max_reply else NOT_KEPT
        self._background(self._write(mid, _pack(kept)))

    def release(self, mid: str) -> None:
        self._local.release(mid)
        self._background(self._delete(mid))

    async def _write(self, mid: str, value: bytes) -> None:
        client = self._client()
        if client is not None:
            await client.set(self._prefix + mid, value, xx=True, keepttl=True)

    async def _delete(self, mid: str) -> None:
        client = self._client()
        if client is not None:
            await client.delete(self._prefix + mid)

    def _background(self, write: Awaitable[None]) -> None:
        task = asyncio.ensure_future(write)
        self._tasks.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Copies on other nodes get no answer until the key expires: their clients retry.
            self._stats.dedup_unavailable += 1
            logger.debug("could not keep a reply in Redis: %s", task.exception())
