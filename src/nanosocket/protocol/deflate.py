"""permessage-deflate (RFC 7692): negotiation, bounded compression, frames built once for many.

Negotiation. ``parse_extensions`` reads Sec-WebSocket-Extensions (RFC 6455 §9.1: several offers,
repeated headers, quoted values). A server's ``ServerDeflate.negotiate`` accepts the first
acceptable ``permessage-deflate`` offer (one with an unknown or repeated parameter, or a value out
of range, is declined) and answers only what the client offered or allowed; a client's
``ClientDeflate`` builds the offer and checks the answer.

Modes (``WebSocketOptions.compression``):

* ``"shared"``: no context takeover in either direction, so no zlib state lives with a connection
  at all: every connection that agreed the same parameters shares one stateless
  ``PerMessageDeflate``; each message is compressed, and inflated, with a fresh zlib context.
* ``"dedicated"``: context takeover both ways (unless the peer asks otherwise), with the window and
  memLevel bounded by the options; a connection's compressor and decompressor are created on
  first use.

Compressed payload = raw deflate flushed with Z_SYNC_FLUSH, its trailing ``00 00 ff ff`` removed
(RFC 7692 §7.2.1); inflation appends it back. Inflation is bounded: zlib is never asked for more
than one byte over the message's remaining room, so a decompression bomb costs at most about the
limit before it closes the connection with 1009.

``OutgoingMessage`` is a server message that may be compressed: a broadcast is compressed once per
compressor window size with a fresh context and Z_SYNC_FLUSH (no BFINAL, so the frame is valid for
receivers that keep their context too) and the same bytes go to every recipient that negotiated
compression; the others get the uncompressed frame, also built once.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InvalidHandshake, InvalidPayload, PayloadTooBig
from ..options import WebSocketOptions
from .frames import build_frame

__all__ = [
    "EXTENSION_NAME",
    "ClientDeflate",
    "DeflateParameters",
    "DeflateStats",
    "Inflation",
    "OutgoingMessage",
    "PerMessageDeflate",
    "ServerDeflate",
    "parse_extensions",
    "prepare_message",
]

EXTENSION_NAME = "permessage-deflate"

#: The empty stored block a Z_SYNC_FLUSH ends with; removed on the wire (RFC 7692 §7.2.1).
_TAIL = b"\x00\x00\xff\xff"
_SYNC_FLUSH = zlib.Z_SYNC_FLUSH
_DEFLATED = zlib.DEFLATED
_compressobj = zlib.compressobj
_decompressobj = zlib.decompressobj
_ZlibError = zlib.error
#: Below this size a final fragment and its tail are inflated in one call (the copy is cheaper).
_JOIN_TAIL_BELOW = 2048

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WHITESPACE = " \t"

#: One extension of a Sec-WebSocket-Extensions header: its name and its (name, value) parameters,
#: a parameter without a value having None.
Extension = tuple[str, list[tuple[str, str | None]]]


# --------------------------------------------------------------------------------- parsing


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TOKEN_CHARS:
        pos += 1
    if pos == start:
        raise ValueError(f"expected a token at offset {start} of {text!r}")
    return text[start:pos], pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted-string starting at ``text[pos] == '"'``; returns its unescaped value."""
    pos += 1
    chars: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\":
            pos += 1
            if pos == len(text):
                break
            char = text[pos]
        chars.append(char)
        pos += 1
    raise ValueError(f"unterminated quoted string in {text!r}")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def parse_extensions(values: Iterable[str]) -> list[Extension]:
    """Every extension named in Sec-WebSocket-Extensions ``values`` (one per header line), in order.

    Names are lower-cased; a quoted parameter value is unquoted and must then be a token
    (RFC 6455 §9.1). Raises ValueError for a header that does not follow the grammar.
    """
    extensions: list[Extension] = []
    for text in values:
        pos = 0
        end = len(text)
        while True:
            # Empty list elements (",,") are allowed by the #rule.
            while pos < end and (text[pos] in _WHITESPACE or text[pos] == ","):
                pos += 1
            if pos >= end:
                break
            name, pos = _token(text, pos)
            params: list[tuple[str, str | None]] = []
            pos = _skip_space(text, pos)
            while pos < end and text[pos] == ";":
                pos = _skip_space(text, pos + 1)
                param, pos = _token(text, pos)
                pos = _skip_space(text, pos)
                value: str | None = None
                if pos < end and text[pos] == "=":
                    pos = _skip_space(text, pos + 1)
                    if pos < end and text[pos] == '"':
                        value, pos = _quoted(text, pos)
                        if not value or not all(char in _TOKEN_CHARS for char in value):
                            raise ValueError(f"quoted value {value!r} is not a token")
                    else:
                        value, pos = _token(text, pos)
                    pos = _skip_space(text, pos)
                params.append((param.lower(), value))
            extensions.append((name.lower(), params))
            if pos < end and text[pos] != ",":
                raise ValueError(f"unexpected {text[pos]!r} at offset {pos} of {text!r}")
    return extensions


def _window_bits(value: str | None) -> int | None:
    """A max_window_bits value: a decimal 8..15 without leading zeros; None if invalid."""
    if value is None or not value.isdigit() or not value.isascii() or value[0] == "0":
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


@dataclass(frozen=True, slots=True)
class DeflateParameters:
    """The agreed parameters of permessage-deflate, as the server's answer states them (RFC 7692 §7.1).

    A ``*_max_window_bits`` of None means the parameter is absent (the sender may use up to 15).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None

    def header(self) -> str:
        """The Sec-WebSocket-Extensions value that states these parameters."""
        parts = [EXTENSION_NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class _Offer:
    """One client offer: ``client_max_window_bits`` is True when offered without a value."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int | None
    client_max_window_bits: int | bool


def _read_offer(params: list[tuple[str, str | None]]) -> _Offer | None:
    """The parameters of one permessage-deflate offer; None when the offer must be declined."""
    seen: set[str] = set()
    server_nct = client_nct = False
    server_bits: int | None = None
    client_bits: int | bool = False
    for name, value in params:
        if name in seen:
            return None  # a parameter given twice (RFC 7692 §7.1)
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                return None
            server_nct = True
        elif name == "client_no_context_takeover":
            if value is not None:
                return None
            client_nct = True
        elif name == "server_max_window_bits":
            server_bits = _window_bits(value)
            if server_bits is None:
                return None
        elif name == "client_max_window_bits":
            if value is None:
                client_bits = True
            else:
                bits = _window_bits(value)
                if bits is None:
                    return None
                client_bits = bits
        else:
            return None  # an unknown parameter
    return _Offer(server_nct, client_nct, server_bits, client_bits)


# ----------------------------------------------------------------------------- counting


class DeflateStats:
    """What an endpoint's compression did; plain integers, bumped where the work happens."""

    __slots__ = ("compressed_broadcast_frames", "compressed_frames", "inflated_messages")

    def __init__(self) -> None:
        #: Messages compressed for sending, each counted once however many peers got it.
        self.compressed_frames = 0
        #: Of those, broadcast frames: compressed once for every recipient of one window size.
        self.compressed_broadcast_frames = 0
        #: Compressed messages received and inflated.
        self.inflated_messages = 0


# -------------------------------------------------------------------------------- codecs


class Inflation:
    """A fragmented compressed message being received: its decompressor and wire size so far."""

    __slots__ = ("compressed_size", "decompressor")

    def __init__(self, decompressor: zlib._Decompress, compressed_size: int) -> None:
        self.decompressor = decompressor
        self.compressed_size = compressed_size


class PerMessageDeflate:
    """One connection's permessage-deflate, as agreed: compresses what it sends, inflates what it gets.

    Without context takeover in either direction it holds no state, and one instance serves every
    connection that agreed the same parameters (``shared`` mode). With context takeover its zlib
    objects are created on first use and kept (``dedicated`` mode).
    """

    __slots__ = (
        "_compressor",
        "_decompressor",
        "_dictionary",
        "compress_takeover",
        "compress_window_bits",
        "decompress_takeover",
        "decompress_window_bits",
        "level",
        "max_compressed_size",
        "mem_level",
        "parameters",
        "stats",
        "threshold",
    )

    def __init__(
        self,
        parameters: DeflateParameters,
        *,
        client: bool,
        options: WebSocketOptions,
        stats: DeflateStats,
        compress_takeover: bool | None = None,
    ) -> None:
        self.parameters = parameters
        if client:
            local_nct, local_bits = parameters.client_no_context_takeover, parameters.client_max_window_bits
            remote_nct, remote_bits = parameters.server_no_context_takeover, parameters.server_max_window_bits
        else:
            local_nct, local_bits = parameters.server_no_context_takeover, parameters.server_max_window_bits
            remote_nct, remote_bits = parameters.client_no_context_takeover, parameters.client_max_window_bits
        #: Compress with context takeover: our own choice, within what the agreement allows.
        self.compress_takeover = (
            not local_nct if compress_takeover is None else compress_takeover and not local_nct
        )
        self.compress_window_bits = min(options.compression_window_bits, local_bits or 15)
        self.decompress_takeover = not remote_nct
        self.decompress_window_bits = remote_bits or 15
        self.mem_level = options.compression_mem_level
        self.level = zlib.Z_DEFAULT_COMPRESSION
        self.threshold = options.compression_threshold
        self.max_compressed_size = options.max_compressed_size
        self.stats = stats
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None
        # The last shared frame's payload: the dictionary of our next compressor (see sent_shared).
        self._dictionary: bytes | None = None

    @property
    def stateless(self) -> bool:
        """Whether no zlib state outlives a message (so one instance may serve many connections)."""
        return not self.compress_takeover and not self.decompress_takeover

    # ------------------------------------------------------------------------- sending

    def _new_compressor(self, dictionary: bytes | None = None) -> zlib._Compress:
        if dictionary:
            window = 1 << self.compress_window_bits
            return _compressobj(
                self.level,
                _DEFLATED,
                -self.compress_window_bits,
                self.mem_level,
                zdict=dictionary[-window:] if len(dictionary) > window else dictionary,
            )
        return _compressobj(self.level, _DEFLATED, -self.compress_window_bits, self.mem_level)

    def compress(self, data: bytes) -> bytes:
        """The compressed payload of one message, with this connection's compressor."""
        compressor = self._compressor
        if compressor is None:
            if self.compress_takeover:
                compressor = self._compressor = self._new_compressor(self._dictionary)
                self._dictionary = None
            else:
                compressor = self._new_compressor()
        self.stats.compressed_frames += 1
        return (compressor.compress(data) + compressor.flush(_SYNC_FLUSH))[:-4]

    def compress_fresh(self, data: bytes) -> bytes:
        """``data`` compressed with a fresh context: valid for any peer whose window is ours or wider."""
        compressor = self._new_compressor()
        stats = self.stats
        stats.compressed_frames += 1
        stats.compressed_broadcast_frames += 1
        return (compressor.compress(data) + compressor.flush(_SYNC_FLUSH))[:-4]

    def sent_shared(self, payload: bytes) -> None:
        """A frame compressed elsewhere (``compress_fresh``) went to our peer.

        The peer's window now ends with ``payload``, which our compressor never saw: with context
        takeover its next message must not refer back past it. The next compressor starts over,
        with ``payload`` (the newest bytes of the peer's window) as its dictionary.
        """
        if self.compress_takeover:
            self._compressor = None
            self._dictionary = payload

    # ----------------------------------------------------------------------- receiving

    def decompressor(self) -> zlib._Decompress:
        """The decompressor for a new message: the kept one with context takeover, else a fresh one."""
        if not self.decompress_takeover:
            return _decompressobj(-self.decompress_window_bits)
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = _decompressobj(-self.decompress_window_bits)
        return decompressor

    def inflate(self, decompressor: zlib._Decompress, data: bytes, fin: bool, room: int) -> bytes:
        """Inflate one frame's payload; ``room`` is how many bytes the message may still grow by.

        Raises PayloadTooBig (1009) as soon as the output would exceed ``room`` (zlib never produces
        more than ``room + 1`` bytes), InvalidPayload (1007) for data that is not valid deflate.
        """
        try:
            if fin and len(data) < _JOIN_TAIL_BELOW:
                out = decompressor.decompress(data + _TAIL, room + 1)
                if len(out) > room or decompressor.unconsumed_tail:
                    raise PayloadTooBig(f"message larger than {room} bytes once inflated")
            else:
                out = decompressor.decompress(data, room + 1)
                if len(out) > room or decompressor.unconsumed_tail:
                    raise PayloadTooBig(f"message larger than {room} bytes once inflated")
                if fin:
                    left = room - len(out)
                    rest = decompressor.decompress(_TAIL, left + 1)
                    if rest:
                        if len(rest) > left or decompressor.unconsumed_tail:
                            raise PayloadTooBig(f"message larger than {room} bytes once inflated")
                        out += rest
        except _ZlibError as exc:
            raise InvalidPayload(f"invalid compressed data: {exc}") from exc
        if decompressor.eof:
            # The sender ended the deflate stream (a BFINAL block): only our tail may follow it,
            # and a kept decompressor cannot go on (the next message starts a new stream).
            leftover = decompressor.unused_data
            if leftover and not (fin and leftover == _TAIL):
                raise InvalidPayload("data after the end of a compressed message")
            if decompressor is self._decompressor:
                self._decompressor = None
        if fin:
            self.stats.inflated_messages += 1
        return out

    def __repr__(self) -> str:
        return f"PerMessageDeflate({self.parameters.header()!r})"


# ------------------------------------------------------------------------- negotiation


class ServerDeflate:
    """A server's permessage-deflate: answers offers and hands each connection its codec.

    In ``shared`` mode the codecs are stateless and cached: connections that agreed the same
    parameters share one.
    """

    __slots__ = ("_shared", "options", "stats")

    def __init__(self, options: WebSocketOptions, stats: DeflateStats | None = None) -> None:
        if options.compression == "off":
            raise ValueError("compression is off")
        self.options = options
        self.stats = stats if stats is not None else DeflateStats()
        self._shared: dict[DeflateParameters, PerMessageDeflate] = {}

    def answer(self, offer: _Offer) -> DeflateParameters | None:
        """What the server agrees to for ``offer``; None when it cannot accept it."""
        if offer.server_max_window_bits == 8:
            return None  # zlib cannot compress with a 256-byte window (RFC 7692 §7.1.2.1: decline)
        bits = self.options.compression_window_bits
        server_bits = min(bits, offer.server_max_window_bits or 15)
        if self.options.compression == "shared":
            return DeflateParameters(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                # Echoed when offered (required); unasked, the client may keep its default window.
                server_max_window_bits=server_bits if offer.server_max_window_bits else None,
            )
        client_bits = offer.client_max_window_bits
        return DeflateParameters(
            server_no_context_takeover=offer.server_no_context_takeover,
            client_no_context_takeover=False,
            server_max_window_bits=server_bits,
            # Only a client that offered client_max_window_bits may be told to use a smaller window.
            client_max_window_bits=(
                None if client_bits is False else min(bits, 15 if client_bits is True else client_bits)
            ),
        )

    def negotiate(self, values: list[str]) -> tuple[PerMessageDeflate, str] | None:
        """Accept the first acceptable offer of Sec-WebSocket-Extensions ``values``.

        Returns the connection's codec and the header value to answer, or None: nothing acceptable
        (a malformed header is declined as a whole; the connection goes on uncompressed).
        """
        if not values:
            return None
        try:
            extensions = parse_extensions(values)
        except ValueError:
            return None
        for name, params in extensions:
            if name != EXTENSION_NAME:
                continue
            offer = _read_offer(params)
            if offer is None:
                continue
            parameters = self.answer(offer)
            if parameters is None:
                continue
            return self.codec(parameters), parameters.header()
        return None

    def codec(self, parameters: DeflateParameters) -> PerMessageDeflate:
        """The codec for a connection that agreed ``parameters`` (shared when it keeps no state)."""
        codec = self._shared.get(parameters)
        if codec is not None:
            return codec
        codec = PerMessageDeflate(parameters, client=False, options=self.options, stats=self.stats)
        if codec.stateless:
            self._shared[parameters] = codec
        return codec


class ClientDeflate:
    """A client's permessage-deflate: the offer it sends, and the check of the server's answer.

    ``dedicated`` offers ``permessage-deflate; client_max_window_bits`` (context takeover both
    ways); ``shared`` also asks for no context takeover in either direction.
    """

    __slots__ = ("options", "stats")

    def __init__(self, options: WebSocketOptions, stats: DeflateStats | None = None) -> None:
        if options.compression == "off":
            raise ValueError("compression is off")
        self.options = options
        self.stats = stats if stats is not None else DeflateStats()

    @property
    def _no_context_takeover(self) -> bool:
        return self.options.compression == "shared"

    def offer(self) -> str:
        """The Sec-WebSocket-Extensions value of the upgrade request."""
        if self._no_context_takeover:
            return (
                f"{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover;"
                " client_max_window_bits"
            )
        return f"{EXTENSION_NAME}; client_max_window_bits"

    def accept(self, values: list[str]) -> PerMessageDeflate | None:
        """Check the server's answer (Sec-WebSocket-Extensions ``values``); return the codec, if any.

        Raises InvalidHandshake for an extension we did not offer, an unknown or repeated
        parameter, or a value we did not allow.
        """
        if not values:
            return None
        try:
            extensions = parse_extensions(values)
        except ValueError as exc:
            raise InvalidHandshake(f"malformed Sec-WebSocket-Extensions: {exc}") from exc
        if not extensions:
            return None
        if len(extensions) > 1 or extensions[0][0] != EXTENSION_NAME:
            raise InvalidHandshake("server selected an extension that was not offered")
        seen: set[str] = set()
        server_nct = client_nct = False
        server_bits: int | None = None
        client_bits: int | None = None
        for name, value in extensions[0][1]:
            if name in seen:
                raise InvalidHandshake(f"permessage-deflate parameter {name} given twice")
            seen.add(name)
            if name in ("server_no_context_takeover", "client_no_context_takeover"):
                if value is not None:
                    raise InvalidHandshake(f"permessage-deflate parameter {name} takes no value")
                if name == "server_no_context_takeover":
                    server_nct = True
                else:
                    client_nct = True
            elif name in ("server_max_window_bits", "client_max_window_bits"):
                bits = _window_bits(value)
                if bits is None:
                    raise InvalidHandshake(f"invalid permessage-deflate {name}={value!r}")
                if name == "server_max_window_bits":
                    server_bits = bits
                else:
                    # Offered without a value: the server may choose any size, but zlib cannot
                    # compress with 8 (a 256-byte window).
                    if bits == 8:
                        raise InvalidHandshake("client_max_window_bits=8 is not supported (zlib), use 9")
                    client_bits = bits
            else:
                raise InvalidHandshake(f"unknown permessage-deflate parameter {name!r}")
        if self._no_context_takeover and not server_nct:
            raise InvalidHandshake("server ignored server_no_context_takeover, which was offered")
        parameters = DeflateParameters(server_nct, client_nct, server_bits, client_bits)
        return PerMessageDeflate(
            parameters,
            client=True,
            options=self.options,
            stats=self.stats,
            compress_takeover=not self._no_context_takeover,
        )


# ---------------------------------------------------------------------- outgoing messages


class OutgoingMessage:
    """A server data message framed on demand: uncompressed, or compressed for a given peer.

    ``broadcast``: the compressed frame is built once per compressor window size with a fresh
    context and shared by every recipient; otherwise (a message to one socket) the recipient's own
    compressor is used. Frames are unmasked (server to client). ``last_size`` is the size of the
    frame most recently chosen (for byte counters).
    """

    __slots__ = ("_compressed", "_plain", "broadcast", "last_size", "opcode", "payload")

    def __init__(self, opcode: int, payload: bytes, *, broadcast: bool = True) -> None:
        self.opcode = opcode
        self.payload = payload
        self.broadcast = broadcast
        self.last_size = 0
        self._plain: bytes | None = None
        self._compressed: dict[int, bytes] | None = None

    @property
    def plain(self) -> bytes:
        """The uncompressed frame (built once)."""
        frame = self._plain
        if frame is None:
            frame = self._plain = build_frame(self.opcode, self.payload)
        return frame

    def frame_for(self, codec: PerMessageDeflate | None) -> bytes:
        """The frame to send to a peer with this ``codec`` (None: no compression negotiated)."""
        payload = self.payload
        if codec is None or len(payload) < codec.threshold:
            frame = self.plain
        elif self.broadcast:
            bits = codec.compress_window_bits
            cache = self._compressed
            if cache is None:
                cache = self._compressed = {}
            found = cache.get(bits)
            if found is None:
                found = cache[bits] = build_frame(self.opcode, codec.compress_fresh(payload), rsv1=True)
            frame = found
            if codec.compress_takeover:
                codec.sent_shared(payload)
        else:
            frame = build_frame(self.opcode, codec.compress(payload), rsv1=True)
        self.last_size = len(frame)
        return frame

    def __repr__(self) -> str:
        kind = "broadcast" if self.broadcast else "message"
        return f"<OutgoingMessage {kind} opcode={self.opcode} {len(self.payload)} bytes>"


def prepare_message(
    opcode: int, payload: bytes, compress_from: int | None, *, broadcast: bool = True
) -> bytes | OutgoingMessage:
    """The frame of a server message: plain bytes, unless compression is on (``compress_from`` is
    the threshold) and the payload reaches it, in which case an OutgoingMessage frames it per peer."""
    if compress_from is None or len(payload) < compress_from:
        return build_frame(opcode, payload)
    return OutgoingMessage(opcode, payload, broadcast=broadcast)
