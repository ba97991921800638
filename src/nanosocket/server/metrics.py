"""Server counters, the messages-per-second sampler, and their Prometheus rendering.

Counters are plain integers bumped on the hot path; nothing is computed until /health or
/metrics is read.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..adapters.base import AdapterStats
from ..protocol.deflate import DeflateStats
from .connection_core import MessageCounters

__all__ = ["Stats", "current_rss"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """This process's resident memory in bytes."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:  # not Linux: the peak is the best the portable API offers
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Stats(MessageCounters):
    """What the server counts (the counters every message moves are MessageCounters')."""

    __slots__ = (
        "_last_sample",
        "_sampler",
        "backpressure_closes",
        "compression",
        "connections_rejected",
        "connections_total",
        "disconnections_total",
        "handler_errors",
        "messages_per_second",
        "protocol_errors",
        "rate_limited",
        "started",
        "unknown_acks",
    )

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        self.connections_total = 0
        self.disconnections_total = 0
        self.connections_rejected = 0
        self.backpressure_closes = 0
        self.protocol_errors = 0
        #: Connections closed over their rate limit (rate_limit_messages / rate_limit_bytes).
        self.rate_limited = 0
        self.handler_errors = 0
        self.unknown_acks = 0
        #: permessage-deflate's counters (compressed frames, broadcast frames, inflated messages).
        self.compression = DeflateStats()
        self.messages_per_second = 0.0
        self._last_sample = (self.started, 0)
        self._sampler: asyncio.TimerHandle | None = None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    def start_sampling(self, interval: float = 1.0) -> None:
        """Update ``messages_per_second`` (in + out) every ``interval`` seconds."""
        self.stop_sampling()
        self._last_sample = (time.monotonic(), self.messages_in + self.messages_out)
        loop = asyncio.get_running_loop()

        def sample() -> None:
            now, total = time.monotonic(), self.messages_in + self.messages_out
            then, previous = self._last_sample
            if now > then:
                self.messages_per_second = (total - previous) / (now - then)
            self._last_sample = (now, total)
            self._sampler = loop.call_later(interval, sample)

        self._sampler = loop.call_later(interval, sample)

    def stop_sampling(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None


class _StatsCollector(Collector):
    def __init__(
        self, stats: Stats, gauges: Callable[[], dict[str, float]], adapter: AdapterStats | None
    ) -> None:
        self._stats = stats
        self._gauges = gauges
        self._adapter = adapter

    def collect(self) -> Iterator[Any]:
        stats = self._stats
        counters = {
            "connections": ("Connections accepted", stats.connections_total),
            "disconnections": ("Connections ended", stats.disconnections_total),
            "connections_rejected": ("Connections refused by middleware", stats.connections_rejected),
            "messages_received": ("Messages received from clients", stats.messages_in),
            "messages_sent": ("Messages written to clients", stats.messages_out),
            "bytes_sent": ("Frame bytes written to clients", stats.bytes_out),
            "volatile_dropped": ("Volatile messages dropped for slow clients", stats.volatile_dropped),
            "backpressure_closes": ("Slow clients closed over max_backpressure", stats.backpressure_closes),
            "protocol_errors": ("Connections closed for malformed input", stats.protocol_errors),
            "rate_limited": ("Connections closed over their rate limit", stats.rate_limited),
            "handler_errors": ("Exceptions raised by handlers", stats.handler_errors),
            "unknown_acks": ("Ack replies with no pending request", stats.unknown_acks),
            "compressed_frames": (
                "Messages compressed for sending (a broadcast's shared frame counts once)",
                stats.compression.compressed_frames,
            ),
            "compressed_broadcast_frames": (
                "Broadcast frames compressed once for all their compressing recipients",
                stats.compression.compressed_broadcast_frames,
            ),
            "inflated_messages": ("Compressed messages received", stats.compression.inflated_messages),
        }
        if self._adapter is not None:
            counters.update(self._adapter.counters())
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(f"nanosocket_{name}", doc, value=value)
        if self._adapter is not None:
            dropped = CounterMetricFamily(
                "nanosocket_cluster_messages_dropped",
                "Inbound inter-node messages dropped, by reason",
                labels=["reason"],
            )
            for reason, count in sorted(self._adapter.dropped.items()):
                dropped.add_metric([reason], count)
            yield dropped
        for gauge, level in self._gauges().items():
            yield GaugeMetricFamily(f"nanosocket_{gauge}", gauge.replace("_", " "), value=level)


def render_prometheus(
    stats: Stats, gauges: Callable[[], dict[str, float]], adapter: AdapterStats | None = None
) -> bytes:
    """The Prometheus text exposition of ``stats`` plus the current ``gauges`` (and the adapter's
    counters, when given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats, gauges, adapter))
    return generate_latest(registry)
