"""Worker processes: one NanoSocket server per core, all on one port, under a supervisor.

``nanosocket serve module:attr --workers N`` and ``NanoSocket.run(workers=N)`` start N worker
processes. Each worker runs its own event loop (uvloop) and binds its own listening socket to the
same host and port with ``SO_REUSEPORT``; the kernel spreads new connections over them, so no
connection ever moves between workers and no sticky sessions are needed. The workers are nodes
of one cluster through the server's adapter: an adapter that spans processes (``RedisAdapter``),
or, when none is configured, a RedisAdapter on ``NANOSOCKET_REDIS_URL``; without either,
N > 1 is refused (``ConfigurationError``) because workers would not share rooms or broadcasts.

How a worker gets its server:

* ``serve module:attr`` **spawns** each worker: a fresh interpreter that imports ``module`` and
  takes ``attr`` (a NanoSocket, or a factory returning one) like the parent did. Nothing is
  inherited: no event loop, no Redis connection, no thread or lock of the parent's, whatever the
  module does at import; a restarted worker starts exactly like the first one did.
* ``server.run(workers=N)`` **forks** each worker from the calling process before any event loop
  runs there (a script's ``__main__`` cannot be imported again by name, and the server is often
  built under ``if __name__ == "__main__":``). The child gets a copy of the server as it was
  configured and creates its loop, listening socket and adapter connections itself; the parent
  keeps its pristine copy to fork replacements from. A RedisAdapter draws a new node id in each
  child.

The supervisor (the parent) reserves the port (a bound socket that does not listen, so ``port=0``
gets one port for all workers), restarts a worker that exits while it should run (logged, with a
backoff when it keeps dying soon after starting), and on SIGTERM or SIGINT asks every worker to
stop (SIGTERM): a worker stops accepting, closes its clients with 1001, waits for them (bounded by
``close_timeout``) and its adapter, and exits 0. Workers still running after ``shutdown_timeout``
are killed. The supervisor returns 0 when every worker stopped cleanly. A worker whose
supervisor is gone (killed with SIGKILL) stops the same graceful way.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, Final

import uvloop

from .adapters.memory import MemoryAdapter
from .errors import ConfigurationError
from .server import NanoSocket

__all__ = [
    "REDIS_PREFIX_ENV",
    "REDIS_URL_ENV",
    "Supervisor",
    "WorkerSettings",
    "load_server",
    "run_forked",
    "run_spawned",
    "worker_adapter_url",
]

logger = logging.getLogger("nanosocket.workers")

#: The Redis the workers share when the server has no adapter of its own.
REDIS_URL_ENV: Final = "NANOSOCKET_REDIS_URL"
#: The channel prefix of that RedisAdapter (default "nanosocket"): apps sharing a Redis differ in it.
REDIS_PREFIX_ENV: Final = "NANOSOCKET_REDIS_PREFIX"

#: A worker that exits sooner than this after it started counts as crashing at start.
STABLE_AFTER: Final = 5.0
#: The first restart delay of a worker crashing at start, doubled for each crash in a row ...
RESTART_DELAY: Final = 0.1
#: ... up to this.
RESTART_DELAY_MAX: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every worker is told: where to listen, and the Redis of its adapter (when it takes
    one from the environment). Plain values: they travel to spawned workers pickled."""

    host: str
    port: int
    redis_url: str | None = None
    redis_prefix: str = "nanosocket"
    log_level: str = "INFO"


# --------------------------------------------------------------------------------- the target


def load_server(target: str) -> NanoSocket:
    """The server ``module:attr`` names: ``attr`` (dotted for nested attributes) is a NanoSocket,
    or a callable taking no arguments that returns one (a factory). Raises ConfigurationError
    with what is wrong (the module cannot be imported, no such attribute, not a server)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected module:attr (e.g. myapp.main:server), got {target!r}")
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(found, NanoSocket) and callable(found):
        try:
            inspect.signature(found).bind()
        except TypeError as exc:
            raise ConfigurationError(
                f"{target} is a callable that cannot be called without arguments ({exc}): name a"
                " NanoSocket, or a factory taking no arguments"
            ) from None
        except ValueError:  # no signature to check (some builtins): let the call tell
            pass
        found = found()
    if not isinstance(found, NanoSocket):
        raise ConfigurationError(
            f"{target} is {type(found).__name__}, not a NanoSocket (nor a factory returning one)"
        )
    return found


def worker_adapter_url(server: NanoSocket, workers: int) -> str | None:
    """The ``NANOSOCKET_REDIS_URL`` the workers of ``server`` must take a RedisAdapter from, or
    None when they need none (one worker, or an adapter that spans processes is configured).
    Raises ConfigurationError when N > 1 workers would have nothing to share rooms through."""
    if workers <= 1 or type(server.adapter) is not MemoryAdapter:
        return None
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    if url:
        return url
    raise ConfigurationError(
        f"{workers} workers need an adapter that spans processes, and this server has only the"
        " in-process one: each worker would have its own rooms, and a broadcast would reach only"
        " the clients of the worker it starts on. Configure one,"
        " NanoSocket(adapter=RedisAdapter('redis://host:6379/0')), or set"
        f" {REDIS_URL_ENV}=redis://host:6379/0 for the workers to use"
        f" (and {REDIS_PREFIX_ENV} to keep apps sharing that Redis apart)."
    )


def _settings(server: NanoSocket, workers: int, host: str, port: int, log_level: str) -> WorkerSettings:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    return WorkerSettings(
        host=host,
        port=port,
        redis_url=worker_adapter_url(server, workers),
        redis_prefix=os.environ.get(REDIS_PREFIX_ENV, "").strip() or "nanosocket",
        log_level=log_level,
    )


# --------------------------------------------------------------------------------- a worker


def _configure_logging(level: str, *, force: bool = False) -> None:
    """Log lines carry the process id (the supervisor's or a worker's); ``force`` replaces a
    configuration already there (a spawned worker's interpreter is fresh anyway)."""
    logging.basicConfig(
        level=level.upper(), format="%(levelname)s [%(process)d] %(name)s: %(message)s", force=force
    )


def _serve(server: NanoSocket, settings: WorkerSettings, index: int, ready: Connection) -> None:
    """The body of a worker process: serve until SIGTERM/SIGINT, then close gracefully."""
    # A forked worker inherits the supervisor's handlers and wake-up descriptor: drop them.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if settings.redis_url is not None:
        from .adapters.redis import RedisAdapter  # noqa: PLC0415 - loads redis, only when used

        server.set_adapter(RedisAdapter(settings.redis_url, prefix=settings.redis_prefix))

    async def main() -> None:
        # Installed first, and kept while closing: a signal during listen() is not lost, and a
        # second one (Ctrl-C reaches the whole process group, then the supervisor's SIGTERM
        # follows) does not cut the graceful close short.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # A worker whose supervisor is gone (killed with SIGKILL) stops too, the same way.
        supervisor = multiprocessing.parent_process()
        if supervisor is not None:
            loop.add_reader(supervisor.sentinel, stop.set)
        # SIGUSR1 logs what the worker is waiting for (the supervisor sends it before killing a
        # worker that did not stop in time).
        loop.add_signal_handler(signal.SIGUSR1, _log_tasks, index)
        await server.listen(settings.port, settings.host, reuse_port=True)
        logger.info(
            "worker %d (pid %d) listening on %s:%d, adapter %s",
            index,
            os.getpid(),
            settings.host,
            settings.port,
            type(server.adapter).__name__,
        )
        ready.send(os.getpid())
        ready.close()
        await stop.wait()
        logger.info(
            "worker %d (pid %d) stopping: closing %d connections with 1001",
            index,
            os.getpid(),
            server.connection_count,
        )
        progress = asyncio.ensure_future(_report_closing(server, index))
        try:
            await server.close()
        finally:
            progress.cancel()
        logger.info("worker %d (pid %d) stopped", index, os.getpid())

    uvloop.run(main())


def _log_tasks(index: int) -> None:
    """Log every pending task of this worker's loop with where it waits."""
    tasks = asyncio.all_tasks()
    logger.error("worker %d (pid %d): %d pending tasks", index, os.getpid(), len(tasks))
    for task in tasks:
        where: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None and len(where) < 12:  # the chain of awaits, outermost first
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        logger.error(
            "worker %d (pid %d): %s waits in %s", index, os.getpid(), task.get_name(), " -> ".join(where)
        )


async def _report_closing(server: NanoSocket, index: int, every: float = 5.0) -> None:
    """Log every ``every`` seconds how many clients a closing worker still waits for."""
    while True:
        await asyncio.sleep(every)
        logger.info(
            "worker %d (pid %d) still closing: %d connections left",
            index,
            os.getpid(),
            server.connection_count,
        )


def _spawned_worker(target: str, settings: WorkerSettings, index: int, ready: Connection) -> None:
    _configure_logging(settings.log_level, force=True)
    _serve(load_server(target), settings, index, ready)


def _forked_worker(server: NanoSocket, settings: WorkerSettings, index: int, ready: Connection) -> None:
    # The logging configuration is the parent's, inherited.
    _serve(server, settings, index, ready)


# ----------------------------------------------------------------------------- the supervisor

#: Starts worker ``index`` with the write end of its readiness pipe; returns the started process.
WorkerStarter = Callable[[int, Connection], BaseProcess]


def _process_starter(
    context: SpawnContext | ForkContext, worker: Callable[..., None], first: object
) -> Callable[[WorkerSettings], WorkerStarter]:
    """What ``_supervise`` calls to get its worker starter: processes of ``context`` (spawned or
    forked) that run ``worker(first, settings, index, ready)``."""

    def starter(settings: WorkerSettings) -> WorkerStarter:
        def start(index: int, ready: Connection) -> BaseProcess:
            process = context.Process(
                target=worker, args=(first, settings, index, ready), name=f"nanosocket-worker-{index}"
            )
            process.start()
            return process

        return start

    return starter


class _Slot:
    """One worker position: the process filling it, and its restart history."""

    __slots__ = ("failures", "index", "is_ready", "process", "ready", "restart_at", "started_at")

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        #: The read end of the pipe the worker says it listens on; None once it has (or died).
        self.ready: Connection | None = None
        #: Whether the running worker said it listens.
        self.is_ready = False
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket to host:port: the port stays ours while
    workers come and go, ``port=0`` becomes one port for all, and a port another program holds
    is reported before any worker starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot resolve host {host!r}: {exc}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class Supervisor:
    """Runs ``count`` workers until SIGTERM/SIGINT: restarts the ones that die (with a backoff
    while they die soon after starting), then stops them all within ``shutdown_timeout``."""

    def __init__(self, start: WorkerStarter, count: int, *, shutdown_timeout: float = 30.0) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigurationError(f"workers must be a positive integer, got {count!r}")
        if isinstance(shutdown_timeout, bool) or not isinstance(shutdown_timeout, (int, float)):
            raise ConfigurationError(
                f"shutdown_timeout must be a number of seconds, got {shutdown_timeout!r}"
            )
        if not shutdown_timeout > 0:
            raise ConfigurationError(f"shutdown_timeout must be positive, got {shutdown_timeout!r}")
        self._start_worker = start
        self._slots = [_Slot(index) for index in range(count)]
        self.shutdown_timeout = float(shutdown_timeout)
        #: How many times a worker was started again after it died.
        self.restarts = 0
        self._stopping: int | None = None
        self._all_ready_logged = False

    # ------------------------------------------------------------------ running

    def run(self) -> int:
        """Start the workers and supervise them until a signal; the exit status (0: clean)."""
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_write.fileno())
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self._slots:
                self._start(slot)
            while self._stopping is None:
                self._step(wake_read)
            return self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            wake_read.close()
            wake_write.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping is None:
            self._stopping = signum

    def _start(self, slot: _Slot) -> None:
        reader, writer = multiprocessing.Pipe(duplex=False)
        slot.restart_at = None
        slot.is_ready = False
        slot.started_at = time.monotonic()
        try:
            slot.process = self._start_worker(slot.index, writer)
        finally:
            writer.close()
        slot.ready = reader

    def _step(self, wake: socket.socket) -> None:
        now = time.monotonic()
        due = [slot.restart_at for slot in self._slots if slot.restart_at is not None]
        timeout = max(0.0, min(due) - now) if due else None
        watched: list[Connection | socket.socket | int] = [wake]
        for slot in self._slots:
            if slot.process is not None:
                watched.append(slot.process.sentinel)
            if slot.ready is not None:
                watched.append(slot.ready)
        fired = wait(watched, timeout)
        if wake in fired:
            try:
                wake.recv(64)
            except BlockingIOError:
                pass
        for slot in self._slots:
            if slot.ready is not None and slot.ready in fired:
                self._ready(slot)
            process = slot.process
            if process is not None and process.sentinel in fired:
                self._exited(slot, process)
        if self._stopping is not None:
            return
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is not None and slot.restart_at <= now:
                self.restarts += 1
                self._start(slot)

    def _ready(self, slot: _Slot) -> None:
        assert slot.ready is not None
        try:
            slot.ready.recv()
        except (EOFError, OSError):
            slot.ready.close()
            slot.ready = None
            return  # it died before it was ready: its sentinel says so
        slot.ready.close()
        slot.ready = None
        slot.is_ready = True
        process = slot.process
        logger.info("worker %d ready (pid %s)", slot.index, process.pid if process else "?")
        if not self._all_ready_logged and all(s.is_ready for s in self._slots):
            self._all_ready_logged = True
            pids = ", ".join(str(s.process.pid) for s in self._slots if s.process is not None)
            logger.info("all %d workers ready (pids %s)", len(self._slots), pids)

    def _exited(self, slot: _Slot, process: BaseProcess) -> None:
        process.join()
        slot.process = None
        slot.is_ready = False
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        if self._stopping is not None:
            return
        lived = time.monotonic() - slot.started_at
        if lived >= STABLE_AFTER:
            slot.failures = 0
            delay = 0.0
        else:
            slot.failures += 1
            delay = min(RESTART_DELAY * 2 ** (slot.failures - 1), RESTART_DELAY_MAX)
        logger.error(
            "worker %d (pid %s) %s after %.1f s; restarting it in %.1f s%s",
            slot.index,
            process.pid,
            _describe_exit(process.exitcode),
            lived,
            delay,
            f" ({slot.failures} early exits in a row)" if slot.failures > 1 else "",
        )
        slot.restart_at = time.monotonic() + delay

    # ------------------------------------------------------------------ stopping

    def _shutdown(self) -> int:
        signum = self._stopping
        name = signal.Signals(signum).name if signum is not None else "stop"
        running = [(slot.process, slot.is_ready) for slot in self._slots if slot.process is not None]
        logger.info("%s: stopping %d workers (deadline %.0f s)", name, len(running), self.shutdown_timeout)
        for process, _ in running:
            if process.is_alive() and process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.shutdown_timeout
        status = 0
        for process, was_ready in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                logger.error(
                    "worker pid %s still running after %.0f s: killed (its pending tasks follow)",
                    process.pid,
                    self.shutdown_timeout,
                )
                if process.pid is not None:
                    try:
                        os.kill(process.pid, signal.SIGUSR1)
                    except ProcessLookupError:
                        pass
                    process.join(1.0)
                process.kill()
                process.join()
                status = 1
            elif process.exitcode == -signal.SIGTERM and not was_ready:
                pass  # stopped while it was still starting (importing), before it could listen
            elif process.exitcode != 0:
                logger.error("worker pid %s %s while stopping", process.pid, _describe_exit(process.exitcode))
                status = 1
        logger.info("all workers stopped" if status == 0 else "workers stopped, not all cleanly")
        return status


# ----------------------------------------------------------------------------- entry points


def _supervise(
    server: NanoSocket,
    workers: int,
    *,
    host: str | None,
    port: int | None,
    shutdown_timeout: float,
    log_level: str,
    starter: Callable[[WorkerSettings], WorkerStarter],
    how: str,
) -> int:
    host = server.host if host is None else host
    reserved = _reserve(host, server.port if port is None else port)
    try:
        settings = _settings(server, workers, host, int(reserved.getsockname()[1]), log_level)
        supervisor = Supervisor(starter(settings), workers, shutdown_timeout=shutdown_timeout)
        logger.info(
            "starting %d workers on %s:%d (%s)%s",
            workers,
            settings.host,
            settings.port,
            how,
            f", RedisAdapter from {REDIS_URL_ENV}" if settings.redis_url else "",
        )
        return supervisor.run()
    finally:
        reserved.close()


def run_spawned(
    target: str,
    workers: int,
    *,
    host: str | None = None,
    port: int | None = None,
    shutdown_timeout: float = 30.0,
    log_level: str = "INFO",
) -> int:
    """``nanosocket serve module:attr --workers N``: supervise N spawned workers, each importing
    ``module`` afresh. The parent loads the target too, once, to check it (and read its host and
    port when not given) before any worker starts. Returns the exit status."""
    server = load_server(target)
    starter = _process_starter(multiprocessing.get_context("spawn"), _spawned_worker, target)
    return _supervise(
        server,
        workers,
        host=host,
        port=port,
        shutdown_timeout=shutdown_timeout,
        log_level=log_level,
        starter=starter,
        how=f"spawned, {target}",
    )


def run_forked(
    server: NanoSocket,
    workers: int,
    *,
    host: str | None = None,
    port: int | None = None,
    shutdown_timeout: float = 30.0,
    log_level: str = "INFO",
) -> int:
    """``server.run(workers=N)``: supervise N workers forked from this process (which must not
    be running an event loop). Returns the exit status."""
    if sys.platform == "win32":  # pragma: no cover - SO_REUSEPORT and fork are POSIX
        raise ConfigurationError("worker processes need fork and SO_REUSEPORT (Linux, BSD, macOS)")
    if server.listening:
        raise RuntimeError(
            "run(workers=N) starts the workers itself: call it on a server that is not listening"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run(workers=N) forks the workers: call it where no event loop is running")
    _configure_logging(log_level)
    starter = _process_starter(multiprocessing.get_context("fork"), _forked_worker, server)
    return _supervise(
        server,
        workers,
        host=host,
        port=port,
        shutdown_timeout=shutdown_timeout,
        log_level=log_level,
        starter=starter,
        how="forked",
    )
