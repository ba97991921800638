"""The servers under test: how to start each one and how the load generator talks to it.

A server is one entry in ``SERVERS``: a command line (given host and port), the ``Dialect`` of frames
it answers (a raw echo server echoes any frame; an event server wants its own envelopes, a Socket.IO
server wants Engine.IO packets and sends heartbeats to skip), the packages whose versions the
report records, and a check that says whether it can run here. Scenarios run only on servers whose
dialect supports them. Later peers (websockets, python-socketio, Node ws / socket.io, the NanoSocket
event server) are added as entries here; Node peers would install into ``benchmarks/.peers/``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BASELINE", "RAW_ECHO", "SERVERS", "Dialect", "Server"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The frames a server understands, as load generator templates (``{p}`` is the payload)."""

    #: An echo request; every data frame the server sends back counts as a reply. None: no echo.
    echo: str | None = "{p}"
    #: Fanout: the frame that joins the room, and how many frames acknowledge it. None: no fanout.
    join: str | None = None
    join_acks: int = 1
    #: Fanout: a publish to the room; the server must send it to the publisher too.
    publish: str | None = None
    #: Frames starting with one of these are protocol chatter (heartbeats), not counted.
    ignore_prefixes: tuple[str, ...] = ()
    #: What to answer to such a frame (e.g. an Engine.IO pong), if anything.
    ignore_answer: str | None = None
    #: Request path of the WebSocket endpoint.
    path: str = "/"

    def supports(self, capability: str) -> bool:
        if capability == "echo":
            return self.echo is not None
        if capability == "fanout":
            return self.join is not None and self.publish is not None
        return capability == "connect"

    def loadgen_args(self) -> list[str]:
        """Arguments every load generator run against this server gets."""
        args = ["--path", self.path]
        for prefix in self.ignore_prefixes:
            args += ["--ignore-prefix", prefix]
        if self.ignore_answer is not None:
            args += ["--ignore-answer", self.ignore_answer]
        return args


#: A raw WebSocket echo server: every message comes back unchanged.
RAW_ECHO = Dialect(echo="{p}")


def _needs_module(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if importlib.util.find_spec(name) is not None else f"Python package {name!r} is missing"

    return check


@dataclass(frozen=True, slots=True)
class Server:
    """One server under test."""

    name: str
    title: str
    #: The command line that starts it on (host, port); it must keep running until SIGTERM.
    command: Callable[[str, int], list[str]]
    dialect: Dialect
    #: Packages whose versions the report records.
    packages: tuple[str, ...] = ()
    #: None when the server can run on this machine, else the reason it cannot.
    check: Callable[[], str | None] = lambda: None
    #: Seconds it may take to accept connections after starting.
    startup_timeout: float = 20.0


def _nanosocket_echo(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "nanosocket", "echo-server", "--host", host, "--port", str(port)]


def _picows_echo(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peers.picows_echo", "--host", host, "--port", str(port)]


#: Every server the suite knows, in report order; the first is the one the ratios are about.
SERVERS: dict[str, Server] = {
    server.name: server
    for server in (
        Server(
            name="nanosocket",
            title="NanoSocket echo-server (own RFC 6455 engine, uvloop)",
            command=_nanosocket_echo,
            dialect=RAW_ECHO,
            packages=("nanosocket", "uvloop", "httptools"),
            check=_needs_module("nanosocket"),
        ),
        Server(
            name="picows",
            title="picows minimal echo (benchmarks/peers/picows_echo.py, uvloop)",
            command=_picows_echo,
            dialect=RAW_ECHO,
            packages=("picows", "uvloop"),
            check=_needs_module("picows"),
        ),
    )
}

#: The server the ratio column compares every peer against.
BASELINE = "nanosocket"
