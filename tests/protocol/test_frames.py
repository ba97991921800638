"""RFC 6455 frames: header parsing, frame building, masking and close payloads, with bytes alone."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanosocket.errors import InvalidPayload, ProtocolError
from nanosocket.protocol.frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    CloseCode,
    apply_mask,
    build_frame,
    encode_close,
    is_valid_close_code,
    parse_close,
    parse_header,
    py_apply_mask,
    py_build_frame,
    py_parse_header,
)

MASK = b"\x37\xfa\x21\x3d"  # the masking key of RFC 6455 §5.7

# Payload lengths on both sides of every length-encoding boundary, with the expected length field
# (the low 7 bits of the second byte) and the size of the extended length that follows it.
LENGTH_FORMS = [
    (0, 0, 0),
    (1, 1, 0),
    (125, 125, 0),
    (126, 126, 2),
    (127, 126, 2),
    (65535, 126, 2),
    (65536, 127, 8),
    (70000, 127, 8),
]


def naive_mask(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def payload_of(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


def _frame_kernels() -> list[Any]:
    """The pure-Python build_frame and parse_header and, when built, their compiled twins."""
    kernels = [pytest.param((py_build_frame, py_parse_header), id="python")]
    try:
        from nanosocket._speedups._frames import build_frame as compiled_build
        from nanosocket._speedups._frames import parse_header as compiled_parse
    except ImportError:
        pass
    else:
        kernels.append(pytest.param((compiled_build, compiled_parse), id="compiled"))
    return kernels


FRAME_KERNELS = _frame_kernels()


@pytest.fixture(params=FRAME_KERNELS)
def frame_kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bind this module's ``build_frame`` and ``parse_header`` to one implementation."""
    build, parse = request.param
    monkeypatch.setattr(f"{__name__}.build_frame", build)
    monkeypatch.setattr(f"{__name__}.parse_header", parse)


# ----------------------------------------------------------------- build_frame


@pytest.mark.usefixtures("frame_kernels")
def test_rfc_examples() -> None:
    # RFC 6455 §5.7: a single-frame unmasked and masked text message "Hello", a ping, a 256-byte and
    # a 64 KiB binary message.
    assert build_frame(TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert build_frame(TEXT, b"Hello", mask_key=MASK) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert build_frame(TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert build_frame(CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    assert build_frame(PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert build_frame(PONG, b"Hello", mask_key=MASK) == bytes.fromhex("8a8537fa213d7f9f4d5158")
    assert build_frame(BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert build_frame(BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize(("n", "length_field", "extended"), LENGTH_FORMS)
def test_unmasked_frame_layout(n: int, length_field: int, extended: int) -> None:
    payload = payload_of(n)
    frame = build_frame(BINARY, payload)
    assert frame[0] == 0x82
    assert frame[1] == length_field  # no mask bit: server frames are not masked
    if extended == 2:
        assert struct.unpack("!H", frame[2:4])[0] == n
    elif extended == 8:
        assert struct.unpack("!Q", frame[2:10])[0] == n
    assert frame[2 + extended :] == payload
    assert len(frame) == 2 + extended + n


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize(("n", "length_field", "extended"), LENGTH_FORMS)
def test_masked_frame_layout(n: int, length_field: int, extended: int) -> None:
    payload = payload_of(n)
    frame = build_frame(TEXT, payload, mask_key=MASK)
    assert frame[0] == 0x81
    assert frame[1] == 0x80 | length_field
    key_at = 2 + extended
    assert frame[key_at : key_at + 4] == MASK
    body = frame[key_at + 4 :]
    assert len(body) == n
    assert naive_mask(body, MASK) == payload


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize(
    ("opcode", "fin", "rsv1", "first"),
    [
        (TEXT, True, False, 0x81),
        (BINARY, False, False, 0x02),
        (CONTINUATION, True, False, 0x80),
        (CONTINUATION, False, False, 0x00),
        (CLOSE, True, False, 0x88),
        (PING, True, False, 0x89),
        (PONG, True, False, 0x8A),
        (TEXT, True, True, 0xC1),
        (BINARY, False, True, 0x42),
    ],
)
def test_first_byte(opcode: int, fin: bool, rsv1: bool, first: int) -> None:
    assert build_frame(opcode, b"x", fin=fin, rsv1=rsv1)[0] == first


# ----------------------------------------------------------------- parse_header


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize(("n", "length_field", "extended"), LENGTH_FORMS)
def test_build_parse_round_trip(n: int, length_field: int, extended: int, masked: bool) -> None:
    payload = payload_of(n)
    key = MASK if masked else None
    frame = build_frame(BINARY, payload, fin=False, mask_key=key)
    header = parse_header(frame, 0, len(frame))
    assert header is not None
    first, second, length, header_length = header
    assert first == 0x02
    assert second == (0x80 if masked else 0) | length_field
    assert length == n
    assert header_length == 2 + extended + (4 if masked else 0)
    body = frame[header_length : header_length + length]
    if masked:
        body = apply_mask(body, frame[header_length - 4 : header_length])
    assert body == payload


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_parse_header_every_incomplete_prefix(n: int, masked: bool) -> None:
    frame = build_frame(TEXT, payload_of(n), mask_key=MASK if masked else None)
    full = parse_header(frame, 0, len(frame))
    assert full is not None
    header_length = full[3]
    for k in range(header_length):
        assert parse_header(frame, 0, k) is None, k
        assert parse_header(frame[:k], 0, k) is None, k
    # The header alone is enough: the payload is not needed to parse it.
    assert parse_header(frame[:header_length], 0, header_length) == full


@pytest.mark.usefixtures("frame_kernels")
def test_parse_header_at_an_offset_in_a_bytearray() -> None:
    first = build_frame(TEXT, b"one")
    second = build_frame(BINARY, payload_of(300), mask_key=MASK)
    buf = bytearray(first + second)
    assert parse_header(buf, 0, len(buf)) == (0x81, 3, 3, 2)
    assert parse_header(buf, len(first), len(buf)) == (0x82, 0x80 | 126, 300, 8)
    # ``end`` bounds the view even when the buffer holds more bytes.
    assert parse_header(buf, len(first), len(first) + 7) is None
    assert parse_header(buf, len(first), len(first) + 8) == (0x82, 0x80 | 126, 300, 8)


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize(
    "length",
    [1 << 63, (1 << 64) - 1, (1 << 63) + 65536],
    ids=["msb", "all-ones", "msb-plus-valid"],
)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_parse_header_rejects_64_bit_length_with_msb_set(length: int, masked: bool) -> None:
    header = bytes((0x82, (0x80 if masked else 0) | 127)) + struct.pack("!Q", length)
    with pytest.raises(ProtocolError) as info:
        parse_header(header, 0, len(header))
    assert info.value.close_code == 1002


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535])
def test_parse_header_rejects_non_minimal_64_bit_length(length: int) -> None:
    header = bytes((0x82, 127)) + struct.pack("!Q", length)
    with pytest.raises(ProtocolError) as info:
        parse_header(header, 0, len(header))
    assert info.value.close_code == 1002


@pytest.mark.usefixtures("frame_kernels")
@pytest.mark.parametrize("length", [0, 1, 125])
def test_parse_header_rejects_non_minimal_16_bit_length(length: int) -> None:
    header = bytes((0x82, 126)) + struct.pack("!H", length)
    with pytest.raises(ProtocolError) as info:
        parse_header(header, 0, len(header))
    assert info.value.close_code == 1002


@pytest.mark.usefixtures("frame_kernels")
def test_parse_header_accepts_the_smallest_minimal_extended_lengths() -> None:
    header16 = bytes((0x82, 126)) + struct.pack("!H", 126)
    header64 = bytes((0x82, 127)) + struct.pack("!Q", 65536)
    largest = bytes((0x82, 127)) + struct.pack("!Q", (1 << 63) - 1)
    assert parse_header(header16, 0, 4) == (0x82, 126, 126, 4)
    assert parse_header(header64, 0, 10) == (0x82, 127, 65536, 10)
    assert parse_header(largest, 0, 10) == (0x82, 127, (1 << 63) - 1, 10)


def _outcome(function: Any, *args: Any, **kwargs: Any) -> Any:
    """What a call returns, or the type and message of what it raises."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        return type(exc), str(exc)


def _compiled_frames() -> Any:
    return pytest.importorskip("nanosocket._speedups._frames")


# Inputs off the compiled fast paths: each must give the spec's result or the spec's error.
ODD_BUILDS = [
    (TEXT, memoryview(b"abc"), {}),
    (TEXT, memoryview(b"abc"), {"mask_key": MASK}),
    (TEXT, bytearray(b"abc"), {"mask_key": MASK}),
    (256, b"x", {}),
    (-1, b"x", {}),
    (300, bytes(200), {}),
    (300, bytes(70000), {}),
    (TEXT, "text", {}),
    (TEXT, b"x", {"mask_key": b"abc"}),
    (TEXT, b"x", {"mask_key": bytearray(MASK)}),
    (TEXT, b"x", {"mask_key": "abcd"}),
    (True, b"x", {}),
    (1.0, b"x", {}),
    (TEXT, b"x", {"fin": 0, "rsv1": 1}),
    (0xFF, b"", {"fin": False}),
]


@pytest.mark.parametrize(("opcode", "payload", "options"), ODD_BUILDS)
def test_compiled_build_frame_gives_the_specs_result_on_any_input(
    opcode: Any, payload: Any, options: dict[str, Any]
) -> None:
    compiled = _compiled_frames().build_frame
    assert _outcome(compiled, opcode, payload, **options) == _outcome(
        py_build_frame, opcode, payload, **options
    )


@pytest.mark.parametrize(
    ("buf", "pos", "end"),
    [
        (memoryview(b"\x81\x05hello"), 0, 7),
        (b"\x81\x05hello", -7, 7),
        (b"\x81\x05hello", 0, 70),
        (b"\x81\x05hello", 5, 2),
        (bytearray(b"\x00\x81\x05"), 1, 3),
        ("\x81\x05", 0, 2),
        (b"\x81\x05", 0.0, 2),
    ],
)
def test_compiled_parse_header_gives_the_specs_result_on_any_input(buf: Any, pos: Any, end: Any) -> None:
    compiled = _compiled_frames().parse_header
    assert _outcome(compiled, buf, pos, end) == _outcome(py_parse_header, buf, pos, end)


@given(st.binary(max_size=16), st.integers(0, 16), st.integers(0, 16))
def test_compiled_parse_header_agrees_with_the_spec(data: bytes, pos: int, end: int) -> None:
    compiled = _compiled_frames().parse_header
    end = min(end, len(data))
    assert _outcome(compiled, data, pos, end) == _outcome(py_parse_header, data, pos, end)
    assert _outcome(compiled, bytearray(data), pos, end) == _outcome(py_parse_header, data, pos, end)


@given(
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=300) | st.sampled_from([bytes(65535), bytes(65536)]),
    fin=st.booleans(),
    rsv1=st.booleans(),
    mask_key=st.none() | st.binary(min_size=4, max_size=4),
)
def test_compiled_build_frame_agrees_with_the_spec(
    opcode: int, payload: bytes, fin: bool, rsv1: bool, mask_key: bytes | None
) -> None:
    compiled = _compiled_frames().build_frame
    expected = py_build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask_key=mask_key)
    assert compiled(opcode, payload, fin=fin, rsv1=rsv1, mask_key=mask_key) == expected
    assert compiled(opcode, bytearray(payload), fin=fin, rsv1=rsv1, mask_key=mask_key) == expected


# ------------------------------------------------------------------- apply_mask


def _mask_kernels() -> list[Any]:
    """The pure-Python spec and, when it was built, its compiled twin: both must agree."""
    kernels = [pytest.param(py_apply_mask, id="python")]
    try:
        from nanosocket._speedups._frames import apply_mask as compiled
    except ImportError:
        pass
    else:
        kernels.append(pytest.param(compiled, id="compiled"))
    return kernels


MASK_KERNELS = _mask_kernels()


@pytest.mark.parametrize("kernel", MASK_KERNELS)
@pytest.mark.parametrize(
    "n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 79, 80, 81, 125, 128, 129, 1000, 65537]
)
def test_apply_mask_matches_bytewise_xor(kernel: Any, n: int) -> None:
    data = payload_of(n)
    masked = kernel(data, MASK)
    assert masked == naive_mask(data, MASK)
    assert kernel(masked, MASK) == data


@pytest.mark.parametrize("kernel", MASK_KERNELS)
def test_apply_mask_accepts_bytearray_and_memoryview(kernel: Any) -> None:
    data = b"\x00\xff" * 11
    expected = naive_mask(data, b"\x01\x02\x03\x04")
    assert kernel(bytearray(data), b"\x01\x02\x03\x04") == expected
    assert kernel(memoryview(b"junk" + data)[4:], b"\x01\x02\x03\x04") == expected
    assert isinstance(kernel(bytearray(data), b"\x01\x02\x03\x04"), bytes)


def test_the_compiled_twin_is_in_use_when_built_and_allowed() -> None:
    """``make test`` sets NANOSOCKET_REQUIRE_SPEEDUPS=1: there the build must have compiled."""
    from nanosocket._speedups import enabled

    compiled = len(MASK_KERNELS) == 2
    assert len(FRAME_KERNELS) == len(MASK_KERNELS)
    if os.environ.get("NANOSOCKET_REQUIRE_SPEEDUPS") == "1" and enabled():
        assert compiled, "the compiled speedups were not built"
    if compiled and enabled():
        assert apply_mask is not py_apply_mask
        assert build_frame is not py_build_frame
        assert parse_header is not py_parse_header
    if not enabled():
        assert apply_mask is py_apply_mask
        assert build_frame is py_build_frame
        assert parse_header is py_parse_header


def test_apply_mask_keeps_leading_and_trailing_zero_bytes() -> None:
    # A big-integer XOR must not drop the zero bytes at either end of the result.
    assert apply_mask(bytes(4), MASK) == MASK
    assert apply_mask(MASK * 3, MASK) == bytes(12)
    assert apply_mask(MASK[:3], MASK) == bytes(3)


# ------------------------------------------------------------------ close codes


def spec_valid_close_code(code: int) -> bool:
    """RFC 6455 §7.4: codes a close frame may carry."""
    defined = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}
    iana_registered = {1012, 1013, 1014}
    return code in defined or code in iana_registered or 3000 <= code <= 4999


def test_is_valid_close_code_over_the_whole_range() -> None:
    for code in range(65536):
        assert is_valid_close_code(code) == spec_valid_close_code(code), code


def test_close_code_values() -> None:
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "UNSUPPORTED_DATA": 1003,
        "NO_STATUS": 1005,
        "ABNORMAL": 1006,
        "INVALID_PAYLOAD": 1007,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "MANDATORY_EXTENSION": 1010,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
    }
    assert not is_valid_close_code(CloseCode.NO_STATUS)
    assert not is_valid_close_code(CloseCode.ABNORMAL)


def test_encode_close() -> None:
    assert encode_close(None) == b""
    assert encode_close(1000) == b"\x03\xe8"
    assert encode_close(1001, "bye") == b"\x03\xe9bye"
    assert encode_close(4999, "é") == b"\x13\x87\xc3\xa9"


@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_encode_close_truncates_a_long_reason_on_a_character_boundary(char: str) -> None:
    payload = encode_close(1000, char * 200)
    assert len(payload) <= 125
    assert len(payload) > 125 - len(char.encode("utf-8"))
    code, reason = parse_close(payload)
    assert code == 1000
    assert reason == char * len(reason)


def test_encode_close_keeps_a_reason_of_exactly_123_bytes() -> None:
    payload = encode_close(1000, "r" * 123)
    assert len(payload) == 125
    assert parse_close(payload) == (1000, "r" * 123)


def test_parse_close_valid() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(b"\x03\xe8") == (1000, "")
    assert parse_close(b"\x03\xe8done") == (1000, "done")
    assert parse_close(encode_close(3000, "ünïcode")) == (3000, "ünïcode")


def test_parse_close_one_byte() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03")
    assert info.value.close_code == 1002


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_parse_close_invalid_code(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(struct.pack("!H", code))
    assert type(info.value) is ProtocolError
    assert info.value.close_code == 1002


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_parse_close_reason_not_utf8(reason: bytes) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_close(b"\x03\xe8" + reason)
    assert info.value.close_code == 1007
