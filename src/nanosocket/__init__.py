"""NanoSocket: a fast realtime WebSocket framework for Python."""

from .client import ClientPool, ConnectionState, NanoSocketClient
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
from .options import ServerOptions, WebSocketOptions
from .protocol.handshake import Headers, Request
from .server import BroadcastOperator, Handshake, NanoSocket, Socket
from .transport import SendStatus, WebSocket

__all__ = [
    "AckError",
    "AckTimeoutError",
    "BroadcastOperator",
    "ClientPool",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionState",
    "Handshake",
    "HandshakeError",
    "HandshakeRejected",
    "Headers",
    "InvalidHandshake",
    "InvalidPayload",
    "NanoSocket",
    "NanoSocketClient",
    "NanoSocketError",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "SendStatus",
    "ServerOptions",
    "Socket",
    "WebSocket",
    "WebSocketOptions",
    "WebSocketServer",
    "connect",
    "serve",
]

__version__ = "0.1.0"
