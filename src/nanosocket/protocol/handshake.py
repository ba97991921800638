"""The HTTP/1.1 opening handshake (RFC 6455 §4), both sides, parsed with httptools.

Server side: ``RequestReader`` reads a request head within size, count and header limits;
``check_upgrade`` validates it as a WebSocket upgrade; ``accept_response`` answers it.
Client side: ``build_request``, ``ResponseReader`` and ``check_response``. Plain HTTP answers
(health, metrics, errors) are built by ``http_response``. ``origin_allowed`` is the Origin policy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import httptools

from ..errors import HandshakeRejected, InvalidHandshake
from .deflate import ClientDeflate

__all__ = [
    "Headers",
    "Request",
    "RequestReader",
    "Response",
    "ResponseReader",
    "WebSocketURL",
    "accept_key",
    "accept_response",
    "build_request",
    "check_response",
    "check_upgrade",
    "generate_key",
    "http_response",
    "keep_request",
    "kept_headers",
    "kept_target",
    "origin_allowed",
    "parse_ws_url",
    "target_query",
    "wants_upgrade",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Headers(Mapping[str, str]):
    """Case-insensitive, ordered HTTP headers; a repeated header reads as its values joined by ", "."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = [(name.lower(), value) for name, value in items]

    def _pairs(self) -> list[tuple[str, str]]:
        return self._items

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        key = name.lower()
        return [value for item_name, value in self._pairs() if item_name == key]

    def raw_items(self) -> list[tuple[str, str]]:
        """Every (lower-case name, value) pair, repeats included."""
        return list(self._pairs())

    def __iter__(self) -> Iterator[str]:
        seen: dict[str, None] = {}
        for name, _ in self._pairs():
            seen.setdefault(name)
        return iter(seen)

    def __len__(self) -> int:
        return len({name for name, _ in self._pairs()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._pairs()!r})"


def keep_request(request: Request) -> tuple[str, str | None]:
    """What a server keeps of an upgrade request per connection, to read back with
    ``kept_target`` and ``kept_headers``: its target and header lines in one string, and the
    ``Sec-WebSocket-Key`` value apart. Every request has its own key, while the rest is often
    the same for many connections (one client type, one proxy): that string is interned, so
    connections whose requests are alike share it (interned strings are freed with their last
    user, so this holds no more than the live connections' heads)."""
    key: str | None = None
    lines = [request.target]
    for name, value in request.headers.raw_items():
        if name == "sec-websocket-key" and key is None:
            key = value
            lines.append(f"{name}:")
        else:
            lines.append(f"{name}:{value}")
    # Header names never contain ":" and neither a target nor a value contains a line break
    # (httptools refuses both), so the lines split again exactly.
    return sys.intern("\n".join(lines)), key


def kept_target(head: str) -> str:
    """The request target of a request kept by ``keep_request``."""
    return head.partition("\n")[0]


def kept_headers(head: str, key: str | None) -> Headers:
    """The headers of a request kept by ``keep_request``, in their order, repeats included."""
    lines = head.split("\n")
    pairs = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if key is not None and name == "sec-websocket-key":
            value, key = key, None
        pairs.append((name, value))
    return Headers(pairs)


def _tokens(value: str | None, *, lower: bool = True) -> list[str]:
    """Comma-separated header tokens, lower-cased unless ``lower`` is false."""
    if not value:
        return []
    tokens = [token.strip() for token in value.split(",") if token.strip()]
    return [token.lower() for token in tokens] if lower else tokens


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head: what the server knows of a client before it answers."""

    method: str
    target: str
    headers: Headers
    keep_alive: bool = True

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def query_string(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; a repeated name keeps its last value."""
        return target_query(self.target)


def target_query(target: str) -> dict[str, str]:
    """The query parameters of a request target; a repeated name keeps its last value."""
    _, _, query = target.partition("?")
    return dict(parse_qsl(query, keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class Response:
    """A parsed response head, as the client sees it."""

    status: int
    headers: Headers


class _HeadReader:
    """httptools callbacks shared by the request and response readers, with the limits."""

    def __init__(self, max_size: int, max_headers: int) -> None:
        self._max_size = max_size
        self._max_headers = max_headers
        self._size = 0
        self._headers: list[tuple[str, str]] = []
        self._url = bytearray()
        self._complete = False
        #: Bytes that followed the head (the first frames of an upgraded connection).
        self.trailing = b""

    def on_url(self, url: bytes) -> None:
        if not self._complete:  # a pipelined request's URL must not extend ours
            self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._complete:  # a header of a pipelined request
            return
        if len(self._headers) >= self._max_headers:
            raise InvalidHandshake(
                f"more than {self._max_headers} header lines",
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
        try:
            self._headers.append((name.decode("ascii"), value.decode("latin-1")))
        except UnicodeDecodeError as exc:
            raise InvalidHandshake("header name is not ASCII") from exc

    def on_headers_complete(self) -> None:
        self._complete = True

    def _feed(self, parser: httptools.HttpRequestParser | httptools.HttpResponseParser, data: bytes) -> bool:
        """Feed ``data``; return True once the head is complete."""
        head_bytes = len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            head_bytes = upgrade.args[0]
            self.trailing = data[head_bytes:]
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, InvalidHandshake):
                raise cause from None
            raise InvalidHandshake(f"malformed HTTP head: {exc}") from exc
        except httptools.HttpParserError as exc:
            raise InvalidHandshake(f"malformed HTTP head: {exc}") from exc
        self._size += head_bytes
        if self._size > self._max_size:
            raise InvalidHandshake(
                f"HTTP head larger than {self._max_size} bytes",
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            )
        return self._complete


class RequestReader(_HeadReader):
    """Reads one request head incrementally; ``feed`` returns the Request once it is complete."""

    def __init__(self, max_size: int, max_headers: int) -> None:
        super().__init__(max_size, max_headers)
        self._parser = httptools.HttpRequestParser(self)
        self._keep_alive = True

    def on_headers_complete(self) -> None:
        # llhttp resets its flags once the message is complete: read keep-alive while it is known.
        if not self._complete:
            self._keep_alive = self._parser.should_keep_alive()
        super().on_headers_complete()

    def feed(self, data: bytes) -> Request | None:
        if not self._feed(self._parser, data):
            return None
        return Request(
            method=self._parser.get_method().decode("ascii"),
            target=self._url.decode("latin-1"),
            headers=Headers(self._headers),
            keep_alive=self._keep_alive,
        )


class ResponseReader(_HeadReader):
    """Reads one response head incrementally; ``feed`` returns the Response once it is complete."""

    def __init__(self, max_size: int, max_headers: int) -> None:
        super().__init__(max_size, max_headers)
        self._parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> Response | None:
        if not self._feed(self._parser, data):
            return None
        return Response(status=self._parser.get_status_code(), headers=Headers(self._headers))


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept value that answers ``key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def generate_key() -> str:
    """A fresh random Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _select_subprotocol(offered: list[str], supported: tuple[str, ...]) -> str | None:
    for protocol in supported:
        if protocol in offered:
            return protocol
    return None


def wants_upgrade(request: Request) -> bool:
    """Whether the request asks for a WebSocket (as opposed to a plain HTTP request)."""
    return "websocket" in _tokens(request.headers.get("upgrade"))


def check_upgrade(request: Request, subprotocols: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """Validate a WebSocket upgrade request; return ``(key, selected subprotocol)``.

    Raises InvalidHandshake with the status to answer: 400 for a malformed upgrade, 426 for a
    request that is not an upgrade or asks for another protocol version.
    """
    headers = request.headers
    if request.method != "GET":
        raise InvalidHandshake("WebSocket upgrade requires GET", HTTPStatus.METHOD_NOT_ALLOWED)
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise InvalidHandshake("this endpoint speaks WebSocket", HTTPStatus.UPGRADE_REQUIRED)
    if "upgrade" not in _tokens(headers.get("connection")):
        raise InvalidHandshake("Connection header lacks 'upgrade'")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise InvalidHandshake("unsupported Sec-WebSocket-Version", HTTPStatus.UPGRADE_REQUIRED)
    key = headers.get_all("sec-websocket-key")
    if len(key) != 1:
        raise InvalidHandshake("exactly one Sec-WebSocket-Key is required")
    try:
        raw = base64.b64decode(key[0].strip(), validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: not ASCII (headers are latin-1)
        raise InvalidHandshake("Sec-WebSocket-Key is not base64") from exc
    if len(raw) != 16:
        raise InvalidHandshake("Sec-WebSocket-Key must encode 16 bytes")
    # Subprotocol names are case-sensitive: the client checks the echoed name exactly.
    offered = _tokens(headers.get("sec-websocket-protocol"), lower=False)
    selected = _select_subprotocol(offered, subprotocols)
    return key[0].strip(), selected


def http_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "text/plain; charset=utf-8",
    headers: Iterable[tuple[str, str]] = (),
    keep_alive: bool = False,
) -> bytes:
    """A complete plain HTTP/1.1 response."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body or status >= 200:
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def accept_response(
    key: str, subprotocol: str | None = None, extra_headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The 101 response that completes the server side of the handshake."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    lines.extend(f"{name}: {value}" for name, value in extra_headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _default_port(scheme: str) -> int:
    return 443 if scheme in ("https", "wss") else 80


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        host = (parts.hostname or "").lower()
        port = parts.port or _default_port(scheme)
    except ValueError:
        return None
    return (host, port) if host else None


def origin_allowed(request: Request, allowed: tuple[str, ...] | None, *, secure: bool = False) -> bool:
    """The Origin policy against Cross-Site WebSocket Hijacking.

    ``allowed=None`` means same-origin: a browser's Origin must name the host and port the request
    was sent to (``Host``), and over TLS (``secure``) its scheme must be https: a page served over
    plain http is another origin. Otherwise the Origin must match an entry exactly (``"*"``
    allows any). Requests without an Origin header come from non-browser clients and are allowed:
    a browser always sends one with a WebSocket upgrade.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip()
    if allowed is not None:
        return "*" in allowed or origin.rstrip("/").lower() in allowed
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    if parts.scheme not in (("https",) if secure else ("http", "https")) or not parts.netloc:
        return False
    origin_hp = _host_port(parts.netloc, parts.scheme)
    host_header = request.headers.get("host")
    if origin_hp is None or host_header is None:
        return False
    return origin_hp == _host_port(host_header.strip(), "https" if secure else "http")


@dataclass(frozen=True, slots=True)
class WebSocketURL:
    """A parsed ws:// or wss:// URL."""

    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == (443 if self.secure else 80):
            return host
        return f"{host}:{self.port}"


def parse_ws_url(url: str) -> WebSocketURL:
    """Parse a ws:// or wss:// URL; raise InvalidHandshake for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidHandshake(f"invalid WebSocket URL {url!r}") from exc
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InvalidHandshake(f"invalid WebSocket URL {url!r}: expected ws:// or wss://")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebSocketURL(secure, parts.hostname, port or (443 if secure else 80), resource)


def build_request(
    url: WebSocketURL,
    key: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    subprotocols: tuple[str, ...] = (),
    extensions: str | None = None,
) -> bytes:
    """The client's upgrade request; ``extensions`` is its Sec-WebSocket-Extensions offer."""
    lines = [
        f"GET {url.resource} HTTP/1.1",
        f"Host: {url.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise InvalidHandshake(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_response(
    response: Response,
    key: str,
    subprotocols: tuple[str, ...] = (),
    deflate: ClientDeflate | None = None,
) -> str | None:
    """Validate the server's answer to our upgrade; return the selected subprotocol.

    ``deflate`` is the permessage-deflate offer we made, if any: the server may accept it (the
    answer is checked against it, see ClientDeflate.accept) and select no other extension.
    """
    if response.status != 101:
        raise HandshakeRejected(response.status)
    headers = response.headers
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise InvalidHandshake("response lacks 'Upgrade: websocket'")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise InvalidHandshake("response lacks 'Connection: upgrade'")
    if headers.get("sec-websocket-accept", "").strip() != accept_key(key):
        raise InvalidHandshake("wrong Sec-WebSocket-Accept")
    extensions = headers.get_all("sec-websocket-extensions")
    if deflate is not None:
        deflate.accept(extensions)
    elif any(value.strip(" \t,") for value in extensions):
        raise InvalidHandshake("server selected an extension that was not offered")
    selected = headers.get("sec-websocket-protocol")
    if selected is not None:
        selected = selected.strip()
        if selected not in subprotocols:
            raise InvalidHandshake(f"server selected subprotocol {selected!r}, which was not offered")
    return selected
