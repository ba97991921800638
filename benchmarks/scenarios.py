"""The scenarios: what load each one puts on a server and which figures it reports.

Three kinds are driven by the runner: ``echo`` (closed-loop request/reply through the load generator's
echo mode; ping-pong is echo with one request in flight; acks are echo with ``call`` requests whose
ack ids the load generator numbers and checks), ``fanout`` (subscribers in one room, a
publisher keeping publishes in flight; the load generator's fanout mode) and ``idle`` (hold many
connections, measure the server's memory per connection).

A scenario runs on every server whose dialect supports its capability and, when the scenario names a
``family``, speaks that family's frames: the raw echo scenarios are for raw echo servers, the event
scenarios for event servers (the frames come from the server's dialect, see servers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

__all__ = ["CALIBRATION_SERVER", "SCENARIOS", "TARGET_SERVER", "Metric", "Scenario", "Target", "Timing"]

if TYPE_CHECKING:
    from .servers import Server

Better = Literal["higher", "lower"] | None


@dataclass(frozen=True, slots=True)
class Metric:
    """One reported figure: ``key`` in a run's metrics, how to label it, which way is better."""

    key: str
    label: str
    unit: str
    better: Better = None


#: The server the issue's targets are about: the full NanoSocket event API, JSON envelope.
TARGET_SERVER = "nanosocket-events"
#: The calibration server (the load generator's ceiling), not a peer.
CALIBRATION_SERVER = "c-refserver"


@dataclass(frozen=True, slots=True)
class Target:
    """A performance target of the project for one figure of one scenario (``TARGET_SERVER``)."""

    key: str
    #: ">=" (at least) or "<=" (at most).
    op: Literal[">=", "<="]
    value: float
    #: How the target reads in the report, e.g. "≥ 1,000,000 msgs/s".
    text: str

    def reached(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value


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
#: Server CPU time per message answered (per delivery in fan-out): what a message costs the server,
#: whatever else ran on its core (a rate drops when other processes take the core; this does not).
SERVER_US = Metric("server_us_per_msg", "server CPU per message", "µs/msg", "lower")
SERVER_RSS = Metric("server_rss_mb", "server RSS", "MB", "lower")
LOADGEN_CPU = Metric("loadgen_cpu_pct", "loadgen CPU", "%")
OTHERS_CPU = Metric("others_cpu_pct", "other load on server core", "%")

ECHO_METRICS = (RATE, PAYLOAD, P50, P99, P999, SERVER_CPU, SERVER_US, SERVER_RSS, LOADGEN_CPU, OTHERS_CPU)
PINGPONG_METRICS = (
    Metric("rate", "round trips/s", "/s", "higher"),
    P50,
    P90,
    P99,
    P999,
    SERVER_CPU,
    SERVER_US,
    LOADGEN_CPU,
    OTHERS_CPU,
)
FANOUT_METRICS = (
    Metric("deliveries_per_s", "deliveries/s", "/s", "higher"),
    Metric("publishes_per_s", "publishes/s", "/s", "higher"),
    Metric("delivery_ratio", "delivery ratio", "ratio", "higher"),
    Metric("p50_us", "end-to-end latency p50", "µs", "lower"),
    Metric("p90_us", "end-to-end latency p90", "µs", "lower"),
    Metric("p99_us", "end-to-end latency p99", "µs", "lower"),
    Metric("p999_us", "end-to-end latency p99.9", "µs", "lower"),
    Metric("publisher_rtt_p50_us", "publish round trip p50", "µs", "lower"),
    SERVER_CPU,
    Metric("server_us_per_msg", "server CPU per delivery", "µs/msg", "lower"),
    SERVER_RSS,
    LOADGEN_CPU,
    OTHERS_CPU,
)
ACK_METRICS = (
    Metric("rate", "acks/s", "/s", "higher"),
    PAYLOAD,
    P50,
    P99,
    P999,
    SERVER_CPU,
    SERVER_US,
    SERVER_RSS,
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
    kind: Literal["echo", "fanout", "idle"]
    #: What the server's dialect must support (see servers.Dialect.supports).
    capability: str
    description: str
    metrics: tuple[Metric, ...]
    #: The metric the chart shows.
    headline: str
    #: Echo: connections; fanout: subscribers.
    conns: int = 50
    #: Echo: requests in flight per connection; fanout: publishes in flight per publisher.
    window: int = 32
    size: int = 100
    #: Fanout: publishers.
    pubs: int = 1
    #: The family of servers it is meant for (servers.Dialect.family); None: every server.
    family: str | None = None
    #: Echo kind: the dialect's request template, "echo" (an event echoed back) or "call" (answered
    #: by an acknowledgement, checked by id).
    request: Literal["echo", "call"] = "echo"
    #: The issue's target for TARGET_SERVER in this scenario, if there is one.
    target: Target | None = None
    #: Extra load generator arguments (e.g. --deflate --fill words for the guide's compression runs).
    extra_args: tuple[str, ...] = ()

    def runs_on(self, server: Server) -> bool:
        dialect = server.dialect
        return dialect.supports(self.capability) and self.family in (None, dialect.family)

    def expected_seconds(self, timing: Timing) -> float:
        """Rough wall time of one run, for the progress bar."""
        if self.kind == "idle":
            return 4.0 + timing.idle_conns / 2500
        if self.kind == "fanout":
            return 4.0 + timing.warmup + timing.duration + self.conns / 1000
        return 2.0 + timing.warmup + timing.duration

    def loadgen_args(self, timing: Timing) -> list[list[str]]:
        """Load generator arguments (one list per process), without port and dialect arguments."""
        if self.kind == "fanout":
            return [
                [
                    "--mode", "fanout",
                    "-c", str(self.conns),
                    "--pubs", str(self.pubs),
                    "-w", str(self.window),
                    "-s", str(self.size),
                    "-d", str(timing.duration),
                    "--warmup", str(timing.warmup),
                    "--connect-timeout", "30",
                ]
            ]  # fmt: skip
        if self.kind == "echo":
            return [
                [
                    "--mode", "echo",
                    "-c", str(self.conns),
                    "-w", str(self.window),
                    "-s", str(self.size),
                    "-d", str(timing.duration),
                    "--warmup", str(timing.warmup),
                    *self.extra_args,
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
        family="raw",
    )


def _event_echo(name: str, size: int, label: str, target: float) -> Scenario:
    return Scenario(
        name=name,
        title=f"event echo {label}",
        kind="echo",
        capability="echo",
        description=(
            f"50 connections x 32 requests in flight, {size} B payload in "
            '`{"event":"echo","data":["<payload>"]}`, answered by an `echo` event'
        ),
        metrics=ECHO_METRICS,
        headline="rate",
        size=size,
        family="events",
        target=Target("rate", ">=", target, f"≥ {target:,.0f} msgs/s"),
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
            description="50 connections x 1 request in flight, 100 B payload, raw frames",
            metrics=PINGPONG_METRICS,
            headline="p50_us",
            window=1,
            family="raw",
        ),
        _event_echo("event-echo-100", 100, "100 B", 1_000_000),
        _event_echo("event-echo-1k", 1024, "1 KiB", 500_000),
        _event_echo("event-echo-10k", 10240, "10 KiB", 85_000),
        Scenario(
            name="event-pingpong",
            title="event ping-pong latency",
            kind="echo",
            capability="echo",
            description="50 connections x 1 `echo` event in flight, 100 B payload",
            metrics=PINGPONG_METRICS,
            headline="p99_us",
            window=1,
            family="events",
            target=Target("p99_us", "<=", 1000, "p99 ≤ 1 ms"),
        ),
        Scenario(
            name="acks",
            title="acks (call / return value)",
            kind="echo",
            capability="acks",
            description=(
                "50 connections x 32 requests in flight, each a `call` event asking for an ack "
                '(`{"event":"call","data":["<100 B>"],"ack":N}`; Socket.IO: `42N["call","<100 B>"]`) '
                'answered by the handler\'s return value (`{"ack":N,"data":[...]}`; `43N[...]`); the load '
                "generator numbers the ids per connection and checks that every reply is the ack of the "
                "oldest request in flight"
            ),
            metrics=ACK_METRICS,
            headline="rate",
            family="events",
            request="call",
            target=Target("rate", ">=", 500_000, "≥ 500,000 acks/s"),
        ),
        Scenario(
            name="fanout",
            title="fan-out 1,000 subscribers",
            kind="fanout",
            capability="fanout",
            description=(
                "1,000 subscribers joined to one room (`join`, acknowledged by `joined`), 1 publisher "
                "keeping 2 `publish` events in flight (each freed by its own copy of the broadcast), "
                "100 B payload; deliveries/s counts messages received by subscribers, latency is publish "
                "to delivery"
            ),
            metrics=FANOUT_METRICS,
            headline="deliveries_per_s",
            target=Target("deliveries_per_s", ">=", 600_000, "≥ 600,000 deliveries/s"),
            conns=1000,
            window=2,
            pubs=1,
        ),
        Scenario(
            name="idle",
            title="idle connections",
            kind="idle",
            capability="connect",
            description=(
                "hold N open connections; server RSS growth / N (event servers: with their event handlers "
                "registered, no event sent)"
            ),
            metrics=IDLE_METRICS,
            headline="rss_per_conn_b",
            target=Target("rss_per_conn_b", "<=", 2000, "≤ 2 KB (2,000 B) per connection"),
        ),
    )
}

#: Short names accepted by --scenarios.
ALIASES: dict[str, tuple[str, ...]] = {
    "echo": ("echo-100", "echo-1k", "echo-10k"),
    "latency": ("pingpong", "event-pingpong"),
    "events": (
        "event-echo-100",
        "event-echo-1k",
        "event-echo-10k",
        "event-pingpong",
        "acks",
        "fanout",
        "idle",
    ),
    "targets": (
        "event-echo-100",
        "event-echo-1k",
        "event-echo-10k",
        "event-pingpong",
        "acks",
        "fanout",
        "idle",
    ),
}
