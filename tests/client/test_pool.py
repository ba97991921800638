"""ClientPool: one client per URL, disconnected together."""

from __future__ import annotations

import pytest
from client_kit import Kit, until, within

from nanosocket import ClientPool, ConfigurationError, ConnectionState, NanoSocketClient


async def test_one_client_per_url(kit: Kit) -> None:
    first = await kit.server()
    second = await kit.server()
    pool = ClientPool()
    a = pool.get(first.url, reconnection_delay=0.01)
    assert isinstance(a, NanoSocketClient)
    assert pool.get(first.url) is a
    assert pool.get(f"http://127.0.0.1:{first.port}/") is a  # the same server, spelt over HTTP
    b = pool.get(second.url)
    assert b is not a
    assert len(pool) == 2 and first.url in pool and "ws://127.0.0.1:1/" not in pool
    assert list(pool) == [a, b]
    # Created inside a running loop, the clients connect on their own.
    await within(a.connect())
    await within(b.connect())
    assert a.url == first.url and b.url == second.url
    await within(pool.close())
    assert len(pool) == 0
    assert a.connection_state is ConnectionState.DISCONNECTED
    assert b.connection_state is ConnectionState.DISCONNECTED
    await until(lambda: first.connections[0].closed is not None)
    assert first.connections[0].closed == (1000, "client disconnect")


async def test_options_of_an_existing_client_must_match(kit: Kit) -> None:
    server = await kit.server()
    async with ClientPool() as pool:
        client = pool.get(server.url, auth={"token": "a"}, headers={"X-A": "1"})
        assert pool.get(server.url, auth={"token": "a"}) is client
        assert pool.get(server.url, headers=[("X-A", "1")]) is client
        with pytest.raises(ConfigurationError, match="auth"):
            pool.get(server.url, auth={"token": "b"})
        with pytest.raises(ConfigurationError, match="max_queue_size"):
            pool.get(server.url, max_queue_size=1)
        await within(client.connect())
    assert client.connection_state is ConnectionState.DISCONNECTED


async def test_invalid_options_fail_in_get(kit: Kit) -> None:
    pool = ClientPool()
    with pytest.raises(ConfigurationError, match="timeout"):
        pool.get("ws://127.0.0.1:9/", timeout=-1)
    with pytest.raises(ConfigurationError, match="url"):
        pool.get("ftp://127.0.0.1/")
    assert len(pool) == 0
    await pool.close()


def test_a_pool_outside_a_loop_creates_idle_clients() -> None:
    pool = ClientPool()
    client = pool.get("ws://127.0.0.1:9/")
    assert client.connection_state is ConnectionState.DISCONNECTED
    assert "clients=1" in repr(pool)
