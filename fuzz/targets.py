"""Fuzz targets: each takes any bytes and checks the invariant of the parsers we own, "only
documented exceptions escape; nothing delivered exceeds its limit".

* ``envelope``: the wire codec (protocol/envelope.py). Any frame payload, decoded as a text and as
  a binary frame, raises only ProtocolError (InvalidPayload 1007, EnvelopeError 1008, or 1003 for
  msgpack); what it accepts as envelopes re-encodes (or is refused with TypeError, the documented
  "cannot be sent") and decodes again to the same event name and ack id.
* ``handshake``: the upgrade request and response readers and checks (protocol/handshake.py) fed
  in pieces. Only HandshakeError escapes; a head that is returned is within ``max_handshake_size``
  and ``max_headers``; the checks that follow (upgrade, Origin policy, query, the
  permessage-deflate negotiation) raise only HandshakeError, or nothing where they decline.
* ``deflate``: a server connection that negotiated permessage-deflate (protocol/deflate.py and
  the engine of protocol/websocket.py, compiled twin and pure-Python spec) fed the frames the
  input describes (compressed or raw payloads, fragments, control frames, a decompression bomb),
  in pieces. ``receive_data`` never raises; every message delivered is within
  ``max_payload_length``; nothing is delivered once the connection failed, and it fails only
  with the close codes of malformed input (1002, 1007, 1009).

Used by ``fuzz/run.py`` (atheris, coverage-guided: ``make fuzz``) and by tests/test_fuzz.py
(the corpus replayed as regression seeds, and a short hypothesis run, in ``make test``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from nanosocket.errors import HandshakeError, InvalidHandshake, ProtocolError
from nanosocket.options import WebSocketOptions
from nanosocket.protocol import websocket
from nanosocket.protocol.deflate import ClientDeflate, ServerDeflate
from nanosocket.protocol.envelope import (
    EnvelopeError,
    check_emit_name,
    decode_binary,
    decode_text,
    encode_ack,
    encode_event,
    iter_envelopes,
    read_envelope,
)
from nanosocket.protocol.frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, py_build_frame
from nanosocket.protocol.handshake import (
    RequestReader,
    ResponseReader,
    check_response,
    check_upgrade,
    keep_request,
    kept_headers,
    kept_target,
    origin_allowed,
    wants_upgrade,
)

__all__ = ["TARGETS", "deflate", "envelope", "handshake"]


# ------------------------------------------------------------------------------ envelope


def _decoders(data: bytes) -> list[Callable[[], Any]]:
    decoders: list[Callable[[], Any]] = [lambda: decode_text(data), lambda: decode_binary(data)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # what the engine hands over for a text frame: a str
        decoders.append(lambda: decode_text(text))
    return decoders


def envelope(data: bytes) -> None:
    for decode in _decoders(data):
        try:
            decoded = decode()
        except ProtocolError:
            continue
        try:
            envelopes = iter_envelopes(decoded)
            for item in envelopes:
                event, args, ack, _error = read_envelope(item)
                _reencode(event, args, ack)
        except EnvelopeError:
            pass
    try:
        check_emit_name(data.decode("utf-8", "replace"))
    except ValueError:
        pass


def _reencode(event: str | None, args: list[Any], ack: int | None) -> None:
    try:
        if event is None:
            assert ack is not None
            payload, binary = encode_ack(ack, args)
        else:
            payload, binary = encode_event(event, args, ack)
    except TypeError:
        return  # a value the codecs cannot carry (a bytes key for JSON, ...): "cannot be sent"
    again = decode_binary(payload) if binary else decode_text(payload)
    event_again, _, ack_again, _ = read_envelope(again)
    assert (event_again, ack_again) == (event, ack), (event, ack, event_again, ack_again)


# ----------------------------------------------------------------------------- handshake

MAX_HANDSHAKE = 2048
MAX_HEADERS = 16
_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _pieces(data: bytes) -> list[bytes]:
    """``data`` cut in up to three pieces at places its first bytes choose."""
    if len(data) < 3:
        return [data]
    body = data[2:]
    first = data[0] % (len(body) + 1)
    second = first + data[1] % (len(body) - first + 1)
    return [piece for piece in (body[:first], body[first:second], body[second:]) if piece] or [b""]


def handshake(data: bytes) -> None:
    options = WebSocketOptions(compression="dedicated")
    pieces = _pieces(data)
    reader = RequestReader(MAX_HANDSHAKE, MAX_HEADERS)
    fed = 0
    try:
        for piece in pieces:
            fed += len(piece)
            request = reader.feed(piece)
            if request is not None:
                break
        else:
            request = None
    except InvalidHandshake:
        request = None
    if request is not None:
        assert fed - len(reader.trailing) <= MAX_HANDSHAKE
        assert len(request.headers.raw_items()) <= MAX_HEADERS
        head, key = keep_request(request)
        assert kept_target(head) == request.target
        assert list(kept_headers(head, key).raw_items()) == list(request.headers.raw_items())
        wants_upgrade(request)
        _ = request.path, request.query
        origin_allowed(request, None)
        origin_allowed(request, ("https://app.example", "http://localhost:3000"), secure=True)
        try:
            check_upgrade(request, ("nanosocket.v1",))
        except InvalidHandshake:
            pass
        for mode in ("shared", "dedicated"):
            ServerDeflate(WebSocketOptions(compression=mode)).negotiate(
                request.headers.get_all("sec-websocket-extensions")
            )
    responses = ResponseReader(MAX_HANDSHAKE, MAX_HEADERS)
    try:
        for piece in pieces:
            response = responses.feed(piece)
            if response is not None:
                check_response(response, _KEY, ("nanosocket.v1",), ClientDeflate(options))
                break
    except HandshakeError:
        pass


# ------------------------------------------------------------------------------- deflate

MAX_PAYLOAD = 4096
MAX_COMPRESSED = 2048
OPCODES = (CONTINUATION, TEXT, BINARY, PING, PONG, CLOSE, TEXT, BINARY)
FAILURE_CODES = {1002, 1007, 1009}


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    def text_received(self, text: str) -> None:
        self.messages.append(text)

    def binary_received(self, data: bytes) -> None:
        self.messages.append(data)

    def ping_received(self, payload: bytes) -> None:
        pass

    def pong_received(self, payload: bytes) -> None:
        pass


def _compress(payload: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def frames_of(data: bytes) -> list[bytes]:
    """The frames ``data`` describes: per frame a flags byte (FIN 0x80, RSV1 0x40, compress the
    payload 0x20, a bomb 0x10, opcode index & 7), a length byte, then that many payload bytes."""
    frames = []
    pos = 0
    while pos + 2 <= len(data) and len(frames) < 64:
        flags, length = data[pos], data[pos + 1]
        payload = data[pos + 2 : pos + 2 + length]
        pos += 2 + length
        if flags & 0x10:
            # Compresses to a few hundred bytes, inflates to up to 255 KiB: over the limit.
            payload = bytes(length * 1024)
        if flags & 0x30:
            payload = _compress(payload)
        frames.append(
            py_build_frame(
                OPCODES[flags & 7],
                payload,
                fin=bool(flags & 0x80),
                rsv1=bool(flags & 0x40),
                mask_key=b"\x1f\x2e\x3d\x4c",
            )
        )
    return frames


def _engines() -> list[type[Any]]:
    engines: list[type[Any]] = [websocket.PyWebSocketConnection]
    if websocket.WebSocketConnection is not websocket.PyWebSocketConnection:
        engines.append(websocket.WebSocketConnection)
    return engines


def deflate(data: bytes) -> None:
    if not data:
        return
    mode = "shared" if data[0] & 1 else "dedicated"
    cut = data[0] >> 1
    options = WebSocketOptions(
        compression=mode,
        max_payload_length=MAX_PAYLOAD,
        max_compressed_size=MAX_COMPRESSED,
        max_fragments=16,
        compression_threshold=0,
    )
    client = ClientDeflate(WebSocketOptions(compression="dedicated"))
    wire = b"".join(frames_of(data[1:]))
    for engine in _engines():
        accepted = ServerDeflate(options).negotiate([client.offer()])
        assert accepted is not None
        recorder = _Recorder()
        conn = engine(recorder, options, client=False, deflate=accepted[0])
        # The wire in pieces of ``cut`` bytes (all at once when 0).
        step = cut or len(wire) or 1
        delivered_when_closed: int | None = None
        for start in range(0, len(wire), step):
            conn.receive_data(wire[start : start + step])  # never raises: failures close
            if conn.closed and delivered_when_closed is None:
                delivered_when_closed = len(recorder.messages)
        if delivered_when_closed is not None:
            assert len(recorder.messages) == delivered_when_closed, "delivered after the close"
        for message in recorder.messages:
            size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
            assert size <= MAX_PAYLOAD, (engine, size)
        if conn.closed:
            assert conn.close_code in FAILURE_CODES or 1000 <= conn.close_code <= 4999, conn.close_code
        conn.data_to_send()
        conn.receive_eof()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope": envelope,
    "handshake": handshake,
    "deflate": deflate,
}
