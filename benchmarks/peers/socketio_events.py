"""The benchmark events on python-socketio (``AsyncServer`` on aiohttp), written the documented way.

Socket.IO speaks its own protocol (Engine.IO v4 / Socket.IO v5 packets such as ``42["echo","..."]``),
which the load generator drives with ``--dialect socketio``. The events do what
``benchmarks/apps/nanosocket_events.py`` does:

- ``echo(data)`` -> ``emit("echo", data, to=sid)``;
- ``join(room)`` -> ``enter_room``, then ``emit("joined", room, to=sid)``;
- ``publish(room, payload)`` -> ``emit("message", payload, room=room)`` (the publisher is in the room);
- ``call(data)`` -> returns ``data``: the acknowledgement (``43<id>[data]``).

WebSocket transport only (no long-polling), default JSON module and heartbeat settings, aiohttp's web
server on uvloop. It runs from the peers' own venv (``benchmarks/.peers/venv``), which the suite
installs on first use.

    python benchmarks/peers/socketio_events.py --port 9006
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import signal
from typing import Any

import socketio
import uvloop
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", transports=["websocket"])


async def _maybe(result: Any) -> None:
    if inspect.isawaitable(result):  # enter_room is a coroutine in recent releases
        await result


@sio.on("echo")
async def echo(sid: str, data: Any) -> None:
    await sio.emit("echo", data, to=sid)


@sio.on("join")
async def join(sid: str, room: str) -> None:
    await _maybe(sio.enter_room(sid, room))
    await sio.emit("joined", room, to=sid)


@sio.on("publish")
async def publish(sid: str, room: str, payload: Any) -> None:
    await sio.emit("message", payload, room=room)


@sio.on("call")
async def call(sid: str, data: Any) -> Any:
    return data


async def _serve(host: str, port: int) -> None:
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    print(f"python-socketio server listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description="python-socketio event server (benchmark peer)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9006)
    args = parser.parse_args()
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
