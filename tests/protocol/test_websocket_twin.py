"""The compiled connection state machine against its spec, on the same random inputs.

test_websocket.py and test_deflate.py run every behaviour they describe on both implementations;
here random streams (valid, invalid, truncated, split anywhere) and random calls go to a
``PyWebSocketConnection`` and to the compiled ``WebSocketConnection`` side by side, and everything
observable must be equal after each step: the handler's calls, ``state``, ``close_code``,
``close_reason``, ``pending_bytes``, whether a partial frame is held, the bytes queued (unmasked
for a client, whose mask keys are random) and any exception raised.
"""

from __future__ import annotations

import inspect
import itertools
import os
import struct
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nanosocket._speedups import enabled as speedups_enabled
from nanosocket.options import WebSocketOptions
from nanosocket.protocol import websocket
from nanosocket.protocol.deflate import ClientDeflate, OutgoingMessage, ServerDeflate
from nanosocket.protocol.frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, py_build_frame
from nanosocket.protocol.websocket import PyWebSocketConnection, State

try:
    from nanosocket._speedups._websocket import WebSocketConnection as Compiled
except ImportError:
    Compiled = None

needs_twin = pytest.mark.skipif(Compiled is None, reason="the compiled twin was not built")

PEER_MASK = b"\x37\xfa\x21\x3d"


def test_the_compiled_twin_is_selected_when_built_and_allowed() -> None:
    """``make test`` sets NANOSOCKET_REQUIRE_SPEEDUPS=1: there the build must have compiled."""
    if os.environ.get("NANOSOCKET_REQUIRE_SPEEDUPS") == "1" and speedups_enabled():
        assert Compiled is not None, "the compiled speedups were not built"
    if Compiled is not None and speedups_enabled():
        assert websocket.WebSocketConnection is Compiled
    else:
        assert websocket.WebSocketConnection is PyWebSocketConnection


def as_held_by_the_twin(partial: bytes) -> bytes:
    """A partial frame as the twin holds it: once its header is complete, its payload unmasked
    (its header unchanged)."""
    if len(partial) < 2:
        return partial
    header_length = {126: 4, 127: 10}.get(partial[1] & 0x7F, 2) + (4 if partial[1] & 0x80 else 0)
    if len(partial) < header_length or not partial[1] & 0x80:
        return partial
    key = partial[header_length - 4 : header_length]
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(partial[header_length:]))
    return partial[:header_length] + payload


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def _shape(function: Any) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds and defaults (annotations aside)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@needs_twin
def test_the_twin_has_the_specs_public_attributes_and_methods() -> None:
    handler, options = Recorder(), WebSocketOptions()
    conn = PyWebSocketConnection(handler, options, client=False)
    twin = Compiled(handler, options, client=False)
    spec_names = _public(PyWebSocketConnection) | {
        name for name in conn.__slots__ if not name.startswith("_")
    }
    assert spec_names <= _public(Compiled)
    for name in spec_names:
        spec_value = getattr(conn, name)
        if callable(spec_value):
            assert _shape(getattr(twin, name)) == _shape(spec_value), name
        else:
            assert getattr(twin, name) == spec_value, name
    # The constructor: the same keywords, ``client`` and ``deflate`` keyword-only.
    for cls in (PyWebSocketConnection, Compiled):
        with pytest.raises(TypeError):
            cls(handler, options, False)  # type: ignore[misc]
        with pytest.raises(TypeError):
            cls(handler, options)  # type: ignore[call-arg]
        cls(handler=handler, options=options, client=True, deflate=None)


@needs_twin
def test_a_compiled_connection_is_smaller_than_the_spec() -> None:
    # DESIGN §2: per-connection state stays small; C fields instead of slots holding objects.
    assert Compiled.__basicsize__ < PyWebSocketConnection.__basicsize__  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- side by side


class Recorder:
    """A FrameHandler that records its calls; some texts make it act on the connection."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.conn: Any = None

    def text_received(self, text: str) -> None:
        assert type(text) is str
        self.events.append(("text", text))
        # A layer above that answers, closes or fails from inside the callback.
        if text.startswith("reply"):
            self.conn.send_text("re:" + text)
        elif text.startswith("close"):
            self.conn.send_close(1001, "bye")
        elif text.startswith("fail"):
            self.conn.fail(1008, "policy")

    def binary_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.events.append(("binary", data))

    def ping_received(self, payload: bytes) -> None:
        self.events.append(("ping", payload))

    def pong_received(self, payload: bytes) -> None:
        self.events.append(("pong", payload))


def unmask_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(first byte, masked, payload) of each frame queued, payload unmasked; fails on a bad frame."""
    frames = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
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
        assert len(body) == length
        pos += length
        if key:
            body = bytes(b ^ key[i % 4] for i, b in enumerate(body))
        frames.append((first, second & 0x80, body))
    return frames


class Twins:
    """A spec connection and a compiled one, fed the same inputs and compared after each."""

    def __init__(self, client: bool, options: WebSocketOptions, deflates: tuple[Any, Any] = (None, None)):
        self.client = client
        self.handlers = (Recorder(), Recorder())
        self.conns = (
            PyWebSocketConnection(self.handlers[0], options, client=client, deflate=deflates[0]),
            Compiled(self.handlers[1], options, client=client, deflate=deflates[1]),
        )
        for handler, conn in zip(self.handlers, self.conns, strict=True):
            handler.conn = conn

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        outcomes = []
        for conn in self.conns:
            try:
                getattr(conn, method)(*args, **kwargs)
            except Exception as exc:
                outcomes.append((type(exc), str(exc)))
            else:
                outcomes.append(None)
        assert outcomes[0] == outcomes[1], (method, args)
        self.compare()

    def compare(self) -> None:
        spec, twin = self.conns
        assert self.handlers[0].events == self.handlers[1].events
        assert spec.state is twin.state
        assert spec.closed == twin.closed
        assert spec.close_code == twin.close_code
        assert type(spec.close_code) is type(twin.close_code)
        assert spec.close_reason == twin.close_reason
        assert spec.pending_bytes == twin.pending_bytes
        assert (spec._buf is None) == (twin._buf is None)
        if spec._buf is not None:
            assert as_held_by_the_twin(bytes(spec._buf)) == bytes(twin._buf)
        spec_out, twin_out = spec.data_to_send(), twin.data_to_send()
        assert type(twin_out) is bytes
        if self.client:
            assert unmask_frames(spec_out) == unmask_frames(twin_out)  # the mask bits too
        else:
            assert spec_out == twin_out


def encode_frame(
    client: bool,
    first: int,
    payload: bytes,
    *,
    masked: bool | None = None,
    encoding: str = "minimal",
) -> bytes:
    """A frame as our peer sends it: masked when we are the server, unless told otherwise."""
    if masked is None:
        masked = not client
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if encoding == "huge":
        return bytes((first, mask_bit | 127)) + struct.pack("!Q", 1 << 40)
    if encoding == "16" or (encoding == "minimal" and 126 <= n < 65536):
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    elif encoding == "64" or (encoding == "minimal" and n >= 65536):
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    else:
        header = bytes((first, mask_bit | n))
    if masked:
        return header + PEER_MASK + bytes(b ^ PEER_MASK[i % 4] for i, b in enumerate(payload))
    return header + payload


TEXTS = st.text(max_size=40).map(str.encode) | st.sampled_from(
    [b"reply", b"close", b"fail", "h\u00e9llo \U0001f600".encode(), b"x" * 300]
)
BROKEN_TEXTS = st.sampled_from(
    [b"\xed\xa0\x80", b"ok\xf0\x9f", b"\xff", b"\xe2\x82", "\U0001f600".encode()[:3]]
)


@st.composite
def messages(draw: st.DrawFn, client: bool) -> bytes:
    """The frames of one message or control frame as a peer sends them, now and then broken."""
    kind = draw(st.sampled_from(["text", "text", "binary", "ping", "pong", "close", "broken"]))
    if kind in ("ping", "pong"):
        opcode = PING if kind == "ping" else PONG
        return encode_frame(client, 0x80 | opcode, draw(st.binary(max_size=12)))
    if kind == "close":
        payload = draw(
            st.sampled_from([b"", b"\x03"])
            | st.builds(
                lambda code, reason: struct.pack("!H", code) + reason,
                st.sampled_from([1000, 1001, 1005, 1011, 999, 3000, 4999, 5000]),
                st.sampled_from([b"", b"bye", b"\xff", "\u00e9".encode()]),
            )
        )
        return encode_frame(client, 0x80 | CLOSE, payload)
    if kind == "broken":
        flaw = draw(
            st.sampled_from(
                ["rsv", "mask", "opcode", "16", "64", "huge", "orphan", "control-fin", "control-size"]
            )
        )
        payload = draw(st.binary(max_size=10))
        if flaw == "rsv":
            return encode_frame(client, 0x80 | TEXT | draw(st.sampled_from([0x40, 0x20, 0x10])), payload)
        if flaw == "mask":
            return encode_frame(client, 0x80 | BINARY, payload, masked=client)
        if flaw == "opcode":
            return encode_frame(client, 0x80 | draw(st.sampled_from([3, 7, 0xB, 0xF])), payload)
        if flaw in ("16", "64", "huge"):
            return encode_frame(client, 0x80 | BINARY, payload, encoding=flaw)
        if flaw == "orphan":
            return encode_frame(client, 0x80 | CONTINUATION, payload)
        if flaw == "control-fin":
            return encode_frame(client, PING, payload)
        return encode_frame(client, 0x80 | PONG, bytes(126))
    opcode = TEXT if kind == "text" else BINARY
    if kind == "text":
        payload = draw(TEXTS)
        if draw(st.integers(0, 6)) == 0:
            at = draw(st.integers(0, len(payload)))
            payload = payload[:at] + draw(BROKEN_TEXTS) + payload[at:]
    else:
        payload = draw(st.binary(max_size=120))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    bounds = [0, *cuts, len(payload)]
    parts = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    out = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        first = (opcode if index == 0 else CONTINUATION) | (0x80 if last else 0)
        out.append(encode_frame(client, first, part))
        if not last and draw(st.integers(0, 4)) == 0:
            out.append(encode_frame(client, 0x80 | PING, b"mid"))
    if draw(st.integers(0, 10)) == 0:
        out = out[:-1]  # a message that never ends: what follows breaks it
    return b"".join(out)


OPTIONS = [
    WebSocketOptions(),
    WebSocketOptions(max_payload_length=100, max_fragments=3, max_control_payload=10),
]


def _steps(client: bool) -> st.SearchStrategy[list[tuple[str, Any]]]:
    step = st.one_of(
        st.tuples(st.just("feed"), st.lists(messages(client), min_size=1, max_size=6), st.data()),
        st.tuples(st.just("send_text"), st.text(max_size=20) | st.sampled_from(["\ud800", "x" * 200])),
        st.tuples(
            st.just("send_binary"), st.binary(max_size=20) | st.builds(bytearray, st.binary(max_size=5))
        ),
        st.tuples(
            st.just("send_frame"), st.sampled_from([TEXT, CONTINUATION, 0x80, 256]), st.binary(max_size=10)
        ),
        st.tuples(st.just("send_ping"), st.binary(max_size=130)),
        st.tuples(st.just("send_pong"), st.binary(max_size=10)),
        st.tuples(st.just("send_raw"), st.sampled_from([b"\x81\x01!", b"", bytearray(b"\x82\x00")])),
        st.tuples(st.just("send_close"), st.sampled_from([1000, 1001, 4000]), st.sampled_from(["", "done"])),
        st.tuples(st.just("fail"), st.sampled_from([1002, 1011])),
        st.tuples(st.just("receive_eof")),
    )
    return st.lists(step, max_size=8)


def run_steps(twins: Twins, steps: list[tuple[str, Any]]) -> None:
    for step in steps:
        name = step[0]
        if name == "feed":
            stream = b"".join(step[1])
            data = step[2]
            cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
            bounds = [0, *cuts, len(stream)]
            for start, end in itertools.pairwise(bounds):
                chunk = stream[start:end]
                as_bytearray = data.draw(st.booleans())
                twins.call("receive_data", bytearray(chunk) if as_bytearray else chunk)
        elif name == "send_frame":
            twins.call("send_frame", step[1], step[2], fin=bool(len(step[2]) % 2))
        else:
            twins.call(name, *step[1:])


@needs_twin
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "small-limits"])
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_twin_behaves_as_the_spec(client: bool, options: WebSocketOptions, data: Any) -> None:
    twins = Twins(client, options)
    run_steps(twins, data.draw(_steps(client)))


@needs_twin
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_the_twin_splits_every_stream_as_the_spec(client: bool) -> None:
    peer_mask = None if client else PEER_MASK
    stream = b"".join(
        [
            py_build_frame(TEXT, "h€llo".encode(), fin=False, mask_key=peer_mask),
            py_build_frame(PING, b"p", mask_key=peer_mask),
            py_build_frame(CONTINUATION, " 😀".encode(), mask_key=peer_mask),
            py_build_frame(BINARY, bytes(300), mask_key=peer_mask),
            py_build_frame(BINARY, bytes(70000), mask_key=peer_mask),
            py_build_frame(TEXT, b"reply", mask_key=peer_mask),
            py_build_frame(CLOSE, struct.pack("!H", 1000), mask_key=peer_mask),
        ]
    )
    for i in range(0, len(stream), 997):
        twins = Twins(client, WebSocketOptions())
        twins.call("receive_data", stream[:i])
        twins.call("receive_data", stream[i:])
        assert twins.conns[1].state is State.CLOSED


@needs_twin
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("step", [1, 3, 7, 130])
def test_the_twin_takes_a_stream_in_small_pieces_as_the_spec(client: bool, step: int) -> None:
    # A pending partial frame takes only the bytes it needs (its header first, then its payload);
    # the rest of each piece is parsed where it is.
    peer_mask = None if client else PEER_MASK
    stream = b"".join(
        [
            py_build_frame(TEXT, b"a" * 125, mask_key=peer_mask),
            py_build_frame(BINARY, bytes(range(256)) * 2, mask_key=peer_mask),
            py_build_frame(TEXT, "h€llo".encode(), fin=False, mask_key=peer_mask),
            py_build_frame(PING, b"p", mask_key=peer_mask),
            py_build_frame(CONTINUATION, b"!", mask_key=peer_mask),
            py_build_frame(BINARY, b"", mask_key=peer_mask),
            py_build_frame(TEXT, b"reply", mask_key=peer_mask),
        ]
    )
    twins = Twins(client, WebSocketOptions())
    for i in range(0, len(stream), step):
        twins.call("receive_data", stream[i : i + step])
    assert len(twins.handlers[1].events) == 6


# ----------------------------------------------------------------- permessage-deflate


def deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _codecs(mode: str, client: bool, options: WebSocketOptions) -> tuple[Any, Any]:
    """Two codecs with the same agreement and no shared state: one per implementation."""
    pair = []
    for _ in range(2):
        offerer = ClientDeflate(options)
        accepted = ServerDeflate(options).negotiate([offerer.offer()])
        assert accepted is not None
        codec, answer = accepted
        pair.append(offerer.accept([answer]) if client else codec)
    return pair[0], pair[1]


@st.composite
def compressed_frames(draw: st.DrawFn, client: bool) -> bytes:
    """A compressed message (maybe fragmented, maybe corrupt), or an uncompressed frame."""
    mask = None if client else PEER_MASK
    if draw(st.integers(0, 3)) == 0:
        return draw(messages(client))
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    message = draw(
        (TEXTS if opcode == TEXT else st.binary(max_size=60))
        | st.binary(min_size=310, max_size=320)  # incompressible: over max_compressed_size
        | st.sampled_from([bytes(5000), b"\xed\xa0"])
    )
    payload = deflate_raw(message)
    if draw(st.integers(0, 8)) == 0:
        payload = draw(st.binary(max_size=20))  # not deflate data
    cut = draw(st.integers(0, len(payload)))
    if cut == len(payload) or draw(st.booleans()):
        return py_build_frame(opcode, payload, rsv1=True, mask_key=mask)
    return py_build_frame(opcode, payload[:cut], fin=False, rsv1=True, mask_key=mask) + py_build_frame(
        CONTINUATION, payload[cut:], mask_key=mask
    )


@needs_twin
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@example(data=None)
def test_the_twin_compresses_and_inflates_as_the_spec(client: bool, mode: str, data: Any) -> None:
    options = WebSocketOptions(
        compression=mode,  # type: ignore[arg-type]
        compression_threshold=8,
        max_payload_length=2000,
        max_compressed_size=300,
    )
    twins = Twins(client, options, _codecs(mode, client, options))
    if data is None:
        messages = [
            py_build_frame(
                TEXT, deflate_raw(b"reply " * 50), rsv1=True, mask_key=None if client else PEER_MASK
            )
        ]
        sends: list[Any] = ["x" * 100, b"y" * 100]
    else:
        messages = data.draw(st.lists(compressed_frames(client), max_size=5))
        sends = data.draw(st.lists(st.text(max_size=30) | st.binary(max_size=30), max_size=3))
    for frame in messages:
        twins.call("receive_data", frame)
        for message in sends:
            twins.call("send_text" if isinstance(message, str) else "send_binary", message)
    if not client:
        twins.call("send_message", OutgoingMessage(TEXT, b"broadcast " * 10))
        twins.call("send_message", OutgoingMessage(BINARY, b"!", broadcast=False))
