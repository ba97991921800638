"""The README's client: connects with an auth token, calls, emits, and handles events.

    python examples/client.py [ws://127.0.0.1:3000]

Start ``python examples/server.py`` first. Tests call ``main(url)`` and check what it returns.
"""

import asyncio
import sys
from typing import Any

from nanosocket import NanoSocketClient


async def main(url: str = "ws://127.0.0.1:3000") -> dict[str, Any]:
    client = NanoSocketClient(url, auth={"token": "secret"})
    # Handlers registered before the connection opens miss nothing, not even the welcome.
    client.on("welcome", lambda text: print("welcome:", text))
    client.on("echo", lambda data: print("echo:", data))
    joined: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    client.once("user-joined", joined.set_result)

    async with client:  # connects (retrying with backoff), disconnects on exit
        reply = await client.call("message", "hi", timeout=5)
        print("ack:", reply)  # {'ok': True}
        client.emit("join-room", "lobby")
        who = await asyncio.wait_for(joined, 5)
        print("user-joined:", who, "(that is us)" if who == client.id else "")
    return {"reply": reply, "joined": who}


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
