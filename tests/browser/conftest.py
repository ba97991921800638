"""Fixtures of the real-browser tests (see browser_kit.py): one Chromium per session, pages per test.

Without Chromium these tests FAIL (CI must not pass without them: ``make browser-deps`` installs
it); a developer may skip them with NANOSOCKET_SKIP_BROWSER=1.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_kit import BrowserLoop, Pages, browser_available


@pytest.fixture(scope="session")
def chromium() -> Iterator[BrowserLoop]:
    browser_available()
    browser = BrowserLoop()
    try:
        browser.run(browser.launch(), timeout=60)
        yield browser
    finally:
        browser.close()


@pytest.fixture
def pages(chromium: BrowserLoop) -> Iterator[Pages]:
    opened = Pages(chromium)
    try:
        yield opened
    finally:
        chromium.run(opened.aclose())
