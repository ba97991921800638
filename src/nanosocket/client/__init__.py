"""The Python client: NanoSocketClient (one server) and ClientPool (one client per URL)."""

from .client import ConnectionState, NanoSocketClient, reconnect_delay
from .pool import ClientPool

__all__ = ["ClientPool", "ConnectionState", "NanoSocketClient", "reconnect_delay"]
