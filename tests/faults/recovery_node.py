"""A recovery node in a process of its own, for the tests that kill one (SIGKILL).

``python recovery_node.py <redis url> <prefix> <port>`` serves the recovery tests' app (a fresh
socket joins "room" and "other" and gets ``data``) with a RedisAdapter and recovery on, and
prints ``ready <port>`` once it listens.
"""

from __future__ import annotations

import asyncio
import sys

from nanosocket import NanoSocket, RecoveryOptions, RedisAdapter, Socket


async def main(url: str, prefix: str, port: int) -> None:
    adapter = RedisAdapter(url, prefix=prefix, canary_interval=0.2, reconnect_delay_max=0.5)
    server = NanoSocket(
        port=port,
        host="127.0.0.1",
        adapter=adapter,
        recovery=RecoveryOptions(),
        idle_timeout=0.5,
        close_timeout=0.3,
    )

    @server.on("connection")
    def connection(socket: Socket) -> None:
        if not socket.recovered:
            socket.join(["room", "other"])
            socket.data["fresh_id"] = socket.id
            socket.data["node"] = "process"

    await server.listen()
    print(f"ready {server.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
