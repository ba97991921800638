"""Server memory per connection with permessage-deflate: off, shared and dedicated.

    .venv/bin/python -m benchmarks.compression_memory [--conns 2000] [--modes off,shared,dedicated]

For each mode it starts ``nanosocket echo-server --compression MODE`` (a fresh process), opens and
closes a few connections (so one-time costs are not charged), reads the server's RSS, opens
``--conns`` connections that all offer ``permessage-deflate; client_max_window_bits`` (and check
what was agreed), reads the RSS again (idle), then has every connection send one compressed
1 KiB JSON message (``--size``) and read its echo, and reads the RSS a third time (after use).
The figures are RSS growth divided by the connections held; the report goes to stdout and to
benchmarks/results/compression_memory.md.

What it shows: in shared mode nothing about compression stays with a connection (no zlib state,
the codec is shared), so memory per connection is the same as with compression off, idle or after
use; dedicated mode creates its compressor and decompressor on first use (bounded by
compression_window_bits and compression_mem_level), so it costs nothing while idle and its zlib
state after use. RSS is noisy at the scale of a few bytes per connection: compare the columns,
not the last digits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from nanosocket.protocol.frames import BINARY, build_frame
from nanosocket.protocol.handshake import build_request, generate_key, parse_ws_url

RESULTS = Path(__file__).resolve().parent / "results" / "compression_memory.md"
OFFER = "permessage-deflate; client_max_window_bits"
WARMUP_CONNS = 20
WORDS = " ".join(f"word{i * 7919 % 1013}" for i in range(2000))


def json_message(size: int) -> bytes:
    """An event envelope of ``size`` bytes whose argument is a string of words."""
    head, tail = '{"event":"echo","data":["', '"]}'
    return (head + WORDS[: max(0, size - len(head) - len(tail))] + tail).encode()


#: The message each connection sends once (set by --size; 1 KiB of JSON by default).
MESSAGE = json_message(1024)


@dataclass
class Row:
    mode: str
    conns: int
    agreed: str
    before: int
    idle: int
    used: int

    @property
    def idle_per_conn(self) -> float:
        return (self.idle - self.before) / self.conns

    @property
    def used_per_conn(self) -> float:
        return (self.used - self.before) / self.conns


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def compressed_frame() -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (compressor.compress(MESSAGE) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return build_frame(BINARY, payload, rsv1=True, mask_key=os.urandom(4))


class Client:
    """A bare client connection: an upgrade offering compression, then exact frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, agreed: str) -> None:
        self.reader = reader
        self.writer = writer
        self.agreed = agreed

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = build_request(parse_ws_url(f"ws://127.0.0.1:{port}/"), generate_key(), extensions=OFFER)
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        if not head.startswith("HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head.splitlines()[0]}")
        agreed = ""
        for line in head.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "sec-websocket-extensions":
                agreed = value.strip()
        return cls(reader, writer, agreed)

    async def echo(self, frame: bytes) -> None:
        self.writer.write(frame)
        _, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.transport.abort()


async def open_many(port: int, count: int, batch: int = 200) -> list[Client]:
    clients: list[Client] = []
    for start in range(0, count, batch):
        clients += await asyncio.gather(*(Client.open(port) for _ in range(min(batch, count - start))))
    return clients


async def measure(mode: str, conns: int) -> Row:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nanosocket", "echo-server",
        "--host", "127.0.0.1", "--port", str(port),
        "--compression", mode, "--idle-timeout", "600",
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the echo server did not start") from None
                await asyncio.sleep(0.1)
        frame = compressed_frame()
        warm = await open_many(port, WARMUP_CONNS)
        await asyncio.gather(*(client.echo(frame) for client in warm))
        for client in warm:
            client.close()
        await asyncio.sleep(1.0)
        before = rss(server.pid)
        clients = await open_many(port, conns)
        await asyncio.sleep(1.0)
        idle = rss(server.pid)
        await asyncio.gather(*(client.echo(frame) for client in clients))
        await asyncio.sleep(1.0)
        used = rss(server.pid)
        agreed = clients[0].agreed or "(none)"
        for client in clients:
            client.close()
        return Row(mode, conns, agreed, before, idle, used)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        await asyncio.wait_for(server.wait(), 10)


def report(rows: list[Row]) -> str:
    lines = [
        "# Server memory per connection with permessage-deflate",
        "",
        f"`python -m benchmarks.compression_memory --conns {rows[0].conns} --size {len(MESSAGE)}` on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Every connection offers `{OFFER}`.",
        "",
        "| mode | agreed | RSS before | per connection, idle | per connection, after one message |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.mode} | `{row.agreed}` | {row.before / 2**20:.1f} MiB | "
            f"{row.idle_per_conn:,.0f} B | {row.used_per_conn:,.0f} B |"
        )
    lines += [
        "",
        f"After one message: each connection sent one compressed {len(MESSAGE):,} B JSON message (an event "
        "envelope around a string of words) and read its echo.",
        "RSS growth / connections held. Shared mode keeps no zlib state per connection (one stateless",
        "codec serves them all), so it matches compression off; dedicated mode creates each connection's",
        "compressor and decompressor on first use (window and memLevel bounded by the options).",
        "",
    ]
    return "\n".join(lines)


async def main_async(modes: list[str], conns: int) -> list[Row]:
    return [await measure(mode, conns) for mode in modes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compression_memory", description=__doc__)
    parser.add_argument("--conns", type=int, default=2000, help="connections held (default: %(default)s)")
    parser.add_argument("--modes", default="off,shared,dedicated", help="(default: %(default)s)")
    parser.add_argument("--size", type=int, default=1024, help="message bytes (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="markdown report (default: %(default)s)")
    args = parser.parse_args(argv)
    global MESSAGE
    MESSAGE = json_message(args.size)
    rows = asyncio.run(main_async([mode.strip() for mode in args.modes.split(",")], args.conns))
    text = report(rows)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
