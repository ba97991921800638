"""The plain-HTTP side of the server: /health, /metrics and custom routes.

A route handler takes the request (``nanosocket.Request``: method, path, query, headers) and
returns what to answer, sync or async:

* ``str`` (text/plain) or ``bytes`` (application/octet-stream), or ``dict`` / ``list`` (JSON);
* ``(status, body)`` or ``(status, body, headers)`` with such a body;
* ``None``: 204 No Content.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson

from ..protocol.handshake import Request, http_response

__all__ = ["RouteHandler", "Router", "head_only", "json_response", "render"]

logger = logging.getLogger("nanosocket.server.http")

RouteHandler = Callable[[Request], Any]


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
