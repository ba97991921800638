# cython: language_level=3
"""The compiled handler core's type, whose fields the compiled connection core reads in C."""


cdef class HandlerCore:
    cdef public object fn
    cdef public bint is_async
    cdef public Py_ssize_t min_args
    cdef public Py_ssize_t most_args
