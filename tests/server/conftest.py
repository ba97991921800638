"""The ``ns`` fixture: servers and clients of one test, all closed when it ends (see server_kit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from server_kit import Harness


@pytest.fixture
async def ns() -> AsyncIterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        await harness.aclose()
