# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of transport.py's ``PyWebSocketCore`` and ``py_flush_all`` (the pure-Python
versions are the spec): the per-message part of a ``WebSocket`` (reading, delivering text,
sending frames, writing) as an extension type that ``WebSocket`` extends, so that the engine's
callbacks and the sends of a broadcast run without a Python frame each.

The rest of a connection (handshakes, closing, heartbeats, ``recv``) is ``WebSocket``'s own
Python, which this class calls by name.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_FromStringAndSize

from ._websocket cimport CLOSED, OPEN, WebSocketConnection, data_to_send_of, receive_of, send_raw_of

# Bound on first use: nanosocket.transport imports this module.
cdef object _DROPPED = None
cdef object _SUCCESS = None
cdef object _BACKPRESSURE = None
cdef object _logger = None
cdef object _running_loop = None
cdef object _read_buffer = None
cdef Py_ssize_t _COALESCE_LIMIT = 0
cdef Py_ssize_t _FLUSH_BATCH = 0
cdef int _INTERNAL_ERROR = 1011


cdef int _load() except -1:
    global _DROPPED, _SUCCESS, _BACKPRESSURE, _logger, _COALESCE_LIMIT, _FLUSH_BATCH, _running_loop
    global _read_buffer
    from nanosocket import transport

    # The event loop as the transport module sees it (this module imports no I/O library).
    _running_loop = transport.asyncio.get_running_loop

    _read_buffer = transport.read_buffer
    _SUCCESS = transport._SUCCESS
    _BACKPRESSURE = transport._BACKPRESSURE
    _logger = transport.logger
    _COALESCE_LIMIT = transport.COALESCE_LIMIT
    _FLUSH_BATCH = transport.FLUSH_BATCH
    assert int(transport.CloseCode.INTERNAL_ERROR) == _INTERNAL_ERROR
    _DROPPED = transport._DROPPED  # last: it marks the module as loaded
    return 0


cdef class WebSocketCore:
    """See transport.PyWebSocketCore (the spec)."""

    # Its fields are declared in _transport.pxd (the connection core reads this type in C).

    @staticmethod
    def get_buffer(sizehint):
        """Where the next read goes (asyncio.BufferedProtocol): the thread's read buffer."""
        if _DROPPED is None:
            _load()
        return _read_buffer.view

    def buffer_updated(self, Py_ssize_t nbytes):
        if _DROPPED is None:
            _load()
        cdef bytearray buffer = <bytearray?> _read_buffer.buffer
        if not 0 <= nbytes <= PyByteArray_GET_SIZE(buffer):
            raise ValueError(f"{nbytes} bytes do not fit the read buffer")
        conn = self._conn
        if conn is None:
            # Kept across reads: a copy of its own.
            self._handshake_data(PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buffer), nbytes))
            return
        _read(self, <WebSocketConnection?> conn, <const unsigned char*> PyByteArray_AS_STRING(buffer), nbytes)

    def _feed(self, data):
        """Bytes from the peer once the connection is open (those that came with the handshake)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            _read(self, <WebSocketConnection?> self._conn, <const unsigned char*> view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def text_received(self, text):
        callback = self._on_message
        if callback is None:
            self._deliver(text)
            return
        try:
            callback(text)
        except Exception:
            if _DROPPED is None:
                _load()
            _logger.exception("on_message callback raised; closing with 1011")
            self.close(_INTERNAL_ERROR, "internal error")

    def send_frame(self, frame, bint volatile=False):
        """Send a ready-made server frame (see the spec)."""
        return send_frame_of(self, frame, volatile)

    def _flush_if_uncorked(self, conn):
        if _DROPPED is None:
            _load()
        transport = self._transport
        assert transport is not None
        return _queue_write(
            self, conn, transport, transport.get_write_buffer_size(), self._options.max_backpressure
        )

    def _flush(self, conn):
        """Write what the core queued; then act on a finished close."""
        _write_out(self, conn)


# The core's C-level helpers are functions, not cdef methods: a class with cdef methods carries a
# pointer to its method table in every instance (8 bytes per connection).
cdef object send_frame_of(WebSocketCore self, frame, bint volatile):
    """WebSocketCore.send_frame, which the compiled connection core calls in C."""
    if _DROPPED is None:
        _load()
    conn = self._conn
    if conn is None:
        return _DROPPED
    # The engine is the compiled one (this module cannot be imported without it): its state
    # and queue are read in C.
    cdef WebSocketConnection engine = <WebSocketConnection?> conn
    if engine._state != OPEN:
        return _DROPPED
    transport = self._transport
    if transport is None:
        return _DROPPED
    cdef Py_ssize_t unsent = transport.get_write_buffer_size()
    cdef Py_ssize_t buffered = unsent
    if self._flush_pending:
        buffered += engine._out_len
    options = self._options
    cdef Py_ssize_t limit = options.max_backpressure
    if buffered > limit:
        if not volatile and options.backpressure_policy == "close":
            self.abort_slow_consumer()
        return _DROPPED
    if type(frame) is bytes:
        send_raw_of(engine, frame)
    else:
        engine.send_message(frame)
    return _queue_write(self, engine, transport, unsent, limit)


cdef int _read(WebSocketCore self, WebSocketConnection conn, const unsigned char* data,
               Py_ssize_t n) except -1:
    """Bytes for the open connection: handled corked, then what they made it send written once."""
    self._idle_ticks = 0
    self._corked = True
    try:
        receive_of(conn, data, n)
    finally:
        self._corked = False
    _write_out(self, conn)
    return 0


cdef int _write_out(WebSocketCore self, conn) except -1:
    if _DROPPED is None:
        _load()
    cdef WebSocketConnection engine = <WebSocketConnection?> conn
    data = data_to_send_of(engine)
    transport = self._transport
    if transport is None:
        return 0
    if data:
        transport.write(data)
    if engine._state == CLOSED:
        self._closed_by_protocol(engine)
    return 0


cdef object _queue_write(WebSocketCore self, WebSocketConnection conn, transport, Py_ssize_t unsent,
                         Py_ssize_t limit):
    """WebSocketCore._flush_if_uncorked (see the spec), given what the transport holds unsent
    and the backpressure limit (a send has read both already)."""
    if self._corked:
        return _SUCCESS  # a read batch is being handled: its single write follows
    cdef Py_ssize_t pending = conn._out_len
    cdef list waiting
    if pending >= _COALESCE_LIMIT or pending >= (limit >> 1):
        _write_out(self, conn)
        return _SUCCESS if not transport.get_write_buffer_size() else _BACKPRESSURE
    if not self._flush_pending:
        # Flusher.add, inline (this runs once per broadcast recipient).
        self._flush_pending = True
        endpoint = self._endpoint
        waiting = (endpoint.flusher if endpoint is not None else self._flusher())._pending
        if not waiting:
            _running_loop().call_soon(flush_all, waiting)
        waiting.append(self)
    # Nothing was written meanwhile: the kernel's share is what it was.
    return _SUCCESS if not unsent else _BACKPRESSURE


def flush_all(list pending):
    """Write the output of the first FLUSH_BATCH connections of ``pending`` and take them out;
    the rest in the next loop iteration (see the spec)."""
    if _DROPPED is None:
        _load()
    cdef list waiting = pending[:_FLUSH_BATCH]
    del pending[:_FLUSH_BATCH]
    if pending:
        _running_loop().call_soon(flush_all, pending)
    cdef WebSocketCore ws
    for item in waiting:
        ws = <WebSocketCore> item
        ws._flush_pending = False
        conn = ws._conn
        if conn is None or ws._lost:
            continue
        try:
            _write_out(ws, conn)
        except Exception:
            _logger.exception("deferred write failed")
