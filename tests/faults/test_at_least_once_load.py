"""At-least-once calls under load (the scaled-down run of benchmarks/reliable_emits.py): many
clients, each making its calls one after another, through the fault proxy swallowing 1% of the
ack replies at random (seeded). Every handler commit is counted: exactly clients x calls, none
lost, none twice, each client's in its order.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from fault_proxy import AckDropper, FaultProxy

from nanosocket import NanoSocket, NanoSocketClient, Socket

CLIENTS = 50
CALLS = 100
GUARD = 120.0


async def test_every_call_commits_exactly_once_in_order_with_acks_lost() -> None:
    server = NanoSocket(port=0, host="127.0.0.1")
    commits: dict[str, list[int]] = defaultdict(list)

    @server.socket_on("order")
    def order(socket: Socket, client: str, n: int) -> int:
        commits[client].append(n)
        return n

    await server.listen()
    dropper = AckDropper(rate=0.01, seed=2024)
    proxy = await FaultProxy(server.port).start()
    proxy.drop_frames(dropper)
    clients = [
        NanoSocketClient(proxy.url, auto_connect=False, retries=20, ack_timeout=0.5) for _ in range(CLIENTS)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(client.connect() for client in clients)), GUARD)

        async def run(number: int, client: NanoSocketClient) -> list[int]:
            return [await client.call("order", f"c{number}", n) for n in range(CALLS)]

        results = await asyncio.wait_for(
            asyncio.gather(*(run(number, client) for number, client in enumerate(clients))), GUARD
        )
    finally:
        for client in clients:
            await client.disconnect()
        await proxy.close()
        await server.close()
    assert results == [list(range(CALLS))] * CLIENTS
    assert sum(len(sequence) for sequence in commits.values()) == CLIENTS * CALLS
    assert commits == {f"c{number}": list(range(CALLS)) for number in range(CLIENTS)}
    assert dropper.dropped > 0
    assert server.adapter.stats.duplicates == dropper.dropped
