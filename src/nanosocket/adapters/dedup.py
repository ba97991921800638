"""De-duplication of at-least-once messages by client message id (docs/protocol.md).

A client sends each copy of an at-least-once emit with the same ``mid``. The first copy to arrive
*claims* the id and runs the handler; the handler's reply is then *settled* under the id, and any
copy arriving within the window is answered with that reply instead of running the handler
again. A copy arriving while the first run is still in progress is answered when it completes.

``DedupStore`` is what a server asks of its adapter (``Adapter.dedup_store``); ``LocalDedup``
keeps ids and replies in this process, bounded by count, bytes and time (the oldest go first).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from ..options import ServerOptions

if TYPE_CHECKING:
    from .base import AdapterStats  # base imports this module

__all__ = ["MAX_WAITERS", "NOT_KEPT", "DedupStore", "LocalDedup", "Reply", "Waiter"]

#: Most copies that may wait for one run in progress; more get no answer (they are retried).
MAX_WAITERS: Final = 16


class Reply:
    """A handler's answer as kept: the encoded ``data`` list, or the ``error`` object when
    ``error`` is true (``protocol.envelope.encode_reply_body``), JSON or msgpack (``binary``)."""

    __slots__ = ("binary", "body", "error")

    def __init__(self, error: bool, body: bytes, binary: bool = False) -> None:
        self.error = error
        self.body = body
        self.binary = binary

    def __repr__(self) -> str:
        return f"Reply(error={self.error}, body={self.body!r})"


#: What a copy gets when the first run's reply was too big to keep (``dedup_max_reply``).
NOT_KEPT: Final = Reply(
    True,
    b'{"message":"the message was handled, but its reply was too big to keep","type":"ReplyNotKept"}',
)

#: Called with the reply a copy is answered with.
Waiter = Callable[[Reply], object]


class DedupStore(ABC):
    """Client message ids seen within the window, and their handlers' replies."""

    @abstractmethod
    def claim(self, mid: str, waiter: Waiter) -> bool | Awaitable[bool]:
        """True (now, or as the awaitable's result): the caller is the first and runs the
        handler, then ``settle``s (or ``release``s) the id. False: a copy; ``waiter`` is called
        with the first run's reply, now or when it is settled (not at all when it cannot be: the
        client sends the message again later)."""

    @abstractmethod
    def settle(self, mid: str, reply: Reply) -> None:
        """Keep the first run's reply and answer the copies that wait for it."""

    @abstractmethod
    def release(self, mid: str) -> None:
        """Forget a claim whose handler did not finish (cancelled): a later copy runs it again."""


class _Entry:
    __slots__ = ("expires", "reply", "waiters")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.reply: Reply | None = None
        self.waiters: list[Waiter] | None = None


class LocalDedup(DedupStore):
    """Ids and replies in this process: at most ``dedup_max_entries`` ids and
    ``dedup_max_bytes`` of replies, each for ``dedup_window`` seconds from its claim."""

    __slots__ = ("_bytes", "_entries", "_max_bytes", "_max_entries", "_max_reply", "_stats", "_window")

    def __init__(self, options: ServerOptions, stats: AdapterStats) -> None:
        self._window = options.dedup_window
        self._max_entries = options.dedup_max_entries
        self._max_bytes = options.dedup_max_bytes
        self._max_reply = options.dedup_max_reply
        self._stats = stats
        # In claim order, which is expiry order: expired and evicted ids leave from the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def kept_bytes(self) -> int:
        return self._bytes

    def claim(self, mid: str, waiter: Waiter) -> bool:
        now = time.monotonic()
        self._expire(now)
        entry = self._entries.get(mid)
        if entry is None:
            self._entries[mid] = _Entry(now + self._window)
            self._evict()
            return True
        self._stats.duplicates += 1
        if entry.reply is not None:
            waiter(entry.reply)
        elif entry.waiters is None:
            entry.waiters = [waiter]
        elif len(entry.waiters) < MAX_WAITERS:
            entry.waiters.append(waiter)
        return False

    def claim_local(self, mid: str, waiter: Waiter) -> bool | None:
        """``claim`` for an id this process knows (None when it does not: nothing is changed)."""
        self._expire(time.monotonic())
        if mid not in self._entries:
            return None
        return self.claim(mid, waiter)

    def settle(self, mid: str, reply: Reply) -> None:
        entry = self._entries.get(mid)
        if entry is None:
            return  # evicted or expired while its handler ran: nothing to keep it under
        if len(reply.body) > self._max_reply:
            reply = NOT_KEPT
        entry.reply = reply
        self._bytes += len(reply.body)
        waiters, entry.waiters = entry.waiters, None
        self._evict()
        if waiters:
            for waiter in waiters:
                waiter(reply)

    def release(self, mid: str) -> None:
        entry = self._entries.pop(mid, None)
        if entry is not None and entry.reply is not None:
            self._bytes -= len(entry.reply.body)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            entry = next(iter(entries.values()))
            if entry.expires > now:
                return
            self._pop_oldest()

    def _evict(self) -> None:
        """Keep within the count and byte bounds: the oldest ids go first, window or not."""
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._pop_oldest()
            self._stats.dedup_evicted += 1

    def _pop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        if entry.reply is not None:
            self._bytes -= len(entry.reply.body)
