"""At-least-once calls at scale, with acks lost on purpose (not a CI test; a scaled-down run is
tests/faults/test_at_least_once_load.py).

One server process (NanoSocket, MemoryAdapter) whose ``order`` handler commits each client's
calls and checks them as they come: each client's n-th commit must be call n (a call committed
twice, or one skipped, is counted). P client processes share the clients; each runs the fault
proxy of tests/faults/fault_proxy.py in front of the server, swallowing a share of the ack
replies at random (seeded per process), and its clients (``retries``, ``ack_timeout``) make
their calls one after another. At the end the server is asked for its counts.

    python -m benchmarks.reliable_emits                      # 2,000 clients x 500 calls, 1% lost
    python -m benchmarks.reliable_emits --clients 200 --calls 100 --processes 2

A process may hold about 20,000 open files (``ulimit -n``): a client process holds 3 per client
(its socket and the proxy's two), so 2,000 clients need at least one process per ~6,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from collections import defaultdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "faults"))

from fault_proxy import AckDropper, FaultProxy

from nanosocket import NanoSocket, NanoSocketClient, Socket

try:
    import uvloop
except ImportError:  # pragma: no cover - the plain asyncio loop then
    uvloop = None


def _run(coro: Any) -> Any:
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# ------------------------------------------------------------------------------------ server


async def _serve(pipe: Connection, window: float) -> None:
    server = NanoSocket(port=0, host="127.0.0.1", dedup_window=window, dedup_max_entries=2_000_000)
    last: dict[str, int] = defaultdict(lambda: -1)
    seen: dict[str, bytearray] = defaultdict(bytearray)
    counts = {"commits": 0, "duplicates": 0, "out_of_order": 0}
    done = asyncio.Event()

    @server.socket_on("order")
    def order(socket: Socket, client: str, n: int) -> int:
        counts["commits"] += 1
        marks = seen[client]
        if n >= len(marks):
            marks.extend(bytes(n + 1 - len(marks)))
        if marks[n]:
            counts["duplicates"] += 1  # committed a second time
        marks[n] = 1
        if n != last[client] + 1:
            counts["out_of_order"] += 1  # not the call after the previous commit
        last[client] = n
        return n

    @server.socket_on("stats")
    def stats(socket: Socket) -> dict[str, Any]:
        return {
            **counts,
            "clients": len(last),
            "dedup_duplicates": server.adapter.stats.duplicates,
            "dedup_evicted": server.adapter.stats.dedup_evicted,
            "last": sorted(set(last.values())),
        }

    @server.socket_on("stop")
    def stop(socket: Socket) -> None:
        done.set()

    await server.listen()
    pipe.send(server.port)
    await done.wait()
    await server.close()


def serve(pipe: Connection, window: float) -> None:
    _run(_serve(pipe, window))


# ------------------------------------------------------------------------------------ clients


async def _clients(port: int, first: int, count: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    dropper = AckDropper(rate=args.drop, seed=seed)
    proxy = await FaultProxy(port).start()
    proxy.drop_frames(dropper)
    clients = [
        NanoSocketClient(
            proxy.url,
            auto_connect=False,
            retries=args.retries,
            ack_timeout=args.ack_timeout,
            timeout=120.0,
            reconnection_delay=0.5,
        )
        for _ in range(count)
    ]
    failures: list[str] = []
    try:
        for start in range(0, count, 100):  # connect in waves: no storm of handshakes
            await asyncio.gather(*(client.connect() for client in clients[start : start + 100]))
        began = time.monotonic()

        async def run(number: int, client: NanoSocketClient) -> None:
            name = f"c{number}"
            for n in range(args.calls):
                try:
                    if await client.call("order", name, n) != n:
                        failures.append(f"{name}:{n}: wrong reply")
                except Exception as exc:  # reported, never hidden
                    failures.append(f"{name}:{n}: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(run(first + i, client) for i, client in enumerate(clients)))
        elapsed = time.monotonic() - began
    finally:
        for client in clients:
            await client.disconnect()
        await proxy.close()
    return {
        "calls": count * args.calls,
        "failures": failures[:20],
        "failed": len(failures),
        "acks_dropped": dropper.dropped,
        "acks_seen": dropper.seen,
        "seconds": elapsed,
    }


def clients(pipe: Connection, share: tuple[int, int, int, int], args: argparse.Namespace) -> None:
    """A client process: ``share`` is (server port, first client number, clients, seed)."""
    port, first, count, seed = share
    pipe.send(_run(_clients(port, first, count, args, seed)))


async def _ask(port: int, event: str) -> Any:
    client = NanoSocketClient(f"ws://127.0.0.1:{port}", auto_connect=False)
    await client.connect()
    try:
        if event == "stop":
            client.emit("stop")
            await asyncio.sleep(0.1)
            return None
        return await client.call(event, timeout=30.0)
    finally:
        await client.disconnect()


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=2000, help="clients in all (default 2000)")
    parser.add_argument("--calls", type=int, default=500, help="calls per client (default 500)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--drop", type=float, default=0.01, help="share of ack replies lost (default 0.01)")
    parser.add_argument("--retries", type=int, default=20, help="retries per call (default 20)")
    parser.add_argument("--ack-timeout", type=float, default=1.0, help="seconds per copy (default 1.0)")
    parser.add_argument("--window", type=float, default=300.0, help="the server's dedup_window (default 300)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    server = context.Process(target=serve, args=(there, args.window), daemon=True)
    server.start()
    port = here.recv()
    base, extra = divmod(args.clients, args.processes)
    shares = [base + (i < extra) for i in range(args.processes)]
    workers = []
    first = 0
    began = time.monotonic()
    for index, share in enumerate(shares):
        mine, theirs = context.Pipe()
        process = context.Process(target=clients, args=(theirs, (port, first, share, 1000 + index), args))
        process.start()
        workers.append((process, mine))
        first += share
    results = [pipe.recv() for _, pipe in workers]
    for process, _ in workers:
        process.join()
    wall = time.monotonic() - began
    stats = _run(_ask(port, "stats"))
    _run(_ask(port, "stop"))
    server.join(timeout=10)

    expected = args.clients * args.calls
    figures = {
        "command": "python -m benchmarks.reliable_emits "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "clients": args.clients,
        "calls_per_client": args.calls,
        "processes": args.processes,
        "expected_commits": expected,
        "commits": stats["commits"],
        "duplicates": stats["duplicates"],
        "lost": expected - (stats["commits"] - stats["duplicates"]),
        "out_of_order": stats["out_of_order"],
        "every_client_reached_its_last_call": stats["clients"] == args.clients
        and stats["last"] == [args.calls - 1],
        "calls_failed": sum(result["failed"] for result in results),
        "acks_dropped": sum(result["acks_dropped"] for result in results),
        "copies_answered_from_the_store": stats["dedup_duplicates"],
        "dedup_evicted": stats["dedup_evicted"],
        "seconds_calling": round(max(result["seconds"] for result in results), 1),
        "seconds_wall": round(wall, 1),
        "calls_per_second": round(expected / max(result["seconds"] for result in results)),
        "failures_sample": [f for result in results for f in result["failures"]][:10],
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    ok = (
        figures["commits"] == expected
        and figures["duplicates"] == 0
        and figures["lost"] == 0
        and figures["out_of_order"] == 0
        and figures["calls_failed"] == 0
        and figures["every_client_reached_its_last_call"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
