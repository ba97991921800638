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
from cpython.list cimport PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLong
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.sequence cimport PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from cpython.unicode cimport PyUnicode_GET_LENGTH, PyUnicode_Substring
from libc.stdio cimport snprintf
from libc.string cimport memcmp, memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object text)
    void* PyUnicode_DATA(object text)
    long long PyLong_AsLongLongAndOverflow(object number, int* overflow) except? -1

from ._kernels cimport header_size, plain_span, write_header

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
cdef Py_ssize_t _max_batch = 0
# The JSON before an event's arguments, ``{"event":"<name>","data":``, per valid emit name.
cdef dict _prefixes = {}
cdef Py_ssize_t _MAX_PREFIXES = 4096


cdef int _load() except -1:
    global _json_dumps, _valid_names, _check_emit_name, _py_event_frame, _py_ack_frame
    global _json_loads, _json_error, _decode_text, _decode_binary, _max_ack_id, _max_batch
    from nanosocket.protocol import envelope

    _json_loads = envelope._json_loads
    _json_error = envelope._JSONDecodeError
    _decode_text = envelope.decode_text
    _decode_binary = envelope.decode_binary
    _max_ack_id = envelope.MAX_ACK_ID
    assert _max_ack_id == _MAX_ACK_ID
    _max_batch = envelope.MAX_BATCH
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
    return event_frame_of(event, args)


cdef object event_frame_of(event, args):
    """``event_frame``, which the compiled connection core calls in C."""
    if _json_dumps is None:
        _load()
    # The envelope's JSON as orjson writes it, without building the envelope: the name's part
    # is kept per name, the arguments are encoded as an array (orjson writes a tuple as one).
    prefix = _prefixes.get(event) if type(event) is str else None
    if prefix is None:
        prefix = _event_prefix(event)
    # Arguments that are all plain scalars are written here; anything else is orjson's.
    cdef Py_ssize_t body = _plain_size(args) if type(args) is tuple or type(args) is list else -1
    data = None
    if body < 0:
        try:
            data = _json_dumps(args)
        except TypeError:
            # Bytes in the arguments (msgpack), or a value neither codec takes: the spec decides.
            return _py_event_frame(event, args)
        body = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t head = PyBytes_GET_SIZE(prefix)
    cdef Py_ssize_t n = head + body + 1
    cdef Py_ssize_t header = header_size(n)
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header + n)
    cdef unsigned char* out = <unsigned char*> PyBytes_AS_STRING(frame)
    write_header(out, 0x81, n, False)
    memcpy(out + header, PyBytes_AS_STRING(prefix), head)
    if data is None:
        _write_plain(args, <char*> out + header + head)
    else:
        memcpy(out + header + head, PyBytes_AS_STRING(data), body)
    out[header + n - 1] = 0x7D  # }
    return frame


cdef Py_ssize_t _plain_string_size(str text):
    """The JSON size of an ASCII ``text`` that needs no escape (orjson writes it as it is,
    between quotes); -1 for any other text."""
    if not PyUnicode_IS_ASCII(text):
        return -1
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
    if plain_span(<const unsigned char*> PyUnicode_DATA(text), n) != n:
        return -1
    return n + 2


cdef Py_ssize_t _plain_int_size(object number):
    """The JSON size of an int that fits a long long (its decimal digits); -1 for a larger one."""
    cdef int overflow = 0
    cdef long long value = PyLong_AsLongLongAndOverflow(number, &overflow)
    if overflow:
        return -1
    cdef Py_ssize_t size = 1
    if value < 0:
        value = -(value // 10)  # the last digit apart: -LLONG_MIN would not fit a long long
        if value == 0:
            return 2  # a minus and one digit
        size = 3  # a minus, the last digit and the first one
    while value >= 10:
        value //= 10
        size += 1
    return size


cdef Py_ssize_t _plain_size(object items):
    """The size of the JSON array of ``items`` (a list or a tuple) when each is a plain scalar (an
    ASCII str that needs no escape, an int that fits a long long, a bool or None: what this
    module writes itself, byte for byte as orjson does); -1 when one is anything else."""
    cdef Py_ssize_t count = PySequence_Fast_GET_SIZE(items)
    cdef Py_ssize_t size = count + 1 if count else 2  # brackets and commas
    cdef Py_ssize_t item_size
    cdef Py_ssize_t index
    for index in range(count):
        item = <object> PySequence_Fast_GET_ITEM(items, index)
        kind = type(item)
        if kind is str:
            item_size = _plain_string_size(<str> item)
        elif kind is int:
            item_size = _plain_int_size(item)
        elif item is None or item is True:
            item_size = 4
        elif item is False:
            item_size = 5
        else:
            return -1
        if item_size < 0:
            return -1
        size += item_size
    return size


cdef Py_ssize_t _write_int(char* out, object number):
    """Write the decimal digits of an int that ``_plain_int_size`` measured; return their size."""
    cdef char digits[24]
    cdef int used = snprintf(digits, sizeof(digits), "%lld", PyLong_AsLongLong(number))
    memcpy(out, digits, used)
    return used


cdef void _write_plain(object items, char* out):
    """Write the JSON array of ``items``, which ``_plain_size`` measured."""
    cdef Py_ssize_t pos = 1
    cdef Py_ssize_t n
    cdef Py_ssize_t index
    out[0] = b"["
    for index in range(PySequence_Fast_GET_SIZE(items)):
        if index:
            out[pos] = b","
            pos += 1
        item = <object> PySequence_Fast_GET_ITEM(items, index)
        kind = type(item)
        if kind is str:
            n = PyUnicode_GET_LENGTH(item)
            out[pos] = b'"'
            memcpy(out + pos + 1, PyUnicode_DATA(item), n)
            out[pos + 1 + n] = b'"'
            pos += n + 2
        elif kind is int:
            pos += _write_int(out + pos, item)
        elif item is None:
            memcpy(out + pos, b"null", 4)
            pos += 4
        elif item is True:
            memcpy(out + pos, b"true", 4)
            pos += 4
        else:
            memcpy(out + pos, b"false", 5)
            pos += 5
    out[pos] = b"]"


def ack_frame(ack, results):
    """The server frame of the answer ``results`` to the request ``ack`` (text JSON, or binary
    msgpack when a result holds bytes); an unencodable result raises TypeError."""
    return ack_frame_of(ack, results)


cdef object ack_frame_of(ack, results):
    """``ack_frame``, which the compiled connection core calls in C."""
    if _json_dumps is None:
        _load()
    # Plain results after an ack id that fits a long long are written here, the rest by orjson.
    cdef Py_ssize_t digits = -1
    cdef Py_ssize_t body = -1
    if type(ack) is int and (type(results) is list or type(results) is tuple):
        digits = _plain_int_size(ack)
        if digits >= 0:
            body = _plain_size(results)
    if body < 0:
        try:
            payload = _json_dumps({"ack": ack, "data": results})
        except TypeError:
            return _py_ack_frame(ack, results)
        return _text_frame(payload)
    cdef Py_ssize_t n = _ACK_HEAD + digits + _DATA_HEAD + body + 1
    cdef Py_ssize_t header = header_size(n)
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header + n)
    cdef char* out = PyBytes_AS_STRING(frame)
    write_header(<unsigned char*> out, 0x81, n, False)
    out += header
    memcpy(out, b'{"ack":', _ACK_HEAD)
    out += _ACK_HEAD
    out += _write_int(out, ack)
    memcpy(out, b',"data":', _DATA_HEAD)
    _write_plain(results, out + _DATA_HEAD)
    out[_DATA_HEAD + body] = b"}"
    return frame


cdef Py_ssize_t _ACK_HEAD = 7  # len('{"ack":')
cdef Py_ssize_t _DATA_HEAD = 8  # len(',"data":')


cdef Py_ssize_t _EVENT_KEY = 10  # len('{"event":"')
cdef Py_ssize_t _DATA_KEY = 9  # len('","data":')
cdef Py_ssize_t _ACK_KEY = 7  # len(',"ack":')
cdef long long _MAX_ACK_ID = 9007199254740991  # envelope.MAX_ACK_ID (checked in _load)


cdef object _plain_event(str message):
    """``(event, args, ack)`` when ``message`` is exactly ``{"event":"<name>","data":[...]}``,
    or the same with ``,"ack":<id>`` before the brace, in ASCII and the name without escapes:
    only the arguments are decoded (no dict, no keys). A batch of such envelopes, each with
    plain arguments, comes back as the list of theirs. None for anything else, which the
    general path decodes."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(message)
    if n < _EVENT_KEY + 1 + _DATA_KEY + 3 or not PyUnicode_IS_ASCII(message):
        return None
    cdef const char* text = <const char*> PyUnicode_DATA(message)
    if text[0] == b"[":
        return _plain_batch(message, text, n)
    if text[n - 1] != b"}":
        return None
    cdef Py_ssize_t end = 0
    cdef Py_ssize_t start = _arguments_start(text, 0, n, &end)
    if start < 0:
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
    args = _plain_array(message, text, start, stop)
    if args is None:
        try:
            args = _json_loads(PyUnicode_Substring(message, start, stop))
        except _json_error:
            return None  # not one array (another key follows, or malformed): the general path's
        if type(args) is not list:
            return None
    return _event_name(message, text, _EVENT_KEY, end), args, (None if ack < 0 else ack)


cdef object _plain_batch(str message, const char* text, Py_ssize_t n):
    """The ``(event, args, ack)`` of each envelope of a batch written as clients write it: ``[``,
    envelopes of the client layout whose arguments are all plain (see ``_plain_items``)
    separated by commas, ``]``; at most MAX_BATCH of them. None for anything else."""
    if text[n - 1] != b"]":
        return None
    cdef list events = []
    cdef Py_ssize_t pos = 1
    cdef Py_ssize_t last = n - 1  # the closing bracket
    while True:
        if PyList_GET_SIZE(events) == _max_batch:
            return None  # one more than a batch may hold: the general path refuses it
        event = _plain_envelope(message, text, pos, last, &pos)
        if event is None:
            return None
        events.append(event)
        if pos == last:
            return events
        if text[pos] != b",":
            return None
        pos += 1


cdef Py_ssize_t _arguments_start(const char* text, Py_ssize_t first, Py_ssize_t limit, Py_ssize_t* name_end):
    """Where the arguments (their ``[``) of an envelope of the client layout at ``text[first]``
    begin, within ``limit``, ``name_end`` set where its name ends; -1 for anything else."""
    if limit - first < _EVENT_KEY + 1 + _DATA_KEY + 3 or memcmp(text + first, b'{"event":"', _EVENT_KEY) != 0:
        return -1
    cdef Py_ssize_t name = first + _EVENT_KEY
    # The name runs to its closing quote; an escape or a control character in it stops the scan
    # elsewhere, where the layout check below fails: the general path's.
    cdef Py_ssize_t end = name + plain_span(<const unsigned char*> text + name, limit - name)
    cdef Py_ssize_t start = end + _DATA_KEY
    if end == name or start + 2 >= limit or memcmp(text + end, b'","data":', _DATA_KEY) != 0:
        return -1
    if text[start] != b"[":
        return -1
    name_end[0] = end
    return start


cdef object _plain_envelope(str message, const char* text, Py_ssize_t first, Py_ssize_t limit, Py_ssize_t* after):
    """``(event, args, ack)`` of the envelope of the client layout at ``text[first]``, within
    ``limit``, with plain arguments; ``after`` is set past its brace. None for anything else."""
    cdef Py_ssize_t end = 0
    cdef Py_ssize_t pos = _arguments_start(text, first, limit, &end)
    if pos < 0:
        return None
    args = _plain_items(message, text, pos, limit, &pos)
    if args is None:
        return None
    cdef long long ack = -1
    cdef Py_ssize_t digit
    if pos < limit and text[pos] == b",":
        if limit - pos < _ACK_KEY + 2 or memcmp(text + pos, b',"ack":', _ACK_KEY) != 0:
            return None
        pos += _ACK_KEY
        digit = pos
        ack = 0
        while pos < limit and b"0" <= text[pos] <= b"9" and pos - digit < 16:
            ack = ack * 10 + (text[pos] - 48)
            pos += 1
        if pos == digit or (text[digit] == b"0" and pos - digit > 1) or ack > _MAX_ACK_ID:
            return None
    if pos >= limit or text[pos] != b"}":
        return None
    after[0] = pos + 1
    return _event_name(message, text, first + _EVENT_KEY, end), args, (None if ack < 0 else ack)


# The event names read last, by a hash of their length and ends: a client sends the same few
# names over and over, and a name found here costs no new string and no hashing (its hash is
# kept) in the lookups that follow. Short names only, so that it holds little.
cdef PyObject* _names[16]
cdef Py_ssize_t _MAX_KEPT_NAME = 64


cdef object _event_name(str message, const char* text, Py_ssize_t first, Py_ssize_t end):
    """``message[first:end]`` (ASCII, the event name of the client layout), from the kept
    names when it is one of them."""
    cdef Py_ssize_t n = end - first
    if n > _MAX_KEPT_NAME:
        return PyUnicode_Substring(message, first, end)
    cdef const char* name = text + first
    cdef Py_ssize_t slot = (n * 31 + <unsigned char> name[0] * 7 + <unsigned char> name[n - 1]) & 15
    cdef PyObject* kept = _names[slot]
    if kept != NULL and PyUnicode_GET_LENGTH(<object> kept) == n and memcmp(
        PyUnicode_DATA(<object> kept), name, n
    ) == 0:
        return <object> kept
    found = PyUnicode_Substring(message, first, end)
    Py_INCREF(found)
    _names[slot] = <PyObject*> found
    Py_XDECREF(kept)
    return found


cdef Py_ssize_t _MAX_PLAIN_DIGITS = 18  # any integer of up to 18 digits fits a long long


cdef object _plain_array(str message, const char* text, Py_ssize_t start, Py_ssize_t stop):
    """The list that ``message[start:stop]`` (ASCII, from ``[`` to ``]``) holds when it is one
    array of plain items (see ``_plain_items``); None for anything else, which orjson reads."""
    cdef Py_ssize_t after = 0
    items = _plain_items(message, text, start, stop, &after)
    return items if after == stop else None


cdef object _plain_items(str message, const char* text, Py_ssize_t start, Py_ssize_t limit, Py_ssize_t* after):
    """The list that the array at ``text[start]`` (``[``, ASCII, ending before ``limit``) holds
    when each item is a string without escapes or control characters, an integer of at most 18
    digits, ``true``, ``false`` or ``null``, with no whitespace: what orjson makes of it, without
    its parser's set-up (most events carry a few such arguments); ``after`` is set past its
    ``]``. None for anything else (and ``after`` untouched)."""
    cdef list items = []
    cdef Py_ssize_t pos = start + 1
    cdef Py_ssize_t first
    cdef long long value
    cdef bint negative
    cdef char c
    if pos < limit and text[pos] == b"]":
        after[0] = pos + 1
        return items
    while pos < limit:
        c = text[pos]
        if c == b'"':
            pos += 1
            first = pos
            pos += plain_span(<const unsigned char*> text + pos, limit - pos)
            if pos == limit or text[pos] != b'"':
                return None  # an escape or a control character (or no closing quote)
            items.append(PyUnicode_Substring(message, first, pos))
            pos += 1
        elif c == b"-" or b"0" <= c <= b"9":
            negative = c == b"-"
            if negative:
                pos += 1
            first = pos
            value = 0
            while pos < limit and b"0" <= text[pos] <= b"9" and pos - first < _MAX_PLAIN_DIGITS:
                value = value * 10 + (text[pos] - 48)
                pos += 1
            if pos == first or (text[first] == b"0" and pos - first > 1):
                return None  # no digit, or a leading zero (which JSON does not allow)
            items.append(-value if negative else value)
        elif c == b"t" and limit - pos >= 4 and memcmp(text + pos, b"true", 4) == 0:
            items.append(True)
            pos += 4
        elif c == b"f" and limit - pos >= 5 and memcmp(text + pos, b"false", 5) == 0:
            items.append(False)
            pos += 5
        elif c == b"n" and limit - pos >= 4 and memcmp(text + pos, b"null", 4) == 0:
            items.append(None)
            pos += 4
        else:
            return None
        # After an item: the closing bracket, or a comma and another item. Anything else (a
        # fraction, an exponent, a 19th digit, whitespace) is orjson's to read.
        if pos == limit:
            return None
        if text[pos] == b"]":
            after[0] = pos + 1
            return items
        if text[pos] != b",":
            return None
        pos += 1
    return None


def decode_event(message):
    """Decode a frame and sort it: ``(event, args, ack)`` for an event envelope that can be
    dispatched as it is, else the decoded value itself; a batch as the list of its envelopes
    each sorted so (see the spec, ``py_decode_event``)."""
    return decode_event_of(message)


cdef object decode_event_of(message):
    """``decode_event``, which the compiled connection core calls in C."""
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
    if type(decoded) is list:
        if PyList_GET_SIZE(decoded) > _max_batch:
            return decoded  # refused whole: no work spent on it
        return [_sorted(envelope) for envelope in <list> decoded]
    return _sorted(decoded)


cdef object _sorted(decoded):
    """The spec's ``_sorted``: ``(event, args, ack)`` for an event envelope that can be
    dispatched as it is, else ``decoded`` itself."""
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
