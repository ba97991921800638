"""Checks shared by the tests of the compiled twins' base classes (transport and connection cores):
the twin is the class in use when it was built and allowed, and it has its spec's shape."""

from __future__ import annotations

import inspect
import os

from nanosocket._speedups import enabled as speedups_enabled


def check_selected(selected: object, spec: object, compiled: object | None) -> None:
    """``make test`` sets NANOSOCKET_REQUIRE_SPEEDUPS=1: there the build must have compiled."""
    if os.environ.get("NANOSOCKET_REQUIRE_SPEEDUPS") == "1" and speedups_enabled():
        assert compiled is not None, "the compiled speedups were not built"
    if compiled is not None and speedups_enabled():
        assert selected is compiled
    else:
        assert selected is spec


def _methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("__")}


def check_shape(spec: type, compiled: type) -> None:
    """The twin has the spec's methods, and a field for each of the spec's slots."""
    assert _methods(spec) == _methods(compiled)
    fields = {name for name, value in vars(compiled).items() if inspect.isgetsetdescriptor(value)}
    assert fields == set(spec.__slots__)  # type: ignore[attr-defined]
