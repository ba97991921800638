# cython: language_level=3
"""C kernels shared by the compiled twins (inline: each module that cimports them gets a copy)."""

from libc.stdint cimport uint64_t


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


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif

    /* dst[i] = src[i] ^ key[i % 4] (dst may be src); returns whether a byte of the result is
       0x80 or more (not ASCII). With SSE2 64 then 16 bytes at a time, else 8: four blocks per
       step, and two accumulators of what was seen, keep the loop from waiting on its own ors. */
    static inline int nanosocket_mask_copy(unsigned char* dst, const unsigned char* src, Py_ssize_t n,
                                           const unsigned char* key) {
        Py_ssize_t i = 0;
        uint32_t key32;
        memcpy(&key32, key, 4);
        uint64_t key64 = (uint64_t) key32 | ((uint64_t) key32 << 32);
        uint64_t word, seen = 0;
        int high = 0;
    #if defined(__SSE2__)
        const __m128i key128 = _mm_set1_epi32((int) key32);
        __m128i seen128 = _mm_setzero_si128();
        __m128i seen_more = _mm_setzero_si128();
        while (i + 64 <= n) {
            __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i*) (src + i)), key128);
            __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i*) (src + i + 16)), key128);
            __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i*) (src + i + 32)), key128);
            __m128i d = _mm_xor_si128(_mm_loadu_si128((const __m128i*) (src + i + 48)), key128);
            _mm_storeu_si128((__m128i*) (dst + i), a);
            _mm_storeu_si128((__m128i*) (dst + i + 16), b);
            _mm_storeu_si128((__m128i*) (dst + i + 32), c);
            _mm_storeu_si128((__m128i*) (dst + i + 48), d);
            seen128 = _mm_or_si128(seen128, _mm_or_si128(a, b));
            seen_more = _mm_or_si128(seen_more, _mm_or_si128(c, d));
            i += 64;
        }
        seen128 = _mm_or_si128(seen128, seen_more);
        while (i + 16 <= n) {
            __m128i chunk = _mm_xor_si128(_mm_loadu_si128((const __m128i*) (src + i)), key128);
            _mm_storeu_si128((__m128i*) (dst + i), chunk);
            seen128 = _mm_or_si128(seen128, chunk);
            i += 16;
        }
        high = _mm_movemask_epi8(seen128);
    #endif
        while (i + 8 <= n) {
            memcpy(&word, src + i, 8);
            word ^= key64;
            memcpy(dst + i, &word, 8);
            seen |= word;
            i += 8;
        }
        for (; i < n; i++) {
            dst[i] = src[i] ^ key[i & 3];
            seen |= dst[i];
        }
        return high || (seen & 0x8080808080808080ULL) != 0;
    }

    /* The length of the longest prefix of text[:n] without a quote, a backslash or a byte below
       0x20: the part of a JSON string that needs no escape. With SSE2 (every x86-64), 16 bytes
       at a time: a byte below 0x20 is one that min(byte, 0x1F) leaves unchanged. */
    static inline Py_ssize_t nanosocket_plain_span(const unsigned char* text, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if defined(__SSE2__)
        const __m128i quote = _mm_set1_epi8(0x22);
        const __m128i backslash = _mm_set1_epi8(0x5C);
        const __m128i control = _mm_set1_epi8(0x1F);
        while (i + 16 <= n) {
            __m128i chunk = _mm_loadu_si128((const __m128i*) (text + i));
            __m128i stop = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(chunk, quote), _mm_cmpeq_epi8(chunk, backslash)),
                _mm_cmpeq_epi8(_mm_min_epu8(chunk, control), chunk));
            int found = _mm_movemask_epi8(stop);
            if (found)
                return i + __builtin_ctz((unsigned int) found);
            i += 16;
        }
    #else
        /* Eight bytes at a time: a byte that is 0 after the xor with a quote or a backslash, or
           below 0x20, sets its top bit when 1 (or 0x20) is subtracted from it (a borrow from below
           cannot hide it). A top bit set already (a byte of 0x80 or more) is a false alarm that
           the exact loop below settles. */
        const uint64_t ones = 0x0101010101010101ULL;
        uint64_t word;
        while (i + 8 <= n) {
            memcpy(&word, text + i, 8);
            if ((((word ^ (ones * 0x22)) - ones) | ((word ^ (ones * 0x5C)) - ones) | (word - ones * 0x20))
                & (ones * 0x80))
                break;
            i += 8;
        }
    #endif
        for (; i < n; i++) {
            unsigned char c = text[i];
            if (c == 0x22 || c == 0x5C || c < 0x20)
                break;
        }
        return i;
    }
    """
    Py_ssize_t plain_span "nanosocket_plain_span" (const unsigned char* text, Py_ssize_t n) noexcept nogil
    bint mask_copy "nanosocket_mask_copy" (unsigned char* dst, const unsigned char* src, Py_ssize_t n,
                                           const unsigned char* key) noexcept nogil
