"""ClientPool: one NanoSocketClient per server URL, closed together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Unpack

from ..errors import ConfigurationError
from ..options import ClientOptionsKwargs
from .client import NanoSocketClient, client_options, normalize_url

__all__ = ["ClientPool"]


class ClientPool:
    """Clients by URL: ``get`` creates a URL's client once and returns it from then on.

    ``async with ClientPool() as pool:`` disconnects every client on exit (``close()``).
    """

    __slots__ = ("_clients",)

    def __init__(self) -> None:
        self._clients: dict[str, NanoSocketClient] = {}

    def get(self, url: str, **options: Unpack[ClientOptionsKwargs]) -> NanoSocketClient:
        """The client of ``url``, created with ``options`` the first time.

        Options given again for an existing client must match those it was created with
        (ConfigurationError otherwise): a pool never holds two clients for one URL.
        """
        key = normalize_url(url)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = NanoSocketClient(key, **options)
        elif options:
            wanted: dict[str, Any] = dict(options)
            given = client_options(**wanted)
            for name in options:
                if getattr(given, name) != getattr(client.options, name):
                    raise ConfigurationError(
                        f"the pool's client for {key} was created with another {name} "
                        f"({getattr(client.options, name)!r})"
                    )
        return client

    def __contains__(self, url: object) -> bool:
        return isinstance(url, str) and normalize_url(url) in self._clients

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[NanoSocketClient]:
        return iter(list(self._clients.values()))

    async def close(self) -> None:
        """Disconnect every client and forget them."""
        clients = list(self._clients.values())
        self._clients.clear()
        if clients:
            await asyncio.gather(*(client.disconnect() for client in clients))

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<ClientPool clients={len(self._clients)}>"
