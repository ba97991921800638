"""RedisAdapter: the nodes of a cluster talk through Redis pub/sub (``redis.asyncio``, hiredis).

Each node keeps its own sockets and rooms (the MemoryAdapter it extends) and exchanges typed,
versioned msgpack messages (adapters/messages.py) on these channels (``P`` is the prefix):

* ``P#all``: broadcasts, fire-and-forget operations, requests and the canaries, for every node;
* ``P#node#<id>``: the responses to one node's requests;
* ``P#room#<room>`` (``sharded=True``): broadcasts to exactly one room, as Redis 7 sharded
  channels (SSUBSCRIBE/SPUBLISH; plain channels on an older server), subscribed by a node only
  while it has a member in the room.

A broadcast is encoded once at the origin and travels as that payload plus its routing (rooms,
exceptions, volatile); every other node frames it once and writes it to its own members. Nodes
skip their own messages. Everything is published in order by one writer task (pipelined), so a
``sockets_join`` reaches the other nodes before a broadcast sent after it.

Failures are loud and survivable: a publish that fails is counted and logged (the local part of
the operation is done regardless); the subscriber reconnects and re-subscribes with capped
backoff; ``health()`` says ``degraded`` while Redis is unreachable; a node that stops hearing its
own canary (published every ``canary_interval``) is deaf: it says so and subscribes again. The
silence is counted in time the event loop was free to read: a loop held up by other work (the
canary's timer fires late by as much) delays the reading of the canary, not the verdict's
deadline; and no repair starts once the server or the adapter is closing.
Delivery between nodes is at most once: what is published while a node is not subscribed is lost
for that node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import AckError, ConfigurationError
from ..options import RecoveryOptions, ServerOptions
from ..protocol.deflate import prepare_message
from ..protocol.frames import BINARY, TEXT
from .base import AckResults, BroadcastTarget, DedupStore, Member, Session
from .memory import AckCollector, MemoryAdapter
from .messages import (
    BadMessage,
    Message,
    MessageType,
    decode,
    encode,
    encode_socket_info,
    encode_target,
)
from .recovery import TrackedRooms, with_offset
from .redis_dedup import RedisDedup
from .redis_log import StreamLog

__all__ = ["RedisAdapter", "supports_sharded_pubsub"]

logger = logging.getLogger("nanosocket.adapters.redis")

#: Most messages one pipelined write carries.
_BATCH: Final = 512

#: Times close() waits (command_timeout / 2 each) for its tasks, cancelling again those that go on.
_STOP_ROUNDS: Final = 4

#: The characters of a socket id (``secrets.token_urlsafe``); 20 of them make one.
_ID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _looks_like_socket_id(room: str) -> bool:
    return len(room) == 20 and all(char in _ID_CHARS for char in room)


def supports_sharded_pubsub(redis_version: str) -> bool:
    """Whether a Redis server of this version has SSUBSCRIBE/SPUBLISH (7.0 and later)."""
    try:
        major = int(redis_version.split(".", 1)[0])
    except ValueError:
        return False
    return major >= 7


class _RateLimited:
    """At most one log line per kind every ``interval`` seconds."""

    __slots__ = ("_interval", "_last")

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}

    def ready(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < self._interval:
            return False
        self._last[kind] = now
        return True


class _Request:
    """A request waiting for one response per node."""

    __slots__ = ("done", "results", "waiting")

    def __init__(self, nodes: Iterable[str]) -> None:
        self.waiting = set(nodes)
        self.results: list[tuple[str, tuple[Any, ...]]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._check()

    def respond(self, node: str, body: tuple[Any, ...]) -> None:
        if node in self.waiting:
            self.waiting.discard(node)
            self.results.append((node, body))
            self._check()

    def node_gone(self, node: str) -> None:
        self.waiting.discard(node)
        self._check()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _check(self) -> None:
        if not self.waiting:
            self.finish()


_Outgoing = tuple[str, bytes, bool, Callable[[], None] | None]


class RedisAdapter(MemoryAdapter):
    """A cluster of NanoSocket servers over Redis pub/sub: ``NanoSocket(adapter=RedisAdapter(url))``.

    ``url``: the Redis server (``redis://host:port/db``; ``rediss://`` for TLS).
    ``prefix``: channel names start with it; servers of one app share it, other apps must not.
    ``request_timeout``: default seconds a cluster request (fetch_sockets, room names and sizes,
    server_side_emit_with_ack) waits before returning what came.
    ``sharded``: a channel per room (Redis 7 sharded pub/sub) so a node receives only the traffic
    of rooms it has members in.
    ``canary_interval``: seconds between canaries (liveness of the other nodes, and the deaf-node
    check); a node is gone, or deaf to itself, after ``canary_misses`` intervals unheard.
    ``reconnect_delay`` / ``reconnect_delay_max``: the subscriber's backoff (doubling, jittered).
    ``command_timeout``: seconds a Redis command may take before it counts as failed.
    ``max_outbox``: messages waiting to be published before new ones are dropped (and counted).
    ``node_id``: this node's id (random by default).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "nanosocket",
        request_timeout: float = 5.0,
        sharded: bool = False,
        canary_interval: float = 1.0,
        canary_misses: int = 3,
        reconnect_delay: float = 0.1,
        reconnect_delay_max: float = 5.0,
        command_timeout: float = 2.0,
        max_outbox: int = 10_000,
        node_id: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(url, str) or "://" not in url:
            raise ConfigurationError(f"url must be a redis:// URL, got {url!r}")
        if not isinstance(prefix, str) or not prefix or "#" in prefix:
            raise ConfigurationError(f"prefix must be a non-empty string without '#', got {prefix!r}")
        for name, value in (
            ("request_timeout", request_timeout),
            ("canary_interval", canary_interval),
            ("reconnect_delay", reconnect_delay),
            ("reconnect_delay_max", reconnect_delay_max),
            ("command_timeout", command_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        if reconnect_delay_max < reconnect_delay:
            raise ConfigurationError("reconnect_delay_max must be at least reconnect_delay")
        if isinstance(canary_misses, bool) or not isinstance(canary_misses, int) or canary_misses < 2:
            raise ConfigurationError(f"canary_misses must be an integer of at least 2, got {canary_misses!r}")
        if isinstance(max_outbox, bool) or not isinstance(max_outbox, int) or max_outbox < 1:
            raise ConfigurationError(f"max_outbox must be a positive integer, got {max_outbox!r}")
        if not isinstance(sharded, bool):
            raise ConfigurationError(f"sharded must be True or False, got {sharded!r}")
        if node_id is not None and (not isinstance(node_id, str) or not node_id or "#" in node_id):
            raise ConfigurationError(f"node_id must be a non-empty string without '#', got {node_id!r}")
        self.url = url
        self.prefix = prefix
        self.request_timeout = float(request_timeout)
        self.sharded = sharded
        self.canary_interval = float(canary_interval)
        self.canary_misses = canary_misses
        self.reconnect_delay = float(reconnect_delay)
        self.reconnect_delay_max = float(reconnect_delay_max)
        self.command_timeout = float(command_timeout)
        self.max_outbox = max_outbox
        self._id = node_id or secrets.token_hex(8)
        #: A random id is drawn again in a forked child (a worker process): every node needs its own.
        self._random_id = node_id is None
        self._pid = os.getpid()
        self._all = f"{prefix}#all"
        self._own = f"{prefix}#node#{self._id}"
        self._room_prefix = f"{prefix}#room#"
        #: Messages received on room channels (sharded mode).
        self.room_messages_received = 0
        #: The shared recovery log (None while recovery is off).
        self._stream_log: StreamLog | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._client: aioredis.Redis | None = None
        self._sub_client: aioredis.Redis | None = None
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._session: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._outbox: deque[_Outgoing] = deque()
        self._wake: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._started = False
        self._closing = False
        self._nodes: dict[str, float] = {}
        self._requests: dict[int, _Request | AckCollector] = {}
        self._next_request = 0
        self._subscribed = False
        self._ever_subscribed = False
        self._subscribed_once: asyncio.Event | None = None
        self._subscribed_at = 0.0
        self._deaf = False
        self._last_own_canary = 0.0
        #: Seconds of loop lag (the canary's timer late) since the own canary was last heard.
        self._canary_stalled = 0.0
        #: The server is closing (``closing()``): its adapter's close() follows.
        self._server_closing = False
        self._publisher_error: str | None = None
        self._subscriber_error: str | None = "not connected yet"
        #: "sharded" (SSUBSCRIBE), "plain" (a Redis without sharded pub/sub) or None (not sharded).
        self._room_mode: str | None = None
        self._room_channels: set[str] = set()
        self._rooms_dirty = False
        self._rooms_sync: asyncio.Task[None] | None = None
        self._log = _RateLimited()

    # ------------------------------------------------------------------ identity

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def nodes(self) -> frozenset[str]:
        """The other nodes this one has heard from recently (their canaries or messages)."""
        horizon = time.monotonic() - self.canary_interval * self.canary_misses
        return frozenset(node for node, seen in self._nodes.items() if seen >= horizon)

    @property
    def subscribed(self) -> bool:
        """Subscribed, and not known to be deaf."""
        return self._subscribed and not self._deaf

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect: publisher and subscriber; wait (up to ``request_timeout``) for the first
        subscription. If Redis cannot be reached, log it and go on degraded: the adapter keeps
        trying, and local delivery works meanwhile."""
        if self._started:
            return
        if self._closing:
            self._reset_state()
        if self._pid != os.getpid():
            self._pid = os.getpid()
            if self._random_id:
                self._id = secrets.token_hex(8)
                self._own = f"{self.prefix}#node#{self._id}"
        self._started = True
        options: dict[str, Any] = {
            "socket_connect_timeout": self.command_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        self._client = aioredis.Redis.from_url(self.url, socket_timeout=self.command_timeout, **options)
        # The subscriber waits for messages as long as it takes: no read timeout.
        self._sub_client = aioredis.Redis.from_url(self.url, socket_timeout=None, **options)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._subscribed_once = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_forever(), name=f"nanosocket-redis-writer-{self._id}"),
            loop.create_task(self._subscribe_forever(), name=f"nanosocket-redis-subscriber-{self._id}"),
            loop.create_task(self._canary_forever(), name=f"nanosocket-redis-canary-{self._id}"),
        ]
        if self._outbox:
            self._wake.set()
        try:
            await asyncio.wait_for(self._subscribed_once.wait(), self.request_timeout)
        except TimeoutError:
            logger.error(
                "RedisAdapter node %s: could not subscribe at %s within %s s (%s); serving local "
                "clients meanwhile and retrying",
                self._id,
                self.url,
                self.request_timeout,
                self._subscriber_error,
            )
        if self._stream_log is not None:
            await self._stream_log.start(self.url, options)

    def closing(self) -> None:
        """The server is closing its clients (close() follows): a deaf subscription is no
        longer repaired from now on."""
        self._server_closing = True

    async def close(self) -> None:
        """Say goodbye to the other nodes, publish what is queued (briefly), disconnect."""
        if not self._started or self._closing:
            return
        self._closing = True
        self._publish(self._all, encode(MessageType.BYE, self._id))
        drained = self._drained
        if drained is not None and self._publisher_error is None:
            try:
                await asyncio.wait_for(drained.wait(), self.command_timeout)
            except TimeoutError:
                pass
        for request in list(self._requests.values()):
            if isinstance(request, _Request):
                request.finish()
        tasks = [*self._tasks, *self._background]
        if self._stream_log is not None:
            tasks.extend(await self._stream_log.stop())
        if self._rooms_sync is not None:
            tasks.append(self._rooms_sync)
        for task in tasks:
            task.cancel()
        await self._stopped(tasks)
        for pending in self._outbox:
            self.stats.publish_failures += 1
            if pending[3] is not None:
                pending[3]()
        self._outbox.clear()
        for client in (self._client, self._sub_client):
            if client is not None:
                try:
                    await asyncio.wait_for(client.aclose(), self.command_timeout)
                except Exception:  # closing anyway: nothing more to do with a broken connection
                    pass
        self._client = self._sub_client = None
        if self._stream_log is not None:
            await self._stream_log.aclose()
        self._subscribed = False
        self._started = False

    async def _stopped(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for cancelled tasks to end, cancelling again those that go on: a cancellation
        that lands while the Redis client is in a command can be lost (seen with the writer in
        the middle of a publish: it then waits for the next message for good). Bounded: what
        is still running is logged."""
        pending = {task for task in tasks if not task.done()}
        for _ in range(_STOP_ROUNDS):
            if not pending:
                return
            _done, pending = await asyncio.wait(pending, timeout=self.command_timeout / 2)
            for task in pending:
                task.cancel()
        if pending:
            logger.error(
                "RedisAdapter node %s: %d task(s) did not stop when cancelled, left running: %s",
                self._id,
                len(pending),
                ", ".join(sorted(task.get_name() for task in pending)),
            )

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        failing = []
        if self._publisher_error is not None:
            failing.append("redis-publisher")
        if not self._subscribed:
            failing.append("redis-subscriber")
        elif self._deaf:
            failing.append("redis-subscriber-deaf")
        report: dict[str, Any] = {
            "status": "degraded" if failing else "ok",
            "node_id": self._id,
            "nodes": len(self.nodes) + 1,
            "url": _redacted(self.url),
            "publisher": "failing" if self._publisher_error is not None else "ok",
            "subscriber": "deaf"
            if self._subscribed and self._deaf
            else ("subscribed" if self._subscribed else "disconnected"),
            "outbox": len(self._outbox),
        }
        if self.sharded:
            report["rooms_channels"] = self._room_mode or "pending"
        log = self._stream_log
        if log is not None:
            report["recovery_log"] = "failing" if log.error is not None else "ok"
            report["recovery_log_queue"] = log.queued
            if log.error is not None:
                failing.append("redis-recovery-log")
                report["status"] = "degraded"
        if failing:
            report["failing"] = failing
            report["error"] = (
                self._publisher_error
                or self._subscriber_error
                or (log.error if log is not None and log.error is not None else None)
                or "deaf: own canary unheard"
            )
        return report

    def gauges(self) -> dict[str, float]:
        return {
            "cluster_up": 1.0 if self.health()["status"] == "ok" else 0.0,
            "cluster_nodes": float(len(self.nodes) + 1),
            "cluster_outbox": float(len(self._outbox)),
            **(
                {"cluster_recovery_log_queue": float(self._stream_log.queued)}
                if self._stream_log is not None
                else {}
            ),
        }

    def describe(self) -> dict[str, Any]:
        """What the dashboard shows of this adapter."""
        health = self.health()
        return {"node_id": self._id, "nodes": health["nodes"], "status": health["status"]}

    # ------------------------------------------------------------------ publishing

    def _publish(
        self, channel: str, data: bytes, sharded: bool = False, on_fail: Callable[[], None] | None = None
    ) -> None:
        """Queue a message for the writer (messages go out in the order they were queued)."""
        if len(self._outbox) >= self.max_outbox:
            self.stats.publish_failures += 1
            if self._log.ready("outbox"):
                logger.error(
                    "RedisAdapter node %s: %d messages waiting to be published; dropping new ones "
                    "(counted in nanosocket_cluster_publish_failures_total)",
                    self._id,
                    len(self._outbox),
                )
            if on_fail is not None:
                on_fail()
            return
        self._outbox.append((channel, data, sharded, on_fail))
        if self._wake is not None:
            self._wake.set()
        if self._drained is not None:
            self._drained.clear()

    async def _write_forever(self) -> None:
        assert self._wake is not None and self._drained is not None
        outbox = self._outbox
        failures = 0
        while True:
            if not outbox:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [outbox.popleft() for _ in range(min(len(outbox), _BATCH))]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                outbox.extendleft(reversed(batch))
                raise
            except Exception as exc:
                failures += 1
                self.stats.publish_failures += len(batch)
                for item in batch:
                    if item[3] is not None:
                        item[3]()
                reason = _describe(exc)
                if self._publisher_error is None or self._log.ready("publish"):
                    logger.error(
                        "RedisAdapter node %s: could not publish %d message(s) to %s: %s (lost for "
                        "the other nodes; counted in nanosocket_cluster_publish_failures_total)",
                        self._id,
                        len(batch),
                        _redacted(self.url),
                        reason,
                    )
                self._publisher_error = reason
                # Do not hammer a Redis that is down: what is queued meanwhile goes in one batch.
                await asyncio.sleep(self._backoff(failures - 1))
            else:
                self.stats.published += len(batch)
                failures = 0
                if self._publisher_error is not None:
                    logger.warning("RedisAdapter node %s: publishing works again", self._id)
                    self._publisher_error = None

    async def _write(self, batch: list[_Outgoing]) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("the adapter is closed")
        async with client.pipeline(transaction=False) as pipe:
            for channel, data, sharded, _ in batch:
                if sharded:
                    pipe.spublish(channel, data)
                else:
                    pipe.publish(channel, data)
            await pipe.execute()

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0, 1, ...): doubling, capped, jittered."""
        return self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.reconnect_delay * 2.0 ** min(attempt, 30), self.reconnect_delay_max)
        return delay * random.uniform(0.5, 1.0)

    # ------------------------------------------------------------------ subscribing

    async def _subscribe_forever(self) -> None:
        attempt = 0
        while True:
            session = asyncio.get_running_loop().create_task(self._listen())
            self._session = session
            try:
                await session
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    session.cancel()
                    raise
                # The session alone was cancelled: a deaf subscription is being repaired.
                attempt = 0
            except Exception as exc:
                self._subscriber_error = _describe(exc)
                if self._subscribed or self._log.ready("subscribe"):
                    logger.error(
                        "RedisAdapter node %s: subscriber lost Redis at %s: %s; re-subscribing with backoff",
                        self._id,
                        _redacted(self.url),
                        self._subscriber_error,
                    )
            finally:
                if self._subscribed:
                    attempt = 0  # it worked for a while: start the backoff over
                self._subscribed = False
                self._pubsub = None
            await asyncio.sleep(self._backoff(attempt) if attempt else self.reconnect_delay * 0.5)
            attempt += 1

    async def _listen(self) -> None:
        """One subscription: subscribe, then handle messages until the connection fails."""
        client = self._sub_client
        assert client is not None
        pubsub = client.pubsub()
        try:
            if self.sharded and self._room_mode is None:
                # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that lands
                # as the command completes, and the session then goes on (see close()).
                async with asyncio.timeout(self.command_timeout):
                    info = await client.info("server")
                version = str(info.get("redis_version", ""))
                if supports_sharded_pubsub(version):
                    self._room_mode = "sharded"
                else:
                    self._room_mode = "plain"
                    logger.warning(
                        "RedisAdapter node %s: Redis %s has no sharded pub/sub (SSUBSCRIBE, 7.0+); "
                        "room channels use plain pub/sub",
                        self._id,
                        version or "(unknown version)",
                    )
            async with asyncio.timeout(self.command_timeout):
                await pubsub.subscribe(self._all, self._own)
            confirmed = 0
            deadline = time.monotonic() + self.command_timeout
            while confirmed < 2:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no subscription confirmation from Redis")
                message = await pubsub.get_message(timeout=remaining)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    confirmed += 1
                else:
                    self._on_pubsub(message)
            self._pubsub = pubsub
            self._room_channels = set()
            if self.sharded:
                await self._sync_room_channels(pubsub)
            now = time.monotonic()
            if self._ever_subscribed:
                self.stats.resubscribes += 1
            self._ever_subscribed = True
            self._subscribed = True
            self._subscribed_at = now
            self._last_own_canary = now
            self._canary_stalled = 0.0
            if self._subscriber_error is not None and self._subscriber_error != "not connected yet":
                logger.warning("RedisAdapter node %s: subscribed again at %s", self._id, _redacted(self.url))
            self._subscriber_error = None
            assert self._subscribed_once is not None
            self._subscribed_once.set()
            # Tell the others we are (back): they answer with a canary, so we know them at once.
            self._publish(self._all, encode(MessageType.HELLO, self._id))
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None:
                    self._on_pubsub(message)
        finally:
            self._pubsub = None
            try:
                await asyncio.wait_for(pubsub.aclose(), self.command_timeout)  # type: ignore[no-untyped-call]
            except Exception:  # the connection is being dropped anyway
                pass

    def _on_pubsub(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind in ("message", "smessage", "pmessage"):
            data = message.get("data")
            if kind != "message" or message.get("channel") not in (self._all.encode(), self._own.encode()):
                self.room_messages_received += 1
            if isinstance(data, bytes):
                self._receive(data)
            else:
                self.stats.drop("malformed")

    # ------------------------------------------------------------------ rooms (sharded)

    def _room_channel(self, room: str) -> str:
        return self._room_prefix + room

    def _rooms_changed(self) -> None:
        if not self.sharded or not self._started:
            return
        self._rooms_dirty = True
        if self._rooms_sync is None or self._rooms_sync.done():
            self._rooms_sync = asyncio.get_running_loop().create_task(self._sync_rooms_soon())

    async def _sync_rooms_soon(self) -> None:
        while self._rooms_dirty:
            self._rooms_dirty = False
            pubsub = self._pubsub
            if pubsub is None:
                return  # the next subscription subscribes every room of the moment
            try:
                await self._sync_room_channels(pubsub)
            except Exception as exc:
                # The connection is failing: the subscriber notices and starts over.
                if self._log.ready("rooms"):
                    logger.error(
                        "RedisAdapter node %s: room subscriptions failed: %s", self._id, _describe(exc)
                    )
                return

    async def _sync_room_channels(self, pubsub: PubSub) -> None:
        wanted = {self._room_channel(room) for room in self._rooms.room_names()}
        add = wanted - self._room_channels
        remove = self._room_channels - wanted
        sharded = self._room_mode == "sharded"
        if add:
            await (pubsub.ssubscribe(*add) if sharded else pubsub.subscribe(*add))
            self._room_channels |= add
        if remove:
            await (pubsub.sunsubscribe(*remove) if sharded else pubsub.unsubscribe(*remove))
            self._room_channels -= remove

    def join(self, member: Member, rooms: Iterable[str]) -> None:
        super().join(member, rooms)
        self._rooms_changed()

    def leave(self, member: Member, room: str) -> None:
        super().leave(member, room)
        self._rooms_changed()

    def unregister(self, member: Member) -> None:
        super().unregister(member)
        if self._stream_log is not None:
            self._stream_log.untrack(member)
        self._rooms_changed()

    # ------------------------------------------------------------------ the canary

    async def _canary_forever(self) -> None:
        interval = self.canary_interval
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            self._publish(self._all, encode(MessageType.CANARY, self._id))
            # How late this timer fired: the loop was busy elsewhere (a callback that blocks, a
            # server closing thousands of clients) and the subscriber could not read either.
            # That time is not silence of the subscription: it is taken off the deadline, and a
            # tick later than a whole interval gives no verdict (the subscriber has not had its
            # turn since the loop came back: what waits in its socket is read before the next).
            lag = max(0.0, now - asleep - interval)
            self._canary_stalled += min(lag, max(0.0, now - self._last_own_canary))
            if lag >= interval:
                continue
            horizon = interval * self.canary_misses
            silent = now - self._last_own_canary - self._canary_stalled
            if (
                self._subscribed
                and not (self._closing or self._server_closing)
                and self._publisher_error is None
                and now - self._subscribed_at > horizon
                and silent > horizon
            ):
                self._became_deaf(silent)
            for node, seen in list(self._nodes.items()):
                if now - seen > horizon:
                    self._node_gone(node)

    def _became_deaf(self, silent_for: float) -> None:
        if self._closing or self._server_closing:
            return  # the subscription ends with the adapter: no repair
        if not self._deaf:
            self._deaf = True
            self.stats.deaf_detected += 1
            logger.error(
                "RedisAdapter node %s is deaf: subscribed, but its own canary has not come back for "
                "%.1f s (of time the loop was free to read it); subscribing again",
                self._id,
                silent_for,
            )
        session = self._session
        if session is not None and not session.done():
            session.cancel()

    def _heard_own_canary(self) -> None:
        self._last_own_canary = time.monotonic()
        self._canary_stalled = 0.0
        if self._deaf:
            self._deaf = False
            logger.warning("RedisAdapter node %s hears its own canary again", self._id)

    def _node_seen(self, node: str) -> None:
        self._nodes[node] = time.monotonic()

    def _node_gone(self, node: str) -> None:
        if self._nodes.pop(node, None) is not None:
            for request in list(self._requests.values()):
                request.node_gone(node)

    # ------------------------------------------------------------------ inbound

    def _receive(self, data: bytes) -> None:
        """One message from a channel; never raises (the listener must live on)."""
        try:
            message = decode(data)
        except BadMessage as exc:
            self.stats.drop(exc.reason)
            if self._log.ready("bad:" + exc.reason):
                logger.warning("RedisAdapter node %s dropped a message: %s", self._id, exc)
            return
        if message.origin == self._id:
            if message.kind is MessageType.CANARY:
                self._heard_own_canary()
            return
        self.stats.received += 1
        self._node_seen(message.origin)
        handler = self._handlers.get(message.kind)
        try:
            if handler is not None:
                handler(self, message)
            else:
                self._response(message)
        except Exception as exc:
            self.stats.drop("error")
            if self._log.ready("handler:" + message.kind.name):
                logger.error(
                    "RedisAdapter node %s could not handle a %s message from %s",
                    self._id,
                    message.kind.name,
                    message.origin,
                    exc_info=exc,
                )

    def _reply(self, origin: str, kind: MessageType, *body: Any) -> None:
        self._publish(f"{self.prefix}#node#{origin}", encode(kind, self._id, *body))

    def _on_canary(self, message: Message) -> None:
        pass  # _receive noted the node

    def _on_hello(self, message: Message) -> None:
        # A node (re)joined: let it know about us now rather than at our next canary.
        self._publish(self._all, encode(MessageType.CANARY, self._id))

    def _on_bye(self, message: Message) -> None:
        self._node_gone(message.origin)

    def _on_broadcast(self, message: Message) -> None:
        payload, binary, target = message.body
        members = self.members(target)
        if members:
            frame = self.frame(payload, binary)
            volatile = target.volatile
            for member in members:
                member.send_frame(frame, volatile)

    def _on_sockets_join(self, message: Message) -> None:
        target, rooms = message.body
        MemoryAdapter.add_sockets(self, target, rooms)

    def _on_sockets_leave(self, message: Message) -> None:
        target, rooms = message.body
        MemoryAdapter.remove_sockets(self, target, rooms)

    def _on_disconnect_sockets(self, message: Message) -> None:
        target, close = message.body
        MemoryAdapter.disconnect_sockets(self, target, close)

    def _on_delete_room(self, message: Message) -> None:
        (room,) = message.body
        MemoryAdapter.delete_room(self, room)

    def _on_session_taken(self, message: Message) -> None:
        (pid,) = message.body
        self._require_node().session_taken(pid)

    def _on_server_side_emit(self, message: Message) -> None:
        request_id, event, args = message.body
        origin = message.origin

        async def run() -> None:
            try:
                answered, value = await self.run_server_side(event, args)
            except Exception:  # the server reported the handler's error; the origin gets no reply
                answered, value = False, None
            if request_id is not None:
                self._reply(origin, MessageType.SERVER_SIDE_EMIT_RESPONSE, request_id, answered, value)

        self._spawn(run())

    def _on_fetch_sockets(self, message: Message) -> None:
        request_id, target = message.body
        node = self._require_node()
        found = [encode_socket_info(node.describe(member)) for member in self.members(target)]
        self._reply(message.origin, MessageType.FETCH_SOCKETS_RESPONSE, request_id, found)

    def _on_fetch_room_names(self, message: Message) -> None:
        (request_id,) = message.body
        names = list(self._rooms.room_names())
        self._reply(message.origin, MessageType.FETCH_ROOM_NAMES_RESPONSE, request_id, names)

    def _on_fetch_room_size(self, message: Message) -> None:
        request_id, room = message.body
        self._reply(message.origin, MessageType.FETCH_ROOM_SIZE_RESPONSE, request_id, self._rooms.size(room))

    def _on_broadcast_with_ack(self, message: Message) -> None:
        request_id, ack_id, timeout, payload, binary, target = message.body
        origin = message.origin
        sent = self.send_expecting_acks(payload, binary, ack_id, target, timeout)
        self._reply(origin, MessageType.BROADCAST_ACK_COUNT, request_id, [sid for sid, _ in sent])
        for socket_id, future in sent:
            future.add_done_callback(
                lambda done, sid=socket_id: self._relay_ack(origin, request_id, sid, done)  # type: ignore[misc]
            )

    def _relay_ack(self, origin: str, request_id: int, socket_id: str, done: asyncio.Future[Any]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            self._reply(origin, MessageType.BROADCAST_ACK, request_id, socket_id, True, done.result())
        elif isinstance(error, AckError):
            self._reply(origin, MessageType.BROADCAST_ACK, request_id, socket_id, False, error.data)
        # A timeout or a closed connection: no answer; the origin lists the socket as missing.

    def _response(self, message: Message) -> None:
        """A response to one of our requests (or a late one)."""
        request_id = message.body[0]
        request = self._requests.get(request_id)
        if request is None:
            self.stats.late_responses += 1
            return
        kind = message.kind
        if isinstance(request, AckCollector):
            if kind is MessageType.BROADCAST_ACK_COUNT:
                request.node_reported(message.origin, message.body[1])
            elif kind is MessageType.BROADCAST_ACK:
                _, socket_id, ok, value = message.body
                if ok:
                    request.answer(socket_id, value)
                else:
                    text = value.get("message") if isinstance(value, dict) else None
                    request.fail(socket_id, AckError(str(text or "remote handler failed"), value))
            else:
                self.stats.drop("foreign")
        else:
            request.respond(message.origin, message.body[1:])

    _handlers: Final[dict[MessageType, Callable[[RedisAdapter, Message], None]]] = {
        MessageType.CANARY: _on_canary,
        MessageType.HELLO: _on_hello,
        MessageType.BYE: _on_bye,
        MessageType.BROADCAST: _on_broadcast,
        MessageType.SOCKETS_JOIN: _on_sockets_join,
        MessageType.SOCKETS_LEAVE: _on_sockets_leave,
        MessageType.DISCONNECT_SOCKETS: _on_disconnect_sockets,
        MessageType.DELETE_ROOM: _on_delete_room,
        MessageType.SESSION_TAKEN: _on_session_taken,
        MessageType.SERVER_SIDE_EMIT: _on_server_side_emit,
        MessageType.FETCH_SOCKETS: _on_fetch_sockets,
        MessageType.FETCH_ROOM_NAMES: _on_fetch_room_names,
        MessageType.FETCH_ROOM_SIZE: _on_fetch_room_size,
        MessageType.BROADCAST_WITH_ACK: _on_broadcast_with_ack,
    }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ cluster operations

    def dedup_store(self, options: ServerOptions) -> DedupStore:
        """Message ids shared by the nodes (``<prefix>#dedup#<mid>`` keys, adapters/redis_dedup.py)."""
        return RedisDedup(options, self.stats, lambda: self._client, self.prefix)

    # ------------------------------------------------------------------ recovery (redis_log.py)

    def enable_recovery(self, options: RecoveryOptions) -> None:
        """Share a log of recent messages and the sessions in Redis (adapters/redis_log.py):
        logged messages and room operations then travel through it, in one order for all."""
        if self._stream_log is not None:
            return
        log = self._stream_log = StreamLog(self, options, self.prefix, self.max_outbox, self.command_timeout)
        log.attach(self._require_node())
        rooms: TrackedRooms[Member] = TrackedRooms(log, log.changed)
        rooms.take_over(self._rooms)
        self._rooms = rooms

    def _shared_log(self) -> StreamLog:
        log = self._stream_log
        if log is None:
            raise RuntimeError("recovery is not enabled on this adapter")
        return log

    def log_message(self, payload: bytes, binary: bool, target: BroadcastTarget) -> bytes | None:
        self._shared_log().append(
            encode(MessageType.BROADCAST, self._id, payload, binary, encode_target(target))
        )
        return None

    def recovery_position(self) -> tuple[str, int]:
        log = self._shared_log()
        return log.epoch or "", log.position

    def track_rooms(self, member: Member, session: Session | None) -> None:
        log = self._shared_log()
        rooms = self._rooms
        assert isinstance(rooms, TrackedRooms)
        rooms.track_session(member, session)
        current = self._require_node().session(member)
        if current is not None:
            log.track(member, current.pid)

    def save_session(self, session: Session) -> None:
        self._shared_log().save(session)

    async def take_session(self, pid: object, epoch: object, offset: object) -> Session | None:
        return await self._shared_log().take(pid, epoch, offset)

    async def replay(self, session: Session, offset: int) -> list[tuple[bytes, bool]] | None:
        return await self._shared_log().replay(session, offset)

    def deliver_logged(self, offset: int, message: Message) -> None:
        """An entry of the shared log, in the log's order: a message (every node delivers its
        own too), or a room operation of another node."""
        kind = message.kind
        if kind is MessageType.BROADCAST:
            payload, binary, target = message.body
            members = self.members(target)
            if members:
                frame = self.frame(with_offset(payload, binary, offset), binary)
                for member in members:
                    member.send_frame(frame, False)
            return
        if message.origin == self._id:
            return  # this node applied its own operation when it was made
        handler = self._handlers.get(kind)
        if handler is not None:
            try:
                handler(self, message)
            except Exception as exc:
                self.stats.drop("error")
                if self._log.ready("handler:" + kind.name):
                    logger.error(
                        "RedisAdapter node %s could not apply a logged %s", self._id, kind.name, exc_info=exc
                    )

    def reset_recovery_sockets(self, why: str) -> None:
        node = self._require_node()
        for member in self.local_members():
            node.reset_session(member)

    def take_over(self, pid: str) -> None:
        self._publish(self._all, encode(MessageType.SESSION_TAKEN, self._id, pid))

    # ------------------------------------------------------------------ cluster operations

    def broadcast(self, payload: bytes, binary: bool, target: BroadcastTarget) -> int:
        if self._stream_log is not None and not target.volatile:
            # Through the shared log: every node (this one too) delivers it when it reads it.
            self._stream_log.append(
                encode(MessageType.BROADCAST, self._id, payload, binary, encode_target(target))
            )
            return 0
        delivered = self.fan_out(
            prepare_message(BINARY if binary else TEXT, payload, self._compress_from), target
        )
        rooms = target.rooms
        if len(rooms) == 1:
            (room,) = rooms
            if room in self._by_id:
                return delivered  # one local socket: no other node has it
            if self.sharded and not _looks_like_socket_id(room):
                data = encode(MessageType.BROADCAST, self._id, payload, binary, encode_target(target))
                self._publish(self._room_channel(room), data, sharded=self._room_mode != "plain")
                return delivered
        self._publish(
            self._all, encode(MessageType.BROADCAST, self._id, payload, binary, encode_target(target))
        )
        return delivered

    def _operation(self, data: bytes) -> None:
        """A room operation for the other nodes: through the shared log when recovery is on (in
        order with the logged messages), else published."""
        if self._stream_log is not None:
            self._stream_log.append(data)
        else:
            self._publish(self._all, data)

    def add_sockets(self, target: BroadcastTarget, rooms: frozenset[str]) -> None:
        super().add_sockets(target, rooms)
        if not self._only_local(target):
            self._operation(encode(MessageType.SOCKETS_JOIN, self._id, encode_target(target), list(rooms)))

    def remove_sockets(self, target: BroadcastTarget, rooms: frozenset[str]) -> None:
        super().remove_sockets(target, rooms)
        if not self._only_local(target):
            self._operation(encode(MessageType.SOCKETS_LEAVE, self._id, encode_target(target), list(rooms)))

    def disconnect_sockets(self, target: BroadcastTarget, close: bool) -> None:
        super().disconnect_sockets(target, close)
        if not self._only_local(target):
            self._operation(encode(MessageType.DISCONNECT_SOCKETS, self._id, encode_target(target), close))

    def delete_room(self, room: str) -> None:
        super().delete_room(room)
        self._rooms_changed()
        self._operation(encode(MessageType.DELETE_ROOM, self._id, room))

    def _only_local(self, target: BroadcastTarget) -> bool:
        """The target is one socket of this node (nothing for the other nodes to do)."""
        rooms = target.rooms
        return len(rooms) == 1 and next(iter(rooms)) in self._by_id

    def server_side_emit(self, event: str, args: list[Any]) -> None:
        self._publish(self._all, encode(MessageType.SERVER_SIDE_EMIT, self._id, None, event, args))

    async def _request(self, kind: MessageType, timeout: float | None, *fields: Any) -> list[tuple[Any, ...]]:
        """Ask every other node; their response bodies (after the request id), as many as came
        within ``timeout`` (default: request_timeout)."""
        nodes = self.nodes
        if not nodes:
            return []
        request_id = self._next_request
        self._next_request += 1
        request = _Request(nodes)
        self._requests[request_id] = request
        try:
            self._publish(self._all, encode(kind, self._id, request_id, *fields), on_fail=request.finish)
            seconds = self.request_timeout if timeout is None else timeout
            try:
                await asyncio.wait_for(asyncio.shield(request.done), seconds)
            except TimeoutError:
                pass
            if request.waiting:
                self.stats.requests_timed_out += 1
                if self._log.ready("request:" + kind.name):
                    logger.warning(
                        "RedisAdapter node %s: %s: no answer from %d node(s) within %s s (a partial result)",
                        self._id,
                        kind.name,
                        len(request.waiting),
                        seconds,
                    )
            return [body for _, body in request.results]
        finally:
            del self._requests[request_id]

    async def fetch_sockets(self, target: BroadcastTarget, timeout: float | None = None) -> list[Any]:
        local: list[Any] = list(self.members(target))
        if self._only_local(target):
            return local
        for (infos,) in await self._request(MessageType.FETCH_SOCKETS, timeout, encode_target(target)):
            local.extend(infos)
        return local

    async def server_side_emit_with_ack(
        self, event: str, args: list[Any], timeout: float | None = None
    ) -> list[Any]:
        responses = await self._request(MessageType.SERVER_SIDE_EMIT, timeout, event, args)
        return [value for answered, value in responses if answered]

    async def fetch_room_names(self, timeout: float | None = None) -> set[str]:
        names = set(self._rooms.room_names())
        for (remote,) in await self._request(MessageType.FETCH_ROOM_NAMES, timeout):
            names |= remote
        return names

    async def fetch_room_size(self, room: str, timeout: float | None = None) -> int:
        size = self._rooms.size(room)
        for (remote,) in await self._request(MessageType.FETCH_ROOM_SIZE, timeout, room):
            size += remote
        return size

    async def broadcast_with_ack(
        self, payload: bytes, binary: bool, ack_id: int, target: BroadcastTarget, timeout: float
    ) -> AckResults:
        collector = AckCollector(() if self._only_local(target) else self.nodes)
        collector.watch_all(self.send_expecting_acks(payload, binary, ack_id, target, timeout))
        if not collector.waiting_nodes:
            return await collector.wait(timeout)
        request_id = self._next_request
        self._next_request += 1
        self._requests[request_id] = collector
        try:
            data = encode(
                MessageType.BROADCAST_WITH_ACK,
                self._id,
                request_id,
                ack_id,
                timeout,
                payload,
                binary,
                encode_target(target),
            )
            self._publish(self._all, data, on_fail=collector.give_up_on_nodes)
            results = await collector.wait(timeout)
            if not results.complete:
                self.stats.requests_timed_out += 1
            return results
        finally:
            del self._requests[request_id]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _redacted(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{host}"
