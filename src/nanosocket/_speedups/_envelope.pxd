# cython: language_level=3
"""The compiled event codec's entry points, which the compiled connection core (_connection.pyx)
calls in C rather than through Python calls."""


cdef object event_frame_of(event, args)
cdef object ack_frame_of(ack, results)
cdef object decode_event_of(message)
