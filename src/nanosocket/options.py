"""Typed options: frozen, slotted dataclasses whose invalid values fail at construction.

Every default is the strict application default; raise limits explicitly where a use needs it
(the Autobahn echo server does, to take the suite's 16 MiB messages).
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypedDict

from .errors import ConfigurationError

__all__ = [
    "BackpressurePolicy",
    "ClientOptions",
    "ClientOptionsKwargs",
    "CompressionMode",
    "RateLimits",
    "RecoveryOptions",
    "ServerOptions",
    "ServerOptionsKwargs",
    "WebSocketOptions",
]

BackpressurePolicy = Literal["close", "drop"]
#: permessage-deflate (RFC 7692): "off", "shared" (no context takeover, no zlib state kept per
#: connection) or "dedicated" (context takeover, per-connection zlib state created on first use).
CompressionMode = Literal["off", "shared", "dedicated"]

KiB = 1024
MiB = 1024 * KiB


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        allowed = "a positive number of seconds" + (" or None" if optional else "")
        raise ConfigurationError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """Limits and timers of one WebSocket endpoint (server or client).

    One instance is shared by every connection of an endpoint, so per-connection memory holds a
    reference, never a copy.
    """

    #: Largest message after reassembly of its fragments, in bytes; a bigger one closes with 1009.
    max_payload_length: int = 1 * MiB
    #: Most frames one message may be split into; a fragment flood closes with 1009.
    max_fragments: int = 1024
    #: Largest control frame payload (RFC 6455 caps it at 125).
    max_control_payload: int = 125
    #: Largest opening handshake (request or response line plus headers), in bytes.
    max_handshake_size: int = 16 * KiB
    #: Most header lines an opening handshake may carry.
    max_headers: int = 64
    #: Seconds a peer has to complete the opening handshake.
    handshake_timeout: float = 10.0
    #: A connection silent for this many seconds is closed with 1011; pings are sent after half
    #: of it, so a live peer always answers in time. None disables heartbeats.
    idle_timeout: float | None = 60.0
    #: Seconds to wait for the peer's close frame, then for the TCP close, before dropping.
    close_timeout: float = 5.0
    #: Outbound bytes a connection may have buffered before the backpressure policy applies.
    max_backpressure: int = 64 * KiB
    #: What a send does when the buffer is over max_backpressure: "close" the slow peer with
    #: 1008, or "drop" the message (the send reports DROPPED).
    backpressure_policy: BackpressurePolicy = "close"
    #: Subprotocols this endpoint speaks, in order of preference.
    subprotocols: tuple[str, ...] = ()
    #: permessage-deflate: "off"; "shared" (no context takeover either way, so no zlib state per
    #: connection: each message is compressed and inflated with a fresh context); "dedicated"
    #: (context takeover both ways; a connection's compressor and decompressor, bounded by the two
    #: options below, are created on first use). A server answers offers; a client makes one.
    compression: CompressionMode = "off"
    #: Messages smaller than this many bytes are sent uncompressed.
    compression_threshold: int = 1 * KiB
    #: LZ77 window of our compressor as a power of two (9..15; 12 = 4 KiB); in dedicated mode a
    #: server also asks the client to keep its window this small, when the client allows it.
    compression_window_bits: int = 12
    #: zlib memLevel of our compressor (1..9): memory for speed and ratio (5 = 8 KiB of hash tables).
    compression_mem_level: int = 5
    #: Largest compressed message a peer may send (its wire payload, summed over its frames); a
    #: bigger one closes with 1009. max_payload_length still bounds the inflated size.
    max_compressed_size: int = 1 * MiB

    def __post_init__(self) -> None:
        _check_positive_int("max_payload_length", self.max_payload_length)
        _check_positive_int("max_fragments", self.max_fragments)
        _check_positive_int("max_control_payload", self.max_control_payload, minimum=2)
        if self.max_control_payload > 125:
            raise ConfigurationError(
                f"max_control_payload must be at most 125 (RFC 6455), got {self.max_control_payload!r}"
            )
        _check_positive_int("max_handshake_size", self.max_handshake_size, minimum=256)
        _check_positive_int("max_headers", self.max_headers)
        _check_seconds("handshake_timeout", self.handshake_timeout)
        _check_seconds("idle_timeout", self.idle_timeout, optional=True)
        _check_seconds("close_timeout", self.close_timeout)
        _check_positive_int("max_backpressure", self.max_backpressure)
        if self.backpressure_policy not in ("close", "drop"):
            raise ConfigurationError(
                f"backpressure_policy must be 'close' or 'drop', got {self.backpressure_policy!r}"
            )
        if not isinstance(self.subprotocols, tuple) or not all(
            isinstance(p, str) and p for p in self.subprotocols
        ):
            raise ConfigurationError("subprotocols must be a tuple of non-empty strings")
        _check_compression(
            self.compression,
            self.compression_threshold,
            self.compression_window_bits,
            self.compression_mem_level,
            self.max_compressed_size,
        )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all options, for layers that accept them as keyword arguments."""
        return tuple(f.name for f in fields(cls))


def _check_compression(
    compression: object, threshold: object, window_bits: object, mem_level: object, max_compressed: object
) -> None:
    if compression not in ("off", "shared", "dedicated"):
        raise ConfigurationError(f"compression must be 'off', 'shared' or 'dedicated', got {compression!r}")
    _check_positive_int("compression_threshold", threshold, minimum=0)
    if not isinstance(window_bits, int) or isinstance(window_bits, bool) or not 9 <= window_bits <= 15:
        # zlib cannot compress with a window of 8 bits, the RFC 7692 minimum.
        raise ConfigurationError(
            f"compression_window_bits must be an integer from 9 to 15, got {window_bits!r}"
        )
    if not isinstance(mem_level, int) or isinstance(mem_level, bool) or not 1 <= mem_level <= 9:
        raise ConfigurationError(f"compression_mem_level must be an integer from 1 to 9, got {mem_level!r}")
    _check_positive_int("max_compressed_size", max_compressed)


def _check_rate(name: str, value: object, *, minimum: float = 0.0, why: str = "") -> None:
    """A rate or a bucket size: None (off, or the default) or a finite positive number, at least
    ``minimum`` when that is given (``why`` explains it in the error)."""
    if value is None:
        return
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
        or value < minimum
    ):
        allowed = f"a number >= {minimum:g}" if minimum else "a positive number"
        raise ConfigurationError(f"{name} must be None or {allowed}{why}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A server's per-connection token buckets as they apply (``ServerOptions.rate_limits()``).

    A bucket holds at most its burst in tokens and refills at its rate per second; a message takes
    one message token per envelope and one byte token per byte. A ``None`` rate: that bucket is off.
    """

    message_rate: float | None
    message_burst: float
    byte_rate: float | None
    byte_burst: float


def _check_dashboard(dashboard: object, token: object) -> None:
    if not isinstance(dashboard, bool):
        raise ConfigurationError(f"dashboard must be True or False, got {dashboard!r}")
    if token is None:
        return
    if not isinstance(token, str) or len(token) < 8 or not token.isprintable():
        raise ConfigurationError("dashboard_token must be a printable string of at least 8 characters")
    if not dashboard:
        raise ConfigurationError("dashboard_token is set but dashboard is not: pass dashboard=True")


def _check_origins(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(o, str) and o for o in value):
        raise ConfigurationError(
            "cors must be None (same-origin), or a list of origins such as 'https://example.com' or '*'"
        )


@dataclass(frozen=True, slots=True)
class RecoveryOptions:
    """Connection-state recovery (docs/guarantees.md): a client that comes back after an
    unexpected loss gets its socket id, rooms, ``socket.data`` and the messages it missed."""

    #: Seconds a session is kept after an unexpected loss; a client back later starts afresh.
    max_disconnection: float = 120.0
    #: Most messages the log of recent messages keeps (the oldest go first); a client whose gap
    #: the log no longer covers starts afresh.
    max_messages: int = 10_000
    #: Most sessions kept at once (the oldest go first).
    max_sessions: int = 10_000
    #: Do not run the middleware chain again for a client that recovers its session.
    skip_middleware: bool = False
    #: Most room changes (joins and leaves) kept per socket to tell which rooms it was in when
    #: each logged message was sent (the oldest go first); a client whose gap needs a change let
    #: go starts afresh.
    max_room_changes: int = 1000

    def __post_init__(self) -> None:
        _check_seconds("recovery.max_disconnection", self.max_disconnection)
        _check_positive_int("recovery.max_messages", self.max_messages)
        _check_positive_int("recovery.max_sessions", self.max_sessions)
        _check_positive_int("recovery.max_room_changes", self.max_room_changes)
        if not isinstance(self.skip_middleware, bool):
            raise ConfigurationError(
                f"recovery.skip_middleware must be True or False, got {self.skip_middleware!r}"
            )


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Options of a NanoSocket server; the WebSocket limits are shared by every connection."""

    #: Largest message after reassembly, in bytes; a bigger one closes the connection with 1009.
    max_payload_length: int = 1 * MiB
    #: Outbound bytes a client may leave unread before the server closes it (1008); volatile
    #: messages to such a client are dropped instead.
    max_backpressure: int = 64 * KiB
    #: A connection silent this long (pings unanswered) is closed with 1011; None: no heartbeat.
    idle_timeout: float | None = 60.0
    #: Seconds a client has for the WebSocket upgrade and, after it, for the connect step
    #: (its ``$connect`` and the middleware chain).
    handshake_timeout: float = 10.0
    #: Seconds to wait for a peer's close frame before dropping the connection.
    close_timeout: float = 5.0
    #: Most frames one message may span.
    max_fragments: int = 1024
    #: Largest HTTP request head, in bytes.
    max_handshake_size: int = 16 * KiB
    #: Most header lines in an HTTP request head.
    max_headers: int = 64
    #: Allowed browser origins: None = same-origin only, ("*",) = any, else exact origins.
    cors: tuple[str, ...] | None = None
    #: The only path that accepts WebSocket upgrades; None accepts any path not taken by a route.
    path: str | None = None
    #: Messages a client may send before its connection is accepted (they wait, in order).
    max_pending_messages: int = 64
    #: Default seconds ``socket.call()`` waits for the client's acknowledgement.
    ack_timeout: float = 30.0
    #: Serve ``GET /health`` (JSON) and ``GET /metrics`` (Prometheus text).
    monitoring: bool = True
    #: Serve the live dashboard: the page ``GET /dashboard`` and its own WebSocket endpoint
    #: ``/dashboard/ws`` (docs/api.md "Dashboard"; its sockets are not the app's).
    dashboard: bool = False
    #: The token a dashboard client must send as ``auth={"token": ...}``. None: the app's
    #: middleware admits dashboard sockets (with no middleware, only loopback clients get in).
    dashboard_token: str | None = None
    #: permessage-deflate: "off"; "shared" (no context takeover: no zlib state per connection,
    #: memory per connection unchanged); "dedicated" (context takeover both ways, per-connection
    #: zlib state bounded by compression_window_bits and compression_mem_level).
    compression: CompressionMode = "off"
    #: Messages smaller than this many bytes are sent uncompressed.
    compression_threshold: int = 1 * KiB
    #: LZ77 window of the server's compressor, and in dedicated mode of the client's when it
    #: allows it, as a power of two (9..15).
    compression_window_bits: int = 12
    #: zlib memLevel of the server's compressor (1..9).
    compression_mem_level: int = 5
    #: Largest compressed message a client may send (summed over its frames); bigger closes with
    #: 1009. max_payload_length bounds the inflated size.
    max_compressed_size: int = 1 * MiB
    #: Messages per second one client may send, sustained (a token bucket per connection; each
    #: envelope counts, a batch of n counts n). Over it: closed with 1008 "rate limit exceeded"
    #: (disconnect reason "rate limited"). None: no limit.
    rate_limit_messages: float | None = None
    #: Messages a client may send at once: the bucket's size. None: one second's worth
    #: (rate_limit_messages, at least 1).
    rate_limit_messages_burst: float | None = None
    #: Bytes per second one client may send, sustained (message payloads, as received). Over it:
    #: closed as for rate_limit_messages. None: no limit.
    rate_limit_bytes: float | None = None
    #: Bytes a client may send at once; at least max_payload_length, so that one message of the
    #: largest allowed size can pass. None: one second's worth, at least max_payload_length.
    rate_limit_bytes_burst: float | None = None
    #: Connection-state recovery (RecoveryOptions); None: off, and messages carry no offset.
    recovery: RecoveryOptions | None = None
    #: Seconds a client message id (``mid``, docs/protocol.md "At-least-once emits") is remembered
    #: from its first arrival, with its handler's reply: a copy arriving within it does not run
    #: the handler again. It must be longer than any client's retry span (the Python client never
    #: sends a copy later than ``dedup_window - ack_timeout`` after the first; the server tells
    #: clients the window in its answer to ``$connect``).
    dedup_window: float = 300.0
    #: Most message ids remembered at once (the oldest go first, even within the window).
    dedup_max_entries: int = 100_000
    #: Most bytes of replies kept for them (the oldest go first, even within the window).
    dedup_max_bytes: int = 32 * MiB
    #: A reply bigger than this many bytes is not kept: a copy is then answered with an error
    #: saying the message was handled but its reply was not kept.
    dedup_max_reply: int = 64 * KiB

    def __post_init__(self) -> None:
        _check_positive_int("max_pending_messages", self.max_pending_messages)
        _check_seconds("dedup_window", self.dedup_window)
        _check_positive_int("dedup_max_entries", self.dedup_max_entries)
        _check_positive_int("dedup_max_bytes", self.dedup_max_bytes)
        _check_positive_int("dedup_max_reply", self.dedup_max_reply, minimum=0)
        if self.dedup_max_reply > self.dedup_max_bytes:
            raise ConfigurationError(
                f"dedup_max_reply ({self.dedup_max_reply!r}) must not be more than "
                f"dedup_max_bytes ({self.dedup_max_bytes!r})"
            )
        if self.recovery is not None and not isinstance(self.recovery, RecoveryOptions):
            raise ConfigurationError(f"recovery must be a RecoveryOptions or None, got {self.recovery!r}")
        _check_seconds("ack_timeout", self.ack_timeout)
        if not isinstance(self.monitoring, bool):
            raise ConfigurationError(f"monitoring must be True or False, got {self.monitoring!r}")
        _check_dashboard(self.dashboard, self.dashboard_token)
        _check_origins(self.cors)
        if self.path is not None and (not isinstance(self.path, str) or not self.path.startswith("/")):
            raise ConfigurationError(f"path must start with '/', got {self.path!r}")
        # The WebSocket limits validate themselves (and name the option) here.
        self.websocket_options()
        self._check_rate_limits()

    def _check_rate_limits(self) -> None:
        _check_rate("rate_limit_messages", self.rate_limit_messages)
        _check_rate("rate_limit_messages_burst", self.rate_limit_messages_burst, minimum=1)
        _check_rate("rate_limit_bytes", self.rate_limit_bytes)
        _check_rate(
            "rate_limit_bytes_burst",
            self.rate_limit_bytes_burst,
            minimum=self.max_payload_length,
            why=" (max_payload_length: a message of the largest allowed size must be able to pass)",
        )
        if self.rate_limit_messages_burst is not None and self.rate_limit_messages is None:
            raise ConfigurationError("rate_limit_messages_burst is set but rate_limit_messages is not")
        if self.rate_limit_bytes_burst is not None and self.rate_limit_bytes is None:
            raise ConfigurationError("rate_limit_bytes_burst is set but rate_limit_bytes is not")

    def rate_limits(self) -> RateLimits | None:
        """The per-connection token buckets with their bursts resolved; None when both are off."""
        messages, messages_burst = self.rate_limit_messages, self.rate_limit_messages_burst
        size, size_burst = self.rate_limit_bytes, self.rate_limit_bytes_burst
        if messages is None and size is None:
            return None
        return RateLimits(
            message_rate=messages,
            message_burst=float(messages_burst if messages_burst is not None else max(messages or 1.0, 1.0)),
            byte_rate=size,
            byte_burst=float(
                size_burst if size_burst is not None else max(size or 0.0, self.max_payload_length)
            ),
        )

    def websocket_options(self) -> WebSocketOptions:
        """The engine options every connection of this server shares."""
        return WebSocketOptions(
            max_payload_length=self.max_payload_length,
            max_fragments=self.max_fragments,
            max_handshake_size=self.max_handshake_size,
            max_headers=self.max_headers,
            handshake_timeout=self.handshake_timeout,
            idle_timeout=self.idle_timeout,
            close_timeout=self.close_timeout,
            max_backpressure=self.max_backpressure,
            backpressure_policy="close",
            subprotocols=("nanosocket.v1",),
            compression=self.compression,
            compression_threshold=self.compression_threshold,
            compression_window_bits=self.compression_window_bits,
            compression_mem_level=self.compression_mem_level,
            max_compressed_size=self.max_compressed_size,
        )


class ServerOptionsKwargs(TypedDict, total=False):
    """The keyword arguments ``NanoSocket(...)`` accepts for its ServerOptions (typed for checkers)."""

    max_payload_length: int
    max_backpressure: int
    idle_timeout: float | None
    handshake_timeout: float
    close_timeout: float
    max_fragments: int
    max_handshake_size: int
    max_headers: int
    cors: str | list[str] | tuple[str, ...] | None
    path: str | None
    max_pending_messages: int
    ack_timeout: float
    monitoring: bool
    dashboard: bool
    dashboard_token: str | None
    compression: CompressionMode
    compression_threshold: int
    compression_window_bits: int
    compression_mem_level: int
    max_compressed_size: int
    rate_limit_messages: float | None
    rate_limit_messages_burst: float | None
    rate_limit_bytes: float | None
    rate_limit_bytes_burst: float | None
    recovery: RecoveryOptions | None
    dedup_window: float
    dedup_max_entries: int
    dedup_max_bytes: int
    dedup_max_reply: int


def server_options(**values: object) -> ServerOptions:
    """Build ServerOptions from keyword arguments, naming any unknown option in the error."""
    known = set(ServerOptions.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(f"unknown server option(s): {', '.join(unknown)}")
    cors = values.get("cors")
    if isinstance(cors, str):
        values["cors"] = (cors,)
    elif isinstance(cors, list):
        values["cors"] = tuple(cors)
    return ServerOptions(**values)  # type: ignore[arg-type]


def _check_delay(name: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Options of a NanoSocketClient (the keyword arguments of its constructor)."""

    #: Start connecting as soon as the client is created inside a running event loop.
    auto_connect: bool = True
    #: Reconnect after an unexpected loss, and retry a failed first connect.
    reconnection: bool = True
    #: Reconnection attempts in a row before giving up (``reconnect_failed``); None: no limit.
    reconnection_attempts: int | None = None
    #: Seconds before the first reconnection attempt; doubled for each further attempt.
    reconnection_delay: float = 1.0
    #: Longest wait between two attempts, in seconds.
    reconnection_delay_max: float = 30.0
    #: Jitter: each wait is randomized by up to this fraction of itself, either way (0..1).
    randomization_factor: float = 0.5
    #: Seconds one connection attempt (TCP, upgrade and the server's ``$connect``) may take.
    timeout: float = 20.0
    #: Any JSON value sent with ``$connect``; the server's middleware reads it as handshake.auth.
    auth: Any = None
    #: Extra HTTP headers of the upgrade request.
    headers: tuple[tuple[str, str], ...] = ()
    #: Emits and calls kept while disconnected, and at-least-once calls waiting for their turn;
    #: when full, the oldest waiting is dropped and reported (0: none kept).
    max_queue_size: int = 1000
    #: Bytes (encoded payloads) the queue may hold; over it, the oldest waiting is dropped.
    max_queue_bytes: int = 4 * MiB
    #: Seconds a message may wait unsent in the queue; older ones are dropped and reported.
    #: None: no age limit.
    max_queue_age: float | None = 300.0
    #: Default seconds ``call()`` waits for its acknowledgement; None waits as long as it takes.
    #: With ``retries``, the seconds each copy waits before the next is sent.
    ack_timeout: float | None = None
    #: Copies of a ``call()`` sent again when no reply came within ``ack_timeout`` (0: none).
    #: With retries, a call is at-least-once: it carries a message id, the server runs its
    #: handler once, and calls are sent one at a time, in order (docs/guarantees.md).
    retries: int = 0
    #: The transport's limits and heartbeat; None: the client defaults (WebSocketOptions with
    #: ``backpressure_policy="drop"``, so a full send buffer drops a send instead of the connection).
    options: WebSocketOptions | None = None
    #: Offer permessage-deflate (context takeover both ways, ``compression="dedicated"`` of the
    #: transport options, unless ``options`` chooses another mode) and compress what is sent.
    compression: bool = False
    #: The TLS context of wss:// connections (e.g. one trusting a private CA); None: the system's
    #: default context, which verifies the server's certificate and host name.
    ssl: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        _check_bool("auto_connect", self.auto_connect)
        _check_bool("reconnection", self.reconnection)
        if self.reconnection_attempts is not None:
            _check_positive_int("reconnection_attempts", self.reconnection_attempts, minimum=0)
        _check_delay("reconnection_delay", self.reconnection_delay)
        _check_delay("reconnection_delay_max", self.reconnection_delay_max)
        if self.reconnection_delay_max < self.reconnection_delay:
            raise ConfigurationError(
                f"reconnection_delay_max ({self.reconnection_delay_max!r}) must not be less than "
                f"reconnection_delay ({self.reconnection_delay!r})"
            )
        factor = self.randomization_factor
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 <= factor <= 1:
            raise ConfigurationError(f"randomization_factor must be a number from 0 to 1, got {factor!r}")
        _check_seconds("timeout", self.timeout)
        if not isinstance(self.headers, tuple) or not all(
            isinstance(pair, tuple)
            and len(pair) == 2
            and all(isinstance(part, str) and "\r" not in part and "\n" not in part for part in pair)
            and pair[0]
            for pair in self.headers
        ):
            raise ConfigurationError("headers must be (name, value) string pairs without CR or LF")
        _check_positive_int("max_queue_size", self.max_queue_size, minimum=0)
        _check_positive_int("max_queue_bytes", self.max_queue_bytes)
        _check_seconds("max_queue_age", self.max_queue_age, optional=True)
        _check_seconds("ack_timeout", self.ack_timeout, optional=True)
        _check_positive_int("retries", self.retries, minimum=0)
        if self.retries and self.ack_timeout is None:
            raise ConfigurationError(
                "retries needs ack_timeout: the seconds each copy waits for its reply before the next"
            )
        if self.options is not None and not isinstance(self.options, WebSocketOptions):
            raise ConfigurationError(f"options must be a WebSocketOptions or None, got {self.options!r}")
        _check_bool("compression", self.compression)
        if self.ssl is not None and not isinstance(self.ssl, ssl.SSLContext):
            raise ConfigurationError(f"ssl must be an ssl.SSLContext or None, got {self.ssl!r}")


class ClientOptionsKwargs(TypedDict, total=False):
    """The keyword arguments ``NanoSocketClient(url, ...)`` accepts (typed for checkers)."""

    auto_connect: bool
    reconnection: bool
    reconnection_attempts: int | None
    reconnection_delay: float
    reconnection_delay_max: float
    randomization_factor: float
    timeout: float
    auth: Any
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None
    max_queue_size: int
    max_queue_bytes: int
    max_queue_age: float | None
    ack_timeout: float | None
    retries: int
    options: WebSocketOptions | None
    compression: bool
    ssl: ssl.SSLContext | None
