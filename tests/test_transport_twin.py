"""The compiled twin of the transport's per-message core (``_speedups/_transport``) against its
spec, ``transport.PyWebSocketCore`` and ``py_flush_all``: selection and shape.

Behaviour is the transport's own suite (tests/test_transport.py), which ``make test`` runs with
the compiled core and again on pure Python.
"""

from __future__ import annotations

import inspect
import os

import pytest

from nanosocket import transport
from nanosocket._speedups import enabled as speedups_enabled
from nanosocket.transport import PyWebSocketCore, WebSocket, py_flush_all

try:
    from nanosocket._speedups import _transport as compiled
except ImportError:
    compiled = None  # type: ignore[assignment]


def test_the_compiled_core_is_selected_when_built_and_allowed() -> None:
    """``make test`` sets NANOSOCKET_REQUIRE_SPEEDUPS=1: there the build must have compiled."""
    if os.environ.get("NANOSOCKET_REQUIRE_SPEEDUPS") == "1" and speedups_enabled():
        assert compiled is not None, "the compiled speedups were not built"
    if compiled is not None and speedups_enabled():
        assert transport.WebSocketCore is compiled.WebSocketCore
        assert transport.flush_all is compiled.flush_all
    else:
        assert transport.WebSocketCore is PyWebSocketCore
        assert transport.flush_all is py_flush_all
    assert WebSocket.__mro__[1] is transport.WebSocketCore


def _methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("__")}


@pytest.mark.skipif(compiled is None, reason="the compiled twin was not built")
def test_the_twin_has_the_specs_methods_and_fields() -> None:
    spec_methods = _methods(PyWebSocketCore) - {"_handshake_data", "_deliver", "close"}
    assert spec_methods <= _methods(compiled.WebSocketCore)
    fields = {
        name for name, value in vars(compiled.WebSocketCore).items() if inspect.isgetsetdescriptor(value)
    }
    assert fields == set(PyWebSocketCore.__slots__)
