"""Cuts of 30 seconds, reset and blackhole, recovered exactly once and in order.

The two kinds of cut run side by side (two servers, two proxies, two clients) so the test lasts
one cut. Messages of every kind are sent all through the cut; the client, reconnecting over and
over into a dead line meanwhile, must get each of them once, in order, with its session back.
The sleeps make the cut last; nothing is timed.
"""

from __future__ import annotations

import asyncio

import pytest
from fault_proxy import FaultProxy
from recovery_kit import GUARD, App, Client, expected, until

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


@pytest.mark.timeout(LONG_CUT + 4 * GUARD)
async def test_cuts_of_30_seconds_reset_and_blackhole_are_recovered() -> None:
    await asyncio.gather(_cut_and_recover("reset"), _cut_and_recover("blackhole"))
