"""Rooms: ``server.to(rooms)`` reaches each member once; ``socket.to(room)`` and
``socket.broadcast`` leave the sender out. ``python examples/rooms.py [--port 0]`` starts the
server, runs three clients against it and prints what each one received.
"""

import argparse
import asyncio
import pprint
from contextlib import AsyncExitStack
from typing import Any

from nanosocket import NanoSocket, NanoSocketClient, Socket


def create_app(**options: Any) -> NanoSocket:
    server = NanoSocket(**options)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        @socket.on("join")
        def join(name: str, *rooms: str) -> list[str]:
            socket.data["name"] = name
            socket.join(rooms)  # one room or several
            return sorted(socket.joined_rooms)

        # Each handler's return value (how many sockets the message was written to) is its ack.
        socket.on("announce", lambda rooms, text: server.to(rooms).emit("news", text))
        socket.on("say", lambda room, text: socket.to(room).emit("said", socket.data["name"], text))
        socket.on("shout", lambda text: socket.broadcast.emit("shouted", text))
        socket.on("rooms", lambda: sorted(socket.joined_rooms))

    return server


def record(client: NanoSocketClient, log: list[str]) -> None:
    client.on("news", lambda text: log.append(f"news: {text}"))
    client.on("said", lambda who, text: log.append(f"{who} said: {text}"))
    client.on("shouted", lambda text: log.append(f"shouted: {text}"))


async def demo(url: str) -> dict[str, Any]:
    """alice is in red and blue, bob in red, carol in blue; each speaks once."""
    got: dict[str, list[str]] = {"alice": [], "bob": [], "carol": []}
    async with AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(NanoSocketClient(url)) for name in got}
        for name, client in clients.items():
            record(client, got[name])
        for name, rooms in (("alice", ["red", "blue"]), ("bob", ["red"]), ("carol", ["blue"])):
            await clients[name].call("join", name, *rooms)
        counts = {
            "announce": await clients["alice"].call("announce", ["red", "blue"], "hello"),  # 3, not 4
            "say": await clients["bob"].call("say", "red", "hi red"),  # 1: alice, not bob
            "shout": await clients["carol"].call("shout", "hey all"),  # 2: alice and bob
        }
        # One more round trip each: whatever was sent to a client before its reply has arrived.
        joined = {name: await client.call("rooms") for name, client in clients.items()}
    return {"counts": counts, "received": got, "rooms": joined}


async def main(port: int) -> None:
    async with create_app(port=port, host="127.0.0.1") as server:
        pprint.pp(await demo(f"ws://127.0.0.1:{server.port}"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NanoSocket rooms and broadcasts.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
