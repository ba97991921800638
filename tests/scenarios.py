"""Client scenarios shared by both clients: the Python client (tests/client/test_client_scenarios.py)
and the browser client nanosocket.js in Chromium (tests/browser/test_browser_scenarios.py) run the
same table against the same server, so the two clients are held to the same behaviour.

A scenario is a list of steps (plain JSON, so a page can run them too). A driver performs the
client steps and returns what it observed; ``run_scenario`` checks the observation here, once for
both clients. Server steps (stop, start) are performed by ``ScenarioServer``. Binary values are
written ``{"$bytes": "<hex>"}`` in the table; drivers turn them into bytes / Uint8Array and back.

Waits are bounded by hang guards only; nothing is timed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nanosocket import ConnectError, NanoSocket, Socket

HANG_GUARD = 10.0
#: Fast reconnection for tests (milliseconds; the Python driver converts to seconds).
RECONNECT = {"reconnectionDelay": 100, "reconnectionDelayMax": 500, "randomizationFactor": 0.5}


def b(hex_text: str) -> dict[str, str]:
    """A binary value in the table."""
    return {"$bytes": hex_text}


def to_native(value: Any) -> Any:
    """The table's notation -> Python values (``{"$bytes": hex}`` -> bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {key: to_native(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_native(item) for item in value]
    return value


def to_table(value: Any) -> Any:
    """Python values -> the table's notation (tuples become lists, as on the wire)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dict):
        return {key: to_table(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_table(item) for item in value]
    return value


@dataclass
class Scenario:
    name: str
    steps: list[dict[str, Any]]
    #: Server events each client records, to be read by ``next_event`` steps.
    listen: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.name


def step(op: str, client: int = 0, **values: Any) -> dict[str, Any]:
    return {"op": op, "client": client, **values}


SCENARIOS: list[Scenario] = [
    Scenario(
        "connect", [step("connect", expect={"connected": True}), step("state", expect={"state": "connected"})]
    ),
    Scenario(
        "emit_and_receive",
        [
            step("connect", expect={"connected": True}),
            step("emit", event="echo", args=["hi", 1, {"nested": [True, None, 2.5]}], expect={"sent": True}),
            step("next_event", event="echo", expect={"args": ["hi", 1, {"nested": [True, None, 2.5]}]}),
        ],
        listen=["echo"],
    ),
    Scenario(
        "acks_client_to_server",
        [
            step("connect", expect={"connected": True}),
            step("call", event="add", args=[2, 3], expect={"result": 5}),
            step("call", event="pair", args=[], expect={"result": ["a", 1]}),
            step("call", event="nothing", args=[], expect={"result": None}),
            step(
                "call",
                event="fail",
                args=["atlantis"],
                expect={"error": "AckError", "message": "no such room: atlantis"},
            ),
            step(
                "call",
                event="unknown",
                args=[],
                expect={"error": "AckError", "message": "no handler for event 'unknown'"},
            ),
        ],
    ),
    Scenario(
        "acks_server_to_client",
        [
            step("serve", event="question", reply={"answer": 42}),
            step("serve", event="broken", error="nope"),
            # A handler that answers later: async in Python, a returned Promise in JavaScript.
            step("serve", event="later", reply=[1, b("ff")], later=True),
            step("serve", event="later_broken", error="not today", later=True),
            step("connect", expect={"connected": True}),
            step("call", event="ask", args=["later"], expect={"result": [1, b("ff")]}),
            step("call", event="ask", args=["later_broken"], expect={"result": {"error": "not today"}}),
            step(
                "call",
                event="ask",
                args=["question", "life?"],
                expect={"result": {"answer": 42, "args": ["life?"]}},
            ),
            step("call", event="ask", args=["broken"], expect={"result": {"error": "nope"}}),
            step(
                "call",
                event="ask",
                args=["nobody"],
                expect={"result": {"error": "no handler for event 'nobody'"}},
            ),
        ],
    ),
    Scenario(
        "call_timeout",
        [
            step("connect", expect={"connected": True}),
            step("call", event="never", args=[], timeout=200, expect={"error": "AckTimeoutError"}),
            step("call", event="add", args=[1, 1], expect={"result": 2}),
        ],
    ),
    Scenario(
        "binary_both_ways",
        [
            step("connect", expect={"connected": True}),
            step(
                "call",
                event="bytes",
                args=[b("00ff10")],
                expect={"result": {"length": 3, "reversed": b("10ff00")}},
            ),
            step("emit", event="echo", args=[b("0102"), "text", {"blob": b("")}], expect={"sent": True}),
            step("next_event", event="echo", expect={"args": [b("0102"), "text", {"blob": b("")}]}),
        ],
        listen=["echo"],
    ),
    Scenario(
        "rooms_across_two_clients",
        [
            step("connect", 0, expect={"connected": True}),
            step("connect", 1, expect={"connected": True}),
            step("call", 0, event="join", args=["red"], expect={"result": 1}),
            step("call", 1, event="join", args=["red"], expect={"result": 2}),
            step("call", 0, event="say", args=["red", "hello"], expect={"result": 1}),
            step("next_event", 1, event="said", expect={"args": ["red", "hello"]}),
            step("call", 1, event="say", args=["red", "hi back"], expect={"result": 1}),
            step("next_event", 0, event="said", expect={"args": ["red", "hi back"]}),
        ],
        listen=["said"],
    ),
    Scenario(
        "middleware_rejection",
        [
            step(
                "connect",
                auth={"token": "bad"},
                expect={
                    "error": "ConnectError",
                    "message": "invalid token",
                    "data": {"hint": "ask for a new one"},
                },
            ),
            # The local connect_error event carries the same refusal.
            step("next_connect_error", expect={"error": "ConnectError", "message": "invalid token"}),
            step("state", expect={"state": "disconnected"}),
            step("connect", auth={"token": "good"}, expect={"connected": True}),
            step("call", event="whoami", args=[], expect={"result": {"token": "good"}}),
        ],
    ),
    Scenario(
        "batch_in_order",
        [
            step("connect", expect={"connected": True}),
            step("batch", emits=[["record", [1]], ["record", [2]], ["record", [b("03")]], ["record", [4]]]),
            step("call", event="recorded", args=[], expect={"result": [1, 2, b("03"), 4]}),
        ],
    ),
    Scenario(
        "reserved_names_are_refused_locally",
        [
            step("connect", expect={"connected": True}),
            step("emit", event="disconnect", args=[], expect={"error": "refused"}),
            step("emit", event="$ping", args=[], expect={"error": "refused"}),
            step("state", expect={"state": "connected"}),
        ],
    ),
    Scenario(
        "offline_queue_across_server_restart",
        [
            step("connect", expect={"connected": True}),
            step("emit", event="record", args=["before"], expect={"sent": True}),
            step("call", event="recorded", args=[], expect={"result": ["before"]}),
            step("stop_server"),
            step("next_disconnect", expect={"reason": "server shutting down"}),
            *[step("emit", event="record", args=[n], expect={"sent": True}) for n in range(1, 6)],
            step("state", expect={"queued": 5, "dropped": 0}),
            step("start_server"),
            step("wait_connected", expect={"connected": True}),
            # Exactly once, in order: what was queued, and nothing twice.
            step("call", event="recorded", args=[], expect={"result": ["before", 1, 2, 3, 4, 5]}),
            step("state", expect={"state": "connected", "queued": 0, "dropped": 0}),
        ],
    ),
    Scenario(
        "offline_queue_drops_the_oldest",
        [
            step("stop_server"),
            step("create", options={"maxQueueSize": 2, "reconnection": True}),
            *[step("emit", event="record", args=[n], expect={"sent": True}) for n in range(1, 5)],
            step("state", expect={"queued": 2, "dropped": 2}),
            step("start_server"),
            step("wait_connected", expect={"connected": True}),
            step("call", event="recorded", args=[], expect={"result": [3, 4]}),
        ],
    ),
    Scenario(
        "server_disconnect_is_not_retried",
        [
            step("connect", expect={"connected": True}),
            step("emit", event="kick_me", args=[], expect={"sent": True}),
            step("next_disconnect", expect={"reason": "server disconnect"}),
            step("state", expect={"state": "disconnected"}),
        ],
    ),
]


# ------------------------------------------------------------------------------ the server


class ServerState:
    """What the scenario server remembers across a restart."""

    def __init__(self) -> None:
        self.recorded: list[Any] = []
        #: Set when the server stops: handlers that never answer end then.
        self.stopped = asyncio.Event()


def create_scenario_server(
    state: ServerState, port: int = 0, setup: Callable[[NanoSocket], None] | None = None
) -> NanoSocket:
    """The server every scenario talks to (its handlers are the scenarios' vocabulary)."""
    server = NanoSocket(port=port, host="127.0.0.1", idle_timeout=None)
    if setup is not None:
        setup(server)

    @server.use
    def check_token(socket: Socket) -> None:
        auth = socket.handshake.auth
        if isinstance(auth, dict) and auth.get("token") == "bad":
            raise ConnectError("invalid token", {"hint": "ask for a new one"})

    @server.on("connection")
    def connection(socket: Socket) -> None:
        socket.on("echo", lambda *args: socket.emit("echo", *args))
        socket.on("add", lambda a, b: a + b)
        socket.on("pair", lambda: ("a", 1))
        socket.on("nothing", lambda: None)
        socket.on("whoami", lambda: socket.handshake.auth)
        socket.on("record", lambda value: state.recorded.append(value))  # noqa: PLW0108
        socket.on("recorded", lambda: state.recorded)
        socket.on("bytes", lambda data: {"length": len(data), "reversed": data[::-1]})
        socket.on("kick_me", lambda: socket.disconnect())  # noqa: PLW0108

        @socket.on("fail")
        def fail(room: str) -> None:
            raise LookupError(f"no such room: {room}")

        @socket.on("never")
        async def never() -> None:
            await state.stopped.wait()

        @socket.on("ask")
        async def ask(event: str, *args: Any) -> Any:
            try:
                answer = await socket.call(event, *args, timeout=HANG_GUARD)
            except Exception as exc:
                return {"error": str(exc)}
            return answer

        @socket.on("join")
        def join(room: str) -> int:
            socket.join(room)
            return server.get_room_size(room)

        @socket.on("say")
        def say(room: str, text: str) -> int:
            return socket.to(room).emit("said", room, text)

    return server


class ScenarioServer:
    """One scenario's server, which ``stop_server`` / ``start_server`` steps restart on its port."""

    def __init__(self, setup: Callable[[NanoSocket], None] | None = None) -> None:
        self.state = ServerState()
        self.setup = setup
        self.server = create_scenario_server(self.state, setup=setup)
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        if self.server.listening:
            return
        self.server = create_scenario_server(self.state, self.port, self.setup)
        await asyncio.wait_for(self.server.listen(), HANG_GUARD)
        self.port = self.server.port

    async def stop(self) -> None:
        self.state.stopped.set()
        await asyncio.wait_for(self.server.close(), HANG_GUARD)
        self.state.stopped.clear()


# ------------------------------------------------------------------------------ the runner


class Driver(Protocol):
    """Performs a client step (``step["op"]``) and returns what it observed."""

    async def perform(self, step: dict[str, Any]) -> dict[str, Any]: ...


async def run_scenario(scenario: Scenario, driver: Driver, server: ScenarioServer) -> None:
    await server.start()
    for number, current in enumerate(scenario.steps, 1):
        op = current["op"]
        if op == "stop_server":
            await server.stop()
            continue
        if op == "start_server":
            await server.start()
            continue
        observed = await driver.perform(current)
        expected = current.get("expect")
        if expected is None:
            continue
        where = f"{scenario.name} step {number} ({op} {current.get('event', '')})"
        if "error" in expected and "error" not in observed:
            raise AssertionError(f"{where}: expected {expected}, observed {observed}")
        for key, value in expected.items():
            assert key in observed, f"{where}: no {key!r} in {observed}"
            assert observed[key] == value, f"{where}: {key} is {observed[key]!r}, expected {value!r}"
