# cython: language_level=3
"""Compiled twin of dispatch.py's ``PyHandlerCore`` (the pure-Python version is the spec): what a
dispatch loop reads of a handler for every call, as C values (declared in _dispatch.pxd) that
the compiled connection core reads without attribute lookups. ``dispatch.Handler`` extends it.
"""


cdef class HandlerCore:
    """See dispatch.PyHandlerCore (the spec)."""
