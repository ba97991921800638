"""Compiled twins of hot kernels (Cython). The pure-Python code they replace is the spec.

Nothing imports this package directly: each kernel's pure-Python module picks the compiled
version when it was built and ``NANOSOCKET_NO_SPEEDUPS`` is not set (``enabled()``).
"""

from __future__ import annotations

import os

__all__ = ["enabled"]


def enabled() -> bool:
    """Whether compiled kernels may be used (set NANOSOCKET_NO_SPEEDUPS=1 to run pure Python)."""
    return os.environ.get("NANOSOCKET_NO_SPEEDUPS", "") in ("", "0")
