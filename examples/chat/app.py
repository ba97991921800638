"""The NanoSocket chat demo: rooms, presence, typing indicators and delivery acks.

    python examples/chat/app.py [--port 3000]

Open http://127.0.0.1:3000/ in two browser tabs: each tab is a user (the page uses the browser
client the server serves at /nanosocket.js); http://127.0.0.1:3000/dashboard shows the server live.

A message gets two ticks, both from acknowledgements: "sent" (✓) is the answer to the sender's
``say`` call; "delivered" (✓✓) is a ``delivered`` event the server sends once at least one other
member's page has answered the ``message`` call the server made to it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from pathlib import Path
from typing import Any

from nanosocket import NanoSocket, Socket

PAGE = (Path(__file__).parent / "index.html").read_bytes()
MAX_TEXT = 2000
#: Seconds a member's page has to acknowledge a message.
DELIVERY_TIMEOUT = 30.0


def create_app(**options: Any) -> NanoSocket:
    """Build the chat server (tests build it on port 0)."""
    server = NanoSocket(**options)
    message_ids = itertools.count(1)
    deliveries: set[asyncio.Task[None]] = set()

    @server.route("/")
    def index(request: object) -> tuple[int, bytes, dict[str, str]]:
        return 200, PAGE, {"Content-Type": "text/html; charset=utf-8"}

    def members(room: str) -> list[str]:
        return sorted(
            str(s.data.get("name", "?")) for s in server.to(room).sockets() if isinstance(s, Socket)
        )

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.data["name"] = f"guest-{socket.id[:4]}"

        @socket.on("join")
        def join(room: str, name: str) -> dict[str, Any]:
            room, name = str(room)[:40] or "lobby", str(name)[:40] or socket.data["name"]
            for old in socket.joined_rooms:
                socket.leave(old)
                server.to(old).emit("presence", old, members(old))
            socket.data["name"] = name
            socket.join(room)
            server.to(room).emit("presence", room, members(room))
            return {"room": room, "name": name, "members": members(room)}

        @socket.on("say")
        def say(text: str) -> dict[str, Any]:
            rooms = socket.joined_rooms
            if not rooms:
                raise ValueError("join a room first")
            room = next(iter(rooms))
            mid = next(message_ids)
            message = {"from": socket.data["name"], "text": str(text)[:MAX_TEXT], "id": socket.id, "mid": mid}
            recipients = [s for s in socket.to(room).sockets() if isinstance(s, Socket)]
            if recipients:
                task = asyncio.ensure_future(deliver(socket, message, recipients))
                deliveries.add(task)
                task.add_done_callback(deliveries.discard)
            # This answer is the sender's "sent" tick.
            return {"mid": mid, "recipients": len(recipients)}

        @socket.on("typing")
        def typing(active: bool) -> None:
            for room in socket.joined_rooms:
                socket.to(room).volatile.emit("typing", socket.data["name"], bool(active))

        @socket.on("disconnecting")
        def leaving(reason: str) -> None:
            socket.data["rooms"] = socket.joined_rooms

        @socket.on("disconnect")
        def left(reason: str) -> None:
            for room in socket.data.get("rooms", ()):
                server.to(room).emit("presence", room, members(room))

    async def deliver(sender: Socket, message: dict[str, Any], recipients: list[Socket]) -> None:
        """Send ``message`` to each recipient as a call; the first answer is the ✓✓ tick."""
        calls = [
            asyncio.ensure_future(r.call("message", message, timeout=DELIVERY_TIMEOUT)) for r in recipients
        ]
        try:
            for answered in asyncio.as_completed(calls):
                try:
                    await answered
                except Exception:
                    continue  # that member left, or its page failed: another may still answer
                if sender.connected:
                    sender.emit("delivered", message["mid"])
                return
        finally:
            for call in calls:
                call.cancel()

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = create_app(port=args.port, host=args.host, dashboard=True)
    print(f"NanoSocket chat demo: open http://{args.host}:{args.port}/ in two browser tabs", flush=True)
    print(f"live dashboard: http://{args.host}:{args.port}/dashboard", flush=True)
    server.run()


if __name__ == "__main__":
    main()
