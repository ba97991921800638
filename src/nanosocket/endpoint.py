"""The raw WebSocket API: ``serve()`` and ``connect()``, messages without events.

Usable on its own (the echo server is built on it) and the base the NanoSocket server and client
build on. Both sides run the same ``transport.WebSocket`` over the same ``protocol/`` core.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus

from .errors import ConnectionClosed, InvalidHandshake
from .options import WebSocketOptions
from .protocol.deflate import ClientDeflate, DeflateStats, ServerDeflate
from .protocol.handshake import (
    Request,
    build_request,
    check_upgrade,
    generate_key,
    http_response,
    origin_allowed,
    parse_ws_url,
    wants_upgrade,
)
from .transport import ClientSide, Flusher, Heartbeat, WebSocket

__all__ = ["ConnectHandler", "HttpHandler", "WebSocketServer", "connect", "serve"]

logger = logging.getLogger("nanosocket.endpoint")

#: Seconds close() waits past ``close_timeout`` (by which every connection has dropped a peer
#: that did not finish the closing handshake) before it drops what is still open.
CLOSE_SLACK = 1.0

#: Called with each accepted connection and its upgrade request; may be a coroutine function.
ConnectHandler = Callable[[WebSocket, Request], Awaitable[None] | None]
#: Answers a plain HTTP request with complete response bytes (None: 404), or a coroutine of them.
HttpHandler = Callable[[Request], bytes | Awaitable[bytes | None] | None]


_NOT_FOUND = http_response(HTTPStatus.NOT_FOUND, b"not found\n")


def _default_http(request: Request) -> bytes | None:
    return http_response(
        HTTPStatus.UPGRADE_REQUIRED,
        b"This endpoint speaks WebSocket.\n",
        headers=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
    )


class WebSocketServer:
    """Accepts WebSocket connections and hands each to ``handler``.

    The Origin policy (``allowed_origins``: None for same-origin, or exact origins, ``"*"`` for
    any) is applied before the upgrade; plain HTTP requests go to ``http_handler``; ``path``,
    when given, is the only path (or the paths) that accepts upgrades. With
    ``options.compression`` on, the first acceptable permessage-deflate offer is accepted;
    ``compression_stats`` counts its work.
    """

    def __init__(
        self,
        handler: ConnectHandler,
        *,
        options: WebSocketOptions | None = None,
        allowed_origins: Iterable[str] | None = None,
        http_handler: HttpHandler | None = None,
        response_headers: Iterable[tuple[str, str]] = (),
        path: str | Iterable[str] | None = None,
        compression_stats: DeflateStats | None = None,
    ) -> None:
        self.options = options or WebSocketOptions()
        #: permessage-deflate negotiation; None when compression is off.
        self.compression = (
            ServerDeflate(self.options, compression_stats) if self.options.compression != "off" else None
        )
        self._paths = None if path is None else frozenset((path,) if isinstance(path, str) else path)
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self._allowed_origins = (
            None if allowed_origins is None else tuple(o.rstrip("/").lower() for o in allowed_origins)
        )
        self._http_handler = http_handler or _default_http
        self._response_headers = tuple(response_headers)
        self.heartbeat = Heartbeat(self.options.idle_timeout) if self.options.idle_timeout else None
        #: Coalesces the writes of sends made outside reads (broadcasts) to once per iteration.
        self.flusher = Flusher()
        #: Every connection past its opening handshake, until its TCP connection is gone. Dicts
        #: as sets: per member a dict costs about half of what a set does.
        self.connections: dict[WebSocket, None] = {}
        self._handshaking: dict[WebSocket, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Set by close(): requests that arrive from then on are refused.
        self._closing = False
        self._server: asyncio.Server | None = None
        self._secure = False

    # ------------------------------------------------------------- listening

    async def listen(
        self,
        host: str | None = "127.0.0.1",
        port: int = 0,
        *,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool = False,
        backlog: int = 2048,
    ) -> None:
        """Start accepting connections (port 0 picks a free port; see ``port``)."""
        loop = asyncio.get_running_loop()
        self._secure = ssl is not None
        self._server = await loop.create_server(
            self._make_protocol, host, port, ssl=ssl, reuse_port=reuse_port or None, backlog=backlog
        )

    def _make_protocol(self) -> WebSocket:
        ws = WebSocket(self.options, endpoint=self)
        self._handshaking[ws] = None
        return ws

    @property
    def port(self) -> int:
        """The port the first listening socket is bound to."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RuntimeError("call listen() first")
        await self._server.serve_forever()

    # --------------------------------------------------------- ServerEndpoint

    def handle_request(self, ws: WebSocket, request: Request) -> None:
        if self._closing:
            # Accepted by the kernel before close() and read after it (a connection whose
            # protocol was made when close() had already aborted the handshaking ones).
            ws.reject(HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down")
            return
        if not wants_upgrade(request):
            answer = self._http_handler(request)
            if inspect.isawaitable(answer):
                self._track(self._respond_later(ws, answer))
            else:
                ws.respond(answer or _NOT_FOUND)
            return
        if self._paths is not None and request.path not in self._paths:
            ws.reject(HTTPStatus.NOT_FOUND, "no WebSocket endpoint at this path")
            return
        try:
            key, subprotocol = check_upgrade(request, self.options.subprotocols)
        except InvalidHandshake as exc:
            headers = [("Sec-WebSocket-Version", "13")] if exc.status == HTTPStatus.UPGRADE_REQUIRED else []
            ws.reject(exc.status, str(exc), headers)
            return
        if not origin_allowed(request, self._allowed_origins, secure=self._secure):
            ws.reject(HTTPStatus.FORBIDDEN, "origin not allowed")
            return
        compression = self.compression
        negotiated = (
            compression.negotiate(request.headers.get_all("sec-websocket-extensions"))
            if compression is not None
            else None
        )
        self._handshaking.pop(ws, None)
        self.connections[ws] = None
        ws.accept(key, subprotocol, self._response_headers, negotiated)
        try:
            result = self._handler(ws, request)
        except Exception:
            logger.exception("connection handler raised; closing with 1011")
            ws.close(1011, "internal error")
            return
        if inspect.isawaitable(result):
            self._track(self._run_handler(ws, result))

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respond_later(self, ws: WebSocket, answer: Awaitable[bytes | None]) -> None:
        try:
            response = await answer
        except Exception:
            logger.exception("HTTP handler raised")
            response = http_response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
        ws.respond(response or _NOT_FOUND)

    async def _run_handler(self, ws: WebSocket, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception as exc:
            if isinstance(exc, ConnectionClosed) and not ws.open:
                return  # recv() reported the end of this connection: the handler is done
            logger.exception("connection handler raised; closing with 1011")
            ws.close(1011, "internal error")

    def connection_lost(self, ws: WebSocket) -> None:
        self.connections.pop(ws, None)
        self._handshaking.pop(ws, None)

    # ---------------------------------------------------------------- closing

    async def close(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop listening, close every connection with ``code``, return when all are gone.

        Bounded by ``close_timeout`` (and a second of slack), whatever the peers do: each
        connection drops its peer ``close_timeout`` after its close frame when the closing
        handshake does not finish; whatever is still open after that is dropped here.
        """
        self._closing = True
        if self._server is not None:
            self._server.close()
        for ws in list(self._handshaking):
            ws.abort()
        for ws in list(self.connections):
            ws.close(code, reason)
        if self.connections:
            await self._wait_closed(self.options.close_timeout + CLOSE_SLACK)
        if self.connections or self._handshaking:
            left = list(self.connections)
            if left:
                logger.warning(
                    "%d connection(s) still open %.1f s after their close frame: dropped (%s)",
                    len(left),
                    self.options.close_timeout + CLOSE_SLACK,
                    ", ".join(map(repr, left[:5])),
                )
            for ws in [*left, *self._handshaking]:
                ws.abort()
            if self.connections and not await self._wait_closed(CLOSE_SLACK):
                logger.error(
                    "%d connection(s) did not end when dropped: no longer waited for",
                    len(self.connections),
                )
                self.connections.clear()
        for task in list(self._tasks):
            task.cancel()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the open connections to end; whether they all did."""
        waiters = [asyncio.ensure_future(ws.wait_closed()) for ws in list(self.connections)]
        if not waiters:
            return True
        _done, pending = await asyncio.wait(waiters, timeout=timeout)
        for waiter in pending:
            waiter.cancel()
        return not pending

    async def __aenter__(self) -> WebSocketServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def serve(
    handler: ConnectHandler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    options: WebSocketOptions | None = None,
    allowed_origins: Iterable[str] | None = None,
    http_handler: HttpHandler | None = None,
    ssl: ssl_module.SSLContext | None = None,
) -> WebSocketServer:
    """Start a raw WebSocket server and return it, listening."""
    server = WebSocketServer(
        handler, options=options, allowed_origins=allowed_origins, http_handler=http_handler
    )
    await server.listen(host, port, ssl=ssl)
    return server


async def connect(
    url: str,
    *,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    subprotocols: Iterable[str] = (),
    timeout: float = 10.0,
    options: WebSocketOptions | None = None,
    ssl: ssl_module.SSLContext | None = None,
) -> WebSocket:
    """Open a client connection to a ``ws://`` or ``wss://`` URL.

    With ``options.compression`` on, permessage-deflate is offered (and used if the server accepts).
    Raises ``TimeoutError`` when the connection and handshake take longer than ``timeout``,
    ``OSError`` when the TCP connection fails, and ``HandshakeError`` when the server refuses.
    """
    options = options or WebSocketOptions()
    target = parse_ws_url(url)
    offered = tuple(subprotocols) or options.subprotocols
    key = generate_key()
    deflate = ClientDeflate(options) if options.compression != "off" else None
    request = build_request(
        target,
        key,
        headers=headers,
        subprotocols=offered,
        extensions=deflate.offer() if deflate is not None else None,
    )
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    heartbeat = Heartbeat(options.idle_timeout) if options.idle_timeout else None
    side = ClientSide(request, key, offered, waiter, heartbeat, deflate=deflate)
    if target.secure and ssl is None:
        ssl = ssl_module.create_default_context()
    ws: WebSocket | None = None
    try:
        async with asyncio.timeout(timeout):
            _, ws = await loop.create_connection(
                lambda: WebSocket(options, client=side),
                target.host,
                target.port,
                ssl=ssl,
                server_hostname=target.host if ssl is not None else None,
            )
            await waiter
    except BaseException:
        if ws is not None:
            ws.abort()
        if heartbeat is not None:
            heartbeat.stop()
        raise
    assert ws is not None
    return ws
