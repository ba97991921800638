"""The fault-injecting proxy itself, against a plain asyncio echo server (no timed assertions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fault_proxy import FaultProxy

GUARD = 10.0


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), GUARD)


async def test_pass_through(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer, b"hello") == b"hello"
        assert await roundtrip(reader, writer, b"x" * 200_000) == b"x" * 200_000
        writer.close()


async def test_reset_aborts_and_refuses_until_restored(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer, b"a") == b"a"
        proxy.reset()
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), GUARD)
        # Refused while cut: the connection is accepted, then reset.
        reader2, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader2.readexactly(1), GUARD)
        proxy.restore()
        reader3, writer3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader3, writer3, b"back") == b"back"
        writer3.close()


async def test_blackhole_swallows_without_closing(echo_port: int) -> None:
    async with FaultProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader, writer, b"a") == b"a"
        proxy.blackhole()
        writer.write(b"lost")
        await writer.drain()
        # Nothing comes back and nothing closes: a short read with a timeout is the only way to
        # observe silence (it asserts absence, not a duration).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.3)
        assert not reader.at_eof()
        assert proxy.open_connections == 1
        proxy.restore()
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(reader2, writer2, b"new") == b"new"
        writer2.close()
        writer.close()
