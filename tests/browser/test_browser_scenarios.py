"""The shared client scenarios (tests/scenarios.py) run by nanosocket.js in Chromium: one page per
client, each page performing the steps with the browser client (tests/browser/harness.js)."""

from __future__ import annotations

from typing import Any

import pytest
from browser_kit import HANG_GUARD, HERE, BrowserLoop, Pages

from nanosocket import NanoSocket, Request
from scenarios import SCENARIOS, Scenario, ScenarioServer, run_scenario

PAGE = b"""<!doctype html><meta charset="utf-8"><title>nanosocket scenario</title>
<script type="module">
import * as harness from "/harness.js";
window.harness = harness;
window.harnessReady = true;
</script>"""


def serve_harness(server: NanoSocket) -> None:
    """The scenario server also serves the test page and its harness module."""
    harness = (HERE / "harness.js").read_bytes()

    @server.route("/")
    def page(request: Request) -> tuple[int, bytes, dict[str, str]]:
        return 200, PAGE, {"Content-Type": "text/html; charset=utf-8"}

    @server.route("/harness.js")
    def script(request: Request) -> tuple[int, bytes, dict[str, str]]:
        return 200, harness, {"Content-Type": "text/javascript; charset=utf-8"}


class BrowserDriver:
    """Each client index is one page running nanosocket.js."""

    def __init__(self, pages: Pages, server: ScenarioServer, scenario: Scenario) -> None:
        self.pages = pages
        self.server = server
        self.scenario = scenario
        self.clients: list[Any] = []

    async def open(self) -> None:
        """Open every client's page while the server is up (a step may stop it)."""
        count = 1 + max(step["client"] for step in self.scenario.steps)
        for _ in range(count):
            page = await self.pages.open(
                f"http://127.0.0.1:{self.server.port}/", "window.harnessReady === true"
            )
            await page.evaluate("listen => window.harness.setListen(listen)", self.scenario.listen)
            self.clients.append(page)

    async def perform(self, step: dict[str, Any]) -> dict[str, Any]:
        page = self.clients[step["client"]]
        observed: dict[str, Any] = await page.evaluate("step => window.harness.perform(step)", step)
        return observed

    async def aclose(self) -> None:
        for page in self.clients:
            await page.evaluate("() => window.harness.close()")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_browser_client_scenario(chromium: BrowserLoop, pages: Pages, scenario: Scenario) -> None:
    async def body() -> None:
        server = ScenarioServer(setup=serve_harness)
        await server.start()
        driver = BrowserDriver(pages, server, scenario)
        try:
            await driver.open()
            await run_scenario(scenario, driver, server)
            await driver.aclose()
        finally:
            await server.stop()

    chromium.run(body(), timeout=HANG_GUARD * 2)
