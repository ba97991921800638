"""The shared client scenarios (tests/scenarios.py) run by the Python client; the browser runs the
same table with nanosocket.js (tests/browser/test_browser_scenarios.py)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from nanosocket import AckError, AckTimeoutError, ConnectError, NanoSocketClient
from scenarios import (
    HANG_GUARD,
    RECONNECT,
    SCENARIOS,
    Scenario,
    ScenarioServer,
    run_scenario,
    to_native,
    to_table,
)

#: Option names of the browser client -> the Python client's (milliseconds -> seconds).
OPTION_NAMES = {
    "reconnectionDelay": "reconnection_delay",
    "reconnectionDelayMax": "reconnection_delay_max",
    "randomizationFactor": "randomization_factor",
    "maxQueueSize": "max_queue_size",
    "reconnection": "reconnection",
}
IN_SECONDS = {"reconnectionDelay", "reconnectionDelayMax"}


def python_options(options: dict[str, Any]) -> dict[str, Any]:
    return {
        OPTION_NAMES[name]: value / 1000 if name in IN_SECONDS else value for name, value in options.items()
    }


def observe_error(error: BaseException) -> dict[str, Any]:
    kind = "refused" if isinstance(error, ValueError) else type(error).__name__
    return {"error": kind, "message": str(error), "data": to_table(getattr(error, "data", None))}


class PythonDriver:
    """Each client index is one NanoSocketClient."""

    def __init__(self, server: ScenarioServer, listen: list[str]) -> None:
        self.server = server
        self.listen = listen
        self.clients: dict[int, NanoSocketClient] = {}
        self.inbox: defaultdict[tuple[int, str], asyncio.Queue[list[Any]]] = defaultdict(asyncio.Queue)
        self.served: dict[int, list[tuple[str, Any, Any, bool]]] = defaultdict(list)

    async def make(self, index: int, auto_connect: bool, **options: Any) -> NanoSocketClient:
        old = self.clients.pop(index, None)
        if old is not None:
            await old.disconnect()
        client = NanoSocketClient(
            self.server.url,
            auto_connect=auto_connect,
            **python_options({**RECONNECT, **options.pop("js", {})}),
            **options,
        )
        for event in [*self.listen, "disconnect", "connect_error"]:
            client.on(event, lambda *args, event=event: self.inbox[index, event].put_nowait(list(args)))
        for event, reply, error, later in self.served[index]:
            client.on(event, self.answer(reply, error, later))
        self.clients[index] = client
        return client

    @staticmethod
    def answer(reply: Any, error: str | None, later: bool) -> Any:
        def handler(*args: Any) -> Any:
            if error is not None:
                raise RuntimeError(error)
            return {**to_native(reply), "args": list(args)} if isinstance(reply, dict) else to_native(reply)

        async def async_handler(*args: Any) -> Any:
            await asyncio.sleep(0)
            return handler(*args)

        return async_handler if later else handler

    async def perform(self, step: dict[str, Any]) -> dict[str, Any]:
        index, op = step["client"], step["op"]
        client = self.clients.get(index)
        if op == "serve":
            self.served[index].append(
                (step["event"], step.get("reply"), step.get("error"), step.get("later", False))
            )
            return {}
        if op == "create":
            await self.make(index, True, js=step.get("options", {}))
            return {}
        if op == "connect":
            client = await self.make(index, False, auth=step.get("auth"))
            try:
                await asyncio.wait_for(client.connect(), HANG_GUARD)
            except (ConnectError, OSError) as exc:
                return observe_error(exc)
            return {"connected": client.connected, "id": client.id}
        assert client is not None, f"client {index} was never created"
        if op == "wait_connected":
            await asyncio.wait_for(client.connect(), HANG_GUARD)
            return {"connected": client.connected}
        if op == "state":
            return {
                "state": client.connection_state.value,
                "queued": client.queued,
                "dropped": client.dropped,
            }
        if op == "emit":
            try:
                return {"sent": client.emit(step["event"], *to_native(step["args"]))}
            except ValueError as exc:
                return observe_error(exc)
        if op == "call":
            timeout = step.get("timeout")
            try:
                result = await asyncio.wait_for(
                    client.call(
                        step["event"],
                        *to_native(step["args"]),
                        timeout=None if timeout is None else timeout / 1000,
                    ),
                    HANG_GUARD,
                )
            except (AckError, AckTimeoutError) as exc:
                return observe_error(exc)
            return {"result": to_table(result)}
        if op == "batch":
            with client.batch():
                for event, args in step["emits"]:
                    client.emit(event, *to_native(args))
            return {}
        if op == "next_event":
            args = await asyncio.wait_for(self.inbox[index, step["event"]].get(), HANG_GUARD)
            return {"args": to_table(args)}
        if op == "next_connect_error":
            (error,) = await asyncio.wait_for(self.inbox[index, "connect_error"].get(), HANG_GUARD)
            return observe_error(error)
        if op == "next_disconnect":
            (reason,) = await asyncio.wait_for(self.inbox[index, "disconnect"].get(), HANG_GUARD)
            return {"reason": reason}
        raise AssertionError(f"unknown step {op!r}")

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.disconnect()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
async def test_python_client_scenario(scenario: Scenario) -> None:
    server = ScenarioServer()
    driver = PythonDriver(server, scenario.listen)
    try:
        await run_scenario(scenario, driver, server)
    finally:
        await driver.aclose()
        await server.stop()
