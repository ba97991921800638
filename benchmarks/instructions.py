"""Instructions per message of the event server's hot paths, counted by valgrind (callgrind).

Immune to other load on the machine (it counts instructions, not time), so it can compare two
versions of the code on a busy machine where the suite's rates cannot. User space only: the
kernel's share (the socket writes) is not counted.

The suite's event server (``benchmarks/apps/nanosocket_events.py``, on uvloop) runs in this
process with real client sockets on 127.0.0.1; ready-made client frames are fed straight to its
connections, as reads of the sizes the load generator causes:

- ``echo``: 30 ``echo`` events per read on one connection (each answered by an ``echo`` event);
- ``acks``: 30 ``call`` events with an ack id per read (each answered by an ack);
- ``echo-batch``: one batch frame per read, an array of 30 ``echo`` events, as
  ``client.batch()`` sends them (each answered by an ``echo`` event; per event);
- ``fanout``: 1,000 subscribers in a room, two ``publish`` events per read, then the loop
  iterations that write the broadcasts (a batch of connections per iteration; per delivery);
- ``echo-10k``: 10 KiB ``echo`` events in 64 KiB reads, as on loopback (most reads end inside a
  frame, which the next one completes);
- ``echo-10k-segments``: the same in 1,448-byte reads, a TCP segment of an Ethernet network, as
  a message from one client often arrives (each frame is pending over seven reads); the client
  socket's replies are read between reads (their reading is counted too).

The process runs twice under callgrind, with a small and a large number of messages; the
difference of the totals over the difference of the messages is the cost of one message, start
and end of the process left out.

    python -m benchmarks.instructions [--scenarios echo,acks,echo-batch,fanout,echo-10k,echo-10k-segments]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.apps.nanosocket_events import create_server
from nanosocket.transport import FLUSH_BATCH

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("echo", "acks", "echo-batch", "fanout", "echo-10k", "echo-10k-segments")
#: Messages of the short and the long run (fan-out: broadcasts of 1,000 deliveries).
RUNS = {
    "echo": (3000, 18000),
    "acks": (3000, 18000),
    "echo-batch": (3000, 18000),
    "fanout": (20, 120),
    "echo-10k": (300, 1800),
    "echo-10k-segments": (300, 1800),
}
#: Read sizes of the 10 KiB scenarios.
READS = {"echo-10k": 65536, "echo-10k-segments": 1448}
SUBSCRIBERS = 1000
PER_READ = 30
PAYLOAD = "x" * 100


def client_frame(text: str) -> bytes:
    """A masked text frame as a client sends it (a zero mask: the payload reads as is)."""
    data = text.encode()
    size = len(data)
    head = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2, "big")
    return head + b"\0\0\0\0" + data


def feed(ws: Any, data: bytes) -> None:
    """Hand ``data`` to a connection as the event loop hands it a read."""
    ws.get_buffer(len(data))[: len(data)] = data
    ws.buffer_updated(len(data))


def open_client(port: int) -> socket.socket:
    """A TCP connection that has sent a WebSocket upgrade request (its replies are never read)."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    sock.setblocking(False)
    return sock


def drain(client: socket.socket) -> None:
    """Read what the server wrote to ``client`` so far (its replies would fill the socket)."""
    try:
        while client.recv(1 << 20):
            pass
    except BlockingIOError:
        pass


async def drive(scenario: str, messages: int) -> None:
    """Feed ``messages`` client events of ``scenario`` to the suite's event server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server(port)
    await server.listen()
    count = SUBSCRIBERS if scenario == "fanout" else 1
    clients = [open_client(port) for _ in range(count)]
    while len(server.sockets) < count:  # noqa: ASYNC110 - the server's accepting them
        await asyncio.sleep(0.01)
    connections = [socket_._ws for socket_ in server.sockets.values()]
    if scenario == "fanout":
        join = client_frame('{"event":"join","data":["room1"]}')
        for ws in connections:
            feed(ws, join)
        await asyncio.sleep(0.05)
        publish = client_frame(f'{{"event":"publish","data":["room1","{PAYLOAD}"]}}')
        iterations = -(-SUBSCRIBERS // FLUSH_BATCH)
        for _ in range(messages):
            feed(connections[0], publish + publish)
            for _ in range(iterations):
                await asyncio.sleep(0)  # the deferred writes, FLUSH_BATCH connections at a time
    elif scenario in READS:
        stream = client_frame(f'{{"event":"echo","data":["{"x" * 10240}"]}}') * messages
        step = READS[scenario]
        for start in range(0, len(stream), step):
            feed(connections[0], stream[start : start + step])
            await asyncio.sleep(0)
            drain(clients[0])
    else:
        name, ack = ("call", ',"ack":7') if scenario == "acks" else ("echo", "")
        envelope = f'{{"event":"{name}","data":["{PAYLOAD}"]{ack}}}'
        if scenario == "echo-batch":
            batch = client_frame(f"[{','.join([envelope] * PER_READ)}]")
        else:
            batch = client_frame(envelope) * PER_READ
        for index in range(messages // PER_READ):
            feed(connections[0], batch)
            if index % 50 == 0:
                await asyncio.sleep(0)
    # Every message was handled, and every answer and delivery written (a count of nothing
    # would be no measurement).
    if scenario == "fanout":
        handled = messages * 2
    else:
        handled = messages if scenario in READS else messages // PER_READ * PER_READ
    answers = handled * (SUBSCRIBERS if scenario == "fanout" else 1)
    joins = SUBSCRIBERS if scenario == "fanout" else 0  # each answered by a "joined" event
    stats = server.stats
    frames = handled // PER_READ if scenario == "echo-batch" else handled  # a batch is one message
    assert stats.messages_in - joins == frames, (stats.messages_in, frames)
    assert stats.messages_out - joins == answers, (stats.messages_out, answers)
    for client in clients:
        client.close()
    await server.close()


def count(scenario: str, messages: int) -> int:
    """Instructions of one process feeding ``messages`` (callgrind's total)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        subprocess.run(
            [
                "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                sys.executable, "-m", "benchmarks.instructions", "--drive", scenario, str(messages),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )  # fmt: skip
        for line in out.read_text().splitlines():
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def per_message(scenario: str) -> float:
    """Instructions per message (fan-out: per delivery)."""
    short, long = RUNS[scenario]
    deliveries = SUBSCRIBERS * 2 if scenario == "fanout" else 1
    return (count(scenario, long) - count(scenario, short)) / ((long - short) * deliveries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--drive", nargs=2, metavar=("SCENARIO", "MESSAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        uvloop.run(drive(args.drive[0], int(args.drive[1])))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is needed (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    for scenario in args.scenarios.split(","):
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}")
        unit = "delivery" if scenario == "fanout" else "message"
        print(f"{scenario}: {per_message(scenario):,.0f} instructions per {unit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
