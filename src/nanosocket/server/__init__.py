"""The NanoSocket server."""

from .app import NanoSocket
from .broadcast import BroadcastOperator
from .socket import Handshake, Socket

__all__ = ["BroadcastOperator", "Handshake", "NanoSocket", "Socket"]
