"""A small progress bar on stderr: steps of known expected length, redrawn twice a second.

On a terminal it redraws one line in place; otherwise (CI logs) it prints a line per step.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["ProgressBar"]


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """``total_seconds`` is the expected length of all steps; each step says its own expectation."""

    def __init__(
        self, steps: int, total_seconds: float, stream: TextIO = sys.stderr, width: int = 28
    ) -> None:
        self.steps = steps
        self.total = max(total_seconds, 1.0)
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._done_seconds = 0.0  # expected seconds of the finished steps
        self._step = 0
        self._label = ""
        self._step_expected = 0.0
        self._step_started = time.monotonic()
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressBar:
        if self.tty:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        if self.tty:
            self._draw(final=True)
            self.stream.write("\n")
            self.stream.flush()

    def start(self, label: str, expected_seconds: float) -> None:
        with self._lock:
            self._step += 1
            self._label = label
            self._step_expected = expected_seconds
            self._step_started = time.monotonic()
        if not self.tty:
            self.stream.write(f"[{self._step}/{self.steps}] {label} (elapsed {self._elapsed()})\n")
            self.stream.flush()
        else:
            self._draw()

    def finish(self, note: str = "") -> None:
        with self._lock:
            self._done_seconds += self._step_expected
            self._step_expected = 0.0
        if not self.tty and note:
            self.stream.write(f"    {note}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line above the bar."""
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty:
            self._draw()

    def _elapsed(self) -> str:
        return _clock(time.monotonic() - self._started)

    def _fraction(self) -> float:
        in_step = min(time.monotonic() - self._step_started, self._step_expected)
        return min(1.0, (self._done_seconds + in_step) / self.total)

    def _draw(self, final: bool = False) -> None:
        with self._lock:
            fraction = 1.0 if final else self._fraction()
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            elapsed = time.monotonic() - self._started
            eta = elapsed / fraction - elapsed if fraction > 0.02 else self.total - elapsed
            label = "done" if final else self._label
            line = (
                f"[{bar}] {fraction * 100:3.0f}% {self._step}/{self.steps} {label}"
                f"  elapsed {_clock(elapsed)} eta {_clock(eta)}"
            )
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()
