"""Our client's permessage-deflate against other compressing servers, over real sockets.

The raw ``connect()`` (the engine NanoSocketClient runs on) talks to the ``websockets`` library's
server, to picows' websockets-compatible server (picows' own WSTransport leaves extensions to the
application; its ``picows.websockets`` layer implements permessage-deflate), and to Node's ``ws``
(installed with npm into tests/.node at test time; skipped when node or npm is missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import picows.websockets.asyncio.server as picows_server
import pytest
import websockets.asyncio.server
from client_kit import within

from nanosocket import (
    ConfigurationError,
    InvalidHandshake,
    NanoSocketClient,
    WebSocket,
    WebSocketOptions,
    connect,
)

HERE = Path(__file__).resolve().parent
NODE_PREFIX = HERE.parent / ".node"  # gitignored
NODE_SERVER = HERE / "node" / "ws_echo_server.js"

TEXT = " ".join(f"token{i * 7919 % 1013}" for i in range(2000))
MESSAGES: list[str | bytes] = [
    "tiny",
    TEXT[:1500],
    TEXT,
    TEXT.encode() * 3,
    os.urandom(3000),  # incompressible: compressed anyway, a little bigger
    "",
    b"",
]


def options(mode: str, **values: Any) -> WebSocketOptions:
    return WebSocketOptions(compression=mode, compression_threshold=0, **values)  # type: ignore[arg-type]


async def echo_round_trips(ws: WebSocket, rounds: int = 2) -> None:
    """Every message comes back intact, twice over (context takeover spans messages)."""
    for _ in range(rounds):
        for message in MESSAGES:
            assert ws.send(message)
            assert await within(ws.recv()) == message


async def websockets_echo(ws: websockets.asyncio.server.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
@pytest.mark.parametrize(
    ("server_options", "expected"),
    [
        ({}, "permessage-deflate"),
        ({"compression": None}, None),
    ],
    ids=["deflate", "no-compression"],
)
async def test_our_client_and_the_websockets_server(
    mode: str, server_options: dict[str, Any], expected: str | None
) -> None:
    async with websockets.asyncio.server.serve(websockets_echo, "127.0.0.1", 0, **server_options) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await within(connect(f"ws://127.0.0.1:{port}/", options=options(mode)))
        try:
            codec = ws.compression
            if expected is None:
                assert codec is None
            else:
                assert codec is not None
                assert codec.parameters.server_no_context_takeover == (mode == "shared")
                assert codec.parameters.client_max_window_bits is not None  # websockets answers it
            await echo_round_trips(ws)
            if codec is not None:
                assert codec.stats.compressed_frames == 2 * len(MESSAGES)
                assert codec.stats.inflated_messages == 2 * len(MESSAGES)
        finally:
            ws.close()
            await within(ws.wait_closed())


async def picows_echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


async def test_our_client_and_the_picows_server() -> None:
    async with picows_server.serve(picows_echo, "127.0.0.1", 0, compression="deflate") as server:
        port = server.sockets[0].getsockname()[1]
        ws = await within(connect(f"ws://127.0.0.1:{port}/", options=options("dedicated")))
        try:
            codec = ws.compression
            assert codec is not None
            # picows answers a bare "permessage-deflate": context takeover both ways, 15-bit windows.
            assert codec.parameters.header() == "permessage-deflate"
            assert codec.decompress_takeover and codec.compress_takeover
            await echo_round_trips(ws)
            assert codec.stats.inflated_messages == 2 * len(MESSAGES)
        finally:
            ws.close()
            await within(ws.wait_closed())


async def test_a_shared_client_refuses_a_server_that_ignores_server_no_context_takeover() -> None:
    # picows accepts any offer with a bare "permessage-deflate": it would keep its context, which
    # a client that asked for server_no_context_takeover did not agree to (RFC 7692 §7.1.1.1).
    async with picows_server.serve(picows_echo, "127.0.0.1", 0, compression="deflate") as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(InvalidHandshake, match="server_no_context_takeover"):
            await within(connect(f"ws://127.0.0.1:{port}/", options=options("shared")))


# ----------------------------------------------------------------------------- Node ws


def _install_node_ws() -> str | None:
    """Install ``ws`` into tests/.node once; the reason to skip when that is not possible."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are needed for the Node ws interop test (not installed)"
    if (NODE_PREFIX / "node_modules" / "ws" / "package.json").exists():
        return None
    NODE_PREFIX.mkdir(exist_ok=True)
    done = subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(NODE_PREFIX),
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "ws@8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"npm install ws failed: {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def node_ws() -> Path:
    reason = _install_node_ws()
    if reason is not None:
        pytest.skip(reason)
    return NODE_PREFIX / "node_modules"


class NodeServer:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port


@pytest.fixture
async def node_server(node_ws: Path, request: pytest.FixtureRequest) -> AsyncIterator[NodeServer]:
    deflate_options = getattr(request, "param", {"threshold": 0})
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_SERVER),
        json.dumps(deflate_options),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(node_ws)},
    )
    try:
        assert process.stdout is not None
        line = await within(process.stdout.readline())
        yield NodeServer(process, json.loads(line)["port"])
    finally:
        if process.returncode is None:
            process.terminate()
        await within(process.wait())


CLIENT_OFFERS = {
    "dedicated": "permessage-deflate; client_max_window_bits",
    "shared": (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
    ),
}

NODE_CONFIGS = [
    {"threshold": 0},
    {"threshold": 0, "serverMaxWindowBits": 10, "clientMaxWindowBits": 9},
    {"threshold": 0, "serverNoContextTakeover": True, "clientNoContextTakeover": True},
    {"threshold": 64},
]


@pytest.mark.parametrize(
    "node_server", NODE_CONFIGS, indirect=True, ids=["default", "windows", "nct", "threshold"]
)
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
async def test_our_client_and_the_node_ws_server(node_server: NodeServer, mode: str) -> None:
    ws = await within(connect(f"ws://127.0.0.1:{node_server.port}/", options=options(mode)))
    try:
        hello = json.loads(await within(ws.recv()))
        assert hello["offer"] == CLIENT_OFFERS[mode]
        assert hello["extensions"] is not None and "permessage-deflate" in hello["extensions"]
        codec = ws.compression
        assert codec is not None
        if mode == "shared":
            assert codec.parameters.server_no_context_takeover
        await echo_round_trips(ws, rounds=3)
        assert codec.stats.compressed_frames == 3 * len(MESSAGES)
        assert codec.stats.inflated_messages >= 3 * 4  # Node compresses from its threshold on
    finally:
        ws.close()
        await within(ws.wait_closed())


# ------------------------------------------------------------------- NanoSocketClient


def test_the_client_option_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="compression"):
        NanoSocketClient("ws://127.0.0.1:1", compression="yes", auto_connect=False)  # type: ignore[arg-type]


def test_the_client_option_turns_on_dedicated_compression() -> None:
    client = NanoSocketClient("ws://127.0.0.1:1", compression=True, auto_connect=False)
    assert client.options.compression is True
    assert client._ws_options.compression == "dedicated"
    shared = NanoSocketClient(
        "ws://127.0.0.1:1",
        compression=True,
        auto_connect=False,
        options=WebSocketOptions(compression="shared"),
    )
    assert shared._ws_options.compression == "shared"
    off = NanoSocketClient("ws://127.0.0.1:1", auto_connect=False)
    assert off._ws_options.compression == "off"
