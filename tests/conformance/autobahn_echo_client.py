"""An echo client for the Autobahn TestSuite's fuzzingserver, on NanoSocket's client-side engine.

    python tests/conformance/autobahn_echo_client.py ws://127.0.0.1:PORT [--agent NAME]
        [--compression off|shared|dedicated]

Asks the fuzzingserver how many cases it has (``/getCaseCount``), then for each case connects to
``/runCase?case=N&agent=NAME`` with ``nanosocket.connect`` and echoes every message back until the
suite closes the connection, then asks it to write its reports (``/updateReports?agent=NAME``).
With ``--compression`` the client offers permessage-deflate in that mode (the suite's 12.* and
13.* cases need the offer). Run by autobahn_client.py; exit status 0 once every case ran (the
verdicts are in the suite's report), 2 when the fuzzingserver could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import quote

from nanosocket import ConnectionClosed, WebSocketOptions, connect
from nanosocket.errors import HandshakeError

MiB = 1024 * 1024


def client_options(compression: str) -> WebSocketOptions:
    return WebSocketOptions(
        # The suite's limits cases: a 16 MiB message, and 4 MiB in 65 536 fragments.
        max_payload_length=16 * MiB,
        max_fragments=100_000,
        max_compressed_size=16 * MiB,
        # Echoes of big messages must not count as a slow peer.
        max_backpressure=64 * MiB,
        # The suite sends its own pings and measures the answers: no heartbeat of ours between.
        idle_timeout=None,
        compression=compression,  # type: ignore[arg-type]
    )


async def case_count(base: str, options: WebSocketOptions) -> int:
    ws = await connect(f"{base}/getCaseCount", options=options, timeout=30)
    try:
        return int(await ws.recv())
    finally:
        ws.close()
        await ws.wait_closed()


async def run_case(base: str, case: int, agent: str, options: WebSocketOptions) -> str:
    """Echo everything of one case; return how it ended (for the log)."""
    try:
        ws = await connect(f"{base}/runCase?case={case}&agent={quote(agent)}", options=options, timeout=30)
    except (HandshakeError, OSError, TimeoutError) as exc:
        return f"no connection: {exc!r}"
    ws.on_message = ws.send  # the engine's own echo path: the reply goes out in the read's write
    await ws.wait_closed()
    return f"closed {ws.close_code}"


async def update_reports(base: str, agent: str, options: WebSocketOptions) -> None:
    ws = await connect(f"{base}/updateReports?agent={quote(agent)}", options=options, timeout=60)
    try:
        while True:
            await ws.recv()
    except ConnectionClosed:
        pass
    await ws.wait_closed()


async def main_async(base: str, agent: str, compression: str, verbose: bool) -> int:
    options = client_options(compression)
    try:
        count = await case_count(base, options)
    except (HandshakeError, OSError, TimeoutError, ConnectionClosed, ValueError) as exc:
        print(f"echo client: cannot get the case count from {base}: {exc!r}", file=sys.stderr)
        return 2
    print(f"echo client: {count} cases, compression {compression}", file=sys.stderr, flush=True)
    for case in range(1, count + 1):
        outcome = await run_case(base, case, agent, options)
        if verbose:
            print(f"echo client: case {case}/{count}: {outcome}", file=sys.stderr, flush=True)
    await update_reports(base, agent, options)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", help="the fuzzingserver's ws:// URL")
    parser.add_argument("--agent", default="NanoSocket")
    parser.add_argument("--compression", choices=("off", "shared", "dedicated"), default="off")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    return asyncio.run(main_async(args.url.rstrip("/"), args.agent, args.compression, args.verbose))


if __name__ == "__main__":
    sys.exit(main())
