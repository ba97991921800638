"""Runs one scenario once against one server: start the server pinned to its core, drive the load
generator pinned to the other, sample the server's CPU and memory, stop the server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .driver import LoadgenError, LoadgenProcess
from .driver import run as run_loadgen
from .procstat import ProcessSampler
from .scenarios import Scenario, Timing
from .servers import Server

__all__ = ["RunError", "RunOptions", "run_fanout", "run_once"]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent


class RunError(RuntimeError):
    """A run could not be carried out (the server did not start, or died)."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    timing: Timing
    #: Pin the server to core 0 and the load generator to core 1 (needs two cores and taskset).
    pin: bool
    #: Where server output and load generator progress of each run are kept.
    raw_dir: Path

    @property
    def server_cpu(self) -> int | None:
        return 0 if self.pin else None

    @property
    def loadgen_cpu(self) -> int | None:
        return 1 if self.pin else None


def can_pin() -> bool:
    return len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server under test, started in its own process group so that all of it can be stopped."""

    def __init__(self, server: Server, port: int, cpu: int | None, log_path: Path) -> None:
        command = server.command(HOST, port)
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        self.server = server
        self.port = port
        self.command = command
        self._log = log_path.open("w", encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(server.env())
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        """Return once the server accepts TCP connections."""
        deadline = time.monotonic() + self.server.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError(f"{self.server.name} exited with {self.proc.returncode} while starting")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RunError(
            f"{self.server.name} did not accept connections within {self.server.startup_timeout} s"
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RunError(f"{self.server.name} died during the run (exit code {self.proc.returncode})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _latency_metrics(latency: dict[str, Any]) -> dict[str, float]:
    return {f"{key}_us": float(latency[key]) for key in ("p50", "p90", "p99", "p999") if key in latency}


def _measure(
    args: list[str], proc: ServerProcess, options: RunOptions, log: Path, timeout: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the load generator once while sampling the server; return its report and the server's
    CPU, the other load on its core and its memory over the load generator's measured window."""
    sampler = ProcessSampler(proc.pid).start()

    def on_event(name: str) -> None:
        if name in ("measure-start", "measure-end"):
            sampler.mark(name)

    try:
        loadgen = LoadgenProcess(args, cpu=options.loadgen_cpu, on_event=on_event, stderr_log=log)
        report = loadgen.result(timeout=timeout)
    finally:
        sampler.stop()
    proc.check_alive()
    metrics: dict[str, float] = {}
    server_cpu = sampler.cpu_pct("measure-start", "measure-end")
    if server_cpu is not None:
        metrics["server_cpu_pct"] = server_cpu
        core = options.server_cpu
        busy = sampler.core_busy_pct("measure-start", "measure-end", core) if core is not None else None
        if busy is not None:
            # Whatever else ran on the server's core during the measurement (noise from other work).
            metrics["others_cpu_pct"] = max(0.0, busy - server_cpu)
    rss = sampler.rss_at("measure-end")
    if rss is not None:
        metrics["server_rss_mb"] = rss / 1e6
    metrics["server_rss_peak_mb"] = sampler.peak_rss / 1e6
    return report, metrics


def _per_message(metrics: dict[str, float], rate: float) -> None:
    """Server CPU µs per message (per delivery in fan-out), from its CPU share and the rate."""
    if "server_cpu_pct" in metrics and rate > 0:
        metrics["server_us_per_msg"] = metrics["server_cpu_pct"] / 100 / rate * 1e6


def _run_echo(
    scenario: Scenario, server: Server, proc: ServerProcess, options: RunOptions, log: Path
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    timing = options.timing
    dialect = server.dialect
    [args] = scenario.loadgen_args(timing)
    args += ["--port", str(proc.port), "-q", *dialect.loadgen_args()]
    if scenario.request == "call":
        if dialect.call is None or dialect.ack_prefix is None:
            raise RunError(f"{server.name} has no acknowledged requests")
        args += ["-t", dialect.call, "--ack-prefix", dialect.ack_prefix]
    else:
        args += ["-t", dialect.echo or "{p}"]
    report, server_metrics = _measure(args, proc, options, log, timing.warmup + timing.duration + 60)
    metrics: dict[str, float] = {
        "rate": float(report["msgs_per_s"]),
        "payload_mb_s": float(report["bytes_per_s"]) / 1e6,
        "loadgen_cpu_pct": float(report["client_cpu_pct"]),
        "errors": float(report["errors"]["total"]),
        **_latency_metrics(report["latency_us"]),
        **server_metrics,
    }
    if "acks_ok" in report:
        metrics["acks_ok"] = float(report["acks_ok"])
    _per_message(metrics, metrics["rate"])
    return metrics, [report]


def run_fanout(
    scenario: Scenario, server: Server, proc: ServerProcess, options: RunOptions, log: Path
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    timing = options.timing
    dialect = server.dialect
    if dialect.join is None or dialect.publish is None:
        raise RunError(f"{server.name} has no room protocol")
    [args] = scenario.loadgen_args(timing)
    args += [
        "--port", str(proc.port),
        "--join", dialect.join,
        "--join-ack", str(dialect.join_acks),
        "-t", dialect.publish,
        "-q",
        *dialect.loadgen_args(),
    ]  # fmt: skip
    timeout = timing.warmup + timing.duration + 120
    report, server_metrics = _measure(args, proc, options, log, timeout)
    metrics: dict[str, float] = {
        "deliveries_per_s": float(report["deliveries_per_s"]),
        "publishes_per_s": float(report["publishes_per_s"]),
        "delivery_ratio": float(report["delivery_ratio"]),
        "payload_mb_s": float(report["bytes_per_s"]) / 1e6,
        "subscribers_joined": float(report["subscribers_joined"]),
        "loadgen_cpu_pct": float(report["client_cpu_pct"]),
        "errors": float(report["errors"]["total"]),
        **_latency_metrics(report["latency_us"]),
        **server_metrics,
    }
    _per_message(metrics, metrics["deliveries_per_s"])
    rtt = report.get("publisher_rtt_us", {})
    if "p50" in rtt:
        metrics["publisher_rtt_p50_us"] = float(rtt["p50"])
    return metrics, [report]


def _median_rss(sampler: ProcessSampler, samples: int = 5, interval: float = 0.1) -> int:
    values = []
    for _ in range(samples):
        values.append(sampler.rss())
        time.sleep(interval)
    return int(statistics.median(values))


def _run_idle(
    scenario: Scenario, server: Server, proc: ServerProcess, options: RunOptions, log: Path
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    timing = options.timing
    common = ["--port", str(proc.port), "-q", *server.dialect.loadgen_args()]
    # A few connections first, so that one-time costs (imports, first buffers) are not charged to N.
    run_loadgen(["--mode", "conns", "-c", "20", "--hold", "0", *common], cpu=options.loadgen_cpu, timeout=60)
    time.sleep(0.5)
    sampler = ProcessSampler(proc.pid)
    rss_before = _median_rss(sampler)
    loadgens = [
        LoadgenProcess([*args, *common], cpu=options.loadgen_cpu, stderr_log=log)
        for args in scenario.loadgen_args(timing)
    ]
    try:
        ramp_bound = 60 + timing.idle_conns / 200
        for loadgen in loadgens:
            if not loadgen.wait_event("ready", ramp_bound):
                raise RunError(f"the load generator did not open its connections within {ramp_bound:.0f} s")
        time.sleep(1.0)  # let the server settle after the last handshakes
        proc.check_alive()
        rss_held = _median_rss(sampler)
        for loadgen in loadgens:
            loadgen.release()
        reports = [loadgen.result(timeout=60) for loadgen in loadgens]
    finally:
        for loadgen in loadgens:
            loadgen.kill()
    established = sum(int(r["connections"]["established"]) for r in reports)
    held = sum(int(r["connections"]["open_at_end"]) for r in reports)
    metrics: dict[str, float] = {
        "established": float(established),
        "held_at_end": float(held),
        "failed": float(sum(int(r["connections"]["failed"]) for r in reports)),
        "rss_before_mb": rss_before / 1e6,
        "rss_held_mb": rss_held / 1e6,
        "ramp_s": max(float(r["ramp_s"]) for r in reports),
        "loadgen_cpu_pct": max(float(r["client_cpu_pct"]) for r in reports),
        "errors": float(sum(int(r["errors"]["total"]) for r in reports)),
    }
    if established:
        metrics["rss_per_conn_b"] = (rss_held - rss_before) / established
    return metrics, reports


def run_once(scenario: Scenario, server: Server, options: RunOptions, repeat: int) -> dict[str, Any]:
    """One run; never raises for a failed run: the record says what went wrong."""
    tag = f"{scenario.name}.{server.name}.{repeat}"
    options.raw_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "server": server.name,
        "repeat": repeat,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average": list(os.getloadavg()),
        "ok": False,
        "error": None,
        "metrics": {},
        "loadgen": [],
    }
    proc = ServerProcess(server, free_port(), options.server_cpu, options.raw_dir / f"{tag}.server.log")
    record["command"] = proc.command
    try:
        proc.wait_ready()
        time.sleep(0.3)
        log = options.raw_dir / f"{tag}.loadgen.log"
        runner = {"idle": _run_idle, "fanout": run_fanout, "echo": _run_echo}[scenario.kind]
        metrics, reports = runner(scenario, server, proc, options, log)
        record["metrics"] = metrics
        record["loadgen"] = reports
        errors = int(metrics.get("errors", 0))
        lost = scenario.kind == "fanout" and metrics["delivery_ratio"] < 1.0
        record["ok"] = errors == 0 and not lost
        if errors:
            record["error"] = f"the load generator counted {errors} error(s)"
        elif lost:
            record["error"] = f"delivery ratio {metrics['delivery_ratio']:.4f}: broadcasts were lost"
    except (RunError, LoadgenError, OSError, KeyError, ValueError) as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        proc.stop()
    return record
