"""NanoSocket: a fast realtime WebSocket framework for Python."""

from .endpoint import WebSocketServer, connect, serve
from .errors import (
    AckError,
    AckTimeoutError,
    ConfigurationError,
    ConnectError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    HandshakeRejected,
    InvalidHandshake,
    InvalidPayload,
    NanoSocketError,
    PayloadTooBig,
    ProtocolError,
)
from .options import WebSocketOptions
from .transport import SendStatus, WebSocket

__all__ = [
    "AckError",
    "AckTimeoutError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeError",
    "HandshakeRejected",
    "InvalidHandshake",
    "InvalidPayload",
    "NanoSocketError",
    "PayloadTooBig",
    "ProtocolError",
    "SendStatus",
    "WebSocket",
    "WebSocketOptions",
    "WebSocketServer",
    "connect",
    "serve",
]

__version__ = "0.1.0"
