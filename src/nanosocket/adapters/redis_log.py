"""StreamLog: the recovery log and sessions a RedisAdapter's nodes share, in Redis.

With connection-state recovery on (docs/guarantees.md), a Redis Stream is the bus of every logged
message (an emit that is neither volatile nor asking for acks) and of the cluster's room
operations, so that every node, the sender included, delivers them in one order: the log's.

* Appending: one Lua script (``_APPEND``) takes a batch of messages, numbers them from a counter
  (``INCR``-like, in the meta hash with the epoch), adds each as stream entry ``<offset>-0`` with
  the server's time, trims the stream by length (``MAXLEN ~ max_messages``) and by age (entries
  older than ``max_disconnection``), and lets an idle stream expire. Batches go out in order from
  one task; a batch whose answer was lost is sent again with the same sequence number and the
  script skips what it already applied (once, in order, even across a broken connection).
* Reading: one ``XREAD BLOCK`` loop per node delivers the entries in order, splicing each offset
  into its envelope (``with_offset``); ``position`` is the last offset delivered.
* The epoch (random, created by the script when the meta hash is missing, or when the counter is
  found below what a node has already read: Redis lost data) names the log. A node that meets a
  new epoch, or finds entries it never read trimmed away (overrun), ends its recovery sockets
  with 1013 and no session: their clients come back afresh (never a silent gap).
* Sessions: ``<prefix>#session#<pid>`` holds the msgpack record (``encode_session``) of every
  accepted socket, written at acceptance, after room changes (the reader delivers nothing past a
  room change before its record is written, so a client never holds a message its stored rooms
  do not explain) and every ``refresh`` seconds (with ``socket.data``), with a TTL of
  ``max_disconnection`` (plus ``refresh`` while live); so a node killed without a word still left
  its clients' sessions. Taking one is ``GETDEL``: a pid is spent once.

Keys (``P`` the prefix; ``{log}`` a hash tag: the script's keys share one slot):
``P#{log}`` (stream), ``P#{log}#meta`` (epoch, offset), ``P#{log}#w#<writer>`` (the last batch
of one writer), ``P#session#<pid>``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import Any, Final, Protocol

import redis.asyncio as aioredis

from ..options import RecoveryOptions
from .base import Member, Node, Session
from .messages import BadMessage, Message, MessageType, decode
from .recovery import (
    LogEntry,
    RoomHistory,
    decode_session,
    encode_session,
    record_change,
    select_replay,
    with_offset,
)

__all__ = ["LogHost", "StreamLog"]

logger = logging.getLogger("nanosocket.adapters.redis")

#: Most messages one append script carries; most entries one read returns.
_APPEND_BATCH: Final = 256
_READ_BATCH: Final = 512
#: Milliseconds one XREAD waits for entries before it asks again.
_BLOCK_MS: Final = 1000
#: Most seconds between refreshes of the live sessions (TTL and socket.data) and epoch checks.
_REFRESH_MAX: Final = 5.0
#: Longest pid looked up (ours are 24 characters).
_MAX_PID: Final = 64

# KEYS: stream, meta, writer. ARGV: candidate epoch, the node's epoch, the node's position,
# max_messages, max age (ms), batch sequence (0: no batch, a check), writer key TTL (ms), the
# encoded messages. Answers {epoch, latest offset, first offset of the batch (0: none added)}.
_APPEND: Final = """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local counter = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')
if not epoch or (epoch == ARGV[2] and counter < tonumber(ARGV[3])) then
  epoch = ARGV[1]
  counter = 0
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
end
local seq = tonumber(ARGV[6])
if seq == 0 or #ARGV < 8 then
  return {epoch, counter, 0}
end
if seq <= tonumber(redis.call('GET', KEYS[3]) or '0') then
  return {epoch, counter, 0}
end
redis.call('SET', KEYS[3], seq, 'PX', ARGV[7])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local first = counter + 1
for i = 8, #ARGV do
  counter = counter + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], counter .. '-0', 'm', ARGV[i], 't', ms)
end
redis.call('HSET', KEYS[2], 'offset', counter)
local cutoff = ms - tonumber(ARGV[5])
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 16)
local young = nil
for _, entry in ipairs(oldest) do
  local fields = entry[2]
  local t = 0
  for j = 1, #fields, 2 do
    if fields[j] == 't' then t = tonumber(fields[j + 1]) end
  end
  if t >= cutoff then
    young = entry[1]
    break
  end
end
if young == nil and #oldest > 0 then
  young = (tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1) .. '-0'
end
if young ~= nil then
  redis.call('XTRIM', KEYS[1], 'MINID', young)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {epoch, counter, first}
"""


class LogHost(Protocol):
    """What the log needs of its adapter."""

    @property
    def node_id(self) -> str: ...

    def deliver_logged(self, offset: int, message: Message) -> None:
        """An entry read from the log, in order (``position`` is already ``offset``)."""
        ...

    def reset_recovery_sockets(self, why: str) -> None:
        """Every local socket's positions are no longer good: end them with 1013, no session."""
        ...

    def backoff(self, attempt: int) -> float: ...

    def take_over(self, pid: str) -> None:
        """Tell the other nodes the session ``pid`` was recovered here."""
        ...


class _Write:
    """A pending session write: NEW (first record of a live socket), LIVE (its record again),
    LOST (its final record), BACK (a taken session put back), DROP (delete it)."""

    NEW, LIVE, LOST, BACK, DROP = range(5)


class StreamLog:
    """The shared recovery log and sessions of one RedisAdapter (recovery on)."""

    def __init__(
        self,
        host: LogHost,
        options: RecoveryOptions,
        prefix: str,
        max_outbox: int,
        command_timeout: float,
    ) -> None:
        self.options = options
        self._host = host
        self._max_outbox = max_outbox
        self._command_timeout = command_timeout
        self.stream = f"{prefix}#{{log}}"
        self.meta = f"{prefix}#{{log}}#meta"
        self._writer_prefix = f"{prefix}#{{log}}#w#"
        self._session_prefix = f"{prefix}#session#"
        self._max_age_ms = max(1, int(options.max_disconnection * 1000))
        #: Seconds between refreshes of the live sessions; their TTL covers one more.
        self.refresh = min(_REFRESH_MAX, options.max_disconnection / 4)
        self._live_ttl_ms = max(1, int((options.max_disconnection + self.refresh) * 1000))
        self._node: Node | None = None
        #: Encoded messages waiting to be appended, in order (kept across a restart of the
        #: adapter: emits made before ``listen()`` go out when it starts).
        self._appends: deque[bytes] = deque()
        self._reset()

    def _reset(self) -> None:
        """The state of one run (a new writer id per start: a forked worker gets its own)."""
        self.epoch: str | None = None
        #: The last offset this node delivered (its readers' position in the log).
        self.position = 0
        #: Bumped when the position jumps (a new epoch): work begun before it is void.
        self.generation = 0
        self._client: aioredis.Redis | None = None
        self._reader_client: aioredis.Redis | None = None
        self._writer_id = secrets.token_hex(8)
        self._sequence = 0
        self._wake: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._sessions: dict[str, tuple[int, Member | Session]] = {}
        self._pids: dict[Member, str] = {}
        self._changes_pending = False
        self._flush_lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.error: str | None = "not connected yet"
        self._failures: dict[str, float] = {}
        self._flush_soon = False
        self._background: set[asyncio.Task[Any]] = set()

    def attach(self, node: Node) -> None:
        self._node = node

    # ------------------------------------------------------------------ lifecycle

    async def start(self, url: str, options: dict[str, Any]) -> None:
        """Connect, learn the epoch and the latest offset (delivering from there on), start the
        appender, the reader and the refresher. Redis unreachable: go on and keep trying."""
        self._reset()
        timeout = self._command_timeout
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout, **options)
        self._reader_client = aioredis.Redis.from_url(
            url, socket_timeout=timeout + _BLOCK_MS / 1000, **options
        )
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        try:
            await self._check()
        except Exception as exc:
            self._failed("check", exc)
        loop = asyncio.get_running_loop()
        node_id = self._host.node_id
        self._tasks = [
            loop.create_task(self._append_forever(), name=f"nanosocket-redis-log-writer-{node_id}"),
            loop.create_task(self._read_forever(), name=f"nanosocket-redis-log-reader-{node_id}"),
            loop.create_task(self._refresh_forever(), name=f"nanosocket-redis-log-refresh-{node_id}"),
        ]

    async def stop(self) -> list[asyncio.Task[Any]]:
        """Write what is pending (briefly), then hand back the tasks to cancel."""
        try:
            async with asyncio.timeout(self._command_timeout):
                if self._appends and self.error is None and self._drained is not None:
                    await self._drained.wait()
                await self.flush_sessions()
        except Exception:  # closing anyway: what could not be written is lost with the node
            pass
        if self._appends:
            logger.error(
                "RedisAdapter node %s closes with %d logged message(s) not appended (Redis "
                "unreachable): the other nodes never get them",
                self._host.node_id,
                len(self._appends),
            )
        tasks, self._tasks = [*self._tasks, *self._background], []
        return tasks

    async def aclose(self) -> None:
        for client in (self._client, self._reader_client):
            if client is not None:
                try:
                    await asyncio.wait_for(client.aclose(), self._command_timeout)
                except Exception:  # closing anyway
                    pass
        self._client = self._reader_client = None

    @property
    def queued(self) -> int:
        return len(self._appends)

    def _failed(self, what: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        first = self.error is None
        self.error = reason
        now = time.monotonic()
        if first or now - self._failures.get(what, -1e9) > 10.0:
            self._failures[what] = now
            logger.error(
                "RedisAdapter node %s: recovery log (%s) failing: %s", self._host.node_id, what, reason
            )

    def _works(self) -> None:
        if self.error is not None and self.error != "not connected yet":
            logger.warning("RedisAdapter node %s: recovery log works again", self._host.node_id)
        self.error = None

    # ------------------------------------------------------------------ epoch

    async def _check(self) -> None:
        """Ask for the epoch and latest offset (creating a log, or a new epoch when Redis lost
        what this node had read)."""
        client = self._client
        assert client is not None
        answer = await self._run_script(client, 0, [])
        self._adopt(answer)
        self._works()

    def _adopt(self, answer: list[Any]) -> None:
        epoch = answer[0].decode() if isinstance(answer[0], bytes) else str(answer[0])
        latest = int(answer[1])
        if epoch == self.epoch:
            return
        had = self.epoch
        self.epoch = epoch
        self.position = latest
        self.generation += 1
        self._sessions.clear()
        if had is not None:
            logger.error(
                "RedisAdapter node %s: the recovery log has a new epoch (Redis lost its data): its "
                "clients start afresh",
                self._host.node_id,
            )
        # A socket accepted under another epoch (or before any) holds positions of no use.
        self._host.reset_recovery_sockets("recovery log reset")

    async def _run_script(self, client: aioredis.Redis, sequence: int, batch: list[bytes]) -> list[Any]:
        keys = [self.stream, self.meta, self._writer_prefix + self._writer_id]
        args: list[Any] = [
            secrets.token_urlsafe(9),
            self.epoch or "",
            self.position,
            self.options.max_messages,
            self._max_age_ms,
            sequence,
            max(self._live_ttl_ms, 60_000),
            *batch,
        ]
        answer: list[Any] = await client.eval(_APPEND, len(keys), *keys, *args)
        return answer

    # ------------------------------------------------------------------ appending

    def append(self, data: bytes) -> None:
        """Queue an encoded message for the log (in order); LogUnavailable when the queue is full."""
        if len(self._appends) >= self._max_outbox:
            from ..errors import LogUnavailable  # noqa: PLC0415 - only on this failure

            raise LogUnavailable(
                f"the recovery log's queue is full ({len(self._appends)} messages waiting for Redis): "
                "the message was not sent"
            )
        self._appends.append(data)
        if self._wake is not None and self._drained is not None:
            self._drained.clear()
            self._wake.set()

    async def _append_forever(self) -> None:
        assert self._wake is not None and self._drained is not None
        appends = self._appends
        failures = 0
        while True:
            if not appends:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            count = min(len(appends), _APPEND_BATCH)
            batch = [appends[index] for index in range(count)]
            self._sequence += 1
            sequence = self._sequence
            while True:
                client = self._client
                try:
                    if client is None:
                        raise ConnectionError("the adapter is closed")
                    answer = await self._run_script(client, sequence, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The batch stays first in the queue; sent again with the same sequence, the
                    # script skips it if it was applied after all.
                    failures += 1
                    self._failed("append", exc)
                    await asyncio.sleep(self._host.backoff(failures - 1))
                    continue
                break
            failures = 0
            for _ in range(count):
                appends.popleft()
            self._works()
            self._adopt(answer)

    # ------------------------------------------------------------------ reading

    async def _read_forever(self) -> None:
        failures = 0
        while True:
            client = self._reader_client
            if client is None:
                return
            generation = self.generation
            try:
                if self.epoch is None:
                    await self._check()
                    continue
                result: Any = await client.xread(
                    {self.stream: f"{self.position}-0"}, count=_READ_BATCH, block=_BLOCK_MS
                )
                if result:
                    # Room changes recorded so far reach Redis before anything after them is
                    # delivered: a stored session always explains what its client received.
                    while self._changes_pending:
                        await self.flush_sessions()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._failed("read", exc)
                await asyncio.sleep(self._host.backoff(failures - 1))
                continue
            failures = 0
            if not result or generation != self.generation:
                continue
            self._deliver(result[0][1])

    def _deliver(self, entries: list[Any]) -> None:
        host = self._host
        for raw_id, fields in entries:
            offset = _offset_of(raw_id)
            if offset <= self.position:
                continue
            if offset != self.position + 1:
                logger.error(
                    "RedisAdapter node %s: the recovery log dropped offsets %d to %d before this "
                    "node read them (max_messages too low for its lag?): its clients start afresh",
                    host.node_id,
                    self.position + 1,
                    offset - 1,
                )
                host.reset_recovery_sockets("recovery log overrun")
            self.position = offset
            try:
                message = decode(fields[b"m"])
            except (BadMessage, KeyError):
                continue
            host.deliver_logged(offset, message)

    async def replay(self, session: Session, offset: int) -> list[tuple[bytes, bool]] | None:
        """What ``session`` missed after ``offset`` up to ``position``, in the step in which the
        caller registers it (see Adapter.replay); None when the log no longer has it all."""
        client = self._client
        if client is None or self.epoch is None:
            return None
        generation = self.generation
        entries: list[LogEntry] = []
        start = offset
        while start < self.position:
            end = self.position
            raw: Any = await client.xrange(self.stream, f"{start + 1}-0", f"{end}-0")
            if generation != self.generation:
                return None
            for raw_id, fields in raw:
                number = _offset_of(raw_id)
                if number != start + 1:
                    return None  # trimmed away (or never there)
                start = number
                try:
                    message = decode(fields[b"m"])
                except (BadMessage, KeyError):
                    continue
                if message.kind is MessageType.BROADCAST:
                    payload, binary, target = message.body
                    payload = with_offset(payload, binary, number)
                    entries.append(LogEntry(number, 0.0, target, payload, binary))
            if start < end:
                return None  # the entries up to ``end`` are gone
        return select_replay(session, offset, entries)

    # ------------------------------------------------------------------ sessions

    def record(self, history: RoomHistory, room: str, joined: bool) -> None:
        """A tracked socket's room change, after the message of ``position``."""
        first = self.position - self.options.max_messages + 1
        record_change(history, (self.position, room, joined), first, self.options.max_room_changes)

    def changed(self, member: Member) -> None:
        """A tracked socket's rooms changed: its record is written before more is delivered."""
        pid = self._pids.get(member)
        if pid is not None:
            self._queue(pid, _Write.LIVE, member)
            self._changes_pending = True

    def track(self, member: Member, pid: str) -> None:
        self._pids[member] = pid
        self._queue(pid, _Write.NEW, member)

    def untrack(self, member: Member) -> None:
        """The socket is gone: unless its session was just kept (lost), its record goes (a
        decided end keeps nothing)."""
        pid = self._pids.pop(member, None)
        if pid is None:
            return
        pending = self._sessions.get(pid)
        if pending is None or pending[0] not in (_Write.LOST, _Write.BACK):
            self._queue(pid, _Write.DROP, member)

    def save(self, session: Session) -> None:
        """A session to keep: lost (its final record) or put back after a failed recovery."""
        self._queue(session.pid, _Write.LOST if session.expires is None else _Write.BACK, session)

    def _queue(self, pid: str, kind: int, item: Member | Session) -> None:
        sessions = self._sessions
        pending = sessions.get(pid)
        if pending is not None and pending[0] == _Write.NEW and kind == _Write.LIVE:
            kind = _Write.NEW  # not written yet: still its first record
        elif pending is not None and pending[0] == _Write.NEW and kind == _Write.LOST:
            kind = _Write.BACK  # lost before its first record: written without XX
        sessions[pid] = (kind, item)
        if self._tasks and not self._flush_soon:
            # Written at the next turn of the loop: after the handler that accepted or changed
            # the socket (its socket.data included), in one pipeline with the others.
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_soon = False
        if self._sessions and self._tasks:
            task = asyncio.get_running_loop().create_task(self._flush_quietly())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_sessions()
        except Exception as exc:
            self._failed("sessions", exc)

    async def flush_sessions(self) -> None:
        """Write the pending session records in one pipeline (raises when Redis fails; what was
        pending is pending again)."""
        lock = self._flush_lock
        client = self._client
        if lock is None or client is None:
            return
        async with lock:
            if not self._sessions:
                return
            pending, self._sessions = self._sessions, {}
            changes, self._changes_pending = self._changes_pending, False
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for pid, (kind, item) in pending.items():
                        self._write(pipe, pid, kind, item)
                    await pipe.execute()
            except BaseException:
                pending.update(self._sessions)
                self._sessions = pending
                self._changes_pending = self._changes_pending or changes
                raise

    def _write(self, pipe: Any, pid: str, kind: int, item: Member | Session) -> None:
        key = self._session_prefix + pid
        if kind == _Write.DROP:
            pipe.delete(key)
            return
        if isinstance(item, Session):
            session: Session | None = item
        else:
            node = self._node
            session = node.session(item) if node is not None and item in self._pids else None
            if session is None:
                return  # gone meanwhile: its final record follows
        assert session is not None
        if self.epoch is None:
            pipe.delete(key)
            return
        try:
            record = encode_session(session, self.epoch, kind in (_Write.LOST, _Write.BACK))
        except TypeError as exc:
            now = time.monotonic()
            if now - self._failures.get("data", -1e9) > 10.0:
                self._failures["data"] = now
                logger.error(
                    "RedisAdapter node %s: the session of socket %s cannot be stored (%s): it is "
                    "dropped, its client starts afresh after a loss",
                    self._host.node_id,
                    session.socket_id,
                    exc,
                )
            pipe.delete(key)
            return
        if kind == _Write.NEW:
            pipe.set(key, record, px=self._live_ttl_ms)
        elif kind == _Write.LIVE:
            pipe.set(key, record, px=self._live_ttl_ms, xx=True)
        elif kind == _Write.LOST:
            pipe.set(key, record, px=self._max_age_ms, xx=True)
        else:  # BACK: plain SET, with what is left of its time
            if session.expires is not None:
                left = int((session.expires - time.monotonic()) * 1000)
            else:
                left = self._max_age_ms
            if left > 0:
                pipe.set(key, record, px=left)
            else:
                pipe.delete(key)

    async def take(self, pid: object, epoch: object, offset: object) -> Session | None:
        """Take the session ``pid`` (spent whatever follows) when it can be recovered."""
        client = self._client
        if type(pid) is not str or not 0 < len(pid) <= _MAX_PID or client is None:
            return None
        await self.flush_sessions()  # a loss this node has just seen is written first
        key = self._session_prefix + pid
        checked = isinstance(offset, int) and type(offset) is int and offset >= 0
        async with client.pipeline(transaction=True) as pipe:
            pipe.pttl(key)
            pipe.getdel(key)
            pipe.hmget(self.meta, "epoch", "offset")
            if checked:
                assert isinstance(offset, int)
                pipe.xrange(self.stream, f"{offset + 1}-0", f"{offset + 1}-0")
            answers = await pipe.execute()
        ttl, data = answers[0], answers[1]
        if data is None:
            return None
        now = time.monotonic()
        try:
            record = decode_session(pid, data, now)
        except ValueError as exc:
            logger.error("RedisAdapter node %s: a stored session is unreadable: %s", self._host.node_id, exc)
            return None
        meta_epoch, meta_offset = answers[2]
        latest = int(meta_offset) if meta_offset is not None else -1
        if (
            not checked
            or self.epoch is None
            or epoch != self.epoch
            or record.epoch != self.epoch
            or meta_epoch is None
            or meta_epoch.decode() != self.epoch
        ):
            return None
        assert type(offset) is int
        if offset > latest or (offset < latest and not answers[3]):
            return None  # an offset the log never had, or the log no longer covers the gap
        session = record.session
        if session.history is not None and not session.history.covers(offset):
            return None
        session.expires = now + max(ttl, 0) / 1000
        if not record.lost:
            # Still live on some node (its client saw the loss first): that node ends it.
            self._host.take_over(pid)
        return session

    # ------------------------------------------------------------------ refresh

    async def _refresh_forever(self) -> None:
        """Every ``refresh`` seconds: the live sessions' records again (TTL, socket.data), and
        the epoch checked (Redis may have lost the log while no one appended)."""
        failures = 0
        while True:
            await asyncio.sleep(self.refresh if not failures else self._host.backoff(failures - 1))
            for member, pid in list(self._pids.items()):
                if pid not in self._sessions:
                    self._queue(pid, _Write.LIVE, member)
            try:
                await self.flush_sessions()
                client = self._client
                if client is not None:
                    self._adopt(await self._run_script(client, 0, []))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._failed("refresh", exc)
                continue
            failures = 0


def _offset_of(raw_id: bytes | str) -> int:
    text = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
    return int(text.split("-", 1)[0])
