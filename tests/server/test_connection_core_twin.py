"""The compiled twin of a connection's per-message core (``_speedups/_connection``) against its
spec, ``server.connection_core.PyConnectionCore``: selection and shape.

Behaviour is the server's own suite (tests/server), which ``make test`` runs with the compiled
core and again on pure Python.
"""

from __future__ import annotations

import pytest
from tests.twins import check_selected, check_shape

from nanosocket.server import connection_core
from nanosocket.server.connection import Connection
from nanosocket.server.connection_core import PyConnectionCore
from nanosocket.server.socket import Socket

try:
    from nanosocket._speedups import _connection as compiled
except ImportError:
    compiled = None  # type: ignore[assignment]


def test_the_compiled_core_is_selected_when_built_and_allowed() -> None:
    check_selected(connection_core.ConnectionCore, PyConnectionCore, compiled and compiled.ConnectionCore)
    assert Connection.__mro__[1] is connection_core.ConnectionCore
    assert Socket.emit is connection_core.ConnectionCore.emit


@pytest.mark.skipif(compiled is None, reason="the compiled twin was not built")
def test_the_twin_has_the_specs_methods_and_fields() -> None:
    check_shape(PyConnectionCore, compiled.ConnectionCore)
