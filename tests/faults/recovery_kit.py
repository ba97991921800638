"""The recovery tests' kit: an app with recovery, a client, cuts through the fault proxy.

Shared by test_recovery.py (MemoryAdapter) and test_recovery_redis.py (RedisAdapter). Every wait
is bounded by a hang guard only to turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from fault_proxy import FaultProxy

from nanosocket import (
    Adapter,
    NanoSocket,
    NanoSocketClient,
    RecoveryOptions,
    Socket,
    WebSocketOptions,
    connect,
)
from nanosocket.options import MiB

GUARD = 20.0
CUT = 2.0
# The server notices a silent line quickly (about 1 s: idle_timeout, then close_timeout), the
# client slowly (at least 2.5 s): through a blackhole the server has kept the session before
# the client comes back.
SERVER_HEARTBEAT: dict[str, Any] = {"idle_timeout": 0.5, "close_timeout": 0.3}
CLIENT_TRANSPORT = WebSocketOptions(
    idle_timeout=2.5, close_timeout=0.3, max_backpressure=1 * MiB, backpressure_policy="drop"
)


async def until(condition: Callable[[], object]) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - conditions changed by loop events
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), GUARD)


class App:
    """A server with recovery; on a fresh connection the socket joins "room" and gets data."""

    def __init__(
        self,
        port: int = 0,
        heartbeat: dict[str, Any] = SERVER_HEARTBEAT,
        adapter: Adapter | None = None,
        **recovery: Any,
    ) -> None:
        options = RecoveryOptions(**recovery) if recovery.pop("off", False) is False else None
        self.server = NanoSocket(port=port, host="127.0.0.1", recovery=options, adapter=adapter, **heartbeat)
        self.connections: list[Socket] = []
        self.disconnections: list[tuple[str, str]] = []
        self.middleware_runs = 0
        self.counter = 0

        @self.server.on("connection")
        def connection(socket: Socket) -> None:
            if not socket.recovered:
                socket.join(["room", "other"])
                socket.data["fresh_id"] = socket.id
            self.connections.append(socket)

        @self.server.on("disconnect")
        def disconnect(socket: Socket, reason: str) -> None:
            self.disconnections.append((socket.id, reason))

    @property
    def last(self) -> Socket:
        return self.connections[-1]

    def send_all_kinds(self, count: int = 3) -> None:
        """Messages to the client's room, to its id, by the old socket object, to everyone; and
        some it must not get (a room it is not in, a broadcast excepting its room)."""
        sid = self.last.id
        for _ in range(count):
            self.server.to("room").emit("msg", self._next())
            self.server.to(sid).emit("msg", self._next())
            self.last.emit("msg", self._next())
            self.server.broadcast("msg", self._next())
            self.server.to("elsewhere").emit("msg", -1)
            self.server.except_("other").emit("msg", -1)
            self.server.volatile.to("room").emit("volatile", -1)

    def _next(self) -> int:
        self.counter += 1
        return self.counter

    async def listen(self) -> None:
        await self.server.listen()


class Client:
    def __init__(self, url: str, transport: WebSocketOptions = CLIENT_TRANSPORT) -> None:
        self.client = NanoSocketClient(
            url,
            auto_connect=False,
            reconnection_delay=0.05,
            reconnection_delay_max=0.2,
            randomization_factor=0,
            options=transport,
        )
        self.got: list[int] = []
        self.connects: list[tuple[str | None, bool]] = []
        self.client.on("msg", self.got.append)
        self.client.on("connect", lambda: self.connects.append((self.client.id, self.client.recovered)))


async def cut(app: App, proxy: FaultProxy, client: Client, how: str, *, during: int = 3) -> None:
    """Cut the line for about CUT seconds, sending messages of every kind meanwhile, and wait
    until the client is connected again."""
    connects = len(client.connects)
    lost = len(app.disconnections)
    if how == "reset":
        proxy.reset()
    else:
        proxy.blackhole()
        # Written to a connection the server still thinks alive: lost in the hole.
        app.send_all_kinds(during)
    await until(lambda: len(app.disconnections) > lost)
    app.send_all_kinds(during)
    await asyncio.sleep(CUT)  # the rest of the cut
    proxy.restore()
    await until(lambda: len(client.connects) > connects)


def expected(app: App) -> list[int]:
    return list(range(1, app.counter + 1))


async def blackholed(app: App, proxy: FaultProxy, client: Client, meanwhile: Callable[[], None]) -> None:
    """Cut the line silently, run ``meanwhile`` (what it writes to the client is lost in the
    hole), wait until the server sees the loss, then let the client come back."""
    connects = len(client.connects)
    lost = len(app.disconnections)
    proxy.blackhole()
    meanwhile()
    await until(lambda: len(app.disconnections) > lost)
    proxy.restore()
    await until(lambda: len(client.connects) > connects)


async def raw_connect(port: int, *session: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    ws = await connect(f"ws://127.0.0.1:{port}", subprotocols=("nanosocket.v1",))
    ws.send_text(orjson.dumps({"event": "$connect", "data": [None, *session]}).decode())
    answer = orjson.loads(await asyncio.wait_for(ws.recv(), GUARD))
    assert answer["event"] == "$connect"
    return ws, answer["data"][0]
