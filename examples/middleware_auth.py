"""Token authentication in a middleware: accepted clients know who they are, refused ones get
ConnectError (and a ``connect_error`` event). ``python examples/middleware_auth.py [--port 0]``
starts the server, connects once with a good token and once with a bad one, and prints both.
"""

import argparse
import asyncio
from typing import Any

from nanosocket import ConnectError, NanoSocket, NanoSocketClient, Socket

USERS = {"token-alice": "alice", "token-bob": "bob"}  # a real app asks its session store


def create_app(**options: Any) -> NanoSocket:
    server = NanoSocket(**options)

    @server.use
    async def authenticate(socket: Socket) -> None:
        auth = socket.handshake.auth  # what the client passed as auth=...; {} when nothing
        user = USERS.get(str(auth.get("token"))) if isinstance(auth, dict) else None
        if user is None:  # raising refuses the connection; the client sees message and data
            raise ConnectError("invalid token", {"login": "/login"})
        socket.data["user"] = user

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("whoami", lambda: socket.data["user"])

    return server


async def demo(url: str) -> list[str]:
    lines: list[str] = []
    async with NanoSocketClient(url, auth={"token": "token-alice"}) as client:
        lines.append(f"accepted as {await client.call('whoami')}")

    refused = NanoSocketClient(url, auth={"token": "forged"})
    refused.on("connect_error", lambda error: lines.append(f"connect_error event: {error}"))
    try:
        await refused.connect()  # a refusal is final: the client does not retry it
    except ConnectError as error:
        lines.append(f"ConnectError: {error} {error.data}")
    return lines


async def main(port: int) -> None:
    async with create_app(port=port, host="127.0.0.1") as server:
        for line in await demo(f"ws://127.0.0.1:{server.port}"):
            print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="NanoSocket token-auth middleware.")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
