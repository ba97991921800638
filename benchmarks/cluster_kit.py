"""What the cluster benchmarks share: a Redis, supervised workers, load generators, /proc readings.

* ``redis()``: the Redis at 127.0.0.1:6379 when it answers, else a ``redis-server`` started on a
  free port for the run (no persistence), stopped at the end;
* ``Workers``: ``nanosocket serve benchmarks.cluster_app:server --workers N`` (or one process for
  N = 1) started from the repository's root, its log read, its worker pids known;
* ``Loadgen``: the suite's C load generator (benchmarks/loadgen, built on first use by
  benchmarks/driver.py) as a process, its ``# event=`` markers watched and its JSON report parsed;
* ``rss()`` / ``open_fds()``: a process's resident memory and open descriptors from /proc.

Only the repository and a C compiler are needed (and ``redis-server`` when no Redis answers on
6379).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.driver import ensure_built

ROOT = Path(__file__).resolve().parents[1]
TARGET = "benchmarks.cluster_app:server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis() -> Iterator[str]:
    """A Redis URL for the run."""
    if _redis_answers(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no Redis on 127.0.0.1:6379 and no redis-server to start (make redis-deps)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _redis_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def redis_command(url: str, *args: str) -> bytes:
    """One Redis command over a plain socket (RESP), its raw reply (enough for INFO and CONFIG)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n".encode() + arg.encode() + b"\r\n" for arg in args
    )
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        sock.settimeout(1)
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                data += chunk
                if data.startswith(b"$") and b"\r\n" in data:
                    length = int(data[1 : data.index(b"\r\n")])
                    if len(data) >= data.index(b"\r\n") + 2 + length + 2:
                        break
                elif data.endswith(b"\r\n") and not data.startswith(b"$"):
                    break
    return data


def redis_publish_stats(url: str) -> dict[str, float]:
    """Redis's own count and CPU time (µs per call) of PUBLISH, since the last CONFIG RESETSTAT."""
    info = redis_command(url, "INFO", "commandstats").decode(errors="replace")
    match = re.search(r"cmdstat_publish:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", info)
    if match is None:
        return {"calls": 0.0, "usec": 0.0, "usec_per_call": 0.0}
    return {"calls": float(match[1]), "usec": float(match[2]), "usec_per_call": float(match[3])}


def rss(pid: int) -> int:
    """Resident set size in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Workers:
    """``nanosocket serve`` of the cluster app: N workers under a supervisor, or one process."""

    def __init__(
        self,
        workers: int,
        port: int,
        *,
        redis_url: str | None = None,
        prefix: str = "cluster-bench",
        own_adapter: bool = False,
        shutdown_timeout: float = 30.0,
        recovery: bool = False,
    ) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("NANOSOCKET_REDIS")}
        env["CLUSTER_BENCH_PORT"] = str(port)
        env.pop("CLUSTER_BENCH_REDIS", None)
        env["CLUSTER_BENCH_RECOVERY"] = "1" if recovery else "0"
        if redis_url is not None:
            env["NANOSOCKET_REDIS_PREFIX"] = prefix
            if own_adapter:
                env["CLUSTER_BENCH_REDIS"] = redis_url
            else:
                env["NANOSOCKET_REDIS_URL"] = redis_url
        self.count = workers
        self.port = port
        argv = [sys.executable, "-m", "nanosocket", "serve", TARGET, "--workers", str(workers)]
        if shutdown_timeout != 30.0:
            argv += ["--shutdown-timeout", f"{shutdown_timeout:g}"]
        self.command = " ".join(["nanosocket", *argv[3:]])
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.pids = self._wait_ready()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.lines.append(line.rstrip())
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def _wait_for(self, pattern: str, bound: float = 120.0) -> re.Match[str]:
        deadline = time.monotonic() + bound
        with self._seen:
            while True:
                for line in self.lines:
                    if (match := re.search(pattern, line)) is not None:
                        return match
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not log {pattern!r}:\n" + "\n".join(self.lines))
                self._seen.wait(0.5)

    def _wait_ready(self) -> list[int]:
        if self.count == 1:
            self._wait_for(r"NanoSocket listening on")
            return [self.process.pid]
        found = self._wait_for(r"all \d+ workers ready \(pids ([\d, ]+)\)")
        return [int(pid) for pid in found[1].split(", ")]

    def stop(self) -> int:
        """SIGTERM, as an operator would; the supervisor's exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(600)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Loadgen:
    """One run of the C load generator; ``report()`` waits for it and parses its JSON line."""

    def __init__(self, args: Sequence[str]) -> None:
        self.argv = [str(ensure_built()), *args]
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.events: list[str] = []
        self.stderr: list[str] = []
        self._seen = threading.Condition()
        self._stdout: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._seen:
                self.stderr.append(line.rstrip())
                if (match := re.match(r"# event=(\S+)", line)) is not None:
                    self.events.append(match[1])
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        self._stdout.extend(self.process.stdout)

    def wait_event(self, name: str, bound: float) -> bool:
        deadline = time.monotonic() + bound
        with self._seen:
            while name not in self.events:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    return False
                self._seen.wait(0.5)
            return True

    def report(self, bound: float = 600.0) -> dict[str, Any]:
        self.process.wait(bound)
        for reader in self._readers:
            reader.join(5)
        for line in reversed(self._stdout):
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
        raise SystemExit("the load generator printed no report:\n" + "\n".join(self.stderr[-20:]))


def fmt(value: float) -> str:
    """A rate in thousands with 3 significant digits (12.3k, 123k)."""
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.0f}"
