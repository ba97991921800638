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
from libc.string cimport memcpy

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


cdef int _load() except -1:
    global _json_dumps, _valid_names, _check_emit_name, _py_event_frame, _py_ack_frame
    global _json_loads, _json_error, _decode_text, _decode_binary, _max_ack_id
    from nanosocket.protocol import envelope

    _json_loads = envelope._json_loads
    _json_error = envelope._JSONDecodeError
    _decode_text = envelope.decode_text
    _decode_binary = envelope.decode_binary
    _max_ack_id = envelope.MAX_ACK_ID
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


def event_frame(event, args):
    """The server frame of ``event`` with ``args`` (text JSON, or binary msgpack when an argument
    holds bytes); an invalid emit name raises ValueError, an unencodable argument TypeError."""
    if _json_dumps is None:
        _load()
    if type(event) is not str or event not in _valid_names:
        _check_emit_name(event)
    try:
        payload = _json_dumps({"event": event, "data": args})
    except TypeError:
        # Bytes in the arguments (msgpack), or a value neither codec takes: the spec decides.
        return _py_event_frame(event, args)
    return _text_frame(payload)


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


def decode_event(message):
    """Decode a frame and sort it: ``(event, args, ack)`` for an event envelope that can be
    dispatched as it is, else the decoded value itself (see the spec, ``py_decode_event``)."""
    if _json_dumps is None:
        _load()
    if type(message) is str:
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
