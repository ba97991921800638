"""The focused measurements behind the performance guide (docs/performance.md).

    .venv/bin/python -m benchmarks.guide [--repeats 3] [--duration 3]

Each one isolates one piece of advice, on the NanoSocket event server of the suite
(benchmarks/apps/nanosocket_events.py) pinned to core 0, driven from core 1:

- **middleware**: the server's CPU time per connection (upgrade, middleware, ``connection`` handler,
  one echo event, close) with 0, 1 and 5 token-checking middlewares; 2,000 connections per run, from
  ``/proc`` CPU time, so that handshake queueing does not hide the cost. Capacity = 1 / CPU per connection.
- **monitoring**: event echo 100 B (50 x 32 in flight) with ``monitoring=True`` (the default) and False.
- **compression**: event echo of 1 KiB of words (50 x 32 in flight; the load generator offers
  permessage-deflate and sends each request uncompressed, the server compresses its replies) with
  ``compression`` off, shared and dedicated: replies/s, bytes on the wire per reply, server CPU.
- **batching**: one Python ``NanoSocketClient`` (core 1) sends 100,000 ``call`` events (no ack asked,
  so no reply) one ``emit`` at a time, then the same inside ``client.batch()`` 100 at a time (both
  yield to the loop every 100 emits); the run ends when the ack of a final ``call`` comes back (the
  server handles a connection's events in order). Events/s and the server's CPU per event. The
  same figure for one event on a connection kept open, against a connection per event
  (middleware 0), is the case for pooling connections.
- **rooms**: the suite's fan-out (1,000 subscribers, 1 publisher, 2 in flight, 100 B, then 4 KiB)
  with ``server.to(room).emit`` (encoded and framed once) and with a Python loop calling
  ``socket.emit`` for each member (``--publish-loop``).
- **backpressure**: fan-out to 50 subscribers (4 KiB, 2 in flight) while 10 more members of the room
  never read (their receive buffer is 4 KiB), with ``max_backpressure`` 64 KiB (the default: slow
  consumers are closed with 1008), 64 KiB with ``server.volatile`` (their messages are dropped) and
  16 MiB: deliveries/s to the others, delivery ratio, the server's RSS growth, and the closes and
  drops counted in ``/metrics``.

CPU time per connection and per event is read from ``/proc/<pid>/task/*/schedstat`` (nanoseconds).
Writes benchmarks/results/guide.md and guide.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .driver import LoadgenProcess
from .procstat import cpu_ns, machine_facts, process_tree, rss_bytes, source_state
from .runner import HOST, RunOptions, ServerProcess, can_pin, free_port, run_fanout, run_once
from .scenarios import ECHO_METRICS, FANOUT_METRICS, SCENARIOS, Scenario, Timing
from .servers import EVENTS, Server

RESULTS = Path(__file__).resolve().parent / "results"
APP = Path(__file__).resolve().parent / "apps" / "nanosocket_events.py"
RAW = RESULTS / "raw" / "guide"
DASH = "\u2013"  # en dash of a range


def _app(*flags: str) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        return [sys.executable, str(APP), "--host", host, "--port", str(port), *flags]

    return command


def _server(name: str, *flags: str) -> Server:
    return Server(name=name, title=f"nanosocket_events.py {' '.join(flags)}".strip(), command=_app(*flags),
                  dialect=EVENTS)  # fmt: skip


def _median(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _pin_self(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def middleware(repeats: int, options: RunOptions, conns: int = 2000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in (0, 1, 5):
        server = _server(f"middleware-{count}", "--middleware", str(count))
        per_conn, ramps = [], []
        for _ in range(repeats):
            proc = ServerProcess(server, free_port(), options.server_cpu, RAW / f"mw{count}.server.log")
            try:
                proc.wait_ready()
                time.sleep(0.3)
                pids = process_tree(proc.pid)
                before = cpu_ns(pids)
                args = ["--mode", "conns", "--port", str(proc.port), "-c", str(conns), "--hold", "0.3", "-q"]
                args += ["--conns-msg", '{"event":"echo","data":["hi"]}']
                report = LoadgenProcess(args, cpu=options.loadgen_cpu).result(timeout=120)
                time.sleep(0.3)
                used = (cpu_ns(pids) - before) / 1e9
                if report["errors"]["total"] or report["replies"] != conns:
                    raise RuntimeError(f"middleware run failed: {report['errors']}")
                per_conn.append(used / conns * 1e6)
                ramps.append(float(report["ramp_s"]))
            finally:
                proc.stop()
        out[str(count)] = {
            "cpu_us_per_connection": _median(per_conn),
            "connections_per_cpu_second": _median([1e6 / v for v in per_conn]),
            "ramp_s": _median(ramps),
        }
        print(f"middleware {count}: {out[str(count)]}", file=sys.stderr)
    return out


def _median_runs(
    scenario: Scenario, server: Server, repeats: int, options: RunOptions
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``scenario`` on ``server`` ``repeats`` times: the records, and the median of each metric."""
    records = [run_once(scenario, server, options, r) for r in range(1, repeats + 1)]
    failed = [r["error"] for r in records if not r["ok"]]
    if failed:
        raise RuntimeError(f"{server.name}: {failed}")
    keys = records[0]["metrics"].keys()
    return records, {k: _median([r["metrics"][k] for r in records]) for k in keys}


def _echo_runs(
    servers: list[Server], scenario: Scenario, repeats: int, options: RunOptions
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for server in servers:
        records, out[server.name] = _median_runs(scenario, server, repeats, options)
        out[server.name]["compressed_messages"] = sum(
            r["loadgen"][0].get("compressed_messages", 0) for r in records
        )
        print(f"{scenario.name} {server.name}: rate {out[server.name]['rate']}", file=sys.stderr)
    return out


def monitoring(repeats: int, options: RunOptions) -> dict[str, Any]:
    scenario = Scenario(
        name="guide-echo-100", title="event echo 100 B", kind="echo", capability="echo",
        description="", metrics=ECHO_METRICS, headline="rate", family="events",
    )  # fmt: skip
    servers = [_server("monitoring-on"), _server("monitoring-off", "--no-monitoring")]
    return _echo_runs(servers, scenario, repeats, options)


def compression(repeats: int, options: RunOptions) -> dict[str, Any]:
    scenario = Scenario(
        name="guide-compression", title="event echo 1 KiB words", kind="echo", capability="echo",
        description="", metrics=ECHO_METRICS, headline="rate", family="events", size=1024,
        extra_args=("--deflate", "--fill", "words"),
    )  # fmt: skip
    servers = [_server(f"compression-{m}", "--compression", m) for m in ("off", "shared", "dedicated")]
    return _echo_runs(servers, scenario, repeats, options)


async def _batching_once(port: int, events: int, chunk: int, pid: int) -> tuple[float, float]:
    from nanosocket import NanoSocketClient, WebSocketOptions  # noqa: PLC0415 (only this measurement needs them)

    payload = "x" * 100
    # A send buffer large enough that no emit is refused while the server catches up.
    options = WebSocketOptions(
        max_backpressure=256 * 1024 * 1024, backpressure_policy="drop", idle_timeout=None
    )
    async with NanoSocketClient(f"ws://{HOST}:{port}", reconnection=False, options=options) as client:
        await client.call("call", "warm-up", timeout=30)
        pids = process_tree(pid)
        cpu0, t0 = cpu_ns(pids), time.perf_counter()
        for start in range(0, events, chunk):
            if chunk > 1:
                with client.batch():
                    for _ in range(min(chunk, events - start)):
                        client.emit("call", payload)
            else:
                client.emit("call", payload)
            if start % 100 == 0:
                await asyncio.sleep(0)
        await client.call("call", "end", timeout=300)
        wall, cpu = time.perf_counter() - t0, (cpu_ns(pids) - cpu0) / 1e9
        if client.dropped:
            raise RuntimeError(f"batching: the client dropped {client.dropped} emits")
        return wall, cpu


def batching(repeats: int, options: RunOptions, events: int = 100_000) -> dict[str, Any]:
    out: dict[str, Any] = {"events": events}
    _pin_self(options.loadgen_cpu)
    try:
        for label, chunk in (("single", 1), ("batch-100", 100)):
            rates, server_us = [], []
            for _ in range(repeats):
                server = _server("batching")
                proc = ServerProcess(server, free_port(), options.server_cpu, RAW / "batching.server.log")
                try:
                    proc.wait_ready()
                    time.sleep(0.3)
                    wall, cpu = asyncio.run(_batching_once(proc.port, events, chunk, proc.pid))
                finally:
                    proc.stop()
                rates.append(events / wall)
                server_us.append(cpu / events * 1e6)
            out[label] = {"events_per_s": _median(rates), "server_cpu_us_per_event": _median(server_us)}
            print(f"batching {label}: {out[label]}", file=sys.stderr)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return out


def _fanout_runs(
    servers: list[Server], scenario: Scenario, repeats: int, options: RunOptions
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for server in servers:
        _, out[server.name] = _median_runs(scenario, server, repeats, options)
        print(f"{scenario.name} {server.name}: {out[server.name]['deliveries_per_s']}", file=sys.stderr)
    return out


def rooms(repeats: int, options: RunOptions) -> dict[str, Any]:
    out = _fanout_runs(
        [_server("rooms-to-room"), _server("rooms-loop", "--publish-loop")],
        SCENARIOS["fanout"],
        repeats,
        options,
    )
    # The same with 4 KiB messages: encoding a message per member costs more as it grows.
    big = dataclasses.replace(SCENARIOS["fanout"], name="guide-fanout-4k", size=4096)
    servers = [_server("rooms-to-room-4k"), _server("rooms-loop-4k", "--publish-loop")]
    return out | _fanout_runs(servers, big, repeats, options)


#: Room members that never read: each opens a connection with a 4 KiB receive buffer, joins the
#: room and reads nothing more.
STUCK = 10
STUCK_RCVBUF = 4096
#: The backpressure run's subscribers (that read) and payload: enough bytes per member per second
#: that a member who reads nothing is past the kernel's socket buffers within the run.
BP_SUBSCRIBERS = 50
BP_SIZE = 4096


def _stuck_client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STUCK_RCVBUF)
    sock.settimeout(10)
    sock.connect((HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing after the head is read
        if not chunk:
            raise RuntimeError("a stuck client's upgrade was refused")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"a stuck client's upgrade was refused: {head[:40]!r}")
    payload = b'{"event":"join","data":["room1"]}'
    mask = os.urandom(4)
    sock.sendall(
        bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    return sock


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def backpressure(repeats: int, options: RunOptions) -> dict[str, Any]:
    scenario = Scenario(
        name="guide-backpressure", title=f"fan-out, {STUCK} stuck members",
        kind="fanout", capability="fanout", description="", metrics=FANOUT_METRICS,
        headline="deliveries_per_s", conns=BP_SUBSCRIBERS, window=2, size=BP_SIZE, pubs=1,
    )  # fmt: skip
    variants = {
        "close-64k": ("--max-backpressure", "65536"),
        "volatile-64k": ("--max-backpressure", "65536", "--volatile"),
        "close-16m": ("--max-backpressure", str(16 * 1024 * 1024)),
    }
    out: dict[str, Any] = {
        "stuck": STUCK,
        "stuck_rcvbuf": STUCK_RCVBUF,
        "subscribers": BP_SUBSCRIBERS,
        "size": BP_SIZE,
    }
    for label, flags in variants.items():
        server = _server(f"backpressure-{label}", *flags)
        runs: list[dict[str, float]] = []
        for repeat in range(repeats):
            log = f"backpressure-{label}.{repeat + 1}"
            proc = ServerProcess(server, free_port(), options.server_cpu, RAW / f"{log}.server.log")
            stuck: list[socket.socket] = []
            try:
                proc.wait_ready()
                time.sleep(0.3)
                rss0 = rss_bytes(process_tree(proc.pid))
                stuck = [_stuck_client(proc.port) for _ in range(STUCK)]
                time.sleep(0.3)
                metrics, _ = run_fanout(scenario, server, proc, options, RAW / f"{log}.loadgen.log")
                metrics["rss_growth_mb"] = (metrics["server_rss_peak_mb"] * 1e6 - rss0) / 1e6
                # A slow consumer is counted once its connection is gone: the close frame it never
                # reads waits close_timeout (5 s), then the connection is dropped.
                deadline = time.monotonic() + (10 if label == "close-64k" else 0)
                while True:
                    closes = _metric(proc.port, "nanosocket_backpressure_closes_total")
                    if closes >= STUCK or time.monotonic() >= deadline:
                        break
                    time.sleep(0.25)
                metrics["backpressure_closes"] = closes
                metrics["volatile_dropped"] = _metric(proc.port, "nanosocket_volatile_dropped_total")
                if metrics["errors"]:
                    raise RuntimeError(f"backpressure {label}: the load generator counted errors")
                runs.append(metrics)
            finally:
                for sock in stuck:
                    sock.close()
                proc.stop()
        out[label] = {k: _median([r[k] for r in runs]) for k in runs[0]}
        print(f"backpressure {label}: {out[label]['deliveries_per_s']}", file=sys.stderr)
    return out


def _fmt(stat: dict[str, float], digits: str = ",.0f") -> str:
    return f"{stat['median']:{digits}} ({stat['min']:{digits}}{DASH}{stat['max']:{digits}})"


def _us(stat: dict[str, float]) -> str:
    return _fmt(stat, ",.0f")


def render(doc: dict[str, Any]) -> str:
    mw, mon, comp, bat = doc["middleware"], doc["monitoring"], doc["compression"], doc["batching"]
    rooms_, bp = doc["rooms"], doc["backpressure"]
    speedups = doc["machine"].get("nanosocket_speedups", {})
    lines = [
        "# Performance guide measurements",
        "",
        f"Measured {doc['finished']} with `python -m benchmarks.guide --repeats {doc['repeats']} "
        f"--duration {doc['duration']:g}` (source: commit `{doc['source'].get('commit')}`"
        f"{', src/ with uncommitted changes' if doc['source'].get('src_dirty') else ''}; compiled kernels: "
        f"{', '.join(speedups.get('compiled', [])) or 'none'}); median (min{DASH}max) of the runs. Server "
        "pinned to core 0, load generator / client to core 1 "
        f"({'pinned' if doc['pinned'] else 'NOT pinned'}). "
        f"The machine is shared: load average {' / '.join(f'{v:.2f}' for v in doc['load_average_start'])} "
        f"(1 / 5 / 15 min) at the start, {' / '.join(f'{v:.2f}' for v in doc['load_average'])} at the end. "
        "What each section measures is in benchmarks/guide.py; docs/performance.md explains what follows "
        "from it.",
        "",
        "## Middleware (and pooling): server CPU per connection",
        "",
        "A connection opened, passed through the middlewares, given its handlers by `connection`, sent one "
        "`echo` event (answered) and closed; 2,000 of them per run.",
        "",
        "| middlewares | CPU per connection (µs) | connections per CPU-second | time to open 2,000 (s) |",
        "|---|---|---|---|",
    ]
    for count, row in mw.items():
        lines.append(
            f"| {count} | {_us(row['cpu_us_per_connection'])} | {_fmt(row['connections_per_cpu_second'])} "
            f"| {_fmt(row['ramp_s'], '.2f')} |"
        )
    lines += [
        "",
        "## Monitoring: event echo 100 B",
        "",
        "| monitoring | msgs/s | server CPU | server CPU per message (µs) |",
        "|---|---|---|---|",
    ]
    for name, row in mon.items():
        lines.append(
            f"| {name.removeprefix('monitoring-')} | {_fmt(row['rate'])} | "
            f"{row['server_cpu_pct']['median']:.0f}% | {_fmt(row['server_us_per_msg'], '.2f')} |"
        )
    lines += [
        "",
        "## Compression: event echo of 1 KiB of words",
        "",
        "| compression | replies/s | bytes per reply on the wire | server CPU | server CPU per reply (µs) "
        "| server RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in comp.items():
        if name.startswith("compression-"):
            per_reply = row["payload_mb_s"]["median"] * 1e6 / row["rate"]["median"]
            lines.append(
                f"| {name.removeprefix('compression-')} | {_fmt(row['rate'])} | {per_reply:,.0f} | "
                f"{row['server_cpu_pct']['median']:.0f}% | {_fmt(row['server_us_per_msg'], '.2f')} | "
                f"{row['server_rss_mb']['median']:.1f} |"
            )
    lines += [
        "",
        "Bytes per reply count the payload as it travelled (compressed when the server compressed it). "
        "Memory per connection by compression mode: benchmarks/results/compression_memory.md.",
        "",
        f"## Batching: {bat['events']:,} events from one Python client",
        "",
        "| client sends | events/s | server CPU per event (µs) |",
        "|---|---|---|",
    ]
    for name, row in bat.items():
        if isinstance(row, dict):
            lines.append(
                f"| {name} | {_fmt(row['events_per_s'])} | {_fmt(row['server_cpu_us_per_event'], '.2f')} |"
            )
    lines += [
        "",
        "## Rooms: fan-out to 1,000 subscribers",
        "",
        "| message | publish | deliveries/s | delivery ratio | latency p50 (µs) | server CPU "
        "| server CPU per delivery (µs) | loadgen CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    variants = [
        (size, f"{name}{suffix}", label)
        for size, suffix in (("100 B", ""), ("4 KiB", "-4k"))
        for name, label in (
            ("rooms-to-room", "`server.to(room).emit`"),
            ("rooms-loop", "loop of `socket.emit`"),
        )
    ]
    for size, name, label in variants:
        row = rooms_[name]
        lines.append(
            f"| {size} | {label} | {_fmt(row['deliveries_per_s'])} | {row['delivery_ratio']['median']:.4f} | "
            f"{_us(row['p50_us'])} | {row['server_cpu_pct']['median']:.0f}% | "
            f"{_fmt(row['server_us_per_msg'], '.2f')} | {row['loadgen_cpu_pct']['median']:.0f}% |"
        )
    lines += [
        "",
        f"## Backpressure: fan-out to {bp['subscribers']} subscribers, {bp['size']:,} B, with {bp['stuck']} "
        "members that never read",
        "",
        "| policy | deliveries/s to the others | server CPU per delivery (µs) | delivery ratio | server RSS "
        "growth (MB) | slow consumers closed | messages dropped for them |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {
        "close-64k": "`max_backpressure` 64 KiB (default): close",
        "volatile-64k": "64 KiB, `server.volatile`: drop",
        "close-16m": "`max_backpressure` 16 MiB: close",
    }
    for name, label in labels.items():
        row = bp[name]
        lines.append(
            f"| {label} | {_fmt(row['deliveries_per_s'])} | {_fmt(row['server_us_per_msg'], '.2f')} | "
            f"{row['delivery_ratio']['median']:.4f} | "
            f"{_fmt(row['rss_growth_mb'], '.1f')} | {row['backpressure_closes']['median']:.0f} | "
            f"{_fmt(row['volatile_dropped'])} |"
        )
    lines += [
        "",
        "RSS growth: the server's peak RSS during the run minus its RSS before the stuck members connected. "
        "Closes and drops: `nanosocket_backpressure_closes_total` and `nanosocket_volatile_dropped_total` "
        "after the run.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.guide", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per echo run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    RAW.mkdir(parents=True, exist_ok=True)
    pinned = can_pin()
    options = RunOptions(timing=Timing(duration=args.duration, warmup=1.0), pin=pinned, raw_dir=RAW)
    doc: dict[str, Any] = {"repeats": args.repeats, "duration": args.duration, "pinned": pinned}
    doc["load_average_start"] = list(os.getloadavg())
    doc["source"] = source_state()
    doc["middleware"] = middleware(args.repeats, options)
    doc["monitoring"] = monitoring(args.repeats, options)
    doc["compression"] = compression(args.repeats, options)
    doc["batching"] = batching(args.repeats, options)
    doc["rooms"] = rooms(args.repeats, options)
    doc["backpressure"] = backpressure(args.repeats, options)
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    doc["load_average"] = list(os.getloadavg())
    doc["machine"] = machine_facts(["nanosocket", "uvloop", "orjson"])
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "guide.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    markdown = render(doc)
    (args.output / "guide.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
