"""Connection middleware: the chain a socket passes before its ``connection`` event.

Two styles, told apart once at registration:

* ``def mw(socket, next)``: call ``next()`` to go on or ``next(Exception(...))`` to refuse (now
  or later, from any callback);
* ``async def mw(socket)`` (or a sync ``def mw(socket)``): return to go on, raise to refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..dispatch import Handler

__all__ = ["Middleware", "run_chain"]


class Middleware:
    """One registered middleware and its calling style."""

    __slots__ = ("handler", "takes_next")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.handler = Handler(fn)
        minimum, maximum = self.handler.min_args, self.handler.max_args
        if minimum > 2 or (maximum is not None and maximum < 1):
            raise TypeError("middleware takes (socket) or (socket, next)")
        self.takes_next = minimum == 2 or (maximum is not None and maximum >= 2 and not self.handler.is_async)

    async def __call__(self, socket: Any) -> None:
        """Run this middleware for ``socket``; raise what it refuses with."""
        fn = self.handler.fn
        if not self.takes_next:
            result = fn(socket)
            if self.handler.is_async or asyncio.iscoroutine(result):
                await result
            return
        decided: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def next_(error: BaseException | None = None) -> None:
            if not decided.done():
                decided.set_result(error)

        result = fn(socket, next_)
        if asyncio.iscoroutine(result):
            await result
        error = await decided
        if error is not None:
            raise error


async def run_chain(chain: list[Middleware], socket: Any) -> None:
    """Run every middleware in order; the first refusal propagates."""
    for middleware in chain:
        await middleware(socket)
