# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of protocol/websocket.py's connection state machine.

The pure-Python ``PyWebSocketConnection`` there is the spec: this class has the same constructor,
attributes and methods, makes the same checks in the same order, and closes with the same codes
and reasons. What is compiled:

- the frame loop: header parse, minimal-length and limit checks on the header alone, unmasking
  eight bytes at a time straight into the message's own object (a str for ASCII text, bytes,
  or the reassembly bytearray of a fragmented message);
- UTF-8 validation of fragmented text: a byte-wise automaton of Unicode table 3-7 that fails on
  the first fragment after which no valid continuation exists, as ``check_utf8_chunk`` does
  (single-frame text is validated by the stdlib decoder that builds the str, as in the spec),
  and of a partial text frame's bytes as they arrive, so that it fails before its end has come;
- the output: frames are written into one bytes buffer of our own, which ``data_to_send`` hands
  over without a join (a lone ready-made frame, such as a broadcast frame, is handed over as is).

permessage-deflate (the Python ``PerMessageDeflate`` objects), close payloads (``parse_close``,
``encode_close``) and exceptions are the spec's own Python code.
"""

cimport cython
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_FromStringAndSize,
    PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8, PyUnicode_GET_LENGTH
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memset

from ._kernels cimport header_size, mask_copy, write_header

import os

from nanosocket.errors import InvalidPayload, PayloadTooBig, ProtocolError, connection_closed
from nanosocket.protocol.deflate import Inflation
from nanosocket.protocol.frames import CloseCode, encode_close, parse_close, py_build_frame


cdef extern from "Python.h":
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_alloc  # how many bytes its allocation holds (one more than it can use)
    # The output buffer is a bytes object of our own, grown in place while nobody else sees it.
    int _PyBytes_Resize(PyObject** data, Py_ssize_t size) except -1
    PyObject* _new_bytes "PyBytes_FromStringAndSize" (const char* data, Py_ssize_t size) except NULL
    char* _bytes_data "PyBytes_AS_STRING" (PyObject* data)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE" (PyObject* data)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object text)
    bint PyUnicode_IS_ASCII(object text)
    const Py_ssize_t PY_SSIZE_T_MAX
    const long long LLONG_MAX


# The state values (OPEN, CLOSING, CLOSED) are declared in _websocket.pxd.
cdef enum:
    # Opcodes (protocol/frames.py).
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

cdef object _ABNORMAL = CloseCode.ABNORMAL
cdef object _NORMAL = CloseCode.NORMAL
cdef object _NO_STATUS = CloseCode.NO_STATUS

# State members by value, filled on first use (protocol/websocket.py imports this module).
cdef tuple _STATES = None


cdef int _load_states() except -1:
    global _STATES
    from nanosocket.protocol.websocket import State

    _STATES = (None, State.OPEN, State.CLOSING, State.CLOSED)
    return 0


# ------------------------------------------------------------------------- mask keys

# Client mask keys come from os.urandom, 64 at a time; a forked child starts over.
cdef unsigned char _key_pool[256]
cdef Py_ssize_t _key_pos = 256


cdef int _next_mask_key(unsigned char* key) except -1:
    global _key_pos
    if _key_pos > 252:
        fresh = os.urandom(256)
        memcpy(_key_pool, PyBytes_AS_STRING(fresh), 256)
        _key_pos = 0
    memcpy(key, _key_pool + _key_pos, 4)
    _key_pos += 4
    return 0


def _forget_mask_keys():
    global _key_pos
    _key_pos = 256


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_mask_keys)


# ------------------------------------------------------------------------------ limits


@cython.final
cdef class _Limits:
    """An options object's limits as C integers (one for every connection with that options)."""

    # Its fields are declared in _websocket.pxd.


cdef _Limits _last_limits = None


cdef long long _clamp(object value) except? -1:
    # A limit beyond 2**63 - 1 is the same as 2**63 - 1: no frame length is larger.
    return LLONG_MAX if value > LLONG_MAX else value


cdef _Limits _limits_for(object options):
    global _last_limits
    cdef _Limits limits = _last_limits
    if limits is not None and limits.options is options:
        return limits
    limits = _Limits.__new__(_Limits)
    limits.options = options
    limits.max_payload = _clamp(options.max_payload_length)
    limits.max_compressed = _clamp(options.max_compressed_size)
    limits.max_fragments = _clamp(options.max_fragments)
    limits.max_control = _clamp(options.max_control_payload)
    _last_limits = limits
    return limits


# ------------------------------------------------------------------------------- UTF-8


cdef inline bint _utf8_feed(Utf8State* state, const unsigned char* data, Py_ssize_t n) noexcept:
    """Go on validating a UTF-8 stream with ``data``; False as soon as it cannot be valid.

    The state is the number of continuation bytes still expected and the range of the next one
    (only the first after a lead byte has a range of its own: Unicode table 3-7).
    """
    cdef int left = state.left
    cdef unsigned char low = state.low
    cdef unsigned char high = state.high
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef unsigned char c
    while i < n:
        if left == 0:
            while i + 8 <= n:
                memcpy(&word, data + i, 8)
                if word & 0x8080808080808080ULL:
                    break
                i += 8
            if i == n:
                break
            c = data[i]
            i += 1
            if c < 0x80:
                continue
            if c < 0xC2:
                return False
            if c < 0xE0:
                left = 1
                low = 0x80
                high = 0xBF
            elif c < 0xF0:
                left = 2
                low = 0xA0 if c == 0xE0 else 0x80
                high = 0x9F if c == 0xED else 0xBF
            elif c < 0xF5:
                left = 3
                low = 0x90 if c == 0xF0 else 0x80
                high = 0x8F if c == 0xF4 else 0xBF
            else:
                return False
        else:
            c = data[i]
            i += 1
            if c < low or c > high:
                return False
            left -= 1
            low = 0x80
            high = 0xBF
    state.left = left
    state.low = low
    state.high = high
    return True


cdef object _text_of(const unsigned char* src, Py_ssize_t n, const unsigned char* key):
    """The text of a payload (unmasked with ``key`` unless NULL); None when it is not UTF-8."""
    if n == 0:
        return ""
    # Most text is ASCII: unmask straight into a new str, checking the bytes on the way.
    text = PyUnicode_New(n, 127)
    cdef unsigned char* out = <unsigned char*> PyUnicode_DATA(text)
    cdef unsigned char no_mask[4]
    if key == NULL:
        memset(no_mask, 0, 4)
        key = no_mask
    if not mask_copy(out, src, n, key):
        return text
    try:
        return PyUnicode_DecodeUTF8(<char*> out, n, NULL)
    except UnicodeDecodeError:
        return None


cdef inline bytes _bytes_of(const unsigned char* src, Py_ssize_t n, const unsigned char* key):
    """A payload as bytes, unmasked with ``key`` unless NULL."""
    cdef bytes data = PyBytes_FromStringAndSize(NULL, n)
    if n:
        if key != NULL:
            mask_copy(<unsigned char*> PyBytes_AS_STRING(data), src, n, key)
        else:
            memcpy(PyBytes_AS_STRING(data), src, n)
    return data


# -------------------------------------------------------------------------- connection


cdef class WebSocketConnection:
    """One WebSocket connection after its opening handshake, as a state machine.

    ``client`` selects the side: a client masks what it sends and refuses masked frames; a
    server requires masked frames and sends unmasked ones (so one broadcast frame fits all).
    """

    # Its fields are declared in _websocket.pxd (the transport core reads them in C).

    def __init__(self, handler, options, *, client, deflate=None):
        if _STATES is None:
            _load_states()
        self.handler = handler
        self._limits = _limits_for(options)
        self._client = 1 if client else 0
        self._state = OPEN
        self.close_code = None
        self.close_reason = ""
        self.deflate = deflate
        if self._out != NULL or self._pending is not None or self._msg_opcode:
            # __init__ called again on a used connection: start over, as the spec does.
            Py_XDECREF(self._out)
            self._out = NULL
            self._out_len = 0
            self._pending = None
            self._need = 0
            self._msg_opcode = 0
            self._msg_parts = None
            self._msg_frames = 0
            self._inflation = None

    def __dealloc__(self):
        Py_XDECREF(self._out)
        self._out = NULL

    # ------------------------------------------------------------------ attributes

    @property
    def options(self):
        return self._limits.options

    @options.setter
    def options(self, options):
        self._limits = _limits_for(options)

    @property
    def client(self):
        return self._client != 0

    @client.setter
    def client(self, client):
        self._client = 1 if client else 0

    @property
    def state(self):
        return _STATES[self._state]

    @state.setter
    def state(self, state):
        self._state = _STATES.index(state)

    @property
    def closed(self):
        """Whether the connection reached CLOSED (no frame goes in or out any more)."""
        return self._state == CLOSED

    @property
    def pending_bytes(self):
        """How many bytes are queued for the peer (not yet taken by ``data_to_send``)."""
        return self._out_len

    @property
    def _buf(self):
        """The bytes of a partial frame, while one is pending (None otherwise)."""
        return self._pending

    # ----------------------------------------------------------------------- input

    def receive_data(self, data):
        """Feed bytes read from the peer; handler calls happen before this returns."""
        cdef Py_buffer view
        if type(data) is bytes:
            receive_of(self, <const unsigned char*> PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return
        # A bytearray (the caller's) cannot be resized while we read it.
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            receive_of(self, <const unsigned char*> view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def receive_eof(self):
        """The peer closed the TCP connection (or it dropped)."""
        if self._state != CLOSED:
            _finish(self, _ABNORMAL, "")
        self._pending = None
        self._msg_parts = None
        self._inflation = None

    # ---------------------------------------------------------------------- output

    def data_to_send(self):
        """Return (and forget) the bytes queued for the peer, as one buffer."""
        return data_to_send_of(self)

    def send_text(self, text):
        """Queue one text message (compressed when permessage-deflate is on and it is big enough)."""
        if type(text) is str and PyUnicode_IS_ASCII(text):
            if self.deflate is None:
                _require_open(self)
                _queue_frame(self, 0x80 | TEXT, <const unsigned char*> PyUnicode_DATA(text),
                             PyUnicode_GET_LENGTH(text))
                return
            payload = PyBytes_FromStringAndSize(<char*> PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))
        elif type(text) is str:
            payload = PyUnicode_AsUTF8String(text)
        else:
            payload = text.encode("utf-8")
        if self.deflate is None:
            _require_open(self)
            _queue_payload(self, TEXT, payload, True)
        else:
            _send_compressible(self, TEXT, payload)

    def send_binary(self, data):
        """Queue one binary message (compressed when permessage-deflate is on and it is big enough)."""
        if self.deflate is not None:
            _send_compressible(self, BINARY, bytes(data))
            return
        if type(data) is bytearray:
            _require_open(self)
            _queue_frame(self, 0x80 | BINARY, <const unsigned char*> PyByteArray_AS_STRING(data),
                         PyByteArray_GET_SIZE(data))
            return
        payload = data if type(data) is bytes else bytes(data)
        _require_open(self)
        _queue_frame(self, 0x80 | BINARY, <const unsigned char*> PyBytes_AS_STRING(payload),
                     PyBytes_GET_SIZE(payload))

    def send_message(self, message):
        """Queue a server message prepared for many peers: the frame that fits this connection
        (compressed when it negotiated permessage-deflate and the message is big enough)."""
        _require_open(self)
        if self._client:
            raise RuntimeError("a client masks its frames: OutgoingMessage is for servers")
        _queue_object(self, message.frame_for(self.deflate))

    def send_frame(self, opcode, payload, *, fin=True):
        """Queue one data frame (``fin=False`` and CONTINUATION frames send a message in parts)."""
        _require_open(self)
        _queue_payload(self, opcode, payload, fin)

    def send_ping(self, payload=b""):
        """Queue a ping (at most 125 bytes of payload)."""
        _require_open(self)
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        _queue_payload(self, PING, payload, True)

    def send_pong(self, payload=b""):
        """Queue an unsolicited pong (a heartbeat that expects no answer)."""
        _require_open(self)
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        _queue_payload(self, PONG, payload, True)

    def send_raw(self, frame):
        """Queue a ready-made frame (a server's broadcast frame, built once for all recipients)."""
        send_raw_of(self, frame)

    def send_close(self, code=_NORMAL, reason=""):
        """Start the closing handshake; a no-op unless the connection is open."""
        if self._state != OPEN:
            return
        _queue_close(self, encode_close(code, reason))
        self._state = CLOSING
        self.close_code = code
        self.close_reason = reason

    def fail(self, code, reason=""):
        """Fail the connection (RFC 6455 §7.1.7): send a close frame if we can, then CLOSED."""
        if self._state == CLOSED:
            return
        if self._state == OPEN:
            _queue_close(self, encode_close(code, reason))
        _finish(self, code, reason)


# ------------------------------------------------------------------------ input in C


cdef int receive_of(WebSocketConnection self, const unsigned char* data, Py_ssize_t n) except -1:
    """WebSocketConnection.receive_data of the ``n`` bytes at ``data``, which the compiled
    transport core calls in C: nothing here keeps a pointer into them once it returns.

    A pending frame whose header is complete holds its payload unmasked (its header keeps the
    key, for the bytes still to come): each read's bytes are unmasked as they are appended, which
    tells in the same pass whether they are ASCII, so that a text frame is checked as UTF-8 as
    it arrives without a second pass over it. Once the frame is complete its key is zeroed, and
    the frame loop's unmasking of it is a copy.
    """
    if self._state == CLOSED:
        return 0
    cdef bytearray buf = self._pending
    cdef Py_ssize_t size, take, pos, header_length
    if buf is not None:
        size = PyByteArray_GET_SIZE(buf)
        header_length = _pending_header_length(buf)
        if header_length:
            # The pending frame's header is complete (its need is the whole frame's): it takes
            # only the bytes it lacks, and the rest of the read is parsed where it is instead of
            # being copied behind them.
            take = self._need - size
            if take > n:
                take = n
            if not _append_payload(self, buf, header_length, data, take):
                return 0
            if size + take < self._need:
                return 0
            _forget_key(buf, header_length)
            self._pending = None
            if _parse_or_fail(self, <const unsigned char*> PyByteArray_AS_STRING(buf), size + take) < 0:
                return 0
            if self._state == CLOSED:
                return 0
            data += take
            n -= take
        else:
            _append(buf, data, n)
            if size + n < self._need:
                return 0
            # Nobody else sees the buffer while it is parsed: it cannot be resized under us.
            self._pending = None
            pos = _parse_or_fail(self, <const unsigned char*> PyByteArray_AS_STRING(buf), size + n)
            if 0 <= pos < size + n and self._state != CLOSED:
                self._pending = buf if pos == 0 else PyByteArray_FromStringAndSize(
                    PyByteArray_AS_STRING(buf) + pos, size + n - pos
                )
                _pending_started(self)
            return 0
    pos = _parse_or_fail(self, data, n)
    if 0 <= pos < n and self._state != CLOSED:
        self._pending = PyByteArray_FromStringAndSize(<char*> data + pos, n - pos)
        _pending_started(self)
    return 0


cdef Py_ssize_t _pending_header_length(bytearray buf) noexcept:
    """The length of the pending frame's header, or 0 while it is not complete (the frame loop
    has checked it when it is)."""
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(buf)
    if size < 2:
        return 0
    cdef unsigned char second = <unsigned char> PyByteArray_AS_STRING(buf)[1]
    cdef Py_ssize_t header_length = 2
    if second & 0x7F == 126:
        header_length = 4
    elif second & 0x7F == 127:
        header_length = 10
    if second & 0x80:
        header_length += 4
    return header_length if size >= header_length else 0


cdef int _grow(bytearray buf, Py_ssize_t size, long long cap) except -1:
    """Resize ``buf`` to ``size`` bytes (more than it has). When that needs a new allocation,
    room for up to as many bytes again (never past ``cap``) comes with it: a buffer grown a read
    at a time is then copied a bounded number of times per byte, not once per read (a bytearray
    grown by more than an eighth is allocated to the byte), and holds at most twice what it
    was sent."""
    cdef long long room
    if size >= (<PyByteArrayObject*> buf).ob_alloc:
        room = 2 * <long long> size
        if room > cap:
            room = cap
        if room > size:
            # Allocated to the byte, then shrunk by less than half: CPython keeps the room.
            PyByteArray_Resize(buf, <Py_ssize_t> room)
    PyByteArray_Resize(buf, size)
    return 0


cdef inline int _append(bytearray buf, const unsigned char* data, Py_ssize_t n) except -1:
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, size + n)
    memcpy(PyByteArray_AS_STRING(buf) + size, data, n)
    return 0


cdef int _pending_started(WebSocketConnection self) except -1:
    """A partial frame was kept: once its header is complete, unmask the payload it has in place,
    and start checking it as UTF-8 if it is text."""
    cdef bytearray buf = self._pending
    cdef Py_ssize_t header_length = _pending_header_length(buf)
    if not header_length:
        return 0
    cdef unsigned char* frame = <unsigned char*> PyByteArray_AS_STRING(buf)
    if _checks_text(self, frame[0]):
        if frame[0] & 0x0F == CONTINUATION:
            self._pending_utf8 = self._utf8
        else:
            self._pending_utf8.left = 0
    cdef unsigned char* payload = frame + header_length
    _unmask_into(self, frame, header_length, payload, PyByteArray_GET_SIZE(buf) - header_length, payload)
    return 0


cdef inline bint _checks_text(WebSocketConnection self, unsigned char first) noexcept:
    """Whether a pending frame starting with ``first`` is text to check as it arrives: open,
    uncompressed, the first frame of a text message or a continuation of one."""
    if self._state != OPEN or first & 0x70:
        return False
    if first & 0x0F == TEXT:
        return True
    return first & 0x0F == CONTINUATION and self._msg_opcode == TEXT and self._inflation is None


cdef bint _append_payload(WebSocketConnection self, bytearray buf, Py_ssize_t header_length,
                          const unsigned char* data, Py_ssize_t n) except -1:
    """Append ``n`` payload bytes to the pending frame, unmasked; False when that failed the
    connection (text that can no longer be valid UTF-8)."""
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(buf)
    _grow(buf, size + n, self._need)
    cdef unsigned char* frame = <unsigned char*> PyByteArray_AS_STRING(buf)
    return _unmask_into(self, frame, header_length, data, n, frame + size)


cdef bint _unmask_into(WebSocketConnection self, const unsigned char* frame, Py_ssize_t header_length,
                       const unsigned char* src, Py_ssize_t n, unsigned char* dst) except -1:
    """Copy ``n`` payload bytes of the pending frame ``frame`` to their place ``dst`` in it
    (``src`` may be ``dst``), unmasked, and check them if it is text; False when that failed the
    connection."""
    if n == 0:
        return True
    cdef unsigned char key[4]
    cdef Py_ssize_t offset = dst - frame - header_length
    cdef int i
    if frame[1] & 0x80:
        # The key byte of payload offset j is key[j % 4]: rotated to start at ``offset``.
        for i in range(4):
            key[i] = frame[header_length - 4 + ((offset + i) & 3)]
    else:
        memset(key, 0, 4)
    cdef bint high = mask_copy(dst, src, n, key)
    if not _checks_text(self, frame[0]) or not (high or self._pending_utf8.left):
        return True
    if _utf8_feed(&self._pending_utf8, dst, n):
        return True
    error = InvalidPayload("text message is not valid UTF-8")
    self.fail(error.close_code, str(error))
    return False


cdef inline void _forget_key(bytearray buf, Py_ssize_t header_length) noexcept:
    """The pending frame is complete and its payload unmasked: zero its key, so that the frame
    loop's unmasking leaves it as it is."""
    cdef unsigned char* frame = <unsigned char*> PyByteArray_AS_STRING(buf)
    if frame[1] & 0x80:
        memset(frame + header_length - 4, 0, 4)


cdef Py_ssize_t _parse_or_fail(WebSocketConnection self, const unsigned char* data, Py_ssize_t end) except -2:
    """_parse, failing the connection on a protocol error (then -1)."""
    try:
        return _parse(self, data, end)
    except ProtocolError as exc:
        self.fail(exc.close_code, str(exc))
        return -1


# ------------------------------------------------------------------------- frame loop


cdef Py_ssize_t _parse(WebSocketConnection self, const unsigned char* data, Py_ssize_t end) except -1:
    """Handle every complete frame in ``data[:end]``; return the offset of the first unparsed byte."""
    cdef _Limits limits = self._limits
    cdef unsigned char expect_mask = 0 if self._client else 0x80
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t avail, header_length, start
    cdef uint64_t wire_length
    cdef long long length
    cdef unsigned char first, second, rsv, opcode
    cdef const unsigned char* key
    cdef int i
    while pos < end:
        avail = end - pos
        if avail < 2:
            self._need = avail + 1
            return pos
        first = data[pos]
        second = data[pos + 1]
        wire_length = second & 0x7F
        header_length = 2
        if wire_length == 126:
            if avail < 4:
                self._need = avail + 1
                return pos
            wire_length = (<uint64_t> data[pos + 2] << 8) | data[pos + 3]
            if wire_length < 126:
                raise ProtocolError("frame length not minimally encoded")
            header_length = 4
        elif wire_length == 127:
            if avail < 10:
                self._need = avail + 1
                return pos
            wire_length = 0
            for i in range(8):
                wire_length = (wire_length << 8) | data[pos + 2 + i]
            if wire_length >> 63:
                raise ProtocolError("frame length has its most significant bit set")
            if wire_length < 65536:
                raise ProtocolError("frame length not minimally encoded")
            header_length = 10
        length = <long long> wire_length
        if second & 0x80:
            header_length += 4
        if avail < header_length:
            self._need = avail + 1
            return pos
        rsv = first & 0x70
        if rsv:
            _check_rsv(self, first)
        if (second & 0x80) != expect_mask:
            raise ProtocolError(
                "server frames must not be masked" if self._client else "client frames must be masked"
            )
        opcode = first & 0x0F
        if opcode >= CLOSE:
            if opcode > PONG:
                raise ProtocolError(f"reserved opcode {<int> opcode:#x}")
            if not first & 0x80:
                raise ProtocolError("fragmented control frame")
            if length > limits.max_control:
                raise ProtocolError("control frame payload too long")
        elif opcode > BINARY:
            raise ProtocolError(f"reserved opcode {<int> opcode:#x}")
        elif self._state == OPEN:
            if rsv:
                _check_compressed_frame(self, length)
            else:
                _check_data_frame(self, opcode, length)
        elif length > (limits.max_compressed if rsv else limits.max_payload):
            # After our close, data frames are discarded unread: only their size matters.
            raise PayloadTooBig(f"message larger than {limits.options.max_payload_length} bytes")
        if length > avail - header_length:
            self._need = (
                header_length + length if length <= PY_SSIZE_T_MAX - header_length else PY_SSIZE_T_MAX
            )
            return pos
        start = pos + header_length
        pos = start + length
        key = data + start - 4 if expect_mask else NULL
        if opcode >= CLOSE:
            _control_frame(self, opcode, _bytes_of(data + start, length, key))
        elif self._state == OPEN:
            if rsv:
                _compressed_frame(self, opcode, first & 0x80, _bytes_of(data + start, length, key))
            else:
                _data_frame(self, opcode, first & 0x80, data + start, length, key)
        if self._state == CLOSED:
            # The peer's close, or a failure from a handler callback: ignore the rest.
            return end
    return pos


cdef int _check_rsv(WebSocketConnection self, unsigned char first) except -1:
    """Reserved bits are set: only RSV1 on the first frame of a compressed message may be."""
    if first & 0x70 != 0x40 or self.deflate is None:
        raise ProtocolError("reserved bits set without a negotiated extension")
    cdef unsigned char opcode = first & 0x0F
    if opcode == CONTINUATION:
        raise ProtocolError("RSV1 set on a continuation frame")
    if opcode >= CLOSE:
        raise ProtocolError("RSV1 set on a control frame")
    return 0


cdef int _check_compressed_frame(WebSocketConnection self, long long length) except -1:
    """Refuse the first frame of a compressed message from its header alone."""
    if self._msg_opcode:
        raise ProtocolError("new message started before the previous one finished")
    if length > self._limits.max_compressed:
        raise PayloadTooBig(f"compressed message larger than {self._limits.options.max_compressed_size} bytes")
    return 0


cdef int _check_data_frame(WebSocketConnection self, unsigned char opcode, long long length) except -1:
    """Refuse a data frame from its header alone, before its payload is read."""
    cdef _Limits limits = self._limits
    cdef Py_ssize_t size
    if opcode == CONTINUATION:
        if not self._msg_opcode:
            raise ProtocolError("continuation frame without a message to continue")
        if self._msg_frames >= limits.max_fragments:
            raise PayloadTooBig(f"message split into more than {limits.options.max_fragments} frames")
        inflation = self._inflation
        if inflation is not None:
            # A compressed message: its wire size is bounded here, its inflated size as it
            # is inflated.
            limit = limits.options.max_compressed_size
            if inflation.compressed_size + length > limit:
                raise PayloadTooBig(f"compressed message larger than {limit} bytes")
            return 0
        parts = self._msg_parts
        size = PyByteArray_GET_SIZE(parts) if parts is not None else 0
        if length > limits.max_payload - size:
            raise PayloadTooBig(f"message larger than {limits.options.max_payload_length} bytes")
    else:
        if self._msg_opcode:
            raise ProtocolError("new message started before the previous one finished")
        if length > limits.max_payload:
            raise PayloadTooBig(f"message larger than {limits.options.max_payload_length} bytes")
    return 0


cdef int _start_utf8(WebSocketConnection self, const unsigned char* data, Py_ssize_t n) except -1:
    self._utf8.left = 0
    if not _utf8_feed(&self._utf8, data, n):
        raise InvalidPayload("text message is not valid UTF-8")
    return 0


cdef int _data_frame(WebSocketConnection self, unsigned char opcode, int fin,
                     const unsigned char* src, Py_ssize_t n, const unsigned char* key) except -1:
    cdef bytearray parts
    cdef bytes inflated
    cdef Py_ssize_t size
    cdef unsigned char* tail
    if opcode != CONTINUATION:
        if fin:
            if opcode == TEXT:
                text = _text_of(src, n, key)
                if text is None:
                    raise InvalidPayload("text message is not valid UTF-8")
                self.handler.text_received(text)
            else:
                self.handler.binary_received(_bytes_of(src, n, key))
            return 0
        parts = PyByteArray_FromStringAndSize(NULL, n)
        if n:
            tail = <unsigned char*> PyByteArray_AS_STRING(parts)
            if key != NULL:
                mask_copy(tail, src, n, key)
            else:
                memcpy(tail, src, n)
        self._msg_opcode = opcode
        self._msg_parts = parts
        self._msg_frames = 1
        if opcode == TEXT:
            _start_utf8(self, <const unsigned char*> PyByteArray_AS_STRING(parts), n)
        return 0
    parts = self._msg_parts
    size = PyByteArray_GET_SIZE(parts)
    inflation = self._inflation
    if inflation is not None:
        inflation.compressed_size += n
        inflated = self.deflate.inflate(
            inflation.decompressor,
            _bytes_of(src, n, key),
            bool(fin),
            self._limits.options.max_payload_length - size,
        )
        n = PyBytes_GET_SIZE(inflated)
        _grow(parts, size + n, self._limits.max_payload)
        memcpy(PyByteArray_AS_STRING(parts) + size, PyBytes_AS_STRING(inflated), n)
    else:
        _grow(parts, size + n, self._limits.max_payload)
        if n:
            tail = <unsigned char*> PyByteArray_AS_STRING(parts) + size
            if key != NULL:
                mask_copy(tail, src, n, key)
            else:
                memcpy(tail, src, n)
    self._msg_frames += 1
    cdef unsigned char message_opcode = self._msg_opcode
    if message_opcode == TEXT:
        if not _utf8_feed(&self._utf8, <const unsigned char*> PyByteArray_AS_STRING(parts) + size, n):
            raise InvalidPayload("text message is not valid UTF-8")
    if not fin:
        return 0
    self._msg_opcode = 0
    self._msg_parts = None
    self._msg_frames = 0
    self._inflation = None
    if message_opcode == TEXT:
        if self._utf8.left:
            self._utf8.left = 0
            raise InvalidPayload("text message ends inside a UTF-8 sequence")
        self.handler.text_received(
            PyUnicode_DecodeUTF8(PyByteArray_AS_STRING(parts), PyByteArray_GET_SIZE(parts), NULL)
        )
    else:
        self.handler.binary_received(bytes(parts))
    return 0


cdef int _compressed_frame(WebSocketConnection self, unsigned char opcode, int fin, bytes payload) except -1:
    """The first frame of a compressed message (RSV1): inflate it, within max_payload_length."""
    deflate = self.deflate
    decompressor = deflate.decompressor()
    cdef bytes data = deflate.inflate(
        decompressor, payload, bool(fin), self._limits.options.max_payload_length
    )
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if fin:
        if opcode == TEXT:
            text = _text_of(<const unsigned char*> PyBytes_AS_STRING(data), n, NULL)
            if text is None:
                raise InvalidPayload("text message is not valid UTF-8")
            self.handler.text_received(text)
        else:
            self.handler.binary_received(data)
        return 0
    self._inflation = Inflation(decompressor, PyBytes_GET_SIZE(payload))
    self._msg_opcode = opcode
    self._msg_parts = PyByteArray_FromStringAndSize(PyBytes_AS_STRING(data), n)
    self._msg_frames = 1
    if opcode == TEXT:
        _start_utf8(self, <const unsigned char*> PyBytes_AS_STRING(data), n)
    return 0


cdef int _control_frame(WebSocketConnection self, unsigned char opcode, bytes payload) except -1:
    if opcode == PING:
        if self._state == OPEN:
            _queue_frame(self, 0x80 | PONG, <const unsigned char*> PyBytes_AS_STRING(payload),
                         PyBytes_GET_SIZE(payload))
        self.handler.ping_received(payload)
    elif opcode == PONG:
        self.handler.pong_received(payload)
    else:
        code, reason = parse_close(payload)
        if self._state == OPEN:
            # Echo the peer's code; an empty close is answered with an empty close.
            _queue_close(self, encode_close(None if code == _NO_STATUS else code))
        _finish(self, code, reason)
    return 0


cdef int _finish(WebSocketConnection self, object code, object reason) except -1:
    self._state = CLOSED
    self.close_code = code
    self.close_reason = reason
    self._pending = None
    self._msg_parts = None
    self._inflation = None
    return 0


cdef int _require_open(WebSocketConnection self) except -1:
    if self._state != OPEN:
        raise connection_closed(self.close_code or _ABNORMAL, self.close_reason)
    return 0


cdef int _send_compressible(WebSocketConnection self, unsigned char opcode, bytes payload) except -1:
    deflate = self.deflate
    if PyBytes_GET_SIZE(payload) < deflate.threshold:
        _require_open(self)
        _queue_frame(self, 0x80 | opcode, <const unsigned char*> PyBytes_AS_STRING(payload),
                     PyBytes_GET_SIZE(payload))
        return 0
    _require_open(self)
    # Compressed first, then masked (RFC 7692 §6): RSV1 marks the message as compressed.
    cdef bytes compressed = deflate.compress(payload)
    _queue_frame(self, 0x80 | 0x40 | opcode, <const unsigned char*> PyBytes_AS_STRING(compressed),
                 PyBytes_GET_SIZE(compressed))
    return 0


# ------------------------------------------------------------------------------ output


cdef unsigned char* _reserve(WebSocketConnection self, Py_ssize_t extra) except NULL:
    """Room for ``extra`` more bytes at the end of the output; returns where they go."""
    cdef PyObject* out = self._out
    cdef Py_ssize_t used = self._out_len
    cdef Py_ssize_t size = used + extra
    cdef PyObject* fresh
    if out == NULL:
        # Exactly the size of the first frame: a lone frame is handed over without a copy.
        out = _new_bytes(NULL, extra)
        self._out = out
        self._out_owned = 1
        return <unsigned char*> _bytes_data(out)
    if not self._out_owned:
        # A caller's frame waits alone: continue in a buffer of our own.
        fresh = _new_bytes(NULL, size + (size >> 1))
        memcpy(_bytes_data(fresh), _bytes_data(out), used)
        self._out = fresh
        self._out_owned = 1
        Py_XDECREF(out)
    elif _bytes_size(out) < size:
        try:
            _PyBytes_Resize(&out, size + (size >> 1))
        finally:
            # On failure the old buffer is gone (out is NULL): the queued frames are lost with it.
            self._out = out
            if out == NULL:
                self._out_len = 0
    return <unsigned char*> _bytes_data(self._out) + used


cdef int _queue_frame(WebSocketConnection self, int first, const unsigned char* payload,
                      Py_ssize_t n) except -1:
    """Queue one frame of ``payload`` (masked when we are a client)."""
    cdef Py_ssize_t header = header_size(n)
    cdef unsigned char key[4]
    cdef unsigned char* out
    if self._client:
        _next_mask_key(key)
        out = _reserve(self, header + 4 + n)
        out += write_header(out, first, n, True)
        memcpy(out, key, 4)
        mask_copy(out + 4, payload, n, key)
        self._out_len += header + 4 + n
    else:
        out = _reserve(self, header + n)
        write_header(out, first, n, False)
        if n:
            memcpy(out + header, payload, n)
        self._out_len += header + n
    return 0


cdef int _queue_close(WebSocketConnection self, bytes payload) except -1:
    _queue_frame(self, 0x80 | CLOSE, <const unsigned char*> PyBytes_AS_STRING(payload),
                 PyBytes_GET_SIZE(payload))
    return 0


cdef int _queue_payload(WebSocketConnection self, object opcode, object payload, object fin) except -1:
    """Queue a frame of ``payload``: bytes and bytearray here, anything else as the spec builds it."""
    cdef int first
    if type(opcode) is int and 0 <= opcode <= 255:
        first = <int> opcode | (0x80 if fin else 0)
        if type(payload) is bytes:
            return _queue_frame(self, first, <const unsigned char*> PyBytes_AS_STRING(payload),
                                PyBytes_GET_SIZE(payload))
        if type(payload) is bytearray:
            return _queue_frame(self, first, <const unsigned char*> PyByteArray_AS_STRING(payload),
                                PyByteArray_GET_SIZE(payload))
    cdef unsigned char key[4]
    mask_key = None
    if self._client:
        _next_mask_key(key)
        mask_key = PyBytes_FromStringAndSize(<char*> key, 4)
    return _queue_object(self, py_build_frame(opcode, payload, fin=fin, mask_key=mask_key))


cdef object data_to_send_of(WebSocketConnection self):
    """WebSocketConnection.data_to_send, which the compiled transport core calls in C."""
    cdef PyObject* out = self._out
    if out == NULL:
        return b""
    cdef Py_ssize_t used = self._out_len
    self._out = NULL
    self._out_len = 0
    if self._out_owned and _bytes_size(out) != used:
        _PyBytes_Resize(&out, used)
    data = <object> out
    Py_XDECREF(out)
    return data


cdef int send_raw_of(WebSocketConnection self, object frame) except -1:
    """WebSocketConnection.send_raw, which the compiled transport core calls in C."""
    _require_open(self)
    _queue_object(self, frame)
    return 0


cdef int _queue_object(WebSocketConnection self, object frame) except -1:
    """Queue a ready-made frame; alone, a bytes object is handed over as it is."""
    cdef Py_buffer view
    cdef unsigned char* out
    if type(frame) is bytes:
        if PyBytes_GET_SIZE(frame) == 0 and self._out != NULL:
            return 0
        if self._out == NULL:
            Py_XINCREF(<PyObject*> frame)
            self._out = <PyObject*> frame
            self._out_owned = 0
            self._out_len = PyBytes_GET_SIZE(frame)
            return 0
        out = _reserve(self, PyBytes_GET_SIZE(frame))
        memcpy(out, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame))
        self._out_len += PyBytes_GET_SIZE(frame)
        return 0
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    try:
        if view.len:
            out = _reserve(self, view.len)
            memcpy(out, view.buf, view.len)
            self._out_len += view.len
    finally:
        PyBuffer_Release(&view)
    return 0
