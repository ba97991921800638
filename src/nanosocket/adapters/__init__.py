"""Adapters: where rooms and broadcasts live when they must cross process boundaries.

``RedisAdapter`` is imported on first use (``nanosocket.adapters.RedisAdapter``), so that an app
without a cluster does not load the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import NO_REPLY, AckResults, Adapter, AdapterStats, BroadcastTarget, Member, Node, SocketInfo
from .memory import MemoryAdapter

if TYPE_CHECKING:
    from .redis import RedisAdapter

__all__ = [
    "NO_REPLY",
    "AckResults",
    "Adapter",
    "AdapterStats",
    "BroadcastTarget",
    "Member",
    "MemoryAdapter",
    "Node",
    "RedisAdapter",
    "SocketInfo",
]


def __getattr__(name: str) -> Any:
    if name == "RedisAdapter":
        from .redis import RedisAdapter  # noqa: PLC0415 - lazily: it loads redis

        return RedisAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
