"""nanosocket.js in Chromium beyond the shared scenarios: the chat demo between two pages, the live
dashboard, permessage-deflate as the browser negotiates it, the browser's offline/online events,
dead-link detection, and the page's view of a refused connection. Screenshots of the demo and the
dashboard are taken each run; they replace the README's (docs/images/) with
NANOSOCKET_UPDATE_SCREENSHOTS=1 (`make screenshots`).

Waits are bounded by hang guards (Playwright's timeouts) only; nothing is timed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from browser_kit import HANG_GUARD, ROOT, SCREENSHOTS, BrowserLoop, Pages
from test_browser_scenarios import serve_harness

from nanosocket import NanoSocket, Request, WebSocket, serve
from nanosocket.options import ServerOptions, WebSocketOptions

WAIT = {"timeout": HANG_GUARD * 1000}
TOKEN = "let-me-see-the-stats"


def load_chat() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_chat_app", ROOT / "examples" / "chat" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def chat_user(pages: Pages, port: int, name: str) -> Any:
    """A chat page that joined the lobby as ``name``."""
    page = await pages.open(f"http://127.0.0.1:{port}/", "window.chat && window.chat.connected")
    await page.wait_for_function("document.querySelectorAll('#members li').length > 0", **WAIT)
    await page.fill("#name", name)
    await page.fill("#room", "lobby")
    await page.click("#join button")
    await page.wait_for_function(
        "name => [...document.querySelectorAll('#members li')].some(li => li.textContent === name)",
        arg=name,
        **WAIT,
    )
    return page


async def members(page: Any) -> list[str]:
    names: list[str] = await page.eval_on_selector_all(
        "#members li", "items => items.map(li => li.textContent)"
    )
    return names


async def side_by_side(pages: Pages, shots: list[bytes], path: Path) -> None:
    """One PNG of several screenshots next to each other (composed by the browser itself)."""
    width = f"{100 / len(shots)}%"
    images = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(shot).decode()}" style="width:{width}">'
        for shot in shots
    )
    page = await pages.browser.new_page()
    pages.pages.append(page)
    await page.set_viewport_size({"width": 1400, "height": 480})
    await page.set_content(f'<body style="margin:0;display:flex;gap:6px;background:#d1d5db">{images}</body>')
    await page.wait_for_function("[...document.images].every(img => img.complete)", **WAIT)
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)


def test_chat_demo_between_two_pages(chromium: BrowserLoop, pages: Pages) -> None:
    chat = load_chat()

    async def body() -> None:
        server: NanoSocket = chat.create_app(port=0, host="127.0.0.1")
        async with server:
            alice = await chat_user(pages, server.port, "alice")
            bob = await chat_user(pages, server.port, "bob")
            # Presence: each page lists both users.
            await alice.wait_for_function("document.querySelectorAll('#members li').length === 2", **WAIT)
            assert await members(alice) == ["alice", "bob"]
            assert await members(bob) == ["alice", "bob"]

            # Typing indicator: bob types, alice sees it.
            await bob.type("#text", "Hi Alice, the demo runs on nanosocket.js")
            await alice.wait_for_function(
                "document.getElementById('typing').textContent === 'bob is typing…'", **WAIT
            )
            await bob.press("#text", "Enter")
            # Delivered: alice's page acknowledged the message, bob's tick turns to ✓✓.
            await alice.wait_for_function(
                "[...document.querySelectorAll('#messages li:not(.mine)')]"
                ".some(li => li.textContent.includes('Hi Alice'))",
                **WAIT,
            )
            await bob.wait_for_function(
                "document.querySelector('#messages li.mine .tick')?.textContent === '✓✓'", **WAIT
            )
            await alice.wait_for_function("document.getElementById('typing').textContent === ''", **WAIT)

            await alice.type("#text", "Hello Bob! Two ticks: sent, then delivered.")
            await alice.press("#text", "Enter")
            await alice.wait_for_function(
                "document.querySelector('#messages li.mine .tick')?.textContent === '✓✓'", **WAIT
            )
            await bob.type("#text", "Nice")
            await alice.wait_for_function(
                "document.getElementById('typing').textContent === 'bob is typing…'", **WAIT
            )
            await side_by_side(
                pages, [await alice.screenshot(), await bob.screenshot()], SCREENSHOTS / "chat-demo.png"
            )

            # bob leaves: alice's presence list shrinks.
            await bob.close()
            pages.pages.remove(bob)
            await alice.wait_for_function("document.querySelectorAll('#members li').length === 1", **WAIT)
            assert await members(alice) == ["alice"]

    chromium.run(body(), timeout=HANG_GUARD * 3)


def test_dashboard_shows_a_changing_connection_count(chromium: BrowserLoop, pages: Pages) -> None:
    chat = load_chat()

    async def body() -> None:
        server: NanoSocket = chat.create_app(port=0, host="127.0.0.1", dashboard=True, dashboard_token=TOKEN)
        async with server:
            # Without the token, the page says why it is refused and offers a token field.
            refused = await pages.open(f"http://127.0.0.1:{server.port}/dashboard")
            await refused.wait_for_function("document.getElementById('error').textContent !== ''", **WAIT)
            assert "the dashboard needs its token" in await refused.text_content("#error")
            assert await refused.is_visible("#token")

            dashboard = await pages.open(f"http://127.0.0.1:{server.port}/dashboard#token={TOKEN}")
            await dashboard.wait_for_function("document.body.dataset.connections === '0'", **WAIT)
            alice = await chat_user(pages, server.port, "alice")
            bob = await chat_user(pages, server.port, "bob")
            await dashboard.wait_for_function("document.body.dataset.connections === '2'", **WAIT)
            assert await dashboard.text_content("#connections") == "2"
            # Some traffic for the charts, then a screenshot once a few samples are drawn.
            for n in range(3):
                await alice.fill("#text", f"message {n}")
                await alice.press("#text", "Enter")
                await bob.fill("#text", f"reply {n}")
                await bob.press("#text", "Enter")
            await bob.wait_for_function(
                "document.querySelectorAll('#messages .tick.delivered').length === 3", **WAIT
            )
            carol = await chat_user(pages, server.port, "carol")
            await dashboard.wait_for_function("document.body.dataset.connections === '3'", **WAIT)
            await dashboard.wait_for_function("Number(document.body.dataset.samples) >= 4", **WAIT)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await dashboard.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)

            for page in (carol, bob):
                await page.close()
                pages.pages.remove(page)
            await dashboard.wait_for_function("document.body.dataset.connections === '1'", **WAIT)
            # The dashboard's own sockets never count as the app's connections.
            assert server.connection_count == 1

    chromium.run(body(), timeout=HANG_GUARD * 3)


COMPRESSION_LANDED = "compression" in {field.name for field in dataclasses.fields(ServerOptions)}


@pytest.mark.xfail(
    not COMPRESSION_LANDED,
    reason="server-side permessage-deflate (ServerOptions.compression) has not landed yet",
    strict=True,
)
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_permessage_deflate_negotiated_by_the_browser(chromium: BrowserLoop, pages: Pages, mode: str) -> None:
    async def body() -> None:
        server = NanoSocket(port=0, host="127.0.0.1", compression=mode)  # type: ignore[call-arg]
        serve_harness(server)
        sockets: asyncio.Queue[Any] = asyncio.Queue()

        @server.on("connection")
        def connection(socket: Any) -> None:
            sockets.put_nowait(socket)
            socket.on("echo", lambda *args: socket.emit("echo", *args))
            socket.on("size", len)

        async with server:
            page = await pages.open(f"http://127.0.0.1:{server.port}/", "window.harnessReady === true")
            await page.evaluate("() => window.harness.setListen(['echo'])")
            connect = {"op": "connect", "client": 0}
            assert (await page.evaluate("s => window.harness.perform(s)", connect))["connected"]
            extensions = await page.evaluate("() => window.client._link.ws.extensions")
            assert extensions.startswith("permessage-deflate")
            socket = await asyncio.wait_for(sockets.get(), HANG_GUARD)
            assert socket._ws.compression is not None
            # Big, compressible messages both ways (over the compression threshold), text and binary.
            text = "NanoSocket compresses this line. " * 2000
            observed = await page.evaluate(
                "s => window.harness.perform(s)",
                {"op": "call", "client": 0, "event": "size", "args": [text]},
            )
            assert observed == {"result": len(text)}
            blob = {"$bytes": (b"\x00\x01\x02\x03" * 4096).hex()}
            step = {"op": "emit", "client": 0, "event": "echo", "args": [text, blob]}
            assert await page.evaluate("s => window.harness.perform(s)", step) == {"sent": True}
            step = {"op": "next_event", "client": 0, "event": "echo"}
            assert await page.evaluate("s => window.harness.perform(s)", step) == {"args": [text, blob]}
            await page.evaluate("() => window.harness.close()")

    chromium.run(body())


def test_offline_and_online_events(chromium: BrowserLoop, pages: Pages) -> None:
    async def body() -> None:
        server = NanoSocket(port=0, host="127.0.0.1")
        serve_harness(server)
        server.on("connection", lambda socket: socket.on("add", lambda a, b: a + b))
        async with server:
            page = await pages.open(f"http://127.0.0.1:{server.port}/", "window.harnessReady === true")
            connect = {"op": "connect", "client": 0}
            assert (await page.evaluate("s => window.harness.perform(s)", connect))["connected"]
            await page.evaluate(
                "() => { window.reasons = []; window.client.on('disconnect', r => window.reasons.push(r)); }"
            )
            # The browser says it went offline: the link is treated as down at once.
            await page.context.set_offline(True)
            await page.wait_for_function("window.reasons.length === 1", **WAIT)
            assert await page.evaluate("window.reasons") == ["transport close"]
            assert await page.evaluate("window.client.connectionState") == "reconnecting"
            # Back online: it reconnects (now, not after its delay) and calls work again.
            await page.context.set_offline(False)
            await page.wait_for_function("window.client.connected", **WAIT)
            step = {"op": "call", "client": 0, "event": "add", "args": [20, 22]}
            assert await page.evaluate("s => window.harness.perform(s)", step) == {"result": 42}
            await page.evaluate("() => window.harness.close()")

    chromium.run(body())


def test_a_silent_server_is_a_ping_timeout(chromium: BrowserLoop, pages: Pages) -> None:
    """A server that answers $connect, then never a frame: the page's $ping goes unanswered."""

    async def body() -> None:
        page_server = NanoSocket(port=0, host="127.0.0.1")
        serve_harness(page_server)
        pings: asyncio.Queue[str | bytes] = asyncio.Queue()

        def silent(ws: WebSocket, request: Request) -> None:
            def receive(message: str | bytes) -> None:
                if '"$connect"' in str(message):
                    ws.send('{"event":"$connect","data":[{"id":"silent-server"}]}')
                else:
                    pings.put_nowait(message)  # and no answer

            ws.on_message = receive

        options = WebSocketOptions(subprotocols=("nanosocket.v1",))
        async with (
            page_server,
            await serve(silent, "127.0.0.1", 0, options=options, allowed_origins=["*"]) as mute,
        ):
            page = await pages.open(f"http://127.0.0.1:{page_server.port}/", "window.harnessReady === true")
            reason = await page.evaluate(
                """port => new Promise((resolve) => {
                    const client = new (window.harness.ns.NanoSocketClient)(`ws://127.0.0.1:${port}/`,
                        { heartbeatInterval: 200, reconnection: false });
                    window.silent = client;
                    client.on('disconnect', resolve);
                })""",
                mute.port,
            )
            assert reason == "ping timeout"
            assert await asyncio.wait_for(pings.get(), HANG_GUARD) == '{"event":"$ping","data":[]}'
            assert await page.evaluate("window.silent.connectionState") == "disconnected"

    chromium.run(body())


def test_the_client_works_as_a_copied_file(chromium: BrowserLoop, pages: Pages) -> None:
    """nanosocket.js needs nothing of /nanosocket.js: copied next to a page, imported by a relative
    path (its default export), it talks to a server given by URL."""
    script = (ROOT / "src" / "nanosocket" / "static" / "nanosocket.js").read_bytes()
    html = b"""<!doctype html><meta charset="utf-8"><title>copied</title>
<script type="module">
import NanoSocketClient from "./vendor/nanosocket.js";
window.NanoSocketClient = NanoSocketClient;
</script>"""

    async def body() -> None:
        server = NanoSocket(port=0, host="127.0.0.1", cors="*")
        server.route("/app/index.html")(lambda request: (200, html, {"Content-Type": "text/html"}))
        server.route("/app/vendor/nanosocket.js")(
            lambda request: (200, script, {"Content-Type": "text/javascript"})
        )
        server.on("connection", lambda socket: socket.on("add", lambda a, b: a + b))
        async with server:
            page = await pages.open(
                f"http://127.0.0.1:{server.port}/app/index.html",
                "typeof window.NanoSocketClient === 'function'",
            )
            result = await page.evaluate(
                """async (url) => {
                    const client = new window.NanoSocketClient(url);
                    const sum = await client.call("add", 40, 2);
                    await client.disconnect();
                    return [sum, client.connectionState];
                }""",
                f"ws://127.0.0.1:{server.port}/",
            )
            assert result == [42, "disconnected"]

    chromium.run(body())
