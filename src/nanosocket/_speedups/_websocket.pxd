# cython: language_level=3
"""The compiled connection state machine's types and states, its input, its send of a ready-made
frame and its output, which the compiled transport core (_transport.pyx) reads and calls in C rather
than through Python attribute lookups."""

from cpython.object cimport PyObject


cdef enum:
    # State values (protocol/websocket.py's State).
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


cdef struct Utf8State:
    # Where a UTF-8 stream's validation stands: continuation bytes still expected and the range
    # of the next one (only the first after a lead byte has a range of its own).
    unsigned char left
    unsigned char low
    unsigned char high


cdef class _Limits:
    cdef readonly object options
    cdef long long max_payload
    cdef long long max_compressed
    cdef long long max_fragments
    cdef long long max_control


cdef class WebSocketConnection:
    cdef _Limits _limits
    #: What is told of messages, pings and pongs (a FrameHandler).
    cdef public object handler
    #: permessage-deflate as negotiated in the opening handshake; None: not negotiated.
    cdef public object deflate
    #: Code and reason of the close: the peer's, ours on failure, 1006 when dropped.
    cdef public object close_code
    cdef public object close_reason
    # The bytes of a partial frame, while one is pending.
    cdef bytearray _pending
    # The fragmented message being received: its bytes so far, and its decompressor if compressed.
    cdef bytearray _msg_parts
    cdef object _inflation
    # What is queued for the peer: a bytes object of ours (grown in place) or, alone, a caller's.
    cdef PyObject* _out
    cdef Py_ssize_t _out_len
    # How many bytes the pending partial frame needs before it is worth parsing again.
    cdef Py_ssize_t _need
    cdef long long _msg_frames
    cdef unsigned char _state
    cdef unsigned char _client
    cdef unsigned char _msg_opcode
    cdef unsigned char _out_owned
    # The fragmented text message's UTF-8 so far, and the pending partial text frame's (checked
    # as it arrives; three bytes that fit in the object's padding).
    cdef Utf8State _utf8
    cdef Utf8State _pending_utf8


cdef int receive_of(WebSocketConnection self, const unsigned char* data, Py_ssize_t n) except -1
cdef object data_to_send_of(WebSocketConnection self)
cdef int send_raw_of(WebSocketConnection self, object frame) except -1
