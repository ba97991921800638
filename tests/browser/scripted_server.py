"""A scripted NanoSocket v1 peer for the browser client's wire tests: a raw WebSocket server (no
NanoSocket app) whose script sees every frame the page's client sends and answers as a test needs,
plus the page that serves nanosocket.js to Chromium."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from browser_kit import HANG_GUARD, Pages
from test_browser_scenarios import serve_harness

from nanosocket import NanoSocket, Request, WebSocket, serve
from nanosocket.options import WebSocketOptions

#: ``script(ws, frame, number)``: a decoded frame of the ``number``-th connection (from 0).
Script = Callable[[WebSocket, Any, int], None]


class Scripted:
    """The running peer: its port, and every frame received, as ``(connection number, frame)``."""

    def __init__(self) -> None:
        self.port = 0
        self.frames: list[tuple[int, Any]] = []
        self.connections = 0

    def events(self, name: str) -> list[dict[str, Any]]:
        """The envelopes of event ``name`` received (batches unpacked), in order."""
        found: list[dict[str, Any]] = []
        for _, frame in self.frames:
            for envelope in frame if isinstance(frame, list) else [frame]:
                if isinstance(envelope, dict) and envelope.get("event") == name:
                    found.append(envelope)
        return found


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[Scripted]:
    scripted = Scripted()

    def handler(ws: WebSocket, request: Request) -> None:
        number = scripted.connections
        scripted.connections += 1

        def receive(message: str | bytes) -> None:
            frame = json.loads(message)
            scripted.frames.append((number, frame))
            script(ws, frame, number)

        ws.on_message = receive

    options = WebSocketOptions(subprotocols=("nanosocket.v1",))
    async with await serve(handler, "127.0.0.1", 0, options=options, allowed_origins=["*"]) as raw:
        scripted.port = raw.port
        yield scripted


@asynccontextmanager
async def harness_page(pages: Pages) -> AsyncIterator[Any]:
    """A page with the test harness (and so nanosocket.js) loaded, from a server of its own."""
    server = NanoSocket(port=0, host="127.0.0.1")
    serve_harness(server)
    async with server:
        yield await pages.open(f"http://127.0.0.1:{server.port}/", "window.harnessReady === true")


def connect_answer(**fields: Any) -> str:
    return json.dumps({"event": "$connect", "data": [fields]})


__all__ = ["HANG_GUARD", "Scripted", "connect_answer", "harness_page", "scripted_server"]
