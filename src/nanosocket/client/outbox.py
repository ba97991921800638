"""The client's outbox: the offline queue, and the line of at-least-once calls.

* Emits and calls made while not connected wait in the **queue**, in order, and are written right
  after the next ``$connect``.
* At-least-once calls (``retries``) wait in the **line**: its head is the one message in flight;
  the next is sent when the head is answered or given up (so the server commits them in order).
  Each copy of the head waits ``timeout`` seconds for its reply; then another copy (same message
  id, same ack id) is sent, up to ``retries`` more. A copy cut short by a lost connection is sent
  again after the next ``$connect`` without counting. No copy is sent later than the server's
  de-duplication window minus ``timeout`` after the first, nor at all to a server that did not
  tell its window (DeliveryTimeoutError instead).

Limits (``max_queue_size``, ``max_queue_bytes``, ``max_queue_age``) bound what waits unsent in
either; over them the oldest waiting message goes first, and nothing goes silently: a call fails
with MessageDropped, an emit is counted in ``dropped`` and reported to the ``drop`` handlers.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from ..dispatch import AckTable
from ..errors import ConnectionClosed, DeliveryTimeoutError, MessageDropped
from ..options import ClientOptions

__all__ = ["Outbox", "Outgoing"]

_monotonic = time.monotonic


class Outgoing:
    """An encoded envelope on its way out; ``future`` is the reply of a call (``ack``), ``mid``
    the message id of an at-least-once call."""

    __slots__ = (
        "ack",
        "binary",
        "copies",
        "created",
        "event",
        "first_sent",
        "future",
        "mid",
        "payload",
        "retries",
        "timeout",
        "timeouts",
        "timer",
    )

    def __init__(
        self,
        payload: bytes,
        binary: bool,
        event: str = "",
        ack: int | None = None,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self.payload = payload
        self.binary = binary
        self.event = event
        self.ack = ack
        self.future = future
        self.created = _monotonic()
        self.mid: str | None = None
        self.retries = 0
        self.timeout = 0.0
        self.first_sent: float | None = None
        self.copies = 0
        self.timeouts = 0
        self.timer: asyncio.TimerHandle | None = None

    @property
    def abandoned(self) -> bool:
        """A call whose caller stopped waiting (timed out or cancelled), or that was answered."""
        return self.future is not None and self.future.done()


class Outbox:
    """The queue and the line of one client (see the module docstring)."""

    __slots__ = (
        "_acks",
        "_bytes",
        "_counter",
        "_in_flight",
        "_line",
        "_on_drop",
        "_options",
        "_prefix",
        "_queue",
        "_sender",
        "_sweeper",
        "_waiting_in_line",
        "dropped",
        "window",
    )

    def __init__(self, options: ClientOptions, acks: AckTable, on_drop: Callable[[str, str], None]) -> None:
        self._options = options
        self._acks = acks
        self._on_drop = on_drop
        self._queue: deque[Outgoing] = deque()
        self._line: deque[Outgoing] = deque()
        #: Line items never sent yet (they count against the limits, as queued ones do).
        self._waiting_in_line = 0
        #: Bytes of the payloads waiting unsent (queue and line).
        self._bytes = 0
        self._in_flight = False
        #: Writes one copy of the line's head while connected; None while not.
        self._sender: Callable[[Outgoing], object] | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Message ids: a prefix of 96 random bits per client, then a counter.
        self._prefix = secrets.token_urlsafe(12)
        self._counter = itertools.count(1)
        #: Messages dropped unsent (queue limits, age, a full send buffer).
        self.dropped = 0
        #: The server's de-duplication window (seconds), from its answer to ``$connect``.
        self.window: float | None = None

    @property
    def queued(self) -> int:
        """Messages waiting unsent."""
        return len(self._queue) + self._waiting_in_line

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def pending(self) -> int:
        """At-least-once calls not answered yet (the one in flight included)."""
        return len(self._line)

    def new_mid(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    # ----------------------------------------------------------------- queue

    def enqueue(self, item: Outgoing) -> bool:
        """Keep an emit or a call for the next connection; False when it was dropped."""
        if not self._admit(item):
            return False
        self._queue.append(item)
        self._bytes += len(item.payload)
        if item.future is not None:
            item.future.add_done_callback(partial(self._unqueue, item))
        self._sweep_later()
        return True

    def take_queue(self) -> list[Outgoing]:
        """Everything queued, in order, to be written now (expired messages are dropped)."""
        self._sweep()
        items = [item for item in self._queue if not item.abandoned]
        self._queue.clear()
        self._bytes -= sum(len(item.payload) for item in items)
        return items

    def _unqueue(self, item: Outgoing, future: asyncio.Future[Any]) -> None:
        """A queued call's caller gave up: it holds no place in the queue any more."""
        try:
            self._queue.remove(item)
        except ValueError:
            return  # written or dropped already
        self._bytes -= len(item.payload)

    # ------------------------------------------------------------------ line

    def submit(self, item: Outgoing) -> None:
        """Line up an at-least-once call (``item.mid``, ``ack``, ``future``, ``retries`` and
        ``timeout`` set); it is sent when its turn comes."""
        assert item.future is not None and item.mid is not None
        if (self._line or self._sender is None) and not self._admit(item):
            return
        self._line.append(item)
        self._waiting_in_line += 1
        self._bytes += len(item.payload)
        item.future.add_done_callback(partial(self._settled, item))
        self._pump()
        self._sweep_later()

    def _pump(self) -> None:
        """Send a copy of the head when connected and none is in flight."""
        line = self._line
        sender = self._sender
        while line and sender is not None and not self._in_flight:
            head = line[0]
            if head.abandoned:
                self._pop_head()
                continue
            now = _monotonic()
            if head.first_sent is None:
                head.first_sent = now
                self._waiting_in_line -= 1
                self._bytes -= len(head.payload)
            elif self._too_late(head, now):
                self._give_up(head, self._why_not_again())
                continue
            head.copies += 1
            self._in_flight = True
            # A copy a full send buffer refused counts as one without a reply: the next follows.
            sender(head)
            head.timer = asyncio.get_running_loop().call_later(head.timeout, self._no_reply, head)

    def _no_reply(self, item: Outgoing) -> None:
        item.timer = None
        if not self._line or self._line[0] is not item or item.abandoned:
            return
        self._in_flight = False
        item.timeouts += 1
        if item.timeouts > item.retries:
            self._give_up(item, f"no reply to {item.copies} copies within {item.timeout} s each")
        self._pump()

    def _too_late(self, item: Outgoing, now: float) -> bool:
        """Whether another copy of a message sent before must not go: the server did not tell a
        de-duplication window (it may not de-duplicate), or the copy could arrive after it."""
        window, first = self.window, item.first_sent
        return first is not None and (window is None or now - first > window - item.timeout)

    def _why_not_again(self) -> str:
        if self.window is None:
            return "no copy is sent again to a server that does not tell its de-duplication window"
        return "another copy would reach the server after its de-duplication window"

    def _give_up(self, item: Outgoing, why: str) -> None:
        """Fail the head as unconfirmed (the server may have run it) and go on with the next."""
        assert item.mid is not None and item.ack is not None
        error = DeliveryTimeoutError(
            f"{item.event!r} unconfirmed: {why} (message id {item.mid})", mid=item.mid, copies=item.copies
        )
        self._acks.fail(item.ack, error)
        self._pop_head()

    def _settled(self, item: Outgoing, future: asyncio.Future[Any]) -> None:
        """A line item's call is over (answered, failed, or its caller gave up)."""
        line = self._line
        if line and line[0] is item:
            self._pop_head()
            self._pump()
            return
        try:
            line.remove(item)
        except ValueError:
            return
        if item.first_sent is None:
            self._waiting_in_line -= 1
            self._bytes -= len(item.payload)

    def _pop_head(self) -> None:
        item = self._line.popleft()
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        if item.first_sent is None:
            self._waiting_in_line -= 1
            self._bytes -= len(item.payload)
        self._in_flight = False

    # ------------------------------------------------------------ connection

    def connected(self, sender: Callable[[Outgoing], object]) -> None:
        """A connection is up: the line goes on (its head's copy is sent again)."""
        self._sender = sender
        self._pump()
        if self._line:
            self._sweep_later()

    def disconnected(self) -> None:
        """The connection is gone: the copy in flight will be sent again on the next one."""
        self._sender = None
        if self._in_flight:
            self._in_flight = False
            head = self._line[0]
            if head.timer is not None:
                head.timer.cancel()
                head.timer = None

    def fail_calls(self, error: ConnectionClosed) -> None:
        """The client stopped: every call waiting (queue and line) fails; emits stay queued."""
        self.disconnected()
        while self._line:
            item = self._line[0]
            self._pop_head()
            if item.ack is not None:
                self._acks.fail(item.ack, error)
        if any(item.future is not None for item in self._queue):
            for item in [item for item in self._queue if item.future is not None]:
                self._queue.remove(item)
                self._bytes -= len(item.payload)
                if item.ack is not None:
                    self._acks.fail(item.ack, error)
        if not self._queue and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # ---------------------------------------------------------------- limits

    def _admit(self, item: Outgoing) -> bool:
        """Make room for ``item`` (the oldest waiting go first); False when it cannot wait."""
        options = self._options
        size = len(item.payload)
        if not options.max_queue_size:
            self.drop(item, "queue_full")
            return False
        if size > options.max_queue_bytes:
            self.drop(item, "queue_bytes")
            return False
        while self.queued >= options.max_queue_size or self._bytes + size > options.max_queue_bytes:
            why = "queue_full" if self.queued >= options.max_queue_size else "queue_bytes"
            victim = self._oldest_waiting()
            if victim is None:
                break
            self._remove_waiting(victim)
            self.drop(victim, why)
        return True

    def _oldest_waiting(self) -> Outgoing | None:
        queued = self._queue[0] if self._queue else None
        lined = next((item for item in self._line if item.first_sent is None), None)
        if queued is None or (lined is not None and lined.created < queued.created):
            return lined
        return queued

    def _remove_waiting(self, item: Outgoing) -> None:
        if self._queue and self._queue[0] is item:
            self._queue.popleft()
        else:
            self._line.remove(item)
            self._waiting_in_line -= 1
        self._bytes -= len(item.payload)

    def drop(self, item: Outgoing, why: str) -> None:
        """Report a message dropped unsent: its call fails with MessageDropped, an emit goes to
        the ``drop`` handlers; both are counted in ``dropped``."""
        if item.abandoned:
            return
        self.dropped += 1
        if item.ack is not None:
            self._acks.fail(item.ack, MessageDropped(why, item.event))
        else:
            self._on_drop(why, item.event)

    def _sweep_later(self) -> None:
        age = self._options.max_queue_age
        if self._sweeper is None and (age is not None or self.window is not None):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # queued before any loop runs: the sweeps start with the connection
            period = min(max((age or 60.0) / 4, 0.05), 1.0)
            self._sweeper = loop.call_later(period, self._tick)

    def _tick(self) -> None:
        self._sweeper = None
        self._sweep()
        if self._queue or self._line:
            self._sweep_later()

    def _sweep(self) -> None:
        """Drop what waited longer than ``max_queue_age``; give up a head that can no longer be
        sent within the server's window."""
        now = _monotonic()
        age = self._options.max_queue_age
        if age is not None:
            while self._queue and now - self._queue[0].created > age:
                item = self._queue.popleft()
                self._bytes -= len(item.payload)
                self.drop(item, "expired")
            for item in [item for item in self._line if item.first_sent is None and now - item.created > age]:
                self._remove_waiting(item)
                self.drop(item, "expired")
        if self._line and not self._in_flight:
            head = self._line[0]
            if not head.abandoned and self._too_late(head, now):
                self._give_up(head, self._why_not_again())
                self._pump()
