"""The README's server: a welcome, an echo answering acknowledgements, and rooms.

    python examples/server.py [--port 3000]

Then run ``python examples/client.py`` in another terminal. Tests build it with
``create_app(port=0, host="127.0.0.1")``.
"""

import argparse
from typing import Any

from nanosocket import NanoSocket, Socket


def create_app(**options: Any) -> NanoSocket:
    server = NanoSocket(**options)  # NanoSocket(port=3000) listens on 0.0.0.0:3000

    @server.on("connection")
    async def on_connection(socket: Socket) -> None:
        socket.emit("welcome", "Hello from NanoSocket!")

        @socket.on("message")
        async def on_message(data: Any) -> dict[str, bool]:
            socket.emit("echo", data)
            return {"ok": True}  # answers an acknowledgement when the sender asked for one

        @socket.on("join-room")
        def on_join(room: str) -> None:
            socket.join(room)
            server.to(room).emit("user-joined", socket.id)

    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The README's NanoSocket server.")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    create_app(port=args.port, host=args.host).run()  # or: await server.listen() in a running loop
