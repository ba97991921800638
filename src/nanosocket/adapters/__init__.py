"""Adapters: where rooms and broadcasts live when they must cross process boundaries."""

from .base import Adapter, BroadcastTarget, Member
from .memory import MemoryAdapter

__all__ = ["Adapter", "BroadcastTarget", "Member", "MemoryAdapter"]
