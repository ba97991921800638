"""Fixtures of the cluster tests: a Redis for the session, private ones on demand, and clusters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from cluster_kit import Cluster, RedisServer, shared_redis_url
from server_kit import Harness


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    started: list[RedisServer] = []
    try:
        yield shared_redis_url(started)
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone (for tests that kill, pause or disconnect Redis)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def ns() -> AsyncIterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        await harness.aclose()


@pytest.fixture
async def cluster(ns: Harness, redis_url: str) -> AsyncIterator[Cluster]:
    started = Cluster(ns, redis_url)
    try:
        yield started
    finally:
        await started.aclose()
