"""At-least-once calls: a client with ``retries`` sends a call again when its reply is late or
lost, and the server runs the handler once per message, answering every copy with the first
run's reply (docs/api.md "At-least-once calls"). Here the first order takes longer than the
client's ``ack_timeout``, so copies of it reach the server while it runs; it is still placed once.
``python examples/at_least_once.py [--port 0]`` starts the server, runs a client and prints what
it got back.
"""

import argparse
import asyncio
from typing import Any

from nanosocket import DeliveryTimeoutError, NanoSocket, NanoSocketClient, Socket


def create_app(orders: list[str], **options: Any) -> NanoSocket:
    """A server whose ``order`` handler appends each order it places to ``orders``."""
    server = NanoSocket(**options)

    @server.socket_on("order")
    async def order(socket: Socket, item: str) -> str:
        if not orders:
            await asyncio.sleep(0.5)  # slower than the client's ack_timeout: it sends copies
        orders.append(item)
        return f"receipt {len(orders)} for {item}"

    return server


async def demo(url: str) -> list[str]:
    lines: list[str] = []
    # Each copy waits 0.2 s for its reply; up to 5 more copies; calls go one at a time, in order.
    async with NanoSocketClient(url, retries=5, ack_timeout=0.2) as client:
        for item in ("tea", "cake"):
            try:
                lines.append(await client.call("order", item))
            except DeliveryTimeoutError as error:  # no copy answered: it may or may not have run
                lines.append(f"{item}: unconfirmed after {error.copies} copies")
    return lines


async def main(port: int) -> None:
    orders: list[str] = []
    async with create_app(orders, port=port, host="127.0.0.1") as server:
        for line in await demo(f"ws://127.0.0.1:{server.port}"):
            print(line)
    print(f"orders placed: {orders}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NanoSocket at-least-once calls.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
