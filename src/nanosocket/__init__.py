"""NanoSocket: a fast realtime WebSocket framework for Python."""

from typing import TYPE_CHECKING, Any

from .adapters import AckResults, Adapter, MemoryAdapter
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
    DeliveryTimeoutError,
    HandshakeError,
    HandshakeRejected,
    InvalidHandshake,
    InvalidPayload,
    LogUnavailable,
    MessageDropped,
    NanoSocketError,
    PayloadTooBig,
    ProtocolError,
)
from .options import ClientOptions, RecoveryOptions, ServerOptions, WebSocketOptions
from .protocol.handshake import Headers, Request
from .server import BroadcastOperator, Handshake, NanoSocket, RemoteSocket, Socket
from .transport import SendStatus, WebSocket

if TYPE_CHECKING:
    from .adapters.redis import RedisAdapter

__all__ = [
    "AckError",
    "AckResults",
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
    "DeliveryTimeoutError",
    "HandlerArityError",
    "Handshake",
    "HandshakeError",
    "HandshakeRejected",
    "Headers",
    "InvalidHandshake",
    "InvalidPayload",
    "LogUnavailable",
    "MemoryAdapter",
    "MessageDropped",
    "NanoSocket",
    "NanoSocketClient",
    "NanoSocketError",
    "PayloadTooBig",
    "ProtocolError",
    "RecoveryOptions",
    "RedisAdapter",
    "RemoteSocket",
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


def __getattr__(name: str) -> Any:
    # RedisAdapter loads the Redis client: only when asked for.
    if name == "RedisAdapter":
        from .adapters.redis import RedisAdapter  # noqa: PLC0415 - lazily: it loads redis

        return RedisAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
