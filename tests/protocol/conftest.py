"""The connection class under test: the pure-Python spec and, when it was built, its compiled twin.

Test modules that build connections opt in with ``pytestmark = pytest.mark.usefixtures("connection_class")``:
each of their tests then runs once per implementation, with the module's ``WebSocketConnection``
name bound to the class of that run.
"""

from __future__ import annotations

from typing import Any

import pytest

from nanosocket.protocol.websocket import PyWebSocketConnection


def connection_classes() -> list[Any]:
    """The pure-Python spec always; its compiled twin when it was built."""
    classes = [pytest.param(PyWebSocketConnection, id="python")]
    try:
        from nanosocket._speedups._websocket import WebSocketConnection as compiled
    except ImportError:
        pass
    else:
        classes.append(pytest.param(compiled, id="compiled"))
    return classes


@pytest.fixture(params=connection_classes())
def connection_class(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(request.module, "WebSocketConnection", request.param)
    return request.param
