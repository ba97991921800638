"""Process and machine measurements from /proc: a server's CPU time and RSS, per-core busy time,
and the machine facts a report records."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["CoreTimes", "ProcessSampler", "cpu_ns", "machine_facts", "process_tree", "source_state"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (servers that fork workers are measured as a whole)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids``."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _CLK_TCK


def cpu_ns(pids: list[int]) -> int:
    """Nanoseconds on a CPU so far of every thread of ``pids`` (``/proc/<pid>/task/*/schedstat``):
    exact where ``cpu_seconds`` counts clock ticks (10 ms), for measurements of a fraction of a
    second. Threads that already ended are not counted."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def rss_bytes(pids: list[int]) -> int:
    """Resident set size of ``pids`` (VmRSS), in bytes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


class CoreTimes:
    """Busy and total jiffies of each core, to tell how busy a core was over an interval."""

    def __init__(self) -> None:
        self.taken = time.monotonic()
        self.cores: dict[int, tuple[int, int]] = {}
        for line in Path("/proc/stat").read_text().splitlines():
            match = re.match(r"cpu(\d+)\s+(.*)", line)
            if match:
                values = [int(v) for v in match.group(2).split()]
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
                total = sum(values[:8])
                self.cores[int(match.group(1))] = (total - idle, total)

    def busy_pct(self, later: CoreTimes, core: int) -> float | None:
        """Percent of ``core`` busy between this sample and ``later`` (all processes)."""
        if core not in self.cores or core not in later.cores:
            return None
        busy = later.cores[core][0] - self.cores[core][0]
        total = later.cores[core][1] - self.cores[core][1]
        return 100.0 * busy / total if total > 0 else None


class ProcessSampler:
    """Samples a server's RSS in the background; CPU marks are taken on demand.

    ``mark(name)`` records (wall time, CPU seconds, RSS, per-core times) at a moment, e.g. when the
    load generator reports the start and the end of its measurement; ``cpu_pct(a, b)`` is the
    server's CPU use between two marks, in percent of one core.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = 0
        self.samples: list[tuple[float, int]] = []
        self.marks: dict[str, tuple[float, float, int, CoreTimes]] = {}
        self._pids = process_tree(pid)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        refresh = 0
        while not self._stop.is_set():
            refresh += 1
            if refresh % 8 == 0:
                self._pids = process_tree(self.pid)
            rss = rss_bytes(self._pids)
            with self._lock:
                self.samples.append((time.monotonic(), rss))
                self.peak_rss = max(self.peak_rss, rss)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def rss(self) -> int:
        return rss_bytes(self._pids)

    def mark(self, name: str) -> None:
        pids = self._pids
        with self._lock:
            self.marks[name] = (time.monotonic(), cpu_seconds(pids), rss_bytes(pids), CoreTimes())

    def cpu_pct(self, start: str, end: str) -> float | None:
        if start not in self.marks or end not in self.marks:
            return None
        t0, c0, _, _ = self.marks[start]
        t1, c1, _, _ = self.marks[end]
        return 100.0 * (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def core_busy_pct(self, start: str, end: str, core: int) -> float | None:
        if start not in self.marks or end not in self.marks:
            return None
        return self.marks[start][3].busy_pct(self.marks[end][3], core)

    def rss_at(self, name: str) -> int | None:
        mark = self.marks.get(name)
        return mark[2] if mark is not None else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _compiler_version() -> str | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.splitlines()[0] if result.stdout else None


def _speedups() -> dict[str, Any]:
    """Which compiled twins of NanoSocket's kernels the servers under test load."""
    try:
        from nanosocket._speedups import enabled  # noqa: PLC0415 (optional: facts of the package under test)
    except ImportError:
        return {"enabled": False, "compiled": []}
    spec = importlib.util.find_spec("nanosocket._speedups")
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    compiled = sorted({path.name.split(".")[0] for folder in folders for path in Path(folder).glob("*.so")})
    return {"enabled": enabled(), "compiled": compiled}


def machine_facts(packages: list[str]) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_bytes": _mem_total(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "compiler": _compiler_version(),
        "packages": {name: _version(name) for name in packages},
        "nanosocket_speedups": _speedups(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "load_average": list(os.getloadavg()),
    }


def source_state() -> dict[str, Any]:
    """The commit measured, and whether src/ had uncommitted changes (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args],
                cwd=Path(__file__).resolve().parent.parent,
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_dirty": None if status is None else bool(status),
    }
