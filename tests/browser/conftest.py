"""Fixtures of the real-browser tests (see browser_kit.py): one Chromium per session, pages per test.

Without Chromium these tests FAIL (CI must not pass without them: ``make browser-deps`` installs
it); a developer may skip them with NANOSOCKET_SKIP_BROWSER=1.

The fault proxy of tests/faults (fault_proxy.py) is shared: this directory puts it on sys.path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

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
