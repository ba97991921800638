"""The offline queue of nanosocket.js in Chromium: bounded by count (maxQueueSize), bytes
(maxQueueBytes) and age (maxQueueAge), the oldest waiting message first; what it drops is counted
(`dropped`) and reported: a call rejects with MessageDropped (`why`, `event`), an emit goes to the
local `drop` event (why, event name). At-least-once calls waiting their turn count too
(test_browser_at_least_once.py).

Waits are bounded by hang guards only; nothing is timed (a short maxQueueAge only makes the
expiry come soon).
"""

from __future__ import annotations

import json
from typing import Any

from browser_kit import BrowserLoop, Pages
from scripted_server import connect_answer, harness_page, scripted_server

from nanosocket import WebSocket

GUARD = 10.0
WAIT = {"timeout": GUARD * 1000}
OFFLINE = """([url, options]) => {
    const client = new window.harness.ns.NanoSocketClient(url, {
        reconnectionDelay: 50, reconnectionDelayMax: 100, randomizationFactor: 0, ...options });
    window.client = client;
    window.drops = [];
    window.results = {};
    client.on("drop", (why, event) => window.drops.push([why, event]));
    // Place a call; its outcome lands in window.results[key] (place itself returns nothing).
    window.place = (key, ...args) => {
        client.call("order", ...args).then(
            (value) => { window.results[key] = { value }; },
            (error) => {
                const { name, message, why, event } = error;
                window.results[key] = { error: name, message, why, event };
            });
    };
}"""


def answering(ws: WebSocket, frame: Any, number: int) -> None:
    """A peer that accepts and answers every call with its first argument times ten."""
    for envelope in frame if isinstance(frame, list) else [frame]:
        if envelope.get("event") == "$connect":
            ws.send(connect_answer(id=f"s{number}", dedup_window=60))
        elif envelope.get("event") == "order" and "ack" in envelope:
            ws.send(json.dumps({"ack": envelope["ack"], "data": [envelope["data"][0] * 10]}))


def dropped(why: str, reason: str) -> dict[str, Any]:
    message = f"connection closed: 1006 'order' dropped unsent: {reason}"
    return {"error": "MessageDropped", "message": message, "why": why, "event": "order"}


def test_the_byte_bound_drops_the_oldest(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with harness_page(pages) as page:
            # {"event":"eN","data":["xxxxxxxxx"]} is 31 bytes: three fit in 100.
            await page.evaluate(OFFLINE, ["/", {"maxQueueBytes": 100, "autoConnect": False}])
            sent = await page.evaluate(
                "() => [1, 2, 3].map((n) => window.client.emit(`e${n}`, 'x'.repeat(9)))"
            )
            assert sent == [True, True, True]
            # A call of 45 bytes: e1 and e2 make room for it.
            await page.evaluate("() => window.place('a', 'x'.repeat(5))")
            assert await page.evaluate("window.drops") == [["queue_bytes", "e1"], ["queue_bytes", "e2"]]
            assert await page.evaluate("[window.client.queued, window.client.dropped]") == [2, 2]
            # One that cannot fit at all is dropped itself: an emit says so, a call rejects.
            assert await page.evaluate("() => window.client.emit('big', 'y'.repeat(200))") is False
            await page.evaluate("() => window.place('b', 'z'.repeat(200))")
            await page.wait_for_function("'b' in window.results", **WAIT)
            assert (await page.evaluate("window.drops"))[2:] == [["queue_bytes", "big"]]
            reason = "pushed out of the offline queue over maxQueueBytes"
            assert await page.evaluate("window.results.b") == dropped("queue_bytes", reason)
            assert await page.evaluate("[window.client.queued, window.client.dropped]") == [2, 4]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_the_count_bound_drops_the_oldest_call_too(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with harness_page(pages) as page:
            await page.evaluate(OFFLINE, ["/", {"maxQueueSize": 2, "autoConnect": False}])
            await page.evaluate(
                "() => { window.place('a', 1); window.client.emit('e', 2); window.client.emit('f', 3); }"
            )
            await page.wait_for_function("'a' in window.results", **WAIT)
            reason = "pushed out of the full offline queue (maxQueueSize)"
            assert await page.evaluate("window.results.a") == dropped("queue_full", reason)
            assert await page.evaluate("window.drops") == []  # a call is told by its promise
            await page.evaluate("() => window.client.emit('g', 4)")
            assert await page.evaluate("window.drops") == [["queue_full", "e"]]
            assert await page.evaluate("[window.client.queued, window.client.dropped]") == [2, 2]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_expired_messages_are_dropped_and_never_written(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(answering) as peer:
            url = f"ws://127.0.0.1:{peer.port}/"
            await page.evaluate(OFFLINE, [url, {"maxQueueAge": 200, "autoConnect": False}])
            await page.evaluate("() => { window.client.emit('old', 1); window.place('a', 1); }")
            await page.wait_for_function("window.drops.length === 1 && 'a' in window.results", **WAIT)
            assert await page.evaluate("window.drops") == [["expired", "old"]]
            reason = "waited in the offline queue longer than maxQueueAge"
            assert await page.evaluate("window.results.a") == dropped("expired", reason)
            assert await page.evaluate("window.client.queued") == 0
            await page.evaluate("() => { window.client.emit('new', 2); window.place('b', 2); }")
            await page.evaluate("() => window.client.connect()")
            await page.wait_for_function("'b' in window.results", **WAIT)
            assert await page.evaluate("window.results.b") == {"value": 20}
            assert [envelope["event"] for envelope in peer.events("new") + peer.events("old")] == ["new"]
            assert [envelope["data"] for envelope in peer.events("order")] == [[2]]
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_drop_is_a_local_event_the_server_cannot_send(chromium: BrowserLoop, pages: Pages) -> None:
    def script(ws: WebSocket, frame: Any, number: int) -> None:
        if frame.get("event") == "$connect":
            ws.send(connect_answer(id="s"))
            ws.send(json.dumps({"event": "drop", "data": ["queue_full", "forged"]}))
            ws.send(json.dumps({"event": "after", "data": []}))

    async def body() -> None:
        async with harness_page(pages) as page, scripted_server(script) as peer:
            await page.evaluate(OFFLINE, [f"ws://127.0.0.1:{peer.port}/", {"autoConnect": False}])
            await page.evaluate(
                """() => {
                    window.errors = [];
                    window.client.on('error', (error) => window.errors.push(error.message));
                    window.client.on('after', () => { window.after = true; });
                    return window.client.connect();
                }"""
            )
            await page.wait_for_function("window.after === true", **WAIT)
            assert await page.evaluate("window.drops") == []
            assert await page.evaluate("window.errors") == ["the server sent the reserved event 'drop'"]
            thrown = await page.evaluate(
                "() => { try { window.client.emit('drop'); } catch (error) { return error.name; } }"
            )
            assert thrown == "TypeError"
            await page.evaluate("() => window.client.disconnect()")

    chromium.run(body())


def test_queue_options_are_checked(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        async with harness_page(pages) as page:
            for name, bad, expected in (
                ("maxQueueBytes", -1, "maxQueueBytes must be an integer > 0"),
                ("maxQueueBytes", 0, "maxQueueBytes must be an integer > 0"),
                ("maxQueueBytes", 1.5, "maxQueueBytes must be an integer > 0"),
                ("maxQueueAge", 0, "maxQueueAge must be a number of milliseconds > 0 or null"),
                ("maxQueueAge", "1s", "maxQueueAge must be a number of milliseconds > 0 or null"),
            ):
                message = await page.evaluate(
                    """([name, bad]) => {
                        const { NanoSocketClient } = window.harness.ns;
                        try { new NanoSocketClient("/", { [name]: bad, autoConnect: false }); }
                        catch (error) { return `${error.name}: ${error.message}`; }
                    }""",
                    [name, bad],
                )
                assert message.startswith(f"ConfigurationError: {expected}"), message

    chromium.run(body())
