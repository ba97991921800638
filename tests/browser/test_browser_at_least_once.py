"""At-least-once calls of nanosocket.js in Chromium (option ``retries``; docs/protocol.md §7).

The wire, against a scripted peer (scripted_server.py): every call carries a message id (``mid``:
a 96-bit random prefix per client, "-", a counter), each copy repeats the same envelope, calls go
one at a time in order, a copy follows each ack timeout (counted) and each loss (not counted), and
they stop when the retries are spent, when the server announced no de-duplication window, or
outside that window (DeliveryTimeoutError). Then against the server, through the fault proxy.

Waits are bounded by hang guards only; nothing is timed (the short ack timeouts only make the
copies come soon).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from browser_kit import BrowserLoop, Pages
from fault_proxy import AckDropper, FaultProxy
from scripted_server import connect_answer, harness_page, scripted_server
from test_browser_scenarios import serve_harness

from nanosocket import NanoSocket, RecoveryOptions, Socket, WebSocket

GUARD = 10.0
WAIT = {"timeout": GUARD * 1000}
QUICK = {"reconnectionDelay": 50, "reconnectionDelayMax": 200, "randomizationFactor": 0}
FULL = "'order' dropped unsent: pushed out of the full offline queue (maxQueueSize)"
MID = re.compile(r"^([A-Za-z0-9_-]{16})-([0-9]+)$")
CALLER = """([url, options]) => {
    const client = new window.harness.ns.NanoSocketClient(url, options);
    window.client = client;
    window.results = {};
    window.errors = {};
    window.told = [];
    client.on("error", (error) => window.told.push(`${error.name}: ${error.message}`));
    // Place a call; its outcome lands in window.results[key] (place itself returns nothing).
    window.place = (key, ...args) => {
        client.call("order", ...args).then(
            (value) => { window.results[key] = { value }; },
            (error) => {
                window.results[key] = { error: error.name, message: error.message };
                const timeout = error instanceof window.harness.ns.AckTimeoutError;
                window.errors[key] = { mid: error.mid, copies: error.copies, why: error.why, timeout };
            });
    };
}"""


def envelopes(frame: Any) -> list[Any]:
    return frame if isinstance(frame, list) else [frame]


def reply(ws: WebSocket, envelope: dict[str, Any], value: Any) -> None:
    ws.send(json.dumps({"ack": envelope["ack"], "data": [value]}))


def test_an_unacknowledged_call_is_sent_again_unchanged(chromium: BrowserLoop, pages: Pages) -> None:
    copies: list[dict[str, Any]] = []

    def script(ws: WebSocket, frame: Any, number: int) -> None:
        for envelope in envelopes(frame):
            if envelope.get("event") == "$connect":
                ws.send(connect_answer(id="s", dedup_window=60))
            elif envelope.get("event") == "order":
                copies.append(envelope)
                if len(copies) == 3:  # the first two get no answer: lost, as far as the client knows
                    reply(ws, envelope, {"total": envelope["data"][0] * 2})

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as scripted:
            url = f"ws://127.0.0.1:{scripted.port}/"
            await page.evaluate(CALLER, [url, {**QUICK, "retries": 2, "ackTimeout": 200}])
            await page.evaluate("() => window.place('a', 21)")
            await page.wait_for_function("'a' in window.results", **WAIT)
            assert await page.evaluate("window.results") == {"a": {"value": {"total": 42}}}
            assert len(copies) == 3 and copies[0] == copies[1] == copies[2]
            assert set(copies[0]) == {"event", "data", "ack", "mid"}
            match = MID.match(copies[0]["mid"])
            assert match is not None and match.group(2) == "1"
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_spent_retries_reject_the_call(chromium: BrowserLoop, pages: Pages) -> None:
    def script(ws: WebSocket, frame: Any, number: int) -> None:
        if envelopes(frame)[0].get("event") == "$connect":
            ws.send(connect_answer(id="s", dedup_window=60))  # and never an ack

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as scripted:
            url = f"ws://127.0.0.1:{scripted.port}/"
            await page.evaluate(CALLER, [url, {**QUICK, "retries": 1, "ackTimeout": 150}])
            await page.evaluate("() => window.place('a', 1)")
            await page.wait_for_function("'a' in window.results", **WAIT)
            result = (await page.evaluate("window.results"))["a"]
            mid = scripted.events("order")[0]["mid"]
            assert result == {
                "error": "DeliveryTimeoutError",
                "message": f"'order' unconfirmed: no reply to 2 copies within 150 ms each (message id {mid})",
            }
            assert await page.evaluate("window.errors.a") == {
                "mid": mid,
                "copies": 2,
                "why": None,
                "timeout": True,
            }  # no why
            assert len(scripted.events("order")) == 2
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_no_copy_to_a_server_without_a_deduplication_window(chromium: BrowserLoop, pages: Pages) -> None:
    def script(ws: WebSocket, frame: Any, number: int) -> None:
        if envelopes(frame)[0].get("event") == "$connect":
            ws.send(connect_answer(id="s"))  # an older server: it would run a copy again

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as scripted:
            url = f"ws://127.0.0.1:{scripted.port}/"
            await page.evaluate(CALLER, [url, {**QUICK, "retries": 3, "ackTimeout": 150}])
            await page.evaluate("() => window.place('a', 1)")
            await page.wait_for_function("'a' in window.results", **WAIT)
            result = (await page.evaluate("window.results"))["a"]
            assert result["error"] == "DeliveryTimeoutError"
            assert "unconfirmed: the server keeps no message ids" in result["message"]
            assert len(scripted.events("order")) == 1
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_calls_go_one_at_a_time_and_a_loss_sends_the_current_one_again(
    chromium: BrowserLoop, pages: Pages
) -> None:
    """Connection 0 answers the first call, then drops when the second arrives: the second goes
    again right after the next $connect, then the third (made before the loss, waiting behind
    the second), then the fourth (made while offline), each once the previous one is answered."""
    answered: list[int] = []
    arrived: list[tuple[int, list[int]]] = []  # each call, and the calls answered before it came

    def script(ws: WebSocket, frame: Any, number: int) -> None:
        for envelope in envelopes(frame):
            event = envelope.get("event")
            if event == "order":
                arrived.append((envelope["data"][0], list(answered)))
            if event == "$connect":
                ws.send(connect_answer(id=f"s{number}", dedup_window=60))
            elif event == "order" and (number > 0 or envelope["data"] == [1]):
                answered.append(envelope["data"][0])
                reply(ws, envelope, envelope["data"][0] * 10)
            elif event == "order":
                ws.abort()

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as scripted:
            url = f"ws://127.0.0.1:{scripted.port}/"
            await page.evaluate(CALLER, [url, {**QUICK, "retries": 2, "ackTimeout": 5000}])
            await page.evaluate("() => window.client.connect()")
            await page.evaluate("() => window.client.once('disconnect', () => window.place('d', 4))")
            placed = "() => { ['a', 'b', 'c'].forEach((k, i) => place(k, i + 1)); return client.queued; }"
            assert await page.evaluate(placed) == 2  # b and c wait behind a
            await page.wait_for_function("Object.keys(window.results).length === 4", **WAIT)
            assert await page.evaluate("window.results") == {
                "a": {"value": 10},
                "b": {"value": 20},
                "c": {"value": 30},
                "d": {"value": 40},
            }
            assert answered == [1, 2, 3, 4]
            # One at a time: each call (and the copy of 2) came once the one before was answered.
            assert arrived == [(1, []), (2, [1]), (2, [1]), (3, [1, 2]), (4, [1, 2, 3])]
            sent = {
                n: [item for m, frame in scripted.frames for item in envelopes(frame) if m == n]
                for n in (0, 1)
            }
            first = [item for item in sent[0] if item.get("event") == "order"]
            second = [item for item in sent[1] if item.get("event") == "order"]
            assert [item["data"] for item in first] == [[1], [2]]
            assert [item["data"] for item in second] == [[2], [3], [4]]
            assert second[0] == first[1]  # the copy: the same envelope, mid and ack id
            mids = [item["mid"] for item in [*first, *second[1:]]]
            assert [MID.match(mid).group(2) for mid in mids] == ["1", "2", "3", "4"]  # type: ignore[union-attr]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_message_ids_are_unique_per_client_and_between_clients(chromium: BrowserLoop, pages: Pages) -> None:
    def script(ws: WebSocket, frame: Any, number: int) -> None:
        for envelope in envelopes(frame):
            if envelope.get("event") == "$connect":
                ws.send(connect_answer(id=f"s{number}", dedup_window=60))
            elif envelope.get("event") == "order":
                reply(ws, envelope, None)

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as scripted:
            mids = await page.evaluate(
                """async (url) => {
                    const { NanoSocketClient } = window.harness.ns;
                    const options = { retries: 1, ackTimeout: 5000 };
                    const clients = [0, 1].map(() => new NanoSocketClient(url, options));
                    for (const client of clients) for (let n = 0; n < 3; n++) await client.call("order", n);
                    await Promise.all(clients.map((client) => client.disconnect()));
                }""",
                f"ws://127.0.0.1:{scripted.port}/",
            )
            assert mids is None
            ids = [MID.match(item["mid"]) for item in scripted.events("order")]
            assert all(ids)
            prefixes = [match.group(1) for match in ids if match]
            assert len(set(prefixes)) == 2 and prefixes[0] == prefixes[1] == prefixes[2]
            assert [match.group(2) for match in ids if match] == ["1", "2", "3"] * 2
            # Without retries a call carries no mid (at most once, as before).
            plain = await page.evaluate(
                """async (url) => {
                    const client = new window.harness.ns.NanoSocketClient(url);
                    await client.call("order", 9);
                    await client.disconnect();
                }""",
                f"ws://127.0.0.1:{scripted.port}/",
            )
            assert plain is None and "mid" not in scripted.events("order")[-1]

    chromium.run(body())


def test_retries_must_be_a_count(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with harness_page(pages) as page:
            for bad in (-1, 1.5, "3", None):
                message = await page.evaluate(
                    """(retries) => {
                        try { new window.harness.ns.NanoSocketClient("/", { retries, autoConnect: false }); }
                        catch (error) { return `${error.name}: ${error.message}`; }
                    }""",
                    bad,
                )
                assert message.startswith("ConfigurationError: retries must be an integer >= 0"), message

    chromium.run(body())


# ------------------------------------------------ against the server, through the fault proxy


class OrderApp:
    """A server whose ``order`` handler records each run, and emits ``news`` with its number to
    the caller's socket; ``on_run(n)`` may cut the line."""

    def __init__(
        self,
        on_run: Callable[[int], Awaitable[None] | None] = lambda n: None,
        recovery: RecoveryOptions | None = None,
    ) -> None:
        self.server = NanoSocket(
            port=0, host="127.0.0.1", idle_timeout=0.5, close_timeout=0.3, recovery=recovery
        )
        serve_harness(self.server)
        self.runs: list[int] = []

        @self.server.on("connection")
        def connection(socket: Socket) -> None:
            async def order(n: int) -> int:
                self.runs.append(n)
                waited = on_run(n)
                if waited is not None:
                    await waited
                socket.emit("news", n)
                return n * 10

            socket.on("order", order)


@asynccontextmanager
async def through_proxy(
    pages: Pages, app: OrderApp, options: dict[str, Any]
) -> AsyncIterator[tuple[Any, FaultProxy]]:
    """The app behind the fault proxy, and a page (loaded through it) with a connected caller."""
    async with app.server:
        proxy = await FaultProxy(app.server.port).start()
        try:
            page = await pages.open(f"http://127.0.0.1:{proxy.port}/", "window.harnessReady === true")
            await page.evaluate(
                CALLER, ["/", {**QUICK, "timeout": 1500, "heartbeatInterval": 400, **options}]
            )
            await page.evaluate("() => window.client.connect()")
            try:
                yield page, proxy
            finally:
                await page.evaluate("() => window.client.disconnect()")
        finally:
            await proxy.close()


def place_all(count: int) -> str:
    return f"() => {{ for (let n = 1; n <= {count}; n++) window.place(n, n); }}"


async def all_results(page: Any, count: int) -> dict[str, Any]:
    await page.wait_for_function("n => Object.keys(window.results).length === n", arg=count, **WAIT)
    results: dict[str, Any] = await page.evaluate("window.results")
    return results


def test_a_reply_lost_in_a_cut_is_not_a_second_run(chromium: BrowserLoop, pages: Pages) -> None:
    """The third call's handler runs, then the line is cut before its reply gets through: after
    the reconnection its copy is answered with the kept reply; the handler ran once."""
    proxy: FaultProxy | None = None

    def on_run(n: int) -> None:
        if n == 3 and app.runs.count(3) == 1:
            assert proxy is not None
            proxy.reset()  # the reply of this run is written to a dead line
            asyncio.get_running_loop().call_later(0.2, proxy.restore)

    app = OrderApp(on_run)

    async def body() -> None:
        nonlocal proxy
        async with through_proxy(pages, app, {"retries": 3, "ackTimeout": 5000}) as (page, proxy):
            await page.evaluate(place_all(6))
            results = await all_results(page, 6)
            assert results == {str(n): {"value": n * 10} for n in range(1, 7)}
            assert app.runs == [1, 2, 3, 4, 5, 6]
            assert await page.evaluate("window.client.reconnectAttempt") == 0
            assert proxy.accepted >= 2  # it did reconnect

    chromium.run(body())


def test_a_call_lost_in_a_blackhole_goes_again_after_heartbeats(chromium: BrowserLoop, pages: Pages) -> None:
    """The second call goes into a silent line: the page's heartbeat notices, and after the
    reconnection the copy is handled, once, then the rest in order."""

    async def body() -> None:
        app = OrderApp()
        async with through_proxy(pages, app, {"retries": 3, "ackTimeout": 5000}) as (page, proxy):
            await page.evaluate("() => window.place(1, 1)")
            await page.wait_for_function("'1' in window.results", **WAIT)
            proxy.blackhole()
            await page.evaluate("() => { for (const n of [2, 3, 4]) window.place(n, n); }")
            await page.evaluate("() => new Promise((resolve) => window.client.once('disconnect', resolve))")
            proxy.restore()
            results = await all_results(page, 4)
            assert results == {str(n): {"value": n * 10} for n in range(1, 5)}
            assert app.runs == [1, 2, 3, 4]

    chromium.run(body())


def test_calls_and_messages_across_cuts_in_a_row_with_recovery(chromium: BrowserLoop, pages: Pages) -> None:
    """Recovery on, 30 calls placed at once, the line cut (reset) while the 6th, the 16th and the
    26th handlers run, each handler emitting a message to its socket: every call commits once, in
    order; every message arrives once, in order; the session (id) is recovered each time."""
    proxy: FaultProxy | None = None

    def on_run(n: int) -> None:
        if n in (6, 16, 26) and app.runs.count(n) == 1:
            assert proxy is not None
            proxy.reset()  # this run's message and reply go to a dead line
            asyncio.get_running_loop().call_later(0.2, proxy.restore)

    app = OrderApp(on_run, RecoveryOptions())

    async def body() -> None:
        nonlocal proxy
        async with through_proxy(pages, app, {"retries": 3, "ackTimeout": 5000}) as (page, proxy):
            first_id = await page.evaluate(
                """() => {
                    window.news = [];
                    window.connects = [];
                    window.client.on("news", (n) => window.news.push(n));
                    window.client.on("connect", () => window.connects.push([client.id, client.recovered]));
                    return window.client.id;
                }"""
            )
            await page.evaluate(place_all(30))
            results = await all_results(page, 30)
            assert results == {str(n): {"value": n * 10} for n in range(1, 31)}
            assert app.runs == list(range(1, 31))
            await page.wait_for_function("window.news.includes(30)", **WAIT)
            assert await page.evaluate("window.news") == list(range(1, 31))
            assert await page.evaluate("window.connects") == [[first_id, True]] * 3

    chromium.run(body())


def test_copies_of_a_slow_call_do_not_run_it_again(chromium: BrowserLoop, pages: Pages) -> None:
    """The handler outlasts several ack timeouts: every copy finds the first run in progress and
    is answered by it."""
    release = asyncio.Event()

    def on_run(n: int) -> Awaitable[None] | None:
        return release.wait() if n == 1 else None

    async def body() -> None:
        app = OrderApp(on_run)
        async with through_proxy(pages, app, {"retries": 5, "ackTimeout": 100}) as (page, _):
            await page.evaluate(place_all(2))
            await asyncio.sleep(0.35)  # a few ack timeouts: copies of the first call go out
            release.set()
            results = await all_results(page, 2)
            assert results == {"1": {"value": 10}, "2": {"value": 20}}
            assert app.runs == [1, 2]

    chromium.run(body())


def test_calls_waiting_their_turn_are_bounded_by_max_queue_size(chromium: BrowserLoop, pages: Pages) -> None:
    """Offline, every call of the line waits (none was sent yet): over maxQueueSize the oldest
    waiting goes first, rejecting with MessageDropped."""

    def script(ws: WebSocket, frame: Any, number: int) -> None:
        for envelope in envelopes(frame):
            if envelope.get("event") == "$connect":
                ws.send(connect_answer(id="s", dedup_window=60))
            elif envelope.get("event") == "order":
                reply(ws, envelope, envelope["data"][0] * 10)

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as peer:
            url = f"ws://127.0.0.1:{peer.port}/"
            options = {**QUICK, "retries": 1, "ackTimeout": 5000, "maxQueueSize": 2, "autoConnect": False}
            await page.evaluate(CALLER, [url, options])
            placed = (
                "() => { for (const n of [1, 2, 3, 4]) place(n, n); return [client.queued, client.pending]; }"
            )
            assert await page.evaluate(placed) == [2, 2]
            await page.evaluate("() => window.client.connect()")
            await page.wait_for_function("Object.keys(window.results).length === 4", **WAIT)
            dropped = {"error": "MessageDropped", "message": f"connection closed: 1006 {FULL}"}
            assert await page.evaluate("window.results") == {
                "1": dropped,
                "2": dropped,
                "3": {"value": 30},
                "4": {"value": 40},
            }
            assert (await page.evaluate("window.errors"))["1"]["why"] == "queue_full"
            assert [envelope["data"] for envelope in peer.events("order")] == [[3], [4]]
            assert await page.evaluate("[window.client.dropped, window.client.pending]") == [2, 0]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_copies_after_losses_do_not_count_as_retries(chromium: BrowserLoop, pages: Pages) -> None:
    """Three connections in a row drop the call unanswered; with retries: 1 it still gets through
    on the fourth: a copy cut short by a loss is sent again without counting."""

    def script(ws: WebSocket, frame: Any, number: int) -> None:
        for envelope in envelopes(frame):
            if envelope.get("event") == "$connect":
                ws.send(connect_answer(id=f"s{number}", dedup_window=60))
            elif envelope.get("event") == "order" and number < 3:
                ws.abort()
            elif envelope.get("event") == "order":
                reply(ws, envelope, "at last")

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as peer:
            url = f"ws://127.0.0.1:{peer.port}/"
            await page.evaluate(CALLER, [url, {**QUICK, "retries": 1, "ackTimeout": 5000}])
            await page.evaluate("() => window.place('a', 1)")
            await page.wait_for_function("'a' in window.results", **WAIT)
            assert await page.evaluate("window.results.a") == {"value": "at last"}
            copies = peer.events("order")
            assert len(copies) == 4 and all(copy == copies[0] for copy in copies)
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_no_copy_after_the_deduplication_window(chromium: BrowserLoop, pages: Pages) -> None:
    """A copy would be sent later than dedup_window - ackTimeout after the first: the call is
    given up as unconfirmed rather than risk a second run."""

    def script(ws: WebSocket, frame: Any, number: int) -> None:
        if envelopes(frame)[0].get("event") == "$connect":
            ws.send(connect_answer(id="s", dedup_window=0.25))  # and never an ack

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as peer:
            url = f"ws://127.0.0.1:{peer.port}/"
            await page.evaluate(CALLER, [url, {**QUICK, "retries": 5, "ackTimeout": 200}])
            await page.evaluate("() => window.place('a', 1)")
            await page.wait_for_function("'a' in window.results", **WAIT)
            result = await page.evaluate("window.results.a")
            assert result["error"] == "DeliveryTimeoutError"
            assert "another copy would reach the server after its de-duplication window" in result["message"]
            assert len(peer.events("order")) == 1
            # The span of the retries (6 copies x 200 ms) was told once, at the connection.
            assert await page.evaluate("window.told") == [
                "ConfigurationError: retries=5 with ackTimeout=200 span 1200 ms, not less than the server's"
                " de-duplication window (250 ms): copies that would arrive after it are not sent"
                " (DeliveryTimeoutError instead)"
            ]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_retries_need_a_timeout(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with harness_page(pages) as page:
            outcome = await page.evaluate(
                """async () => {
                    const { NanoSocketClient } = window.harness.ns;
                    let refused;
                    const shown = (error) => `${error.name}: ${error.message}`;
                    try { new NanoSocketClient("/", { retries: 2, autoConnect: false }); }
                    catch (error) { refused = shown(error); }
                    const options = { retries: 2, ackTimeout: 100, autoConnect: false };
                    const client = new NanoSocketClient("/", options);
                    const rejected = await client.timeout(null).call("order").catch(shown);
                    return [refused, rejected, client.queued];
                }"""
            )
            assert outcome == [
                "ConfigurationError: retries needs ackTimeout: the ms each copy waits for its reply"
                " before the next",
                "RangeError: retries needs a timeout: the ms each copy waits for its reply",
                0,
            ]

    chromium.run(body())


def test_many_calls_with_lost_acks_commit_exactly_once_in_order(chromium: BrowserLoop, pages: Pages) -> None:
    """Five clients on one page place 100 calls each at once, through the proxy swallowing 3% of
    the ack replies (seeded): every handler commit happens exactly once, each client's in order,
    and every swallowed reply was answered again from the server's store."""
    clients, calls = 5, 100
    commits: dict[str, list[int]] = defaultdict(list)

    async def body() -> None:
        server = NanoSocket(port=0, host="127.0.0.1", cors="*")
        serve_harness(server)

        @server.socket_on("order")
        def order(socket: Socket, client: str, n: int) -> int:
            commits[client].append(n)
            return n

        dropper = AckDropper(rate=0.03, seed=7)
        async with server, FaultProxy(server.port) as proxy:
            proxy.drop_frames(dropper)
            page = await pages.open(f"http://127.0.0.1:{server.port}/", "window.harnessReady === true")
            results = await page.evaluate(
                """async ([url, clients, calls]) => {
                    const { NanoSocketClient } = window.harness.ns;
                    const options = { retries: 20, ackTimeout: 300, reconnectionDelay: 50 };
                    const run = async (c) => {
                        const client = new NanoSocketClient(url, options);
                        const numbers = Array.from({ length: calls }, (_, n) => n);
                        const call = (n) => client.call("order", `c${c}`, n);
                        const results = await Promise.all(numbers.map(call));
                        await client.disconnect();
                        return results;
                    };
                    return Promise.all(Array.from({ length: clients }, (_, c) => run(c)));
                }""",
                [proxy.url, clients, calls],
            )
        assert results == [list(range(calls))] * clients
        assert commits == {f"c{c}": list(range(calls)) for c in range(clients)}
        assert dropper.dropped > 0
        assert server.adapter.stats.duplicates == dropper.dropped

    chromium.run(body())
