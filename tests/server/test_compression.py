"""permessage-deflate on the NanoSocket server, over real sockets on 127.0.0.1.

Each mode against our client and the ``websockets`` library's; a broadcast to a mix of compressing
and non-compressing clients (compressed once: counted by the server's own counters, no mocks); a
decompression bomb over the wire (1009, and the server keeps serving).
"""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import orjson
import pytest
import websockets.asyncio.client
from server_kit import Harness, Peer, Recorder, decode, within

from nanosocket import NanoSocket, NanoSocketClient, Socket, WebSocketOptions
from nanosocket.protocol.frames import BINARY, CLOSE, TEXT, build_frame, parse_close
from nanosocket.protocol.handshake import build_request, generate_key, parse_ws_url

MODES = ["shared", "dedicated"]
#: A payload that compresses well but not to nothing, and is over the default threshold.
WORDS = " ".join(f"word{i * 7919 % 1013}" for i in range(600))


def compressing(mode: str = "dedicated", **values: Any) -> WebSocketOptions:
    """Client options that offer permessage-deflate."""
    return WebSocketOptions(compression=mode, **values)  # type: ignore[arg-type]


def echo_server(server: NanoSocket) -> None:
    """Every ``echo`` comes back as an ``echoed`` emit and as the ack's value."""

    @server.on("connection")
    def connected(socket: Socket) -> Any:
        def echo(*args: Any) -> Any:
            socket.emit("echoed", *args)
            return list(args)

        socket.on("echo", echo)


@pytest.mark.parametrize("mode", MODES)
async def test_server_and_our_client(ns: Harness, mode: str) -> None:
    server = await ns.start(compression=mode)
    echo_server(server)
    client = NanoSocketClient(f"ws://127.0.0.1:{server.port}", compression=True, reconnection=False)
    try:
        await within(client.connect())
        assert client._ws is not None and client._ws.compression is not None
        echoed = Recorder()
        client.on("echoed", echoed)
        for size in (10, 3000, 60_000):
            text = WORDS[:size]
            assert await within(client.call("echo", text, {"n": size})) == [text, {"n": size}]
            (args,) = (await echoed.wait(1))[-1:]
            assert args == (text, {"n": size})
        stats = server.stats.compression
        assert stats.inflated_messages >= 2  # the client compressed its two big calls
        assert stats.compressed_frames >= 4  # the server compressed two echoes and two acks
    finally:
        await within(client.disconnect())


@pytest.mark.parametrize("mode", MODES)
async def test_server_and_a_websockets_client(ns: Harness, mode: str) -> None:
    server = await ns.start(compression=mode)
    echo_server(server)
    url = f"ws://127.0.0.1:{server.port}/"
    async with websockets.asyncio.client.connect(url, compression="deflate") as ws:
        extensions = ws.response.headers["Sec-WebSocket-Extensions"]
        assert extensions.startswith("permessage-deflate")
        assert ("server_no_context_takeover" in extensions) == (mode == "shared")
        for size in (10, 5000, 50_000):
            await within(
                ws.send(orjson.dumps({"event": "echo", "data": [WORDS[:size]], "ack": size}).decode())
            )
            assert decode(await within(ws.recv())) == {"event": "echoed", "data": [WORDS[:size]]}
            assert decode(await within(ws.recv())) == {"ack": size, "data": [[WORDS[:size]]]}
    assert server.stats.compression.inflated_messages == 3  # websockets compresses even 10 bytes
    assert server.stats.compression.compressed_frames == 4  # ours only from the 1 KiB threshold


async def test_compression_off_answers_no_extension(ns: Harness) -> None:
    server = await ns.start()
    echo_server(server)
    async with websockets.asyncio.client.connect(
        f"ws://127.0.0.1:{server.port}/", compression="deflate"
    ) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(orjson.dumps({"event": "echo", "data": [WORDS]}).decode())
        assert decode(await within(ws.recv())) == {"event": "echoed", "data": [WORDS]}
    peer = await ns.plain(server, options=compressing())
    assert peer.ws.compression is None
    assert server.stats.compression.compressed_frames == 0


async def _news_peers(ns: Harness, server: NanoSocket) -> tuple[list[Peer], list[Peer]]:
    """Three clients that negotiated compression (both client modes) and two that did not."""
    with_compression = [
        await ns.plain(server, options=compressing("dedicated")),
        await ns.plain(server, options=compressing("shared")),
        await ns.plain(server, options=compressing("dedicated")),
    ]
    without = [await ns.plain(server), await ns.plain(server, options=compressing("off"))]
    for peer in with_compression:
        assert peer.ws.compression is not None
    for peer in without:
        assert peer.ws.compression is None
    return with_compression, without


@pytest.mark.parametrize("mode", MODES)
async def test_a_broadcast_is_compressed_once_for_a_mix_of_clients(ns: Harness, mode: str) -> None:
    server = await ns.start(compression=mode)
    joined = Recorder()
    server.on("connection", joined)
    with_compression, without = await _news_peers(ns, server)
    await joined.wait(5)
    stats = server.stats.compression
    before = (stats.compressed_frames, stats.compressed_broadcast_frames)
    assert server.emit("news", WORDS, {"n": 1}) == 5
    assert (stats.compressed_frames, stats.compressed_broadcast_frames) == (before[0] + 1, before[1] + 1)
    for peer in with_compression + without:
        assert await peer.expect("news") == [WORDS, {"n": 1}]
    for peer in with_compression:
        codec = peer.ws.compression
        assert codec is not None and codec.stats.inflated_messages == 1  # it came compressed
    # Small broadcasts stay uncompressed for everyone; a binary (msgpack) one is compressed once too.
    server.emit("tiny", 1)
    server.to([s for s in server.sockets]).emit("blob", os.urandom(16) * 200)
    assert stats.compressed_broadcast_frames == before[1] + 2
    for peer in with_compression + without:
        assert await peer.expect("tiny") == [1]
        (blob,) = await peer.expect("blob")
        assert len(blob) == 3200
    # Per-socket emits after the broadcast: each compressing client still reads them (in dedicated
    # mode the socket's own compressor continues from where the shared frame left the client).
    for socket in server.sockets.values():
        socket.emit("own", WORDS + socket.id)
        socket.emit("own", WORDS + socket.id + "!")
    for peer in with_compression + without:
        first, second = await peer.expect("own"), await peer.expect("own")
        assert first[0].startswith(WORDS) and second[0] == first[0] + "!"


async def test_compressed_frame_counters_reach_metrics(ns: Harness) -> None:
    server = await ns.start(compression="shared")
    peers = [await ns.plain(server, options=compressing()) for _ in range(3)]
    joined = Recorder()
    server.on("connection", joined)
    await ns.plain(server)
    await joined.wait(1)
    server.emit("news", WORDS)
    for peer in peers:
        await peer.expect("news")
    peers[0].emit("hello", WORDS)
    reply = await ns.http(server, "/metrics")
    text = reply.body.decode()
    assert "nanosocket_compressed_frames_total 1.0" in text
    assert "nanosocket_compressed_broadcast_frames_total 1.0" in text
    assert "nanosocket_inflated_messages_total" in text


def _bomb(total: int) -> bytes:
    """A compressed payload inflating to ``total`` zero bytes (see tests/protocol/test_deflate.py)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    piece = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return (piece * (total >> 20))[:-4]


async def _raw_compressing_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP client that offers permessage-deflate and then writes exact bytes."""
    reader, writer = await within(asyncio.open_connection("127.0.0.1", port))
    request = build_request(
        parse_ws_url(f"ws://127.0.0.1:{port}/"), generate_key(), extensions="permessage-deflate"
    )
    writer.write(request)
    head = await within(reader.readuntil(b"\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" in head
    return reader, writer


async def _read_close(reader: asyncio.StreamReader) -> tuple[int, str]:
    while True:
        first, second = await within(reader.readexactly(2))
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await within(reader.readexactly(2)))
        elif length == 127:
            (length,) = struct.unpack("!Q", await within(reader.readexactly(8)))
        payload = await within(reader.readexactly(length))
        if first & 0x0F == CLOSE:
            return parse_close(payload)


@pytest.mark.parametrize("mode", MODES)
async def test_a_decompression_bomb_closes_with_1009_and_the_server_keeps_serving(
    ns: Harness, mode: str
) -> None:
    server = await ns.start(compression=mode, max_compressed_size=2 << 20)
    echo_server(server)
    reader, writer = await _raw_compressing_client(server.port)
    try:
        # 1 GiB of zeros in about 1 MB, as one compressed binary message.
        writer.write(build_frame(BINARY, _bomb(1 << 30), rsv1=True, mask_key=os.urandom(4)))
        code, _ = await _read_close(reader)
        assert code == 1009
    finally:
        writer.transport.abort()
    peer = await ns.plain(server, options=compressing())
    peer.emit("echo", WORDS)
    assert await peer.expect("echoed") == [WORDS]


async def test_rsv1_from_a_client_that_did_not_negotiate_closes_with_1002(ns: Harness) -> None:
    server = await ns.start(compression="shared")
    raw = await ns.tcp(server.port)
    assert await raw.upgrade(server.port) == 101
    assert b"Sec-WebSocket-Extensions" not in raw.head
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (compressor.compress(b'{"event":"x"}') + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    raw.writer.write(build_frame(TEXT, payload, rsv1=True, mask_key=os.urandom(4)))
    _, (code, _) = await raw.read_until_close()
    assert code == 1002
