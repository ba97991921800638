# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twins of protocol/envelope.py's ``event_frame``, ``ack_frame`` and ``decode_event``
(the pure-Python versions are the spec).

The common case is done here in one call: for an event a validated emit name (one set lookup once
the name has passed ``check_emit_name``), the JSON of the envelope by orjson, and the unmasked
server frame around it, written into one bytes object; for a text frame received, its JSON
decoded and sorted (an event to dispatch, or anything else). Everything else (a name not
validated yet, values JSON cannot encode, malformed JSON, binary frames) is the spec's own Python
code.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_Substring
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)

from ._kernels cimport header_size, write_header

# Bound on first use: protocol/envelope.py imports this module.
cdef object _json_dumps = None
cdef object _valid_names = None
cdef object _check_emit_name = None
cdef object _py_event_frame = None
cdef object _py_ack_frame = None
cdef object _json_loads = None
cdef object _json_error = None
cdef object _decode_text = None
cdef object _decode_binary = None
cdef object _max_ack_id = None
# The JSON before an event's arguments, ``{"event":"<name>","data":``, per valid emit name.
cdef dict _prefixes = {}
cdef Py_ssize_t _MAX_PREFIXES = 4096


cdef int _load() except -1:
    global _json_dumps, _valid_names, _check_emit_name, _py_event_frame, _py_ack_frame
    global _json_loads, _json_error, _decode_text, _decode_binary, _max_ack_id
    from nanosocket.protocol import envelope

    _json_loads = envelope._json_loads
    _json_error = envelope._JSONDecodeError
    _decode_text = envelope.decode_text
    _decode_binary = envelope.decode_binary
    _max_ack_id = envelope.MAX_ACK_ID
    assert _max_ack_id == _MAX_ACK_ID
    _json_dumps = envelope._json_dumps
    _valid_names = envelope._VALID_EMIT_NAMES
    _check_emit_name = envelope.check_emit_name
    _py_event_frame = envelope.py_event_frame
    _py_ack_frame = envelope.py_ack_frame
    return 0


cdef bytes _text_frame(bytes payload):
    """The unmasked, final text frame of ``payload``."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t header = header_size(n)
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header + n)
    cdef unsigned char* out = <unsigned char*> PyBytes_AS_STRING(frame)
    write_header(out, 0x81, n, False)
    memcpy(out + header, PyBytes_AS_STRING(payload), n)
    return frame


cdef bytes _event_prefix(event):
    """``{"event":"<name>","data":`` for a valid emit name (kept for the next emit)."""
    if type(event) is not str or event not in _valid_names:
        _check_emit_name(event)
    envelope = _json_dumps({"event": event, "data": None})
    prefix = envelope[: len(envelope) - 5]  # without the null and the brace
    if len(_prefixes) >= _MAX_PREFIXES:
        _prefixes.clear()
    _prefixes[event] = prefix
    return prefix


def event_frame(event, args):
    """The server frame of ``event`` with ``args`` (text JSON, or binary msgpack when an argument
    holds bytes); an invalid emit name raises ValueError, an unencodable argument TypeError."""
    if _json_dumps is None:
        _load()
    # The envelope's JSON as orjson writes it, without building the envelope: the name's part
    # is kept per name, the arguments are encoded as an array (orjson writes a tuple as one).
    prefix = _prefixes.get(event) if type(event) is str else None
    if prefix is None:
        prefix = _event_prefix(event)
    try:
        data = _json_dumps(args)
    except TypeError:
        # Bytes in the arguments (msgpack), or a value neither codec takes: the spec decides.
        return _py_event_frame(event, args)
    cdef Py_ssize_t head = PyBytes_GET_SIZE(prefix)
    cdef Py_ssize_t body = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t n = head + body + 1
    cdef Py_ssize_t header = header_size(n)
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header + n)
    cdef unsigned char* out = <unsigned char*> PyBytes_AS_STRING(frame)
    write_header(out, 0x81, n, False)
    memcpy(out + header, PyBytes_AS_STRING(prefix), head)
    memcpy(out + header + head, PyBytes_AS_STRING(data), body)
    out[header + n - 1] = 0x7D  # }
    return frame


def ack_frame(ack, results):
    """The server frame of the answer ``results`` to the request ``ack`` (text JSON, or binary
    msgpack when a result holds bytes); an unencodable result raises TypeError."""
    if _json_dumps is None:
        _load()
    try:
        payload = _json_dumps({"ack": ack, "data": results})
    except TypeError:
        return _py_ack_frame(ack, results)
    return _text_frame(payload)


cdef Py_ssize_t _EVENT_KEY = 10  # len('{"event":"')
cdef Py_ssize_t _DATA_KEY = 9  # len('","data":')
cdef Py_ssize_t _ACK_KEY = 7  # len(',"ack":')
cdef long long _MAX_ACK_ID = 9007199254740991  # envelope.MAX_ACK_ID (checked in _load)


cdef object _plain_event(str message):
    """``(event, args, ack)`` when ``message`` is exactly ``{"event":"<name>","data":[...]}``,
    or the same with ``,"ack":<id>`` before the brace, in ASCII and the name without escapes:
    only the arguments are decoded (no dict, no keys). None for anything else, which the
    general path decodes."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(message)
    if n < _EVENT_KEY + 1 + _DATA_KEY + 3 or not PyUnicode_IS_ASCII(message):
        return None
    cdef const char* text = <const char*> PyUnicode_DATA(message)
    if memcmp(text, b'{"event":"', _EVENT_KEY) != 0 or text[n - 1] != b"}":
        return None
    cdef Py_ssize_t end = _EVENT_KEY
    cdef char c
    while end < n:
        c = text[end]
        if c == b'"':
            break
        if c == b"\\" or c < 0x20:
            return None  # escapes and control characters: the general path's
        end += 1
    cdef Py_ssize_t start = end + _DATA_KEY  # where the arguments begin
    if end == _EVENT_KEY or start + 2 >= n or memcmp(text + end, b'","data":', _DATA_KEY) != 0:
        return None
    if text[start] != b"[":
        return None
    # The arguments end before the brace, or before an ack id (digits, no leading zero).
    cdef Py_ssize_t stop = n - 1
    cdef long long ack = -1
    cdef Py_ssize_t digit = stop
    if text[stop - 1] != b"]":
        while digit > start and b"0" <= text[digit - 1] <= b"9" and stop - digit < 16:
            digit -= 1
        if digit == stop or (text[digit] == b"0" and stop - digit > 1):
            return None
        if digit - _ACK_KEY <= start or memcmp(text + digit - _ACK_KEY, b',"ack":', _ACK_KEY) != 0:
            return None
        ack = 0
        for i in range(digit, stop):
            ack = ack * 10 + (text[i] - 48)
        if ack > _MAX_ACK_ID:
            return None
        stop = digit - _ACK_KEY
        if text[stop - 1] != b"]":
            return None
    try:
        args = _json_loads(PyUnicode_Substring(message, start, stop))
    except _json_error:
        return None  # not one array (another key follows, or malformed): the general path's
    if type(args) is not list:
        return None
    return PyUnicode_Substring(message, _EVENT_KEY, end), args, (None if ack < 0 else ack)


def decode_event(message):
    """Decode a frame and sort it: ``(event, args, ack)`` for an event envelope that can be
    dispatched as it is, else the decoded value itself (see the spec, ``py_decode_event``)."""
    if _json_dumps is None:
        _load()
    if type(message) is str:
        plain = _plain_event(<str> message)
        if plain is not None:
            return plain
        try:
            decoded = _json_loads(message)
        except _json_error:
            return _decode_text(message)  # raises the spec's InvalidPayload
    else:
        decoded = _decode_binary(message)
    if type(decoded) is not dict:
        return decoded
    cdef dict envelope = <dict> decoded
    event = envelope.get("event")
    args = envelope.get("data")
    if type(event) is str and type(args) is list and len(<str> event) and "\x00" not in <str> event:
        ack = envelope.get("ack")
        if ack is None:
            if "ack" not in envelope and (len(envelope) == 2 or "mid" not in envelope):
                return event, args, None
        elif type(ack) is int and 0 <= ack <= _max_ack_id and (len(envelope) == 3 or "mid" not in envelope):
            return event, args, ack
    return decoded
