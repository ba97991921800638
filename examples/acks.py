"""Acknowledgements both ways: a handler's return value is the reply, its exception becomes
AckError on the caller, and a reply that takes too long is AckTimeoutError.
``python examples/acks.py [--port 0]`` starts the server, runs a client and prints each outcome
(the server also logs the traceback of the handler that raised).
"""

import argparse
import asyncio
from typing import Any

from nanosocket import AckError, AckTimeoutError, NanoSocket, NanoSocketClient, Socket


def create_app(**options: Any) -> NanoSocket:
    server = NanoSocket(**options)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("add", lambda a, b: a + b)  # the return value answers the call
        socket.on("divide", lambda a, b: a / b)  # ZeroDivisionError -> AckError on the caller

        @socket.on("slow")
        async def slow(seconds: float) -> str:
            await asyncio.sleep(seconds)
            return "too late"  # the caller gave up already: this reply is ignored

        @socket.on("ask-me")  # the server calls the client back and waits for its answer
        async def ask_me(question: str) -> str:
            answer = await socket.call("question", question, timeout=5)
            return f"the client answered {answer!r}"

    return server


async def demo(url: str) -> list[str]:
    lines: list[str] = []
    client = NanoSocketClient(url)
    client.on("question", lambda question: question.upper())  # answers the server's call
    async with client:
        lines.append(f"add: {await client.call('add', 2, 3)}")
        lines.append(f"ask-me: {await client.call('ask-me', 'ping')}")
        try:
            await client.call("divide", 1, 0)
        except AckError as error:
            lines.append(f"divide: AckError {error} {error.data}")
        try:
            await client.call("slow", 1.0, timeout=0.1)
        except AckTimeoutError as error:
            lines.append(f"slow: AckTimeoutError {error}")
    return lines


async def main(port: int) -> None:
    async with create_app(port=port, host="127.0.0.1") as server:
        for line in await demo(f"ws://127.0.0.1:{server.port}"):
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NanoSocket acknowledgements.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
