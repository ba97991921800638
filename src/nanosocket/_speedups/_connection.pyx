# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of server/connection_core.py's ``PyConnectionCore`` (the pure-Python version is
the spec): a message received, dispatched to its handlers (their ack answered), an emit and a
broadcast recipient's frame, as an extension type that ``Connection`` extends, so that no Python
frame of the framework runs between the engine and the application's handler.

The rest of a connection is ``Connection``'s own Python, which this class calls by name.
"""

from cpython.object cimport PyObject
from cpython.sequence cimport PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE

from ._dispatch cimport HandlerCore
from ._envelope cimport ack_frame_of, decode_event_of, event_frame_of
from ._transport cimport WebSocketCore, send_frame_of
from ._websocket cimport OPEN, WebSocketConnection

cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames)
    size_t PY_VECTORCALL_ARGUMENTS_OFFSET

# Bound on first use: server/connection_core.py imports this module.
cdef object _CONNECTED = None
cdef object _DROPPED = None
cdef object _PONG_FRAME = None
cdef object _pong_frame = None
cdef object _reserved = None
cdef object _check_emit_name = None
cdef object _invoke = None
cdef object _run_started = None
cdef object _Suspended = None
cdef object _HandlerCancelled = None
cdef object _ProtocolError = None
cdef object _CancelledError = None
cdef object _CoroutineType = None
cdef object _partial = None


cdef int _load() except -1:
    global _CONNECTED, _DROPPED, _PONG_FRAME, _pong_frame, _reserved
    global _check_emit_name, _invoke, _run_started, _Suspended, _HandlerCancelled
    global _ProtocolError, _CancelledError, _CoroutineType, _partial
    from nanosocket.server import connection_core as core

    _DROPPED = core._DROPPED
    _PONG_FRAME = core.PONG_FRAME
    _pong_frame = core.pong_frame
    _reserved = core.PEER_RESERVED_EVENTS
    _check_emit_name = core.check_emit_name
    _invoke = core.invoke
    _run_started = core.run_started
    _Suspended = core.Suspended
    _HandlerCancelled = core.HandlerCancelled
    _ProtocolError = core.ProtocolError
    _CancelledError = core.asyncio.CancelledError
    _CoroutineType = core.CoroutineType
    _partial = core.partial
    _CONNECTED = core._CONNECTED  # last: it marks the module as loaded
    return 0


cdef class MessageCounters:
    """See server/connection_core.PyMessageCounters (the spec)."""

    cdef public long long messages_in
    cdef public long long messages_out
    cdef public long long bytes_out
    cdef public long long volatile_dropped


cdef class ConnectionCore:
    """See server/connection_core.PyConnectionCore (the spec)."""

    cdef public object _codec
    cdef public object _handlers
    cdef public object _host
    cdef public object _pid
    cdef public object _shared
    cdef public object _state
    cdef public MessageCounters _stats
    cdef public object _ws

    # ------------------------------------------------------------- messages in

    def _receive(self, message):
        """A message from the client (the WebSocket's on_message)."""
        if _CONNECTED is None:
            _load()
        if self._state is not _CONNECTED:
            self._receive_early(message)
            return
        self._stats.messages_in += 1
        try:
            decoded = decode_event_of(message)
            if type(decoded) is tuple:
                event, args, ack = <tuple> decoded
                _run(self, event, args, ack)
            elif type(decoded) is list:
                _run_batch(self, <list> decoded)
            else:
                self._receive_other(decoded)
        except _ProtocolError as exc:
            self._violation(exc)

    def _receive_batch(self, batch):
        """A batch: its envelopes in order (see the spec)."""
        if _CONNECTED is None:
            _load()
        _run_batch(self, batch)

    def _dispatch(self, event, args, ack):
        """Run the handlers of a client event; the first one answers ``ack``."""
        if _CONNECTED is None:
            _load()
        _run(self, event, args, ack)

    def _run_handlers(self, handlers, arguments, ack):
        """Run the handlers of one client event in order; the first one answers ``ack``."""
        if _CONNECTED is None:
            _load()
        _run_all(self, handlers, None, arguments, ack)

    # ------------------------------------------------------------ frames out

    def emit(self, event, *args):
        """Send ``event`` with ``args`` to this client; DROPPED when it is not connected."""
        if _CONNECTED is None:
            _load()
        if self._pid is not None:
            return self._emit_logged(event, args)
        if self._state is not _CONNECTED:
            _check_emit_name(event)
            return _DROPPED
        if self._codec is not None:
            return self._emit_encoded(event, args)
        return _write_frame(self, event_frame_of(event, args), False)

    def send_frame(self, frame, bint volatile=False):
        """Write a ready-made frame (see the spec); DROPPED until the socket is connected."""
        if _CONNECTED is None:
            _load()
        if self._state is not _CONNECTED:
            return _DROPPED
        return _write_frame(self, frame, volatile)

    def _write(self, frame, bint volatile=False):
        """Write a frame to the WebSocket and count it."""
        if _CONNECTED is None:
            _load()
        return _write_frame(self, frame, volatile)


# The core's C-level helpers are functions, not cdef methods: a class with cdef methods carries a
# pointer to its method table in every instance (8 bytes per connection).
cdef int _run(ConnectionCore self, str event, args, ack) except -1:
    if (len(event) and event[0] == "$") or event in _reserved:
        if event == "$ping":
            self.send_frame(_PONG_FRAME if not args else _pong_frame(args))
            return 0
        self._refuse(event, ack)
        return 0
    table = self._shared
    shared = (<dict> table).get(event) if table else None
    own = self._handlers
    handlers = own.get(event) if own is not None else None
    if handlers is None:
        if shared is None:
            if ack is not None:
                self._send_ack_error(ack, f"no handler for event {event!r}")
            return 0
        _run_all(self, shared, self, args, ack)  # a shared handler takes the socket first
        return 0
    if shared is not None:
        _run_all(self, shared, self, args, ack)
        ack = None
    _run_all(self, handlers, None, args, ack)
    return 0


cdef int _run_batch(ConnectionCore self, list batch) except -1:
    if not self._admit_batch(len(batch)):
        return 0
    for envelope in batch:
        if type(envelope) is tuple:
            event, args, ack = <tuple> envelope
            _run(self, event, args, ack)
        else:
            self._envelope(envelope)
        if self._state is not _CONNECTED or not _open(<WebSocketCore?> self._ws):
            break
    return 0


cdef bint _open(WebSocketCore ws):
    """The WebSocket's ``open``, read in C (its engine is the compiled one, as in send_frame_of)."""
    conn = ws._conn
    return conn is not None and (<WebSocketConnection?> conn)._state == OPEN


cdef int _run_all(ConnectionCore self, handlers, socket, args, ack) except -1:
    """PyConnectionCore._run_handlers with ``socket`` before ``args`` (a list or a tuple) when it
    is not None: the arguments are passed from where they are, with no tuple built for them."""
    if type(args) is not list and type(args) is not tuple:
        args = list(args)  # any other sequence, read by index below
    cdef Py_ssize_t count = PySequence_Fast_GET_SIZE(args) + (socket is not None)
    cdef HandlerCore described
    for handler in handlers:
        try:
            described = <HandlerCore?> handler  # its description, read as C values
            if described.is_async or count < described.min_args or count > described.most_args:
                result = _invoke(handler, (socket, *args) if socket is not None else args)
            else:
                try:
                    result = _call(described.fn, socket, args, count)
                except _CancelledError as exc:
                    raise _HandlerCancelled() from exc
                if type(result) is _CoroutineType:
                    result = _run_started(result)
        except Exception as exc:
            self._handler_failed(exc, ack)
            ack = None
            continue
        if type(result) is _Suspended:
            self._host._handler_tasks.add(result.task)
            result.task.add_done_callback(_partial(self._handler_finished, ack))
        elif ack is not None:
            if self._codec is None:
                try:
                    frame = ack_frame_of(ack, [result])
                except TypeError:
                    self._send_ack(ack, result)
                else:
                    if self._state is _CONNECTED:
                        _write_frame(self, frame, False)
            else:
                self._send_ack(ack, result)
        ack = None
    return 0


cdef enum:
    _MAX_STACK_ARGS = 8  # arguments passed from a C array; more go through a tuple


cdef object _call(fn, socket, args, Py_ssize_t count):
    """``fn(socket, *args)`` (``fn(*args)`` when ``socket`` is None) by vectorcall, the arguments
    read from where they are (up to eight; more go through a tuple)."""
    if count > _MAX_STACK_ARGS:
        return fn(socket, *args) if socket is not None else fn(*args)
    # stack[0] is free for the callee (PY_VECTORCALL_ARGUMENTS_OFFSET).
    cdef PyObject* stack[_MAX_STACK_ARGS + 1]
    cdef Py_ssize_t first = 1
    cdef Py_ssize_t index
    if socket is not None:
        stack[1] = <PyObject*> socket
        first = 2
    for index in range(PySequence_Fast_GET_SIZE(args)):
        stack[first + index] = PySequence_Fast_GET_ITEM(args, index)
    return PyObject_Vectorcall(fn, stack + 1, <size_t> count | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)


cdef object _write_frame(ConnectionCore self, frame, bint volatile):
    # The WebSocket's core is the compiled one (this module cannot be imported without it).
    status = send_frame_of(<WebSocketCore?> self._ws, frame, volatile)
    cdef MessageCounters stats = self._stats
    if status is not _DROPPED:
        stats.messages_out += 1
        # Two statements: in a conditional expression both sides would be Python ints.
        if type(frame) is bytes:
            stats.bytes_out += len(<bytes> frame)
        else:
            stats.bytes_out += frame.last_size
    elif volatile:
        stats.volatile_dropped += 1
    return status
