"""The envelope codec's event frames: the pure-Python ``py_event_frame`` (the spec) and, when it
was built, its compiled twin (``_speedups/_envelope.pyx``), on the same inputs.

Decoding and validation of envelopes are tested through the server (tests/server/test_connection.py).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanosocket._speedups import enabled as speedups_enabled
from nanosocket.errors import ProtocolError
from nanosocket.protocol import envelope
from nanosocket.protocol.envelope import (
    PEER_RESERVED_EVENTS,
    check_message_id,
    encode_kept_ack,
    encode_reply_body,
    py_ack_frame,
    py_decode_event,
    py_event_frame,
    read_envelope,
)
from nanosocket.protocol.frames import BINARY, TEXT


def _implementations(spec: Any, name: str) -> list[Any]:
    """The pure-Python ``spec`` and, when it was built, its compiled twin ``_envelope.<name>``."""
    found = [pytest.param(spec, id="python")]
    try:
        from nanosocket._speedups import _envelope
    except ImportError:
        pass
    else:
        found.append(pytest.param(getattr(_envelope, name), id="compiled"))
    return found


IMPLEMENTATIONS = _implementations(py_event_frame, "event_frame")


def _outcome(function: Any, *args: Any) -> Any:
    """What a call returns, or the type and message of what it raises."""
    try:
        return function(*args)
    except Exception as exc:
        return type(exc), str(exc)


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked frame; fails unless the frame is exactly that."""
    first, second = frame[0], frame[1]
    assert not second & 0x80, "server frames are not masked"
    length, pos = second & 0x7F, 2
    if length == 126:
        (length,) = struct.unpack_from("!H", frame, 2)
        assert length >= 126
        pos = 4
    elif length == 127:
        (length,) = struct.unpack_from("!Q", frame, 2)
        assert length >= 65536
        pos = 10
    assert len(frame) == pos + length
    return first, frame[pos:]


def test_the_compiled_twin_is_selected_when_built_and_allowed() -> None:
    compiled = len(IMPLEMENTATIONS) == 2
    if os.environ.get("NANOSOCKET_REQUIRE_SPEEDUPS") == "1" and speedups_enabled():
        assert compiled, "the compiled speedups were not built"
    if compiled and speedups_enabled():
        assert envelope.event_frame is not py_event_frame
    else:
        assert envelope.event_frame is py_event_frame


@pytest.mark.parametrize("event_frame", IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [0, 90, 91, 65500, 65600])
def test_a_json_event_is_one_text_frame(event_frame: Any, size: int) -> None:
    # 90 + the 35 bytes around it = 125: the last 7-bit length; 91 needs the 16-bit one.
    data = "x" * size
    first, payload = split_frame(event_frame("echo", (data,)))
    assert first == 0x80 | TEXT
    assert payload == orjson.dumps({"event": "echo", "data": [data]})


@pytest.mark.parametrize("event_frame", IMPLEMENTATIONS)
def test_arguments_with_bytes_are_one_binary_msgpack_frame(event_frame: Any) -> None:
    first, payload = split_frame(event_frame("file", (b"\x00\xff", {"name": "a"})))
    assert first == 0x80 | BINARY
    assert msgpack.unpackb(payload) == {"event": "file", "data": [b"\x00\xff", {"name": "a"}]}


@pytest.mark.parametrize("event_frame", IMPLEMENTATIONS)
@pytest.mark.parametrize("event", ["", "$ping", "a\x00b", 7, None, *sorted(PEER_RESERVED_EVENTS)], ids=repr)
def test_names_that_cannot_be_emitted_raise_the_specs_error(event_frame: Any, event: Any) -> None:
    with pytest.raises(ValueError, match="cannot emit"):
        event_frame(event, ())
    assert _outcome(event_frame, event, ()) == _outcome(py_event_frame, event, ())


@pytest.mark.parametrize("event_frame", IMPLEMENTATIONS)
def test_arguments_no_codec_takes_raise_the_specs_error(event_frame: Any) -> None:
    for args in [(object(),), ({1, 2},), (b"x", object())]:
        outcome = _outcome(event_frame, "ok", args)
        assert outcome[0] is TypeError
        assert outcome == _outcome(py_event_frame, "ok", args)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children),
    max_leaves=10,
)


@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(
    event=st.text(min_size=1, max_size=12) | st.sampled_from(["$x", "error", "échö"]),
    args=st.lists(JSON_VALUES | st.binary(max_size=8), max_size=3).map(tuple),
)
def test_the_compiled_twin_gives_the_specs_frame(event: str, args: tuple[Any, ...]) -> None:
    compiled = IMPLEMENTATIONS[1].values[0]
    assert _outcome(compiled, event, args) == _outcome(py_event_frame, event, args)


# Arguments the compiled twin writes itself (ASCII strings needing no escape, ints of a long
# long, bools, None) and their near misses, which orjson writes: the same bytes either way.
PLAIN_ARGUMENTS = [
    (),
    ("x",),
    ("", " ", "/", "\x7f", "~", "a'b"),
    ('a"b',),
    ("a\\b",),
    ("a\nb", "\x00", "\x1f"),
    ("été",),
    ("\u2028",),
    (0, -0, 1, -1, 9, 10, -10, 99, -100, 1234567890),
    (2**63 - 1, -(2**63)),
    (2**63, 2**64 - 1, -(2**63) - 1, 2**64),
    (True, False, None),
    (1, "x", None, True, -7, "y", False),
    (1.5,),
    ([1, "x"],),
    ({"k": "v"},),
]


class _Name(str):
    pass


class _Number(int):
    pass


@pytest.mark.parametrize("event_frame", IMPLEMENTATIONS)
@pytest.mark.parametrize("args", [*PLAIN_ARGUMENTS, (_Name("x"),), (_Number(3),)], ids=repr)
def test_plain_arguments_and_their_near_misses_give_the_specs_frame(
    event_frame: Any, args: tuple[Any, ...]
) -> None:
    assert _outcome(event_frame, "echo", args) == _outcome(py_event_frame, "echo", args)
    assert _outcome(event_frame, "echo", list(args)) == _outcome(py_event_frame, "echo", list(args))


PLAIN_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
    | st.text(max_size=3)
)


@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(args=st.lists(PLAIN_SCALARS, max_size=5).map(tuple))
def test_the_compiled_twin_writes_plain_arguments_as_the_spec(args: tuple[Any, ...]) -> None:
    compiled = IMPLEMENTATIONS[1].values[0]
    assert _outcome(compiled, "echo", args) == _outcome(py_event_frame, "echo", args)


def _strings_around_the_scanners_steps() -> list[str]:
    """Strings of lengths around the 8- and 16-byte steps of the compiled scanners, with a
    character that stops a plain string (or one that does not) at every position."""
    strings = []
    for size in (7, 8, 9, 15, 16, 17, 31, 32, 33, 47):
        for pos in range(size):
            for char in ('"', "\\", "\x1f", "\x00", "\n", "\x7f", " ", "~", "\xe9"):
                strings.append("a" * pos + char + "b" * (size - pos - 1))
    return strings


@pytest.mark.skipif(len(IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
def test_strings_with_a_character_to_escape_anywhere_are_written_and_read_as_the_spec() -> None:
    compiled_frame = IMPLEMENTATIONS[1].values[0]
    compiled_decode = DECODE_IMPLEMENTATIONS[1].values[0]
    for text in _strings_around_the_scanners_steps():
        assert _outcome(compiled_frame, "echo", (text,)) == _outcome(py_event_frame, "echo", (text,)), text
        for array in (orjson.dumps([text]).decode(), '["' + text + '"]'):
            message = '{"event":"echo","data":' + array + "}"
            assert repr(_outcome(compiled_decode, message)) == repr(_outcome(py_decode_event, message)), text


# ---------------------------------------------------------------------------- ack frames


ACK_IMPLEMENTATIONS = _implementations(py_ack_frame, "ack_frame")


def test_the_compiled_ack_frame_is_selected_when_built_and_allowed() -> None:
    if len(ACK_IMPLEMENTATIONS) == 2 and speedups_enabled():
        assert envelope.ack_frame is not py_ack_frame
    else:
        assert envelope.ack_frame is py_ack_frame


@pytest.mark.parametrize("ack_frame", ACK_IMPLEMENTATIONS)
@pytest.mark.parametrize("size", [0, 100, 70000])
def test_an_ack_reply_is_one_text_frame(ack_frame: Any, size: int) -> None:
    first, payload = split_frame(ack_frame(7, ["x" * size]))
    assert first == 0x80 | TEXT
    assert payload == orjson.dumps({"ack": 7, "data": ["x" * size]})


@pytest.mark.parametrize("ack_frame", ACK_IMPLEMENTATIONS)
def test_an_ack_reply_with_bytes_is_binary_and_unencodable_ones_raise(ack_frame: Any) -> None:
    first, payload = split_frame(ack_frame(2**53 - 1, [b"\x01"]))
    assert first == 0x80 | BINARY
    assert msgpack.unpackb(payload) == {"ack": 2**53 - 1, "data": [b"\x01"]}
    outcome = _outcome(ack_frame, 1, [object()])
    assert outcome[0] is TypeError
    assert outcome == _outcome(py_ack_frame, 1, [object()])


@pytest.mark.parametrize("ack_frame", ACK_IMPLEMENTATIONS)
@pytest.mark.parametrize("results", PLAIN_ARGUMENTS, ids=repr)
@pytest.mark.parametrize("ack", [0, 7, 2**53 - 1, 2**63 - 1, 2**63, True], ids=repr)
def test_plain_results_and_their_near_misses_give_the_specs_ack_frame(
    ack_frame: Any, results: tuple[Any, ...], ack: int
) -> None:
    assert _outcome(ack_frame, ack, list(results)) == _outcome(py_ack_frame, ack, list(results))
    assert _outcome(ack_frame, ack, results) == _outcome(py_ack_frame, ack, results)


@pytest.mark.skipif(len(ACK_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(ack=st.integers(0, 2**64), results=st.lists(PLAIN_SCALARS, max_size=4))
def test_the_compiled_twin_writes_plain_results_as_the_spec(ack: int, results: list[Any]) -> None:
    compiled = ACK_IMPLEMENTATIONS[1].values[0]
    assert _outcome(compiled, ack, results) == _outcome(py_ack_frame, ack, results)


@pytest.mark.skipif(len(ACK_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(ack=st.integers(0, 2**53 - 1), results=st.lists(JSON_VALUES | st.binary(max_size=8), max_size=3))
def test_the_compiled_twin_gives_the_specs_ack_frame(ack: int, results: list[Any]) -> None:
    compiled = ACK_IMPLEMENTATIONS[1].values[0]
    assert _outcome(compiled, ack, results) == _outcome(py_ack_frame, ack, results)


# --------------------------------------------------------------------------- decoding


DECODE_IMPLEMENTATIONS = _implementations(py_decode_event, "decode_event")


def test_the_compiled_decode_event_is_selected_when_built_and_allowed() -> None:
    if len(DECODE_IMPLEMENTATIONS) == 2 and speedups_enabled():
        assert envelope.decode_event is not py_decode_event
    else:
        assert envelope.decode_event is py_decode_event


@pytest.mark.parametrize("decode_event", DECODE_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"event":"echo","data":["x"]}', ("echo", ["x"], None)),
        ('{"event":"echo","data":[],"ack":0}', ("echo", [], 0)),
        ('{"event":"echo","data":[1],"ack":9007199254740991}', ("echo", [1], 2**53 - 1)),
        # Everything read_envelope must look at comes back decoded, unsorted.
        ('{"event":"echo","data":[],"ack":null}', {"event": "echo", "data": [], "ack": None}),
        ('{"event":"echo","data":[],"ack":-1}', {"event": "echo", "data": [], "ack": -1}),
        ('{"event":"echo","data":[],"ack":9007199254740992}', {"event": "echo", "data": [], "ack": 2**53}),
        ('{"event":"echo","data":[],"ack":true}', {"event": "echo", "data": [], "ack": True}),
        ('{"event":"echo","data":[],"ack":1.0}', {"event": "echo", "data": [], "ack": 1.0}),
        ('{"event":"echo","data":"bare"}', {"event": "echo", "data": "bare"}),
        ('{"event":"","data":[]}', {"event": "", "data": []}),
        ('{"event":"a\\u0000b","data":[]}', {"event": "a\x00b", "data": []}),
        ('{"event":7,"data":[]}', {"event": 7, "data": []}),
        ('{"ack":3,"data":[1]}', {"ack": 3, "data": [1]}),
        # A batch: each of its envelopes sorted the same way.
        ('[{"event":"a","data":[]}]', [("a", [], None)]),
        (
            '[{"event":"a","data":[1],"ack":2},{"ack":3,"data":[1]},{"event":"b","data":"x"},7]',
            [("a", [1], 2), {"ack": 3, "data": [1]}, {"event": "b", "data": "x"}, 7],
        ),
        ("[]", []),
        ('"text"', "text"),
        # A client message id (at-least-once emits) takes the general path too.
        (
            '{"event":"a","data":[],"ack":1,"mid":"abcdefgh-1"}',
            {"event": "a", "data": [], "ack": 1, "mid": "abcdefgh-1"},
        ),
        ('{"event":"a","data":[],"mid":"abcdefgh-1"}', {"event": "a", "data": [], "mid": "abcdefgh-1"}),
        # Other extra keys (original nano-socket clients' id and timestamp) do not.
        ('{"event":"a","data":[],"ack":1,"id":"x","timestamp":1}', ("a", [], 1)),
        ('{"event":"a","data":[2],"id":"x"}', ("a", [2], None)),
    ],
)
def test_events_are_sorted_from_everything_else(decode_event: Any, text: str, expected: Any) -> None:
    decoded = decode_event(text)
    assert decoded == expected
    assert type(decoded) is type(expected)
    assert decode_event(msgpack.packb(orjson.loads(text))) == expected


@pytest.mark.parametrize("decode_event", DECODE_IMPLEMENTATIONS)
def test_malformed_frames_raise_the_specs_errors(decode_event: Any) -> None:
    for message in ["{", "", '{"event":"a"', b"\xc1", b"\xd6\xff\x00\x00\x00\x00"]:
        outcome = _outcome(decode_event, message)
        assert isinstance(outcome, tuple)
        assert issubclass(outcome[0], ProtocolError)
        assert outcome == _outcome(py_decode_event, message)


@pytest.mark.skipif(len(DECODE_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(
    envelope_=st.fixed_dictionaries(
        {},
        optional={
            "event": st.text(max_size=6) | st.integers(-(2**63), 2**63 - 1),
            "data": JSON_VALUES,
            "ack": st.none() | st.booleans() | st.integers(-2, 2**54),
            "mid": st.text(max_size=3),
            "id": st.text(max_size=3),
        },
    )
    | JSON_VALUES,
    binary=st.booleans(),
)
def test_the_compiled_twin_decodes_as_the_spec(envelope_: Any, binary: bool) -> None:
    compiled = DECODE_IMPLEMENTATIONS[1].values[0]
    message = msgpack.packb(envelope_) if binary else orjson.dumps(envelope_).decode()
    assert _outcome(compiled, message) == _outcome(py_decode_event, message)


# Texts written the way clients write events, and near misses of that layout: the compiled twin
# reads the exact layout without building the envelope, anything else as the spec does.
PLAIN_LAYOUT_TEXTS = [
    '{"event":"echo","data":["x"]}',
    '{"event":"echo","data":[]}',
    '{"event":"echo","data":[{"k":"}"},"]}"]}',
    '{"event":"echo","data":[1],"data":[2]}',
    '{"event":"echo","data":[1],"event":"other"}',
    '{"event":"echo","data":[1],"ack":3}',
    '{"event":"echo","data":[1]} ',
    '{"event":"echo","data": [1]}',
    '{"event":"echo","data":"x"}',
    '{"event":"echo","data":[1]',
    '{"event":"echo","data":[1]}}',
    '{"event":"echo","data":[1]]}',
    '{"event":"","data":[]}',
    '{"event":"a\\"b","data":[]}',
    '{"event":"a\\u0000b","data":[]}',
    '{"event":"a\tb","data":[]}',
    '{"event":"\u00e9t\u00e9","data":[]}',
    '{"event":"été","data":["é"]}',
    '{"event":"echo","data":["\u0000"]}',
    '{"event":"echo,"data":[]}',
    '{"event":"echo","data":[1,]}',
    '{"event":"echo","data":[NaN]}',
    '{"event":"call","data":["x"],"ack":7}',
    '{"event":"call","data":[],"ack":0}',
    '{"event":"call","data":[],"ack":07}',
    '{"event":"call","data":[],"ack":-1}',
    '{"event":"call","data":[],"ack":9007199254740991}',
    '{"event":"call","data":[],"ack":9007199254740992}',
    '{"event":"call","data":[],"ack":99999999999999999999}',
    '{"event":"call","data":[],"ack":1.0}',
    '{"event":"call","data":[],"ack":}',
    '{"event":"call","data":[],"ack":1,"ack":2}',
    '{"event":"call","data":[],"ack":[1],"ack":2}',
    '{"event":"call","data":[1],"data":[2],"ack":2}',
    '{"event":"call","data":"x","ack":2}',
    '{"event":"call","data":[] ,"ack":2}',
    '{"event":"call","data":[],"ack" :2}',
    '{"event":"call","data":[],"mid":"abcdefgh-1","ack":2}',
    '{"event":"call","data":[],"ack":2,"mid":"abcdefgh-1"}',
    '{"event":"call","data":[],"id":"x","timestamp":1}',
]


@pytest.mark.parametrize("decode_event", DECODE_IMPLEMENTATIONS)
@pytest.mark.parametrize("text", PLAIN_LAYOUT_TEXTS)
def test_the_client_layout_and_its_near_misses_decode_as_the_spec(decode_event: Any, text: str) -> None:
    assert _outcome(decode_event, text) == _outcome(py_decode_event, text)


# Argument arrays the compiled twin reads itself (strings without escapes, integers of up to 18
# digits, true, false, null, no whitespace) and near misses of them, which orjson reads. Compared
# by repr: True and 1, or 1 and 1.0, are equal but not the same value.
PLAIN_ARRAYS = [
    "[]",
    '[""]',
    '["a",1,-0,0,true,false,null,-123,"~\x7f/"]',
    "[123456789012345678,-123456789012345678]",
    "[1234567890123456789]",
    "[-9223372036854775808]",
    "[99999999999999999999]",
    "[01]",
    "[-01]",
    "[-]",
    "[1.0]",
    "[1e5]",
    "[1E5]",
    "[-1.5e-3]",
    "[tru]",
    "[truex]",
    "[true,]",
    "[nul]",
    "[nulls]",
    "[fals]",
    '["a\\u0041"]',
    '["a\\"b"]',
    '["a\tb"]',
    '["a",]',
    '[,"a"]',
    '["a" ,1]',
    '["a",1 ]',
    '[ "a"]',
    '["a"1]',
    '["a""b"]',
    '["a]',
    '["a"],["b"]',
    "[[1],2]",
    '[{"a":1}]',
    "[1,,2]",
]


@pytest.mark.parametrize("decode_event", DECODE_IMPLEMENTATIONS)
@pytest.mark.parametrize("array", PLAIN_ARRAYS)
@pytest.mark.parametrize("ack", ["", ',"ack":4'])
def test_plain_argument_arrays_and_their_near_misses_decode_as_the_spec(
    decode_event: Any, array: str, ack: str
) -> None:
    text = '{"event":"echo","data":' + array + ack + "}"
    assert repr(_outcome(decode_event, text)) == repr(_outcome(py_decode_event, text))


ARRAY_PIECES = [
    '"a"',
    '""',
    '"\\n"',
    "1",
    "-1",
    "0",
    "-0",
    "12",
    "1.5",
    "true",
    "false",
    "null",
    ",",
    " ",
    "[",
    "]",
    "-",
    "e",
]


@pytest.mark.skipif(len(DECODE_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(
    items=st.lists(st.sampled_from(ARRAY_PIECES) | st.integers(-(2**64), 2**64).map(str), max_size=8).map(
        "".join
    )
)
def test_any_argument_array_decodes_as_the_spec(items: str) -> None:
    compiled = DECODE_IMPLEMENTATIONS[1].values[0]
    text = '{"event":"echo","data":[' + items + "]}"
    assert repr(_outcome(compiled, text)) == repr(_outcome(py_decode_event, text))


@pytest.mark.skipif(len(DECODE_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(
    names=st.lists(
        st.text(alphabet="ab$-_", min_size=1, max_size=4) | st.sampled_from(["a" * 64, "a" * 65, "b" * 65]),
        min_size=1,
        max_size=40,
    )
)
def test_event_names_read_one_after_another_are_each_their_own(names: list[str]) -> None:
    # The twin keeps the names it read last (by length and ends, so "ab" and "aab" or "a-b" and
    # "a_b" meet in one place): each message still gets its own name.
    compiled = DECODE_IMPLEMENTATIONS[1].values[0]
    for name in names * 2:
        event, args, ack = compiled('{"event":"' + name + '","data":[1]}')
        assert (event, args, ack) == (name, [1], None)
        assert type(event) is str


# Pieces of envelopes and of JSON, put together at random after the event layout's beginning.
LAYOUT_PIECES = ["[", "]", "{", "}", '"', ",", ":", "0", "1", "7", " ", "\\", "a", ',"ack":', "[1]"]


@pytest.mark.skipif(len(DECODE_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(
    name=st.text(max_size=5),
    rest=st.lists(st.sampled_from(LAYOUT_PIECES), max_size=10).map("".join),
    in_a_batch=st.booleans(),
)
def test_any_text_after_the_event_layout_decodes_as_the_spec(name: str, rest: str, in_a_batch: bool) -> None:
    compiled = DECODE_IMPLEMENTATIONS[1].values[0]
    text = '{"event":"' + name + '","data":' + rest + "}"
    if in_a_batch:  # after an envelope the batch reader takes
        text = '[{"event":"a","data":[1]},' + text + "]"
    assert repr(_outcome(compiled, text)) == repr(_outcome(py_decode_event, text))


# Batches as clients write them (plain envelopes, which the twin reads itself) and near misses
# of that layout (read by orjson, then sorted one by one).
BATCH_TEXTS = [
    "[" + ",".join([PLAIN_LAYOUT_TEXTS[0]] * 3) + "]",
    '[{"event":"a","data":[1]},{"event":"b","data":["x",true],"ack":0},{"event":"a","data":[]}]',
    '[{"event":"a","data":[1]} ,{"event":"b","data":[]}]',
    '[{"event":"a","data":[1]},]',
    '[,{"event":"a","data":[1]}]',
    '[{"event":"a","data":[1]}{"event":"a","data":[1]}]',
    '[{"event":"a","data":[1]},{"event":"a","data":[{"k":1}]}]',
    '[{"event":"a","data":[1]},{"event":"a","data":[1.5]}]',
    '[{"event":"a","data":[1]},{"ack":1,"data":[]}]',
    '[{"event":"a","data":[1]},{"event":"a","data":[],"mid":"abcdefgh-1","ack":1}]',
    '[{"event":"a","data":[1],"ack":1,"ack":2}]',
    '[{"event":"a","data":[1],"ack":01}]',
    '[{"event":"a","data":[1],"ack":9007199254740992}]',
    '[{"event":"a","data":[1],"ack":12345678901234567}]',
    '[{"event":"a","data":[1]}]]',
    '[[{"event":"a","data":[1]}]]',
    '[{"event":"a","data":[1]}',
    '[{"event":"a","data":[1]]',
    '[{"event":"a","data":["]"]},{"event":"a","data":["},{"]}]',
    '[{"event":"été","data":[1]}]',
    '[{"event":"a","data":[1]},"x"]',
    '[{"event":"a","data":X1]}]',
    '[{"event":"a","data":{1]}]',
    '[{"event":"a","data":1]}]',
]


@pytest.mark.parametrize("decode_event", DECODE_IMPLEMENTATIONS)
@pytest.mark.parametrize("text", BATCH_TEXTS + ["[" + text + "]" for text in PLAIN_LAYOUT_TEXTS])
def test_batches_and_their_near_misses_decode_as_the_spec(decode_event: Any, text: str) -> None:
    assert repr(_outcome(decode_event, text)) == repr(_outcome(py_decode_event, text))


@pytest.mark.parametrize("decode_event", DECODE_IMPLEMENTATIONS)
def test_a_batch_over_the_limit_comes_back_unsorted(decode_event: Any) -> None:
    item = '{"event":"a","data":[1]}'
    full = decode_event("[" + ",".join([item] * envelope.MAX_BATCH) + "]")
    assert full == [("a", [1], None)] * envelope.MAX_BATCH
    over = decode_event("[" + ",".join([item] * (envelope.MAX_BATCH + 1)) + "]")
    assert over == [{"event": "a", "data": [1]}] * (envelope.MAX_BATCH + 1)
    assert decode_event(msgpack.packb([{"event": "a", "data": [1]}] * (envelope.MAX_BATCH + 1))) == over


@pytest.mark.skipif(len(DECODE_IMPLEMENTATIONS) < 2, reason="the compiled twin was not built")
@given(
    pieces=st.lists(
        st.sampled_from(PLAIN_LAYOUT_TEXTS + BATCH_TEXTS + LAYOUT_PIECES), min_size=1, max_size=6
    ),
    separator=st.sampled_from([",", ", ", ""]),
)
def test_any_batch_of_layouts_and_pieces_decodes_as_the_spec(pieces: list[str], separator: str) -> None:
    compiled = DECODE_IMPLEMENTATIONS[1].values[0]
    text = "[" + separator.join(pieces) + "]"
    assert repr(_outcome(compiled, text)) == repr(_outcome(py_decode_event, text))


@pytest.mark.parametrize(
    ("mid", "problem"),
    [
        ("abcdefgh", None),
        ("A" * 64, None),
        ("aZ09_-aZ09_-", None),
        ("abcdefg", "mid must be 8 to 64 characters long, got 7"),
        ("a" * 65, "mid must be 8 to 64 characters long, got 65"),
        ("abcdefg!", "mid may only hold the characters A-Z a-z 0-9 _ -"),
        ("abcdefgé", "mid may only hold the characters A-Z a-z 0-9 _ -"),
        (12345678, "mid must be a string, got int"),
        (None, "mid must be a string, got NoneType"),
    ],
)
def test_message_ids_are_checked(mid: Any, problem: str | None) -> None:
    assert check_message_id(mid) == problem


@pytest.mark.parametrize(
    "value", [[{"x": 1}], [b"\x00\xff"], {"message": "boom", "type": "ValueError"}, [None]]
)
@pytest.mark.parametrize("ack", [0, 7, 2**53 - 1])
def test_a_kept_reply_is_sent_again_under_any_ack_id(value: Any, ack: int) -> None:
    body, binary = encode_reply_body(value)
    error = isinstance(value, dict)
    frame = encode_kept_ack(ack, error, body, binary)
    decoded = msgpack.unpackb(frame, raw=False) if binary else orjson.loads(frame)
    assert decoded == {"ack": ack, ("error" if error else "data"): value}
    assert read_envelope(decoded)[2] == ack


def test_a_reply_no_codec_takes_raises_type_error() -> None:
    with pytest.raises(TypeError):
        encode_reply_body([object()])
    with pytest.raises(TypeError):
        encode_reply_body([b"x", object()])
