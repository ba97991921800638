"""The compiled twin of the transport's per-message core (``_speedups/_transport``) against its
spec, ``transport.PyWebSocketCore`` and ``py_flush_all``: selection and shape.

Behaviour is the transport's own suite (tests/test_transport.py), which ``make test`` runs with
the compiled core and again on pure Python.
"""

from __future__ import annotations

import pytest
from tests.twins import check_selected, check_shape

from nanosocket import transport
from nanosocket.transport import PyWebSocketCore, WebSocket, py_flush_all

try:
    from nanosocket._speedups import _transport as compiled
except ImportError:
    compiled = None  # type: ignore[assignment]


def test_the_compiled_core_is_selected_when_built_and_allowed() -> None:
    check_selected(transport.WebSocketCore, PyWebSocketCore, compiled and compiled.WebSocketCore)
    check_selected(transport.flush_all, py_flush_all, compiled and compiled.flush_all)
    assert WebSocket.__mro__[1] is transport.WebSocketCore


@pytest.mark.skipif(compiled is None, reason="the compiled twin was not built")
def test_the_twin_has_the_specs_methods_and_fields() -> None:
    check_shape(PyWebSocketCore, compiled.WebSocketCore)
