"""The plain-HTTP side of the server: /health, /metrics, the browser client and custom routes.

``GET /nanosocket.js`` serves the browser client (static/nanosocket.js) with a strong ETag:
browsers revalidate it (``Cache-Control: no-cache``) and get 304 while it has not changed.

A route handler takes the request (``nanosocket.Request``: method, path, query, headers) and
returns what to answer, sync or async:

* ``str`` (text/plain) or ``bytes`` (application/octet-stream), or ``dict`` / ``list`` (JSON);
* ``(status, body)`` or ``(status, body, headers)`` with such a body;
* ``None``: 204 No Content.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from http import HTTPStatus
from importlib import resources
from typing import Any, Final

import orjson

from ..protocol.handshake import Request, http_response

__all__ = [
    "CLIENT_SCRIPT_PATH",
    "RouteHandler",
    "Router",
    "StaticFile",
    "client_script",
    "head_only",
    "json_response",
    "render",
]

logger = logging.getLogger("nanosocket.server.http")

RouteHandler = Callable[[Request], Any]

#: Where every server serves the browser client.
CLIENT_SCRIPT_PATH: Final = "/nanosocket.js"


class StaticFile:
    """A file served with a strong ETag: 200 with the body, or 304 on a matching If-None-Match.

    Both responses are built once; ``Cache-Control`` defaults to ``no-cache`` (store, but
    revalidate before each use), so a new version is picked up at once.
    """

    __slots__ = ("_not_modified", "_ok", "etag")

    def __init__(self, body: bytes, content_type: str, cache_control: str = "no-cache") -> None:
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = [("Cache-Control", cache_control), ("ETag", self.etag)]
        self._ok = http_response(HTTPStatus.OK, body, content_type=content_type, headers=headers)
        # A 304 has no body and no Content-Length of its own (RFC 9110 15.4.5).
        lines = ["HTTP/1.1 304 Not Modified", *(f"{name}: {value}" for name, value in headers)]
        self._not_modified = ("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n").encode("latin-1")

    def matches(self, if_none_match: str | None) -> bool:
        """Whether an If-None-Match header names this file's version (weak comparison)."""
        if if_none_match is None:
            return False
        for listed in if_none_match.split(","):
            tag = listed.strip()
            if tag == "*" or tag.removeprefix("W/") == self.etag:
                return True
        return False

    def respond(self, request: Request) -> bytes:
        return self._not_modified if self.matches(request.headers.get("if-none-match")) else self._ok


@cache
def client_script() -> StaticFile:
    """The browser client, read from the installed package once."""
    body = (resources.files("nanosocket") / "static" / "nanosocket.js").read_bytes()
    return StaticFile(body, "text/javascript; charset=utf-8")


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> bytes:
    """A complete JSON response."""
    return http_response(
        status,
        orjson.dumps(value),
        content_type="application/json",
        headers=[*(headers or {}).items(), ("Cache-Control", "no-store")],
    )


def head_only(response: bytes | Awaitable[bytes | None]) -> bytes | Awaitable[bytes | None]:
    """The answer to a HEAD request: the GET response's head without its body (RFC 9110 9.3.2)."""
    if isinstance(response, bytes):
        return _strip_body(response)
    return _head_only_later(response)


def _strip_body(response: bytes) -> bytes:
    head, separator, _ = response.partition(b"\r\n\r\n")
    return head + separator


async def _head_only_later(response: Awaitable[bytes | None]) -> bytes | None:
    complete = await response
    return None if complete is None else _strip_body(complete)


def render(result: Any) -> bytes:
    """Turn a route handler's return value into a complete HTTP response."""
    status = 200
    headers: Mapping[str, str] = {}
    body = result
    if isinstance(result, tuple):
        if len(result) == 2:
            status, body = result
        elif len(result) == 3:
            status, body, headers = result
        else:
            raise TypeError("a route returns body, (status, body) or (status, body, headers)")
    if body is None:
        return http_response(HTTPStatus.NO_CONTENT if status == 200 else status, b"", headers=headers.items())
    if isinstance(body, (dict, list)):
        return json_response(body, status, headers)
    if isinstance(body, str):
        return http_response(status, body.encode("utf-8"), headers=headers.items())
    if isinstance(body, (bytes, bytearray)):
        content_type = dict((k.lower(), v) for k, v in headers.items()).get(
            "content-type", "application/octet-stream"
        )
        extra = [(k, v) for k, v in headers.items() if k.lower() != "content-type"]
        return http_response(status, bytes(body), content_type=content_type, headers=extra)
    raise TypeError(f"a route cannot answer with {type(body).__name__}")


class Router:
    """Exact-path routes for GET (and HEAD) requests, plus the built-in ones."""

    __slots__ = ("_routes",)

    def __init__(self) -> None:
        self._routes: dict[str, tuple[frozenset[str], RouteHandler]] = {}

    def add(self, path: str, handler: RouteHandler, methods: tuple[str, ...] = ("GET",)) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route paths start with '/', got {path!r}")
        allowed = frozenset(m.upper() for m in methods)
        if "GET" in allowed:
            allowed |= {"HEAD"}
        self._routes[path] = (allowed, handler)

    def __contains__(self, path: str) -> bool:
        return path in self._routes

    def handle(self, request: Request) -> bytes | Awaitable[bytes | None] | None:
        """Answer ``request``: bytes now, a coroutine of bytes later, or None for 404."""
        route = self._routes.get(request.path)
        if route is None:
            return None
        methods, handler = route
        if request.method not in methods:
            return http_response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                headers=[("Allow", ", ".join(sorted(methods)))],
            )
        try:
            result = handler(request)
        except Exception:
            logger.exception("route %s raised", request.path)
            return http_response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
        if inspect.isawaitable(result):
            return _render_later(request.path, result)
        return _render_or_500(request.path, result)


def _render_or_500(path: str, result: Any) -> bytes:
    try:
        return render(result)
    except TypeError:
        logger.exception("route %s returned something that is not a response", path)
        return http_response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")


async def _render_later(path: str, result: Awaitable[Any]) -> bytes:
    try:
        value = await result
    except Exception:
        logger.exception("route %s raised", path)
        return http_response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
    return _render_or_500(path, value)
