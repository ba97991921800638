"""The ``nanosocket`` command line.

    nanosocket echo-server --port 9001 [--max-payload-length N] [--max-fragments N]
                           [--compression off|shared|dedicated]

    nanosocket serve module:attr [--host H] [--port P] [--workers N] [--shutdown-timeout S]

    nanosocket bench [--quick] [--scenarios ...] [--servers ...]

``echo-server`` echoes every message back through the same connection code path real servers
use; it is what the Autobahn TestSuite conformance run and the engine benchmarks talk to.
``serve`` runs the NanoSocket server ``module:attr`` names (a NanoSocket, or a factory returning
one; the module is imported from the current directory like ``python -m`` would): in this process,
or with ``--workers N`` in N worker processes on one port under a supervisor (nanosocket/workers.py).

``bench`` runs the benchmark suite (``python -m benchmarks``, arguments passed on) of the source
checkout NanoSocket runs from, or of the current directory; it needs the repository's benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path

import uvloop

from . import ConfigurationError, NanoSocket, Request
from .endpoint import WebSocketServer
from .options import WebSocketOptions
from .transport import WebSocket
from .workers import load_server, run_spawned

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


async def _serve_here(server: NanoSocket, host: str | None, port: int | None) -> None:
    await server.listen(port, host)
    logging.getLogger("nanosocket.server").info("NanoSocket listening on %s:%s", server.host, server.port)
    await server.serve_forever()


def _serve(args: argparse.Namespace) -> int:
    """``nanosocket serve module:attr``: one process, or ``--workers N`` under a supervisor."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.workers == 1:
            run_loop(_serve_here(load_server(args.target), args.host, args.port))
            return 0
        return run_spawned(
            args.target,
            args.workers,
            host=args.host,
            port=args.port,
            shutdown_timeout=args.shutdown_timeout,
            log_level=args.log_level,
        )
    except ConfigurationError as exc:
        print(f"nanosocket serve: {exc}", file=sys.stderr)
        return 2


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
    serve = commands.add_parser(
        "serve",
        help="run a NanoSocket server (module:attr), optionally in worker processes",
        description="Run the NanoSocket server module:attr names (a NanoSocket instance, or a"
        " factory returning one). With --workers N > 1, N worker processes listen on one port"
        " (SO_REUSEPORT) and share rooms through the server's adapter, or a RedisAdapter on"
        " NANOSOCKET_REDIS_URL when it has none.",
    )
    serve.add_argument("target", metavar="module:attr", help="e.g. myapp.main:server or myapp:create_app")
    serve.add_argument("--host", default=None, help="address to listen on (default: the server's host)")
    serve.add_argument(
        "--port", type=int, default=None, help="port to listen on (default: the server's port)"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: 1, this process serves itself)"
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds the workers get to close their clients on SIGTERM/SIGINT before they are"
        " killed (default: %(default)s)",
    )
    serve.add_argument("--log-level", default="INFO")
    commands.add_parser("bench", help="run the benchmark suite of a source checkout (python -m benchmarks)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(levelname)s [%(process)d] %(name)s: %(message)s"
        if args.command == "serve"
        else "%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        return _serve(args)
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
