"""The compiled twins of a connection's per-message core and of the counters every message moves
(``_speedups/_connection``) against their specs in ``server.connection_core``: selection and shape.

Behaviour is the server's own suite (tests/server), which ``make test`` runs with the compiled
core and again on pure Python.
"""

from __future__ import annotations

import pytest
from tests.twins import check_selected, check_shape

from nanosocket.server import connection_core
from nanosocket.server.connection import Connection
from nanosocket.server.connection_core import PyConnectionCore, PyMessageCounters
from nanosocket.server.metrics import Stats
from nanosocket.server.socket import Socket

try:
    from nanosocket._speedups import _connection as compiled
except ImportError:
    compiled = None  # type: ignore[assignment]


def test_the_compiled_core_is_selected_when_built_and_allowed() -> None:
    check_selected(connection_core.ConnectionCore, PyConnectionCore, compiled and compiled.ConnectionCore)
    check_selected(connection_core.MessageCounters, PyMessageCounters, compiled and compiled.MessageCounters)
    assert Stats.__mro__[1] is connection_core.MessageCounters
    assert Connection.__mro__[1] is connection_core.ConnectionCore
    assert Socket.emit is connection_core.ConnectionCore.emit


@pytest.mark.skipif(compiled is None, reason="the compiled twin was not built")
def test_the_twin_has_the_specs_methods_and_fields() -> None:
    check_shape(PyConnectionCore, compiled.ConnectionCore)
    check_shape(PyMessageCounters, compiled.MessageCounters)


def test_the_counters_start_at_zero_and_count_from_python_too() -> None:
    stats = Stats()
    assert (stats.messages_in, stats.messages_out, stats.bytes_out, stats.volatile_dropped) == (0, 0, 0, 0)
    stats.messages_in += 2**40
    stats.bytes_out += 5
    assert (stats.messages_in, stats.bytes_out) == (2**40, 5)
