"""Many connections held across worker processes on one machine (not a CI test).

A process here may hold about 20,000 open files (``ulimit -n``), so 100,000 connections need
several server processes *and* several load generator processes. This starts
``nanosocket serve benchmarks.cluster_app:server --workers W`` (RedisAdapter from
NANOSOCKET_REDIS_URL), then K load generators in ``conns`` mode, each opening its share from
source addresses 127.0.0.1..127.0.0.S (one destination port allows ~28,000 connections per source
address), holding them, and sending one ``echo`` event on each once all are open (every reply is
counted: the connections are served, not just accepted). While they are held it reads each
worker's RSS and open descriptors from /proc: the descriptors a worker gained are its
connections, and its RSS growth divided by them is its memory per connection. Then SIGTERM: the
workers close every client with 1001 and the supervisor exits.

    python -m benchmarks.cluster_connections                    # 100,000 over 8 workers, 8 loadgens
    python -m benchmarks.cluster_connections --conns 20000 --workers 2 --loadgens 2

RSS is user-space memory only: the kernel's socket buffers (both ends on this machine) are not
in it; ``MemAvailable`` before and while held is reported for the whole machine.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from benchmarks.cluster_kit import Loadgen, Workers, free_port, open_fds, redis, rss

ECHO = '{"event":"echo","data":["hi"]}'


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def conns_args(port: int, share: int, args: argparse.Namespace) -> list[str]:
    return [
        "--mode", "conns", "--port", str(port), "-c", str(share), "--hold", "900",
        "--sources", str(args.sources), "--handshakes", str(args.handshakes),
        "--connect-timeout", "300", "--close-timeout", "10", "--conns-msg", ECHO, "-q",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conns", type=int, default=100_000, help="connections in all (default 100000)")
    parser.add_argument("--workers", type=int, default=8, help="server worker processes (default 8)")
    parser.add_argument("--loadgens", type=int, default=8, help="load generator processes (default 8)")
    parser.add_argument("--sources", type=int, default=16, help="source addresses 127.0.0.1..N (default 16)")
    parser.add_argument("--handshakes", type=int, default=64, help="handshakes in flight per loadgen")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between 'all open' and reading")
    parser.add_argument(
        "--stop-while-held",
        action="store_true",
        help="SIGTERM the supervisor while the connections are held (measures the graceful shutdown:"
        " every client gets a close frame) instead of after the load generators closed them",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="the supervisor's --shutdown-timeout (default 30, nanosocket serve's own default)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    port = free_port()
    shares = [
        args.conns // args.loadgens + (1 if i < args.conns % args.loadgens else 0)
        for i in range(args.loadgens)
    ]
    with (
        redis() as url,
        Workers(
            args.workers,
            port,
            redis_url=url,
            prefix=f"cluster-conns-{port}",
            shutdown_timeout=args.shutdown_timeout,
        ) as workers,
    ):
        time.sleep(1.0)
        before = {pid: (rss(pid), open_fds(pid)) for pid in workers.pids}
        available_before = mem_available()
        started = time.monotonic()
        loadgens = [Loadgen(conns_args(port, share, args)) for share in shares]
        try:
            for loadgen in loadgens:
                if not loadgen.wait_event("ready", 900):
                    print("a load generator did not open its connections:", *loadgen.stderr[-5:], sep="\n")
                    return 1
            ramp = time.monotonic() - started
            time.sleep(args.settle)
            held = {pid: (rss(pid), open_fds(pid)) for pid in workers.pids}
            available_held = mem_available()
            if args.stop_while_held:
                stop_started = time.monotonic()
                status = workers.stop()
                stop_seconds = time.monotonic() - stop_started
        finally:
            for loadgen in loadgens:
                if loadgen.process.poll() is None:
                    loadgen.process.send_signal(signal.SIGUSR1)
        reports = [loadgen.report() for loadgen in loadgens]
        if not args.stop_while_held:
            stop_started = time.monotonic()
            status = workers.stop()
            stop_seconds = time.monotonic() - stop_started

    established = sum(int(r["connections"]["established"]) for r in reports)
    failed = sum(int(r["connections"]["failed"]) for r in reports)
    replies = sum(int(r.get("replies", 0)) for r in reports)
    closed_by_server = sum(int(r["errors"].get("closed_by_server", 0)) for r in reports)
    rows = []
    for index, pid in enumerate(workers.pids):
        conns = held[pid][1] - before[pid][1]
        grown = held[pid][0] - before[pid][0]
        rows.append(
            {
                "worker": index,
                "pid": pid,
                "connections": conns,
                "rss_before": before[pid][0],
                "rss_held": held[pid][0],
                "rss_per_conn": grown / conns if conns else 0.0,
            }
        )
    total_conns = sum(row["connections"] for row in rows)
    total_growth = sum(row["rss_held"] - row["rss_before"] for row in rows)
    result = {
        "command": "python -m benchmarks.cluster_connections " + " ".join(argv or sys.argv[1:]),
        "server": workers.command,
        "connections_requested": args.conns,
        "established": established,
        "failed": failed,
        "echo_replies": replies,
        "held_by_workers": total_conns,
        "ramp_s": ramp,
        "rss_per_conn_overall": total_growth / total_conns if total_conns else 0.0,
        "rss_total_held": sum(row["rss_held"] for row in rows),
        "mem_available_drop": available_before - available_held,
        "loadgen_cpu_pct_max": max(float(r["client_cpu_pct"]) for r in reports),
        "stopped_while_held": args.stop_while_held,
        "closed_by_server": closed_by_server,
        "shutdown_s": stop_seconds,
        "supervisor_exit": status,
        "workers": rows,
    }
    print(f"# {result['command']}")
    print(f"# server: {workers.command} (RedisAdapter from NANOSOCKET_REDIS_URL)")
    print(
        f"established {established:,} of {args.conns:,} (failed {failed}), echo replies {replies:,}, "
        f"held by the workers {total_conns:,}; opened in {ramp:.1f} s"
    )
    print("\n| worker | connections | RSS before | RSS held | RSS per connection |\n|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['worker']} | {row['connections']:,} | {row['rss_before'] / 1e6:.1f} MB | "
            f"{row['rss_held'] / 1e6:.1f} MB | {row['rss_per_conn']:,.0f} B |"
        )
    print(
        f"| all | {total_conns:,} | {sum(r['rss_before'] for r in rows) / 1e6:.1f} MB | "
        f"{result['rss_total_held'] / 1e6:.1f} MB | {result['rss_per_conn_overall']:,.0f} B |"
    )
    print(
        f"\nmachine MemAvailable dropped by {result['mem_available_drop'] / 1e6:,.0f} MB while held "
        f"(both ends, kernel buffers included)"
    )
    when = "while the connections were held" if args.stop_while_held else "after the clients closed"
    print(
        f"SIGTERM to the supervisor {when}: exit status {status} after {stop_seconds:.1f} s;"
        f" connections closed by the server (a close frame received): {closed_by_server:,}"
    )
    if status != 0:
        print("\nthe supervisor's log, last lines:", *workers.lines[-120:], sep="\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if established == args.conns and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
