"""NanoSocket: a fast realtime WebSocket framework for Python."""

from .adapters import Adapter, MemoryAdapter
from .client import ClientPool, ConnectionState, NanoSocketClient, reconnect_delay
from .dispatch import HandlerArityError
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
from .options import ClientOptions, ServerOptions, WebSocketOptions
from .protocol.handshake import Headers, Request
from .server import BroadcastOperator, Handshake, NanoSocket, Socket
from .transport import SendStatus, WebSocket

__all__ = [
    "AckError",
    "AckTimeoutError",
    "Adapter",
    "BroadcastOperator",
    "ClientOptions",
    "ClientPool",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionState",
    "HandlerArityError",
    "Handshake",
    "HandshakeError",
    "HandshakeRejected",
    "Headers",
    "InvalidHandshake",
    "InvalidPayload",
    "MemoryAdapter",
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
    "reconnect_delay",
    "serve",
]

__version__ = "0.1.0"
