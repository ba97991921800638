"""The raw WebSocket API: ``serve()`` and ``connect()`` move plain messages, without events.

    python examples/raw_echo.py [--port 0]

starts an echo server, sends it a text and a binary message and prints the replies.
"""

import argparse
import asyncio

from nanosocket import Request, WebSocket, WebSocketServer, connect, serve


async def echo(ws: WebSocket, request: Request) -> None:
    """Send every message back as it came: str stays text, bytes stay binary."""
    while True:
        ws.send(await ws.recv())  # recv() raises ConnectionClosed once the peer is gone


async def start(port: int = 0) -> WebSocketServer:
    return await serve(echo, "127.0.0.1", port)  # port 0 picks a free port: server.port


async def demo(url: str) -> list[str | bytes]:
    ws = await connect(url)
    print("send:", ws.send("hello").name)  # SUCCESS, BACKPRESSURE or DROPPED
    ws.send(b"\x00\x01\x02")
    replies = [await ws.recv(), await ws.recv()]
    ws.close()  # 1000, the closing handshake
    await ws.wait_closed()
    return replies


async def main(port: int) -> None:
    server = await start(port)
    try:
        for reply in await demo(f"ws://127.0.0.1:{server.port}/"):
            print("reply:", repr(reply))
    finally:
        await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The raw NanoSocket WebSocket API: an echo.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
