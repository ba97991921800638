"""RFC 6455 frames: header parsing, frame building, masking and close payloads.

This is the reference the compiled twin copies; it is written for clarity first, then for speed.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from .._speedups import enabled as speedups_enabled
from ..errors import InvalidPayload, ProtocolError

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "CloseCode",
    "apply_mask",
    "build_frame",
    "encode_close",
    "is_valid_close_code",
    "parse_close",
    "parse_header",
    "py_apply_mask",
    "py_build_frame",
    "py_parse_header",
]

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

FIN = 0x80
RSV1 = 0x40
RSV_MASK = 0x70
OPCODE_MASK = 0x0F
MASK_BIT = 0x80
#: The largest frame header: 2 bytes, a 64-bit length, a masking key.
MAX_HEADER_SIZE = 14

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEADER16 = struct.Struct("!BBH")
_HEADER64 = struct.Struct("!BBQ")


class CloseCode(IntEnum):
    """Close codes this implementation sends (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # never sent: stands for "close frame without a code"
    ABNORMAL = 1006  # never sent: stands for "dropped without a close frame"
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire."""
    if 3000 <= code <= 4999:
        return True
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006)


def py_apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (masking and unmasking are the same operation)."""
    n = len(data)
    if n == 0:
        return b""
    # One big-integer XOR beats a per-byte loop by two orders of magnitude in pure Python.
    repeated = mask * ((n + 3) >> 2)
    if len(repeated) != n:
        repeated = repeated[:n]
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")
    return value.to_bytes(n, "little")


apply_mask = py_apply_mask
if speedups_enabled():
    try:
        from .._speedups._frames import apply_mask
    except ImportError:  # not compiled: the pure-Python version above is used
        pass


def py_build_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask_key: bytes | None = None,
) -> bytes:
    """Return the wire bytes of one frame; ``mask_key`` (4 bytes) masks it, as clients must."""
    first = opcode | (FIN if fin else 0) | (RSV1 if rsv1 else 0)
    n = len(payload)
    mask_bit = MASK_BIT if mask_key is not None else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = _HEADER16.pack(first, mask_bit | 126, n)
    else:
        header = _HEADER64.pack(first, mask_bit | 127, n)
    if mask_key is not None:
        return header + mask_key + apply_mask(payload, mask_key)
    return header + payload


def py_parse_header(
    buf: bytes | bytearray | memoryview, pos: int, end: int
) -> tuple[int, int, int, int] | None:
    """Parse the frame header at ``buf[pos:end]``.

    Returns ``(first_byte, second_byte, payload_length, header_length)`` (the mask key, when
    present, is the last 4 bytes of the header) or None when the header is not complete yet.
    Raises ProtocolError for a length not minimally encoded (RFC 6455 §5.2) or a 64-bit length
    with its most significant bit set.
    """
    if end - pos < 2:
        return None
    first = buf[pos]
    second = buf[pos + 1]
    length = second & 0x7F
    header_length = 2
    if length == 126:
        if end - pos < 4:
            return None
        length = _U16.unpack_from(buf, pos + 2)[0]
        if length < 126:
            raise ProtocolError("frame length not minimally encoded")
        header_length = 4
    elif length == 127:
        if end - pos < 10:
            return None
        length = _U64.unpack_from(buf, pos + 2)[0]
        if length >> 63:
            raise ProtocolError("frame length has its most significant bit set")
        if length < 65536:
            raise ProtocolError("frame length not minimally encoded")
        header_length = 10
    if second & MASK_BIT:
        header_length += 4
    if end - pos < header_length:
        return None
    return first, second, length, header_length


build_frame = py_build_frame
parse_header = py_parse_header
if speedups_enabled():
    try:
        from .._speedups._frames import build_frame, parse_header
    except ImportError:  # not compiled: the pure-Python versions above are used
        pass


def encode_close(code: int | None, reason: str = "") -> bytes:
    """Return a close frame payload; ``None`` gives the empty payload (no status code)."""
    if code is None:
        return b""
    data = reason.encode("utf-8")
    payload = _U16.pack(code) + data
    if len(payload) > 125:
        # Truncate the reason on a character boundary so the frame stays a legal control frame.
        payload = _U16.pack(code) + data[:123].decode("utf-8", "ignore").encode("utf-8")
    return payload


def parse_close(payload: bytes) -> tuple[int, str]:
    """Validate a received close payload and return ``(code, reason)``.

    An empty payload gives ``(1005, "")``. A one-byte payload or a code that may not be sent
    raises ProtocolError (1002); a reason that is not UTF-8 raises InvalidPayload (1007).
    """
    if not payload:
        return CloseCode.NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("close frame payload of one byte")
    code = _U16.unpack_from(payload)[0]
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload("close reason is not valid UTF-8") from exc
    return code, reason
