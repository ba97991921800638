# cython: language_level=3
"""C kernels shared by the compiled twins (inline: each module that cimports them gets a copy)."""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline void mask_copy(unsigned char* dst, const unsigned char* src, Py_ssize_t n,
                           const unsigned char* key) noexcept nogil:
    """``dst[i] = src[i] ^ key[i % 4]``, eight bytes at a time (``dst`` may be ``src``)."""
    cdef uint32_t key32
    memcpy(&key32, key, 4)
    cdef uint64_t key64 = (<uint64_t> key32) | ((<uint64_t> key32) << 32)
    cdef uint64_t word
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= key64
        memcpy(dst + i, &word, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ key[i & 3]
        i += 1


cdef inline Py_ssize_t write_header(unsigned char* out, int first, Py_ssize_t n, bint masked) noexcept nogil:
    """Write the header of a frame of ``n`` payload bytes, without its mask key; return its size."""
    cdef unsigned char mask_bit = 0x80 if masked else 0
    cdef int shift
    out[0] = <unsigned char> first
    if n < 126:
        out[1] = mask_bit | <unsigned char> n
        return 2
    if n < 65536:
        out[1] = mask_bit | 126
        out[2] = <unsigned char> (n >> 8)
        out[3] = <unsigned char> n
        return 4
    out[1] = mask_bit | 127
    for shift in range(8):
        out[2 + shift] = <unsigned char> ((<uint64_t> n) >> (56 - 8 * shift))
    return 10


cdef inline Py_ssize_t header_size(Py_ssize_t n) noexcept nogil:
    """The size of a frame header for ``n`` payload bytes, without a mask key."""
    return 2 if n < 126 else (4 if n < 65536 else 10)


cdef inline Py_ssize_t plain_span(const unsigned char* text, Py_ssize_t n) noexcept nogil:
    """The length of the longest prefix of ``text[:n]`` without a quote, a backslash or a byte
    below 0x20: the part of a JSON string that needs no escape, eight bytes at a time."""
    cdef uint64_t ones = 0x0101010101010101
    cdef uint64_t word, quote, backslash
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&word, text + i, 8)
        quote = word ^ (ones * 0x22)
        backslash = word ^ (ones * 0x5C)
        # A byte that is 0 in quote or backslash, or below 0x20 in word, sets its top bit when
        # subtracted from (a borrow from below cannot hide it). A top bit set already (a byte
        # of 0x80 or more) is a false alarm that the exact loop below settles.
        if ((quote - ones) | (backslash - ones) | (word - ones * 0x20)) & (ones * 0x80):
            break
        i += 8
    cdef unsigned char c
    while i < n:
        c = text[i]
        if c == 0x22 or c == 0x5C or c < 0x20:
            break
        i += 1
    return i
