"""The ``nanosocket`` command line.

    nanosocket echo-server --port 9001 [--max-payload-length N] [--max-fragments N]
                           [--compression off|shared|dedicated]

    nanosocket bench [--quick] [--scenarios ...] [--servers ...]

``echo-server`` echoes every message back through the same connection code path real servers
use; it is what the Autobahn TestSuite conformance run and the engine benchmarks talk to.
``bench`` runs the benchmark suite (``python -m benchmarks``, arguments passed on) of the source
checkout NanoSocket runs from, or of the current directory; it needs the repository's benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path

import uvloop

from . import Request
from .endpoint import WebSocketServer
from .options import WebSocketOptions
from .transport import WebSocket

__all__ = ["main"]


def _echo_handler(ws: WebSocket, request: Request) -> None:
    ws.on_message = ws.send


async def _run_echo_server(host: str, port: int, options: WebSocketOptions) -> None:
    server = WebSocketServer(_echo_handler, options=options)
    await server.listen(host, port)
    print(f"nanosocket echo-server listening on ws://{host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    defaults = WebSocketOptions()
    parser.add_argument(
        "--max-payload-length",
        type=int,
        default=defaults.max_payload_length,
        help="largest message after reassembly, in bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--max-fragments",
        type=int,
        default=defaults.max_fragments,
        help="most frames one message may span (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help="seconds of silence before a connection is closed (default: %(default)s)",
    )
    parser.add_argument(
        "--compression",
        choices=("off", "shared", "dedicated"),
        default=defaults.compression,
        help="permessage-deflate: off, shared (no context takeover, no zlib state per connection)"
        " or dedicated (context takeover) (default: %(default)s)",
    )
    parser.add_argument(
        "--compression-threshold",
        type=int,
        default=defaults.compression_threshold,
        help="messages smaller than this many bytes go uncompressed (default: %(default)s)",
    )
    parser.add_argument(
        "--max-compressed-size",
        type=int,
        default=None,
        help="largest compressed message a peer may send, in bytes (default: max-payload-length)",
    )


def run_loop(coro: Coroutine[object, object, None]) -> None:
    """Run ``coro`` on uvloop."""
    uvloop.run(coro)


def _run_bench(args: Sequence[str]) -> int:
    """``nanosocket bench ARGS``: ``python -m benchmarks ARGS`` in the repository that has it."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "benchmarks" / "__main__.py").is_file():
            return subprocess.call([sys.executable, "-m", "benchmarks", *args], cwd=root)
    print(
        "nanosocket bench: the benchmark suite is not here. It lives in the benchmarks/ directory of "
        "the NanoSocket source repository (it is not part of the installed package): run it from a "
        "checkout, e.g. `make bench` or `nanosocket bench` in the repository's root.",
        file=sys.stderr,
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _run_bench(argv[1:])
    parser = argparse.ArgumentParser(prog="nanosocket", description="NanoSocket command line")
    commands = parser.add_subparsers(dest="command", required=True)
    echo = commands.add_parser("echo-server", help="a WebSocket echo server (conformance, benchmarks)")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, default=9001)
    _add_limit_options(echo)
    echo.add_argument("--log-level", default="WARNING")
    commands.add_parser("bench", help="run the benchmark suite of a source checkout (python -m benchmarks)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.command == "echo-server":
        options = WebSocketOptions(
            max_payload_length=args.max_payload_length,
            max_fragments=args.max_fragments,
            idle_timeout=args.idle_timeout,
            compression=args.compression,
            compression_threshold=args.compression_threshold,
            max_compressed_size=args.max_compressed_size or args.max_payload_length,
            # An echo server's own replies are what fills its buffers; reading pauses instead.
            max_backpressure=max(args.max_payload_length * 2, WebSocketOptions().max_backpressure),
        )
        run_loop(_run_echo_server(args.host, args.port, options))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
