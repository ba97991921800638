# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of protocol/frames.py's masking (the pure-Python version is the spec)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy


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
    cdef uint32_t key32
    memcpy(&key32, key, 4)
    cdef uint64_t key64 = (<uint64_t> key32) | ((<uint64_t> key32) << 32)
    cdef uint64_t word
    cdef Py_ssize_t i = 0
    with nogil:
        while i + 8 <= n:
            memcpy(&word, src + i, 8)
            word ^= key64
            memcpy(out + i, &word, 8)
            i += 8
        while i < n:
            out[i] = src[i] ^ key[i & 3]
            i += 1
    return result
