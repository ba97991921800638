"""NanoSocket: the server. It composes the engine, the adapter, middleware, handlers and routes."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl as ssl_module
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from http import HTTPStatus
from typing import Any, Final, TypeVar, Unpack, overload

import uvloop

from ..adapters.base import NO_REPLY, Adapter
from ..adapters.memory import MemoryAdapter
from ..dispatch import Handler, HandlerRegistry, Suspended, invoke, run_eagerly
from ..endpoint import WebSocketServer
from ..errors import ConfigurationError, ConnectError
from ..options import ServerOptions, ServerOptionsKwargs, server_options
from ..protocol.envelope import PEER_RESERVED_EVENTS
from ..protocol.handshake import Request, http_response
from ..rooms import room_set
from ..transport import WebSocket
from .broadcast import BroadcastOperator, compress_from
from .cluster import ClusterNode, RemoteSocket
from .dashboard import DASHBOARD_WS_PATH, Dashboard
from .errorlog import RateLimitedLog
from .http import CLIENT_SCRIPT_PATH, Router, client_script, head_only, json_response
from .metrics import Stats, current_rss, render_prometheus
from .middleware import Middleware, run_chain
from .socket import Socket

__all__ = ["NanoSocket"]

logger = logging.getLogger("nanosocket.server")

F = TypeVar("F", bound=Callable[..., Any])

#: The events a server emits to its own handlers, and how many arguments each passes. A handler
#: may take fewer (``disconnect(socket)`` is fine): it gets the leading ones.
SERVER_EVENTS: Final = {"connection": 1, "disconnect": 2, "listening": 0, "error": 2, "close": 0}


def check_server_side_name(event: object) -> str:
    """Validate the name of a server-side event (one node to the others' ``server.on`` handlers):
    a non-empty string without NUL, not starting with '$', not a server event (SERVER_EVENTS)
    and not an event a socket raises locally."""
    if (
        not isinstance(event, str)
        or not event
        or "\x00" in event
        or event[0] == "$"
        or event in SERVER_EVENTS
        or event in PEER_RESERVED_EVENTS
    ):
        raise ValueError(
            f"{event!r} cannot be a server-side event: the server emits {sorted(SERVER_EVENTS)} itself, "
            f"sockets raise {sorted(PEER_RESERVED_EVENTS)}, '$' names belong to the protocol, and "
            "names are non-empty strings without NUL (client events are registered for every socket "
            "with server.socket_on(...), or on one socket with socket.on(...))"
        )
    return event


def check_socket_event_name(event: object) -> str:
    """Validate the name of a client event handled at server level (``socket_on``): a
    non-empty string without NUL, not starting with '$', not an event raised locally."""
    if not isinstance(event, str) or not event or "\x00" in event or event[0] == "$":
        raise ValueError(
            f"cannot listen to {event!r}: event names are non-empty strings without NUL "
            "('$' names belong to the protocol)"
        )
    if event in PEER_RESERVED_EVENTS:
        raise ValueError(
            f"{event!r} is not a client event: a client can never send it (the server's "
            "'disconnect' and 'error' events are registered with server.on)"
        )
    return event


def _check_ssl(context: object) -> ssl_module.SSLContext | None:
    """Refuse an ``ssl`` that is not an SSLContext (a path or True would fail only at listen)."""
    if context is not None and not isinstance(context, ssl_module.SSLContext):
        raise ConfigurationError(f"ssl must be an ssl.SSLContext or None, got {context!r}")
    return context


def _check_address(port: object, host: object) -> None:
    """Refuse a port or host that cannot be listened on, naming it (as the options do)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigurationError(f"port must be an integer from 0 to 65535, got {port!r}")
    if not isinstance(host, str):
        raise ConfigurationError(f"host must be a string, got {host!r}")


class _SocketsView(Mapping[str, Socket]):
    """``server.sockets``: connected sockets by id, read-only, always current."""

    __slots__ = ("_adapter",)

    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter

    def __getitem__(self, socket_id: str) -> Socket:
        member = self._adapter.get(socket_id)
        if member is None:
            raise KeyError(socket_id)
        return member  # type: ignore[return-value]  # members of a server's adapter are its sockets

    def __iter__(self) -> Iterator[str]:
        return iter([member.id for member in self._adapter.local_members()])

    def __len__(self) -> int:
        return self._adapter.local_count()


class NanoSocket:
    """A realtime server: named events, acknowledgements, rooms and broadcasts over WebSocket.

    ``NanoSocket(port=3000, host="0.0.0.0", **options)``; the options are those of
    ``ServerOptions`` (limits, timeouts, ``cors``, ``path``...). Invalid values raise
    ConfigurationError naming the option. ``ssl`` (an ``ssl.SSLContext``) serves wss:// and
    https:// on the same port.
    """

    def __init__(
        self,
        *,
        port: int = 3000,
        host: str = "0.0.0.0",
        adapter: Adapter | None = None,
        ssl: ssl_module.SSLContext | None = None,
        **options: Unpack[ServerOptionsKwargs],
    ) -> None:
        _check_address(port, host)
        self.options: ServerOptions = server_options(**options)
        #: The TLS context connections are served with (wss://, https://); None: plain TCP.
        self.ssl = _check_ssl(ssl)
        if self.options.cors is not None and "*" in self.options.cors:
            logger.warning(
                "cors allows any origin ('*'): any web page may open a connection to this server with"
                " its visitors' cookies and HTTP credentials (Cross-Site WebSocket Hijacking). List"
                " the allowed origins instead, unless no middleware trusts cookies or HTTP auth."
            )
        #: The size from which messages are compressed; None when compression is off.
        self.compress_from = compress_from(self.options)
        self.port = port
        self.host = host
        self.adapter: Adapter = adapter if adapter is not None else MemoryAdapter()
        self.adapter.attach(ClusterNode(self))
        if self.options.recovery is not None:
            self.adapter.enable_recovery(self.options.recovery)
        self.stats = Stats()
        #: Client message ids of at-least-once emits seen recently, and their replies.
        self._dedup = self.adapter.dedup_store(self.options)
        self._handlers = HandlerRegistry()
        #: Handlers of client events shared by every socket (``socket_on``): event → handlers,
        #: each called as ``handler(socket, *args)``. Tuples are replaced, never changed, so a
        #: dispatch in progress keeps its snapshot; the dict itself is never replaced (every
        #: connection holds it).
        self._socket_handlers: dict[str, tuple[Handler, ...]] = {}
        self._middleware: list[Middleware] = []
        self._routes = Router()
        self._ws_options = self.options.websocket_options()
        self._server: WebSocketServer | None = None
        self._errors = RateLimitedLog(logger)
        self._admissions: set[asyncio.Task[Any]] = set()
        #: Async event handlers still running (cancelled by close()).
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        #: Connected sockets by their private session id (connection-state recovery on).
        self._live_sessions: dict[str, Socket] = {}
        self._dashboard = Dashboard(self) if self.options.dashboard else None

    # ----------------------------------------------------------------- events

    @overload
    def on(self, event: str) -> Callable[[F], F]: ...

    @overload
    def on(self, event: str, handler: F) -> F: ...

    def on(self, event: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register a server event handler: ``connection`` (socket), ``disconnect`` (socket,
        reason), ``listening`` (), ``error`` (error, socket or None), ``close`` (); any other name
        is a server-side event, emitted by other nodes of a cluster (``server_side_emit``).
        Client events are handled with ``socket_on`` (every socket) or ``socket.on`` (one)."""
        if event not in SERVER_EVENTS:
            check_server_side_name(event)
        if handler is None:
            return partial(self.on, event)  # type: ignore[return-value]  # the decorator form
        described = Handler(handler)
        if event in SERVER_EVENTS and described.min_args > SERVER_EVENTS[event]:
            raise TypeError(
                f"a {event!r} handler gets {SERVER_EVENTS[event]} argument(s); "
                f"{getattr(handler, '__qualname__', handler)!r} requires {described.min_args}"
            )
        self._handlers.on(event, handler)
        return handler

    def off(self, event: str | None = None, handler: Callable[..., Any] | None = None) -> None:
        """Remove a server event handler (or all of an event, or all)."""
        self._handlers.off(event, handler)

    @overload
    def socket_on(self, event: str) -> Callable[[F], F]: ...

    @overload
    def socket_on(self, event: str, handler: F) -> F: ...

    def socket_on(self, event: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Register a handler of the client event ``event`` for every socket, present and future:
        ``handler(socket, *args)``; usable as ``@server.socket_on(event)``.

        It runs before the socket's own handlers of ``event`` (``socket.on``), and as the first
        handler its return value answers the client's ack. Local events (``disconnect``,
        ``error``...) are server events: ``server.on``.
        """
        check_socket_event_name(event)
        if handler is None:
            return partial(self.socket_on, event)  # type: ignore[return-value]  # the decorator form
        described = Handler(handler)
        if described.max_args == 0:
            raise TypeError(
                f"{getattr(handler, '__qualname__', handler)!r} takes no arguments: a server-level "
                "handler is called with the socket first, then the event's arguments"
            )
        handlers = self._socket_handlers
        handlers[event] = (*handlers.get(event, ()), described)
        return handler

    def socket_off(self, event: str | None = None, handler: Callable[..., Any] | None = None) -> None:
        """Remove a server-level socket event handler, all of ``event``, or all of them (the
        handlers sockets registered themselves stay)."""
        handlers = self._socket_handlers
        if event is None:
            handlers.clear()
        elif handler is None:
            handlers.pop(event, None)
        elif event in handlers:
            remaining = tuple(h for h in handlers[event] if h.fn is not handler and h.fn != handler)
            if remaining:
                handlers[event] = remaining
            else:
                del handlers[event]

    def _emit_server_event(self, event: str, *args: Any) -> None:
        handlers = self._handlers.get(event)
        if not handlers:
            return
        for handler in handlers:
            accepted = handler.max_args
            try:
                result = invoke(
                    handler, args if accepted is None or accepted >= len(args) else args[:accepted]
                )
            except Exception as exc:
                self._handler_error(event, exc, args)
                continue
            if type(result) is Suspended:
                result.task.add_done_callback(partial(self._task_done, event, args))

    def _task_done(self, event: str, args: tuple[Any, ...], task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            assert error is not None
            self._handler_error(event, error, args)

    def _handler_error(self, event: str, error: BaseException, args: tuple[Any, ...]) -> None:
        self.stats.handler_errors += 1
        socket = args[0] if args and isinstance(args[0], Socket) else None
        if event == "error":
            self._errors.error("error-handler", "an 'error' handler raised", error)
            return
        self._report_error(error, socket)

    # ------------------------------------------------------------- middleware

    def use(self, middleware: Callable[..., Any]) -> Callable[..., Any]:
        """Add a connection middleware: ``def mw(socket, next)`` or ``async def mw(socket)``.

        Middleware run in order during the connect step, before any event of the socket is
        dispatched; a refusal (``next(error)`` or raising) reaches the client as ``connect_error``
        with the error's message (and its ``data`` attribute, if any).
        """
        self._middleware.append(Middleware(middleware))
        return middleware

    # ------------------------------------------------------------- broadcasts

    def to(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Target the sockets in ``rooms`` (a room name, a socket id, or several)."""
        return BroadcastOperator(self.adapter).to(rooms)

    in_ = to

    def except_(self, rooms: str | Iterable[str]) -> BroadcastOperator:
        """Target every socket except those in ``rooms``."""
        return BroadcastOperator(self.adapter).except_(rooms)

    @property
    def volatile(self) -> BroadcastOperator:
        """Broadcast that drops the message for slow clients instead of queueing it."""
        return BroadcastOperator(self.adapter).volatile

    def timeout(self, seconds: float) -> BroadcastOperator:
        """Target every socket, with ``seconds`` for the acknowledgements of ``call``."""
        return BroadcastOperator(self.adapter).timeout(seconds)

    def broadcast(self, event: str, *args: Any) -> int:
        """Send ``event`` to every connected socket (of every node); return how many sockets of
        this process it was written to."""
        return BroadcastOperator(self.adapter).emit(event, *args)

    emit = broadcast

    # ---------------------------------------------------------------- cluster

    async def fetch_sockets(
        self, room: str | Iterable[str] | None = None, *, timeout: float | None = None
    ) -> list[Socket | RemoteSocket]:
        """Every socket of every node (or those in ``room``): this process's as Socket objects,
        other nodes' as RemoteSocket. Nodes that do not answer in ``timeout`` are left out."""
        operator = BroadcastOperator(self.adapter) if room is None else self.to(room)
        return await operator.fetch_sockets(timeout)

    def server_side_emit(self, event: str, *args: Any) -> None:
        """Run the ``server.on(event)`` handlers of every other node of the cluster."""
        self.adapter.server_side_emit(check_server_side_name(event), list(args))

    async def server_side_emit_with_ack(
        self, event: str, *args: Any, timeout: float | None = None
    ) -> list[Any]:
        """``server_side_emit``, returning what each other node's first handler returned; nodes
        that do not answer within ``timeout`` (default: the adapter's) are left out."""
        return await self.adapter.server_side_emit_with_ack(
            check_server_side_name(event), list(args), timeout
        )

    async def fetch_room_names(self, *, timeout: float | None = None) -> set[str]:
        """Every room with a socket on some node (``room_names`` is this process's)."""
        return await self.adapter.fetch_room_names(timeout)

    async def fetch_room_size(self, room: str, *, timeout: float | None = None) -> int:
        """How many sockets ``room`` has on all nodes together (``get_room_size``: this process)."""
        (name,) = room_set(room)
        return await self.adapter.fetch_room_size(name, timeout)

    async def _server_side_event(self, event: str, args: list[Any]) -> Any:
        """Run this server's handlers of a server-side event from another node: the first one's
        return value (NO_REPLY without a handler); the others just run."""
        try:
            check_server_side_name(event)
        except ValueError:
            logger.warning("ignored a server-side event with a reserved name: %r", event)
            return NO_REPLY
        handlers = self._handlers.get(event)
        if not handlers:
            return NO_REPLY
        reply: Any = NO_REPLY
        failure: BaseException | None = None
        pending: Suspended | None = None
        arguments = tuple(args)
        for index, handler in enumerate(handlers):
            try:
                result = invoke(handler, args)
            except Exception as exc:
                self._handler_error(event, exc, arguments)
                if index == 0:
                    failure = exc
                continue
            if type(result) is Suspended:
                if index == 0:
                    pending = result
                else:
                    result.task.add_done_callback(partial(self._task_done, event, arguments))
            elif index == 0:
                reply = result
        if pending is not None:
            try:
                reply = await pending.task
            except Exception as exc:
                self._handler_error(event, exc, arguments)
                failure = exc
        if failure is not None:
            raise failure
        return reply

    # ------------------------------------------------------------------ rooms

    @property
    def room_names(self) -> list[str]:
        """Every room with at least one socket of this process (``fetch_room_names``: cluster)."""
        return self.adapter.room_names()

    def get_room_size(self, room: str) -> int:
        """Sockets of this process in ``room`` (``fetch_room_size``: cluster)."""
        return self.adapter.room_size(room)

    def delete_room(self, room: str) -> None:
        """Empty a room on every node; its sockets stay connected."""
        (name,) = room_set(room)
        self.adapter.delete_room(name)

    @property
    def connection_count(self) -> int:
        """Connected sockets (past their middleware)."""
        return self.adapter.local_count()

    @property
    def sockets(self) -> Mapping[str, Socket]:
        """Connected sockets by id."""
        return _SocketsView(self.adapter)

    # ------------------------------------------------------------------- HTTP

    def route(self, path: str, methods: Iterable[str] = ("GET",)) -> Callable[[F], F]:
        """Serve a plain HTTP route on the same port: ``@server.route("/status")``."""

        def register(fn: F) -> F:
            self._routes.add(path, fn, tuple(methods))
            return fn

        return register

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers."""
        stats = self.stats
        adapter = self.adapter.health()
        degraded = adapter.get("status", "ok") != "ok"
        return {
            "status": "degraded" if degraded else "ok",
            **({"degraded": ["adapter"]} if degraded else {}),
            "adapter": {"type": type(self.adapter).__name__, **adapter},
            "connections": self.connection_count,
            "rooms": len(self.adapter.room_names()),
            "uptime": round(stats.uptime, 3),
            "memory": current_rss(),
            "messages_in": stats.messages_in,
            "messages_out": stats.messages_out,
            "messages_per_second": round(stats.messages_per_second, 1),
        }

    def _gauges(self) -> dict[str, float]:
        return {
            "connected_sockets": self.connection_count,
            "rooms": len(self.adapter.room_names()),
            "uptime_seconds": self.stats.uptime,
            "resident_memory_bytes": current_rss(),
            "messages_per_second": self.stats.messages_per_second,
            **self.adapter.gauges(),
        }

    def _http(self, request: Request) -> Any:
        response = self._answer(request)
        if response is not None and request.method == "HEAD":
            return head_only(response)
        return response

    def _answer(self, request: Request) -> Any:
        if request.path in self._routes:
            return self._routes.handle(request)
        if request.path == CLIENT_SCRIPT_PATH and request.method in ("GET", "HEAD"):
            return client_script().respond(request)
        if self._dashboard is not None and (page := self._dashboard.http(request)) is not None:
            return page
        if self.options.monitoring and request.method in ("GET", "HEAD"):
            if request.path == "/health":
                return json_response(self.health())
            if request.path == "/metrics":
                return http_response(
                    200,
                    render_prometheus(self.stats, self._gauges, self.adapter.stats),
                    content_type="text/plain; version=0.0.4; charset=utf-8",
                )
        if request.path == (self.options.path or "/"):
            return http_response(
                HTTPStatus.UPGRADE_REQUIRED,
                b"This is a NanoSocket endpoint: connect with a WebSocket client.\n",
                headers=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            )
        return None

    # ------------------------------------------------------ ConnectionHost

    def _on_websocket(self, ws: WebSocket, request: Request) -> None:
        if self._dashboard is not None and request.path == DASHBOARD_WS_PATH:
            self._dashboard.accept(ws, request)
            return
        Socket(self, ws, request)._start()

    def _admit(self, socket: Socket) -> asyncio.Task[Any] | None:
        recovery = self.options.recovery
        if not self._middleware or (recovery is not None and recovery.skip_middleware and socket.recovered):
            socket._accept()
            return None
        try:
            outcome = run_eagerly(run_chain(self._middleware, socket))
        except Exception as exc:
            socket._reject(exc)
            return None
        if isinstance(outcome, asyncio.Task):
            self._admissions.add(outcome)
            outcome.add_done_callback(lambda task: self._admitted(socket, task))
            return outcome
        socket._accept()
        return None

    def _admitted(self, socket: Socket, task: asyncio.Task[Any]) -> None:
        self._admissions.discard(task)
        if task.cancelled():
            socket._reject(ConnectError("connection refused"))
            return
        error = task.exception()
        if error is None:
            socket._accept()
        elif isinstance(error, Exception):
            socket._reject(error)
        else:
            socket._reject(ConnectError("connection refused"))

    def _socket_connected(self, socket: Socket) -> None:
        self.stats.connections_total += 1
        self._emit_server_event("connection", socket)

    def _socket_disconnected(self, socket: Socket, reason: str) -> None:
        self.stats.disconnections_total += 1
        self._emit_server_event("disconnect", socket, reason)

    def _report_error(self, error: BaseException, socket: Socket | None) -> None:
        where = f" (socket {socket.id})" if socket is not None else ""
        self._errors.error(type(error).__name__, f"handler raised{where}: {error!r}", error)
        self._emit_server_event("error", error, socket)

    # -------------------------------------------------------------- lifecycle

    async def listen(
        self,
        port: int | None = None,
        host: str | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        """Start accepting connections (``port=0`` picks a free port; read it from ``server.port``).

        ``ssl`` serves TLS (wss://, https://) with this context instead of the constructor's.
        ``reuse_port`` sets ``SO_REUSEPORT`` on the listening socket: several processes may then
        listen on the same port, and the kernel spreads new connections over them (the worker
        processes of ``run(workers=N)`` and ``nanosocket serve --workers N`` do).
        """
        if self._server is not None:
            raise RuntimeError("the server is already listening")
        _check_address(self.port if port is None else port, self.host if host is None else host)
        context = _check_ssl(ssl) if ssl is not None else self.ssl
        server = WebSocketServer(
            self._on_websocket,
            options=self._ws_options,
            allowed_origins=self.options.cors,
            http_handler=self._http,
            compression_stats=self.stats.compression,
            path=(
                (self.options.path, DASHBOARD_WS_PATH)
                if self._dashboard is not None and self.options.path is not None
                else self.options.path
            ),
        )
        await server.listen(
            host if host is not None else self.host,
            self.port if port is None else port,
            ssl=context,
            reuse_port=reuse_port,
        )
        try:
            await self.adapter.start()
        except BaseException:
            await server.close(1001, "server shutting down")
            raise
        self._server = server
        self.port = server.port
        if host is not None:
            self.host = host
        self.stats.start_sampling()
        self._emit_server_event("listening")

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.listening

    async def close(self) -> None:
        """Stop listening, close every client with 1001, and return when all are gone; async
        event handlers still running are cancelled."""
        server = self._server
        if server is None:
            return
        self._server = None
        self.adapter.closing()
        for member in self.adapter.local_members():
            socket = member
            if isinstance(socket, Socket):
                socket._disconnect_reason = "server shutting down"
        await server.close(1001, "server shutting down")
        for task in list(self._admissions):
            task.cancel()
        # Their clients are gone: what handlers still running would answer cannot be delivered.
        for task in list(self._handler_tasks):
            task.cancel()
        self.stats.stop_sampling()
        if self._dashboard is not None:
            self._dashboard.stop()
        await self.adapter.close()
        self._emit_server_event("close")

    async def serve_forever(self) -> None:
        """Listen (if not yet) and serve until SIGINT or SIGTERM, then close gracefully."""
        if self._server is None:
            await self.listen()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.close()

    def set_adapter(self, adapter: Adapter) -> None:
        """Replace the adapter, before the server listens and while no socket is connected (the
        worker processes put in the RedisAdapter of ``NANOSOCKET_REDIS_URL`` this way)."""
        if self._server is not None or self.adapter.local_count():
            raise RuntimeError("the adapter can only be replaced before the server listens")
        if not isinstance(adapter, Adapter):
            raise ConfigurationError(f"adapter must be an Adapter, got {adapter!r}")
        adapter.attach(ClusterNode(self))
        if self.options.recovery is not None:
            adapter.enable_recovery(self.options.recovery)
        self.adapter = adapter

    def run(self, *, workers: int = 1, shutdown_timeout: float = 30.0) -> None:
        """Run the server on uvloop until SIGINT/SIGTERM (blocking).

        ``workers=N`` (N > 1) runs N worker processes that all listen on this server's port
        (``SO_REUSEPORT``) under a supervising parent, which restarts a worker that dies and, on
        SIGTERM or SIGINT, has every worker close its clients with 1001 and waits up to
        ``shutdown_timeout`` seconds for them. The workers are **forked** from this process when
        ``run`` is called, before any event loop runs: each gets a copy of this server (its
        handlers, middleware and options) and starts its own uvloop and adapter connections. So
        call it from the main thread, before starting threads or loops. Workers share rooms and
        broadcasts only through an adapter that spans processes: with the default in-process
        adapter, ``NANOSOCKET_REDIS_URL`` gives them a RedisAdapter, else ConfigurationError.
        Raises SystemExit with the supervisor's status when it is not 0.
        """
        if workers != 1:
            from ..workers import run_forked  # noqa: PLC0415 - the supervisor, only when asked for

            status = run_forked(self, workers, shutdown_timeout=shutdown_timeout)
            if status:
                raise SystemExit(status)
            return
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

        async def main() -> None:
            await self.listen()
            logger.info("NanoSocket listening on %s:%s", self.host, self.port)
            await self.serve_forever()

        uvloop.run(main())

    async def __aenter__(self) -> NanoSocket:
        await self.listen()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "listening" if self.listening else "stopped"
        return f"<NanoSocket {state} {self.host}:{self.port} connections={self.connection_count}>"
