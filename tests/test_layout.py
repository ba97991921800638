"""The import boundaries of DESIGN.md §1, enforced on the source with ``ast``.

``RULES`` is the table: every module under src/nanosocket must match exactly one rule, so a new
module (server/, client/, adapters/, ...) is checked as soon as it exists, and a module no rule
covers fails until the table names it. Imports are read statically, wherever they occur (module
level, functions, ``if TYPE_CHECKING:`` blocks): an annotation-only import still couples modules.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

PACKAGE = "nanosocket"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / PACKAGE


@dataclass(frozen=True)
class Rule:
    """Which of our modules (and which outside ones) the modules matching ``patterns`` may import.

    ``may_import`` names our modules relative to the package: ``"protocol"`` allows
    nanosocket.protocol and everything under it, ``"adapters.base"`` only that module and what is
    under it, ``""`` the package top level (the public API) alone.
    """

    name: str
    patterns: tuple[str, ...]
    may_import: tuple[str, ...]
    stdlib_only: bool = False
    forbidden_external: tuple[str, ...] = ()


# What sans-I/O code never imports: event loops, sockets, TLS, clocks and the I/O libraries.
SANS_IO_FORBIDDEN = ("asyncio", "socket", "selectors", "ssl", "time", "uvloop", "picows", "redis")
SANS_IO_PEERS = ("errors", "options", "protocol", "rooms", "_speedups")
SIDE_COMMON = ("transport", "endpoint", "dispatch", "protocol", "rooms", "adapters.base", "errors", "options")

RULES: tuple[Rule, ...] = (
    Rule(
        "public API",
        ("nanosocket",),
        (
            "errors",
            "options",
            "protocol",
            "rooms",
            "transport",
            "endpoint",
            "server",
            "client",
            "adapters",
            "dispatch",
        ),
    ),
    Rule("python -m nanosocket", ("nanosocket.__main__",), ("cli",)),
    Rule("errors", ("nanosocket.errors",), (), stdlib_only=True),
    # DESIGN.md §1 says "stdlib" for options too, but options must raise errors.ConfigurationError.
    Rule("options", ("nanosocket.options",), ("errors",), stdlib_only=True),
    Rule(
        "protocol",
        ("nanosocket.protocol", "nanosocket.protocol.*"),
        SANS_IO_PEERS,
        forbidden_external=SANS_IO_FORBIDDEN,
    ),
    Rule("rooms", ("nanosocket.rooms",), SANS_IO_PEERS, forbidden_external=SANS_IO_FORBIDDEN),
    Rule(
        "compiled twins",
        ("nanosocket._speedups", "nanosocket._speedups.*"),
        SANS_IO_PEERS,
        forbidden_external=SANS_IO_FORBIDDEN,
    ),
    # Not in DESIGN.md §1 yet: the transport extends the compiled twin of its per-message core
    # (_speedups/_transport) when it was built, as protocol/ picks its kernels' twins.
    Rule("transport", ("nanosocket.transport",), ("protocol", "errors", "options", "_speedups")),
    # Not in DESIGN.md §1 yet: handler registry and ack table, shared by the server and the client;
    # a handler extends the compiled twin of its per-call core (_speedups/_dispatch) when built.
    Rule("dispatch", ("nanosocket.dispatch",), ("protocol", "errors", "options", "_speedups")),
    Rule(
        "endpoint (raw serve/connect)",
        ("nanosocket.endpoint",),
        ("transport", "protocol", "errors", "options"),
    ),
    # The server builds its default MemoryAdapter (DESIGN.md §1 lists adapters.base only),
    # run(workers=N) hands itself to the supervisor of the workers, and a connection extends the
    # compiled twin of its per-message core (server/connection_core.py) when it was built.
    Rule(
        "server",
        ("nanosocket.server", "nanosocket.server.*"),
        ("server", "adapters.memory", "workers", "_speedups", *SIDE_COMMON),
    ),
    Rule("client", ("nanosocket.client", "nanosocket.client.*"), ("client", *SIDE_COMMON)),
    Rule(
        "adapters",
        ("nanosocket.adapters", "nanosocket.adapters.*"),
        ("adapters", "protocol", "rooms", "errors", "options"),
    ),
    # Worker processes and their supervisor: a server per worker, with the RedisAdapter of
    # NANOSOCKET_REDIS_URL when it has no adapter of its own (not in DESIGN.md §1 yet).
    Rule("workers", ("nanosocket.workers",), ("server", "adapters", "errors", "options")),
    Rule("cli", ("nanosocket.cli",), ("", "endpoint", "transport", "options", "workers")),
)

# Violations the table knows about and tolerates until they are fixed; each must still be real
# (test_known_violations_are_still_real), so an entry is removed as soon as its cause is.
KNOWN_VIOLATIONS: dict[str, dict[str, str]] = {}


# ----------------------------------------------------------------- reading imports


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


MODULES = discover()


@dataclass(frozen=True)
class Imports:
    internal: frozenset[str]  # our modules, as dotted names
    external: frozenset[str]  # top-level names of everything else


def read_imports(source: str, module: str, *, is_package: bool, known: set[str] | frozenset[str]) -> Imports:
    """Every import in ``source`` (the module ``module``), relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()

    def add(name: str) -> None:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            internal.add(name)
        else:
            external.add(name.partition(".")[0])

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 >= len(base_parts):
                    raise AssertionError(f"{module}: relative import beyond the top-level package")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            for alias in node.names:
                # ``from .protocol import frames`` imports a module; ``from .errors import X`` a name.
                candidate = f"{base}.{alias.name}"
                add(candidate if candidate in known else base)
    return Imports(frozenset(internal), frozenset(external))


def imports_of(module: str) -> Imports:
    path = MODULES[module]
    return read_imports(
        path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py", known=set(MODULES)
    )


# ----------------------------------------------------------------------- checking


def rules_for(module: str) -> list[Rule]:
    return [rule for rule in RULES if any(fnmatchcase(module, pattern) for pattern in rule.patterns)]


def allows(rule: Rule, target: str) -> bool:
    for entry in rule.may_import:
        if entry == "":
            if target == PACKAGE:
                return True
            continue
        allowed = f"{PACKAGE}.{entry}"
        if target == allowed or target.startswith(allowed + "."):
            return True
    return False


def violations(module: str, imports: Imports, rule: Rule) -> dict[str, str]:
    """Each forbidden import of ``module``, with the reason."""
    found: dict[str, str] = {}
    for target in sorted(imports.internal):
        if target != module and not allows(rule, target):
            found[target] = f"{rule.name} may import only {rule.may_import or 'the standard library'}"
    for name in sorted(imports.external):
        if rule.stdlib_only and name not in sys.stdlib_module_names:
            found[name] = f"{rule.name} may import only the standard library"
        elif name in rule.forbidden_external:
            found[name] = f"{rule.name} must not import {name}"
    return found


# -------------------------------------------------------------------------- tests


def test_the_source_tree_is_found() -> None:
    for module in ("nanosocket", "nanosocket.errors", "nanosocket.options", "nanosocket.protocol.websocket"):
        assert module in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_in_the_table(module: str) -> None:
    matched = rules_for(module)
    assert matched, (
        f"{module} is in no rule of the import-boundary table: add it to RULES in tests/test_layout.py "
        "(and to the table of DESIGN.md §1) with the modules it may import"
    )
    assert len(matched) == 1, f"{module} matches several rules: {[rule.name for rule in matched]}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_respect_the_table(module: str) -> None:
    matched = rules_for(module)
    if len(matched) != 1:
        pytest.fail(f"{module}: no single rule (see test_every_module_is_in_the_table)")
    found = violations(module, imports_of(module), matched[0])
    for target in KNOWN_VIOLATIONS.get(module, {}):
        found.pop(target, None)
    assert not found, f"{module} crosses the import boundaries of DESIGN.md §1: " + "; ".join(
        f"{target} ({reason})" for target, reason in found.items()
    )


@pytest.mark.parametrize(
    ("module", "target"),
    [(module, target) for module, targets in KNOWN_VIOLATIONS.items() for target in targets],
)
def test_known_violations_are_still_real(module: str, target: str) -> None:
    if module not in MODULES:
        pytest.fail(f"{module} no longer exists: remove it from KNOWN_VIOLATIONS")
    (rule,) = rules_for(module)
    assert target in violations(module, imports_of(module), rule), (
        f"{module} no longer imports {target}: remove it from KNOWN_VIOLATIONS"
    )


# ------------------------------------------------------ the checker checks itself

KNOWN = frozenset(
    {
        "nanosocket",
        "nanosocket.errors",
        "nanosocket.options",
        "nanosocket.protocol",
        "nanosocket.protocol.frames",
        "nanosocket.protocol.websocket",
        "nanosocket.transport",
        "nanosocket.server",
        "nanosocket.server.app",
        "nanosocket.client",
        "nanosocket.client.client",
        "nanosocket.adapters",
        "nanosocket.adapters.base",
        "nanosocket.adapters.redis",
    }
)


def check_source(source: str, module: str, *, is_package: bool = False) -> dict[str, str]:
    (rule,) = rules_for(module)
    return violations(module, read_imports(source, module, is_package=is_package, known=KNOWN), rule)


def test_read_imports_resolves_relative_and_absolute_forms() -> None:
    source = """
import os.path
import nanosocket.errors
from . import frames
from .frames import build_frame
from .. import options
from ..errors import ProtocolError
from nanosocket.protocol import websocket
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from ..transport import WebSocket
def later():
    import asyncio
"""
    imports = read_imports(source, "nanosocket.protocol.websocket", is_package=False, known=KNOWN)
    assert imports.internal == {
        "nanosocket.errors",
        "nanosocket.protocol.frames",
        "nanosocket.options",
        "nanosocket.protocol.websocket",
        "nanosocket.transport",
    }
    assert imports.external == {"os", "typing", "asyncio"}


def test_read_imports_in_a_package_init() -> None:
    imports = read_imports(
        "from .base import Adapter\nfrom . import redis\nfrom .. import rooms\n",
        "nanosocket.adapters",
        is_package=True,
        known=KNOWN,
    )
    assert imports.internal == {"nanosocket.adapters.base", "nanosocket.adapters.redis", "nanosocket"}


@pytest.mark.parametrize(
    ("module", "source", "offending"),
    [
        ("nanosocket.errors", "import httptools\n", "httptools"),
        ("nanosocket.errors", "from .options import WebSocketOptions\n", "nanosocket.options"),
        ("nanosocket.options", "import orjson\n", "orjson"),
        ("nanosocket.protocol.frames", "import asyncio\n", "asyncio"),
        ("nanosocket.protocol.frames", "from socket import socket\n", "socket"),
        ("nanosocket.protocol.frames", "import redis.asyncio\n", "redis"),
        ("nanosocket.protocol.frames", "import picows\n", "picows"),
        ("nanosocket.protocol.frames", "from ..transport import WebSocket\n", "nanosocket.transport"),
        ("nanosocket.protocol.frames", "from .. import transport\n", "nanosocket.transport"),
        ("nanosocket.rooms", "from .server.app import NanoSocket\n", "nanosocket.server.app"),
        ("nanosocket.transport", "from .endpoint import serve\n", "nanosocket.endpoint"),
        ("nanosocket.transport", "from .server import app\n", "nanosocket.server.app"),
        ("nanosocket.endpoint", "from .server.app import NanoSocket\n", "nanosocket.server.app"),
        (
            "nanosocket.server.app",
            "from ..client.client import NanoSocketClient\n",
            "nanosocket.client.client",
        ),
        ("nanosocket.server.app", "from ..adapters.redis import RedisAdapter\n", "nanosocket.adapters.redis"),
        ("nanosocket.client.client", "from ..server import app\n", "nanosocket.server.app"),
        ("nanosocket.adapters.redis", "from ..server.app import NanoSocket\n", "nanosocket.server.app"),
        ("nanosocket.adapters.base", "from ..client import client\n", "nanosocket.client.client"),
        ("nanosocket.cli", "from .protocol.frames import build_frame\n", "nanosocket.protocol.frames"),
        ("nanosocket.dispatch", "from .server import app\n", "nanosocket.server.app"),
        ("nanosocket.dispatch", "from .transport import WebSocket\n", "nanosocket.transport"),
        ("nanosocket.cli", "from .errors import ConnectionClosed\n", "nanosocket.errors"),
        ("nanosocket", "from .cli import main\n", "nanosocket.cli"),
    ],
)
def test_the_checker_catches_a_violation(module: str, source: str, offending: str) -> None:
    assert offending in check_source(source, module, is_package=module in {"nanosocket"})


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("nanosocket.errors", "from __future__ import annotations\nfrom typing import Any\n"),
        ("nanosocket.options", "import math\nfrom .errors import ConfigurationError\n"),
        (
            "nanosocket.protocol.handshake",
            "import httptools\nfrom ..errors import X\nfrom .frames import Y\n",
        ),
        ("nanosocket.rooms", "from .protocol.frames import build_frame\n"),
        ("nanosocket.transport", "import asyncio\nfrom .protocol.websocket import WebSocketConnection\n"),
        (
            "nanosocket.endpoint",
            "import ssl\nfrom .transport import WebSocket\nfrom .protocol import frames\n",
        ),
        ("nanosocket.server.app", "from .socket import Socket\nfrom ..adapters.base import Adapter\n"),
        ("nanosocket.server.app", "from ..endpoint import serve\nfrom ..rooms import RoomIndex\n"),
        ("nanosocket.server.app", "from ..dispatch import HandlerRegistry\n"),
        ("nanosocket.dispatch", "import asyncio\nfrom .errors import AckError\n"),
        ("nanosocket.client.client", "from ..transport import WebSocket\nfrom ..endpoint import connect\n"),
        (
            "nanosocket.adapters.redis",
            "import redis.asyncio\nfrom .base import Adapter\nfrom ..rooms import R\n",
        ),
        ("nanosocket.cli", "import uvloop\nfrom . import serve\nfrom nanosocket import connect\n"),
        ("nanosocket.cli", "from .endpoint import WebSocketServer\nfrom .options import WebSocketOptions\n"),
    ],
)
def test_the_checker_allows_what_the_table_allows(module: str, source: str) -> None:
    assert check_source(source, module) == {}


@pytest.mark.parametrize(
    "module",
    [
        "nanosocket.server.http",
        "nanosocket.client.client",
        "nanosocket.adapters.memory",
        "nanosocket._speedups.frames",
    ],
)
def test_planned_modules_already_have_a_rule(module: str) -> None:
    assert len(rules_for(module)) == 1


def test_an_unknown_module_has_no_rule() -> None:
    assert rules_for("nanosocket.plugins") == []
