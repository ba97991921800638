"""The compiled twin of a connection's per-message core (``_speedups/_connection``) against its
spec, ``server.connection_core.PyConnectionCore``: selection and shape.

Behaviour is the server's own suite (tests/server), which ``make test`` runs with the compiled
core and again on pure Python.
"""

from __future__ import annotations

import inspect
import os

from nanosocket._speedups import enabled as speedups_enabled
from nanosocket.server import connection_core
from nanosocket.server.connection import Connection
from nanosocket.server.connection_core import PyConnectionCore
from nanosocket.server.socket import Socket

try:
    from nanosocket._speedups import _connection as compiled
except ImportError:
    compiled = None  # type: ignore[assignment]


def test_the_compiled_core_is_selected_when_built_and_allowed() -> None:
    """``make test`` sets NANOSOCKET_REQUIRE_SPEEDUPS=1: there the build must have compiled."""
    if os.environ.get("NANOSOCKET_REQUIRE_SPEEDUPS") == "1" and speedups_enabled():
        assert compiled is not None, "the compiled speedups were not built"
    if compiled is not None and speedups_enabled():
        assert connection_core.ConnectionCore is compiled.ConnectionCore
    else:
        assert connection_core.ConnectionCore is PyConnectionCore
    assert Connection.__mro__[1] is connection_core.ConnectionCore
    assert Socket.emit is connection_core.ConnectionCore.emit


def _methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("__")}


def test_the_twin_has_the_specs_methods_and_fields() -> None:
    if compiled is None:
        return  # nothing to compare: the pure-Python core is the only one
    assert _methods(PyConnectionCore) == _methods(compiled.ConnectionCore)
    members = vars(compiled.ConnectionCore).items()
    fields = {name for name, value in members if inspect.isgetsetdescriptor(value)}
    assert fields == set(PyConnectionCore.__slots__)
