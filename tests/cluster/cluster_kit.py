"""The cluster tests' kit: real Redis servers and NanoSocket nodes in one test process.

* ``RedisServer``: a ``redis-server`` this test session started (no persistence) on a free port,
  which a test may kill, restart on the same port, pause (SIGSTOP) and resume (SIGCONT);
* ``shared_redis_url()``: the Redis at 127.0.0.1:6379 when it answers, else one started for the
  session (the ``redis_url`` fixture);
* ``Cluster``: nodes (NanoSocket servers on free ports, each with its own RedisAdapter on a
  channel prefix unique to the test) and their clients, through the server tests' ``Harness``.

Waits are bounded by the hang guard only to turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_kit import HANG_GUARD, Harness, Peer, within

from nanosocket import NanoSocket, RedisAdapter

__all__ = ["HANG_GUARD", "Cluster", "Peer", "RedisServer", "eventually", "within"]

#: Seconds between canaries in the tests: a node knows the others, or finds itself deaf, quickly.
CANARY = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(host: str, port: int) -> bool:
    """Whether a Redis answers PING at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            sock.settimeout(0.5)
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server of our own on a free port: killed, restarted, paused at will."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise RuntimeError("no redis-server: `make redis-deps` (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again, on the same port) and wait until it answers."""
        assert self.process is None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + HANG_GUARD
        while not answers("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: every connection drops at once."""
        process = self.process
        assert process is not None
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.kill()
        process.wait()
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is not None:
            self.kill()


def shared_redis_url(started: list[RedisServer]) -> str:
    """The Redis at 127.0.0.1:6379 when it answers; else start one (appended to ``started``)."""
    if answers("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    server = RedisServer()
    server.start()
    started.append(server)
    return server.url


async def eventually(condition: Any, what: str = "condition") -> None:
    """Wait (bounded) for a condition that changes through loop events."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - states of other tasks, polled
            await asyncio.sleep(0.01)

    try:
        await within(poll())
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


class Cluster:
    """Nodes of one test: NanoSocket servers sharing a Redis and a channel prefix."""

    def __init__(self, ns: Harness, url: str) -> None:
        self.ns = ns
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self.nodes: list[NanoSocket] = []
        self._clients: list[aioredis.Redis] = []

    def adapter_of(self, server: NanoSocket) -> RedisAdapter:
        adapter = server.adapter
        assert isinstance(adapter, RedisAdapter)
        return adapter

    async def node(self, *, url: str | None = None, **adapter_options: Any) -> NanoSocket:
        """A listening server whose RedisAdapter has subscribed."""
        adapter_options.setdefault("canary_interval", CANARY)
        adapter_options.setdefault("reconnect_delay_max", 0.5)
        adapter_options.setdefault("request_timeout", HANG_GUARD / 2)
        adapter = RedisAdapter(url or self.url, prefix=self.prefix, **adapter_options)
        server = await self.ns.start(adapter=adapter)
        assert adapter.subscribed, adapter.health()
        self.nodes.append(server)
        return server

    async def nodes_of(self, count: int, **adapter_options: Any) -> list[NanoSocket]:
        """``count`` nodes that all know each other."""
        servers = [await self.node(**adapter_options) for _ in range(count)]
        await self.acquainted(servers)
        return servers

    async def acquainted(self, servers: list[NanoSocket]) -> None:
        ids = {self.adapter_of(server).node_id for server in servers}
        for server in servers:
            adapter = self.adapter_of(server)
            await eventually(lambda a=adapter: ids - {a.node_id} <= a.nodes, "the nodes know each other")

    async def client(self, server: NanoSocket, **kwargs: Any) -> tuple[Peer, Any]:
        """A v1 client of ``server`` and its server-side Socket."""
        peer = await self.ns.v1(server, **kwargs)
        assert peer.sid is not None
        return peer, server.sockets[peer.sid]

    def redis(self, url: str | None = None) -> aioredis.Redis:
        """A plain Redis client (closed after the test)."""
        client = aioredis.Redis.from_url(url or self.url)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
