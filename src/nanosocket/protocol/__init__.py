"""Sans-I/O protocol layers: bytes and values in, bytes and values out (no asyncio, no sockets)."""
