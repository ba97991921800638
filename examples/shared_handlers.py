"""Handlers shared by every socket: ``@server.socket_on(event)`` registers a client event's
handler once, for all sockets, called as ``handler(socket, *args)``. Nothing is created per
connection, so this is the cheapest way to serve many clients; ``socket.on`` inside
``connection`` remains for handlers that close over one socket's own state.
``python examples/shared_handlers.py [--port 0]`` starts the server, runs a client and prints
what it got back.
"""

import argparse
import asyncio
from typing import Any

from nanosocket import AckError, NanoSocket, NanoSocketClient, Socket


def create_app(**options: Any) -> NanoSocket:
    server = NanoSocket(**options)

    @server.socket_on("echo")
    def echo(socket: Socket, text: str) -> None:
        socket.emit("echo", text)

    @server.socket_on("add")
    def add(socket: Socket, a: int, b: int) -> int:
        return a + b  # the return value answers the client's ack

    @server.socket_on("whoami")
    async def whoami(socket: Socket) -> str:
        await asyncio.sleep(0)  # async handlers work the same way
        return socket.data.get("name", "anonymous")

    @server.socket_on("rename")
    def rename(socket: Socket, name: str) -> str:
        if not name:
            raise ValueError("a name cannot be empty")  # an AckError for the caller; it stays connected
        socket.data["name"] = name
        return name

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        # A socket's own handler of an event runs after the shared ones.
        socket.on("echo", lambda text: print(f"server: echoed {text!r} to {socket.handshake.address}"))

    return server


async def demo(url: str) -> list[str]:
    lines: list[str] = []
    client = NanoSocketClient(url)
    echoed: asyncio.Queue[str] = asyncio.Queue()
    client.on("echo", echoed.put_nowait)
    async with client:
        client.emit("echo", "hello")
        lines.append(f"echo: {await echoed.get()}")
        lines.append(f"add: {await client.call('add', 2, 3)}")
        lines.append(f"whoami: {await client.call('whoami')}")
        try:
            await client.call("rename", "")
        except AckError as error:
            lines.append(f"rename: AckError {error}")
        lines.append(f"rename: {await client.call('rename', 'ada')}")
        lines.append(f"whoami: {await client.call('whoami')}")
    return lines


async def main(port: int) -> None:
    async with create_app(port=port, host="127.0.0.1") as server:
        for line in await demo(f"ws://127.0.0.1:{server.port}"):
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NanoSocket handlers shared by every socket.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
