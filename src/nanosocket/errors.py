"""The one exception hierarchy of NanoSocket.

::

    NanoSocketError
    ├── ConfigurationError (ValueError)      an option has an invalid value
    ├── ProtocolError                        the peer broke RFC 6455 or the envelope format
    │   ├── PayloadTooBig                    a message or frame is over a limit (close 1009)
    │   └── InvalidPayload                   invalid UTF-8 or undecodable data (close 1007)
    ├── HandshakeError                       the opening handshake failed
    │   ├── InvalidHandshake                 malformed or unacceptable request/response
    │   └── HandshakeRejected                the server answered with a non-101 status
    ├── ConnectionClosed                     the connection is closed (code, reason)
    │   ├── ConnectionClosedOK               closed with 1000 or 1001
    │   └── ConnectionClosedError            closed with an error code or dropped
    │       └── MessageDropped               a message was dropped unsent (queue limit, age, full buffer)
    ├── ConnectError                         the server refused the connection (middleware)
    ├── AckTimeoutError (TimeoutError)       no acknowledgement within the timeout
    │   └── DeliveryTimeoutError             an at-least-once emit: no reply to any of its copies
    ├── AckError                             the remote handler answered an ack with an error
    └── LogUnavailable                       a recovery log shared by the nodes cannot take a
                                             message now (the message was sent to no one)

Errors from the peer carry the WebSocket close code the connection was (or will be) closed with.
Foreign errors (OSError, httptools errors, JSON errors) are mapped at the boundary and chained.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AckError",
    "AckTimeoutError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeliveryTimeoutError",
    "HandshakeError",
    "HandshakeRejected",
    "InvalidHandshake",
    "InvalidPayload",
    "LogUnavailable",
    "MessageDropped",
    "NanoSocketError",
    "PayloadTooBig",
    "ProtocolError",
]


class NanoSocketError(Exception):
    """Base class of every error NanoSocket raises on purpose."""


class ConfigurationError(NanoSocketError, ValueError):
    """An option was given an invalid value; the message names the option."""


class ProtocolError(NanoSocketError):
    """The peer violated the protocol; ``close_code`` is the code the connection closes with."""

    close_code: int = 1002

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class PayloadTooBig(ProtocolError):
    """A message, frame or fragment count went over its limit."""

    close_code = 1009


class InvalidPayload(ProtocolError):
    """A text message is not valid UTF-8, or a payload cannot be decoded."""

    close_code = 1007


class HandshakeError(NanoSocketError):
    """The opening handshake failed."""


class InvalidHandshake(HandshakeError):
    """The handshake request or response is malformed or not acceptable.

    ``status`` is the HTTP status a server answers with (400 unless stated).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HandshakeRejected(HandshakeError):
    """The server answered the upgrade request with a status other than 101."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        super().__init__(f"server rejected the WebSocket upgrade with HTTP {status}")
        self.status = status
        self.body = body


class ConnectionClosed(NanoSocketError):
    """The connection is closed; ``code`` and ``reason`` say how (1006: dropped, no close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """The connection was closed normally (1000 or 1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection was closed with an error code, or dropped without a close frame."""


def connection_closed(code: int, reason: str = "") -> ConnectionClosed:
    """Return the ConnectionClosed subclass instance that matches ``code``."""
    if code in (1000, 1001):
        return ConnectionClosedOK(code, reason)
    return ConnectionClosedError(code, reason)


class ConnectError(NanoSocketError):
    """The server refused the connection (a middleware rejected it); ``data`` is its detail."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


class MessageDropped(ConnectionClosedError):
    """A message was dropped without being sent: ``why`` is ``"queue_full"`` (over
    ``max_queue_size``, the oldest go first), ``"queue_bytes"`` (over ``max_queue_bytes``),
    ``"expired"`` (waited longer than ``max_queue_age``) or ``"send_buffer_full"``. The server
    never saw it. (A ConnectionClosedError with code 1006, as dropped calls failed before.)"""

    def __init__(self, why: str, event: str) -> None:
        super().__init__(1006, f"{event!r} dropped unsent: {_DROP_REASONS.get(why, why)}")
        self.why = why
        self.event = event


_DROP_REASONS = {
    "queue_full": "pushed out of the full offline queue (max_queue_size)",
    "queue_bytes": "pushed out of the offline queue over max_queue_bytes",
    "expired": "waited in the offline queue longer than max_queue_age",
    "send_buffer_full": "not sent: the send buffer is full",
}


class AckTimeoutError(NanoSocketError, TimeoutError):
    """No acknowledgement arrived within the timeout."""


class DeliveryTimeoutError(AckTimeoutError):
    """An at-least-once emit got no reply to any of its ``copies`` (its retries are spent, or
    another copy would reach the server after its de-duplication window). The server may or may
    not have run the handler: its outcome is unknown. ``mid`` is the message id."""

    def __init__(self, message: str, *, mid: str, copies: int) -> None:
        super().__init__(message)
        self.mid = mid
        self.copies = copies


class AckError(NanoSocketError):
    """The remote handler raised; ``data`` is the error object it answered with."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


class LogUnavailable(NanoSocketError):
    """A logged emit (connection-state recovery on a RedisAdapter) could not be queued for the
    shared log: Redis has been unreachable so long that the queue is full. The message was sent
    to no one (never a silent gap: the sender learns it here)."""
