"""The WebSocket connection state machine, one class for both sides (RFC 6455 §5-7).

Bytes go in through ``receive_data``; complete messages, pings and pongs come out as calls on a
``FrameHandler``; frames to write come out of ``data_to_send``; ``state`` tells when the
connection is closed (``close_code``/``close_reason`` say how). No I/O, no
clocks: the transport adapter owns those.

Per-connection state is small and lazy: no read buffer while no partial frame is pending (and
then only that frame's bytes), no reassembly buffer while no fragmented message is in progress.
Text is checked as UTF-8 as it arrives, a partial frame's bytes included: a message that cannot
be valid fails the connection (1007) without waiting for the rest of its frame.

With permessage-deflate negotiated (``deflate``, see deflate.py) the first frame of a compressed
message has RSV1 set; it is inflated (per fragment, bounded by max_payload_length, text checked as
UTF-8 as it is inflated) on a path of its own, so uncompressed frames cost what they did.

``PyWebSocketConnection`` is the spec; ``WebSocketConnection`` is its compiled twin
(_speedups/_websocket.pyx) when that was built and ``NANOSOCKET_NO_SPEEDUPS`` is not set, else
the spec itself.
"""

from __future__ import annotations

import codecs
import os
from enum import IntEnum
from typing import Protocol

from .._speedups import enabled as speedups_enabled
from ..errors import InvalidPayload, PayloadTooBig, ProtocolError, connection_closed
from ..options import WebSocketOptions
from .deflate import Inflation, OutgoingMessage, PerMessageDeflate
from .frames import (
    BINARY,
    CLOSE,
    CONTINUATION,
    FIN,
    MASK_BIT,
    MAX_HEADER_SIZE,
    OPCODE_MASK,
    PING,
    PONG,
    RSV1,
    RSV_MASK,
    TEXT,
    CloseCode,
    apply_mask,
    build_frame,
    encode_close,
    parse_close,
    parse_header,
)

__all__ = ["FrameHandler", "PyWebSocketConnection", "State", "WebSocketConnection", "check_utf8_chunk"]

_utf8_decode = codecs.utf_8_decode


class State(IntEnum):
    """Connection states after the opening handshake."""

    OPEN = 1
    CLOSING = 2  # we sent a close frame and wait for the peer's
    CLOSED = 3  # the close handshake is done or the connection failed: no more frames


class FrameHandler(Protocol):
    """What a connection reports to the layer above, in arrival order."""

    def text_received(self, text: str) -> None: ...

    def binary_received(self, data: bytes) -> None: ...

    def ping_received(self, payload: bytes) -> None:
        """A ping arrived; its pong is already queued."""

    def pong_received(self, payload: bytes) -> None: ...


# Valid ranges of the second byte of a UTF-8 sequence, by lead byte (Unicode table 3-7).
_SECOND_BYTE_RANGE: dict[int, tuple[int, int]] = {}
for _lead in range(0xC2, 0xF5):
    _SECOND_BYTE_RANGE[_lead] = (0x80, 0xBF)
_SECOND_BYTE_RANGE[0xE0] = (0xA0, 0xBF)
_SECOND_BYTE_RANGE[0xED] = (0x80, 0x9F)
_SECOND_BYTE_RANGE[0xF0] = (0x90, 0xBF)
_SECOND_BYTE_RANGE[0xF4] = (0x80, 0x8F)


def _is_utf8_prefix(tail: bytes) -> bool:
    """Whether ``tail`` (1-3 bytes) can still begin a valid UTF-8 sequence."""
    bounds = _SECOND_BYTE_RANGE.get(tail[0])
    if bounds is None:
        return False
    if len(tail) >= 2 and not bounds[0] <= tail[1] <= bounds[1]:
        return False
    return len(tail) < 3 or 0x80 <= tail[2] <= 0xBF


def check_utf8_chunk(tail: bytes, chunk: bytes) -> bytes:
    """Validate the next ``chunk`` of a UTF-8 stream whose unfinished bytes are ``tail``.

    Returns the new unfinished tail; raises InvalidPayload as soon as the stream cannot be valid.
    Python's incremental decoder holds back some impossible prefixes (``ED A0`` is a surrogate)
    without raising, so the held-back bytes get their own check.
    """
    data = tail + chunk if tail else chunk
    try:
        _, consumed = _utf8_decode(data, "strict", False)
    except UnicodeDecodeError as exc:
        raise InvalidPayload("text message is not valid UTF-8") from exc
    rest = data[consumed:]
    if rest and not _is_utf8_prefix(rest):
        raise InvalidPayload("text message is not valid UTF-8")
    return rest


class PyWebSocketConnection:
    """One WebSocket connection after its opening handshake, as a state machine.

    ``client`` selects the side: a client masks what it sends and refuses masked frames; a
    server requires masked frames and sends unmasked ones (so one broadcast frame fits all).
    """

    __slots__ = (
        "_buf",
        "_inflation",
        "_msg_frames",
        "_msg_opcode",
        "_msg_parts",
        "_need",
        "_out",
        "_pending_utf8_tail",
        "_utf8_tail",
        "client",
        "close_code",
        "close_reason",
        "deflate",
        "handler",
        "options",
        "pending_bytes",
        "state",
    )

    def __init__(
        self,
        handler: FrameHandler,
        options: WebSocketOptions,
        *,
        client: bool,
        deflate: PerMessageDeflate | None = None,
    ) -> None:
        self.handler = handler
        self.options = options
        self.client = client
        self.state = State.OPEN
        #: Code and reason of the close: the peer's, ours on failure, 1006 when dropped.
        self.close_code: int | None = None
        self.close_reason = ""
        self._buf: bytearray | None = None
        self._need = 0
        self._msg_opcode = 0
        self._msg_parts: bytearray | None = None
        self._msg_frames = 0
        self._utf8_tail = b""
        # The UTF-8 tail of the pending partial text frame, checked as it arrives.
        self._pending_utf8_tail = b""
        self._out: list[bytes] | None = None
        #: How many bytes are queued for the peer (not yet taken by ``data_to_send``).
        self.pending_bytes = 0
        #: permessage-deflate as negotiated in the opening handshake; None: not negotiated.
        self.deflate = deflate
        # The fragmented compressed message being received, if any.
        self._inflation: Inflation | None = None

    @property
    def closed(self) -> bool:
        """Whether the connection reached CLOSED (no frame goes in or out any more)."""
        return self.state is State.CLOSED

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the peer; handler calls happen before this returns."""
        if self.state is State.CLOSED:
            return
        buf = self._buf
        offset = 0
        if buf is not None:
            missing = self._need - len(buf)
            if self._need > MAX_HEADER_SIZE and missing < len(data):
                # The pending frame's header is complete (a need past any header's size is the
                # whole frame's): it takes only the bytes it lacks, and the rest of ``data`` is
                # read where it is instead of being copied behind them.
                buf += memoryview(data)[:missing]
                self._buf = None
                if self._parse_or_fail(buf) is None or self.closed:
                    return
                offset = missing
            else:
                checked = len(buf)
                buf += data
                if len(buf) < self._need:
                    if data:
                        self._check_pending_text(checked)
                    return
                data = buf
                self._buf = None
        pos = self._parse_or_fail(data, offset)
        if pos is not None and pos < len(data) and not self.closed:
            self._buf = bytearray(data[pos:]) if pos else bytearray(data)
            self._check_pending_text(0)

    def _check_pending_text(self, checked: int) -> None:
        """Fail fast on a partial text frame that can no longer be valid UTF-8.

        The pending frame's payload bytes from offset ``checked`` of ``_buf`` on (0: the frame
        is new) go through a UTF-8 check of their own, which a continuation frame starts from its
        message's. The complete frame is still validated whole, as if this had not run.
        """
        buf = self._buf
        assert buf is not None
        if self.state is not State.OPEN:
            return
        header = parse_header(buf, 0, len(buf))
        if header is None or header[0] & RSV_MASK:
            # The header is not complete yet, or the frame is compressed (inflated once complete).
            return
        first, second, _, header_length = header
        opcode = first & OPCODE_MASK
        if opcode == CONTINUATION and self._msg_opcode == TEXT and self._inflation is None:
            tail = self._pending_utf8_tail if checked else self._utf8_tail
        elif opcode == TEXT:
            tail = self._pending_utf8_tail if checked else b""
        else:
            return
        checked = max(checked, header_length)
        chunk = bytes(buf[checked:])
        if second & MASK_BIT:
            offset = checked - header_length
            key = bytes(buf[header_length - 4 : header_length])
            chunk = apply_mask(chunk, key[offset % 4 :] + key[: offset % 4])
        try:
            self._pending_utf8_tail = check_utf8_chunk(tail, chunk)
        except InvalidPayload as exc:
            self.fail(exc.close_code, str(exc))

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (or it dropped)."""
        if self.state is not State.CLOSED:
            self._finish(CloseCode.ABNORMAL, "")
        self._buf = None
        self._msg_parts = None
        self._inflation = None

    def _parse_or_fail(self, data: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
        """``_parse``, failing the connection on a protocol error (then None)."""
        try:
            return self._parse(data, pos)
        except ProtocolError as exc:
            self.fail(exc.close_code, str(exc))
            return None

    def _parse(self, data: bytes | bytearray | memoryview, pos: int = 0) -> int:
        """Handle every complete frame in ``data[pos:]``; return the offset of the first unparsed byte."""
        end = len(data)
        options = self.options
        max_payload = options.max_payload_length
        expect_mask = 0 if self.client else MASK_BIT
        while pos < end:
            header = parse_header(data, pos, end)
            if header is None:
                self._need = end - pos + 1
                return pos
            first, second, length, header_length = header
            rsv = first & RSV_MASK
            if rsv:
                self._check_rsv(first)
            if (second & MASK_BIT) != expect_mask:
                raise ProtocolError(
                    "server frames must not be masked" if self.client else "client frames must be masked"
                )
            opcode = first & OPCODE_MASK
            if opcode >= CLOSE:
                if opcode > PONG:
                    raise ProtocolError(f"reserved opcode {opcode:#x}")
                if not first & FIN:
                    raise ProtocolError("fragmented control frame")
                if length > options.max_control_payload:
                    raise ProtocolError("control frame payload too long")
            elif opcode > BINARY:
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            elif self.state is State.OPEN:
                if rsv:
                    self._check_compressed_frame(length)
                else:
                    self._check_data_frame(opcode, length, max_payload)
            elif length > (options.max_compressed_size if rsv else max_payload):
                # After our close, data frames are discarded unread: only their size matters.
                raise PayloadTooBig(f"message larger than {max_payload} bytes")
            frame_end = pos + header_length + length
            if frame_end > end:
                self._need = frame_end - pos
                return pos
            payload_start = pos + header_length
            if expect_mask:
                payload = apply_mask(
                    data[payload_start:frame_end], bytes(data[payload_start - 4 : payload_start])
                )
            else:
                payload = bytes(data[payload_start:frame_end])
            pos = frame_end
            if opcode >= CLOSE:
                self._control_frame(opcode, payload)
            elif self.state is State.OPEN:
                if rsv:
                    self._compressed_frame(opcode, first & FIN, payload)
                else:
                    self._data_frame(opcode, first & FIN, payload)
            if self.state is State.CLOSED:
                # The peer's close, or a failure from a handler callback: ignore the rest.
                return end
        return pos

    def _check_rsv(self, first: int) -> None:
        """Reserved bits are set: only RSV1 on the first frame of a compressed message may be."""
        if first & RSV_MASK != RSV1 or self.deflate is None:
            raise ProtocolError("reserved bits set without a negotiated extension")
        opcode = first & OPCODE_MASK
        if opcode == CONTINUATION:
            raise ProtocolError("RSV1 set on a continuation frame")
        if opcode >= CLOSE:
            raise ProtocolError("RSV1 set on a control frame")

    def _check_compressed_frame(self, length: int) -> None:
        """Refuse the first frame of a compressed message from its header alone."""
        if self._msg_opcode:
            raise ProtocolError("new message started before the previous one finished")
        limit = self.options.max_compressed_size
        if length > limit:
            raise PayloadTooBig(f"compressed message larger than {limit} bytes")

    def _check_data_frame(self, opcode: int, length: int, max_payload: int) -> None:
        """Refuse a data frame from its header alone, before its payload is read."""
        if opcode == CONTINUATION:
            if not self._msg_opcode:
                raise ProtocolError("continuation frame without a message to continue")
            if self._msg_frames >= self.options.max_fragments:
                raise PayloadTooBig(f"message split into more than {self.options.max_fragments} frames")
            inflation = self._inflation
            if inflation is not None:
                # A compressed message: its wire size is bounded here, its inflated size as it
                # is inflated.
                limit = self.options.max_compressed_size
                if inflation.compressed_size + length > limit:
                    raise PayloadTooBig(f"compressed message larger than {limit} bytes")
                return
            parts = self._msg_parts
            size = len(parts) if parts is not None else 0
            if size + length > max_payload:
                raise PayloadTooBig(f"message larger than {max_payload} bytes")
        else:
            if self._msg_opcode:
                raise ProtocolError("new message started before the previous one finished")
            if length > max_payload:
                raise PayloadTooBig(f"message larger than {max_payload} bytes")

    def _data_frame(self, opcode: int, fin: int, payload: bytes) -> None:
        if opcode != CONTINUATION:
            if fin:
                if opcode == TEXT:
                    try:
                        text = payload.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise InvalidPayload("text message is not valid UTF-8") from exc
                    self.handler.text_received(text)
                else:
                    self.handler.binary_received(payload)
                return
            self._msg_opcode = opcode
            self._msg_parts = bytearray(payload)
            self._msg_frames = 1
            if opcode == TEXT:
                self._utf8_tail = check_utf8_chunk(b"", payload)
            return
        parts = self._msg_parts
        assert parts is not None
        inflation = self._inflation
        if inflation is not None:
            inflation.compressed_size += len(payload)
            assert self.deflate is not None
            payload = self.deflate.inflate(
                inflation.decompressor, payload, bool(fin), self.options.max_payload_length - len(parts)
            )
        parts += payload
        self._msg_frames += 1
        message_opcode = self._msg_opcode
        if message_opcode == TEXT:
            self._utf8_tail = check_utf8_chunk(self._utf8_tail, payload)
        if not fin:
            return
        self._msg_opcode = 0
        self._msg_parts = None
        self._msg_frames = 0
        self._inflation = None
        if message_opcode == TEXT:
            if self._utf8_tail:
                self._utf8_tail = b""
                raise InvalidPayload("text message ends inside a UTF-8 sequence")
            self.handler.text_received(parts.decode("utf-8"))
        else:
            self.handler.binary_received(bytes(parts))

    def _compressed_frame(self, opcode: int, fin: int, payload: bytes) -> None:
        """The first frame of a compressed message (RSV1): inflate it, within max_payload_length."""
        deflate = self.deflate
        assert deflate is not None
        decompressor = deflate.decompressor()
        data = deflate.inflate(decompressor, payload, bool(fin), self.options.max_payload_length)
        if fin:
            if opcode == TEXT:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidPayload("text message is not valid UTF-8") from exc
                self.handler.text_received(text)
            else:
                self.handler.binary_received(data)
            return
        self._inflation = Inflation(decompressor, len(payload))
        self._msg_opcode = opcode
        self._msg_parts = bytearray(data)
        self._msg_frames = 1
        if opcode == TEXT:
            self._utf8_tail = check_utf8_chunk(b"", data)

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            if self.state is State.OPEN:
                self._queue(build_frame(PONG, payload, mask_key=self._mask_key()))
            self.handler.ping_received(payload)
        elif opcode == PONG:
            self.handler.pong_received(payload)
        else:
            code, reason = parse_close(payload)
            if self.state is State.OPEN:
                # Echo the peer's code; an empty close is answered with an empty close.
                reply_code = None if code == CloseCode.NO_STATUS else code
                self._queue(build_frame(CLOSE, encode_close(reply_code), mask_key=self._mask_key()))
            self._finish(code, reason)

    # ----------------------------------------------------------------- output

    def _mask_key(self) -> bytes | None:
        return os.urandom(4) if self.client else None

    def _queue(self, frame: bytes) -> None:
        out = self._out
        if out is None:
            self._out = [frame]
            self.pending_bytes = len(frame)
        else:
            out.append(frame)
            self.pending_bytes += len(frame)

    def data_to_send(self) -> bytes:
        """Return (and forget) the bytes queued for the peer, as one buffer."""
        out = self._out
        if out is None:
            return b""
        self._out = None
        self.pending_bytes = 0
        return out[0] if len(out) == 1 else b"".join(out)

    def _require_open(self) -> None:
        if self.state is not State.OPEN:
            raise connection_closed(self.close_code or CloseCode.ABNORMAL, self.close_reason)

    def send_text(self, text: str) -> None:
        """Queue one text message (compressed when permessage-deflate is on and it is big enough)."""
        if self.deflate is None:
            self.send_frame(TEXT, text.encode("utf-8"))
        else:
            self._send_compressible(TEXT, text.encode("utf-8"))

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Queue one binary message (compressed when permessage-deflate is on and it is big enough)."""
        if self.deflate is None:
            self.send_frame(BINARY, bytes(data))
        else:
            self._send_compressible(BINARY, bytes(data))

    def _send_compressible(self, opcode: int, payload: bytes) -> None:
        deflate = self.deflate
        assert deflate is not None
        if len(payload) < deflate.threshold:
            self.send_frame(opcode, payload)
            return
        self._require_open()
        # Compressed first, then masked (RFC 7692 §6): RSV1 marks the message as compressed.
        self._queue(build_frame(opcode, deflate.compress(payload), rsv1=True, mask_key=self._mask_key()))

    def send_message(self, message: OutgoingMessage) -> None:
        """Queue a server message prepared for many peers: the frame that fits this connection
        (compressed when it negotiated permessage-deflate and the message is big enough)."""
        self._require_open()
        if self.client:
            raise RuntimeError("a client masks its frames: OutgoingMessage is for servers")
        self._queue(message.frame_for(self.deflate))

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Queue one data frame (``fin=False`` and CONTINUATION frames send a message in parts)."""
        self._require_open()
        self._queue(build_frame(opcode, payload, fin=fin, mask_key=self._mask_key()))

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (at most 125 bytes of payload)."""
        self._require_open()
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self._queue(build_frame(PING, payload, mask_key=self._mask_key()))

    def send_pong(self, payload: bytes = b"") -> None:
        """Queue an unsolicited pong (a heartbeat that expects no answer)."""
        self._require_open()
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        self._queue(build_frame(PONG, payload, mask_key=self._mask_key()))

    def send_raw(self, frame: bytes) -> None:
        """Queue a ready-made frame (a server's broadcast frame, built once for all recipients)."""
        self._require_open()
        self._queue(frame)

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake; a no-op unless the connection is open."""
        if self.state is not State.OPEN:
            return
        self._queue(build_frame(CLOSE, encode_close(code, reason), mask_key=self._mask_key()))
        self.state = State.CLOSING
        self.close_code = code
        self.close_reason = reason

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame if we can, then CLOSED."""
        if self.state is State.CLOSED:
            return
        if self.state is State.OPEN:
            self._queue(build_frame(CLOSE, encode_close(code, reason), mask_key=self._mask_key()))
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        self.state = State.CLOSED
        self.close_code = code
        self.close_reason = reason
        self._buf = None
        self._msg_parts = None
        self._inflation = None


WebSocketConnection = PyWebSocketConnection
if speedups_enabled():
    try:
        from .._speedups._websocket import WebSocketConnection  # type: ignore[assignment]
    except ImportError:  # not compiled: the pure-Python class above is used
        pass
