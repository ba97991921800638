"""The live dashboard: ``GET /dashboard`` and its own NanoSocket endpoint ``/dashboard/ws``.

Opt-in with ``NanoSocket(dashboard=True, dashboard_token="...")``. The page (static/dashboard.html)
draws its charts on <canvas> and gets its numbers over a NanoSocket connection made with
nanosocket.js: while at least one dashboard socket is connected, the server pushes a ``stats``
event to them about once per second (nothing runs while none is).

Dashboard sockets are kept apart from the application: they upgrade on ``/dashboard/ws`` (also
when the server sets ``path``), live in an adapter and a ``Stats`` of their own, and never reach
the app's ``connection``/``disconnect`` handlers, its rooms, ``connection_count`` or its message
counters. Who may connect:

* with ``dashboard_token``: a client whose ``$connect`` auth is ``{"token": <that token>}`` (the
  page reads it from its URL fragment, ``/dashboard#token=...``, which never reaches the server's
  logs); the app's middleware does not run;
* without a token: the app's middleware chain decides, as for any socket (it can tell a
  dashboard socket by ``socket.handshake.url``, which starts with ``/dashboard/ws``); a server
  with no middleware at all admits only loopback clients (127.0.0.0/8, ::1).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from ..adapters.base import Adapter, BroadcastTarget
from ..adapters.memory import MemoryAdapter
from ..dispatch import Handler, run_eagerly
from ..errors import ConnectError
from ..protocol.handshake import Request
from .broadcast import build_event_frame
from .http import StaticFile
from .metrics import Stats, current_rss
from .middleware import run_chain
from .socket import Socket

if TYPE_CHECKING:
    from ..transport import WebSocket
    from .app import NanoSocket

__all__ = ["DASHBOARD_PATH", "DASHBOARD_WS_PATH", "Dashboard"]

logger = logging.getLogger("nanosocket.server.dashboard")

#: The page.
DASHBOARD_PATH: Final = "/dashboard"
#: The dashboard's own WebSocket endpoint.
DASHBOARD_WS_PATH: Final = "/dashboard/ws"
#: Seconds between two ``stats`` pushes.
INTERVAL: Final = 1.0
#: Rooms listed in a snapshot (the biggest first).
MAX_ROOMS: Final = 50


@cache
def dashboard_page() -> StaticFile:
    body = (resources.files("nanosocket") / "static" / "dashboard.html").read_bytes()
    return StaticFile(body, "text/html; charset=utf-8")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The dashboard of one server: its page, its sockets and the stats they are pushed.

    It is the ``ConnectionHost`` of the dashboard sockets (the app is the host of the others).
    """

    def __init__(self, app: NanoSocket) -> None:
        self._app = app
        # The app's options, without recovery: dashboard sockets start afresh every time.
        self.options = replace(app.options, recovery=None)
        #: The dashboard sockets (never the app's adapter).
        self.adapter: Adapter = MemoryAdapter()
        #: The dashboard sockets' own traffic (never counted in the app's stats).
        self.stats = Stats()
        self._ticker: asyncio.TimerHandle | None = None
        self._admissions: set[asyncio.Task[Any]] = set()
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        #: Dashboard sockets have no server-level event handlers.
        self._socket_handlers: dict[str, tuple[Handler, ...]] = {}
        self._live_sessions: dict[str, Socket] = {}
        self._dedup = self.adapter.dedup_store(self.options)
        self._last: tuple[float, int, int, int] | None = None

    # ------------------------------------------------------------------- HTTP

    def http(self, request: Request) -> bytes | None:
        """The page for ``GET /dashboard`` (None for any other request)."""
        if request.path == DASHBOARD_PATH and request.method in ("GET", "HEAD"):
            return dashboard_page().respond(request)
        return None

    def accept(self, ws: WebSocket, request: Request) -> None:
        """A WebSocket upgraded on ``/dashboard/ws``: it becomes a dashboard socket."""
        Socket(self, ws, request)._start()

    # --------------------------------------------------------- ConnectionHost

    def _admit(self, socket: Socket) -> asyncio.Task[Any] | None:
        token = self.options.dashboard_token
        if token is not None:
            auth = socket.handshake.auth
            given = auth.get("token") if isinstance(auth, dict) else None
            if isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode()):
                socket._accept()
            else:
                socket._reject(ConnectError("the dashboard needs its token (dashboard_token)"))
            return None
        chain = self._app._middleware
        if not chain:
            if _is_loopback(socket.handshake.address):
                socket._accept()
            else:
                socket._reject(ConnectError("the dashboard without a token is open to loopback clients only"))
            return None
        try:
            outcome = run_eagerly(run_chain(chain, socket))
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
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or (error is not None and not isinstance(error, Exception)):
            socket._reject(ConnectError("connection refused"))
        elif error is not None:
            socket._reject(error)
        else:
            socket._accept()

    def _socket_connected(self, socket: Socket) -> None:
        self.stats.connections_total += 1
        if self._ticker is None:
            self._last = None
            self._ticker = asyncio.get_running_loop().call_later(INTERVAL, self._tick)
        socket.emit("stats", self.snapshot())

    def _socket_disconnected(self, socket: Socket, reason: str) -> None:
        self.stats.disconnections_total += 1
        if not self.adapter.local_count():
            self.stop()

    def _report_error(self, error: BaseException, socket: Socket | None) -> None:
        logger.error("dashboard socket handler raised: %r", error)

    # ------------------------------------------------------------------ stats

    def stop(self) -> None:
        """Stop pushing (the last dashboard socket is gone, or the server closes)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for task in list(self._admissions):
            task.cancel()
        for task in list(self._handler_tasks):
            task.cancel()

    def _tick(self) -> None:
        self._ticker = None
        if not self.adapter.local_count():
            return
        try:
            frame = build_event_frame("stats", (self.snapshot(),))
            self.adapter.fan_out(frame, BroadcastTarget(volatile=True))
        except Exception:
            logger.exception("could not push the dashboard's stats")
        self._ticker = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def snapshot(self) -> dict[str, Any]:
        """What one ``stats`` event carries: the app's numbers now, and rates since the last one."""
        app = self._app
        stats = app.stats
        adapter = app.adapter
        now = time.monotonic()
        counters = (now, stats.messages_in, stats.messages_out, stats.bytes_out)
        last = self._last if self._last is not None else counters
        self._last = counters
        elapsed = now - last[0]

        def rate(index: int) -> float:
            return round((counters[index] - last[index]) / elapsed, 1) if elapsed > 0 else 0.0

        names = adapter.room_names()
        sizes = sorted(
            ((adapter.room_size(name), name) for name in names), key=lambda item: (-item[0], item[1])
        )
        adapter_state: dict[str, Any] = {
            "type": type(adapter).__name__,
            "local_members": adapter.local_count(),
            "rooms": len(names),
        }
        describe = getattr(adapter, "describe", None)
        if callable(describe):
            try:
                extra = describe()
            except Exception:
                logger.exception("the adapter's describe() raised")
            else:
                if isinstance(extra, dict):
                    adapter_state.update(extra)
        return {
            "time": time.time(),
            "uptime": round(stats.uptime, 1),
            "connections": app.connection_count,
            "connections_total": stats.connections_total,
            "disconnections_total": stats.disconnections_total,
            "connections_rejected": stats.connections_rejected,
            "room_count": len(names),
            "rooms": [{"name": name, "size": size} for size, name in sizes[:MAX_ROOMS]],
            "messages_in": stats.messages_in,
            "messages_out": stats.messages_out,
            "bytes_out": stats.bytes_out,
            "messages_in_per_second": rate(1),
            "messages_out_per_second": rate(2),
            "bytes_out_per_second": rate(3),
            "volatile_dropped": stats.volatile_dropped,
            "backpressure_closes": stats.backpressure_closes,
            "protocol_errors": stats.protocol_errors,
            "handler_errors": stats.handler_errors,
            "memory": current_rss(),
            "adapter": adapter_state,
            "dashboards": self.adapter.local_count(),
        }
