# cython: language_level=3
"""The compiled transport core's type and its send, which the compiled connection core
(_connection.pyx) reads and calls in C rather than through Python attribute lookups."""


cdef class WebSocketCore:
    cdef public object _client
    cdef public object _conn
    cdef public bint _corked
    cdef public object _endpoint
    cdef public bint _flush_pending
    cdef public Py_ssize_t _idle_ticks
    cdef public bint _lost
    cdef public object _on_message
    cdef public object _options
    cdef public object _transport


cdef object send_frame_of(WebSocketCore self, frame, bint volatile)
