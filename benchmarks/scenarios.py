"""The scenarios: what load each one puts on a server and which figures it reports.

Two kinds are driven by the runner: ``echo`` (closed-loop request/reply through the load generator's
echo mode; ping-pong is echo with one request in flight) and ``idle`` (hold many connections, measure
the server's memory per connection). A fanout scenario (loadgen ``fanout`` mode) is added here once a
server speaks a room protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SCENARIOS", "Metric", "Scenario", "Timing"]

Better = Literal["higher", "lower"] | None


@dataclass(frozen=True, slots=True)
class Metric:
    """One reported figure: ``key`` in a run's metrics, how to label it, which way is better."""

    key: str
    label: str
    unit: str
    better: Better = None


@dataclass(frozen=True, slots=True)
class Timing:
    """Durations and sizes shared by all scenarios of one suite run."""

    duration: float = 5.0
    warmup: float = 1.0
    idle_conns: int = 10_000
    #: Connections one load generator process holds (the open-files limit is ~20,000 here).
    idle_per_process: int = 5_000


RATE = Metric("rate", "msgs/s", "/s", "higher")
PAYLOAD = Metric("payload_mb_s", "payload MB/s", "MB/s", "higher")
P50 = Metric("p50_us", "latency p50", "µs", "lower")
P90 = Metric("p90_us", "latency p90", "µs", "lower")
P99 = Metric("p99_us", "latency p99", "µs", "lower")
P999 = Metric("p999_us", "latency p99.9", "µs", "lower")
SERVER_CPU = Metric("server_cpu_pct", "server CPU", "%")
SERVER_RSS = Metric("server_rss_mb", "server RSS", "MB", "lower")
LOADGEN_CPU = Metric("loadgen_cpu_pct", "loadgen CPU", "%")
OTHERS_CPU = Metric("others_cpu_pct", "other load on server core", "%")

ECHO_METRICS = (RATE, PAYLOAD, P50, P99, P999, SERVER_CPU, SERVER_RSS, LOADGEN_CPU, OTHERS_CPU)
PINGPONG_METRICS = (
    Metric("rate", "round trips/s", "/s", "higher"),
    P50,
    P90,
    P99,
    P999,
    SERVER_CPU,
    LOADGEN_CPU,
    OTHERS_CPU,
)
IDLE_METRICS = (
    Metric("established", "connections held", "", "higher"),
    Metric("rss_before_mb", "RSS before", "MB", "lower"),
    Metric("rss_held_mb", "RSS holding them", "MB", "lower"),
    Metric("rss_per_conn_b", "RSS per connection", "B", "lower"),
    Metric("ramp_s", "time to open them all", "s", "lower"),
    LOADGEN_CPU,
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One load shape."""

    name: str
    title: str
    kind: Literal["echo", "idle"]
    #: What the server's dialect must support (see servers.Dialect.supports).
    capability: str
    description: str
    metrics: tuple[Metric, ...]
    #: The metric the chart shows.
    headline: str
    conns: int = 50
    window: int = 32
    size: int = 100

    def expected_seconds(self, timing: Timing) -> float:
        """Rough wall time of one run, for the progress bar."""
        if self.kind == "idle":
            return 4.0 + timing.idle_conns / 2500
        return 2.0 + timing.warmup + timing.duration

    def loadgen_args(self, timing: Timing) -> list[list[str]]:
        """Load generator arguments (one list per process), without port and dialect arguments."""
        if self.kind == "echo":
            return [
                [
                    "--mode", "echo",
                    "-c", str(self.conns),
                    "-w", str(self.window),
                    "-s", str(self.size),
                    "-d", str(timing.duration),
                    "--warmup", str(timing.warmup),
                ]
            ]  # fmt: skip
        total = timing.idle_conns
        per = max(1, timing.idle_per_process)
        counts = [per] * (total // per) + ([total % per] if total % per else [])
        # Held until the runner has measured the memory (it sends SIGUSR1); 120 s is the bound.
        return [
            ["--mode", "conns", "-c", str(n), "--hold", "120", "--close-timeout", "3", "--handshakes", "128"]
            for n in counts
        ]


def _echo(name: str, size: int, label: str) -> Scenario:
    return Scenario(
        name=name,
        title=f"echo {label}",
        kind="echo",
        capability="echo",
        description=f"50 connections x 32 requests in flight, {size} B payload, raw frames",
        metrics=ECHO_METRICS,
        headline="rate",
        size=size,
    )


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        _echo("echo-100", 100, "100 B"),
        _echo("echo-1k", 1024, "1 KiB"),
        _echo("echo-10k", 10240, "10 KiB"),
        Scenario(
            name="pingpong",
            title="ping-pong latency",
            kind="echo",
            capability="echo",
            description="50 connections x 1 request in flight, 100 B payload",
            metrics=PINGPONG_METRICS,
            headline="p50_us",
            window=1,
        ),
        Scenario(
            name="idle",
            title="idle connections",
            kind="idle",
            capability="connect",
            description="hold N open connections; server RSS growth / N",
            metrics=IDLE_METRICS,
            headline="rss_per_conn_b",
        ),
    )
}

#: Short names accepted by --scenarios.
ALIASES: dict[str, tuple[str, ...]] = {
    "echo": ("echo-100", "echo-1k", "echo-10k"),
    "latency": ("pingpong",),
}
