# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twins of protocol/frames.py's masking, frame building and header parsing.

The pure-Python functions there are the spec. Inputs the fast paths do not cover (an opcode
outside 0-255, a payload that is not bytes or bytearray, a mask key that is not 4 bytes, a
position outside the buffer) go to the pure-Python function, so every result and every error
is the spec's own.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from ._kernels cimport header_size, mask_copy, write_header

from nanosocket.errors import ProtocolError


def apply_mask(data, bytes mask):
    """XOR ``data`` with the 4-byte ``mask``; eight bytes at a time."""
    cdef const unsigned char[::1] view = data
    cdef Py_ssize_t n = view.shape[0]
    if len(mask) != 4:
        raise ValueError("a mask key is 4 bytes")
    result = PyBytes_FromStringAndSize(NULL, n)
    if n == 0:
        return result
    cdef unsigned char* out = <unsigned char*> PyBytes_AS_STRING(result)
    cdef const unsigned char* src = &view[0]
    cdef const unsigned char* key = mask
    with nogil:
        mask_copy(out, src, n, key)
    return result


def build_frame(opcode, payload, *, fin=True, rsv1=False, mask_key=None):
    """Return the wire bytes of one frame; ``mask_key`` (4 bytes) masks it, as clients must."""
    cdef const unsigned char* src
    cdef Py_ssize_t n
    if type(payload) is bytes:
        src = <const unsigned char*> PyBytes_AS_STRING(payload)
        n = PyBytes_GET_SIZE(payload)
    elif type(payload) is bytearray:
        src = <const unsigned char*> PyByteArray_AS_STRING(payload)
        n = PyByteArray_GET_SIZE(payload)
    else:
        return _python_build_frame(opcode, payload, fin, rsv1, mask_key)
    if type(opcode) is not int or not 0 <= opcode <= 255:
        return _python_build_frame(opcode, payload, fin, rsv1, mask_key)
    cdef const unsigned char* key = NULL
    if mask_key is not None:
        if type(mask_key) is not bytes or PyBytes_GET_SIZE(mask_key) != 4:
            return _python_build_frame(opcode, payload, fin, rsv1, mask_key)
        key = <const unsigned char*> PyBytes_AS_STRING(mask_key)
    cdef int first = <int> opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    cdef Py_ssize_t header = header_size(n)
    cdef Py_ssize_t total = header + (4 if key != NULL else 0) + n
    frame = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* out = <unsigned char*> PyBytes_AS_STRING(frame)
    write_header(out, first, n, key != NULL)
    out += header
    if key != NULL:
        memcpy(out, key, 4)
        mask_copy(out + 4, src, n, key)
    elif n:
        memcpy(out, src, n)
    return frame


cdef object _python_build_frame(opcode, payload, fin, rsv1, mask_key):
    from nanosocket.protocol.frames import py_build_frame

    return py_build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask_key=mask_key)


def parse_header(buf, pos, end):
    """Parse the frame header at ``buf[pos:end]``: ``(first, second, length, header_length)`` or None.

    Raises ProtocolError for a length not minimally encoded or with its most significant bit set.
    """
    cdef const unsigned char* data
    cdef Py_ssize_t size, start, stop
    if type(buf) is bytes:
        data = <const unsigned char*> PyBytes_AS_STRING(buf)
        size = PyBytes_GET_SIZE(buf)
    elif type(buf) is bytearray:
        data = <const unsigned char*> PyByteArray_AS_STRING(buf)
        size = PyByteArray_GET_SIZE(buf)
    else:
        return _python_parse_header(buf, pos, end)
    if type(pos) is not int or type(end) is not int or not 0 <= pos <= end <= size:
        return _python_parse_header(buf, pos, end)
    start = pos
    stop = end
    cdef Py_ssize_t avail = stop - start
    if avail < 2:
        return None
    data += start
    cdef unsigned char first = data[0]
    cdef unsigned char second = data[1]
    cdef uint64_t length = second & 0x7F
    cdef Py_ssize_t header_length = 2
    cdef int i
    if length == 126:
        if avail < 4:
            return None
        length = (<uint64_t> data[2] << 8) | data[3]
        if length < 126:
            raise ProtocolError("frame length not minimally encoded")
        header_length = 4
    elif length == 127:
        if avail < 10:
            return None
        length = 0
        for i in range(8):
            length = (length << 8) | data[2 + i]
        if length >> 63:
            raise ProtocolError("frame length has its most significant bit set")
        if length < 65536:
            raise ProtocolError("frame length not minimally encoded")
        header_length = 10
    if second & 0x80:
        header_length += 4
    if avail < header_length:
        return None
    return first, second, length, header_length


cdef object _python_parse_header(buf, pos, end):
    from nanosocket.protocol.frames import py_parse_header

    return py_parse_header(buf, pos, end)
