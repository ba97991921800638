"""The servers under test: how to start each one and how the load generator talks to it.

A server is one entry in ``SERVERS``: a command line (given host and port), the ``Dialect`` of frames
it answers (a raw echo server echoes any frame; an event server wants its own envelopes, a Socket.IO
server wants Engine.IO packets and sends heartbeats to skip), the packages whose versions the
report records, and a check that says whether it can run here. Scenarios run only on servers whose
dialect supports them. Later peers (websockets, python-socketio, Node ws / socket.io) are added as
entries here; Node peers would install into ``benchmarks/.peers/``.

Servers come in pairs measured in the same run: a NanoSocket server and the peer that is its bar
(``Server.compare_to`` names the NanoSocket server a peer is compared with). The report's ratio
columns are NanoSocket / peer for every pair of which both servers ran a scenario.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EVENTS", "RAW_ECHO", "SERVERS", "Dialect", "Server", "pairs"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The frames a server understands, as load generator templates (``{p}`` is the payload)."""

    #: Servers of one family speak the same frames; a scenario may be meant for one family only.
    family: str = "raw"
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


APPS_DIR = Path(__file__).resolve().parent / "apps"

#: A raw WebSocket echo server: every message comes back unchanged.
RAW_ECHO = Dialect(family="raw", echo="{p}")

#: A NanoSocket event server as a plain client sees it (docs/protocol.md): JSON envelopes,
#: ``echo``, ``join`` (answered by ``joined``) and ``publish`` (a room broadcast, sender included).
EVENTS = Dialect(
    family="events",
    echo='{"event":"echo","data":["{p}"]}',
    join='{"event":"join","data":["room1"]}',
    join_acks=1,
    publish='{"event":"publish","data":["room1","{p}"]}',
)


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
    #: For a peer: the NanoSocket server it is the bar for (the ratio columns compare the two).
    compare_to: str | None = None


def _nanosocket_echo(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "nanosocket", "echo-server", "--host", host, "--port", str(port)]


def _picows_echo(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peers.picows_echo", "--host", host, "--port", str(port)]


def _nanosocket_events(host: str, port: int) -> list[str]:
    return [sys.executable, str(APPS_DIR / "nanosocket_events.py"), "--host", host, "--port", str(port)]


def _picows_events(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.peers.picows_events", "--host", host, "--port", str(port)]


#: Every server the suite knows, in report order: each NanoSocket server, then its peer.
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
            compare_to="nanosocket",
        ),
        Server(
            name="nanosocket-events",
            title="NanoSocket event server, the full framework API (benchmarks/apps/nanosocket_events.py)",
            command=_nanosocket_events,
            dialect=EVENTS,
            packages=("nanosocket", "uvloop", "httptools", "orjson"),
            check=_needs_module("nanosocket"),
        ),
        Server(
            name="picows-events",
            title="picows + orjson minimal event server (benchmarks/peers/picows_events.py, uvloop)",
            command=_picows_events,
            dialect=EVENTS,
            packages=("picows", "uvloop", "orjson"),
            check=_needs_module("picows"),
            compare_to="nanosocket-events",
        ),
    )
}


def pairs(servers: list[str]) -> list[tuple[str, str]]:
    """The (NanoSocket server, peer) pairs among ``servers``, in report order."""
    return [
        (peer.compare_to, name)
        for name in servers
        if (peer := SERVERS[name]).compare_to is not None and peer.compare_to in servers
    ]
