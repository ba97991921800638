"""The WebSocket state machine on both sides, driven with bytes built by build_frame.

Every test runs as a server (``client=False``: the peer masks its frames, we do not) and as a client
(``client=True``: the reverse) unless it is about one side only. What the connection queues for
the peer is read back with an independent frame reader, so a bug in the frame code cannot hide
itself.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import struct
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nanosocket.errors import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, InvalidPayload
from nanosocket.options import WebSocketOptions
from nanosocket.protocol.frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, build_frame
from nanosocket.protocol.websocket import State, WebSocketConnection, check_utf8_chunk

# Every test runs on the pure-Python spec and on its compiled twin (tests/protocol/conftest.py).
pytestmark = pytest.mark.usefixtures("connection_class")

PEER_MASK = b"\x37\xfa\x21\x3d"

Event = tuple[str, "str | bytes"]


class Recorder:
    """A FrameHandler that records what it is told, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def text_received(self, text: str) -> None:
        assert type(text) is str
        self.events.append(("text", text))

    def binary_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.events.append(("binary", data))

    def ping_received(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def pong_received(self, payload: bytes) -> None:
        self.events.append(("pong", payload))


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes
    masked: bool


def read_frames(data: bytes) -> list[Frame]:
    """Parse complete frames written by the code under test, without using it."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert first & 0x70 == 0, "reserved bits set in an outgoing frame"
        length = second & 0x7F
        pos += 2
        if length == 126:
            length = struct.unpack_from("!H", data, pos)[0]
            pos += 2
        elif length == 127:
            length = struct.unpack_from("!Q", data, pos)[0]
            pos += 8
        key = b""
        if second & 0x80:
            key = data[pos : pos + 4]
            pos += 4
        body = data[pos : pos + length]
        assert len(body) == length, "truncated outgoing frame"
        pos += length
        if key:
            body = bytes(b ^ key[i % 4] for i, b in enumerate(body))
        frames.append(Frame(bool(first & 0x80), first & 0x0F, body, bool(key)))
    return frames


class Peer:
    """One connection under test plus the means to talk to it as its peer would."""

    def __init__(self, client: bool, **options: Any) -> None:
        self.client = client
        self.recorder = Recorder()
        self.conn = WebSocketConnection(self.recorder, WebSocketOptions(**options), client=client)

    @property
    def events(self) -> list[Event]:
        return self.recorder.events

    def frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
        """A frame as the peer sends it: masked when the peer is a client."""
        return build_frame(opcode, payload, fin=fin, mask_key=None if self.client else PEER_MASK)

    def raw(self, first: int, payload: bytes = b"", *, masked: bool | None = None) -> bytes:
        """A short frame with an arbitrary first byte (reserved bits, reserved opcodes)."""
        if masked is None:
            masked = not self.client
        assert len(payload) < 126
        if not masked:
            return bytes((first, len(payload))) + payload
        body = bytes(b ^ PEER_MASK[i % 4] for i, b in enumerate(payload))
        return bytes((first, 0x80 | len(payload))) + PEER_MASK + body

    def header(self, opcode: int, length: int, *, fin: bool = True) -> bytes:
        """Only the header of a frame declaring ``length`` payload bytes."""
        first = opcode | (0x80 if fin else 0)
        mask_bit = 0 if self.client else 0x80
        if length < 126:
            head = bytes((first, mask_bit | length))
        elif length < 65536:
            head = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            head = struct.pack("!BBQ", first, mask_bit | 127, length)
        return head if self.client else head + PEER_MASK

    def feed(self, *chunks: bytes | bytearray) -> None:
        for chunk in chunks:
            self.conn.receive_data(chunk)

    def sent(self) -> list[Frame]:
        """What the connection queued, as frames; our side masks exactly when it is a client."""
        frames = read_frames(self.conn.data_to_send())
        for frame in frames:
            assert frame.masked == self.client
        return frames

    def sent_simple(self) -> list[tuple[int, bytes]]:
        return [(frame.opcode, frame.payload) for frame in self.sent()]


def state_of(conn: WebSocketConnection) -> State:
    """The state, read through a call so a type checker does not narrow it across feeds."""
    return conn.state


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def assert_failed(peer: Peer, code: int, events: list[Event] | None = None) -> None:
    """The connection failed with ``code``: CLOSED, one close frame queued, deaf from now on."""
    conn = peer.conn
    assert conn.state is State.CLOSED
    assert conn.closed
    assert conn.close_code == code
    frames = peer.sent()
    assert len(frames) == 1, frames
    assert frames[0].fin
    assert frames[0].opcode == CLOSE
    assert frames[0].payload[:2] == struct.pack("!H", code)
    assert events is None or peer.events == events
    before = list(peer.events)
    peer.feed(
        peer.frame(TEXT, b"late"),
        peer.frame(BINARY, b"late"),
        peer.frame(PING, b"late"),
        peer.frame(CLOSE, close_payload(1000)),
    )
    assert peer.events == before
    assert conn.data_to_send() == b""
    assert conn.close_code == code
    assert conn.state is State.CLOSED


@pytest.fixture(params=[False, True], ids=["server", "client"])
def client(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# ------------------------------------------------------------------ delivery


def test_starts_open(client: bool) -> None:
    peer = Peer(client)
    assert peer.conn.state is State.OPEN
    assert not peer.conn.closed
    assert peer.conn.close_code is None
    assert peer.conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("opcode", "payload", "event"),
    [
        (TEXT, b"", ("text", "")),
        (TEXT, "héllo wörld 😀".encode(), ("text", "héllo wörld 😀")),
        (TEXT, b"x" * 125, ("text", "x" * 125)),
        (TEXT, b"y" * 126, ("text", "y" * 126)),
        (TEXT, "é".encode() * 40000, ("text", "é" * 40000)),
        (BINARY, b"", ("binary", b"")),
        (BINARY, b"\x00\xff" * 100, ("binary", b"\x00\xff" * 100)),
        (BINARY, bytes(65535), ("binary", bytes(65535))),
        (BINARY, bytes(range(256)) * 300, ("binary", bytes(range(256)) * 300)),
    ],
    ids=[
        "empty-text",
        "text",
        "text-125",
        "text-126",
        "text-64bit",
        "empty-binary",
        "binary",
        "b-65535",
        "b-64bit",
    ],
)
def test_single_frame_message(client: bool, opcode: int, payload: bytes, event: Event) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(opcode, payload))
    assert peer.events == [event]
    assert peer.conn.data_to_send() == b""
    assert peer.conn.state is State.OPEN


def test_several_frames_in_one_feed(client: bool) -> None:
    peer = Peer(client)
    peer.feed(
        peer.frame(TEXT, b"one")
        + peer.frame(BINARY, b"\x02")
        + peer.frame(PING, b"are you there")
        + peer.frame(PONG, b"unsolicited")
        + peer.frame(TEXT, b"two", fin=False)
        + peer.frame(CONTINUATION, b" parts")
        + peer.frame(TEXT, b"three")
    )
    assert peer.events == [
        ("text", "one"),
        ("binary", b"\x02"),
        ("ping", b"are you there"),
        ("pong", b"unsolicited"),
        ("text", "two parts"),
        ("text", "three"),
    ]
    assert peer.sent_simple() == [(PONG, b"are you there")]


def _streams(peer: Peer) -> dict[str, tuple[list[bytes], list[Event]]]:
    f = peer.frame
    return {
        "text": ([f(TEXT, "h€llo 😀".encode())], [("text", "h€llo 😀")]),
        "binary-16bit": ([f(BINARY, bytes(range(200)))], [("binary", bytes(range(200)))]),
        "fragmented-with-control": (
            [
                f(TEXT, b"frag", fin=False),
                f(PING, b"p"),
                f(CONTINUATION, "men\xe2".encode("latin-1"), fin=False),
                f(PONG, b"q"),
                f(CONTINUATION, b"\x82\xact"),
            ],
            [("ping", b"p"), ("pong", b"q"), ("text", "frag" + "men€t")],
        ),
        "mixed": (
            [f(TEXT, b""), f(BINARY, b"b", fin=False), f(CONTINUATION, b""), f(PING, b""), f(TEXT, b"end")],
            [("text", ""), ("binary", b"b"), ("ping", b""), ("text", "end")],
        ),
        # Frames longer than any header: a partial one takes only the bytes it lacks from the next
        # read, whose rest is parsed in place.
        "longer-than-headers": (
            [
                f(TEXT, "ü".encode() * 20),
                f(BINARY, bytes(range(130))),
                f(PING, b"p" * 30),
                f(TEXT, b"x" * 15, fin=False),
                f(CONTINUATION, "€".encode() * 7),
                f(TEXT, b"end"),
            ],
            [
                ("text", "ü" * 20),
                ("binary", bytes(range(130))),
                ("ping", b"p" * 30),
                ("text", "x" * 15 + "€" * 7),
                ("text", "end"),
            ],
        ),
    }


@pytest.mark.parametrize(
    "name", ["text", "binary-16bit", "fragmented-with-control", "mixed", "longer-than-headers"]
)
def test_every_split_point_gives_the_same_result(client: bool, name: str) -> None:
    frames, expected = _streams(Peer(client))[name]
    data = b"".join(frames)
    pings = [(PONG, payload) for kind, payload in expected if kind == "ping"]
    for i in range(len(data) + 1):
        peer = Peer(client)
        peer.feed(data[:i], data[i:])
        assert peer.events == expected, i
        assert peer.sent_simple() == pings, i
        assert peer.conn.state is State.OPEN


@pytest.mark.parametrize("name", ["fragmented-with-control", "mixed", "longer-than-headers"])
def test_every_pair_of_split_points_gives_the_same_result(client: bool, name: str) -> None:
    frames, expected = _streams(Peer(client))[name]
    data = b"".join(frames)
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            peer = Peer(client)
            peer.feed(data[:i], data[i:j], data[j:])
            assert peer.events == expected, (i, j)


@pytest.mark.parametrize("name", ["text", "binary-16bit", "fragmented-with-control", "mixed"])
def test_one_byte_at_a_time_delivers_each_event_with_the_last_byte_of_its_frame(
    client: bool, name: str
) -> None:
    frames, expected = _streams(Peer(client))[name]
    frame_ends = set()
    total = 0
    for frame in frames:
        total += len(frame)
        frame_ends.add(total)
    data = b"".join(frames)
    peer = Peer(client)
    count = 0
    for i in range(len(data)):
        peer.feed(data[i : i + 1])
        if i + 1 not in frame_ends:
            assert len(peer.events) == count, f"event before the end of a frame, at byte {i}"
        count = len(peer.events)
    assert peer.events == expected


def test_one_byte_at_a_time_with_a_64_bit_frame(client: bool) -> None:
    payload = bytes(range(256)) * 257  # 65792 bytes: a 64-bit length
    peer = Peer(client)
    data = peer.frame(BINARY, payload) + peer.frame(TEXT, b"after")
    first_end = len(data) - len(peer.frame(TEXT, b"after"))
    for i in range(first_end - 1):
        peer.conn.receive_data(data[i : i + 1])
    assert peer.events == []
    peer.conn.receive_data(data[first_end - 1 : first_end + 3])
    assert peer.events == [("binary", payload)]
    peer.conn.receive_data(data[first_end + 3 :])
    assert peer.events == [("binary", payload), ("text", "after")]


def test_bytearray_input_is_not_kept_by_reference(client: bool) -> None:
    peer = Peer(client)
    frame = peer.frame(BINARY, b"abcdef")
    read_buffer = bytearray(frame[:4])
    peer.feed(read_buffer)
    read_buffer[:] = b"\xff" * 4  # the caller reuses its read buffer
    peer.feed(frame[4:])
    assert peer.events == [("binary", b"abcdef")]


def test_no_read_buffer_kept_between_complete_frames(client: bool) -> None:
    # DESIGN §2: no read buffer while no partial frame is pending.
    peer = Peer(client)
    frame = peer.frame(TEXT, b"hello")
    peer.feed(frame)
    assert peer.conn._buf is None
    peer.feed(frame[:3])
    assert peer.conn._buf is not None
    peer.feed(frame[3:])
    assert peer.conn._buf is None


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_a_partial_frame_holds_at_most_twice_what_was_sent_and_never_more_than_its_frame(
    client: bool, opcode: int
) -> None:
    """A large frame arriving a segment at a time: its buffer grows with room to spare (so that
    it is not copied whole on every read), but a peer that announces a large frame and sends
    little of it makes it hold little."""
    size = 300_000
    peer = Peer(client, max_payload_length=size)
    frame = peer.frame(opcode, b"p" * size)
    peer.feed(frame[:20])
    assert sys.getsizeof(peer.conn._buf) < 200
    sent = 20
    while sent < len(frame) - 1448:
        peer.feed(frame[sent : sent + 1448])
        sent += 1448
        held = peer.conn._buf
        assert held is not None and len(held) == sent
        # CPython's own growth of a bytearray (the spec's) can leave an eighth more than needed.
        assert sys.getsizeof(held) <= min(2 * sent, len(frame) * 9 // 8) + 100, sent
    peer.feed(frame[sent:])
    assert peer.conn._buf is None
    assert peer.events == [("text", "p" * size) if opcode == TEXT else ("binary", b"p" * size)]


# ---------------------------------------------------------------- fragments


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_fragmented_message_with_interleaved_control_frames(client: bool, opcode: int) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(opcode, b"Hel", fin=False))
    peer.feed(peer.frame(PING, b"p1"))
    peer.feed(peer.frame(CONTINUATION, b"", fin=False))
    peer.feed(peer.frame(CONTINUATION, b"lo ", fin=False))
    peer.feed(peer.frame(PONG, b"p2"))
    assert peer.events == [("ping", b"p1"), ("pong", b"p2")]
    peer.feed(peer.frame(CONTINUATION, b"world"))
    message = ("text", "Hello world") if opcode == TEXT else ("binary", b"Hello world")
    assert peer.events == [("ping", b"p1"), ("pong", b"p2"), message]
    assert peer.sent_simple() == [(PONG, b"p1")]
    # The next message starts clean.
    peer.feed(peer.frame(opcode, b"next"))
    assert peer.events[-1] == (("text", "next") if opcode == TEXT else ("binary", b"next"))


def test_a_close_inside_a_fragmented_message_is_answered(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"half", fin=False), peer.frame(CLOSE, close_payload(1001)))
    assert peer.events == []
    assert peer.sent_simple() == [(CLOSE, close_payload(1001))]
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1001


EMOJI = "😀".encode()  # F0 9F 98 80


@pytest.mark.parametrize(
    "cuts",
    [(1,), (2,), (3,), (1, 2, 3), (0, 4), (1, 1, 4)],
    ids=["1+3", "2+2", "3+1", "1+1+1+1", "empty-first-and-last", "empty-middle"],
)
def test_utf8_split_across_fragments(client: bool, cuts: tuple[int, ...]) -> None:
    data = b"a" + EMOJI + b"b" + "é€".encode()
    points = [0, *(1 + c for c in cuts), len(data)]
    parts = [data[a:b] for a, b in itertools.pairwise(points)]
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, parts[0], fin=False))
    for part in parts[1:-1]:
        peer.feed(peer.frame(CONTINUATION, part, fin=False))
    peer.feed(peer.frame(CONTINUATION, parts[-1]))
    assert peer.events == [("text", "a😀bé€")]
    assert peer.conn.state is State.OPEN


def test_every_fragmentation_of_a_multibyte_text(client: bool) -> None:
    data = "é€😀".encode()  # 2 + 3 + 4 bytes
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            peer = Peer(client)
            peer.feed(
                peer.frame(TEXT, data[:i], fin=False),
                peer.frame(CONTINUATION, data[i:j], fin=False),
                peer.frame(CONTINUATION, data[j:]),
            )
            assert peer.events == [("text", "é€😀")], (i, j)


# Bytes after which no valid UTF-8 continuation exists, although a decoder could wait for more:
# Python's incremental decoder holds ED A0 back without raising, so it needs a check of its own.
IMPOSSIBLE = [
    b"\xed\xa0",  # a UTF-16 surrogate
    b"\xed\xbf",
    b"\xf4\x90",  # above U+10FFFF
    b"\xe0\x80",  # overlong three-byte form
    b"\xe0\x9f",
    b"\xf0\x80",  # overlong four-byte form
    b"\xf0\x8f",
    b"\xc0",  # never valid
    b"\xc1",
    b"\xf5",
    b"\xff",
    b"\x80",  # a continuation byte without a lead
    b"\xe2\x82\x41",  # a lead and continuation followed by ASCII
    b"\xf0\x9f\x98\x41",
]


@pytest.mark.parametrize("bad", IMPOSSIBLE, ids=[b.hex() for b in IMPOSSIBLE])
def test_invalid_utf8_fails_on_the_first_fragment_that_makes_it_impossible(client: bool, bad: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"ok", fin=False))
    assert peer.conn.state is State.OPEN
    peer.feed(peer.frame(CONTINUATION, b"fine " + bad, fin=False))
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize("bad", IMPOSSIBLE, ids=[b.hex() for b in IMPOSSIBLE])
def test_invalid_utf8_in_the_first_fragment(client: bool, bad: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, bad, fin=False))
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize("bad", IMPOSSIBLE, ids=[b.hex() for b in IMPOSSIBLE])
def test_invalid_utf8_in_a_single_frame(client: bool, bad: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"x" + bad + b"y"))
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        (b"\xed", b"\xa0\x80"),
        (b"\xf4", b"\x90\x80\x80"),
        (b"\xe0", b"\x80\x80"),
        (b"\xf0\x9f", b"\x28"),
        (b"\xf0\x9f\x98", b"\x28"),
        (b"\xe2\x82", b"\xac\x80"),  # a complete sequence, then a stray continuation byte
    ],
)
def test_invalid_utf8_split_fails_on_the_second_fragment(client: bool, head: bytes, tail: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"ab" + head, fin=False))
    assert peer.conn.state is State.OPEN
    assert peer.conn.data_to_send() == b""
    peer.feed(peer.frame(CONTINUATION, tail, fin=False))
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize("unfinished", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"])
def test_message_ending_inside_a_utf8_sequence(client: bool, unfinished: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"a", fin=False))
    peer.feed(peer.frame(CONTINUATION, unfinished, fin=False))
    assert peer.conn.state is State.OPEN
    peer.feed(peer.frame(CONTINUATION, b""))
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize("unfinished", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"])
def test_single_frame_ending_inside_a_utf8_sequence(client: bool, unfinished: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"a" + unfinished))
    assert_failed(peer, 1007, events=[])


def test_invalid_utf8_in_a_binary_message_is_fine(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(BINARY, b"\xed\xa0", fin=False), peer.frame(CONTINUATION, b"\xff"))
    assert peer.events == [("binary", b"\xed\xa0\xff")]


# A partial text frame's bytes are checked as they arrive (Autobahn 6.4.3, 6.4.4): a frame that
# can no longer be valid UTF-8 fails the connection before its end has come.


def _first_impossible_prefix(payload: bytes, tail: bytes = b"") -> int:
    """The length of the shortest prefix of ``payload`` after which it cannot be valid UTF-8."""
    for k in range(len(payload) + 1):
        try:
            check_utf8_chunk(tail, payload[:k])
        except InvalidPayload:
            return k
    raise AssertionError("payload has no impossible prefix")


@pytest.mark.parametrize("bad", IMPOSSIBLE, ids=[b.hex() for b in IMPOSSIBLE])
def test_invalid_utf8_fails_a_partial_text_frame_on_the_byte_that_makes_it_impossible(
    client: bool, bad: bytes
) -> None:
    payload = "ok é€😀 ".encode() + bad + b" and more after it"
    peer = Peer(client)
    frame = peer.frame(TEXT, payload)
    impossible_at = len(frame) - len(payload) + _first_impossible_prefix(payload)
    for i in range(len(frame)):
        peer.feed(frame[i : i + 1])
        if i + 1 < impossible_at:
            assert peer.conn.state is State.OPEN, i
            assert peer.conn.data_to_send() == b""
        else:
            break
    assert i + 1 == impossible_at
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize("before", [0, 1, 2, 3, 5, 15, 16, 17, 63, 64, 65, 1030])
@pytest.mark.parametrize("bad", [b"\xed\xa0", b"\xe2\x82\x41", b"\xff"], ids=["surrogate", "ascii", "ff"])
def test_invalid_utf8_fails_a_partial_text_frame_in_three_chops(
    client: bool, before: int, bad: bytes
) -> None:
    """Autobahn 6.4.3: the first chop is valid, the second holds the invalid bytes, the third is
    never needed. ``before`` valid bytes put the invalid ones at every offset of the mask key and
    around the unmasking's 16- and 64-byte steps."""
    payload = b"v" * before + bad + b"w" * 40
    peer = Peer(client)
    frame = peer.frame(TEXT, payload)
    header = len(frame) - len(payload)
    cut = header + before + len(bad) + 7
    peer.feed(frame[: header + before])
    assert peer.conn.state is State.OPEN
    peer.feed(frame[header + before : cut])
    assert_failed(peer, 1007, events=[])


@pytest.mark.parametrize(
    ("head", "tail"), [(b"\xed", b"\xa0\x80"), (b"\xe2\x82", b"\xac\x80"), (b"\xf0\x9f", b"\x28")]
)
def test_invalid_utf8_fails_a_partial_continuation_frame(client: bool, head: bytes, tail: bytes) -> None:
    """A continuation frame's check starts where its message's UTF-8 stands."""
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"ab" + head, fin=False))
    continuation = peer.frame(CONTINUATION, tail + b"x" * 60)
    header = len(continuation) - len(tail) - 60
    peer.feed(continuation[:header])
    assert peer.conn.state is State.OPEN
    peer.feed(continuation[header : header + len(tail)])
    assert_failed(peer, 1007, events=[])


def test_a_partial_continuation_frame_goes_on_from_its_messages_utf8(client: bool) -> None:
    """The message's unfinished sequence is finished by the continuation frame's first bytes."""
    for cut in range(1, 4):
        peer = Peer(client)
        peer.feed(peer.frame(TEXT, b"a" + EMOJI[:cut], fin=False))
        continuation = peer.frame(CONTINUATION, EMOJI[cut:] + "é€".encode() * 300)
        for i in range(0, len(continuation), 37):
            peer.feed(continuation[i : i + 37])
            if i + 37 < len(continuation):
                assert peer.conn.state is State.OPEN
        assert peer.events == [("text", "a😀" + "é€" * 300)]
        assert peer.conn.state is State.OPEN


def test_valid_text_split_anywhere_inside_its_frame_is_delivered(client: bool) -> None:
    """Multi-byte text over many of the unmasking's 64-byte steps, cut at every point, in two and
    three pieces: the partial checks never fail valid text, nor change what is delivered."""
    text = "aé€😀b" * 60 + "z" * 300
    peer = Peer(client)
    frame = peer.frame(TEXT, text.encode())
    for i in range(len(frame) + 1):
        for j in (i, (i + 517) % (len(frame) + 1), len(frame)):
            a, b = min(i, j), max(i, j)
            peer = Peer(client)
            peer.feed(frame[:a], frame[a:b], frame[b:])
            assert peer.events == [("text", text)], (a, b)
            assert peer.conn.state is State.OPEN


def test_partial_binary_and_ping_frames_are_not_checked_as_text(client: bool) -> None:
    peer = Peer(client)
    binary = peer.frame(BINARY, b"\xff\xed\xa0" * 50)
    ping = peer.frame(PING, b"\xff" * 100)
    peer.feed(binary[:60])
    peer.feed(binary[60:120])
    assert peer.conn.state is State.OPEN
    peer.feed(binary[120:], ping[:50])
    assert peer.conn.state is State.OPEN
    peer.feed(ping[50:])
    assert peer.events == [("binary", b"\xff\xed\xa0" * 50), ("ping", b"\xff" * 100)]


def test_a_partial_text_frame_after_our_close_is_discarded_not_failed(client: bool) -> None:
    """Once we have sent a close, data frames are dropped unread: invalid text does not fail."""
    peer = Peer(client)
    peer.conn.send_close(1000, "bye")
    peer.conn.data_to_send()
    frame = peer.frame(TEXT, b"x" * 20 + b"\xff" + b"y" * 20)
    peer.feed(frame[:10], frame[10:30])
    assert peer.conn.state is State.CLOSING
    peer.feed(frame[30:], peer.frame(CLOSE, close_payload(1000)))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1000
    assert peer.events == []


# ------------------------------------------------------------- protocol errors


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE])
def test_reserved_bits(client: bool, rsv: int, opcode: int) -> None:
    peer = Peer(client)
    if opcode == CONTINUATION:
        peer.feed(peer.frame(TEXT, b"a", fin=False))
    payload = close_payload(1000) if opcode == CLOSE else b"x"
    peer.feed(peer.raw(0x80 | rsv | opcode, payload))
    assert_failed(peer, 1002, events=[])


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("fin", [True, False])
def test_reserved_opcodes(client: bool, opcode: int, fin: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.raw(opcode | (0x80 if fin else 0), b"data"))
    assert_failed(peer, 1002, events=[])


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE])
def test_wrong_masking(client: bool, opcode: int) -> None:
    # A server requires masked frames; a client refuses them.
    peer = Peer(client)
    payload = close_payload(1000) if opcode == CLOSE else b"data"
    peer.feed(peer.raw(0x80 | opcode, payload, masked=client))
    assert_failed(peer, 1002, events=[])


def test_unmasked_frame_to_a_server() -> None:
    peer = Peer(False)
    peer.feed(build_frame(TEXT, b"hello"))
    assert_failed(peer, 1002, events=[])


def test_masked_frame_to_a_client() -> None:
    peer = Peer(True)
    peer.feed(build_frame(TEXT, b"hello", mask_key=PEER_MASK))
    assert_failed(peer, 1002, events=[])


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame(client: bool, opcode: int) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(opcode, close_payload(1000), fin=False))
    assert_failed(peer, 1002, events=[])


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_payload_over_125_fails_on_its_header(client: bool, opcode: int) -> None:
    peer = Peer(client)
    peer.feed(peer.header(opcode, 126))
    assert_failed(peer, 1002, events=[])


@pytest.mark.parametrize("opcode", [PING, PONG])
def test_control_frame_payload_of_125_is_fine(client: bool, opcode: int) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(opcode, b"c" * 125))
    assert peer.events == [("ping" if opcode == PING else "pong", b"c" * 125)]
    assert peer.sent_simple() == ([(PONG, b"c" * 125)] if opcode == PING else [])


def test_close_payload_of_125_is_fine(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(1000, b"r" * 123)))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1000
    assert peer.conn.close_reason == "r" * 123


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_a_start(client: bool, fin: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CONTINUATION, b"orphan", fin=fin))
    assert_failed(peer, 1002, events=[])


def test_continuation_after_a_finished_message(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"a", fin=False), peer.frame(CONTINUATION, b"b"))
    peer.feed(peer.frame(CONTINUATION, b"c"))
    assert_failed(peer, 1002, events=[("text", "ab")])


@pytest.mark.parametrize("first", [TEXT, BINARY])
@pytest.mark.parametrize("second", [TEXT, BINARY])
@pytest.mark.parametrize("fin", [True, False])
def test_new_message_inside_a_fragmented_one(client: bool, first: int, second: int, fin: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(first, b"a", fin=False))
    peer.feed(peer.frame(second, b"b", fin=fin))
    assert_failed(peer, 1002, events=[])


def test_close_payload_of_one_byte(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, b"\x03"))
    assert_failed(peer, 1002, events=[])


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_invalid_close_code(client: bool, code: int) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(code)))
    assert_failed(peer, 1002, events=[])


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code_is_accepted_and_echoed(client: bool, code: int) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(code, b"why")))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == code
    assert peer.conn.close_reason == "why"
    assert peer.sent_simple() == [(CLOSE, close_payload(code))]


@pytest.mark.parametrize("reason", [b"\xff", b"abc\xc3", b"\xed\xa0\x80"])
def test_close_reason_not_utf8(client: bool, reason: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(1000, reason)))
    assert_failed(peer, 1007, events=[])


def test_frames_before_an_error_in_the_same_feed_are_delivered(client: bool) -> None:
    peer = Peer(client)
    peer.feed(
        peer.frame(TEXT, b"first")
        + peer.frame(PING, b"p")
        + peer.raw(0x83, b"bad opcode")
        + peer.frame(TEXT, b"never")
    )
    assert peer.conn.state is State.CLOSED
    assert peer.events == [("text", "first"), ("ping", b"p")]
    pong, close = peer.sent_simple()
    assert pong == (PONG, b"p")
    assert close[0] == CLOSE
    assert close[1][:2] == close_payload(1002)


def test_error_in_a_frame_fed_in_pieces(client: bool) -> None:
    """A text ending inside a UTF-8 sequence is wrong only once its frame has ended."""
    peer = Peer(client)
    data = peer.frame(TEXT, b"xy\xc3")
    for i in range(len(data) - 1):
        peer.feed(data[i : i + 1])
        assert peer.conn.state is State.OPEN
    peer.feed(data[-1:])
    assert_failed(peer, 1007, events=[])


def test_a_frame_completed_by_a_read_that_fails_leaves_the_rest_of_the_read_unread(client: bool) -> None:
    peer = Peer(client)
    bad = peer.frame(TEXT, b"x" * 20 + b"\xff")
    peer.feed(bad[:10])
    peer.feed(bad[10:] + peer.frame(TEXT, b"never delivered") + peer.frame(PING, b"never answered"))
    assert_failed(peer, 1007, events=[])


def test_a_close_completed_by_a_read_ends_the_reading(client: bool) -> None:
    peer = Peer(client)
    close = peer.frame(CLOSE, close_payload(4001, b"bye for now, and for good"))
    peer.feed(close[:10])
    peer.feed(close[10:] + peer.frame(TEXT, b"after the close"))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 4001
    assert peer.events == []


def test_a_frame_after_a_completed_one_that_fails_fails_the_connection(client: bool) -> None:
    peer = Peer(client)
    good = peer.frame(TEXT, b"first and complete")
    peer.feed(good[:5])
    peer.feed(good[5:] + peer.frame(TEXT, b"\xc3"))
    assert_failed(peer, 1007, events=[("text", "first and complete")])


@pytest.mark.parametrize("size", [15, 16, 17, 32, 33, 63, 64, 65, 100, 143])
def test_a_non_ascii_or_invalid_byte_anywhere_in_a_text_is_found(client: bool, size: int) -> None:
    # Text is unmasked and checked for ASCII 64, 16 (or 8) bytes at a time: every position counts.
    for pos in range(size - 1):
        text = "a" * pos + "é" + "b" * (size - pos - 2)
        peer = Peer(client)
        peer.feed(peer.frame(TEXT, text.encode()))
        assert peer.events == [("text", text)], pos
        peer = Peer(client)
        peer.feed(peer.frame(TEXT, b"a" * pos + b"\xff" + b"b" * (size - pos - 1)))
        assert_failed(peer, 1007, events=[])


# -------------------------------------------------------------------- limits


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_max_payload_length_exactly_in_one_frame(client: bool, opcode: int) -> None:
    peer = Peer(client, max_payload_length=1000)
    peer.feed(peer.frame(opcode, b"z" * 1000))
    assert peer.events == [("text", "z" * 1000) if opcode == TEXT else ("binary", b"z" * 1000)]
    assert peer.conn.state is State.OPEN


@pytest.mark.parametrize("length", [1001, 65536, 1 << 40, (1 << 63) - 1])
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_message_over_max_payload_length_fails_on_its_header(client: bool, opcode: int, length: int) -> None:
    peer = Peer(client, max_payload_length=1000)
    peer.feed(peer.header(opcode, length, fin=True))
    assert_failed(peer, 1009, events=[])


def test_default_max_payload_length_fails_on_the_header(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.header(BINARY, 1024 * 1024))
    assert peer.conn.state is State.OPEN
    peer = Peer(client)
    peer.feed(peer.header(BINARY, 1024 * 1024 + 1))
    assert_failed(peer, 1009, events=[])


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_fragmented_message_exactly_at_max_payload_length(client: bool, opcode: int) -> None:
    peer = Peer(client, max_payload_length=1000)
    peer.feed(peer.frame(opcode, b"a" * 600, fin=False))
    peer.feed(peer.frame(CONTINUATION, b"", fin=False))
    peer.feed(peer.frame(CONTINUATION, b"b" * 400))
    body = b"a" * 600 + b"b" * 400
    assert peer.events == [("text", body.decode()) if opcode == TEXT else ("binary", body)]
    assert peer.conn.state is State.OPEN


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_fragments_accumulating_over_max_payload_length_fail_on_the_header(client: bool, opcode: int) -> None:
    peer = Peer(client, max_payload_length=1000)
    peer.feed(peer.frame(opcode, b"a" * 600, fin=False))
    peer.feed(peer.frame(CONTINUATION, b"b" * 300, fin=False))
    peer.feed(peer.header(CONTINUATION, 101, fin=False))
    assert_failed(peer, 1009, events=[])


def test_fragments_accumulating_over_the_limit_with_a_final_fragment(client: bool) -> None:
    peer = Peer(client, max_payload_length=10)
    peer.feed(peer.frame(BINARY, b"12345", fin=False), peer.frame(CONTINUATION, b"123456"))
    assert_failed(peer, 1009, events=[])


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_max_fragments_exactly(client: bool, opcode: int) -> None:
    peer = Peer(client, max_fragments=4)
    peer.feed(peer.frame(opcode, b"1", fin=False))
    peer.feed(peer.frame(PING, b""), peer.frame(PONG, b""))  # control frames are not fragments
    peer.feed(peer.frame(CONTINUATION, b"2", fin=False))
    peer.feed(peer.frame(CONTINUATION, b"3", fin=False))
    peer.feed(peer.frame(CONTINUATION, b"4"))
    assert peer.events[-1] == (("text", "1234") if opcode == TEXT else ("binary", b"1234"))
    # The count starts again with the next message.
    for _ in range(2):
        peer.feed(peer.frame(opcode, b"", fin=False))
        peer.feed(peer.frame(CONTINUATION, b"", fin=False))
        peer.feed(peer.frame(CONTINUATION, b"", fin=False))
        peer.feed(peer.frame(CONTINUATION, b""))
    assert peer.conn.state is State.OPEN
    assert len(peer.events) == 5


@pytest.mark.parametrize("fin", [True, False])
def test_one_fragment_over_max_fragments(client: bool, fin: bool) -> None:
    peer = Peer(client, max_fragments=4)
    peer.feed(peer.frame(TEXT, b"1", fin=False))
    for _ in range(3):
        peer.feed(peer.frame(CONTINUATION, b"x", fin=False))
    assert peer.conn.state is State.OPEN
    peer.feed(peer.header(CONTINUATION, 1, fin=fin))
    assert_failed(peer, 1009, events=[])


def test_max_fragments_of_one_refuses_any_fragmentation(client: bool) -> None:
    peer = Peer(client, max_fragments=1)
    peer.feed(peer.frame(TEXT, b"whole"))
    assert peer.events == [("text", "whole")]
    peer.feed(peer.frame(TEXT, b"half", fin=False))
    assert peer.conn.state is State.OPEN
    peer.feed(peer.frame(CONTINUATION, b"rest"))
    assert_failed(peer, 1009, events=[("text", "whole")])


def test_flood_of_empty_fragments(client: bool) -> None:
    peer = Peer(client)  # default max_fragments = 1024
    empty = peer.frame(CONTINUATION, b"", fin=False)
    peer.feed(peer.frame(TEXT, b"", fin=False) + empty * 1023)
    assert peer.conn.state is State.OPEN
    peer.feed(empty)
    assert_failed(peer, 1009, events=[])


def test_empty_fragments_up_to_the_limit_make_an_empty_message(client: bool) -> None:
    peer = Peer(client)
    peer.feed(
        peer.frame(BINARY, b"", fin=False)
        + peer.frame(CONTINUATION, b"", fin=False) * 1022
        + peer.frame(CONTINUATION, b"")
    )
    assert peer.events == [("binary", b"")]
    assert peer.conn.state is State.OPEN


@pytest.mark.parametrize("opcode", [PING, PONG])
def test_max_control_payload_exactly(client: bool, opcode: int) -> None:
    peer = Peer(client, max_control_payload=10)
    peer.feed(peer.frame(opcode, b"0123456789"))
    assert peer.events == [("ping" if opcode == PING else "pong", b"0123456789")]
    assert peer.conn.state is State.OPEN


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_one_past_max_control_payload(client: bool, opcode: int) -> None:
    peer = Peer(client, max_control_payload=10)
    peer.feed(peer.header(opcode, 11))
    assert_failed(peer, 1002, events=[])


def test_close_at_max_control_payload(client: bool) -> None:
    peer = Peer(client, max_control_payload=10)
    peer.feed(peer.frame(CLOSE, close_payload(1000, b"12345678")))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_reason == "12345678"
    assert peer.sent_simple() == [(CLOSE, close_payload(1000))]


# ------------------------------------------------------------ closing handshake


def test_peer_initiated_close_is_echoed(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(1001, b"au revoir")))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1001
    assert peer.conn.close_reason == "au revoir"
    assert peer.sent_simple() == [(CLOSE, close_payload(1001))]
    assert peer.events == []


def test_empty_close_is_answered_with_an_empty_close(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, b""))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1005
    assert peer.conn.close_reason == ""
    assert peer.sent_simple() == [(CLOSE, b"")]


def test_our_close_then_the_peers(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close(1001, "shutting down")
    assert state_of(peer.conn) is State.CLOSING
    assert not peer.conn.closed
    assert peer.conn.close_code == 1001
    assert peer.sent_simple() == [(CLOSE, close_payload(1001, b"shutting down"))]
    peer.feed(peer.frame(CLOSE, close_payload(1001)))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1001
    assert peer.conn.data_to_send() == b""  # the peer's close answered ours: nothing more to send


def test_send_close_defaults_to_1000(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close()
    assert peer.sent_simple() == [(CLOSE, close_payload(1000))]


def test_data_after_our_close_is_discarded_but_a_close_is_recognised(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(TEXT, b"in", fin=False))
    peer.conn.send_close(1000)
    peer.conn.data_to_send()
    peer.feed(
        peer.frame(CONTINUATION, b"flight"),
        peer.frame(TEXT, b"late"),
        peer.frame(BINARY, b"late", fin=False),
        peer.frame(CONTINUATION, b"r"),
    )
    assert peer.events == []
    assert state_of(peer.conn) is State.CLOSING
    peer.feed(peer.frame(CLOSE, close_payload(1000)))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.data_to_send() == b""


def test_a_data_frame_over_the_limit_after_our_close_still_fails(client: bool) -> None:
    # Discarded frames are not buffered beyond the limit either.
    peer = Peer(client, max_payload_length=1000)
    peer.conn.send_close(1000)
    peer.conn.data_to_send()
    peer.feed(peer.frame(BINARY, b"b" * 1000))
    assert state_of(peer.conn) is State.CLOSING
    peer.feed(peer.header(BINARY, 1001))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1009
    assert peer.conn.data_to_send() == b""  # our close frame is already sent
    assert peer.events == []


def test_ping_after_our_close_is_not_answered(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close(1000)
    peer.conn.data_to_send()
    peer.feed(peer.frame(PING, b"still there?"))
    assert peer.conn.data_to_send() == b""
    assert state_of(peer.conn) is State.CLOSING


def test_ping_after_the_peers_close_is_ignored(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(1000)) + peer.frame(PING, b"p"))
    assert peer.sent_simple() == [(CLOSE, close_payload(1000))]
    peer.feed(peer.frame(PING, b"p"))
    assert peer.events == []
    assert peer.conn.data_to_send() == b""


@pytest.mark.parametrize("second", [close_payload(1001), b"\x03", close_payload(999), b""])
def test_a_second_close_is_ignored(client: bool, second: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(1000, b"first")) + peer.frame(CLOSE, second))
    peer.feed(peer.frame(CLOSE, second))
    assert peer.conn.close_code == 1000
    assert peer.conn.close_reason == "first"
    assert peer.sent_simple() == [(CLOSE, close_payload(1000))]


def test_invalid_close_while_closing(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close(1000)
    peer.conn.data_to_send()
    peer.feed(peer.frame(CLOSE, b"\x03"))
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1002
    assert peer.conn.data_to_send() == b""  # our close frame is already sent


def test_receive_eof_gives_1006(client: bool) -> None:
    peer = Peer(client)
    rest = peer.frame(CONTINUATION, b"partial")
    peer.feed(peer.frame(TEXT, b"half", fin=False), rest[:4])
    peer.conn.receive_eof()
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1006
    assert peer.conn.data_to_send() == b""
    peer.feed(rest[4:], peer.frame(TEXT, b"x"))
    assert peer.events == []
    with pytest.raises(ConnectionClosedError) as info:
        peer.conn.send_text("x")
    assert info.value.code == 1006


def test_receive_eof_after_a_close_keeps_its_code(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(CLOSE, close_payload(1000)))
    peer.conn.receive_eof()
    assert peer.conn.close_code == 1000
    assert peer.conn.state is State.CLOSED


def test_receive_eof_while_closing(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close(1000)
    peer.conn.receive_eof()
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1006


def test_send_close_is_a_no_op_unless_open(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close(1000)
    peer.conn.data_to_send()
    peer.conn.send_close(1001)
    assert peer.conn.data_to_send() == b""
    assert peer.conn.close_code == 1000
    peer.feed(peer.frame(CLOSE, close_payload(1000)))
    peer.conn.send_close(1001)
    assert peer.conn.data_to_send() == b""


def test_fail_sends_one_close_frame(client: bool) -> None:
    peer = Peer(client)
    peer.conn.fail(1011, "internal")
    assert peer.sent_simple() == [(CLOSE, close_payload(1011, b"internal"))]
    assert peer.conn.close_reason == "internal"
    peer.conn.fail(1002)
    assert peer.conn.close_code == 1011
    assert peer.conn.data_to_send() == b""


def test_fail_while_closing_sends_nothing(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_close(1000)
    peer.conn.data_to_send()
    peer.conn.fail(1011)
    assert peer.conn.state is State.CLOSED
    assert peer.conn.close_code == 1011
    assert peer.conn.data_to_send() == b""


class FailOnFirstText(Recorder):
    """A handler whose layer fails the connection from a callback (as a backpressure policy does)."""

    conn: WebSocketConnection

    def text_received(self, text: str) -> None:
        super().text_received(text)
        self.conn.fail(1008, "slow consumer")


def test_frames_after_a_failure_from_a_callback_are_ignored(client: bool) -> None:
    handler = FailOnFirstText()
    conn = WebSocketConnection(handler, WebSocketOptions(), client=client)
    handler.conn = conn
    peer = Peer(client)
    conn.receive_data(
        peer.frame(TEXT, b"one")
        + peer.frame(TEXT, b"two")
        + peer.frame(PING, b"p")
        + peer.frame(PONG, b"q")
        + peer.frame(CLOSE, close_payload(1000))
    )
    assert handler.events == [("text", "one")]
    assert conn.state is State.CLOSED
    assert conn.close_code == 1008
    assert conn.close_reason == "slow consumer"
    frames = read_frames(conn.data_to_send())
    assert [(f.opcode, f.payload) for f in frames] == [(CLOSE, close_payload(1008, b"slow consumer"))]


class CloseOnFirstText(Recorder):
    conn: WebSocketConnection

    def text_received(self, text: str) -> None:
        super().text_received(text)
        self.conn.send_close(1000)


def test_close_from_a_callback_discards_later_data_but_not_the_peers_close(client: bool) -> None:
    handler = CloseOnFirstText()
    conn = WebSocketConnection(handler, WebSocketOptions(), client=client)
    handler.conn = conn
    peer = Peer(client)
    conn.receive_data(
        peer.frame(TEXT, b"one") + peer.frame(TEXT, b"two") + peer.frame(CLOSE, close_payload(1000))
    )
    assert handler.events == [("text", "one")]
    assert conn.state is State.CLOSED
    assert conn.close_code == 1000
    assert [(f.opcode, f.payload) for f in read_frames(conn.data_to_send())] == [(CLOSE, close_payload(1000))]


# --------------------------------------------------------------------- sending


@pytest.mark.parametrize("payload", [b"", b"hello", b"p" * 125])
def test_ping_is_answered_with_the_same_payload(client: bool, payload: bytes) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(PING, payload))
    assert peer.events == [("ping", payload)]
    assert peer.sent_simple() == [(PONG, payload)]


def test_pongs_for_several_pings_in_order(client: bool) -> None:
    peer = Peer(client)
    peer.feed(peer.frame(PING, b"1") + peer.frame(PING, b"2") + peer.frame(PING, b"3"))
    assert peer.sent_simple() == [(PONG, b"1"), (PONG, b"2"), (PONG, b"3")]


def test_server_output_bytes_are_exact() -> None:
    conn = WebSocketConnection(Recorder(), WebSocketOptions(), client=False)
    conn.send_text("héllo")
    assert conn.data_to_send() == b"\x81\x06h\xc3\xa9llo"
    conn.send_binary(bytearray(b"\x00\x01"))
    conn.send_binary(memoryview(b"\x02"))
    assert conn.data_to_send() == b"\x82\x02\x00\x01\x82\x01\x02"
    conn.send_frame(TEXT, b"par", fin=False)
    conn.send_frame(CONTINUATION, b"ts")
    assert conn.data_to_send() == b"\x01\x03par\x80\x02ts"
    conn.send_ping(b"pi")
    conn.send_pong(b"po")
    conn.send_ping()
    assert conn.data_to_send() == b"\x89\x02pi\x8a\x02po\x89\x00"
    conn.send_raw(b"\x81\x01!")
    assert conn.data_to_send() == b"\x81\x01!"
    conn.send_binary(bytes(300))
    assert conn.data_to_send() == b"\x82\x7e\x01\x2c" + bytes(300)
    assert conn.data_to_send() == b""


def test_client_output_is_masked() -> None:
    conn = WebSocketConnection(Recorder(), WebSocketOptions(), client=True)
    conn.send_text("héllo")
    conn.send_binary(b"\x00" * 300)
    conn.send_frame(BINARY, b"a", fin=False)
    conn.send_frame(CONTINUATION, b"b")
    conn.send_ping(b"pi")
    conn.send_pong(b"po")
    frames = read_frames(conn.data_to_send())
    assert all(frame.masked for frame in frames)
    assert [(f.fin, f.opcode, f.payload) for f in frames] == [
        (True, TEXT, "héllo".encode()),
        (True, BINARY, b"\x00" * 300),
        (False, BINARY, b"a"),
        (True, CONTINUATION, b"b"),
        (True, PING, b"pi"),
        (True, PONG, b"po"),
    ]


def test_send_raw_is_queued_unchanged_on_both_sides(client: bool) -> None:
    peer = Peer(client)
    frame = build_frame(TEXT, b"broadcast")
    peer.conn.send_text("before")
    peer.conn.send_raw(frame)
    data = peer.conn.data_to_send()
    assert data.endswith(frame)
    assert len(read_frames(data)) == 2


def test_output_keeps_the_order_of_sends_and_pongs(client: bool) -> None:
    peer = Peer(client)
    peer.conn.send_text("a")
    peer.feed(peer.frame(PING, b"p"))
    peer.conn.send_binary(b"b")
    assert peer.sent_simple() == [(TEXT, b"a"), (PONG, b"p"), (BINARY, b"b")]
    assert peer.conn.data_to_send() == b""


@pytest.mark.parametrize("method", ["send_ping", "send_pong"])
def test_control_payload_over_125_is_refused(client: bool, method: str) -> None:
    peer = Peer(client)
    getattr(peer.conn, method)(b"x" * 125)
    assert len(peer.sent()) == 1
    with pytest.raises(ValueError, match="125"):
        getattr(peer.conn, method)(b"x" * 126)
    assert peer.conn.data_to_send() == b""


def _close_by_us(peer: Peer) -> None:
    peer.conn.send_close(1000, "done")


def _close_by_peer(peer: Peer) -> None:
    peer.feed(peer.frame(CLOSE, close_payload(1001, b"away")))


def _fail_protocol(peer: Peer) -> None:
    peer.feed(peer.frame(CONTINUATION, b"orphan"))


def _fail_too_big(peer: Peer) -> None:
    peer.feed(peer.header(BINARY, 1 << 40))


def _eof(peer: Peer) -> None:
    peer.conn.receive_eof()


@pytest.mark.parametrize(
    ("close", "exc_type", "code"),
    [
        (_close_by_us, ConnectionClosedOK, 1000),
        (_close_by_peer, ConnectionClosedOK, 1001),
        (_fail_protocol, ConnectionClosedError, 1002),
        (_fail_too_big, ConnectionClosedError, 1009),
        (_eof, ConnectionClosedError, 1006),
    ],
    ids=["closing", "closed-by-peer", "failed-1002", "failed-1009", "eof"],
)
@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.send_text("x"),
        lambda c: c.send_binary(b"x"),
        lambda c: c.send_frame(TEXT, b"x"),
        lambda c: c.send_ping(b"x"),
        lambda c: c.send_pong(b"x"),
        lambda c: c.send_raw(b"\x81\x01x"),
    ],
    ids=["text", "binary", "frame", "ping", "pong", "raw"],
)
def test_sending_when_not_open_raises(
    client: bool, close: Any, exc_type: type[ConnectionClosed], code: int, send: Any
) -> None:
    peer = Peer(client)
    close(peer)
    peer.conn.data_to_send()
    with pytest.raises(exc_type) as info:
        send(peer.conn)
    assert info.value.code == code
    assert peer.conn.data_to_send() == b""


def test_a_client_and_a_server_talk() -> None:
    server_events, client_events = Recorder(), Recorder()
    server = WebSocketConnection(server_events, WebSocketOptions(), client=False)
    client = WebSocketConnection(client_events, WebSocketOptions(), client=True)
    client.send_text("hello")
    client.send_frame(BINARY, b"a", fin=False)
    client.send_ping(b"hb")
    client.send_frame(CONTINUATION, b"b")
    server.receive_data(client.data_to_send())
    assert server_events.events == [("text", "hello"), ("ping", b"hb"), ("binary", b"ab")]
    server.send_text("world")
    client.receive_data(server.data_to_send())  # the pong and the text
    assert client_events.events == [("pong", b"hb"), ("text", "world")]
    client.send_close(1000, "bye")
    server.receive_data(client.data_to_send())
    assert server.state is State.CLOSED
    assert (server.close_code, server.close_reason) == (1000, "bye")
    client.receive_data(server.data_to_send())
    assert client.state is State.CLOSED
    assert client.close_code == 1000
    assert client.data_to_send() == b""


# ------------------------------------------------------------ check_utf8_chunk


def test_check_utf8_chunk_returns_the_unfinished_tail() -> None:
    assert check_utf8_chunk(b"", b"abc") == b""
    assert check_utf8_chunk(b"", b"a\xf0\x9f") == b"\xf0\x9f"
    assert check_utf8_chunk(b"\xf0\x9f", b"\x98") == b"\xf0\x9f\x98"
    assert check_utf8_chunk(b"\xf0\x9f\x98", b"\x80z") == b""
    assert check_utf8_chunk(b"\xed", b"\x9f") == b"\xed\x9f"
    assert check_utf8_chunk(b"", b"") == b""
    assert check_utf8_chunk(b"\xe2", b"") == b"\xe2"


@pytest.mark.parametrize("bad", IMPOSSIBLE, ids=[b.hex() for b in IMPOSSIBLE])
def test_check_utf8_chunk_raises_on_impossible_prefixes(bad: bytes) -> None:
    with pytest.raises(InvalidPayload):
        check_utf8_chunk(b"", bad)
    with pytest.raises(InvalidPayload):
        check_utf8_chunk(b"", b"ascii" + bad)
    if len(bad) > 1:
        with pytest.raises(InvalidPayload):
            check_utf8_chunk(bad[:1], bad[1:])


_COMPLETIONS = [b""] + [bytes(c) for n in (1, 2, 3) for c in itertools.product((0x80, 0x90, 0xA0), repeat=n)]


@functools.cache
def is_valid_prefix(data: bytes) -> bool:
    """Whether some continuation makes ``data`` valid UTF-8, by Python's own strict decoder.

    An unfinished sequence needs at most 3 more continuation bytes; only the first of them has a
    restricted range (A0-BF after E0, 80-9F after ED, 90-BF after F0, 80-8F after F4), and one of
    80, 90 and A0 lies in each of those ranges, so these completions are enough.
    """
    for completion in _COMPLETIONS:
        try:
            (data + completion).decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


# Every byte value where a UTF-8 rule changes: ASCII, continuation sub-ranges, the lead bytes
# with special second-byte ranges (E0, ED, F0, F4) and the never-valid ones.
BOUNDARY_BYTES = bytes.fromhex(
    "00 41 7f 80 8f 90 9f a0 bf c0 c1 c2 df e0 e1 ec ed ee ef f0 f1 f3 f4 f5 f8 ff"
)


def _explore(prefix: bytes, tail: bytes, alphabet: bytes, depth: int) -> int:
    """Feed every extension of the valid ``prefix`` byte by byte, and in one chunk, up to ``depth``.

    Returns how many strings were checked (so a broken walk cannot pass by checking nothing).
    """
    checked = 0
    for value in alphabet:
        data = prefix + bytes((value,))
        checked += 1
        if not is_valid_prefix(data):
            with pytest.raises(InvalidPayload):
                check_utf8_chunk(tail, data[-1:])
            with pytest.raises(InvalidPayload):
                check_utf8_chunk(b"", data)
            continue
        new_tail = check_utf8_chunk(tail, data[-1:])
        assert check_utf8_chunk(b"", data) == new_tail
        assert data.endswith(new_tail)
        assert is_valid_utf8(data[: len(data) - len(new_tail)])
        assert (new_tail == b"") == is_valid_utf8(data), data.hex()
        if len(data) < depth:
            checked += _explore(data, new_tail, alphabet, depth)
    return checked


def test_check_utf8_chunk_on_every_two_byte_string() -> None:
    assert _explore(b"", b"", bytes(range(256)), 2) > 256 * 128


def test_check_utf8_chunk_on_every_boundary_string_of_up_to_four_bytes() -> None:
    assert _explore(b"", b"", BOUNDARY_BYTES, 4) > len(BOUNDARY_BYTES) ** 3


def _utf8ish_chunks() -> st.SearchStrategy[list[bytes]]:
    piece = st.one_of(
        st.binary(max_size=8),
        st.text(max_size=8).map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.text(max_size=8).map(lambda s: s.encode("utf-8", "surrogatepass")[1:]),
        st.sampled_from(
            [b"\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xc0", b"\xf0\x9f", b"\x98\x80", b"\xef\xbf"]
        ),
    )
    return st.lists(piece, max_size=8)


@given(_utf8ish_chunks(), st.data())
@example([b"\xed", b"\xa0\x80"], None)
@example([b"a\xf4", b"\x90"], None)
@example([b"\xf0\x9f", b"\x98", b"\x80"], None)
def test_check_utf8_chunk_agrees_with_pythons_decoder(pieces: list[bytes], data: Any) -> None:
    stream = b"".join(pieces)
    if data is None:
        chunks = pieces
    else:
        # Split the stream again at random points, so chunk bounds fall anywhere.
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        bounds = [0, *cuts, len(stream)]
        chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    tail = b""
    seen = b""
    for chunk in chunks:
        seen += chunk
        if not is_valid_prefix(seen):
            # It must fail exactly on the first chunk after which no valid continuation exists.
            with pytest.raises(InvalidPayload):
                check_utf8_chunk(tail, chunk)
            return
        tail = check_utf8_chunk(tail, chunk)
        assert len(tail) <= 3
        assert seen.endswith(tail)
        seen[: len(seen) - len(tail)].decode("utf-8")  # everything before the tail is complete
        assert not tail or not is_valid_utf8(tail)
    assert (tail == b"") == is_valid_utf8(stream)


def is_valid_utf8(data: bytes) -> bool:
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


@given(st.text(max_size=40), st.data())
def test_any_text_split_anywhere_across_fragments_is_delivered(text: str, data: Any) -> None:
    encoded = text.encode("utf-8")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=5)))
    bounds = [0, *cuts, len(encoded)]
    parts = [encoded[a:b] for a, b in itertools.pairwise(bounds)]
    peer = Peer(False)
    for index, part in enumerate(parts):
        opcode = TEXT if index == 0 else CONTINUATION
        peer.feed(peer.frame(opcode, part, fin=index == len(parts) - 1))
    assert peer.events == [("text", text)]
