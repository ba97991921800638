"""The NanoSocket server."""

from .app import NanoSocket
from .broadcast import BroadcastOperator
from .cluster import RemoteHandshake, RemoteSocket
from .socket import Handshake, Socket

__all__ = ["BroadcastOperator", "Handshake", "NanoSocket", "RemoteHandshake", "RemoteSocket", "Socket"]
