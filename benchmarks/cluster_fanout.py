"""Fan-out to a room spread over worker processes (nodes over Redis), against one process
(not a CI test).

For each configuration, ``nanosocket serve benchmarks.cluster_app:server`` is started and the
suite's load generator runs its ``fanout`` scenario against it: S subscribers join one room,
P publishers keep W ``publish`` events in flight (each freed by the publisher's own copy of the
broadcast), 100 B payload; deliveries/s counts the messages the subscribers received. The
kernel spreads the subscribers over the workers (SO_REUSEPORT), so every broadcast is encoded
once by the publisher's worker, written to its own members, published to Redis once, and written
by every other worker to its members.

Configurations (``--configs``):

* ``single``: one process, the in-process adapter (the single-node figure);
* ``single-redis``: one process with a RedisAdapter (every broadcast also goes to Redis, nobody
  else listens);
* ``workers:N``: N worker processes, each a node over Redis (``workers:2`` is the 2-node cluster);
* any of them with ``+recovery``: connection-state recovery on (over Redis, every broadcast then
  travels through the shared Redis Stream and every node delivers it from there).

Then the **Redis round trip per broadcast** (``--probe N``): on 2 workers, a sender, a receiver on
the sender's worker (alone in room "near") and a receiver on the other worker (alone in room
"far"); the sender emits broadcasts one at a time, alternately to each room, N to each; the
difference between the medians of send-to-receipt is what crossing Redis adds to a broadcast.
Redis's own CPU time per PUBLISH (INFO commandstats) is reported too.

    python -m benchmarks.cluster_fanout                           # single, single-redis, workers:2
    python -m benchmarks.cluster_fanout --configs single,workers:2,workers:4 --repeats 3

Nothing is pinned: the servers, Redis and the load generator share this machine's cores, and
the figures move with whatever else runs; each cell is the median of ``--repeats`` runs with the
spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.cluster_kit import (
    Loadgen,
    Workers,
    cpu_seconds,
    fmt,
    free_port,
    redis,
    redis_command,
    redis_publish_stats,
)
from nanosocket import connect

JOIN = '{"event":"join","data":["room1"]}'
PUBLISH = '{"event":"publish","data":["room1","{p}"]}'
DASH = "\u2013"


def fanout_args(port: int, args: argparse.Namespace) -> list[str]:
    return [
        "--mode", "fanout", "--port", str(port), "-c", str(args.subscribers), "--pubs", str(args.pubs),
        "-w", str(args.window), "-s", str(args.size), "--join", JOIN, "--join-ack", "1",
        "--template", PUBLISH, "-d", str(args.duration), "--warmup", str(args.warmup),
        "--connect-timeout", "60", "-q",
    ]  # fmt: skip


def redis_pid(url: str) -> int | None:
    info = redis_command(url, "INFO", "server").decode(errors="replace")
    for line in info.splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    return None


def run_config(config: str, url: str, args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    port = free_port()
    base, _, extra = config.partition("+")
    workers = int(base.split(":")[1]) if base.startswith("workers:") else 1
    own = base == "single-redis"
    with Workers(
        workers,
        port,
        redis_url=url if (own or workers > 1) else None,
        prefix=f"cluster-fanout-{port}",
        own_adapter=own,
        recovery=extra == "recovery",
    ) as server:
        rpid = redis_pid(url)
        redis_command(url, "CONFIG", "RESETSTAT")
        cpu_before = {pid: cpu_seconds(pid) for pid in server.pids}
        redis_cpu_before = cpu_seconds(rpid) if rpid else 0.0
        started = time.monotonic()
        report = Loadgen(fanout_args(port, args)).report()
        elapsed = time.monotonic() - started
        cpu = {pid: (cpu_seconds(pid) - cpu_before[pid]) / elapsed for pid in server.pids}
        redis_cpu = (cpu_seconds(rpid) - redis_cpu_before) / elapsed if rpid else 0.0
        publish = redis_publish_stats(url)
    result = {
        "config": config,
        "repeat": repeat,
        "server": server.command,
        "deliveries_per_s": float(report["deliveries_per_s"]),
        "publishes_per_s": float(report["publishes_per_s"]),
        "delivery_ratio": float(report["delivery_ratio"]),
        "latency_p50_ms": float(report["latency_us"]["p50"]) / 1000,
        "latency_p99_ms": float(report["latency_us"]["p99"]) / 1000,
        "worker_cpu_pct": [round(100 * value) for value in cpu.values()],
        "redis_cpu_pct": round(100 * redis_cpu),
        "redis_publish_usec_per_call": publish["usec_per_call"],
        "loadgen_cpu_pct": float(report["client_cpu_pct"]),
    }
    print(
        f"  {config} #{repeat}: {fmt(result['deliveries_per_s'])} deliveries/s, "
        f"{fmt(result['publishes_per_s'])} publishes/s, ratio {result['delivery_ratio']:.4f}, "
        f"workers CPU {result['worker_cpu_pct']}%, Redis CPU {result['redis_cpu_pct']}%, "
        f"loadgen CPU {result['loadgen_cpu_pct']:.0f}%",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------- the round-trip probe


class _Receiver:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.pid = 0

    async def call(self, event: str, *args: Any) -> Any:
        self.ws.send(orjson.dumps({"event": event, "data": list(args), "ack": 1}).decode())
        while True:
            envelope = orjson.loads(await self.ws.recv())
            if envelope.get("ack") == 1 and "event" not in envelope:
                return envelope["data"][0]

    async def shouted(self, stamp: int) -> float:
        while True:
            envelope = orjson.loads(await self.ws.recv())
            if envelope.get("event") == "shouted" and envelope["data"][0] == stamp:
                return time.perf_counter()


async def _client(port: int) -> _Receiver:
    ws = await connect(f"ws://127.0.0.1:{port}/", subprotocols=["nanosocket.v1"])
    client = _Receiver(ws)
    ws.send(orjson.dumps({"event": "$connect", "data": [None]}).decode())
    await ws.recv()
    client.pid = await client.call("whoami")
    return client


async def _client_on(port: int, wanted: Any) -> _Receiver:
    for _ in range(64):
        client = await _client(port)
        if wanted(client.pid):
            return client
        client.ws.abort()
    raise SystemExit("no client landed on the wanted worker")


async def probe(port: int, count: int) -> dict[str, float]:
    """Broadcasts one at a time, alternately to a room whose one member is on the sender's worker
    and to a room whose one member is on the other worker; send-to-receipt times of each."""
    sender = await _client(port)
    near = await _client_on(port, lambda pid: pid == sender.pid)
    far = await _client_on(port, lambda pid: pid != sender.pid)
    await near.call("join", "near")
    await far.call("join", "far")
    times: dict[str, list[float]] = {"near": [], "far": []}
    for stamp in range(-200, count):  # the first 200 of each warm up
        for room, receiver in (("near", near), ("far", far)):
            sent = time.perf_counter()
            sender.ws.send(orjson.dumps({"event": "shout", "data": [room, stamp]}).decode())
            received = await receiver.shouted(stamp)
            if stamp >= 0:
                times[room].append((received - sent) * 1000)
    for client in (sender, near, far):
        client.ws.abort()
    local_ms, remote_ms = sorted(times["near"]), sorted(times["far"])
    return {
        "broadcasts": float(count),
        "same_worker_p50_ms": statistics.median(local_ms),
        "other_worker_p50_ms": statistics.median(remote_ms),
        "same_worker_p99_ms": local_ms[int(len(local_ms) * 0.99)],
        "other_worker_p99_ms": remote_ms[int(len(remote_ms) * 0.99)],
        "redis_overhead_p50_ms": statistics.median(remote_ms) - statistics.median(local_ms),
    }


def run_probe(url: str, count: int) -> dict[str, float]:
    port = free_port()
    with Workers(2, port, redis_url=url, prefix=f"cluster-probe-{port}"):
        redis_command(url, "CONFIG", "RESETSTAT")
        result = asyncio.run(probe(port, count))
        result["redis_publish_usec_per_call"] = redis_publish_stats(url)["usec_per_call"]
    return result


# ----------------------------------------------------------------------------------- main


def _cell(values: list[float], unit: str = "") -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{fmt(median)}{unit}"
    return f"{fmt(median)}{unit} ({fmt(min(values))}{DASH}{fmt(max(values))})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="single,single-redis,workers:2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--pubs", type=int, default=1)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--probe", type=int, default=2000, help="broadcasts of the round-trip probe (0: none)"
    )
    parser.add_argument("--json", type=Path, help="also write every run as JSON here")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    print(f"# python -m benchmarks.cluster_fanout {' '.join(argv if argv is not None else sys.argv[1:])}")
    runs: list[dict[str, Any]] = []
    probed: dict[str, float] | None = None
    with redis() as url:
        for repeat in range(1, args.repeats + 1):
            for config in configs:  # interleaved, so that a noisy minute hits every config
                runs.append(run_config(config, url, args, repeat))
        if args.probe:
            probed = run_probe(url, args.probe)

    by_config = {config: [run for run in runs if run["config"] == config] for config in configs}
    baseline = statistics.median(run["deliveries_per_s"] for run in by_config.get("single", runs))
    print(
        f"\n{args.subscribers:,} subscribers in one room, {args.pubs} publisher(s) x {args.window} in flight,"
        f" {args.size} B payload, {args.duration:g} s after {args.warmup:g} s warm-up;"
        f" median (min{DASH}max) of {args.repeats} runs\n"
    )
    print(
        "| configuration | deliveries/s | vs single | delivery ratio | latency p50 | worker CPU | Redis CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for config, group in by_config.items():
        rates = [run["deliveries_per_s"] for run in group]
        ratios = [run["delivery_ratio"] for run in group]
        latency = [run["latency_p50_ms"] for run in group]
        cpus = group[len(group) // 2]["worker_cpu_pct"]
        print(
            f"| {config} | {_cell(rates)} | {statistics.median(rates) / baseline:.0%} | "
            f"{min(ratios):.4f}{DASH}{max(ratios):.4f} | "
            f"{statistics.median(latency):.2f} ms | {'+'.join(f'{c}%' for c in cpus)} | "
            f"{statistics.median(run['redis_cpu_pct'] for run in group)}% |"
        )
    if probed is not None:
        print(
            f"\nRedis round trip per broadcast ({int(probed['broadcasts']):,} broadcasts one at a time,"
            f" 2 workers): send to receipt p50 {probed['same_worker_p50_ms']:.3f} ms on the sender's"
            f" worker, {probed['other_worker_p50_ms']:.3f} ms on the other (p99"
            f" {probed['same_worker_p99_ms']:.3f} / {probed['other_worker_p99_ms']:.3f} ms): crossing"
            f" Redis adds {probed['redis_overhead_p50_ms']:.3f} ms (p50); Redis spends"
            f" {probed['redis_publish_usec_per_call']:.1f} µs of CPU per PUBLISH"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "probe": probed}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
