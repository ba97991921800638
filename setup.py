"""Builds the optional compiled twins (src/nanosocket/_speedups/*.pyx) with Cython.

Everything else is in pyproject.toml. When Cython or a C compiler is missing, or a build fails,
the package installs without them and runs on its pure-Python code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: the pure-Python code runs
    cythonize = None


class OptionalBuildExt(build_ext):
    """A failed compile warns instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"nanosocket: compiled speedups not built ({exc}); using pure Python", file=sys.stderr)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"nanosocket: {ext.name} not built ({exc}); using pure Python", file=sys.stderr)


def extensions() -> list[Extension]:
    if os.environ.get("NANOSOCKET_NO_SPEEDUPS", "") not in ("", "0"):
        return []
    if cythonize is None:
        print("nanosocket: Cython not available; using pure Python", file=sys.stderr)
        return []
    sources = sorted(str(p) for p in Path("src/nanosocket/_speedups").glob("*.pyx"))
    return list(cythonize(sources, compiler_directives={"language_level": "3"}, quiet=True))


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
