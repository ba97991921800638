"""Smoke test of the benchmark suite's load generator: it builds, and it measures what it claims.

A behaviour check, not a speed threshold: the C load generator is built the way ``make bench``
builds it, runs ``echo`` for about a second and a 50-connection ``conns`` run against
``nanosocket echo-server``, a one-second ``fanout`` run against the NanoSocket event server the suite
measures (``benchmarks/apps/nanosocket_events.py``), and talks to a deliberately awkward test server
(fragmented replies, 16- and 64-bit lengths, pings, heartbeat frames, a room broadcast) to check its
client side. It also checks numbered acks (``{a}``, ``--ack-prefix``) against the event server, the
Socket.IO dialect against a small fake Socket.IO server, the C calibration server (refserver), and
that the driver of the instruction counts (benchmarks/instructions.py) has every message handled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def loadgen() -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.driver", "build"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    binary = Path(result.stdout.strip())
    assert binary.is_file()
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def _run(binary: Path, *args: str, timeout: float = 30) -> dict[str, Any]:
    result = subprocess.run(
        [str(binary), *args, "-q"], capture_output=True, text=True, check=False, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def echo_server() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanosocket", "echo-server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def event_server() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "apps" / "nanosocket_events.py"), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_selftest(loadgen: Path) -> None:
    result = subprocess.run([str(loadgen), "--selftest"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"selftest": True}


def test_echo_against_nanosocket(loadgen: Path, echo_server: int) -> None:
    report = _run(
        loadgen,
        *("--mode", "echo", "--port", str(echo_server), "-c", "4", "-w", "4", "-s", "100"),
        *("-d", "1", "--warmup", "0.2"),
    )
    assert report["mode"] == "echo"
    for field in ("params", "measured_s", "connections", "client_cpu_pct", "sent", "replies"):
        assert field in report
    for field in ("msgs_per_s", "bytes_per_s", "wire_rx_bytes_per_s", "wire_tx_bytes_per_s"):
        assert report[field] > 0
    assert report["replies"] > 0
    assert report["connections"] == {"target": 4, "established": 4, "failed": 0, "open_at_end": 4}
    latency = report["latency_us"]
    assert latency["samples"] == report["replies"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"] <= latency["max"]
    assert report["bytes_per_s"] == pytest.approx(report["msgs_per_s"] * 100, rel=1e-4)
    assert report["errors"]["total"] == 0, report["errors"]
    assert 0 <= report["client_cpu_pct"] < 200


def test_conns_against_nanosocket(loadgen: Path, echo_server: int) -> None:
    report = _run(
        loadgen,
        *("--mode", "conns", "--port", str(echo_server), "-c", "50"),
        *("--hold", "0.5", "--conns-msg", "hi"),
    )
    assert report["mode"] == "conns"
    assert report["connections"]["established"] == 50
    assert report["connections"]["failed"] == 0
    assert report["connections"]["open_at_end"] == 50
    assert report["sent"] == 50
    assert report["replies"] == 50
    assert report["handshake_us"]["samples"] == 50
    assert report["errors"]["total"] == 0, report["errors"]


def test_fanout_against_nanosocket_event_server(loadgen: Path, event_server: int) -> None:
    subscribers = 20
    report = _run(
        loadgen,
        *("--mode", "fanout", "--port", str(event_server), "-c", str(subscribers), "--pubs", "1"),
        *("-w", "2", "-s", "100", "-d", "1", "--warmup", "0.2"),
        *("--join", '{"event":"join","data":["room1"]}', "--join-ack", "1"),
        *("--template", '{"event":"publish","data":["room1","{p}"]}'),
    )
    assert report["mode"] == "fanout"
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["subscribers_joined"] == subscribers
    assert report["publishers_joined"] == 1
    assert report["publishes"] > 0
    # Every publish stamped inside the measured second reached every subscriber.
    assert report["deliveries"] == report["expected"] == report["publishes"] * subscribers
    assert report["delivery_ratio"] == 1.0
    assert report["unstamped"] == 0
    assert report["latency_us"]["samples"] == report["deliveries"]
    assert report["publisher_rtt_us"]["samples"] > 0


def test_event_echo_against_nanosocket_event_server(loadgen: Path, event_server: int) -> None:
    report = _run(
        loadgen,
        *("--mode", "echo", "--port", str(event_server), "-c", "4", "-w", "4", "-s", "100"),
        *("-d", "0.5", "--warmup", "0.1", "-t", '{"event":"echo","data":["{p}"]}'),
    )
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["replies"] > 0
    # A reply is the echo event around the payload: {"event":"echo","data":["<100 B>"]}.
    reply = len('{"event":"echo","data":[""]}') + 100
    assert report["bytes_per_s"] == pytest.approx(report["msgs_per_s"] * reply, rel=1e-4)


# ------------------------------------------------------------------ an awkward server


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


class _Awkward(socketserver.ThreadingTCPServer):
    """Echoes as a heartbeat frame, a ping and the message in three fragments (7-, 16- and, for big
    messages, 64-bit lengths); 'join' is acknowledged, 'pub ...' is broadcast to everyone joined."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.room: list[tuple[socket.socket, threading.Lock]] = []
        self.pongs = 0


class _Handler(socketserver.BaseRequestHandler):
    server: _Awkward

    def handle(self) -> None:
        sock: socket.socket = self.request
        reader = sock.makefile("rb")
        send_lock = threading.Lock()
        key = b""
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        while True:
            head = reader.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", reader.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", reader.read(8))[0]
            mask = reader.read(4)
            masked = reader.read(length)
            key_stream = (mask * (length // 4 + 1))[:length]
            value = int.from_bytes(masked, "big") ^ int.from_bytes(key_stream, "big")
            payload = value.to_bytes(length, "big")
            if opcode == 0x8:
                with send_lock:
                    sock.sendall(_frame(0x8, payload[:2]))
                return
            if opcode == 0xA:
                with self.server.lock:
                    self.server.pongs += 1
                continue
            if payload.startswith(b"join"):
                with self.server.lock:
                    self.server.room.append((sock, send_lock))
                with send_lock:
                    sock.sendall(_frame(0x1, b"joined"))
            elif payload.startswith(b"pub"):
                with self.server.lock:
                    members = list(self.server.room)
                for member, member_lock in members:
                    with member_lock:
                        member.sendall(_frame(0x1, payload))
            else:
                first, middle, rest = payload[:10], payload[10:310], payload[310:]
                data = (
                    _frame(0x1, b"HB:heartbeat")
                    + _frame(0x9, b"are you there")
                    + _frame(0x1, first, fin=False)
                    + _frame(0x0, middle, fin=False)
                    + _frame(0x0, rest, fin=True)
                )
                with send_lock:
                    sock.sendall(data)


_Served = TypeVar("_Served", bound=socketserver.BaseServer)


def _serving(server: _Served) -> Iterator[_Served]:
    """Serve ``server`` from a thread for the test using it, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def awkward() -> Iterator[_Awkward]:
    yield from _serving(_Awkward())


def test_fragments_big_frames_pings_and_ignored_frames(loadgen: Path, awkward: _Awkward) -> None:
    port = str(awkward.server_address[1])
    report = _run(
        loadgen,
        *("--mode", "echo", "--port", port, "-c", "2", "-w", "2", "-s", "70000"),
        *("-d", "1", "--warmup", "0.1", "--ignore-prefix", "HB:"),
    )
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["replies"] > 0
    assert report["ignored"] > 0
    # A reply is the whole reassembled message, not a fragment.
    assert report["bytes_per_s"] == pytest.approx(report["msgs_per_s"] * 70000, rel=1e-4)
    assert awkward.pongs > 0


def test_fanout_delivers_everything(loadgen: Path, awkward: _Awkward) -> None:
    port = str(awkward.server_address[1])
    report = _run(
        loadgen,
        *("--mode", "fanout", "--port", port, "-c", "5", "--pubs", "1", "-w", "2", "-s", "40"),
        *("--join", "join", "--join-ack", "1", "--template", "pub {p}", "-d", "1", "--warmup", "0.1"),
    )
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["subscribers_joined"] == 5
    assert report["publishers_joined"] == 1
    assert report["publishes"] > 0
    assert report["deliveries"] == report["expected"] == report["publishes"] * 5
    assert report["delivery_ratio"] == 1.0
    assert report["latency_us"]["samples"] == report["deliveries"]


# ------------------------------------------------------------------ acks, Socket.IO, calibration


def test_acks_are_numbered_and_checked(loadgen: Path, event_server: int) -> None:
    template = '{"event":"call","data":["{p}"],"ack":{a}}'
    common = ("--mode", "echo", "--port", str(event_server), "-c", "3", "-w", "4", "-s", "50", "-t", template)
    report = _run(loadgen, *common, "-d", "0.5", "--warmup", "0.1", "--ack-prefix", '{"ack":')
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["replies"] > 0
    # Every reply was the ack of the oldest request in flight, warm-up and drain included.
    assert report["acks_ok"] >= report["replies"]
    # A wrong prefix makes every reply a mismatch: the check is real.
    wrong = _run(loadgen, *common, "-d", "0.3", "--warmup", "0", "--ack-prefix", '{"ack":9999')
    assert wrong["errors"]["ack_mismatch"] > 0
    assert wrong["acks_ok"] == 0


class _FakeSocketIO(socketserver.ThreadingTCPServer):
    """Engine.IO v4 / Socket.IO v5 over a WebSocket, as much as the load generator uses: the open
    packet and a ping on connection, ``40`` answered ``40{...}``, events echoed, ``42N[...]``
    answered by the ack ``43N[...]``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SocketIOHandler)
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.pongs = 0
        self.connects = 0


class _SocketIOHandler(socketserver.BaseRequestHandler):
    server: _FakeSocketIO

    def handle(self) -> None:
        sock: socket.socket = self.request
        reader = sock.makefile("rb")
        request_line = reader.readline().decode()
        key = b""
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        with self.server.lock:
            self.server.paths.append(request_line.split()[1])
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            + _frame(0x1, b'0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
            + _frame(0x1, b"2")
        )  # fmt: skip
        while True:
            head = reader.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", reader.read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", reader.read(8))[0]
            mask = reader.read(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(reader.read(length)))
            if opcode == 0x8:
                sock.sendall(_frame(0x8, payload[:2]))
                return
            if payload == b"40":
                with self.server.lock:
                    self.server.connects += 1
                sock.sendall(_frame(0x1, b'40{"sid":"n"}'))
            elif payload == b"3":
                with self.server.lock:
                    self.server.pongs += 1
            elif payload.startswith(b"42["):
                sock.sendall(_frame(0x1, payload))
            elif payload.startswith(b"42"):
                ack = payload[2 : payload.index(b"[")]
                sock.sendall(_frame(0x1, b"43" + ack + b'["ok"]'))


@pytest.fixture
def fake_socketio() -> Iterator[_FakeSocketIO]:
    yield from _serving(_FakeSocketIO())


def test_socketio_dialect(loadgen: Path, fake_socketio: _FakeSocketIO) -> None:
    port = str(fake_socketio.server_address[1])
    common = ("--port", port, "--dialect", "socketio", "-c", "2", "-w", "2", "-s", "30")
    echo = _run(loadgen, "--mode", "echo", *common, "-d", "0.5", "--warmup", "0.1", "-t", '42["echo","{p}"]')
    assert echo["errors"]["total"] == 0, echo["errors"]
    assert echo["replies"] > 0
    assert echo["params"]["dialect"] == "socketio"
    # The open packet and the ping of each connection, and the 40 answer, are not replies.
    assert echo["ignored"] == 2 * 3
    reply = len('42["echo",""]') + 30
    assert echo["bytes_per_s"] == pytest.approx(echo["msgs_per_s"] * reply, rel=1e-4)
    acks = _run(
        loadgen,
        *("--mode", "echo", *common, "-d", "0.5", "--warmup", "0.1"),
        *("-t", '42{a}["call","{p}"]', "--ack-prefix", "43"),
    )
    assert acks["errors"]["total"] == 0, acks["errors"]
    assert acks["acks_ok"] >= acks["replies"] > 0
    assert set(fake_socketio.paths) == {"/socket.io/?EIO=4&transport=websocket"}
    assert fake_socketio.connects == 4
    assert fake_socketio.pongs == 4


def test_refserver_calibration(loadgen: Path) -> None:
    build = "from benchmarks.driver import ensure_built; print(ensure_built('refserver'))"
    result = subprocess.run(
        [sys.executable, "-c", build],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    port = _free_port()
    proc = subprocess.Popen([result.stdout.strip(), "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        echo = _run(
            loadgen,
            *("--mode", "echo", "--port", str(port), "-c", "4", "-w", "8", "-s", "1000"),
            *("-d", "0.5", "--warmup", "0.1", "--fill", "words"),
        )
        assert echo["errors"]["total"] == 0, echo["errors"]
        assert echo["bytes_per_s"] == pytest.approx(echo["msgs_per_s"] * 1000, rel=1e-4)
        fanout = _run(
            loadgen,
            *("--mode", "fanout", "--port", str(port), "-c", "10", "--pubs", "1", "-w", "2"),
            *("-d", "0.5", "--warmup", "0.1", "--join", "join", "--template", "publish {p}"),
        )
        assert fanout["errors"]["total"] == 0, fanout["errors"]
        assert fanout["deliveries"] == fanout["expected"] > 0
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ the performance guide's app variants


@pytest.mark.parametrize(
    "flags",
    [
        ("--publish-loop",),
        ("--volatile", "--max-backpressure", "65536"),
        ("--middleware", "2", "--no-monitoring"),
        ("--compression", "shared"),
    ],
    ids=["publish-loop", "volatile", "middleware", "compression"],
)
def test_guide_app_variants_serve_every_event(loadgen: Path, flags: tuple[str, ...]) -> None:
    """benchmarks/guide.py starts the event server with these flags: each still answers echo events
    and delivers every publish to every member of the room."""
    port = _free_port()
    app = ROOT / "benchmarks" / "apps" / "nanosocket_events.py"
    proc = subprocess.Popen(
        [sys.executable, str(app), "--port", str(port), *flags],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        echo = _run(
            loadgen,
            *("--mode", "echo", "--port", str(port), "-c", "3", "-w", "4", "-s", "50"),
            *("-d", "0.3", "--warmup", "0.1", "-t", '{"event":"echo","data":["{p}"]}'),
        )
        assert echo["errors"]["total"] == 0, echo["errors"]
        assert echo["replies"] > 0
        subscribers = 10
        fanout = _run(
            loadgen,
            *("--mode", "fanout", "--port", str(port), "-c", str(subscribers), "--pubs", "1"),
            *("-w", "2", "-s", "100", "-d", "0.5", "--warmup", "0.1"),
            *("--join", '{"event":"join","data":["room1"]}', "--join-ack", "1"),
            *("--template", '{"event":"publish","data":["room1","{p}"]}'),
        )
        assert fanout["errors"]["total"] == 0, fanout["errors"]
        assert fanout["subscribers_joined"] == subscribers
        assert fanout["deliveries"] == fanout["expected"] == fanout["publishes"] * subscribers > 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_reliable_emits_counts_every_commit(tmp_path: Path) -> None:
    """benchmarks/reliable_emits.py at a tiny scale: its processes, proxy and counts."""
    out = tmp_path / "figures.json"
    command = [
        sys.executable, "-m", "benchmarks.reliable_emits", "--clients", "6", "--calls", "30",
        "--processes", "2", "--drop", "0.05", "--ack-timeout", "0.3", "--json", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, cwd=ROOT, timeout=120, capture_output=True)
    figures = json.loads(out.read_text())
    assert figures["commits"] == figures["expected_commits"] == 180
    assert figures["duplicates"] == figures["lost"] == figures["out_of_order"] == figures["calls_failed"] == 0
    assert figures["copies_answered_from_the_store"] == figures["acks_dropped"]


@pytest.mark.parametrize(
    ("scenario", "messages"),
    [("echo", 90), ("acks", 90), ("fanout", 2), ("echo-10k", 20), ("echo-10k-segments", 20)],
)
def test_the_instruction_count_driver_has_every_message_handled(scenario: str, messages: int) -> None:
    """``python -m benchmarks.instructions`` runs this driver under callgrind: it feeds the event
    server its messages and checks each was handled and answered (here without valgrind)."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions", "--drive", scenario, str(messages)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
