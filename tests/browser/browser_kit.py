"""The browser tests' kit: Debian's Chromium (/usr/bin/chromium) driven by Playwright, against
NanoSocket servers on 127.0.0.1.

Servers and the browser live on one event loop in a background thread (``BrowserLoop``); the tests
are plain functions that hand coroutines to it. One Chromium (a fresh user-data-dir) serves the
whole session; each test opens its own pages. Playwright never downloads a browser here.

Without Chromium these tests FAIL (CI must not pass without them: ``make browser-deps`` installs
it); a developer may skip them with NANOSOCKET_SKIP_BROWSER=1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM = os.environ.get("NANOSOCKET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A guard against hangs, never a measurement.
HANG_GUARD = 30.0
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Where the demo and dashboard screenshots go: the README's docs/images/ only when asked
#: (NANOSOCKET_UPDATE_SCREENSHOTS=1, `make screenshots`), so a test run leaves the tree unchanged.
SCREENSHOTS = (
    ROOT / "docs" / "images"
    if os.environ.get("NANOSOCKET_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "nanosocket-screenshots"
)


def browser_available() -> None:
    """Skip when the developer asked to; fail (never skip) when Chromium is missing."""
    if os.environ.get("NANOSOCKET_SKIP_BROWSER") == "1":
        pytest.skip("NANOSOCKET_SKIP_BROWSER=1")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `make browser-deps` "
            "(apt-get install -y chromium), or set NANOSOCKET_SKIP_BROWSER=1 to skip the browser tests",
            pytrace=False,
        )
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'", pytrace=False)


class BrowserLoop:
    """An asyncio loop in a thread, holding Playwright's Chromium and the tests' servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="browser-loop", daemon=True)
        self.thread.start()
        self.playwright: Any = None
        self.context: Any = None
        self.user_data = tempfile.mkdtemp(prefix="nanosocket-chromium-")

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = HANG_GUARD) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        return future.result(timeout + 5)

    async def launch(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()
        self.context = await self.playwright.chromium.launch_persistent_context(
            self.user_data,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 700},
        )

    async def new_page(self) -> Any:
        page = await self.context.new_page()
        page.on("console", lambda message: message.type == "error" and print("page console:", message.text))
        page.on("pageerror", lambda error: print("page error:", error))
        return page

    async def shutdown(self) -> None:
        if self.context is not None:
            await self.context.close()
        if self.playwright is not None:
            await self.playwright.stop()

    def close(self) -> None:
        try:
            self.run(self.shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            shutil.rmtree(self.user_data, ignore_errors=True)


class Pages:
    """The pages of one test, closed after it."""

    def __init__(self, browser: BrowserLoop) -> None:
        self.browser = browser
        self.pages: list[Any] = []
        self.cleanups: list[Callable[[], Awaitable[None]]] = []

    async def open(self, url: str, ready: str | None = None) -> Any:
        page = await self.browser.new_page()
        self.pages.append(page)
        await page.goto(url)
        if ready is not None:
            await page.wait_for_function(ready, timeout=HANG_GUARD * 1000)
        return page

    async def aclose(self) -> None:
        for page in self.pages:
            await page.close()
        for cleanup in reversed(self.cleanups):
            await cleanup()
