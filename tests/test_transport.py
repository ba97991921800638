"""transport.WebSocket over real sockets on 127.0.0.1: messages, close, limits, heartbeats, flow control.

Our server is tested against our client and the ``websockets`` library's client, our client
against a ``websockets`` server, and both sides against hand-driven raw peers where exact bytes
matter. Waits are bounded by HANG_GUARD only to turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop
import websockets.exceptions

from nanosocket import (
    ConnectionClosedError,
    ConnectionClosedOK,
    SendStatus,
    WebSocket,
    WebSocketOptions,
    connect,
    serve,
)
from nanosocket.protocol.frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, build_frame
from nanosocket.protocol.handshake import Request
from nanosocket.transport import FLUSH_BATCH, INBOX_HIGH_WATER, ClientSide, read_buffer

HANG_GUARD = 10.0
KiB = 1024
MiB = 1024 * KiB


async def within(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, HANG_GUARD)


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition that only changes through loop events."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - the condition has no event to wait on
            await asyncio.sleep(0.005)

    await within(poll())


# ------------------------------------------------------------------ echo pairs


class EchoClient:
    """One client API over the three pairings: send, recv, and the limits it was opened with."""

    def __init__(self, send: Callable[[str | bytes], Awaitable[None]], recv: Callable[[], Awaitable[Any]]):
        self.send = send
        self._recv = recv

    async def recv(self) -> str | bytes:
        return await within(self._recv())


async def _ws_echo(ws: Any) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.exceptions.ConnectionClosed:
        pass  # the test's teardown drops its clients


def _our_client(ws: WebSocket) -> EchoClient:
    async def send(message: str | bytes) -> None:
        assert ws.send(message)

    return EchoClient(send, ws.recv)


PAIRINGS = ["ours-ours", "websockets-client", "websockets-server"]


@pytest.fixture(params=PAIRINGS)
def open_echo(request: pytest.FixtureRequest, net: Any) -> Callable[..., Awaitable[EchoClient]]:
    """Open a client to an echo server: ``max_size`` raises every message limit on both sides."""
    pairing = request.param

    async def open_pair(max_size: int = 1 * MiB) -> EchoClient:
        ours = WebSocketOptions(max_payload_length=max_size, max_backpressure=max(64 * KiB, 2 * max_size))
        if pairing == "websockets-server":
            port = await net.ws_serve(_ws_echo, max_size=max_size)
            return _our_client(await net.connect(port, options=ours))
        server = await net.serve(options=ours)
        if pairing == "ours-ours":
            return _our_client(await net.connect(server.port, options=ours))
        ws = await net.ws_connect(server.port, max_size=max_size)
        return EchoClient(ws.send, ws.recv)

    return open_pair


@pytest.mark.parametrize(
    "message",
    ["hello", "héllo wörld ✓ 🎉", "", b"\x00\x01\xfe\xff", b""],
    ids=["text", "unicode", "empty-text", "binary", "empty-binary"],
)
async def test_echo_keeps_type_and_content(open_echo: Any, message: str | bytes) -> None:
    client = await open_echo()
    await client.send(message)
    reply = await client.recv()
    assert type(reply) is type(message)
    assert reply == message


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_one_mib_message_at_the_default_limit(open_echo: Any, kind: str) -> None:
    client = await open_echo()
    message: str | bytes = "x" * MiB if kind == "text" else bytes(range(256)) * (MiB // 256)
    await client.send(message)
    assert await client.recv() == message


async def test_larger_message_with_raised_limits(open_echo: Any) -> None:
    client = await open_echo(max_size=16 * MiB)
    message = bytes(range(251)) * (6 * MiB // 251)
    await client.send(message)
    assert await client.recv() == message


async def test_burst_arrives_in_order(open_echo: Any) -> None:
    client = await open_echo()
    messages = [f"message {i}" if i % 2 else f"m{i}".encode() for i in range(500)]
    for message in messages:
        await client.send(message)
    replies = [await client.recv() for _ in messages]
    assert replies == messages


async def test_send_accepts_bytes_like(net: Any) -> None:
    server = await net.serve()
    client = await net.connect(server.port)
    assert client.send(bytearray(b"abc")) is SendStatus.SUCCESS
    assert client.send(memoryview(b"xyz0")[1:]) is SendStatus.SUCCESS
    assert client.send_bytes(b"raw") is SendStatus.SUCCESS
    assert client.send_text("txt") is SendStatus.SUCCESS
    assert [await within(client.recv()) for _ in range(4)] == [b"abc", b"yz0", b"raw", "txt"]


# ------------------------------------------------------------------ fragments


async def test_fragmented_messages_from_a_websockets_client(net: Any) -> None:
    server = await net.serve()
    ws = await net.ws_connect(server.port)
    await ws.send(["frag", "mented ", "tëxt"])
    await ws.send([b"\x00" * 10, b"\x01" * 70000, b"\x02"])
    assert await within(ws.recv()) == "fragmented tëxt"
    assert await within(ws.recv()) == b"\x00" * 10 + b"\x01" * 70000 + b"\x02"


async def test_fragmented_messages_from_a_websockets_server(net: Any) -> None:
    async def handler(ws: Any) -> None:
        await ws.send(["a", "β", "c"])
        await ws.send([b"1", b"2"])
        await ws.wait_closed()

    port = await net.ws_serve(handler)
    client = await net.connect(port)
    assert await within(client.recv()) == "aβc"
    assert await within(client.recv()) == b"12"


async def test_fragments_interleaved_with_a_ping(net: Any) -> None:
    server = await net.serve()
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    # A UTF-8 sequence split across fragments, and a ping between them.
    raw.send_frame(TEXT, "é".encode()[:1], fin=False)
    raw.send_frame(PING, b"mid")
    raw.send_frame(CONTINUATION, "é".encode()[1:] + b"!", fin=True)
    assert await within(raw.read_frame()) == (True, PONG, b"mid")
    assert await within(raw.read_frame()) == (True, TEXT, "é!".encode())


# ------------------------------------------------------------------ ping / pong


async def test_websockets_client_ping_is_answered(net: Any) -> None:
    server = await net.serve()
    ws = await net.ws_connect(server.port)
    pong = await ws.ping(b"are you there")
    await within(pong)


async def test_server_answers_a_raw_ping_and_sends_its_own(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    raw.send_frame(PING, b"from client")
    assert await within(raw.read_frame()) == (True, PONG, b"from client")
    assert server_ws.ping(b"from server") is SendStatus.SUCCESS
    assert await within(raw.read_frame()) == (True, PING, b"from server")
    raw.send_frame(PONG, b"from server")
    raw.send_frame(TEXT, b"still open")
    assert await within(raw.read_frame()) == (True, TEXT, b"still open")


async def test_client_answers_a_raw_server_ping_and_sends_its_own(net: Any) -> None:
    seen: asyncio.Queue[tuple[bool, int, bytes]] = asyncio.Queue()

    async def raw_server(peer: Any) -> None:
        await peer.accept_upgrade()
        peer.send_frame(PING, b"from server")
        while True:
            frame = await peer.read_frame()
            seen.put_nowait(frame)
            if frame[1] == PING:
                peer.send_frame(PONG, frame[2])
                peer.send_frame(TEXT, b"ponged")

    port = await net.raw_server(raw_server)
    client = await net.connect(port)
    assert await within(seen.get()) == (True, PONG, b"from server")
    assert client.ping(b"from client") is SendStatus.SUCCESS
    assert await within(seen.get()) == (True, PING, b"from client")
    assert await within(client.recv()) == "ponged"
    assert client.open


async def test_websockets_server_ping_is_answered_by_our_client(net: Any) -> None:
    async def handler(ws: Any) -> None:
        pong = await ws.ping(b"ping from websockets")
        await asyncio.wait_for(pong, HANG_GUARD)
        await ws.send("got the pong")
        await ws.wait_closed()

    port = await net.ws_serve(handler)
    client = await net.connect(port)
    assert await within(client.recv()) == "got the pong"


# ------------------------------------------------------------------ closing


async def test_close_from_our_client(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    client_closes = net.record_close(client)
    server_ws = await accepted.next()
    client.close(4000, "client bye")
    assert not client.open
    assert await accepted.closed(server_ws) == (4000, "client bye")
    assert (await client_closes.wait())[0] == 4000
    await within(client.wait_closed())
    assert client.closed and server_ws.closed
    assert client.close_code == 4000 and server_ws.close_code == 4000
    assert server_ws.close_reason == "client bye"


async def test_close_from_our_server(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    client_closes = net.record_close(client)
    server_ws = await accepted.next()
    server_ws.close(4001, "server bye")
    assert await client_closes.wait() == (4001, "server bye")
    assert (await accepted.closed(server_ws))[0] == 4001
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert (info.value.code, info.value.reason) == (4001, "server bye")
    assert client.close_reason == "server bye"


async def test_normal_close_raises_connection_closed_ok(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    server_ws.close()
    with pytest.raises(ConnectionClosedOK) as info:
        await within(client.recv())
    assert info.value.code == 1000
    assert await accepted.closed(server_ws) == (1000, "")


async def test_close_from_a_websockets_client(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    ws = await net.ws_connect(server.port)
    server_ws = await accepted.next()
    await within(ws.close(4002, "websockets bye"))
    assert await accepted.closed(server_ws) == (4002, "websockets bye")
    assert ws.close_code == 4002


async def test_our_server_closes_a_websockets_client(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    ws = await net.ws_connect(server.port)
    server_ws = await accepted.next()
    server_ws.close(4003, "going")
    with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
        await within(ws.recv())
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "going")
    # websockets echoes the whole close payload, so our side sees the reason too.
    assert await accepted.closed(server_ws) == (4003, "going")


async def test_our_client_closes_a_websockets_server(net: Any) -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.get_running_loop().create_future()

    async def handler(ws: Any) -> None:
        await ws.wait_closed()
        seen.set_result((ws.close_code, ws.close_reason))

    port = await net.ws_serve(handler)
    client = await net.connect(port)
    closes = net.record_close(client)
    client.close(1001, "leaving")
    assert await within(seen) == (1001, "leaving")
    assert await closes.wait() == (1001, "leaving")


async def test_a_websockets_server_closes_our_client(net: Any) -> None:
    async def handler(ws: Any) -> None:
        await ws.close(4004, "bye from websockets")

    port = await net.ws_serve(handler)
    client = await net.connect(port)
    # The close may come with the 101 response, before connect() returns: recv() reports it.
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert (info.value.code, info.value.reason) == (4004, "bye from websockets")
    await within(client.wait_closed())
    assert (client.close_code, client.close_reason) == (4004, "bye from websockets")


async def test_close_is_idempotent_and_sends_are_dropped_after_it(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    closes = net.record_close(client)
    server_ws = await accepted.next()
    client.close()
    client.close(4000, "ignored")
    assert client.send("late") is SendStatus.DROPPED
    assert client.ping() is SendStatus.DROPPED
    await within(client.wait_closed())
    client.close()
    client.abort()
    assert await accepted.closed(server_ws) == (1000, "")
    await within(server_ws.wait_closed())
    assert closes.calls == [(1000, "")]
    assert server_ws.send(b"late") is SendStatus.DROPPED


async def test_client_close_unanswered_is_dropped_after_close_timeout(net: Any) -> None:
    seen: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    async def deaf_server(peer: Any) -> None:
        await peer.accept_upgrade()
        seen.put_nowait(await peer.read_close())
        await peer.read_to_eof()

    port = await net.raw_server(deaf_server)
    client = await net.connect(port, options=WebSocketOptions(close_timeout=0.3))
    closes = net.record_close(client)
    client.close(1000, "bye")
    assert await within(seen.get()) == (1000, "bye")
    # No close frame came back: the connection is dropped, and that is 1006 (RFC 6455 §7.1.5).
    assert await closes.wait() == (1006, "")
    assert client.closed


async def test_close_without_status_is_1005(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    raw.send_frame(CLOSE, b"")
    assert await within(raw.read_frame()) == (True, CLOSE, b"")
    assert await within(raw.read_to_eof()) == b""
    assert await accepted.closed(server_ws) == (1005, "")


async def test_server_close_answered_by_a_raw_peer(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    server_ws.close(1001, "restart")
    assert await within(raw.read_close()) == (1001, "restart")
    raw.send_frame(CLOSE, (1001).to_bytes(2, "big") + b"ok")
    # The server ends the TCP connection once the handshake is done.
    assert await within(raw.read_to_eof()) == b""
    assert await accepted.closed(server_ws) == (1001, "ok")


# ------------------------------------------------------------------ abrupt drops


async def test_client_drop_is_1006_once_on_the_server(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    client_closes = net.record_close(client)
    server_ws = await accepted.next()
    client.abort()
    assert await accepted.closed(server_ws) == (1006, "")
    assert await client_closes.wait() == (1006, "")
    await within(server_ws.wait_closed())
    server_ws.close()
    server_ws.abort()
    await asyncio.sleep(0)
    assert accepted.closes[server_ws].calls == [(1006, "")]
    assert client_closes.calls == [(1006, "")]
    assert server_ws.close_code == 1006


async def test_server_drop_is_1006_on_the_client(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    closes = net.record_close(client)
    server_ws = await accepted.next()
    server_ws.abort()
    assert await closes.wait() == (1006, "")
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert info.value.code == 1006
    assert closes.calls == [(1006, "")]


async def test_websockets_client_drop_is_1006(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    ws = await net.ws_connect(server.port)
    server_ws = await accepted.next()
    ws.transport.abort()
    assert await accepted.closed(server_ws) == (1006, "")
    assert accepted.closes[server_ws].calls == [(1006, "")]


async def test_websockets_server_drop_is_1006_on_our_client(net: Any) -> None:
    async def handler(ws: Any) -> None:
        ws.transport.abort()

    port = await net.ws_serve(handler)
    client = await net.connect(port)
    # The drop may come right after the 101 response, before connect() returns.
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert info.value.code == 1006
    assert client.closed and client.close_code == 1006


async def test_raw_peer_half_close_without_close_frame_is_1006(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    raw.writer.write_eof()
    assert await accepted.closed(server_ws) == (1006, "")


async def test_one_prebuilt_frame_goes_to_every_recipient(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    ours = [await net.connect(server.port) for _ in range(2)]
    theirs = await net.ws_connect(server.port)
    recipients = [await accepted.next() for _ in range(3)]
    frame = build_frame(TEXT, "to everyone ✓".encode())
    assert all(ws.send_frame(frame) is SendStatus.SUCCESS for ws in recipients)
    for client in ours:
        assert await within(client.recv()) == "to everyone ✓"
    assert await within(theirs.recv()) == "to everyone ✓"
    recipients[0].close()
    await within(recipients[0].wait_closed())
    assert recipients[0].send_frame(frame) is SendStatus.DROPPED


# ------------------------------------------------------------------ corked writes


async def test_replies_from_on_message_to_a_burst_all_arrive_in_order(net: Any) -> None:
    statuses: list[SendStatus] = []

    def triple(ws: WebSocket, request: Request) -> None:
        def on_message(message: str | bytes) -> None:
            for suffix in ("a", "b", "c"):
                statuses.append(ws.send(f"{message!s}-{suffix}"))

        ws.on_message = on_message

    server = await net.serve(triple)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    # The whole burst in one write: the server reads it as one batch (or a few).
    burst = b"".join(_client_frame(TEXT, str(i).encode()) for i in range(300))
    raw.write(burst)
    replies = [(await within(raw.read_frame()))[2].decode() for _ in range(900)]
    assert replies == [f"{i}-{suffix}" for i in range(300) for suffix in ("a", "b", "c")]
    assert statuses == [SendStatus.SUCCESS] * 900


def _client_frame(opcode: int, payload: bytes) -> bytes:
    return build_frame(opcode, payload, mask_key=b"\x01\x02\x03\x04")


async def test_close_from_on_message_follows_the_replies(net: Any) -> None:
    def reply_then_close(ws: WebSocket, request: Request) -> None:
        def on_message(message: str | bytes) -> None:
            ws.send(message)
            if message == "last":
                ws.close(4005, "done")

        ws.on_message = on_message

    server = await net.serve(reply_then_close)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    raw.write(b"".join(_client_frame(TEXT, m) for m in (b"one", b"last", b"never answered")))
    assert await within(raw.read_frame()) == (True, TEXT, b"one")
    assert await within(raw.read_frame()) == (True, TEXT, b"last")
    assert await within(raw.read_close()) == (4005, "done")


# ------------------------------------------------------------------ the shared read buffer


async def test_partial_frames_of_two_connections_survive_each_others_reads(net: Any) -> None:
    # Both connections read into one buffer: what a read leaves unparsed is copied out of it.
    server = await net.serve()
    first, second = await net.raw(server.port), await net.raw(server.port)
    for peer in (first, second):
        assert await peer.handshake(server.port) == 101
    frames = [_client_frame(TEXT, str(n).encode() * 3000) for n in (1, 2)]
    for cut in (1, 7, 2000, len(frames[0]) - 1):
        first.write(frames[0][:cut])
        second.write(frames[1][:cut])
        await asyncio.sleep(0.01)  # each head is read on its own (not timed: either way passes)
        second.write(frames[1][cut:])
        first.write(frames[0][cut:] + _client_frame(TEXT, b"after"))
        assert await within(first.read_frame()) == (True, TEXT, b"1" * 3000)
        assert await within(first.read_frame()) == (True, TEXT, b"after")
        assert await within(second.read_frame()) == (True, TEXT, b"2" * 3000)


async def test_the_event_loop_keeps_one_bound_method_of_a_connection(net: Any) -> None:
    # uvloop keeps protocol.data_received, .get_buffer and .buffer_updated for every connection
    # (when they exist): the first does not, the second is one function for all.
    accepted = net.accepting()
    server = await net.serve(accepted)
    for _ in range(2):
        await net.connect(server.port)
    first, second = await accepted.next(), await accepted.next()
    assert first.get_buffer is second.get_buffer
    assert not hasattr(first, "data_received")
    assert first.buffer_updated.__self__ is first


def test_event_loops_in_two_threads_read_into_buffers_of_their_own() -> None:
    def echo(ws: WebSocket, request: Request) -> None:
        ws.on_message = ws.send

    async def exchange(tag: bytes) -> object:
        server = await serve(echo, "127.0.0.1", 0)
        client = await connect(f"ws://127.0.0.1:{server.port}/")
        try:
            for n in range(50):
                payload = tag * (n * 997 % 70000 + 1)
                assert client.send(payload)
                assert await within(client.recv()) == payload
        finally:
            client.close()
            await server.close()
        return read_buffer.view

    results: dict[bytes, object] = {}

    def run(tag: bytes) -> None:
        try:
            results[tag] = uvloop.run(exchange(tag))
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[tag] = exc

    threads = [threading.Thread(target=run, args=(tag,)) for tag in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD * 3)
    views = [results.get(b"a"), results.get(b"b")]
    assert all(isinstance(view, memoryview) for view in views), views
    assert views[0] is not views[1]


# ------------------------------------------------------------------ deferred writes


async def test_sends_outside_a_read_are_written_a_batch_of_connections_per_loop_iteration(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    count = 2 * FLUSH_BATCH + 10
    clients = [await net.connect(server.port) for _ in range(count)]
    recipients = [await accepted.next() for _ in range(count)]
    first, second = build_frame(TEXT, b"first"), build_frame(TEXT, b"second")
    assert all(ws.send_frame(first) is SendStatus.SUCCESS for ws in recipients)
    assert all(ws.buffered_amount for ws in recipients)  # the writes follow, outside this code
    await asyncio.sleep(0)  # one loop iteration: the first batch is written
    assert [ws for ws in recipients if ws.buffered_amount] == recipients[FLUSH_BATCH:]
    # A send to a connection still waiting joins its queued output; a connection already written
    # to waits again, behind the ones still waiting.
    assert all(ws.send_frame(second) is SendStatus.SUCCESS for ws in recipients)
    await asyncio.sleep(0)
    still_waiting = recipients[:FLUSH_BATCH] + recipients[2 * FLUSH_BATCH :]
    assert [ws for ws in recipients if ws.buffered_amount] == still_waiting
    await until(lambda: not any(ws.buffered_amount for ws in recipients))
    for client in clients:
        assert [await within(client.recv()), await within(client.recv())] == ["first", "second"]


async def test_a_read_between_two_batches_is_answered_before_the_later_batches(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    count = 6 * FLUSH_BATCH
    for _ in range(count):
        await net.connect(server.port)
    recipients = [await accepted.next() for _ in range(count)]
    asker = await net.raw(server.port)
    assert await asker.handshake(server.port) == 101
    await accepted.next()
    asker.write(_client_frame(TEXT, b"are you there"))  # now in the server's socket, unread
    for ws in recipients:
        ws.send_frame(build_frame(TEXT, b"news"))
    assert await within(asker.read_frame()) == (True, TEXT, b"are you there")
    # The echo went out between two batches: later ones still waited when it arrived.
    assert any(ws.buffered_amount for ws in recipients)
    await until(lambda: not any(ws.buffered_amount for ws in recipients))


# ------------------------------------------------------------------ limits over the wire


async def test_message_over_the_limit_closes_1009_and_the_server_keeps_serving(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    big = await net.ws_connect(server.port, max_size=None)
    big_ws = await accepted.next()
    with pytest.raises(websockets.exceptions.ConnectionClosed):
        await big.send(b"x" * (MiB + 1))
        await within(big.recv())
    assert (await accepted.closed(big_ws))[0] == 1009
    other = await net.connect(server.port)
    assert other.send("still serving")
    assert await within(other.recv()) == "still serving"


async def test_small_limit_1009_is_reported_to_our_client(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted, options=WebSocketOptions(max_payload_length=1000))
    client = await net.connect(server.port)
    closes = net.record_close(client)
    server_ws = await accepted.next()
    assert client.send(b"y" * 1000)
    assert await within(client.recv()) == b"y" * 1000
    client.send(b"y" * 1001)
    code, reason = await closes.wait()
    assert code == 1009 and "1000" in reason
    assert (await accepted.closed(server_ws))[0] == 1009
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert info.value.code == 1009


async def test_our_client_enforces_its_own_limit(net: Any) -> None:
    async def handler(ws: Any) -> None:
        await ws.send("z" * 2000)
        await ws.wait_closed()

    port = await net.ws_serve(handler)
    client = await net.connect(port, options=WebSocketOptions(max_payload_length=1000))
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert info.value.code == 1009


async def test_invalid_utf8_closes_1007(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    raw.send_frame(TEXT, b"valid then \xff")
    assert (await within(raw.read_close()))[0] == 1007
    assert (await accepted.closed(server_ws))[0] == 1007
    await within(raw.read_to_eof())


async def test_unmasked_client_frame_closes_1002(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    raw.send_frame(BINARY, b"not masked", mask=False)
    assert (await within(raw.read_close()))[0] == 1002
    assert (await accepted.closed(server_ws))[0] == 1002
    await within(raw.read_to_eof())


async def test_masked_server_frame_fails_our_client_1002(net: Any) -> None:
    async def raw_server(peer: Any) -> None:
        await peer.accept_upgrade()
        peer.send_frame(TEXT, b"masked by a server", mask=True)
        await peer.read_to_eof()

    port = await net.raw_server(raw_server)
    client = await net.connect(port)
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert info.value.code == 1002


async def test_on_message_that_raises_closes_1011(net: Any) -> None:
    def fragile(ws: WebSocket, request: Request) -> None:
        def on_message(message: str | bytes) -> None:
            if message == "boom":
                raise RuntimeError("handler bug")
            ws.send(message)

        ws.on_message = on_message

    server = await net.serve(fragile)
    victim = await net.connect(server.port)
    bystander = await net.connect(server.port)
    closes = net.record_close(victim)
    victim.send("boom")
    assert await closes.wait() == (1011, "internal error")
    bystander.send("fine")
    assert await within(bystander.recv()) == "fine"


# ------------------------------------------------------------------ heartbeats


async def test_silent_peer_that_answers_pings_stays_connected(net: Any) -> None:
    accepted = net.accepting()
    # A pong has idle_timeout / 2 to come back: generous enough for a loaded machine.
    server = await net.serve(accepted, options=WebSocketOptions(idle_timeout=1.0))
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    pings = 0
    while pings < 3:
        _, opcode, payload = await within(raw.read_frame())
        assert opcode == PING, "the server closed a peer that answers its pings"
        pings += 1
        raw.send_frame(PONG, payload)
    assert server_ws.open
    raw.send_frame(TEXT, b"alive")
    assert await within(raw.read_frame()) == (True, TEXT, b"alive")


async def test_our_silent_client_answers_server_pings(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted, options=WebSocketOptions(idle_timeout=1.0))
    client = await net.connect(server.port, options=WebSocketOptions(idle_timeout=None))
    server_ws = await accepted.next()
    # Several heartbeat periods of silence from the client's side.
    await asyncio.sleep(2.5)
    assert client.open and server_ws.open
    client.send("alive")
    assert await within(client.recv()) == "alive"


async def test_peer_that_does_not_answer_pings_is_closed_1011(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted, options=WebSocketOptions(idle_timeout=0.4, close_timeout=0.5))
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    # The raw peer reads nothing and answers nothing from here on.
    assert await accepted.closed(server_ws) == (1011, "ping timeout")
    assert (await within(raw.read_frame()))[1] == PING
    assert await within(raw.read_close()) == (1011, "ping timeout")


async def test_client_heartbeat_detects_a_silent_server(net: Any) -> None:
    async def silent_server(peer: Any) -> None:
        await peer.accept_upgrade()
        await peer.read_to_eof()

    port = await net.raw_server(silent_server)
    client = await net.connect(port, options=WebSocketOptions(idle_timeout=0.4, close_timeout=0.5))
    closes = net.record_close(client)
    assert await closes.wait() == (1011, "ping timeout")
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert info.value.code == 1011


async def test_heartbeat_is_shared_and_survives_connections_coming_and_going(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted, options=WebSocketOptions(idle_timeout=0.4, close_timeout=0.5))
    first = await net.connect(server.port, options=WebSocketOptions(idle_timeout=None))
    first.close()
    await within(first.wait_closed())
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    await accepted.next()
    silent = await accepted.next()
    assert await accepted.closed(silent) == (1011, "ping timeout")


# ------------------------------------------------------------------ backpressure


def test_send_status_values_and_truthiness() -> None:
    assert [int(s) for s in (SendStatus.DROPPED, SendStatus.SUCCESS, SendStatus.BACKPRESSURE)] == [0, 1, 2]
    assert not SendStatus.DROPPED
    assert SendStatus.SUCCESS
    assert SendStatus.BACKPRESSURE


async def _stalled_peer(net: Any, options: WebSocketOptions) -> tuple[Any, Any, WebSocket]:
    """A raw peer with a tiny receive buffer that reads nothing after the handshake."""
    accepted = net.accepting()
    server = await net.serve(accepted, options=options)
    raw = await net.raw(server.port, rcvbuf=4096)
    assert await raw.handshake(server.port) == 101
    return accepted, raw, await accepted.next()


def _fill(
    ws: WebSocket, until_status: SendStatus = SendStatus.DROPPED, limit: int = 8192
) -> list[SendStatus]:
    """Send numbered 16 KiB binary messages until one reports ``until_status`` (or ``limit`` sends)."""
    statuses = []
    for i in range(limit):
        status = ws.send(i.to_bytes(4, "big") + bytes(16 * KiB - 4))
        statuses.append(status)
        if status is until_status:
            break
    return statuses


async def test_drop_policy_drops_sends_and_keeps_the_connection(net: Any) -> None:
    options = WebSocketOptions(backpressure_policy="drop", max_backpressure=64 * KiB)
    _, raw, server_ws = await _stalled_peer(net, options)
    statuses = _fill(server_ws)
    assert statuses[0] is SendStatus.SUCCESS
    assert statuses[-1] is SendStatus.DROPPED
    assert SendStatus.BACKPRESSURE in statuses
    assert server_ws.buffered_amount > 64 * KiB
    assert server_ws.send("dropped too") is SendStatus.DROPPED
    assert server_ws.open and not server_ws.closed
    # The peer catches up: every accepted message arrives, in order, and sending works again.
    accepted_count = len(statuses) - 1
    for i in range(accepted_count):
        _, opcode, payload = await within(raw.read_frame())
        assert (opcode, int.from_bytes(payload[:4], "big")) == (BINARY, i)
    await until(lambda: server_ws.buffered_amount == 0)
    assert server_ws.send("after") is SendStatus.SUCCESS
    assert await within(raw.read_frame()) == (True, TEXT, b"after")
    assert server_ws.open


async def test_close_policy_closes_the_slow_peer_1008(net: Any) -> None:
    options = WebSocketOptions(backpressure_policy="close", max_backpressure=64 * KiB, close_timeout=0.3)
    accepted, _, server_ws = await _stalled_peer(net, options)
    server = net.servers[-1]
    statuses = _fill(server_ws)
    assert statuses[-1] is SendStatus.DROPPED
    assert SendStatus.BACKPRESSURE in statuses
    assert not server_ws.open
    assert await accepted.closed(server_ws) == (1008, "backpressure limit exceeded")
    assert server_ws not in server.connections
    other = await net.connect(server.port)
    other.send("next client")
    assert await within(other.recv()) == "next client"


async def test_volatile_frames_are_dropped_over_the_limit_without_closing(net: Any) -> None:
    options = WebSocketOptions(backpressure_policy="close", max_backpressure=64 * KiB, close_timeout=0.3)
    accepted, _, server_ws = await _stalled_peer(net, options)
    frame = build_frame(BINARY, bytes(16 * KiB))
    statuses = []
    for _ in range(8192):
        statuses.append(server_ws.send_frame(frame, volatile=True))
        if statuses[-1] is SendStatus.DROPPED:
            break
    assert statuses[-1] is SendStatus.DROPPED
    assert server_ws.open, "a volatile frame must not trigger the close policy"
    # A regular send over the limit applies the policy.
    assert server_ws.send_frame(frame) is SendStatus.DROPPED
    assert await accepted.closed(server_ws) == (1008, "backpressure limit exceeded")


async def test_sends_report_backpressure_then_success_once_drained(net: Any) -> None:
    options = WebSocketOptions(backpressure_policy="drop", max_backpressure=32 * MiB)
    _, raw, server_ws = await _stalled_peer(net, options)
    statuses = _fill(server_ws, until_status=SendStatus.BACKPRESSURE)
    assert statuses[0] is SendStatus.SUCCESS
    assert statuses[-1] is SendStatus.BACKPRESSURE
    assert server_ws.buffered_amount > 0
    for i in range(len(statuses)):
        _, _, payload = await within(raw.read_frame())
        assert int.from_bytes(payload[:4], "big") == i
    await until(lambda: server_ws.buffered_amount == 0)
    assert server_ws.send(b"drained") is SendStatus.SUCCESS


# ------------------------------------------------------------------ recv() and the inbox


def _queue_only(ws: WebSocket, request: Request) -> None:
    """No on_message: messages wait for recv()."""


async def test_recv_returns_messages_in_order(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    messages = [f"t{i}" if i % 3 else f"b{i}".encode() for i in range(30)]
    for message in messages:
        client.send(message)
    assert [await within(server_ws.recv()) for _ in messages] == messages


async def test_inbox_pauses_reading_at_high_water_and_resumes(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(
        server.port, options=WebSocketOptions(backpressure_policy="drop", max_backpressure=512 * MiB)
    )
    server_ws = await accepted.next()
    sent: list[str | bytes] = [f"small {i}" for i in range(INBOX_HIGH_WATER)]
    for message in sent:
        client.send(message)
    # Nobody calls recv(): once the inbox is full the server stops reading, so the kernel
    # buffers fill and our client's own buffer starts to grow.
    block = bytes(256 * KiB)
    for i in range(2000):
        if client.buffered_amount > 0:
            break
        message = i.to_bytes(4, "big") + block
        assert client.send(message)
        sent.append(message)
        await asyncio.sleep(0)
    assert client.buffered_amount > 0, "the server kept reading with a full inbox"
    received = [await within(server_ws.recv()) for _ in sent]
    assert received == sent
    client.send("and more")
    assert await within(server_ws.recv()) == "and more"


async def test_messages_queued_before_close_are_still_received(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    client.send("one")
    client.send(b"two")
    client.close(1001, "away")
    await within(server_ws.wait_closed())
    assert await within(server_ws.recv()) == "one"
    assert await within(server_ws.recv()) == b"two"
    with pytest.raises(ConnectionClosedOK) as info:
        await within(server_ws.recv())
    assert (info.value.code, info.value.reason) == (1001, "away")
    with pytest.raises(ConnectionClosedOK):
        await within(server_ws.recv())


async def test_pending_recv_is_woken_by_a_drop(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    pending = asyncio.ensure_future(server_ws.recv())
    await asyncio.sleep(0)
    client.abort()
    with pytest.raises(ConnectionClosedError) as info:
        await within(pending)
    assert info.value.code == 1006


async def test_concurrent_recv_is_refused_and_the_first_one_keeps_working(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    first = asyncio.ensure_future(server_ws.recv())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already"):
        await within(server_ws.recv())
    client.send("for the first")
    assert await within(first) == "for the first"
    pending = asyncio.ensure_future(server_ws.recv())
    await asyncio.sleep(0)
    client.abort()
    with pytest.raises(ConnectionClosedError):
        await within(pending)


async def test_cancelled_recv_loses_no_message(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(server_ws.recv(), 0.01)
    client.send("kept")
    assert await within(server_ws.recv()) == "kept"


async def test_recv_after_an_error_close_raises_connection_closed_error(net: Any) -> None:
    accepted = net.accepting(setup=_queue_only)
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    server_ws.close(1011, "oops")
    with pytest.raises(ConnectionClosedError) as info:
        await within(client.recv())
    assert (info.value.code, info.value.reason) == (1011, "oops")
    with pytest.raises(ConnectionClosedError):
        await within(server_ws.recv())


# ------------------------------------------------------------------ properties


async def test_properties_through_the_life_of_a_connection(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    assert client.is_client and not server_ws.is_client
    assert client.remote_address == ("127.0.0.1", server.port)
    assert server_ws.remote_address is not None and server_ws.remote_address[0] == "127.0.0.1"
    assert client.open and server_ws.open
    assert not client.closed and not server_ws.closed
    assert client.close_code is None and client.close_reason == ""
    assert client.buffered_amount == 0
    assert client.subprotocol is None
    assert "client" in repr(client) and "OPEN" in repr(client)
    assert "server" in repr(server_ws)
    waiters = [asyncio.ensure_future(client.wait_closed()) for _ in range(3)]
    client.close()
    assert not client.open
    await within(asyncio.gather(*waiters))
    await within(server_ws.wait_closed())
    assert client.closed and server_ws.closed
    assert not client.open and not server_ws.open
    assert client.close_code == 1000 and server_ws.close_code == 1000
    await within(client.wait_closed())
    assert client.buffered_amount == 0


async def test_cancelled_wait_closed_does_not_break_the_connection(net: Any) -> None:
    server = await net.serve()
    client = await net.connect(server.port)
    waiter = asyncio.ensure_future(client.wait_closed())
    await asyncio.sleep(0)
    waiter.cancel()
    client.send("still fine")
    assert await within(client.recv()) == "still fine"
    client.close()
    await within(client.wait_closed())


async def test_websocket_needs_exactly_one_side() -> None:
    with pytest.raises(ValueError):
        WebSocket(WebSocketOptions())
    endpoint: Any = object()
    side = ClientSide(b"", "key", (), asyncio.get_running_loop().create_future(), None)
    with pytest.raises(ValueError):
        WebSocket(WebSocketOptions(), endpoint=endpoint, client=side)


async def test_frames_sent_with_the_101_wait_for_the_code_awaiting_connect() -> None:
    """A message and a frame that fails the connection, in the same write as the 101 response:
    the code awaiting connect() (in the same Task) sets on_message first, so the message is
    answered before the close."""
    from nanosocket import connect
    from nanosocket.protocol.frames import parse_close
    from nanosocket.protocol.handshake import accept_key

    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
            + build_frame(TEXT, b"first")
            + bytes((0x80 | 0x3, 0))  # a reserved opcode: the client fails the connection
        )
        received.set_result(await reader.read(1 << 16))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10):  # not wait_for: connect() runs in this Task
            ws = await connect(f"ws://127.0.0.1:{port}/")
        ws.on_message = ws.send
        data = await asyncio.wait_for(received, 10)
        await asyncio.wait_for(ws.wait_closed(), 10)
    finally:
        server.close()
    # The echo (masked, 5 bytes), then the close frame with 1002.
    assert data[0] == 0x80 | TEXT and data[1] == 0x80 | 5
    echo = bytes(b ^ data[2 + i % 4] for i, b in enumerate(data[6:11]))
    assert echo == b"first"
    close = data[11:]
    assert close[0] == 0x80 | CLOSE
    payload = bytes(b ^ close[2 + i % 4] for i, b in enumerate(close[6 : 6 + (close[1] & 0x7F)]))
    assert parse_close(payload)[0] == 1002
