"""Drives the C load generator: builds it on first use and runs it.

The binary is compiled with ``cc -O2`` (or ``$CC``) into ``benchmarks/loadgen/build/`` (gitignored)
whenever it is missing or older than its sources; nothing but a C compiler is needed. The same goes
for ``refserver`` (``ensure_built("refserver")``), the minimal C server that calibrates it.

    python -m benchmarks.driver build            # compile (if needed) and print the binary's path
    python -m benchmarks.driver --mode echo ...  # compile if needed, then run it with these arguments
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BINARY", "REFSERVER", "LoadgenError", "LoadgenProcess", "ensure_built", "run"]

SOURCE_DIR = Path(__file__).resolve().parent / "loadgen"
BUILD_DIR = SOURCE_DIR / "build"
BINARY = BUILD_DIR / "loadgen"
REFSERVER = BUILD_DIR / "refserver"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-std=gnu11")

_build_lock = threading.Lock()


class LoadgenError(RuntimeError):
    """The load generator could not be built, or a run did not produce its JSON report."""


def _sources(program: str) -> list[Path]:
    """The program's own .c file and every header."""
    return sorted([SOURCE_DIR / f"{program}.c", *SOURCE_DIR.glob("*.h")])


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise LoadgenError("no C compiler found (install gcc, or set CC)")


def ensure_built(program: str = "loadgen", *, force: bool = False) -> Path:
    """Compile ``program`` (the load generator, or ``refserver``) when it is missing or stale;
    return the binary's path."""
    binary = BUILD_DIR / program
    with _build_lock:
        sources = _sources(program)
        newest = max(p.stat().st_mtime for p in sources)
        if not force and binary.exists() and binary.stat().st_mtime >= newest:
            return binary
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        # Build under a temporary name, then rename: concurrent builders never see half a binary.
        fd, tmp = tempfile.mkstemp(prefix=".loadgen-", dir=BUILD_DIR)
        os.close(fd)
        command = [_compiler(), *CFLAGS, "-o", tmp, *(str(p) for p in sources if p.suffix == ".c")]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            Path(tmp).unlink(missing_ok=True)
            raise LoadgenError(f"building the load generator failed:\n{' '.join(command)}\n{result.stderr}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
        return binary


class LoadgenProcess:
    """One running load generator: its stderr event markers are watched while it runs.

    The loadgen prints ``# event=NAME ...`` lines on stderr (warmup-start, measure-start,
    measure-end, ready, hold-end); ``on_event`` is called from a reader thread with each name,
    and ``wait_event`` blocks until one has been seen.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cpu: int | None = None,
        on_event: Callable[[str], None] | None = None,
        stderr_log: Path | None = None,
    ) -> None:
        binary = ensure_built()
        command = [str(binary), *args]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        self.command = command
        self._on_event = on_event
        self._events: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stderr_lines: list[str] = []
        self._log = stderr_log.open("a", encoding="utf-8") if stderr_log is not None else None
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        self._stdout = ""
        self._out_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._out_thread.start()
        self._err_thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self._stdout = self.proc.stdout.read()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self._log is not None:
                self._log.write(line)
            if len(self._stderr_lines) < 2000:
                self._stderr_lines.append(line.rstrip("\n"))
            if line.startswith("# event="):
                name = line.split()[1].removeprefix("event=")
                with self._cond:
                    self._events[name] = time.monotonic()
                    self._cond.notify_all()
                if self._on_event is not None:
                    self._on_event(name)

    def wait_event(self, name: str, timeout: float) -> bool:
        """Block until event ``name`` was printed (True) or ``timeout`` passed or the process ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while name not in self._events:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._err_thread.is_alive()):
                    return name in self._events
                self._cond.wait(min(left, 0.2))
            return True

    def event_time(self, name: str) -> float | None:
        with self._cond:
            return self._events.get(name)

    def release(self) -> None:
        """End a conns-mode hold now (SIGUSR1)."""
        if self.proc.poll() is None:
            self.proc.send_signal(10)  # SIGUSR1

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the process and return its JSON report."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise LoadgenError(
                f"loadgen did not finish within {timeout:.0f} s: {' '.join(self.command)}"
            ) from None
        self._out_thread.join(5)
        self._err_thread.join(5)
        if self._log is not None:
            self._log.close()
        lines = [line for line in self._stdout.splitlines() if line.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            tail = "\n".join(self._stderr_lines[-10:])
            raise LoadgenError(
                f"loadgen exited with {self.proc.returncode}: {' '.join(self.command)}\n{tail}"
            )
        report: dict[str, Any] = json.loads(lines[-1])
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(args: Sequence[str], *, cpu: int | None = None, timeout: float = 600.0) -> dict[str, Any]:
    """Run the load generator to completion and return its JSON report."""
    return LoadgenProcess(args, cpu=cpu).result(timeout)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["build"]:
        print(ensure_built(force="--force" in argv))
        ensure_built("refserver", force="--force" in argv)
        return 0
    binary = ensure_built()
    return subprocess.call([str(binary), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
