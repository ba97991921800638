"""At-least-once calls end to end: a real server, the Python client with ``retries``, and the
fault proxy between them swallowing ack replies (``AckDropper``) or cutting the line.

Every wait is bounded by a hang guard only to turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fault_proxy import AckDropper, FaultProxy
from recovery_kit import until

from nanosocket import (
    AckError,
    ConfigurationError,
    DeliveryTimeoutError,
    NanoSocket,
    NanoSocketClient,
    Socket,
)

GUARD = 30.0


class App:
    """A server whose ``order`` handler commits ``(client, n)`` and answers ``n * 10``."""

    def __init__(self, **options: Any) -> None:
        self.server = NanoSocket(port=0, host="127.0.0.1", **options)
        self.commits: list[tuple[str, int]] = []
        self.release: asyncio.Event | None = None

        @self.server.socket_on("order")
        async def order(socket: Socket, client: str, n: int) -> int:
            if self.release is not None:
                await self.release.wait()
            self.commits.append((client, n))
            return n * 10

        @self.server.socket_on("refuse")
        def refuse(socket: Socket, n: int) -> None:
            self.commits.append(("refused", n))
            raise ValueError(f"no {n}")

    @property
    def duplicates(self) -> int:
        return self.server.adapter.stats.duplicates


Stack = Callable[..., Awaitable[tuple[App, FaultProxy, NanoSocketClient]]]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    opened: list[Any] = []

    async def make(
        dropper: AckDropper | None = None, server: dict[str, Any] | None = None, **client: Any
    ) -> tuple[App, FaultProxy, NanoSocketClient]:
        app = App(**(server or {}))
        await app.server.listen()
        opened.append(app)
        proxy = await FaultProxy(app.server.port).start()
        opened.append(proxy)
        if dropper is not None:
            proxy.drop_frames(dropper)
        client.setdefault("retries", 3)
        client.setdefault("ack_timeout", 0.3)
        peer = NanoSocketClient(
            proxy.url,
            auto_connect=False,
            reconnection_delay=0.05,
            reconnection_delay_max=0.2,
            randomization_factor=0,
            **client,
        )
        opened.append(peer)
        await asyncio.wait_for(peer.connect(), GUARD)
        return app, proxy, peer

    yield make
    for item in reversed(opened):
        if isinstance(item, NanoSocketClient):
            await item.disconnect()
        elif isinstance(item, FaultProxy):
            await item.close()
        else:
            await item.server.close()


async def test_a_lost_ack_is_retried_and_the_handler_runs_once(stack: Stack) -> None:
    dropper = AckDropper(first=1)
    app, _, client = await stack(dropper)
    assert await asyncio.wait_for(client.call("order", "a", 1), GUARD) == 10
    assert dropper.dropped == 1
    assert app.commits == [("a", 1)]
    assert app.duplicates == 1
    assert client.pending == 0


async def test_an_error_reply_is_the_outcome_not_retried(stack: Stack) -> None:
    app, _, client = await stack(AckDropper(first=1))
    with pytest.raises(AckError, match="no 5") as info:
        await asyncio.wait_for(client.call("refuse", 5), GUARD)
    assert info.value.data == {"message": "no 5", "type": "ValueError"}
    assert app.commits == [("refused", 5)]


async def test_exhausted_retries_raise_delivery_timeout(stack: Stack) -> None:
    dropper = AckDropper(rate=1.0)
    app, _, client = await stack(dropper, retries=2, ack_timeout=0.1)
    with pytest.raises(DeliveryTimeoutError) as info:
        await asyncio.wait_for(client.call("order", "a", 1), GUARD)
    assert info.value.copies == 3 and info.value.mid.count("-") >= 1
    assert isinstance(info.value, TimeoutError)
    assert app.commits == [("a", 1)]  # it ran: the outcome was unknown to the client
    assert app.duplicates == 2
    # The next call goes on.
    proxy_ok = AckDropper()
    dropper.rate = proxy_ok.rate
    assert await asyncio.wait_for(client.call("order", "a", 2), GUARD) == 20


async def test_a_copy_while_the_handler_runs_waits_for_its_reply(stack: Stack) -> None:
    app, _, client = await stack(ack_timeout=0.1)
    app.release = asyncio.Event()
    call = asyncio.ensure_future(client.call("order", "a", 1))
    await until(lambda: app.duplicates >= 2)  # copies arrived while it ran
    app.release.set()
    assert await asyncio.wait_for(call, GUARD) == 10
    assert app.commits == [("a", 1)]


async def test_no_copy_is_sent_after_the_servers_window(stack: Stack) -> None:
    errors: list[BaseException] = []
    app, _, client = await stack(
        AckDropper(rate=1.0), server={"dedup_window": 1.0}, retries=50, ack_timeout=0.2
    )
    client.on("error", errors.append)
    with pytest.raises(DeliveryTimeoutError, match="window") as info:
        await asyncio.wait_for(client.call("order", "a", 1), GUARD)
    assert 1 < info.value.copies < 51
    assert app.commits == [("a", 1)]


async def test_a_retry_span_over_the_window_is_reported_at_connect(stack: Stack) -> None:
    app = App(dedup_window=1.0)
    await app.server.listen()
    try:
        client = NanoSocketClient(
            f"ws://127.0.0.1:{app.server.port}", auto_connect=False, retries=9, ack_timeout=0.5
        )
        errors: list[BaseException] = []
        client.on("error", errors.append)
        await asyncio.wait_for(client.connect(), GUARD)
        await until(lambda: errors)
        assert isinstance(errors[0], ConfigurationError)
        assert "de-duplication window" in str(errors[0])
        await client.disconnect()
    finally:
        await app.server.close()


async def test_retries_survive_a_reconnection(stack: Stack) -> None:
    dropper = AckDropper(rate=1.0)
    app, proxy, client = await stack(dropper, retries=20, ack_timeout=0.2)
    connects: list[None] = []
    client.on("connect", lambda: connects.append(None))
    call = asyncio.ensure_future(client.call("order", "a", 1))
    await until(lambda: app.commits)
    proxy.reset()  # the line is cut in the middle of the retries
    await asyncio.sleep(0.3)  # the cut lasts a while
    dropper.rate = 0.0
    proxy.restore()
    await until(lambda: connects)
    assert await asyncio.wait_for(call, GUARD) == 10
    assert app.commits == [("a", 1)]


async def test_calls_go_one_at_a_time_in_order_despite_lost_acks(stack: Stack) -> None:
    dropper = AckDropper(rate=0.2, seed=7)
    app, _, client = await stack(dropper, retries=10, ack_timeout=0.1)
    calls = [asyncio.ensure_future(client.call("order", "a", n)) for n in range(40)]
    await asyncio.sleep(0)
    assert client.pending == 40 and client.queued == 39  # one in flight, the others wait
    results = await asyncio.wait_for(asyncio.gather(*calls), GUARD)
    assert results == [n * 10 for n in range(40)]
    assert app.commits == [("a", n) for n in range(40)]
    assert dropper.dropped > 0


async def test_calls_made_offline_are_sent_after_connecting(stack: Stack) -> None:
    app, _, client = await stack()
    await client.disconnect()
    calls = [asyncio.ensure_future(client.call("order", "a", n)) for n in range(3)]
    await asyncio.sleep(0)
    assert client.queued == 3
    await asyncio.wait_for(client.connect(), GUARD)
    assert await asyncio.wait_for(asyncio.gather(*calls), GUARD) == [0, 10, 20]
    assert app.commits == [("a", n) for n in range(3)]


async def test_a_cancelled_call_lets_the_next_go(stack: Stack) -> None:
    app, _, client = await stack(AckDropper(rate=1.0), retries=100, ack_timeout=0.2)
    first = asyncio.ensure_future(client.call("order", "a", 1))
    second = asyncio.ensure_future(client.call("order", "a", 2))
    await until(lambda: app.commits)
    first.cancel()
    await until(lambda: len(app.commits) == 2)
    assert app.commits == [("a", 1), ("a", 2)]
    second.cancel()


async def test_per_call_retries_and_validation(stack: Stack) -> None:
    app, _, client = await stack(AckDropper(first=1), retries=0, ack_timeout=0.2)
    assert await asyncio.wait_for(client.call("order", "a", 1, retries=2), GUARD) == 10
    assert app.commits == [("a", 1)]
    with pytest.raises(ValueError, match="retries"):
        await client.call("order", "a", 1, retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        await client.call("order", "a", 1, retries=1, timeout=None)
    with pytest.raises(ConfigurationError, match="retries needs ack_timeout"):
        NanoSocketClient("ws://127.0.0.1:9", auto_connect=False, retries=1)
