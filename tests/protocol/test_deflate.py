"""permessage-deflate (RFC 7692) without sockets: negotiation, the state machine, bounded inflation.

Compressed payloads are produced or checked with ``zlib`` directly where it matters, so a bug in
our codec cannot hide itself; the connections under test are the real state machine.
"""

from __future__ import annotations

import itertools
import struct
import tracemalloc
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nanosocket.errors import InvalidHandshake
from nanosocket.options import WebSocketOptions
from nanosocket.protocol.deflate import (
    ClientDeflate,
    DeflateParameters,
    DeflateStats,
    OutgoingMessage,
    PerMessageDeflate,
    ServerDeflate,
    parse_extensions,
    prepare_message,
)
from nanosocket.protocol.frames import BINARY, CLOSE, CONTINUATION, PING, TEXT, apply_mask, build_frame
from nanosocket.protocol.handshake import (
    Headers,
    Response,
    accept_key,
    build_request,
    check_response,
    parse_ws_url,
)
from nanosocket.protocol.websocket import State, WebSocketConnection

# Every test runs on the pure-Python spec and on its compiled twin (tests/protocol/conftest.py).
pytestmark = pytest.mark.usefixtures("connection_class")

MASK = b"\x91\x0c\x5e\xa2"
TAIL = b"\x00\x00\xff\xff"
MiB = 1024 * 1024


# ------------------------------------------------------------------------------ helpers


def deflate_raw(data: bytes, bits: int = 15) -> bytes:
    """``data`` as one compressed message payload, made by zlib alone (fresh context)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate_raw(payload: bytes, bits: int = 15) -> bytes:
    return zlib.decompressobj(-bits).decompress(payload + TAIL)


@dataclass(frozen=True)
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes


def read_frames(data: bytes) -> list[Frame]:
    """Parse frames written by the code under test, without using it (RSV1 allowed, unmasked)."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert first & 0x30 == 0, "RSV2/RSV3 set in an outgoing frame"
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
            key, pos = data[pos : pos + 4], pos + 4
        body = data[pos : pos + length]
        pos += length
        if key:
            body = bytes(b ^ key[i % 4] for i, b in enumerate(body))
        frames.append(Frame(bool(first & 0x80), bool(first & 0x40), first & 0x0F, body))
    return frames


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str | bytes]] = []

    def text_received(self, text: str) -> None:
        self.events.append(("text", text))

    def binary_received(self, data: bytes) -> None:
        self.events.append(("binary", data))

    def ping_received(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def pong_received(self, payload: bytes) -> None:
        self.events.append(("pong", payload))


def negotiate(
    server_options: WebSocketOptions, client_options: WebSocketOptions
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Run the offer/answer of both sides; return (server codec, client codec)."""
    client = ClientDeflate(client_options)
    accepted = ServerDeflate(server_options).negotiate([client.offer()])
    assert accepted is not None
    server_codec, answer = accepted
    client_codec = client.accept([answer])
    assert client_codec is not None
    return server_codec, client_codec


class Pair:
    """A server and a client state machine, connected by hand (``pump``), with permessage-deflate."""

    def __init__(
        self,
        server: WebSocketOptions,
        client: WebSocketOptions | None = None,
        *,
        negotiated: bool = True,
    ) -> None:
        client = client or server
        if negotiated:
            server_codec, client_codec = negotiate(server, client)
        else:
            server_codec = client_codec = None
        self.server_events = Recorder()
        self.client_events = Recorder()
        self.server = WebSocketConnection(self.server_events, server, client=False, deflate=server_codec)
        self.client = WebSocketConnection(self.client_events, client, client=True, deflate=client_codec)

    def to_client(self) -> list[Frame]:
        data = self.server.data_to_send()
        self.client.receive_data(data)
        return read_frames(data)

    def to_server(self) -> list[Frame]:
        data = self.client.data_to_send()
        self.server.receive_data(data)
        return read_frames(data)


def options(mode: str = "shared", **values: Any) -> WebSocketOptions:
    return WebSocketOptions(compression=mode, **values)  # type: ignore[arg-type]


def server_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, masked: bool = True
) -> bytes:
    """A frame as a client sends it to a server (masked), with RSV1 as asked."""
    return build_frame(opcode, payload, fin=fin, rsv1=rsv1, mask_key=MASK if masked else None)


def server_side(mode: str = "shared", **values: Any) -> tuple[WebSocketConnection, Recorder]:
    """A server connection that negotiated permessage-deflate with a default client offer."""
    opts = options(mode, **values)
    server_codec, _ = negotiate(opts, options("dedicated"))
    recorder = Recorder()
    return WebSocketConnection(recorder, opts, client=False, deflate=server_codec), recorder


def assert_failed(conn: WebSocketConnection, code: int) -> None:
    assert conn.state is State.CLOSED
    assert conn.close_code == code
    frames = read_frames(conn.data_to_send())
    assert [frame.opcode for frame in frames] == [CLOSE]
    assert frames[0].payload[:2] == struct.pack("!H", code)


# ------------------------------------------------------------------ header parsing


@pytest.mark.parametrize(
    ("values", "parsed"),
    [
        ([""], []),
        (["permessage-deflate"], [("permessage-deflate", [])]),
        (
            ["permessage-deflate; client_max_window_bits"],
            [("permessage-deflate", [("client_max_window_bits", None)])],
        ),
        (
            ["permessage-deflate;server_max_window_bits=10 ; Client_No_Context_Takeover"],
            [
                (
                    "permessage-deflate",
                    [("server_max_window_bits", "10"), ("client_no_context_takeover", None)],
                )
            ],
        ),
        (
            ['permessage-deflate; server_max_window_bits="10"'],
            [("permessage-deflate", [("server_max_window_bits", "10")])],
        ),
        (
            ["x-webkit-deflate-frame, permessage-deflate; a=1, ,foo"],
            [("x-webkit-deflate-frame", []), ("permessage-deflate", [("a", "1")]), ("foo", [])],
        ),
        (
            ["permessage-deflate; client_max_window_bits", "permessage-deflate"],
            [("permessage-deflate", [("client_max_window_bits", None)]), ("permessage-deflate", [])],
        ),
    ],
)
def test_parse_extensions(values: list[str], parsed: list[Any]) -> None:
    assert parse_extensions(values) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "permessage-deflate; client_max_window_bits=",
        'permessage-deflate; server_max_window_bits="10',
        'permessage-deflate; server_max_window_bits="1 0"',
        'permessage-deflate; server_max_window_bits=""',
        "permessage-deflate; ; x",
        "permessage-deflate x",
        "; server_max_window_bits=10",
        "permessage deflate",
        "permessage-deflate; a=b=c",
    ],
)
def test_parse_extensions_refuses_malformed_headers(value: str) -> None:
    with pytest.raises(ValueError):
        parse_extensions([value])


# ------------------------------------------------------------- server negotiation

SHARED_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

NEGOTIATION: list[tuple[str, list[str], str | None]] = [
    # shared: no context takeover either way, whatever the client asked.
    ("shared", ["permessage-deflate"], SHARED_ANSWER),
    ("shared", ["permessage-deflate; client_max_window_bits"], SHARED_ANSWER),
    ("shared", ["permessage-deflate; client_no_context_takeover"], SHARED_ANSWER),
    ("shared", ["permessage-deflate; server_no_context_takeover"], SHARED_ANSWER),
    (
        "shared",
        ["permessage-deflate; server_max_window_bits=10"],
        SHARED_ANSWER + "; server_max_window_bits=10",
    ),
    (
        "shared",
        ["permessage-deflate; server_max_window_bits=15"],
        SHARED_ANSWER + "; server_max_window_bits=12",
    ),
    ("shared", ["permessage-deflate; client_max_window_bits=9"], SHARED_ANSWER),
    # dedicated: context takeover, bounded windows; client_max_window_bits only when offered.
    ("dedicated", ["permessage-deflate"], "permessage-deflate; server_max_window_bits=12"),
    (
        "dedicated",
        ["permessage-deflate; client_max_window_bits"],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
    ),
    (
        "dedicated",
        ["permessage-deflate; client_max_window_bits=10"],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
    ),
    (
        "dedicated",
        ["permessage-deflate; client_max_window_bits=15; server_max_window_bits=9"],
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=12",
    ),
    (
        "dedicated",
        ["permessage-deflate; server_no_context_takeover; client_no_context_takeover"],
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
    ),
    (
        "dedicated",
        ['permessage-deflate; client_max_window_bits="11"'],
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=11",
    ),
    # Several offers (in one header or repeated headers): the first acceptable one wins.
    (
        "dedicated",
        ["permessage-deflate; unknown_param, permessage-deflate; server_max_window_bits=10"],
        "permessage-deflate; server_max_window_bits=10",
    ),
    (
        "dedicated",
        ["x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits=8", "permessage-deflate"],
        "permessage-deflate; server_max_window_bits=12",
    ),
    (
        "shared",
        ["foo, permessage-deflate; server_no_context_takeover=yes", "permessage-deflate"],
        SHARED_ANSWER,
    ),
    # Declined: unknown, duplicated or invalid parameters; other extensions; malformed headers.
    ("shared", ["permessage-deflate; unknown_param"], None),
    ("shared", ["permessage-deflate; client_max_window_bits; client_max_window_bits"], None),
    ("shared", ["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None),
    ("dedicated", ["permessage-deflate; server_max_window_bits"], None),
    ("dedicated", ["permessage-deflate; server_max_window_bits=8"], None),  # zlib cannot do 8
    ("dedicated", ["permessage-deflate; server_max_window_bits=16"], None),
    ("dedicated", ["permessage-deflate; server_max_window_bits=7"], None),
    ("dedicated", ["permessage-deflate; server_max_window_bits=010"], None),
    ("dedicated", ["permessage-deflate; server_max_window_bits=x"], None),
    ("dedicated", ["permessage-deflate; client_max_window_bits=16"], None),
    ("dedicated", ["permessage-deflate; client_no_context_takeover=1"], None),
    ("dedicated", ["x-webkit-deflate-frame"], None),
    ("dedicated", ['permessage-deflate; client_max_window_bits="10'], None),
    ("dedicated", [], None),
    ("dedicated", [""], None),
]


@pytest.mark.parametrize(("mode", "offers", "answer"), NEGOTIATION)
def test_server_negotiation(mode: str, offers: list[str], answer: str | None) -> None:
    accepted = ServerDeflate(options(mode)).negotiate(offers)
    if answer is None:
        assert accepted is None
        return
    assert accepted is not None
    codec, header = accepted
    assert header == answer
    assert codec.parameters.header() == answer


def test_server_refuses_to_be_built_with_compression_off() -> None:
    with pytest.raises(ValueError, match="off"):
        ServerDeflate(WebSocketOptions())
    with pytest.raises(ValueError, match="off"):
        ClientDeflate(WebSocketOptions())


def test_shared_codecs_keep_no_state_and_are_shared() -> None:
    server = ServerDeflate(options("shared"))
    first = server.negotiate(["permessage-deflate"])
    second = server.negotiate(["permessage-deflate; client_max_window_bits"])
    assert first is not None and second is not None
    assert first[0] is second[0]
    assert first[0].stateless
    codec = first[0]
    codec.compress(b"x" * 5000)
    decompressor = codec.decompressor()
    codec.inflate(decompressor, deflate_raw(b"y" * 5000), True, MiB)
    assert codec._compressor is None and codec._decompressor is None


def test_dedicated_codecs_are_per_connection_and_lazy() -> None:
    server = ServerDeflate(options("dedicated"))
    first = server.negotiate(["permessage-deflate"])
    second = server.negotiate(["permessage-deflate"])
    assert first is not None and second is not None
    assert first[0] is not second[0]
    codec = first[0]
    assert not codec.stateless
    assert codec._compressor is None and codec._decompressor is None
    codec.compress(b"hello")
    assert codec._compressor is not None
    assert codec.decompressor() is codec.decompressor()


# ------------------------------------------------------------- client negotiation


def test_client_offers() -> None:
    assert ClientDeflate(options("dedicated")).offer() == "permessage-deflate; client_max_window_bits"
    assert ClientDeflate(options("shared")).offer() == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
    )
    offered = parse_extensions([ClientDeflate(options("shared")).offer()])
    assert (
        ServerDeflate(options("dedicated")).negotiate([ClientDeflate(options("shared")).offer()]) is not None
    )
    assert offered[0][0] == "permessage-deflate"


@pytest.mark.parametrize(
    ("mode", "answer", "expected"),
    [
        ("dedicated", "permessage-deflate", DeflateParameters()),
        (
            "dedicated",
            "Permessage-Deflate; Server_Max_Window_Bits=10",
            DeflateParameters(server_max_window_bits=10),
        ),
        (
            "dedicated",
            "permessage-deflate; client_max_window_bits=9; client_no_context_takeover",
            DeflateParameters(client_no_context_takeover=True, client_max_window_bits=9),
        ),
        ("dedicated", "permessage-deflate; server_no_context_takeover", DeflateParameters(True)),
        ("shared", SHARED_ANSWER, DeflateParameters(True, True)),
        ("shared", "permessage-deflate; server_no_context_takeover", DeflateParameters(True)),
    ],
)
def test_client_accepts_valid_answers(mode: str, answer: str, expected: DeflateParameters) -> None:
    codec = ClientDeflate(options(mode)).accept([answer])
    assert codec is not None
    assert codec.parameters == expected


def test_client_without_answer_has_no_compression() -> None:
    assert ClientDeflate(options("dedicated")).accept([]) is None
    assert ClientDeflate(options("dedicated")).accept([" , "]) is None


@pytest.mark.parametrize(
    ("mode", "answers", "match"),
    [
        ("dedicated", ["x-webkit-deflate-frame"], "not offered"),
        ("dedicated", ["permessage-deflate, permessage-deflate"], "not offered"),
        ("dedicated", ["permessage-deflate", "x-foo"], "not offered"),
        ("dedicated", ["permessage-deflate; mystery"], "unknown"),
        ("dedicated", ["permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"], "twice"),
        ("dedicated", ["permessage-deflate; server_no_context_takeover=1"], "no value"),
        ("dedicated", ["permessage-deflate; server_max_window_bits"], "invalid"),
        ("dedicated", ["permessage-deflate; server_max_window_bits=16"], "invalid"),
        ("dedicated", ["permessage-deflate; client_max_window_bits"], "invalid"),
        ("dedicated", ["permessage-deflate; client_max_window_bits=8"], "not supported"),
        ("dedicated", ["permessage-deflate; x"], "unknown"),
        ("dedicated", ['permessage-deflate; client_max_window_bits="9'], "malformed"),
        ("shared", ["permessage-deflate"], "server_no_context_takeover"),
    ],
)
def test_client_refuses_invalid_answers(mode: str, answers: list[str], match: str) -> None:
    with pytest.raises(InvalidHandshake, match=match):
        ClientDeflate(options(mode)).accept(answers)


def _response(extensions: list[str]) -> Response:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    items = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept_key(key))]
    items += [("Sec-WebSocket-Extensions", value) for value in extensions]
    return Response(101, Headers(items))


def test_check_response_checks_the_extension_against_the_offer() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    deflate = ClientDeflate(options("dedicated"))
    assert check_response(_response(["permessage-deflate"]), key, (), deflate) is None
    assert check_response(_response([]), key, (), deflate) is None
    with pytest.raises(InvalidHandshake, match="not offered"):
        check_response(_response(["permessage-deflate"]), key)
    with pytest.raises(InvalidHandshake, match="unknown"):
        check_response(_response(["permessage-deflate; foo"]), key, (), deflate)


def test_build_request_carries_the_offer() -> None:
    request = build_request(
        parse_ws_url("ws://h/"), "k", extensions="permessage-deflate; client_max_window_bits"
    )
    assert b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" in request
    assert b"Sec-WebSocket-Extensions" not in build_request(parse_ws_url("ws://h/"), "k")


# ------------------------------------------------------------------- messages


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
@pytest.mark.parametrize("client_mode", ["shared", "dedicated"])
def test_round_trip_both_ways(mode: str, client_mode: str) -> None:
    pair = Pair(options(mode, compression_threshold=0), options(client_mode, compression_threshold=0))
    text = "héllo wörld " * 300
    data = bytes(range(256)) * 40
    pair.server.send_text(text)
    pair.server.send_binary(data)
    pair.server.send_text("")
    frames = pair.to_client()
    assert [(frame.rsv1, frame.opcode) for frame in frames] == [(True, TEXT), (True, BINARY), (True, TEXT)]
    assert len(frames[0].payload) < len(text.encode()) // 10
    assert inflate_raw(frames[1].payload) == data  # plain zlib reads what we wrote
    assert pair.client_events.events == [("text", text), ("binary", data), ("text", "")]
    pair.client.send_text(text)
    pair.client.send_binary(data)
    frames = pair.to_server()
    assert all(frame.rsv1 for frame in frames)
    assert pair.server_events.events == [("text", text), ("binary", data)]


def test_threshold_sends_small_messages_uncompressed() -> None:
    pair = Pair(options("shared", compression_threshold=100))
    pair.server.send_text("x" * 99)
    pair.server.send_text("x" * 100)
    pair.client.send_binary(b"y" * 99)
    pair.client.send_binary(b"y" * 100)
    assert [frame.rsv1 for frame in pair.to_client()] == [False, True]
    assert [frame.rsv1 for frame in pair.to_server()] == [False, True]
    assert pair.client_events.events == [("text", "x" * 99), ("text", "x" * 100)]
    assert pair.server_events.events == [("binary", b"y" * 99), ("binary", b"y" * 100)]


def test_uncompressed_messages_still_arrive_when_compression_is_negotiated() -> None:
    conn, recorder = server_side()
    conn.receive_data(server_frame(TEXT, b"plain"))
    conn.receive_data(server_frame(TEXT, b"pl", fin=False) + server_frame(CONTINUATION, b"ain"))
    assert recorder.events == [("text", "plain"), ("text", "plain")]


def test_context_takeover_across_messages_versus_none() -> None:
    message = " ".join(str(i * 7919 % 10007) for i in range(300))  # compresses, but not to nothing
    dedicated = Pair(options("dedicated", compression_threshold=0))
    shared = Pair(options("shared", compression_threshold=0))
    for pair in (dedicated, shared):
        pair.server.send_text(message)
        pair.server.send_text(message)
        pair.client.send_text(message)
        pair.client.send_text(message)
    taken_over = [len(frame.payload) for frame in dedicated.to_client()]
    fresh = [len(frame.payload) for frame in shared.to_client()]
    # With context takeover the second copy is a back-reference to the first.
    assert taken_over[1] < taken_over[0] // 4
    assert fresh[0] == fresh[1] == taken_over[0]
    taken_over_up = [len(frame.payload) for frame in dedicated.to_server()]
    fresh_up = [len(frame.payload) for frame in shared.to_server()]
    assert taken_over_up[1] < taken_over_up[0] // 4
    assert fresh_up[0] == fresh_up[1]
    for pair in (dedicated, shared):
        assert pair.client_events.events == [("text", message)] * 2
        assert pair.server_events.events == [("text", message)] * 2


def test_fresh_context_message_is_not_readable_with_takeover_assumed_missing() -> None:
    # The receiver of a no-takeover peer decodes each message alone: plain zlib, fresh each time.
    pair = Pair(options("shared", compression_threshold=0))
    pair.server.send_text("abc" * 500)
    pair.server.send_text("abc" * 500)
    for frame in pair.to_client():
        assert inflate_raw(frame.payload) == b"abc" * 500


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_fragmented_compressed_message(mode: str) -> None:
    conn, recorder = server_side(mode)
    text = ("fragmented ünïcode " * 500).encode()
    payload = deflate_raw(text)
    cut = [0, 7, len(payload) // 2, len(payload) - 1, len(payload)]
    data = server_frame(TEXT, payload[cut[0] : cut[1]], fin=False, rsv1=True)
    for start, end in itertools.pairwise(cut[1:-1]):
        data += server_frame(CONTINUATION, payload[start:end], fin=False)
        data += server_frame(PING, b"between")  # control frames may interleave
    data += server_frame(CONTINUATION, payload[cut[-2] :])
    for byte in range(0, len(data), 97):  # and arrive in any chunks
        conn.receive_data(data[byte : byte + 97])
    assert recorder.events == [("ping", b"between")] * 2 + [("text", text.decode())]
    assert conn.state is State.OPEN
    # A compressed message made of an empty first frame and the rest later works too.
    conn.receive_data(
        server_frame(BINARY, b"", fin=False, rsv1=True) + server_frame(CONTINUATION, deflate_raw(b"z" * 3000))
    )
    assert recorder.events[-1] == ("binary", b"z" * 3000)


def test_invalid_utf8_in_inflated_text_fails_fast() -> None:
    conn, recorder = server_side()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = compressor.compress(b"valid start \xff\xfe then") + compressor.flush(zlib.Z_SYNC_FLUSH)
    conn.receive_data(server_frame(TEXT, first, fin=False, rsv1=True))
    # The bad bytes are known before the message ends: no need to wait for its last frame.
    assert_failed(conn, 1007)
    assert recorder.events == []


def test_invalid_utf8_in_a_single_compressed_frame() -> None:
    conn, _ = server_side()
    conn.receive_data(server_frame(TEXT, deflate_raw(b"ok \xed\xa0\x80"), rsv1=True))
    assert_failed(conn, 1007)


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff\xff\xff", b"\x07", bytes(range(200)), deflate_raw(b"x" * 100) + b"\xff\x00\xff"],
    ids=["ones", "reserved-block-type", "noise", "trailing"],
)
def test_invalid_deflate_data_closes_with_1007(garbage: bytes) -> None:
    conn, _ = server_side()
    conn.receive_data(server_frame(BINARY, garbage, rsv1=True))
    assert_failed(conn, 1007)


def test_data_after_a_final_deflate_block_closes_with_1007() -> None:
    final = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = final.compress(b"done") + final.flush(zlib.Z_FINISH)
    conn, recorder = server_side("dedicated")
    conn.receive_data(server_frame(TEXT, stream, rsv1=True))  # BFINAL, then our tail: accepted
    assert recorder.events == [("text", "done")]
    conn.receive_data(server_frame(TEXT, stream + b"\x01\x02", rsv1=True))
    assert_failed(conn, 1007)


# ----------------------------------------------------------------- RSV1 misuse


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        ([build_frame(PING, b"p", rsv1=True, mask_key=MASK)], "control"),
        ([build_frame(CLOSE, b"\x03\xe8", rsv1=True, mask_key=MASK)], "control"),
        (
            [
                server_frame(TEXT, deflate_raw(b"ab")[:1], fin=False, rsv1=True),
                server_frame(CONTINUATION, deflate_raw(b"ab")[1:], rsv1=True),
            ],
            "continuation",
        ),
        ([server_frame(TEXT, b"x", fin=False), server_frame(CONTINUATION, b"y", rsv1=True)], "continuation"),
        ([bytes((0x80 | 0x20 | TEXT, 0x80)) + MASK], "reserved"),  # RSV2
        ([bytes((0x80 | 0x60 | TEXT, 0x80)) + MASK], "reserved"),  # RSV1 + RSV2
        ([bytes((0x80 | 0x40 | 0x3, 0x80)) + MASK], "reserved"),  # RSV1 on a reserved opcode
    ],
    ids=[
        "ping",
        "close",
        "continuation-of-compressed",
        "continuation-of-plain",
        "rsv2",
        "rsv1-rsv2",
        "opcode",
    ],
)
def test_rsv1_misuse_closes_with_1002(frames: list[bytes], why: str) -> None:
    conn, recorder = server_side()
    for frame in frames:
        conn.receive_data(frame)
    assert_failed(conn, 1002)
    assert why in conn.close_reason or why == "reserved"
    assert recorder.events == []


def test_rsv1_without_negotiation_closes_with_1002() -> None:
    recorder = Recorder()
    conn = WebSocketConnection(recorder, options("shared"), client=False)  # offered, not agreed
    conn.receive_data(server_frame(TEXT, deflate_raw(b"hello"), rsv1=True))
    assert_failed(conn, 1002)
    assert "without a negotiated extension" in conn.close_reason


def test_compressed_message_may_not_interrupt_another() -> None:
    conn, _ = server_side()
    conn.receive_data(server_frame(TEXT, b"a", fin=False))
    conn.receive_data(server_frame(TEXT, deflate_raw(b"b"), rsv1=True))
    assert_failed(conn, 1002)


# --------------------------------------------------------------------- limits


def test_compressed_frame_over_max_compressed_size_closes_with_1009_from_its_header() -> None:
    conn, _ = server_side(max_compressed_size=1000)
    header = struct.pack("!BBH", 0x80 | 0x40 | BINARY, 0x80 | 126, 1001) + MASK
    conn.receive_data(header)  # no payload needed to refuse it
    assert_failed(conn, 1009)


def test_compressed_fragments_over_max_compressed_size_close_with_1009() -> None:
    conn, _ = server_side(max_compressed_size=1000)
    payload = deflate_raw(" ".join(str(i * 7919 % 10007) for i in range(600)).encode())
    assert len(payload) > 1000
    conn.receive_data(server_frame(BINARY, payload[:600], fin=False, rsv1=True))
    assert conn.state is State.OPEN
    conn.receive_data(server_frame(CONTINUATION, payload[600:], fin=True))
    assert_failed(conn, 1009)


def test_max_payload_length_bounds_the_inflated_size() -> None:
    conn, recorder = server_side(max_payload_length=10_000)
    conn.receive_data(server_frame(BINARY, deflate_raw(bytes(10_000)), rsv1=True))
    assert recorder.events == [("binary", bytes(10_000))]
    conn.receive_data(server_frame(BINARY, deflate_raw(bytes(10_001)), rsv1=True))
    assert_failed(conn, 1009)


def test_max_payload_length_bounds_the_inflated_size_over_fragments() -> None:
    conn, recorder = server_side(max_payload_length=10_000)
    payload = deflate_raw(bytes(30_000))
    conn.receive_data(server_frame(BINARY, payload[:5], fin=False, rsv1=True))
    conn.receive_data(server_frame(CONTINUATION, payload[5:], fin=False))
    assert_failed(conn, 1009)
    assert recorder.events == []


def bomb(total: int, chunk: int = MiB) -> bytes:
    """A compressed payload that inflates to ``total`` zero bytes, built in milliseconds.

    A fresh compressor's sync-flushed output refers to nothing before it, so copies of it chained
    together are one valid deflate stream (the one zlib would take seconds to make for 1 GB).
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return (piece * (total // chunk))[:-4]


def test_the_bomb_helper_is_a_real_bomb() -> None:
    payload = bomb(64 * MiB)
    assert inflate_raw(payload) == bytes(64 * MiB)


@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_decompression_bomb_costs_about_the_limit(client: bool) -> None:
    limit = MiB
    payload = bomb(1024 * MiB)  # 1 GiB of zeros in about 1 MB
    opts = options("shared", max_payload_length=limit, max_compressed_size=2 * MiB)
    server_codec, client_codec = negotiate(opts, opts)
    recorder = Recorder()
    conn = WebSocketConnection(
        recorder, opts, client=client, deflate=client_codec if client else server_codec
    )
    frame = build_frame(BINARY, payload, rsv1=True, mask_key=None if client else MASK)
    stats = (client_codec if client else server_codec).stats
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        conn.receive_data(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(conn, 1009)
    assert recorder.events == []
    assert stats.inflated_messages == 0
    # Independent of the bomb's inflated size (1 GiB): copies of the ~1 MB compressed input (the
    # frame's payload, zlib's unconsumed tail; on the server the unmasked copy) and at most the
    # limit (plus one byte) of inflated output.
    budget = (3 if client else 5) * len(frame) + limit + 256 * 1024
    assert peak < budget, f"peak {peak} bytes for a {limit}-byte limit"


def test_decompression_bomb_in_fragments() -> None:
    conn, _ = server_side(max_payload_length=MiB, max_compressed_size=4 * MiB)
    payload = bomb(1024 * MiB)
    step = len(payload) // 8
    conn.receive_data(server_frame(BINARY, payload[:step], fin=False, rsv1=True))
    offset = step
    while conn.state is State.OPEN and offset < len(payload):
        conn.receive_data(server_frame(CONTINUATION, payload[offset : offset + step], fin=False))
        offset += step
    assert_failed(conn, 1009)
    assert offset < len(payload) // 2  # stopped at the limit, not at the end of the bomb


# ------------------------------------------------------------ outgoing messages


def test_prepare_message_stays_plain_bytes_without_compression() -> None:
    assert prepare_message(TEXT, b"hi", None) == build_frame(TEXT, b"hi")
    assert prepare_message(TEXT, b"hi", 3) == build_frame(TEXT, b"hi")
    assert isinstance(prepare_message(TEXT, b"hi!", 3), OutgoingMessage)


def test_a_broadcast_is_compressed_once_per_window_size() -> None:
    stats = DeflateStats()
    shared = ServerDeflate(options("shared", compression_threshold=0), stats)
    dedicated = ServerDeflate(options("dedicated", compression_threshold=0), stats)
    codecs: list[PerMessageDeflate | None] = []
    for server in (shared, dedicated, dedicated, shared):
        accepted = server.negotiate(["permessage-deflate; client_max_window_bits"])
        assert accepted is not None
        codecs.append(accepted[0])
    narrow = shared.negotiate(["permessage-deflate; server_max_window_bits=9"])
    assert narrow is not None
    codecs += [None, narrow[0], None]
    text = (
        b'{"event":"news","data":["' + " ".join(str(i * 7919 % 10007) for i in range(500)).encode() + b'"]}'
    )
    message = OutgoingMessage(TEXT, text)
    frames = [message.frame_for(codec) for codec in codecs]
    # Window 12 for four recipients, window 9 for one: two compressions, not five.
    assert stats.compressed_frames == stats.compressed_broadcast_frames == 2
    assert frames[0] is frames[1] is frames[2] is frames[3]
    assert frames[4] is frames[6] == build_frame(TEXT, text)
    assert frames[5] is not frames[0]
    for frame, bits in ((frames[0], 12), (frames[5], 9)):
        (parsed,) = read_frames(frame)
        assert parsed.rsv1 and parsed.opcode == TEXT
        assert inflate_raw(parsed.payload, bits) == text
    assert message.last_size == len(frames[6])


def test_a_dedicated_connection_stays_in_sync_around_broadcast_frames() -> None:
    """Own-compressor messages, then a frame compressed once for all, then own messages again:
    the client (with context takeover) reads every one of them."""
    pair = Pair(options("dedicated", compression_threshold=0))
    other, _ = negotiate(options("dedicated", compression_threshold=0), options("dedicated"))
    sentence = " ".join(str(i * 7919 % 10007) for i in range(300))
    pair.server.send_text(sentence + "1")
    broadcast = OutgoingMessage(TEXT, (sentence + "broadcast").encode())
    broadcast.frame_for(other)  # built for another recipient first: reused as is
    pair.server.send_message(broadcast)
    pair.server.send_text(sentence + "2")
    pair.server.send_message(OutgoingMessage(TEXT, (sentence + "3").encode(), broadcast=False))
    frames = pair.to_client()
    assert all(frame.rsv1 for frame in frames)
    assert pair.client_events.events == [
        ("text", sentence + "1"),
        ("text", sentence + "broadcast"),
        ("text", sentence + "2"),
        ("text", sentence + "3"),
    ]
    # The message after the broadcast still compresses well: the broadcast is its dictionary.
    assert len(frames[2].payload) < len(frames[1].payload) // 4


def test_send_message_is_for_servers() -> None:
    pair = Pair(options("shared"))
    with pytest.raises(RuntimeError, match="server"):
        pair.client.send_message(OutgoingMessage(TEXT, b"x"))


def test_masking_happens_after_compression() -> None:
    pair = Pair(options("dedicated", compression_threshold=0))
    pair.client.send_binary(b"masked " * 100)
    data = pair.client.data_to_send()
    length = data[1] & 0x7F
    assert data[0] & 0x40 and data[1] & 0x80
    key, body = data[2:6], data[6 : 6 + length]
    assert inflate_raw(apply_mask(body, key), 12) == b"masked " * 100


def test_stats_count_compressions_and_inflations() -> None:
    pair = Pair(options("shared", compression_threshold=10))
    stats = pair.server.deflate.stats if pair.server.deflate is not None else None
    assert stats is not None
    pair.server.send_text("x" * 5)
    pair.server.send_text("x" * 50)
    pair.client.send_text("y" * 50)
    pair.to_client()
    pair.to_server()
    assert stats.compressed_frames == 1
    assert stats.compressed_broadcast_frames == 0
    assert stats.inflated_messages == 1


# ---------------------------------------------------------------------- fuzzing

HEADER_TEXT = st.text(
    alphabet=st.sampled_from(list('permessage-deflate_clientservrbitswx0123456789;,=" \t\\'))
)


@given(st.lists(HEADER_TEXT, max_size=3))
@example(['permessage-deflate; client_max_window_bits="1\\5"'])
@example(["permessage-deflate;;"])
@example(["permessage-deflate; client_max_window_bits=8, permessage-deflate; server_max_window_bits=8"])
def test_offers_and_answers_only_raise_documented_errors(values: list[str]) -> None:
    try:
        parse_extensions(values)
    except ValueError:
        pass
    for mode in ("shared", "dedicated"):
        accepted = ServerDeflate(options(mode)).negotiate(values)  # never raises: declines
        if accepted is not None and "client_max_window_bits=8" not in accepted[1]:
            # Whatever was accepted, the answer is one our client takes (ours never offers
            # client_max_window_bits=8, the one value zlib cannot compress with).
            assert ClientDeflate(options("dedicated")).accept([accepted[1]]) is not None
        try:
            ClientDeflate(options(mode)).accept(values)
        except InvalidHandshake:
            pass


@given(
    data=st.binary(max_size=5000) | st.text(max_size=2000).map(str.encode),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=6),
    mode=st.sampled_from(["shared", "dedicated"]),
)
def test_any_message_in_any_fragments_round_trips(data: bytes, cuts: list[int], mode: str) -> None:
    conn, recorder = server_side(mode, compression_threshold=0)
    payload = deflate_raw(data)
    points = sorted({min(cut, len(payload)) for cut in cuts} | {0, len(payload)})
    pieces = [payload[start:end] for start, end in itertools.pairwise(points)] or [b""]
    frames = b"".join(
        server_frame(
            BINARY if index == 0 else CONTINUATION, piece, fin=index == len(pieces) - 1, rsv1=index == 0
        )
        for index, piece in enumerate(pieces)
    )
    conn.receive_data(frames)
    assert recorder.events == [("binary", data)]
    # And what the connection compresses, plain zlib reads back.
    conn.send_binary(data)
    (frame,) = read_frames(conn.data_to_send())
    assert frame.rsv1
    assert inflate_raw(frame.payload, 12) == data
