"""RateLimitedLog (server/errorlog.py): a flood of failing messages cannot flood the log."""

from __future__ import annotations

import logging
import time

import pytest
from server_kit import Harness

from nanosocket import Socket
from nanosocket.server.errorlog import RateLimitedLog

logger = logging.getLogger("nanosocket.tests.errorlog")


def test_each_kind_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimitedLog(logger, interval=3600)
    with caplog.at_level(logging.ERROR, logger=logger.name):
        assert limiter.error("kind-a", "first a", ValueError("a"))
        assert not limiter.error("kind-a", "second a")
        assert not limiter.error("kind-a", "third a")
        assert limiter.error("kind-b", "first b")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["first a", "first b"]
    assert caplog.records[0].exc_info is not None and caplog.records[0].exc_info[0] is ValueError
    assert caplog.records[1].exc_info is None


def test_after_the_interval_the_skipped_count_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimitedLog(logger, interval=0.01)
    with caplog.at_level(logging.ERROR, logger=logger.name):
        assert limiter.error("k", "one")
        assert not limiter.error("k", "two")
        assert not limiter.error("k", "three")
        deadline = time.monotonic() + 0.02
        while time.monotonic() < deadline:
            time.sleep(0.005)
        assert limiter.error("k", "four")
        assert not limiter.error("k", "five")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["one", "four (2 similar errors not logged in the last 0.01 s)"]


def test_many_kinds_do_not_grow_without_bound() -> None:
    limiter = RateLimitedLog(logging.getLogger("nanosocket.tests.silent"), interval=3600)
    logging.getLogger("nanosocket.tests.silent").disabled = True
    try:
        for n in range(5000):
            limiter.error(f"kind-{n}", "message")
    finally:
        logging.getLogger("nanosocket.tests.silent").disabled = False
    assert len(limiter._last) <= 1001


async def test_a_flood_of_handler_errors_is_logged_once(
    ns: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    server = await ns.start()
    server.on("connection", lambda socket: socket.on("fail", lambda: 1 / 0))
    errors: list[tuple[BaseException, Socket | None]] = []
    server.on("error", lambda error, socket: errors.append((error, socket)))
    with caplog.at_level(logging.ERROR, logger="nanosocket.server"):
        peer = await ns.plain(server)
        for n in range(50):
            peer.emit("fail", ack=n)
        for n in range(50):
            assert (await peer.expect_ack(n))["error"]["type"] == "ZeroDivisionError"
    logged = [
        r for r in caplog.records if r.name == "nanosocket.server" and "ZeroDivisionError" in r.getMessage()
    ]
    assert len(logged) == 1
    assert len(errors) == 50  # every error still reaches the error event
    assert server.stats.handler_errors == 50
