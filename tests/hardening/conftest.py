"""Fixtures of the hardening tests: the server kit's harness (``ns``), a memory probe
(``memory``), and a check that nothing escapes into the event loop (autouse).

The kit of tests/server (server_kit.py) is shared: this directory puts it on sys.path.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from hardening_kit import Memory
from server_kit import Harness


@pytest.fixture(autouse=True)
async def loop_exceptions() -> AsyncIterator[list[dict[str, Any]]]:
    """Record everything that reaches the loop's exception handler (an exception raised in a
    callback, a Task whose exception nobody retrieved); the test fails if anything did."""
    loop = asyncio.get_running_loop()
    recorded: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: recorded.append(context))
    try:
        yield recorded
        gc.collect()  # a never-retrieved Task exception is reported when the Task is collected
        for _ in range(3):
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert recorded == [], f"escaped into the event loop: {recorded}"


@pytest.fixture
async def ns(loop_exceptions: list[dict[str, Any]]) -> AsyncIterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture
def memory() -> Iterator[Memory]:
    probe = Memory()
    try:
        yield probe
    finally:
        probe.stop()
