"""Connection-state recovery by nanosocket.js in Chromium (docs/protocol.md §6): a real server with
recovery, the fault proxy (tests/faults/fault_proxy.py) between it and the page, cutting the line
(reset: RST both ways; blackhole: silence until heartbeats notice). The page and its socket both
go through the proxy, as a page behind a flaky network does.

Waits are bounded by hang guards only; nothing is timed. The few sleeps make a cut outlast
``max_disconnection``: durations of faults, never assertions.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from browser_kit import HANG_GUARD, BrowserLoop, Pages
from fault_proxy import FaultProxy
from recovery_kit import App as RecoveryApp
from recovery_kit import until
from scripted_server import connect_answer, harness_page, scripted_server
from test_browser_scenarios import serve_harness

from nanosocket import Adapter, RedisAdapter, WebSocket

#: A guard against hangs, never a measurement: shorter than the test's own, to say what hung.
GUARD = 10.0
WAIT = {"timeout": GUARD * 1000}
# The server notices a silent line after about 1 s (idle_timeout, then close_timeout).
SERVER_HEARTBEAT: dict[str, Any] = {"idle_timeout": 0.5, "close_timeout": 0.3}
# The page's client: quick retries, a short attempt timeout (an attempt into a blackhole is
# abandoned) and a heartbeat that notices a silent line after about 0.8 s.
CLIENT = {
    "reconnectionDelay": 50,
    "reconnectionDelayMax": 200,
    "randomizationFactor": 0,
    "timeout": 1500,
    "heartbeatInterval": 400,
}
RECORDER = """([url, options]) => {
    const client = new window.harness.ns.NanoSocketClient(url, options);
    window.rec = { got: [], connects: [], reasons: [] };
    client.on("msg", (n) => window.rec.got.push(n));
    client.on("connect", () => window.rec.connects.push([client.id, client.recovered]));
    client.on("disconnect", (reason) => window.rec.reasons.push(reason));
    window.client = client;
}"""


class App(RecoveryApp):
    """The recovery tests' app (tests/faults/recovery_kit.py), also serving the harness page."""

    def __init__(self, adapter: Adapter | None = None, **recovery: Any) -> None:
        super().__init__(adapter=adapter, heartbeat=SERVER_HEARTBEAT, **recovery)
        serve_harness(self.server)


class Stack:
    """The app, the proxy in front of it, and one page whose client connects through the proxy."""

    def __init__(self, app: App, proxy: FaultProxy, page: Any) -> None:
        self.app = app
        self.proxy = proxy
        self.page = page

    async def rec(self, what: str) -> Any:
        return await self.page.evaluate(f"window.rec.{what}")

    async def wait(self, expression: str, arg: Any = None) -> None:
        await self.page.wait_for_function(expression, arg=arg, **WAIT)

    async def connects(self) -> list[tuple[str, bool]]:
        return [(sid, recovered) for sid, recovered in await self.rec("connects")]

    async def reconnected(self, before: int) -> tuple[str, bool]:
        await self.wait("n => window.rec.connects.length > n", before)
        return (await self.connects())[-1]

    async def all_received(self) -> list[int]:
        """Send one more message of each kind (live) and return what the page got once it is
        there: in order delivery puts every replayed message before it."""
        self.app.send_all_kinds(1)
        await self.wait("n => window.rec.got.includes(n)", self.app.counter)
        got: list[int] = await self.rec("got")
        return got

    def expected(self) -> list[int]:
        return list(range(1, self.app.counter + 1))

    async def cut(self, how: str) -> tuple[str, bool]:
        """Cut the line, send messages meanwhile, let the client back; its next connect."""
        before = len(await self.rec("connects"))
        lost = len(self.app.disconnections)
        reasons = len(await self.rec("reasons"))
        if how == "reset":
            self.proxy.reset()
        else:
            self.proxy.blackhole()
            self.app.send_all_kinds()  # written to a connection the server still holds: lost in the hole
            # Heartbeats notice the silence on both ends.
            await self.wait("n => window.rec.reasons.length > n", reasons)
        await until(lambda: len(self.app.disconnections) > lost)
        self.app.send_all_kinds()
        self.proxy.restore()
        return await self.reconnected(before)


@asynccontextmanager
async def stack(pages: Pages, **recovery: Any) -> AsyncIterator[Stack]:
    app = App(**recovery)
    await app.server.listen()
    proxy = await FaultProxy(app.server.port).start()
    try:
        page = await pages.open(f"http://127.0.0.1:{proxy.port}/", "window.harnessReady === true")
        await page.evaluate(RECORDER, ["/", CLIENT])
        await page.wait_for_function("window.rec.connects.length === 1", **WAIT)
        await until(lambda: app.connections)
        try:
            yield Stack(app, proxy, page)
        finally:
            await page.evaluate("() => window.client.disconnect()")
    finally:
        await proxy.close()
        await app.server.close()


def test_a_reset_cut_is_recovered_exactly_once_in_order(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with stack(pages) as s:
            first = s.app.last
            s.app.send_all_kinds()
            await s.wait("n => window.rec.got.length === n", s.app.counter)
            assert await s.cut("reset") == (first.id, True)
            assert await s.page.evaluate("[window.client.id, window.client.recovered]") == [first.id, True]
            assert s.app.last.recovered and s.app.last.id == first.id
            assert s.app.last.joined_rooms == {"room", "other"}
            assert s.app.last.data == {"fresh_id": first.id}
            assert await s.all_received() == s.expected()
            assert await s.rec("reasons") == ["transport close"]

    chromium.run(body())


def test_nothing_sent_since_the_disconnect(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with stack(pages) as s:
            first_id = s.app.last.id
            s.proxy.reset()
            await until(lambda: s.app.disconnections)
            s.proxy.restore()
            assert await s.reconnected(1) == (first_id, True)
            assert await s.all_received() == s.expected()

    chromium.run(body())


def test_five_cuts_in_a_row(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with stack(pages) as s:
            first_id = s.app.last.id
            for how in ("reset", "blackhole", "reset", "reset", "blackhole"):
                assert await s.cut(how) == (first_id, True)
            assert await s.all_received() == s.expected()
            assert [recovered for _, recovered in await s.connects()] == [False] + [True] * 5

    chromium.run(body(), timeout=HANG_GUARD * 2)


def test_a_blackhole_is_noticed_by_heartbeats_then_recovered(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with stack(pages) as s:
            first = s.app.last
            assert await s.cut("blackhole") == (first.id, True)
            assert (await s.rec("reasons"))[0] == "ping timeout"
            assert s.app.last.joined_rooms == {"room", "other"}
            assert await s.all_received() == s.expected()

    chromium.run(body())


def test_a_cut_longer_than_max_disconnection_starts_afresh(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with stack(pages, max_disconnection=0.3) as s:
            first_id = s.app.last.id
            s.proxy.reset()
            await until(lambda: s.app.disconnections)
            s.app.send_all_kinds(1)
            await asyncio.sleep(0.6)  # outlast max_disconnection
            s.proxy.restore()
            new_id, recovered = await s.reconnected(1)
            assert not recovered and new_id != first_id
            assert await s.page.evaluate("window.client.recovered") is False
            assert not s.app.last.recovered and s.app.last.data == {"fresh_id": new_id}
            # Positions count from the new session: what follows arrives, nothing of the gap.
            before = s.app.counter
            got = await s.all_received()
            assert got == list(range(before + 1, s.app.counter + 1))

    chromium.run(body())


def test_a_deliberate_disconnect_forgets_the_session(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with stack(pages) as s:
            first_id = s.app.last.id
            await s.page.evaluate("() => window.client.disconnect()")
            await until(lambda: s.app.disconnections)
            await s.page.evaluate("() => window.client.connect()")
            new_id, recovered = (await s.connects())[-1]
            assert not recovered and new_id != first_id

    chromium.run(body())


def test_a_cut_is_recovered_on_another_redis_node(chromium: BrowserLoop, pages: Pages) -> None:
    # Two nodes sharing a Redis (the one at 127.0.0.1:6379, keys under a prefix of this test):
    # the page comes back through the proxy to the other node and recovers there.
    async def body() -> None:
        url = "redis://127.0.0.1:6379/0"
        prefix = f"test-{uuid.uuid4().hex[:12]}"
        a = App(adapter=RedisAdapter(url, prefix=prefix, canary_interval=0.2))
        b = App(adapter=RedisAdapter(url, prefix=prefix, canary_interval=0.2))
        await a.server.listen()
        await b.server.listen()
        proxy = await FaultProxy(a.server.port).start()
        redis = aioredis.Redis.from_url(url)
        try:
            page = await pages.open(f"http://127.0.0.1:{proxy.port}/", "window.harnessReady === true")
            await page.evaluate(RECORDER, ["/", CLIENT])
            await page.wait_for_function("window.rec.connects.length === 1", **WAIT)
            await until(lambda: a.connections)
            first = a.last
            a.send_all_kinds()
            await page.wait_for_function("n => window.rec.got.length === n", arg=a.counter, **WAIT)
            proxy.reset()
            await until(lambda: a.disconnections)
            a.send_all_kinds()  # the old socket object's emits go through the log too
            proxy.redirect(b.server.port)
            proxy.restore()
            await page.wait_for_function("window.rec.connects.length === 2", **WAIT)
            assert await page.evaluate("window.rec.connects[1]") == [first.id, True]
            assert b.last.recovered and b.last.joined_rooms == {"room", "other"}
            assert b.last.data == {"fresh_id": first.id}
            a.send_all_kinds(1)
            await page.wait_for_function("n => window.rec.got.includes(n)", arg=a.counter, **WAIT)
            assert await page.evaluate("window.rec.got") == list(range(1, a.counter + 1))
            await page.evaluate("() => window.client.disconnect()")
        finally:
            await proxy.close()
            await a.server.close()
            await b.server.close()
            keys = [key async for key in redis.scan_iter(match=f"{prefix}#*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()

    chromium.run(body())


# ------------------------------------------------------------------- the wire, exactly


def test_the_client_speaks_section_6_exactly(chromium: BrowserLoop, pages: Pages) -> None:
    """The answer's pid, epoch and offset come back in the next $connect with the offset of the
    last message handled; a repeated or older offset is ignored; a message without one is handled."""

    def script(ws: WebSocket, frame: Any, number: int) -> None:
        if not (isinstance(frame, dict) and frame.get("event") == "$connect"):
            return
        if number == 0:
            answer = connect_answer(id="s1", pid="pid-1", epoch="e1", offset=40, recovered=False)
            msgs = [{"event": "msg", "data": [n], "o": o} for n, o in ((1, 41), (-1, 41), (-1, 40), (2, 43))]
            ws.send(f"[{answer},{json.dumps(msgs)[1:-1]}]")
            ws.send(json.dumps({"event": "msg", "data": [3]}))  # no offset: not a logged message
            ws.send(json.dumps({"event": "msg", "data": [-1], "o": 42}))
            ws.send(json.dumps({"event": "msg", "data": [4], "o": 44}))
            ws.send(json.dumps({"event": "close"}))
        elif number == 1:
            ws.send(connect_answer(id="s1", pid="pid-2", epoch="e1", offset=50, recovered=True))
            ws.send(json.dumps([{"event": "msg", "data": [n], "o": o} for n, o in ((-1, 44), (5, 45))]))
            ws.send(json.dumps({"event": "close"}))
        else:
            ws.send(connect_answer(id="s2", pid="pid-3", epoch="e2", offset=7, recovered=False))
            ws.send(json.dumps({"event": "msg", "data": [6], "o": 8}))

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as raw:
            await page.evaluate(RECORDER, [f"ws://127.0.0.1:{raw.port}/", {**CLIENT, "auth": {"token": "t"}}])
            # The server's "close" event: the page drops this connection, as a cut would.
            await page.evaluate("() => window.client.on('close', () => window.client._link.end(1006, 'cut'))")
            await page.wait_for_function("window.rec.got.includes(6)", **WAIT)
            assert await page.evaluate("window.rec.got") == [1, 2, 3, 4, 5, 6]
            assert await page.evaluate("window.rec.connects") == [["s1", False], ["s1", True], ["s2", False]]
            assert [envelope["data"] for envelope in raw.events("$connect")] == [
                [{"token": "t"}],
                [{"token": "t"}, {"pid": "pid-1", "epoch": "e1", "offset": 44}],
                # Recovered: the offset is that of the last message handled, not the answer's.
                [{"token": "t"}, {"pid": "pid-2", "epoch": "e1", "offset": 45}],
            ]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())
