"""The NanoSocket wire codec: envelopes <-> JSON text or msgpack binary (docs/protocol.md).

An envelope is one of

* an event:      ``{"event": name, "data": [args...]}`` plus ``"ack": n`` when it wants an answer
* an ack reply:  ``{"ack": n, "data": [results...]}`` or ``{"ack": n, "error": {...}}``

A frame carries one envelope or, from a client, a batch: a list of envelopes. Text frames are
JSON (orjson); arguments containing ``bytes`` travel as a binary frame holding the msgpack of the
same structure. Original nano-socket clients also send ``"id"`` and ``"timestamp"`` and may send
``"data"`` as a single non-list value: both are accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import msgpack
import orjson

from .._speedups import enabled as speedups_enabled
from ..errors import InvalidPayload, ProtocolError
from .frames import BINARY, TEXT, build_frame

__all__ = [
    "MAX_BATCH",
    "PEER_RESERVED_EVENTS",
    "EnvelopeError",
    "ack_frame",
    "check_emit_name",
    "check_event_name",
    "check_message_id",
    "decode_binary",
    "decode_event",
    "decode_text",
    "encode",
    "encode_ack",
    "encode_ack_error",
    "encode_emit",
    "encode_event",
    "encode_kept_ack",
    "encode_reply_body",
    "event_frame",
    "iter_envelopes",
    "py_ack_frame",
    "py_decode_event",
    "py_event_frame",
    "read_envelope",
]

#: Events a peer may never emit: they are raised locally by the connection itself.
PEER_RESERVED_EVENTS: Final = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "error",
        "connecting",
        "reconnecting",
        "reconnect_failed",
        "drop",
    }
)
#: Most envelopes one batch frame may carry.
MAX_BATCH: Final = 1000
#: The largest ack id accepted (a JavaScript safe integer).
MAX_ACK_ID: Final = 2**53 - 1

_json_dumps = orjson.dumps
_json_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_msgpack_packb = msgpack.packb
_msgpack_unpackb = msgpack.unpackb


class EnvelopeError(ProtocolError):
    """A decoded frame is not a valid envelope (closes with 1008, policy violation)."""

    close_code = 1008


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not part of the protocol")


def decode_text(data: str | bytes) -> Any:
    """Parse a text frame's JSON; invalid JSON or UTF-8 raises InvalidPayload (1007)."""
    try:
        return _json_loads(data)
    except _JSONDecodeError as exc:
        raise InvalidPayload(f"malformed JSON: {exc}") from exc


# The msgpack Timestamp extension (type -1) is decoded by msgpack itself, bypassing ext_hook;
# these are its three encodings' first bytes. Only frames containing one are searched.
_TIMESTAMP_MARKERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _holds_timestamp(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, msgpack.Timestamp):
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def decode_binary(data: bytes) -> Any:
    """Parse a binary frame's msgpack; garbage or extension types raise ProtocolError (1003)."""
    try:
        decoded = _msgpack_unpackb(data, raw=False, strict_map_key=True, ext_hook=_refuse_ext)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"binary frame is not a msgpack envelope: {exc}", 1003) from exc
    if any(marker in data for marker in _TIMESTAMP_MARKERS) and _holds_timestamp(decoded):
        raise ProtocolError("binary frame uses the msgpack timestamp extension type", 1003)
    return decoded


def py_decode_event(message: str | bytes) -> Any:
    """Decode a frame (``decode_text`` for text, ``decode_binary`` otherwise) and sort it.

    An event envelope that can be dispatched as it is (a non-empty event name without NUL, a list
    of arguments, no ack or a valid ack id: what read_envelope accepts unchanged) comes back as
    the tuple ``(event, args, ack)``; anything else as the decoded value itself (an ack reply, an
    envelope with a message id, an envelope read_envelope must look at). A batch of at most
    MAX_BATCH comes back as a list of its envelopes each sorted so (a larger one as decoded).
    Neither JSON nor msgpack decodes to a tuple. (Two keys, or three with an ack, are an envelope
    without a message id: the size is checked before looking for ``mid``.)
    """
    decoded = decode_text(message) if type(message) is str else decode_binary(message)  # type: ignore[arg-type]
    if type(decoded) is list:
        if len(decoded) > MAX_BATCH:
            return decoded  # refused whole: no work spent on it
        return [_sorted(envelope) for envelope in decoded]
    return _sorted(decoded)


def _sorted(decoded: Any) -> Any:
    """``(event, args, ack)`` for an event envelope that can be dispatched as it is, else
    ``decoded`` itself (see py_decode_event)."""
    if type(decoded) is dict:
        event = decoded.get("event")
        args = decoded.get("data")
        if type(event) is str and type(args) is list and event and "\x00" not in event:
            ack = decoded.get("ack")
            if ack is None and "ack" not in decoded:
                if len(decoded) == 2 or "mid" not in decoded:
                    return event, args, None
            elif type(ack) is int and 0 <= ack <= MAX_ACK_ID and (len(decoded) == 3 or "mid" not in decoded):
                return event, args, ack
    return decoded


decode_event = py_decode_event
if speedups_enabled():
    try:
        from .._speedups._envelope import decode_event
    except ImportError:  # not compiled: the pure-Python version above is used
        pass


def iter_envelopes(decoded: Any) -> Sequence[Any]:
    """The envelopes of one decoded frame (a batch or a single envelope)."""
    if isinstance(decoded, list):
        if len(decoded) > MAX_BATCH:
            raise EnvelopeError(f"batch of more than {MAX_BATCH} envelopes")
        return decoded
    return (decoded,)


def check_event_name(name: object) -> str:
    """Validate an event name: a non-empty string without NUL (``$`` names are the protocol's)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise EnvelopeError(f"invalid event name {name!r}")
    return name


# Names that passed check_emit_name: an app emits a handful of names millions of times.
_VALID_EMIT_NAMES: set[str] = set()


def check_emit_name(name: object) -> str:
    """Validate the name of an event emitted locally; reserved or ``$`` names raise ValueError."""
    if type(name) is str and name in _VALID_EMIT_NAMES:
        return name
    if type(name) is not str or not name or name[0] == "$" or name in PEER_RESERVED_EVENTS or "\x00" in name:
        raise ValueError(
            f"cannot emit {name!r}: event names are non-empty strings without NUL, not starting "
            f"with '$' and not one of {sorted(PEER_RESERVED_EVENTS)}"
        )
    if len(_VALID_EMIT_NAMES) >= 4096:
        _VALID_EMIT_NAMES.clear()
    _VALID_EMIT_NAMES.add(name)
    return name


def read_envelope(envelope: Any) -> tuple[str | None, list[Any], int | None, Any]:
    """Validate one envelope; return ``(event, args, ack, error)``.

    ``event`` is None for an ack reply (then ``error`` is the error object or None). Structural
    problems raise EnvelopeError (1008).
    """
    if type(envelope) is not dict:
        raise EnvelopeError("an envelope must be an object")
    ack = envelope.get("ack")
    if ack is not None and (type(ack) is not int or not 0 <= ack <= MAX_ACK_ID):
        raise EnvelopeError("ack must be a non-negative integer")
    data = envelope.get("data", _MISSING)
    if data is _MISSING:
        args: list[Any] = []
    elif type(data) is list:
        args = data
    else:
        # Original nano-socket clients send a single argument as a bare value.
        args = [data]
    event = envelope.get("event")
    if event is None:
        if ack is None:
            raise EnvelopeError("an envelope needs an event name or an ack id")
        error = envelope.get("error")
        if error is not None and not isinstance(error, dict):
            raise EnvelopeError("an ack error must be an object")
        return None, args, ack, error
    return check_event_name(event), args, ack, None


_MISSING: Final[Any] = object()


def _contains_bytes(value: Any, depth: int = 0) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    if depth > 64:
        return False
    if isinstance(value, (list, tuple)):
        return any(_contains_bytes(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return any(_contains_bytes(item, depth + 1) for item in value.values())
    return False


def encode(envelope: dict[str, Any]) -> tuple[bytes, bool]:
    """Encode one envelope; return ``(payload, is_binary)``.

    JSON unless an argument holds bytes, then msgpack. A value neither can encode raises TypeError.
    """
    try:
        return _json_dumps(envelope), False
    except TypeError:
        if not _contains_bytes(envelope):
            raise
    try:
        return _msgpack_packb(envelope, use_bin_type=True, datetime=False), True
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot encode envelope: {exc}") from exc


def encode_event(event: str, args: Sequence[Any], ack: int | None = None) -> tuple[bytes, bool]:
    """Encode an event envelope (``ack`` asks the peer for an answer)."""
    if ack is None:
        return encode({"event": event, "data": args})
    return encode({"event": event, "data": args, "ack": ack})


def encode_emit(event: str, args: Sequence[Any]) -> tuple[bytes, bool]:
    """``encode_event(check_emit_name(event), args)`` in one call: what every emit does."""
    if type(event) is not str or event not in _VALID_EMIT_NAMES:
        check_emit_name(event)
    try:
        # The envelope's JSON written around its parts' (the bytes orjson writes for the dict),
        # as the compiled twin does it: no envelope dict for the common case.
        return b'{"event":' + _json_dumps(event) + b',"data":' + _json_dumps(args) + b"}", False
    except TypeError:
        return encode({"event": event, "data": args})


def py_event_frame(event: str, args: Sequence[Any]) -> bytes:
    """The complete (unmasked) server frame of an event: ``encode_emit``, then ``build_frame``."""
    payload, binary = encode_emit(event, args)
    return build_frame(BINARY if binary else TEXT, payload)


event_frame = py_event_frame
if speedups_enabled():
    try:
        from .._speedups._envelope import event_frame
    except ImportError:  # not compiled: the pure-Python version above is used
        pass


def encode_ack(ack: int, results: Sequence[Any]) -> tuple[bytes, bool]:
    """Encode the answer to an ack request."""
    envelope = {"ack": ack, "data": results}
    try:
        return _json_dumps(envelope), False
    except TypeError:
        return encode(envelope)


def py_ack_frame(ack: int, results: Sequence[Any]) -> bytes:
    """The complete (unmasked) server frame of an ack reply: ``encode_ack``, then ``build_frame``."""
    payload, binary = encode_ack(ack, results)
    return build_frame(BINARY if binary else TEXT, payload)


ack_frame = py_ack_frame
if speedups_enabled():
    try:
        from .._speedups._envelope import ack_frame
    except ImportError:  # not compiled: the pure-Python version above is used
        pass


def encode_ack_error(ack: int, message: str, **detail: Any) -> bytes:
    """Encode an error answer to an ack request (always JSON)."""
    return _json_dumps({"ack": ack, "error": {"message": message, **detail}})


#: Shortest and longest client message id (``mid``), and its alphabet (base64url).
MID_MIN_LENGTH: Final = 8
MID_MAX_LENGTH: Final = 64
_MID_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def check_message_id(mid: object) -> str | None:
    """Why ``mid`` is not a valid client message id (None when it is): a string of 8 to 64
    characters from ``A-Z a-z 0-9 _ -``."""
    if type(mid) is not str:
        return f"mid must be a string, got {type(mid).__name__}"
    if not MID_MIN_LENGTH <= len(mid) <= MID_MAX_LENGTH:
        return f"mid must be {MID_MIN_LENGTH} to {MID_MAX_LENGTH} characters long, got {len(mid)}"
    if not _MID_CHARS.issuperset(mid):
        return "mid may only hold the characters A-Z a-z 0-9 _ -"
    return None


def encode_reply_body(value: Any) -> tuple[bytes, bool]:
    """The ``data`` (a list) or ``error`` (an object) of an ack reply encoded alone, to be kept
    and sent again under other ack ids (``encode_kept_ack``): JSON, or msgpack when it holds bytes."""
    try:
        return _json_dumps(value), False
    except TypeError:
        if not _contains_bytes(value):
            raise
    try:
        return _msgpack_packb(value, use_bin_type=True, datetime=False), True
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot encode reply: {exc}") from exc


_MSGPACK_ACK_HEAD: Final[bytes] = b"\x82" + _msgpack_packb("ack")


def encode_kept_ack(ack: int, error: bool, body: bytes, binary: bool) -> bytes:
    """An ack reply around a body from ``encode_reply_body``: ``{"ack": ack, "data": body}`` (or
    ``"error"``), in the body's encoding, without decoding the body again."""
    key = "error" if error else "data"
    if binary:
        packed: bytes = _msgpack_packb(ack) + _msgpack_packb(key)
        return _MSGPACK_ACK_HEAD + packed + body
    return b'{"ack":%d,"%s":%s}' % (ack, key.encode(), body)


# Checked once the module is complete (the twin reads its names on first use): a twin built
# before message ids would drop them, and run handlers again for copies. The spec is used until
# it is rebuilt.
if (
    decode_event is not py_decode_event
    and type(decode_event('{"event":"e","data":[],"ack":0,"mid":"abcdefgh"}')) is tuple
):
    logging.getLogger("nanosocket").warning(
        "the compiled decode_event is older than its spec: rebuild the speedups "
        "(python setup.py build_ext --inplace); using the pure-Python version"
    )
    decode_event = py_decode_event
