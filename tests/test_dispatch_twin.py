"""The compiled twin of a handler's per-call core (``_speedups/_dispatch``) against its spec,
``dispatch.PyHandlerCore``: selection, shape, and the values a handler's description holds.

Behaviour is the dispatch of the server's and the client's suites, which ``make test`` runs with
the compiled core and, for the server, again on pure Python.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from tests.twins import check_selected, check_shape

from nanosocket import dispatch
from nanosocket.dispatch import Handler, PyHandlerCore

try:
    from nanosocket._speedups import _dispatch as compiled
except ImportError:
    compiled = None  # type: ignore[assignment]


def test_the_compiled_core_is_selected_when_built_and_allowed() -> None:
    check_selected(dispatch.HandlerCore, PyHandlerCore, compiled and compiled.HandlerCore)
    assert Handler.__mro__[1] is dispatch.HandlerCore


@pytest.mark.skipif(compiled is None, reason="the compiled twin was not built")
def test_the_twin_has_the_specs_fields() -> None:
    check_shape(PyHandlerCore, compiled.HandlerCore)


def _two(a: Any, b: Any = 1) -> None: ...
def _any(*args: Any) -> None: ...
async def _later(a: Any) -> None: ...


@pytest.mark.parametrize(
    ("fn", "described"),
    [(_two, (False, 1, 2, 2)), (_any, (False, 0, None, sys.maxsize)), (_later, (True, 1, 1, 1))],
)
def test_a_handler_holds_its_description(fn: Any, described: tuple[Any, ...]) -> None:
    handler = Handler(fn, once=True)
    assert (handler.is_async, handler.min_args, handler.max_args, handler.most_args) == described
    assert handler.fn is fn
    assert handler.once
    assert not hasattr(handler, "__dict__")
