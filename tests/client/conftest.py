"""The ``kit`` fixture: protocol servers and clients of one test, all closed when it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from client_kit import Kit


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    started = Kit()
    try:
        yield started
    finally:
        await started.aclose()
