"""server.close() ends whatever the peers do: each connection is closed with 1001 and, when its
peer does not finish the closing handshake, dropped after ``close_timeout``.

Real sockets on 127.0.0.1, peers written by hand (server_kit.RawTCP): peers that stop reading
with full buffers, peers that never answer the close, peers that keep sending without reading,
connections lost during the close, peers still in their opening handshake. ``close_timeout`` is
short and ``idle_timeout`` long, so that only the close timer can end a stuck connection within
the hang guard (nothing is timed: a close that is not bounded hangs and fails the test).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

from server_kit import Harness, RawTCP, within

from nanosocket import NanoSocket, Socket
from nanosocket.protocol.frames import CLOSE, PING, TEXT, encode_close

KiB = 1024
MiB = 1024 * KiB
#: Short enough that a stuck connection is dropped well within the hang guard.
CLOSE_TIMEOUT = 0.2
#: Heartbeats must not be what ends a stuck connection here.
IDLE_TIMEOUT = 600.0
PEERS = 8


async def start(ns: Harness, **options: Any) -> NanoSocket:
    options.setdefault("close_timeout", CLOSE_TIMEOUT)
    options.setdefault("idle_timeout", IDLE_TIMEOUT)
    return await ns.start(**options)


async def upgraded(ns: Harness, server: NanoSocket, count: int, *, rcvbuf: int | None = None) -> list[RawTCP]:
    """``count`` raw peers past the opening handshake, each with its server-side Socket."""
    sockets = ns.sockets(server)
    peers = []
    for _ in range(count):
        peer = await ns.tcp(server.port, rcvbuf=rcvbuf)
        assert await peer.upgrade(server.port) == 101
        await within(sockets.get())
        peers.append(peer)
    assert server.connection_count == count
    return peers


def fill(server: NanoSocket, until: int) -> None:
    """Send to every socket until each has ``until`` bytes its peer has not taken."""
    payload = "x" * (64 * KiB)
    sockets = list(server.sockets.values())
    assert sockets
    for each in sockets:
        while buffered(each) < until:
            each.emit("fill", payload)


def buffered(socket: Socket) -> int:
    return int(socket._ws.buffered_amount)


async def closed_by_server(peer: RawTCP) -> None:
    """The peer's connection ends (EOF or reset) once the server is done with it."""
    try:
        while await within(peer.reader.read(64 * KiB)):
            pass
    except ConnectionError:
        pass


async def test_close_ends_peers_that_stopped_reading_with_full_buffers(ns: Harness) -> None:
    # Over the transport's high-water mark: writing is paused, the close frame waits behind
    # megabytes the peer will never read.
    server = await start(ns, max_backpressure=64 * MiB)
    peers = await upgraded(ns, server, PEERS, rcvbuf=4 * KiB)
    fill(server, 1 * MiB)
    await within(server.close())
    assert server.connection_count == 0
    for peer in peers:
        await closed_by_server(peer)


async def test_close_ends_peers_that_never_answer_the_close(ns: Harness) -> None:
    server = await start(ns)
    peers = await upgraded(ns, server, PEERS)
    closing = asyncio.ensure_future(server.close())
    for peer in peers:
        _, (code, reason) = await peer.read_until_close()
        assert (code, reason) == (1001, "server shutting down")
    # None of them answers, none of them closes TCP.
    await within(closing)
    assert server.connection_count == 0
    for peer in peers:
        await closed_by_server(peer)


async def test_close_ends_peers_that_keep_sending_without_reading(ns: Harness) -> None:
    """Peers that answer nothing, read nothing, and keep writing (pings, messages, then their own
    close frame) while the server's close waits behind a full buffer."""
    server = await start(ns, max_backpressure=64 * MiB)
    peers = await upgraded(ns, server, PEERS, rcvbuf=4 * KiB)
    fill(server, 1 * MiB)
    closing = asyncio.ensure_future(server.close())
    stop = asyncio.Event()

    async def chatter(peer: RawTCP, index: int) -> None:
        sent = 0
        while not stop.is_set() and not peer.writer.transport.is_closing():
            peer.send_frame(PING, b"p")
            peer.send_frame(TEXT, b'{"event":"x","data":[]}')
            sent += 1
            if sent == 3 and index % 2:
                peer.send_frame(CLOSE, encode_close(1000, "bye"))
            await asyncio.sleep(0.01)

    chatters = [asyncio.ensure_future(chatter(peer, index)) for index, peer in enumerate(peers)]
    try:
        await within(closing)
    finally:
        stop.set()
        await asyncio.gather(*chatters, return_exceptions=True)
    assert server.connection_count == 0


async def test_close_with_connections_lost_during_the_close(ns: Harness) -> None:
    server = await start(ns, max_backpressure=64 * MiB)
    readers = await upgraded(ns, server, PEERS)
    stuck = await upgraded_more(ns, server, PEERS)
    fill_some(server, stuck, 1 * MiB)
    closing = asyncio.ensure_future(server.close())
    # Half of the readers drop as soon as they see the close frame, the others before reading it;
    # the peers behind full buffers drop with their buffers unread.
    for index, peer in enumerate(readers):
        if index % 2:
            await peer.read_until_close()
        peer.abort()
    for peer in stuck:
        peer.abort()
    await within(closing)
    assert server.connection_count == 0


async def upgraded_more(ns: Harness, server: NanoSocket, count: int) -> list[RawTCP]:
    before = server.connection_count
    sockets = ns.sockets(server)
    peers = []
    for _ in range(count):
        peer = await ns.tcp(server.port, rcvbuf=4 * KiB)
        assert await peer.upgrade(server.port) == 101
        await within(sockets.get())
        peers.append(peer)
    assert server.connection_count == before + count
    return peers


def fill_some(server: NanoSocket, peers: list[RawTCP], until: int) -> None:
    """Fill the buffers of the sockets of these peers only (matched by their local address)."""
    ports = {peer.writer.get_extra_info("sockname")[1] for peer in peers}
    payload = "x" * (64 * KiB)
    for each in server.sockets.values():
        address = each._ws.remote_address
        if address is not None and address[1] in ports:
            while buffered(each) < until:
                each.emit("fill", payload)


async def test_close_with_peers_in_their_opening_handshake(ns: Harness) -> None:
    server = await start(ns)
    open_peers = await upgraded(ns, server, 2)
    silent = [await ns.tcp(server.port) for _ in range(PEERS)]  # connected, no request yet
    partial = [await ns.tcp(server.port) for _ in range(PEERS)]
    for peer in partial:
        peer.writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
    late = [await ns.tcp(server.port) for _ in range(PEERS)]
    closing = asyncio.ensure_future(server.close())
    # Their upgrade requests arrive while the server closes.
    for peer in late:
        peer.writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + os.urandom(16).hex()[:22].encode() + b"==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
    await within(closing)
    assert server.connection_count == 0
    for peer in [*open_peers, *silent, *partial, *late]:
        await closed_by_server(peer)


async def test_a_connection_accepted_as_the_close_starts_is_refused(ns: Harness) -> None:
    """A connection the server accepts in the loop iteration where close() starts: on uvloop its
    protocol exists before close() aborts the handshaking connections but its transport comes
    after, so the abort cannot reach it; its upgrade request, read after the 1001s went out, is
    refused (503) instead of opening a connection that nothing would close."""
    server = await start(ns)
    await upgraded(ns, server, 1)
    sock = socket.socket()
    sock.setblocking(False)
    assert sock.connect_ex(("127.0.0.1", server.port)) in (0, errno.EINPROGRESS)
    closing = asyncio.ensure_future(server.close())  # before the server's loop accepts it
    reader, writer = await within(asyncio.open_connection(sock=sock))
    try:
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await within(closing)
        try:
            answer = await within(reader.read())
        except ConnectionError:
            answer = b""  # refused by the kernel: the listening socket closed first (asyncio)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer
    finally:
        writer.transport.abort()
    assert server.connection_count == 0
