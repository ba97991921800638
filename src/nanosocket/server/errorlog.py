"""Rate-limited error logging: a flood of failing messages cannot flood the log."""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs each kind of error at most once per ``interval`` seconds, then how many it skipped."""

    __slots__ = ("_interval", "_last", "_logger", "_skipped")

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def error(self, kind: str, message: str, error: BaseException | None = None) -> bool:
        """Log ``message`` unless ``kind`` was logged within the interval; True when logged."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        if len(self._last) > 1000:
            self._last.clear()
            self._skipped.clear()
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        suffix = f" ({skipped} similar errors not logged in the last {self._interval:g} s)" if skipped else ""
        exc_info = (type(error), error, error.__traceback__) if error is not None else None
        self._logger.error("%s%s", message, suffix, exc_info=exc_info)
        return True
