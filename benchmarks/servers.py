"""The servers under test: how to start each one and how the load generator talks to it.

A server is one entry in ``SERVERS``: a command line (given host and port), the ``Dialect`` of frames
it answers (a raw echo server echoes any frame; an event server wants its own envelopes; a Socket.IO
server wants Engine.IO / Socket.IO packets, which the load generator speaks with
``--dialect socketio``), the packages whose versions the report records, and a ``prepare`` step that
makes it runnable here (the peers' own venv and ``node_modules`` are installed on first use, see
peer_env.py) or says why it cannot run. Scenarios run only on servers whose dialect supports them.

Servers are compared with a NanoSocket server measured in the same run (``Server.compare_to``): the
raw picows echo server with NanoSocket's raw echo-server, every event peer with the NanoSocket event
server. The report's ratio columns are NanoSocket / peer.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import peer_env
from .driver import LoadgenError, ensure_built

__all__ = ["EVENTS", "RAW_ECHO", "REFSERVER", "SERVERS", "SOCKETIO", "Dialect", "Server", "pairs"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The frames a server understands, as load generator templates (``{p}`` is the payload, ``{a}``
    an ack id numbered per connection)."""

    #: Servers of one family answer the same scenarios; a scenario may be meant for one family only.
    family: str = "raw"
    #: The load generator's --dialect: "plain" WebSocket messages, or "socketio" (Engine.IO v4 /
    #: Socket.IO v5: connect packet after the upgrade, pings answered, default path /socket.io/).
    protocol: str = "plain"
    #: An echo request; every data frame the server sends back counts as a reply. None: no echo.
    echo: str | None = "{p}"
    #: A request answered by an acknowledgement (``{a}`` is its id), and how each ack reply starts
    #: (followed by the id). None: no acks.
    call: str | None = None
    ack_prefix: str | None = None
    #: Fanout: the frame that joins the room, and how many frames acknowledge it. None: no fanout.
    join: str | None = None
    join_acks: int = 1
    #: Fanout: a publish to the room; the server must send it to the publisher too.
    publish: str | None = None
    #: Frames starting with one of these are protocol chatter (heartbeats), not counted.
    ignore_prefixes: tuple[str, ...] = ()
    #: What to answer to such a frame, if anything.
    ignore_answer: str | None = None
    #: Request path of the WebSocket endpoint (None: the load generator's default for the protocol).
    path: str | None = None
    #: Whether the idle-connections scenario means anything for it.
    idle: bool = True

    def supports(self, capability: str) -> bool:
        if capability == "echo":
            return self.echo is not None
        if capability == "acks":
            return self.call is not None and self.ack_prefix is not None
        if capability == "fanout":
            return self.join is not None and self.publish is not None
        return capability == "connect" and self.idle

    def loadgen_args(self) -> list[str]:
        """Arguments every load generator run against this server gets."""
        args = ["--dialect", self.protocol]
        if self.path is not None:
            args += ["--path", self.path]
        for prefix in self.ignore_prefixes:
            args += ["--ignore-prefix", prefix]
        if self.ignore_answer is not None:
            args += ["--ignore-answer", self.ignore_answer]
        return args


APPS_DIR = Path(__file__).resolve().parent / "apps"

#: A raw WebSocket echo server: every message comes back unchanged.
RAW_ECHO = Dialect(family="raw", echo="{p}")

#: A NanoSocket event server as a plain client sees it (docs/protocol.md): JSON envelopes,
#: ``echo``, ``call`` with an ack id (answered ``{"ack":N,"data":[...]}``), ``join`` (answered by
#: ``joined``) and ``publish`` (a room broadcast, sender included).
EVENTS = Dialect(
    family="events",
    echo='{"event":"echo","data":["{p}"]}',
    call='{"event":"call","data":["{p}"],"ack":{a}}',
    ack_prefix='{"ack":',
    join='{"event":"join","data":["room1"]}',
    join_acks=1,
    publish='{"event":"publish","data":["room1","{p}"]}',
)

#: The same events on a Socket.IO server: ``42["echo","..."]`` events, ``42N["call","..."]`` answered
#: by the ack ``43N[...]``.
SOCKETIO = Dialect(
    family="events",
    protocol="socketio",
    echo='42["echo","{p}"]',
    call='42{a}["call","{p}"]',
    ack_prefix="43",
    join='42["join","room1"]',
    join_acks=1,
    publish='42["publish","room1","{p}"]',
)


PEERS_DIR = Path(__file__).resolve().parent / "peers"


def _needs_module(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if importlib.util.find_spec(name) is not None else f"Python package {name!r} is missing"

    return check


def _python_peer() -> str | None:
    try:
        peer_env.python_env()
    except peer_env.PeerEnvError as exc:
        return f"the peers' Python venv could not be installed: {exc}"
    return None


def _node_peer() -> str | None:
    try:
        peer_env.node_env()
    except peer_env.PeerEnvError as exc:
        return f"the Node peers could not be installed: {exc}"
    return None


def _no_env() -> dict[str, str]:
    return {}


def _node_env() -> dict[str, str]:
    return {"NODE_PATH": str(peer_env.NODE_DIR / "node_modules")}


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
    #: Makes the server runnable (installs its peer environment on first use); returns None when it
    #: can run on this machine, else the reason it cannot.
    check: Callable[[], str | None] = lambda: None
    #: Extra environment variables of the server process.
    env: Callable[[], dict[str, str]] = _no_env
    #: Versions the report records beyond ``packages`` (peer venv packages, Node and npm packages).
    versions: Callable[[], dict[str, str | None]] = dict
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


def _refserver(host: str, port: int) -> list[str]:
    return [str(ensure_built("refserver")), "--host", host, "--port", str(port)]


def _refserver_check() -> str | None:
    try:
        ensure_built("refserver")
    except LoadgenError as exc:
        return str(exc)
    return None


#: The calibration server answers echo and the room protocol of EVENTS (no acks, no idle figure).
REFSERVER = Dialect(
    family="events",
    echo=EVENTS.echo,
    join=EVENTS.join,
    join_acks=1,
    publish=EVENTS.publish,
    idle=False,
)


def _python_peer_command(script: str) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        python = str(peer_env.python_env())
        return [python, str(PEERS_DIR / script), "--host", host, "--port", str(port)]

    return command


def _node_command(script: str) -> Callable[[str, int], list[str]]:
    def command(host: str, port: int) -> list[str]:
        return [shutil.which("node") or "node", str(PEERS_DIR / script), "--host", host, "--port", str(port)]

    return command


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
        Server(
            name="websockets",
            title="websockets + orjson event server (benchmarks/peers/websockets_events.py, uvloop)",
            command=_python_peer_command("websockets_events.py"),
            dialect=EVENTS,
            check=_python_peer,
            versions=peer_env.python_versions,
            compare_to="nanosocket-events",
        ),
        Server(
            name="python-socketio",
            title="python-socketio AsyncServer on aiohttp (benchmarks/peers/socketio_events.py, uvloop)",
            command=_python_peer_command("socketio_events.py"),
            dialect=SOCKETIO,
            check=_python_peer,
            versions=peer_env.python_versions,
            compare_to="nanosocket-events",
        ),
        Server(
            name="node-ws",
            title="Node.js ws event server (benchmarks/peers/ws_events.js)",
            command=_node_command("ws_events.js"),
            dialect=EVENTS,
            check=_node_peer,
            env=_node_env,
            versions=peer_env.node_versions,
            compare_to="nanosocket-events",
        ),
        Server(
            name="node-socketio",
            title="Node.js socket.io v4 server (benchmarks/peers/socketio_events.js)",
            command=_node_command("socketio_events.js"),
            dialect=SOCKETIO,
            check=_node_peer,
            env=_node_env,
            versions=peer_env.node_versions,
            compare_to="nanosocket-events",
        ),
        Server(
            name="c-refserver",
            title=(
                "calibration, not a peer: a minimal C server (benchmarks/loadgen/refserver.c) that echoes "
                "and relays publishes verbatim, so its rows show how fast the load generator itself can go "
                "and what that costs it (loadgen CPU)"
            ),
            command=_refserver,
            dialect=REFSERVER,
            check=_refserver_check,
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
