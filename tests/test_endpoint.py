"""endpoint: serve() / connect() / WebSocketServer over real sockets on 127.0.0.1.

The opening handshake from both sides (plain HTTP, bad upgrades, limits, deadlines, early frames,
Origin policy, subprotocols), the client's errors, connect handlers and server shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets.exceptions

from nanosocket import (
    ConnectionClosedOK,
    HandshakeError,
    HandshakeRejected,
    InvalidHandshake,
    WebSocket,
    WebSocketOptions,
    WebSocketServer,
    connect,
)
from nanosocket.protocol.frames import TEXT, build_frame
from nanosocket.protocol.handshake import Request, accept_response, http_response

HANG_GUARD = 10.0


async def within(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, HANG_GUARD)


def masked(opcode: int, payload: bytes) -> bytes:
    return build_frame(opcode, payload, mask_key=b"\x0a\x0b\x0c\x0d")


async def http_exchange(net: Any, port: int, request: bytes) -> tuple[Any, bytes]:
    """Send ``request`` on a fresh TCP connection; return the peer and everything until EOF."""
    raw = await net.raw(port)
    raw.write(request)
    return raw, await within(raw.read_to_eof())


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header_of(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def upgrade(port: int, *lines: str, version: str = "13", key: str = "dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    head = [
        "GET /chat HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
        *lines,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


# ------------------------------------------------------------------ plain HTTP and bad upgrades


async def test_plain_http_get_is_answered_426(net: Any) -> None:
    server = await net.serve()
    _, response = await http_exchange(net, server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 426
    assert header_of(response, "Upgrade") == "websocket"
    assert header_of(response, "Sec-WebSocket-Version") == "13"
    assert header_of(response, "Connection") == "close"


async def test_http_handler_answers_plain_requests(net: Any) -> None:
    seen: list[Request] = []

    def http_handler(request: Request) -> bytes | None:
        seen.append(request)
        if request.path == "/health":
            return http_response(200, b"ok\n", headers=[("X-Check", "yes")])
        return None

    server = await net.serve(http_handler=http_handler)
    _, response = await http_exchange(net, server.port, b"GET /health?full=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 200
    assert header_of(response, "X-Check") == "yes"
    assert response.endswith(b"\r\n\r\nok\n")
    _, response = await http_exchange(net, server.port, b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 404
    assert [r.path for r in seen] == ["/health", "/elsewhere"]
    assert seen[0].query == {"full": "1"}
    # WebSocket upgrades still work next to the plain routes.
    client = await net.connect(server.port)
    client.send("ws")
    assert await within(client.recv()) == "ws"


async def test_http_handler_that_raises_answers_500(net: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Request) -> bytes | None:
        raise RuntimeError("route bug")

    server = await net.serve(http_handler=broken)
    with caplog.at_level(logging.ERROR, logger="nanosocket"):
        _, response = await http_exchange(net, server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 500
    assert any("route bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_async_http_handler(net: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def http_handler(request: Request) -> bytes | None:
        await asyncio.sleep(0)
        if request.path == "/slow":
            return http_response(200, b"worth the wait\n")
        if request.path == "/broken":
            raise RuntimeError("async route bug")
        return None

    server = await net.serve(http_handler=http_handler)
    _, response = await http_exchange(net, server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 200 and response.endswith(b"worth the wait\n")
    _, response = await http_exchange(net, server.port, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 404
    with caplog.at_level(logging.ERROR, logger="nanosocket"):
        _, response = await http_exchange(net, server.port, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 500


async def test_upgrades_restricted_to_one_path(net: Any) -> None:
    accepted = net.accepting()
    server = WebSocketServer(accepted, path="/ws")
    await server.listen()
    net.servers.append(server)
    with pytest.raises(HandshakeRejected) as info:
        await within(connect(f"ws://127.0.0.1:{server.port}/elsewhere"))
    assert info.value.status == 404
    client = await net.connect(f"ws://127.0.0.1:{server.port}/ws?room=1")
    client.send("on the path")
    assert await within(client.recv()) == "on the path"
    assert accepted.requests[0].path == "/ws"


async def test_wrong_version_is_answered_426_with_the_version_we_speak(net: Any) -> None:
    server = await net.serve()
    _, response = await http_exchange(net, server.port, upgrade(server.port, version="8"))
    assert status_of(response) == 426
    assert header_of(response, "Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade(0, key="not base64!"),
        upgrade(0, key="c2hvcnQ="),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
    ids=["key-not-base64", "key-not-16-bytes", "no-connection-upgrade", "no-key", "malformed"],
)
async def test_bad_upgrade_requests_are_answered_400(net: Any, request_bytes: bytes) -> None:
    server = await net.serve()
    _, response = await http_exchange(net, server.port, request_bytes)
    assert status_of(response) == 400


async def test_connection_header_with_several_tokens_is_accepted(net: Any) -> None:
    server = await net.serve()
    raw = await net.raw(server.port)
    request = upgrade(server.port).replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    raw.write(request)
    assert await within(raw.read_head()) == 101


async def test_upgrade_with_post_is_answered_405(net: Any) -> None:
    server = await net.serve()
    _, response = await http_exchange(net, server.port, upgrade(server.port).replace(b"GET", b"POST", 1))
    assert status_of(response) == 405


@pytest.mark.parametrize("shape", ["oversized-head", "too-many-headers"])
async def test_oversized_request_is_answered_431_while_others_connect(net: Any, shape: str) -> None:
    server = await net.serve(options=WebSocketOptions(max_handshake_size=4096, max_headers=20))
    raw = await net.raw(server.port)
    raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    # A legitimate client connects while the other request head is still arriving.
    client = await net.connect(server.port)
    if shape == "oversized-head":
        raw.write(b"X-Filler: " + b"a" * 8000 + b"\r\n\r\n")
    else:
        raw.write(b"".join(f"X-Header-{i}: {i}\r\n".encode() for i in range(30)) + b"\r\n")
    response = await within(raw.read_to_eof())
    assert status_of(response) == 431
    client.send("unaffected")
    assert await within(client.recv()) == "unaffected"


async def test_request_head_arriving_byte_by_byte(net: Any) -> None:
    server = await net.serve()
    raw = await net.raw(server.port)
    for byte in upgrade(server.port):
        raw.write(bytes([byte]))
        await raw.writer.drain()
    assert await within(raw.read_head()) == 101
    raw.write(masked(TEXT, b"slowly"))
    assert await within(raw.read_frame()) == (True, TEXT, b"slowly")


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "partial-head"])
async def test_unfinished_handshake_is_dropped_after_handshake_timeout(net: Any, sent: bytes) -> None:
    server = await net.serve(options=WebSocketOptions(handshake_timeout=0.3))
    raw = await net.raw(server.port)
    raw.write(sent)
    assert await within(raw.read_to_eof()) == b""
    client = await net.connect(server.port)
    client.send("after")
    assert await within(client.recv()) == "after"


# ------------------------------------------------------------------ early frames


async def test_frames_sent_with_the_upgrade_request_reach_on_message(net: Any) -> None:
    server = await net.serve()
    raw = await net.raw(server.port)
    frames = masked(TEXT, b"first") + masked(TEXT, b"second")
    assert await raw.handshake(server.port, extra=frames) == 101
    assert await within(raw.read_frame()) == (True, TEXT, b"first")
    assert await within(raw.read_frame()) == (True, TEXT, b"second")
    raw.send_frame(TEXT, b"third")
    assert await within(raw.read_frame()) == (True, TEXT, b"third")


async def test_frames_sent_with_the_upgrade_request_reach_recv(net: Any) -> None:
    async def handler(ws: WebSocket, request: Request) -> None:
        while True:
            ws.send(f"got {await ws.recv()!s}")

    server = await net.serve(handler)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port, extra=masked(TEXT, b"early") + masked(TEXT, b"frames")) == 101
    assert await within(raw.read_frame()) == (True, TEXT, b"got early")
    assert await within(raw.read_frame()) == (True, TEXT, b"got frames")


async def test_frames_sent_with_the_101_response_reach_the_client(net: Any) -> None:
    async def raw_server(peer: Any) -> None:
        head = await peer.reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        greeting = build_frame(TEXT, b"welcome") + build_frame(TEXT, b"second")
        peer.write(accept_response(key) + greeting)
        while True:
            _, opcode, payload = await peer.read_frame()
            peer.send_frame(opcode, payload)

    port = await net.raw_server(raw_server)
    by_recv = await net.connect(port)
    assert await within(by_recv.recv()) == "welcome"
    assert await within(by_recv.recv()) == "second"

    by_callback = await net.connect(port)
    received: asyncio.Queue[str | bytes] = asyncio.Queue()
    by_callback.on_message = received.put_nowait
    by_callback.send("echoed")
    assert [await within(received.get()) for _ in range(3)] == ["welcome", "second", "echoed"]


async def test_messages_queued_before_on_message_is_set_are_delivered_to_it_first(net: Any) -> None:
    got: list[str | bytes] = []
    switched = asyncio.Event()

    async def late_handler(ws: WebSocket, request: Request) -> None:
        got.append(await ws.recv())
        # Whatever came after the first message waits in the inbox: on_message takes it first.
        ws.on_message = got.append
        switched.set()

    server = await net.serve(late_handler)
    client = await net.connect(server.port)
    for i in range(5):
        client.send(f"m{i}")
    await within(switched.wait())
    client.send("after")
    await within(_until(lambda: len(got) == 6))
    assert got == ["m0", "m1", "m2", "m3", "m4", "after"]


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the condition has no event to wait on
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ Origin policy


async def test_same_origin_is_the_default(net: Any) -> None:
    server = await net.serve()
    port = server.port
    same = await net.connect(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.open
    without = await net.connect(port)
    assert without.open
    with pytest.raises(HandshakeRejected) as info:
        await within(connect(f"ws://127.0.0.1:{port}/", headers={"Origin": "https://evil.example"}))
    assert info.value.status == 403
    with pytest.raises(HandshakeRejected) as info:
        await within(connect(f"ws://127.0.0.1:{port}/", headers={"Origin": f"http://127.0.0.1:{port + 1}"}))
    assert info.value.status == 403
    with pytest.raises(HandshakeRejected):
        await within(connect(f"ws://127.0.0.1:{port}/", headers={"Origin": "null"}))


async def test_origin_allow_list(net: Any) -> None:
    server = await net.serve(allowed_origins=["https://app.example", "http://localhost:8080/"])
    url = f"ws://127.0.0.1:{server.port}/"
    for origin in ("https://app.example", "HTTPS://APP.EXAMPLE/", "http://localhost:8080"):
        ws = await net.connect(url, headers={"Origin": origin})
        assert ws.open
    # Same-origin no longer counts once there is a list.
    for origin in ("https://evil.example", f"http://127.0.0.1:{server.port}"):
        with pytest.raises(HandshakeRejected) as info:
            await within(connect(url, headers={"Origin": origin}))
        assert info.value.status == 403
    # A websockets client's Origin goes through the same policy.
    with pytest.raises(websockets.exceptions.InvalidStatus) as rejected:
        await net.ws_connect(server.port, origin="https://evil.example")
    assert rejected.value.response.status_code == 403
    allowed = await net.ws_connect(server.port, origin="https://app.example")
    await allowed.send("hi")
    assert await within(allowed.recv()) == "hi"


async def test_any_origin(net: Any) -> None:
    server = await net.serve(allowed_origins=["*"])
    ws = await net.connect(server.port, headers={"Origin": "https://anything.example"})
    assert ws.open


# ------------------------------------------------------------------ subprotocols


async def test_server_picks_its_preferred_subprotocol(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted, options=WebSocketOptions(subprotocols=("chat.v2", "chat.v1")))
    ws = await net.ws_connect(server.port, subprotocols=["chat.v1", "chat.v2"])
    assert ws.subprotocol == "chat.v2"
    assert (await accepted.next()).subprotocol == "chat.v2"
    ours = await net.connect(server.port, subprotocols=["chat.v1"])
    assert ours.subprotocol == "chat.v1"
    assert (await accepted.next()).subprotocol == "chat.v1"
    none = await net.connect(server.port, subprotocols=["other"])
    assert none.subprotocol is None
    assert (await accepted.next()).subprotocol is None


async def test_our_client_negotiates_with_a_websockets_server(net: Any) -> None:
    async def handler(ws: Any) -> None:
        await ws.send(ws.subprotocol or "none")
        await ws.wait_closed()

    port = await net.ws_serve(handler, subprotocols=["graphql-ws", "graphql-transport-ws"])
    client = await net.connect(port, options=WebSocketOptions(subprotocols=("graphql-transport-ws",)))
    assert client.subprotocol == "graphql-transport-ws"
    assert await within(client.recv()) == "graphql-transport-ws"
    explicit = await net.connect(port, subprotocols=["x", "graphql-ws"])
    assert explicit.subprotocol == "graphql-ws"


async def test_server_selecting_an_unoffered_subprotocol_fails_the_client(net: Any) -> None:
    async def raw_server(peer: Any) -> None:
        await peer.accept_upgrade(headers=[("Sec-WebSocket-Protocol", "surprise")])
        await peer.read_to_eof()

    port = await net.raw_server(raw_server)
    with pytest.raises(InvalidHandshake, match="surprise"):
        await within(connect(f"ws://127.0.0.1:{port}/", subprotocols=["chat"]))
    with pytest.raises(InvalidHandshake):
        await within(connect(f"ws://127.0.0.1:{port}/"))


# ------------------------------------------------------------------ the request, as the handler sees it


async def test_handler_sees_path_query_and_headers(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    await net.connect(f"ws://127.0.0.1:{server.port}/room/7?token=abc&x=", headers=[("X-Client", "tests")])
    await accepted.next()
    request = accepted.requests[0]
    assert request.path == "/room/7"
    assert request.query == {"token": "abc", "x": ""}
    assert request.headers["x-client"] == "tests"
    assert request.headers["Host"] == f"127.0.0.1:{server.port}"


async def test_response_headers_are_added_to_the_101(net: Any) -> None:
    server = WebSocketServer(lambda ws, request: None, response_headers=[("X-Server", "nanosocket")])
    await server.listen()
    net.servers.append(server)
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    assert raw.header("X-Server") == "nanosocket"
    assert raw.header("Sec-WebSocket-Accept")


# ------------------------------------------------------------------ client errors


async def test_connection_refused_is_an_os_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        await within(connect(f"ws://127.0.0.1:{port}/"))


async def test_non_101_answer_is_handshake_rejected(net: Any) -> None:
    server = await net.serve(allowed_origins=["https://only.example"])
    with pytest.raises(HandshakeRejected) as info:
        await within(connect(f"ws://127.0.0.1:{server.port}/", headers={"Origin": "https://x.example"}))
    assert info.value.status == 403
    assert isinstance(info.value, HandshakeError)

    async def unavailable(peer: Any) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        peer.write(http_response(503, b"busy\n"))
        await peer.read_to_eof()

    port = await net.raw_server(unavailable)
    with pytest.raises(HandshakeRejected) as info:
        await within(connect(f"ws://127.0.0.1:{port}/"))
    assert info.value.status == 503


async def test_wrong_accept_key_is_invalid_handshake(net: Any) -> None:
    async def liar(peer: Any) -> None:
        await peer.accept_upgrade(accept="d3JvbmcgYWNjZXB0IGtleSE=")
        await peer.read_to_eof()

    port = await net.raw_server(liar)
    with pytest.raises(InvalidHandshake, match="Accept"):
        await within(connect(f"ws://127.0.0.1:{port}/"))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
        b"this is not HTTP\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n",
    ],
    ids=["no-upgrade-header", "garbage", "oversized"],
)
async def test_malformed_answers_are_invalid_handshake(net: Any, answer: bytes) -> None:
    async def broken(peer: Any) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        peer.write(answer)
        await peer.read_to_eof()

    port = await net.raw_server(broken)
    with pytest.raises(InvalidHandshake):
        await within(connect(f"ws://127.0.0.1:{port}/"))


async def test_server_closing_during_the_handshake_is_invalid_handshake(net: Any) -> None:
    async def hang_up(peer: Any) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        peer.writer.close()

    port = await net.raw_server(hang_up)
    with pytest.raises(InvalidHandshake):
        await within(connect(f"ws://127.0.0.1:{port}/"))


async def test_connect_timeout_is_timeout_error(net: Any) -> None:
    async def mute(peer: Any) -> None:
        await peer.read_to_eof()

    port = await net.raw_server(mute)
    with pytest.raises(TimeoutError):
        await within(connect(f"ws://127.0.0.1:{port}/", timeout=0.3))
    # The client-side handshake deadline of the options ends it too.
    with pytest.raises(InvalidHandshake, match="timed out"):
        await within(connect(f"ws://127.0.0.1:{port}/", options=WebSocketOptions(handshake_timeout=0.3)))


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "ws://", "127.0.0.1:80", "ws://host:port/"])
async def test_invalid_url_is_invalid_handshake(url: str) -> None:
    with pytest.raises(InvalidHandshake):
        await within(connect(url))


# ------------------------------------------------------------------ connect handlers


async def test_async_connect_handler(net: Any, caplog: pytest.LogCaptureFixture) -> None:
    finished = asyncio.Event()

    async def handler(ws: WebSocket, request: Request) -> None:
        ws.send("hello " + request.query.get("name", "?"))
        try:
            while True:
                message = await ws.recv()
                ws.send(message)
        finally:
            finished.set()

    server = await net.serve(handler)
    with caplog.at_level(logging.ERROR, logger="nanosocket"):
        client = await net.connect(f"ws://127.0.0.1:{server.port}/?name=ada")
        assert await within(client.recv()) == "hello ada"
        client.send(b"\x01")
        assert await within(client.recv()) == b"\x01"
        client.close()
        await within(finished.wait())
        await within(client.wait_closed())
        await asyncio.sleep(0)
    # recv() raising ConnectionClosedOK ends a handler normally: nothing to report.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_handler_returning_an_awaitable_is_awaited(net: Any) -> None:
    done = asyncio.Event()

    async def later(ws: WebSocket) -> None:
        ws.send("from awaitable")
        done.set()

    server = await net.serve(lambda ws, request: later(ws))
    client = await net.connect(server.port)
    assert await within(client.recv()) == "from awaitable"
    await within(done.wait())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_connect_handler_that_raises_closes_1011_and_others_carry_on(
    net: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def sync_handler(ws: WebSocket, request: Request) -> None:
        if request.path == "/bad":
            raise RuntimeError("sync handler bug")
        ws.on_message = ws.send

    async def async_handler(ws: WebSocket, request: Request) -> None:
        await asyncio.sleep(0)
        if request.path == "/bad":
            raise RuntimeError("async handler bug")
        ws.on_message = ws.send

    server = await net.serve(sync_handler if kind == "sync" else async_handler)
    good = await net.connect(server.port)
    with caplog.at_level(logging.ERROR, logger="nanosocket"):
        bad = await net.connect(f"ws://127.0.0.1:{server.port}/bad")
        with pytest.raises(Exception) as info:
            await within(bad.recv())
        await within(bad.wait_closed())
    assert bad.close_code == 1011
    assert getattr(info.value, "code", None) == 1011
    assert any("handler bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    good.send("carry on")
    assert await within(good.recv()) == "carry on"
    late = await net.connect(server.port)
    late.send("new")
    assert await within(late.recv()) == "new"


# ------------------------------------------------------------------ server lifecycle


async def test_server_close_sends_1001_to_everyone_and_waits(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    port = server.port
    ours = [await net.connect(port) for _ in range(3)]
    theirs = await net.ws_connect(server.port)
    handshaking = await net.raw(server.port)
    handshaking.write(b"GET / HTTP/1.1\r\n")
    for _ in range(4):
        await accepted.next()
    assert len(server.connections) == 4
    await within(server.close())
    assert not server.connections
    assert not server.listening
    for ws in ours:
        assert ws.closed
        assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        with pytest.raises(ConnectionClosedOK):
            await within(ws.recv())
    with pytest.raises(websockets.exceptions.ConnectionClosedOK):
        await within(theirs.recv())
    assert theirs.close_code == 1001
    assert await within(handshaking.read_to_eof()) == b""
    with pytest.raises(OSError):
        await within(connect(f"ws://127.0.0.1:{port}/"))


async def test_server_close_drops_peers_that_do_not_answer_after_close_timeout(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted, options=WebSocketOptions(close_timeout=0.3))
    raw = await net.raw(server.port)
    assert await raw.handshake(server.port) == 101
    server_ws = await accepted.next()
    polite = await net.connect(server.port)
    await accepted.next()
    await within(server.close(4000, "custom"))
    # No close frame came back before the TCP connection was dropped: 1006 (RFC 6455 §7.1.5).
    assert await accepted.closed(server_ws) == (1006, "")
    assert await within(raw.read_close()) == (4000, "custom")
    assert (polite.close_code, polite.close_reason) == (4000, "custom")


async def test_server_as_async_context_manager(net: Any) -> None:
    async with WebSocketServer(lambda ws, request: setattr(ws, "on_message", ws.send)) as server:
        assert not server.listening
        with pytest.raises(RuntimeError):
            _ = server.port
        with pytest.raises(RuntimeError):
            await server.serve_forever()
        await server.listen("127.0.0.1", 0)
        assert server.listening
        client = await connect(f"ws://127.0.0.1:{server.port}/")
        client.send("in context")
        assert await within(client.recv()) == "in context"
    assert not server.listening
    await within(client.wait_closed())
    assert client.close_code == 1001


async def test_server_close_twice_and_concurrently(net: Any) -> None:
    server = await net.serve()
    client = await net.connect(server.port)
    await within(asyncio.gather(server.close(), server.close()))
    await within(server.close())
    assert client.closed or (await within(client.wait_closed())) is None
    assert client.close_code == 1001


async def test_serve_forever_runs_until_cancelled(net: Any) -> None:
    server = await net.serve()
    task = asyncio.ensure_future(server.serve_forever())
    client = await net.connect(server.port)
    client.send("x")
    assert await within(client.recv()) == "x"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)


async def test_server_tracks_its_connections(net: Any) -> None:
    accepted = net.accepting()
    server = await net.serve(accepted)
    client = await net.connect(server.port)
    server_ws = await accepted.next()
    assert list(server.connections) == [server_ws]
    client.close()
    await within(server_ws.wait_closed())
    assert not server.connections
