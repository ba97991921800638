"""The NanoSocket event protocol on ``websockets`` (its asyncio API), as a user of that library writes it.

Same events and bytes on the wire as ``benchmarks/apps/nanosocket_events.py`` (docs/protocol.md):
``echo`` answers an ``echo`` event, ``join`` joins a room (a dict of sets) and answers ``joined``,
``publish`` sends ``message`` to every member with ``websockets.broadcast`` (the publisher included),
``call`` with an ``ack`` id answers ``{"ack": id, "data": [data]}``. orjson parses and encodes;
replies are text frames (``send(bytes, text=True)``). Heartbeat pings and permessage-deflate are off,
as in the NanoSocket app; uvloop runs the loop. It runs from the peers' own venv
(``benchmarks/.peers/venv``, installed by the suite on first use).

    python benchmarks/peers/websockets_events.py --port 9005
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

loads = orjson.loads
dumps = orjson.dumps

#: Room name -> its members.
rooms: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    joined: list[str] = []
    send = ws.send
    try:
        async for message in ws:
            envelope = loads(message)
            event = envelope["event"]
            data = envelope["data"]
            if event == "echo":
                await send(dumps({"event": "echo", "data": data}), text=True)
            elif event == "call":
                await send(dumps({"ack": envelope["ack"], "data": data}), text=True)
            elif event == "publish":
                room, payload = data
                broadcast(rooms.get(room, ()), dumps({"event": "message", "data": [payload]}).decode())
            elif event == "join":
                room = data[0]
                rooms.setdefault(room, set()).add(ws)
                joined.append(room)
                await send(dumps({"event": "joined", "data": [room]}), text=True)
    except ConnectionClosed:
        pass
    finally:
        for room in joined:
            members = rooms.get(room)
            if members is not None:
                members.discard(ws)
                if not members:
                    del rooms[room]


async def _serve(host: str, port: int) -> None:
    async with serve(handler, host, port, compression=None, ping_interval=None, max_size=2**24, backlog=2048):
        print(f"websockets event server listening on ws://{host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="websockets + orjson event server (benchmark peer)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9005)
    args = parser.parse_args()
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
