"""Worker processes on one port: ``nanosocket serve module:attr --workers 2`` and
``server.run(workers=2)`` as real processes on a real Redis, with real clients.

Every client asks its worker's pid (``whoami``), so the tests know which worker each client
landed on; the kernel spreads connections over the workers (SO_REUSEPORT), so a test opens
clients until it has one on each. Waits are bounded by hang guards only; nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_kit import Peer

from nanosocket import ConnectionClosed, InvalidHandshake, connect

HERE = Path(__file__).resolve().parent
V1 = "nanosocket.v1"
#: Bounds the start of a supervisor and its workers (fresh interpreters importing the app) on a
#: busy machine: a hang guard, not a measurement.
START_GUARD = 90.0
GUARD = 30.0
#: Most clients opened to find one on a given worker (each lands on either of two at random).
MAX_TRIES = 64


async def guarded(awaitable: Awaitable[Any], seconds: float = GUARD) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


class Supervised:
    """A supervisor process (and its workers, in the process group it leads) and its log."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.peers: list[Peer] = []

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str]) -> Supervised:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=HERE,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def line(self, pattern: str, after: int = 0, seconds: float = GUARD) -> re.Match[str]:
        """The first log line from index ``after`` on that matches ``pattern`` (waiting for it)."""

        async def find() -> re.Match[str]:
            while True:
                for line in self.lines[after:]:
                    if (match := re.search(pattern, line)) is not None:
                        return match
                if self._reader.done():
                    raise AssertionError(f"the supervisor ended without logging {pattern!r}:\n{self.log}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await guarded(find(), seconds)
        except TimeoutError:
            raise AssertionError(f"never logged {pattern!r}:\n{self.log}") from None

    async def ready(self) -> int:
        """Wait for every worker to be ready; the port they share."""
        await self.line(r"all \d+ workers ready", seconds=START_GUARD)
        return int((await self.line(r"starting \d+ workers on [^:]+:(\d+)")).group(1))

    async def exit_status(self) -> int:
        status: int = await guarded(self.process.wait())
        await guarded(self._reader)
        return status

    async def client(self, port: int) -> tuple[Peer, int]:
        """A v1 client past $connect, and the pid of the worker it landed on."""
        ws = await guarded(connect(f"ws://127.0.0.1:{port}/", subprotocols=[V1]))
        peer = Peer(ws)
        self.peers.append(peer)
        peer.emit("$connect", None)
        (answer,) = await peer.expect("$connect")
        peer.sid = answer["id"]
        return peer, await call(peer, "whoami")

    async def client_on(self, port: int, wanted: Callable[[int], bool]) -> tuple[Peer, int]:
        """A client on a worker whose pid is ``wanted`` (opening clients until one lands there)."""
        for _ in range(MAX_TRIES):
            peer, pid = await self.client(port)
            if wanted(pid):
                return peer, pid
            peer.ws.abort()
        raise AssertionError(f"no client of {MAX_TRIES} landed on the wanted worker")

    def kill(self) -> None:
        """SIGKILL the supervisor's whole process group (what the test started), if still there."""
        for peer in self.peers:
            peer.ws.abort()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def ended(self) -> None:
        """The process reaped and its log read to the end (every process of the group gone)."""
        await guarded(self.process.wait())
        await guarded(self._reader)


_acks = itertools.count(1)


async def call(peer: Peer, event: str, *args: Any) -> Any:
    """Emit ``event`` asking for an ack; the handler's return value."""
    ack = next(_acks)
    peer.emit(event, *args, ack=ack)
    answer = await peer.expect_ack(ack)
    return answer["data"][0]


def worker_env(redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NANOSOCKET_REDIS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    if redis_url is not None:
        env["NANOSOCKET_REDIS_URL"] = redis_url
        env["NANOSOCKET_REDIS_PREFIX"] = f"test-workers-{uuid.uuid4().hex[:12]}"
    env.update(extra)
    return env


@pytest.fixture
async def supervise() -> AsyncIterator[Callable[..., Awaitable[Supervised]]]:
    started: list[Supervised] = []

    async def start(argv: list[str], env: dict[str, str]) -> Supervised:
        supervised = await Supervised.start(argv, env)
        started.append(supervised)
        return supervised

    try:
        yield start
    finally:
        for supervised in started:
            supervised.kill()
            await supervised.ended()


def serve(target: str = "workers_app:server", *extra: str) -> list[str]:
    return ["-m", "nanosocket", "serve", target, "--workers", "2", "--port", "0", *extra]


async def expect_said(peer: Peer, event: str) -> list[Any]:
    return await guarded(peer.expect(event))


async def test_clients_on_different_workers_share_rooms(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    workers = await supervise(serve(), worker_env(redis_url))
    port = await workers.ready()
    alice, first = await workers.client(port)
    bob, second = await workers.client_on(port, lambda pid: pid != first)
    carol, third = await workers.client_on(port, lambda pid: pid == first)
    assert first != second and third == first  # alice and carol share a worker, bob is on the other
    for peer in (alice, bob, carol):
        await call(peer, "join", "lobby")
    outsider, _ = await workers.client_on(port, lambda pid: pid == second)  # not in the room

    # To the room but the sender: bob on the other worker and carol on alice's own get it ...
    alice.emit("say", "lobby", "hello from alice")
    assert await expect_said(bob, "said") == ["hello from alice", first]
    assert await expect_said(carol, "said") == ["hello from alice", first]
    # ... alice does not: the next thing she gets is the shout after it, which everyone gets.
    bob.emit("shout", "lobby", "hello all")
    for peer in (alice, bob, carol):
        assert await expect_said(peer, "shouted") == ["hello all", second]
    # From the other worker, except its sender: both clients of the first worker.
    bob.emit("say", "lobby", "from bob")
    assert await expect_said(alice, "said") == ["from bob", second]
    assert await expect_said(carol, "said") == ["from bob", second]
    alice.emit("shout", "lobby", "last")
    for peer in (alice, bob, carol):
        assert await expect_said(peer, "shouted") == ["last", first]
    # The outsider got none of it: its next message is the answer to its own call.
    assert await call(outsider, "whoami") == second
    assert "RedisAdapter from NANOSOCKET_REDIS_URL" in workers.log


async def test_a_killed_worker_is_restarted_and_serves_again(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    workers = await supervise(serve(), worker_env(redis_url))
    port = await workers.ready()
    stays, survivor = await workers.client(port)
    doomed, victim = await workers.client_on(port, lambda pid: pid != survivor)
    await call(stays, "join", "room")
    mark = len(workers.lines)

    os.kill(victim, signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        await guarded(doomed.ws.recv())
    crash = await workers.line(rf"worker (\d) \(pid {victim}\) was killed by SIGKILL .*restarting it", mark)
    index = crash.group(1)
    restarted = int((await workers.line(rf"worker {index} ready \(pid (\d+)\)", mark, START_GUARD)).group(1))
    assert restarted not in (victim, survivor)

    # The new worker serves, and shares the room with the worker that stayed.
    fresh, pid = await workers.client_on(port, lambda pid: pid == restarted)
    assert pid == restarted
    await call(fresh, "join", "room")
    fresh.emit("shout", "room", "back")
    assert await expect_said(stays, "shouted") == ["back", restarted]
    assert await expect_said(fresh, "shouted") == ["back", restarted]
    stays.emit("say", "room", "welcome back")
    assert await expect_said(fresh, "said") == ["welcome back", survivor]
    assert workers.process.returncode is None  # the supervisor itself lives on


async def test_a_client_of_a_killed_worker_recovers_its_session(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    # Recovery on, over the workers' RedisAdapter: a worker is killed (SIGKILL, it saves
    # nothing); its client comes back to whichever worker the kernel picks (the other one, or
    # the one restarted) and gets its id, rooms and what was sent to it meanwhile.
    workers = await supervise(serve("workers_app:recovering"), worker_env(redis_url))
    port = await workers.ready()
    ws = await guarded(connect(f"ws://127.0.0.1:{port}/", subprotocols=[V1]))
    doomed = Peer(ws)
    workers.peers.append(doomed)
    doomed.emit("$connect", None)
    (session,) = await doomed.expect("$connect")
    victim = await call(doomed, "join", "room")
    other, survivor = await workers.client_on(port, lambda pid: pid != victim)
    await call(other, "join", "room")
    other.emit("shout", "room", "before")
    # Received: the room change that made it a recipient is in Redis by then.
    envelope = await guarded(doomed.recv())
    assert envelope["data"] == ["before", survivor]
    offset = envelope["o"]
    assert await expect_said(other, "shouted") == ["before", survivor]

    os.kill(victim, signal.SIGKILL)
    with pytest.raises(ConnectionClosed):
        await guarded(doomed.ws.recv())
    other.emit("shout", "room", "while away")
    assert await expect_said(other, "shouted") == ["while away", survivor]

    for _ in range(MAX_TRIES):
        # The kernel may still hand a connection to the dead worker's socket: it is refused
        # before the handshake ends (the pid is not presented yet), and the client tries again.
        try:
            ws = await guarded(connect(f"ws://127.0.0.1:{port}/", subprotocols=[V1]))
        except (InvalidHandshake, OSError):
            await asyncio.sleep(0.05)
            continue
        break
    else:
        raise AssertionError("no worker completed a handshake")
    back = Peer(ws)
    workers.peers.append(back)
    back.emit("$connect", None, {"pid": session["pid"], "epoch": session["epoch"], "offset": offset})
    (answer,) = await back.expect("$connect")
    assert answer["recovered"] is True and answer["id"] == session["id"]
    assert await expect_said(back, "shouted") == ["while away", survivor]
    other.emit("shout", "room", "after")
    assert await expect_said(back, "shouted") == ["after", survivor]


async def test_sigterm_closes_clients_with_1001_and_the_supervisor_exits_0(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    # The target is a factory here: each worker calls it.
    workers = await supervise(serve("workers_app:create_server"), worker_env(redis_url))
    port = await workers.ready()
    peers = []
    first_peer, first = await workers.client(port)
    peers.append(first_peer)
    for wanted in (lambda pid: pid != first, lambda pid: pid == first, lambda pid: pid != first):
        peer, _ = await workers.client_on(port, wanted)
        peers.append(peer)

    workers.process.send_signal(signal.SIGTERM)
    for peer in peers:
        closed = await guarded(peer.closed())
        assert closed.code == 1001, closed
    assert await workers.exit_status() == 0
    assert "all workers stopped" in workers.log
    assert workers.log.count("closing 2 connections with 1001") == 2, workers.log


async def test_workers_stop_gracefully_when_the_supervisor_is_killed(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    workers = await supervise(serve(), worker_env(redis_url))
    port = await workers.ready()
    first_peer, first = await workers.client(port)
    second_peer, _ = await workers.client_on(port, lambda pid: pid != first)

    workers.process.send_signal(signal.SIGKILL)  # nothing left to tell the workers to stop
    for peer in (first_peer, second_peer):
        assert (await guarded(peer.closed())).code == 1001


async def test_a_worker_failing_at_start_is_restarted_with_a_growing_delay(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    workers = await supervise(serve("workers_app:failing_in_workers"), worker_env(redis_url))
    delays = []
    for attempt in range(1, 5):
        found = await workers.line(
            r"worker 0 \(pid \d+\) exited with status 1 after [\d.]+ s; restarting it in ([\d.]+) s"
            + (rf" \({attempt} early exits in a row\)" if attempt > 1 else "$"),
            seconds=START_GUARD,
        )
        delays.append(float(found.group(1)))
    assert delays == sorted(delays) and delays[-1] > delays[0], delays  # backing off, not spinning
    assert "this worker fails at start" in workers.log
    assert re.search(r"worker \d ready|workers ready", workers.log) is None
    workers.process.send_signal(signal.SIGTERM)
    await workers.exit_status()
    assert "stopping" in workers.log


async def test_more_than_one_worker_without_an_adapter_is_refused(
    supervise: Callable[..., Awaitable[Supervised]],
) -> None:
    refused = await supervise(serve(), worker_env(None))
    assert await refused.exit_status() == 2
    message = refused.log
    assert "nanosocket serve: 2 workers need an adapter that spans processes" in message
    assert "RedisAdapter(" in message and "NANOSOCKET_REDIS_URL" in message
    assert "starting" not in message  # no worker was started

    script = "import workers_app; workers_app.create_server().run(workers=2)"
    refused = await supervise(["-c", script], worker_env(None))
    assert await refused.exit_status() == 1
    assert "ConfigurationError: 2 workers need an adapter that spans processes" in refused.log


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module:server", "cannot import module 'no_such_module'"),
        ("workers_app:no_such_server", "module 'workers_app' has no attribute 'no_such_server'"),
        ("workers_app:os", "workers_app:os is module, not a NanoSocket"),
        ("workers_app:Socket", "cannot be called without arguments"),
        ("workers_app", "expected module:attr"),
    ],
)
async def test_a_target_that_is_no_server_is_refused(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str, target: str, message: str
) -> None:
    refused = await supervise(serve(target), worker_env(redis_url))
    assert await refused.exit_status() == 2
    assert "nanosocket serve: " in refused.log and message in refused.log, refused.log
    assert "starting" not in refused.log


async def test_run_workers_forks_workers_that_share_rooms(
    supervise: Callable[..., Awaitable[Supervised]], redis_url: str
) -> None:
    # The RedisAdapter is made in the parent, before the fork: each worker must still be a node
    # of its own (a node skips its own messages, so a shared id would lose every broadcast).
    script = (
        "import os, workers_app\n"
        "from nanosocket import RedisAdapter\n"
        "adapter = RedisAdapter(os.environ['APP_REDIS'], prefix=os.environ['APP_PREFIX'])\n"
        "workers_app.create_server(adapter=adapter).run(workers=2)\n"
    )
    env = worker_env(None, APP_REDIS=redis_url, APP_PREFIX=f"test-fork-{uuid.uuid4().hex[:12]}")
    workers = await supervise(["-c", script], env)
    port = await workers.ready()
    assert "(forked)" in workers.log
    alice, first = await workers.client(port)
    bob, second = await workers.client_on(port, lambda pid: pid != first)
    for peer in (alice, bob):
        await call(peer, "join", "lobby")
    alice.emit("say", "lobby", "across a fork")
    assert await expect_said(bob, "said") == ["across a fork", first]
    bob.emit("shout", "lobby", "both")
    for peer in (alice, bob):
        assert await expect_said(peer, "shouted") == ["both", second]

    workers.process.send_signal(signal.SIGINT)
    for peer in (alice, bob):
        assert (await guarded(peer.closed())).code == 1001
    assert await workers.exit_status() == 0
