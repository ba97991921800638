"""The HTTP/1.1 opening handshake, both sides, with bytes and values alone."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanosocket.errors import HandshakeError, HandshakeRejected, InvalidHandshake
from nanosocket.protocol.handshake import (
    Headers,
    Request,
    RequestReader,
    Response,
    ResponseReader,
    WebSocketURL,
    accept_key,
    accept_response,
    build_request,
    check_response,
    check_upgrade,
    generate_key,
    http_response,
    keep_request,
    kept_headers,
    kept_target,
    origin_allowed,
    parse_ws_url,
    target_query,
    wants_upgrade,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

UPGRADE_HEADERS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Origin", "http://example.com"),
    ("Sec-WebSocket-Protocol", "chat, superchat"),
    ("Sec-WebSocket-Version", "13"),
]


def head(first_line: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [first_line, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_bytes(headers: list[tuple[str, str]] | None = None, target: str = "/chat") -> bytes:
    return head(f"GET {target} HTTP/1.1", UPGRADE_HEADERS if headers is None else headers)


def read_request(data: bytes, max_size: int = 16384, max_headers: int = 64) -> Request:
    request = RequestReader(max_size, max_headers).feed(data)
    assert request is not None
    return request


def request_with(
    *, method: str = "GET", drop: tuple[str, ...] = (), add: list[tuple[str, str]] | None = None
) -> Request:
    """The RFC upgrade request, with headers removed (by lower-case name) or appended."""
    headers = [(n, v) for n, v in UPGRADE_HEADERS if n.lower() not in drop] + (add or [])
    return read_request(head(f"{method} /chat HTTP/1.1", headers))


# ----------------------------------------------------------------- RequestReader


def test_request_reader_whole() -> None:
    request = read_request(upgrade_bytes(target="/chat?room=lobby&token=abc"))
    assert request.method == "GET"
    assert request.target == "/chat?room=lobby&token=abc"
    assert request.path == "/chat"
    assert request.query_string == "room=lobby&token=abc"
    assert request.query == {"room": "lobby", "token": "abc"}
    assert request.headers["sec-websocket-key"] == RFC_KEY
    assert request.headers.raw_items()[0] == ("host", "server.example.com")
    assert len(request.headers.raw_items()) == len(UPGRADE_HEADERS)
    assert request.keep_alive


def test_request_reader_byte_by_byte() -> None:
    data = upgrade_bytes(target="/a/long/path?x=1")
    reader = RequestReader(16384, 64)
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) is None, i
    request = reader.feed(data[-1:])
    assert request is not None
    assert request.target == "/a/long/path?x=1"
    assert request.headers.raw_items() == [(n.lower(), v) for n, v in UPGRADE_HEADERS]
    assert reader.trailing == b""


def test_request_reader_every_split_point() -> None:
    data = upgrade_bytes()
    expected = read_request(data)
    for i in range(1, len(data)):
        reader = RequestReader(16384, 64)
        assert reader.feed(data[:i]) is None, i
        assert reader.feed(data[i:]) == expected, i


@pytest.mark.parametrize("trailing", [b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", b"x", b"\r\n"])
def test_trailing_bytes_after_an_upgrade_request_are_kept(trailing: bytes) -> None:
    data = upgrade_bytes()
    reader = RequestReader(16384, 64)
    assert reader.feed(data + trailing) is not None
    assert reader.trailing == trailing
    reader = RequestReader(16384, 64)
    assert reader.feed(data[:-3]) is None
    assert reader.feed(data[-3:] + trailing) is not None
    assert reader.trailing == trailing


def test_a_pipelined_request_does_not_leak_into_the_first() -> None:
    first = head("GET /health HTTP/1.1", [("Host", "a")])
    second = head("GET /other HTTP/1.1", [("X-Second", "yes")])
    request = RequestReader(16384, 64).feed(first + second)
    assert request is not None
    assert request.target == "/health"
    assert request.headers.raw_items() == [("host", "a")]


def test_request_size_limit_exactly() -> None:
    data = upgrade_bytes([*UPGRADE_HEADERS, ("X-Pad", "p" * 100)])
    assert RequestReader(len(data), 64).feed(data) is not None
    # Bytes after the head of an upgrade do not count against the head's limit.
    reader = RequestReader(len(data), 64)
    assert reader.feed(data + b"\x81\x00" * 100) is not None
    assert reader.trailing == b"\x81\x00" * 100


def test_request_size_limit_one_past() -> None:
    data = upgrade_bytes([*UPGRADE_HEADERS, ("X-Pad", "p" * 100)])
    with pytest.raises(InvalidHandshake) as info:
        RequestReader(len(data) - 1, 64).feed(data)
    assert info.value.status == 431


def test_request_size_limit_one_past_byte_by_byte() -> None:
    data = upgrade_bytes()
    reader = RequestReader(len(data) - 1, 64)
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) is None
    with pytest.raises(InvalidHandshake) as info:
        reader.feed(data[-1:])
    assert info.value.status == 431


def test_an_endless_head_fails_once_over_the_limit() -> None:
    reader = RequestReader(1000, 64)
    reader.feed(b"GET / HTTP/1.1\r\nX-Long: ")
    with pytest.raises(InvalidHandshake) as info:
        for _ in range(100):
            reader.feed(b"a" * 100)
    assert info.value.status == 431


def test_header_count_limit_exactly_and_one_past() -> None:
    data = upgrade_bytes()
    count = len(UPGRADE_HEADERS)
    assert RequestReader(16384, count).feed(data) is not None
    with pytest.raises(InvalidHandshake) as info:
        RequestReader(16384, count - 1).feed(data)
    assert info.value.status == 431
    assert str(count - 1) in str(info.value)


def test_header_count_limit_byte_by_byte() -> None:
    data = upgrade_bytes()
    reader = RequestReader(16384, len(UPGRADE_HEADERS) - 1)
    with pytest.raises(InvalidHandshake) as info:
        for i in range(len(data)):
            reader.feed(data[i : i + 1])
    assert info.value.status == 431


@pytest.mark.parametrize(
    "data",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nN\xe9: v\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on a plain port
    ],
)
def test_malformed_request_head(data: bytes) -> None:
    with pytest.raises(InvalidHandshake) as info:
        RequestReader(16384, 64).feed(data)
    assert info.value.status == 400


@given(st.binary(max_size=300))
def test_request_reader_raises_only_invalid_handshake(data: bytes) -> None:
    reader = RequestReader(256, 8)
    try:
        reader.feed(b"GET / HTTP/1.1\r\n" + data)
        reader.feed(data)
    except InvalidHandshake as exc:
        assert exc.status in (400, 431)


def test_request_query_and_keep_alive() -> None:
    request = read_request(head("GET /p?a=1&a=2&empty=&flag HTTP/1.1", [("Host", "h")]))
    assert request.query == {"a": "2", "empty": "", "flag": ""}
    assert request.path == "/p"
    assert read_request(head("GET / HTTP/1.1", [("Connection", "close")])).keep_alive is False
    assert read_request(head("GET / HTTP/1.0", [])).keep_alive is False
    no_query = read_request(head("GET /p HTTP/1.1", []))
    assert no_query.query_string == ""
    assert no_query.query == {}


# ------------------------------------------------------------------ check_upgrade


def test_check_upgrade_accepts_the_rfc_request() -> None:
    assert check_upgrade(read_request(upgrade_bytes())) == (RFC_KEY, None)


def test_check_upgrade_token_matching_is_case_insensitive() -> None:
    request = request_with(
        drop=("upgrade", "connection"), add=[("Upgrade", "WebSocket"), ("Connection", "keep-alive, UPGRADE")]
    )
    assert check_upgrade(request) == (RFC_KEY, None)


def test_check_upgrade_method() -> None:
    with pytest.raises(InvalidHandshake) as info:
        check_upgrade(request_with(method="POST"))
    assert info.value.status == 405


@pytest.mark.parametrize(
    ("drop", "add", "status"),
    [
        (("upgrade",), [], 426),
        (("upgrade",), [("Upgrade", "h2c")], 426),
        (("connection",), [], 400),
        (("connection",), [("Connection", "keep-alive")], 400),
        (("sec-websocket-version",), [], 426),
        (("sec-websocket-version",), [("Sec-WebSocket-Version", "8")], 426),
        (("sec-websocket-version",), [("Sec-WebSocket-Version", "13, 8")], 426),
        (("sec-websocket-key",), [], 400),
        (("sec-websocket-key",), [("Sec-WebSocket-Key", "not base64!")], 400),
        (("sec-websocket-key",), [("Sec-WebSocket-Key", base64.b64encode(bytes(15)).decode())], 400),
        (("sec-websocket-key",), [("Sec-WebSocket-Key", base64.b64encode(bytes(17)).decode())], 400),
        (("sec-websocket-key",), [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ")], 400),  # no padding
        ((), [("Sec-WebSocket-Key", RFC_KEY)], 400),  # repeated
        ((), [("Sec-WebSocket-Key", generate_key())], 400),
    ],
    ids=[
        "no-upgrade",
        "upgrade-h2c",
        "no-connection",
        "connection-keep-alive",
        "no-version",
        "version-8",
        "version-list",
        "no-key",
        "key-not-base64",
        "key-15-bytes",
        "key-17-bytes",
        "key-unpadded",
        "key-repeated",
        "two-keys",
    ],
)
def test_check_upgrade_refuses(drop: tuple[str, ...], add: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(InvalidHandshake) as info:
        check_upgrade(request_with(drop=drop, add=add))
    assert info.value.status == status


@pytest.mark.parametrize(
    ("offered", "supported", "selected"),
    [
        ("chat, superchat", ("superchat", "chat"), "superchat"),  # the server's preference wins
        ("chat, superchat", ("chat",), "chat"),
        ("chat, superchat", ("other",), None),
        ("chat, superchat", (), None),
        (None, ("chat",), None),
        ("Chat.V2, chat", ("Chat.V2",), "Chat.V2"),  # subprotocol names keep their case
        ("chat.v2", ("Chat.V2",), None),
    ],
)
def test_check_upgrade_selects_a_subprotocol(
    offered: str | None, supported: tuple[str, ...], selected: str | None
) -> None:
    add = [] if offered is None else [("Sec-WebSocket-Protocol", offered)]
    request = request_with(drop=("sec-websocket-protocol",), add=add)
    assert check_upgrade(request, supported) == (RFC_KEY, selected)


def test_check_upgrade_reads_repeated_subprotocol_headers() -> None:
    request = request_with(
        drop=("sec-websocket-protocol",),
        add=[("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b")],
    )
    assert check_upgrade(request, ("b",)) == (RFC_KEY, "b")


def test_wants_upgrade() -> None:
    assert wants_upgrade(read_request(upgrade_bytes()))
    assert wants_upgrade(read_request(head("GET / HTTP/1.1", [("Upgrade", "h2c, WebSocket")])))
    assert not wants_upgrade(read_request(head("GET / HTTP/1.1", [("Upgrade", "h2c")])))
    assert not wants_upgrade(read_request(head("GET /health HTTP/1.1", [("Host", "h")])))


# ----------------------------------------------------------------- keys, responses


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_generate_key() -> None:
    key = generate_key()
    assert len(base64.b64decode(key, validate=True)) == 16
    assert generate_key() != key
    request = request_with(drop=("sec-websocket-key",), add=[("Sec-WebSocket-Key", key)])
    assert check_upgrade(request) == (key, None)


def test_accept_response() -> None:
    data = accept_response(RFC_KEY, "chat", [("X-Extra", "1")])
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert data.endswith(b"\r\n\r\n")
    response = ResponseReader(16384, 64).feed(data)
    assert response is not None
    assert response.status == 101
    assert response.headers["sec-websocket-accept"] == RFC_ACCEPT
    assert response.headers["sec-websocket-protocol"] == "chat"
    assert response.headers["x-extra"] == "1"
    plain = ResponseReader(16384, 64).feed(accept_response(RFC_KEY))
    assert plain is not None
    assert "sec-websocket-protocol" not in plain.headers


def test_http_response() -> None:
    data = http_response(200, b"ok\n", headers=[("X-A", "b")])
    assert data == (
        b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 3\r\nConnection: close\r\n\r\nok\n"
    )
    assert http_response(204, keep_alive=True).endswith(b"Connection: keep-alive\r\n\r\n")
    assert http_response(599).startswith(b"HTTP/1.1 599 Unknown\r\n")
    reader = ResponseReader(16384, 64)
    response = reader.feed(http_response(404, b"not found\n", content_type="text/html"))
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-length"] == "10"


# ------------------------------------------------------------------ client side


def test_build_request_round_trip() -> None:
    url = parse_ws_url("ws://example.com:8080/chat?room=1")
    key = generate_key()
    data = build_request(url, key, headers={"Authorization": "Bearer t"}, subprotocols=("chat", "superchat"))
    assert data.startswith(b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com:8080\r\n")
    request = read_request(data)
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["sec-websocket-protocol"] == "chat, superchat"
    assert check_upgrade(request, ("superchat",)) == (key, "superchat")


def test_build_request_headers_as_pairs_keep_repeats() -> None:
    url = parse_ws_url("wss://example.com")
    data = build_request(url, RFC_KEY, headers=[("Cookie", "a=1"), ("Cookie", "b=2")])
    request = read_request(data)
    assert request.headers.get_all("cookie") == ["a=1", "b=2"]
    assert request.headers["host"] == "example.com"
    assert "sec-websocket-protocol" not in request.headers


@pytest.mark.parametrize(
    "header", [("X-Evil", "a\r\nInjected: 1"), ("X-Evil\r\nInjected", "1"), ("X-Evil", "a\nb"), ("X\n", "a")]
)
def test_build_request_refuses_line_breaks(header: tuple[str, str]) -> None:
    with pytest.raises(InvalidHandshake):
        build_request(parse_ws_url("ws://h/"), RFC_KEY, headers=[header])


def test_response_reader_byte_by_byte_keeps_trailing_frames() -> None:
    data = accept_response(RFC_KEY)
    frame = b"\x81\x05Hello"
    reader = ResponseReader(16384, 64)
    for i in range(len(data) - 1):
        assert reader.feed(data[i : i + 1]) is None
    response = reader.feed(data[-1:] + frame)
    assert response is not None
    assert response.status == 101
    assert reader.trailing == frame


def test_response_reader_limits() -> None:
    data = accept_response(RFC_KEY)
    assert ResponseReader(len(data), 3).feed(data) is not None
    with pytest.raises(InvalidHandshake):
        ResponseReader(len(data) - 1, 3).feed(data)
    with pytest.raises(InvalidHandshake):
        ResponseReader(len(data), 2).feed(data)
    with pytest.raises(InvalidHandshake):
        ResponseReader(16384, 64).feed(b"HTTP/1.1 abc\r\n\r\n")


def response(
    status: int = 101, drop: tuple[str, ...] = (), add: list[tuple[str, str]] | None = None
) -> Response:
    base = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", RFC_ACCEPT)]
    items = [(n, v) for n, v in base if n.lower() not in drop] + (add or [])
    return Response(status, Headers(items))


def test_check_response_valid() -> None:
    assert check_response(response(), RFC_KEY) is None
    assert (
        check_response(response(add=[("Sec-WebSocket-Protocol", "chat")]), RFC_KEY, ("x", "chat")) == "chat"
    )
    parsed = ResponseReader(16384, 64).feed(accept_response(RFC_KEY, "chat"))
    assert parsed is not None
    assert check_response(parsed, RFC_KEY, ("chat",)) == "chat"


@pytest.mark.parametrize(
    ("drop", "add", "offered"),
    [
        (("sec-websocket-accept",), [("Sec-WebSocket-Accept", accept_key(generate_key()))], ()),
        (("sec-websocket-accept",), [], ()),
        (("upgrade",), [], ()),
        (("upgrade",), [("Upgrade", "h2c")], ()),
        (("connection",), [], ()),
        (("connection",), [("Connection", "close")], ()),
        ((), [("Sec-WebSocket-Extensions", "permessage-deflate")], ()),
        ((), [("Sec-WebSocket-Protocol", "chat")], ()),
        ((), [("Sec-WebSocket-Protocol", "chat")], ("superchat",)),
        ((), [("Sec-WebSocket-Protocol", "Chat")], ("chat",)),
    ],
    ids=[
        "wrong-accept",
        "no-accept",
        "no-upgrade",
        "upgrade-h2c",
        "no-connection",
        "connection-close",
        "unoffered-extension",
        "subprotocol-none-offered",
        "subprotocol-not-offered",
        "subprotocol-other-case",
    ],
)
def test_check_response_refuses(
    drop: tuple[str, ...], add: list[tuple[str, str]], offered: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidHandshake):
        check_response(response(drop=drop, add=add), RFC_KEY, offered)


@pytest.mark.parametrize("status", [200, 301, 400, 403, 404, 426, 500, 503])
def test_check_response_non_101(status: int) -> None:
    with pytest.raises(HandshakeRejected) as info:
        check_response(response(status), RFC_KEY)
    assert info.value.status == status
    assert isinstance(info.value, HandshakeError)
    assert not isinstance(info.value, InvalidHandshake)


# ----------------------------------------------------------------- parse_ws_url


@pytest.mark.parametrize(
    ("url", "expected", "host_header"),
    [
        ("ws://example.com", WebSocketURL(False, "example.com", 80, "/"), "example.com"),
        ("wss://example.com", WebSocketURL(True, "example.com", 443, "/"), "example.com"),
        ("ws://example.com:80/", WebSocketURL(False, "example.com", 80, "/"), "example.com"),
        ("ws://example.com:443/", WebSocketURL(False, "example.com", 443, "/"), "example.com:443"),
        ("wss://example.com:80/", WebSocketURL(True, "example.com", 80, "/"), "example.com:80"),
        ("ws://h:8080/chat?room=1&x", WebSocketURL(False, "h", 8080, "/chat?room=1&x"), "h:8080"),
        ("ws://h/p#fragment", WebSocketURL(False, "h", 80, "/p"), "h"),
        ("ws://h?q=1", WebSocketURL(False, "h", 80, "/?q=1"), "h"),
        ("WSS://EXAMPLE.COM/Path", WebSocketURL(True, "example.com", 443, "/Path"), "example.com"),
        ("ws://[::1]:9001/", WebSocketURL(False, "::1", 9001, "/"), "[::1]:9001"),
        ("wss://[2001:db8::1]/", WebSocketURL(True, "2001:db8::1", 443, "/"), "[2001:db8::1]"),
        ("ws://user:pw@h:81/", WebSocketURL(False, "h", 81, "/"), "h:81"),
    ],
)
def test_parse_ws_url(url: str, expected: WebSocketURL, host_header: str) -> None:
    parsed = parse_ws_url(url)
    assert parsed == expected
    assert parsed.host_header == host_header


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com",
        "http://example.com",
        "wss:/example.com",
        "ws://",
        "ws://:80/",
        "ws://[::1",
        "ws://h:99999/",
        "ws://h:port/",
    ],
)
def test_parse_ws_url_invalid(url: str) -> None:
    with pytest.raises(InvalidHandshake):
        parse_ws_url(url)


@given(st.text(max_size=40))
def test_parse_ws_url_raises_only_invalid_handshake(text: str) -> None:
    for url in (text, "ws://" + text, "wss://h:" + text):
        try:
            parse_ws_url(url)
        except InvalidHandshake:
            pass


# ---------------------------------------------------------------- origin policy


def origin_request(origin: str | None, host: str | None = "example.com") -> Request:
    items = []
    if host is not None:
        items.append(("Host", host))
    if origin is not None:
        items.append(("Origin", origin))
    return Request("GET", "/", Headers(items))


@pytest.mark.parametrize("allowed", [None, (), ("https://app.example.com",), ("*",)])
def test_no_origin_is_allowed(allowed: tuple[str, ...] | None) -> None:
    # Non-browser clients send no Origin; browsers always do.
    assert origin_allowed(origin_request(None), allowed)
    assert origin_allowed(origin_request(None, host=None), allowed, secure=True)


@pytest.mark.parametrize(
    ("origin", "host", "secure"),
    [
        ("http://example.com", "example.com", False),
        ("http://example.com", "example.com:80", False),
        ("http://example.com:80", "example.com", False),
        ("https://example.com", "example.com", True),
        ("https://example.com:443", "example.com", True),
        ("https://example.com", "example.com:443", True),
        ("http://example.com:8080", "example.com:8080", False),
        ("https://example.com:8443", "example.com:8443", True),
        ("HTTP://EXAMPLE.COM", "Example.Com", False),
        ("http://example.com/", "example.com", False),
        (" http://example.com ", " example.com ", False),
        ("http://[::1]:9001", "[::1]:9001", False),
        ("http://127.0.0.1:9001", "127.0.0.1:9001", False),
    ],
)
def test_same_origin_allowed(origin: str, host: str, secure: bool) -> None:
    assert origin_allowed(origin_request(origin, host), None, secure=secure)


@pytest.mark.parametrize(
    ("origin", "host", "secure"),
    [
        ("http://evil.com", "example.com", False),
        ("http://example.com.evil.com", "example.com", False),
        ("http://sub.example.com", "example.com", False),
        ("http://example.com:8080", "example.com", False),
        ("http://example.com", "example.com:8080", False),
        ("https://example.com", "example.com", False),  # default port 443 against 80
        ("http://example.com", "example.com", True),  # default port 80 against 443
        ("http://example.com:8443", "example.com:8443", True),  # an http page is not a TLS origin
        ("http://example.com", None, False),  # no Host to compare with
        ("http://example.com", "", False),
        ("http://example.com", "[::1", False),
        ("http://example.com", "example.com:abc", False),
    ],
)
def test_cross_origin_refused(origin: str, host: str | None, secure: bool) -> None:
    assert not origin_allowed(origin_request(origin, host), None, secure=secure)


GARBAGE_ORIGINS = [
    "null",
    "",
    "example.com",
    "ftp://example.com",
    "ws://example.com",
    "javascript:alert(1)",
    "http://",
    "http://:80",
    "http://[::1",
    "http://example.com]",
    "http://example.com:99999",
    "http://example.com:abc",
    "http://exa mple.com",
    "\x00",
]


@pytest.mark.parametrize("origin", GARBAGE_ORIGINS)
def test_garbage_origin_refused(origin: str) -> None:
    assert not origin_allowed(origin_request(origin), None)
    assert not origin_allowed(origin_request(origin), ("https://app.example.com",))
    assert origin_allowed(origin_request(origin), ("*",))


@given(st.text(max_size=30), st.text(max_size=30), st.booleans())
def test_origin_allowed_never_raises(origin: str, host: str, secure: bool) -> None:
    for candidate in (origin, "http://" + origin, "https://" + origin):
        result = origin_allowed(origin_request(candidate, host), None, secure=secure)
        assert isinstance(result, bool)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://app.example.com/", True),  # a trailing slash is tolerated
        ("HTTPS://APP.EXAMPLE.COM", True),  # so is case
        ("http://localhost:3000", True),
        ("https://app.example.com:443", False),  # exact match: no default-port folding
        ("http://app.example.com", False),
        ("https://evil.example.com", False),
        ("https://app.example.com.evil.com", False),
        ("http://localhost:3001", False),
        ("http://example.com", False),  # the same origin as the Host is not implied by a list
    ],
)
def test_allow_list(origin: str, allowed: bool) -> None:
    # The endpoint normalises the list (lower case, no trailing slash) before it gets here.
    allow_list = ("https://app.example.com", "http://localhost:3000")
    assert origin_allowed(origin_request(origin), allow_list) is allowed


def test_empty_allow_list_refuses_every_browser() -> None:
    assert not origin_allowed(origin_request("http://example.com"), ())


@pytest.mark.parametrize("origin", ["http://anything.com", "null", "https://x:1"])
def test_star_allows_any_origin(origin: str) -> None:
    assert origin_allowed(origin_request(origin), ("*",))
    assert origin_allowed(origin_request(origin), ("https://other", "*"))


# ---------------------------------------------------------------------- Headers


def test_headers_are_case_insensitive_and_join_repeats() -> None:
    headers = Headers([("Content-Type", "text/plain"), ("X-Thing", "1"), ("x-THING", "2"), ("Host", "h")])
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "text/plain"
    assert headers["X-Thing"] == "1, 2"
    assert headers.get_all("X-THING") == ["1", "2"]
    assert headers.get_all("missing") == []
    assert "x-thing" in headers
    assert "X-Thing" in headers
    assert "missing" not in headers
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert len(headers) == 3
    assert list(headers) == ["content-type", "x-thing", "host"]
    assert dict(headers) == {"content-type": "text/plain", "x-thing": "1, 2", "host": "h"}
    assert headers.raw_items() == [
        ("content-type", "text/plain"),
        ("x-thing", "1"),
        ("x-thing", "2"),
        ("host", "h"),
    ]
    with pytest.raises(KeyError):
        headers["missing"]


def test_headers_raw_items_is_a_copy() -> None:
    headers = Headers([("A", "1")])
    headers.raw_items().append(("b", "2"))
    assert "b" not in headers
    assert len(Headers()) == 0


# ------------------------------------------------------------------ keep_request

_header_name = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12
)
_header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40)
_target = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@given(
    _target,
    st.lists(st.tuples(st.one_of(_header_name, st.just("Sec-WebSocket-Key")), _header_value), max_size=12),
)
def test_a_kept_request_reads_back_exactly(target: str, items: list[tuple[str, str]]) -> None:
    """What a server keeps per connection (one string and the key) reads back exactly as the
    parsed request: its target, and its headers with repeated names (a repeated key too), empty
    values and values containing ':' included."""
    request = Request("GET", target, Headers(items))
    head, key = keep_request(request)
    assert kept_target(head) == target
    headers = kept_headers(head, key)
    assert headers.raw_items() == request.headers.raw_items()
    assert dict(headers) == dict(request.headers) and list(headers) == list(request.headers)
    keys = request.headers.get_all("sec-websocket-key")
    assert key == (keys[0] if keys else None)


def test_alike_requests_share_their_kept_head_and_keep_their_own_key() -> None:
    def request(key: str) -> Request:
        return Request(
            "GET",
            "/chat?room=a&x=",
            Headers([("Host", "h:1"), ("Sec-WebSocket-Key", key), ("X-Token", "a:b"), ("X-Token", "")]),
        )

    first, second = keep_request(request("a" * 22 + "==")), keep_request(request("b" * 22 + "=="))
    assert first[0] is second[0] and "a" * 22 not in first[0]
    assert kept_headers(*second)["sec-websocket-key"] == "b" * 22 + "=="
    assert kept_headers(*first)["x-token"] == "a:b, "
    assert target_query(kept_target(first[0])) == {"room": "a", "x": ""} == request("k").query
