"""NanoSocketClient against the NanoSocket server: the two sides of docs/protocol.md together."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from client_kit import Recorder, until, within

from nanosocket import (
    AckError,
    ConnectError,
    ConnectionState,
    NanoSocket,
    NanoSocketClient,
    Socket,
)


class Pair:
    """A NanoSocket server on 127.0.0.1 and the clients of one test."""

    def __init__(self) -> None:
        self.server = NanoSocket(port=0, host="127.0.0.1")
        self.clients: list[NanoSocketClient] = []
        self.sockets: list[Socket] = []
        self.server.on("connection", self.sockets.append)

    def client(self, **options: Any) -> NanoSocketClient:
        options.setdefault("auto_connect", False)
        options.setdefault("reconnection_delay", 0.01)
        options.setdefault("reconnection_delay_max", 0.05)
        client = NanoSocketClient(f"ws://127.0.0.1:{self.server.port}/", **options)
        self.clients.append(client)
        return client


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    started = Pair()
    await started.server.listen()
    try:
        yield started
    finally:
        for client in started.clients:
            await within(client.disconnect())
        await within(started.server.close())


async def test_auth_reaches_middleware_and_the_socket_id_is_shared(pair: Pair) -> None:
    seen: list[Any] = []

    async def check(socket: Socket) -> None:
        seen.append(socket.handshake.auth)

    pair.server.use(check)
    client = pair.client(auth={"token": "t"})
    await within(client.connect())
    assert seen == [{"token": "t"}]
    await until(lambda: pair.sockets)
    assert client.id == pair.sockets[0].id


async def test_a_middleware_refusal_is_a_connect_error(pair: Pair) -> None:
    def refuse(socket: Socket) -> None:
        raise ConnectError("not authorized", {"retry": False})

    pair.server.use(refuse)
    client = pair.client()
    events = Recorder(client, "connect_error", "reconnecting")
    with pytest.raises(ConnectError) as caught:
        await within(client.connect())
    assert str(caught.value) == "not authorized"
    assert caught.value.data == {"retry": False}
    assert events.of("reconnecting") == []
    assert client.connection_state is ConnectionState.DISCONNECTED


async def test_events_calls_and_binary_both_ways(pair: Pair) -> None:
    @pair.server.on("connection")
    def setup(socket: Socket) -> None:
        socket.on("add", lambda a, b: a + b)
        socket.on("echo", lambda *args: socket.emit("echo", *args))

        def fail() -> None:
            raise LookupError("no such room")

        socket.on("fail", fail)

    client = pair.client()
    got: list[tuple[Any, ...]] = []
    client.on("echo", lambda *args: got.append(args))
    client.on("ask", lambda question: f"answer to {question}")

    def refuse() -> None:
        raise PermissionError("never")

    client.on("refuse", refuse)
    await within(client.connect())
    assert await within(client.call("add", 2, 40)) == 42
    with pytest.raises(AckError, match="no such room"):
        await within(client.call("fail"))
    client.emit("echo", "text", 1, b"\x00\x01")
    await until(lambda: got)
    assert got == [("text", 1, b"\x00\x01")]

    socket = pair.sockets[0]
    assert await within(socket.call("ask", "life")) == "answer to life"
    with pytest.raises(AckError, match="never"):
        await within(socket.call("refuse"))


async def test_the_server_handles_a_batch_in_order(pair: Pair) -> None:
    received: list[int] = []

    @pair.server.on("connection")
    def setup(socket: Socket) -> None:
        socket.on("n", received.append)

    client = pair.client()
    await within(client.connect())
    with client.batch():
        for n in range(50):
            client.emit("n", n)
    await until(lambda: len(received) == 50)
    assert received == list(range(50))
    assert pair.server.stats.messages_in == 1


async def test_reconnects_to_a_restarted_server_with_the_queue(pair: Pair) -> None:
    client = pair.client()
    events = Recorder(client, "connect", "disconnect", "reconnecting")
    await within(client.connect())
    port = pair.server.port
    await within(pair.server.close())
    await events.wait("disconnect")
    assert events.of("disconnect") == [("server shutting down",)]
    for n in range(5):
        client.emit("n", n)

    server = NanoSocket(port=port, host="127.0.0.1")
    received: list[int] = []
    server.on("connection", lambda socket: socket.on("n", received.append))
    pair.server = server
    await server.listen()
    await events.wait("connect", 2)
    await until(lambda: len(received) == 5)
    assert received == [0, 1, 2, 3, 4]


async def test_a_server_side_disconnect_is_not_retried(pair: Pair) -> None:
    client = pair.client()
    events = Recorder(client, "disconnect", "reconnecting")
    await within(client.connect())
    await until(lambda: pair.sockets)
    pair.sockets[0].disconnect()
    await events.wait("disconnect")
    await until(lambda: client.connection_state is ConnectionState.DISCONNECTED)
    assert events.of("disconnect") == [("server disconnect",)]
    assert events.of("reconnecting") == []


async def test_server_disconnect_event_sees_the_client_disconnect(pair: Pair) -> None:
    reasons: list[str] = []
    pair.server.on("disconnect", lambda socket, reason: reasons.append(reason))
    client = pair.client()
    await within(client.connect())
    await within(client.disconnect())
    await until(lambda: reasons)
    assert reasons == ["client disconnect"]
