"""Cuts of 30 seconds, reset and blackhole, recovered exactly once and in order: on one server
(MemoryAdapter), and across two Redis nodes with the client coming back on the other one.

The four cuts run side by side (each with its servers, proxy and client) so the test lasts one
cut. Messages of every kind are sent all through the cut; the client, reconnecting over and over
into a dead line meanwhile, must get each of them once, in order, with its session back. The
sleeps make the cut last; nothing is timed.
"""

from __future__ import annotations

import asyncio

import pytest
from fault_proxy import FaultProxy
from recovery_kit import GUARD, App, Client, expected, until
from test_recovery_redis import Nodes, come_back, lose

LONG_CUT = 30.0
#: Messages are sent this often during the cut.
EVERY = 3.0


async def _cut_and_recover(how: str) -> None:
    app = App(max_disconnection=120.0)
    await app.listen()
    proxy = await FaultProxy(app.server.port).start()
    client = Client(proxy.url)
    try:
        await asyncio.wait_for(client.client.connect(), GUARD)
        await until(lambda: app.connections)
        first = app.last
        app.send_all_kinds()
        await until(lambda: len(client.got) == app.counter)

        connects, lost = len(client.connects), len(app.disconnections)
        proxy.reset() if how == "reset" else proxy.blackhole()
        await until(lambda: len(app.disconnections) > lost)
        elapsed = 0.0
        while elapsed < LONG_CUT:
            app.send_all_kinds(1)
            await asyncio.sleep(EVERY)
            elapsed += EVERY
        # The client kept trying all along: the line is dead, not the client.
        assert len(client.connects) == connects
        proxy.restore()
        await until(lambda: len(client.connects) > connects)

        assert client.connects[-1] == (first.id, True)
        assert app.last.recovered and app.last.joined_rooms == {"room", "other"}
        app.send_all_kinds()
        await until(lambda: len(client.got) >= app.counter)
        assert client.got == expected(app)
    finally:
        await client.client.disconnect()
        await proxy.close()
        await app.server.close()


async def _cut_and_recover_on_another_node(how: str) -> None:
    nodes = Nodes()
    try:
        a, b = await nodes.node(), await nodes.node()
        proxy, client = await nodes.client_of(a)
        first = a.last
        sent_by: dict[App, list[int]] = {a: [], b: []}

        def send(app: App) -> None:
            before = nodes.counter
            nodes.send(app, first.id, 1)
            sent_by[app].extend(range(before + 1, nodes.counter + 1))

        send(a)
        await nodes.delivered(client)

        connects = len(client.connects)
        await lose(a, proxy, how)
        elapsed = 0.0
        while elapsed < LONG_CUT:
            send(a)
            send(b)
            await asyncio.sleep(EVERY)
            elapsed += EVERY
        assert len(client.connects) == connects
        await come_back(proxy, client, to=b)

        assert client.connects[-1] == (first.id, True)
        assert b.last.recovered and b.last.joined_rooms == {"room", "other"}
        send(a)
        send(b)
        # Each once; the two nodes' messages interleave in the log's order, each node's in its own.
        await until(lambda: len(client.got) >= nodes.counter)
        assert sorted(client.got) == nodes.expected()
        for app in (a, b):
            assert [n for n in client.got if n in sent_by[app]] == sent_by[app]
    finally:
        await nodes.aclose()


@pytest.mark.timeout(LONG_CUT + 4 * GUARD)
async def test_cuts_of_30_seconds_reset_and_blackhole_are_recovered() -> None:
    await asyncio.gather(
        _cut_and_recover("reset"),
        _cut_and_recover("blackhole"),
        _cut_and_recover_on_another_node("reset"),
        _cut_and_recover_on_another_node("blackhole"),
    )
