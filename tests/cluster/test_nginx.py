"""docs/deployment.md's nginx configuration, run: nginx (from Debian, ``make nginx-deps``) in
front of NanoSocket nodes sharing a Redis.

The configuration is the docs' ```nginx block itself, with only what names the machine replaced:
the upstream addresses become the nodes' ports on 127.0.0.1 (one node per ``server`` line of the
upstream), the listen ports free ports, the certificate paths a self-signed certificate made for
the test. Everything else (upgrade headers, timeouts, keepalive, the map) is the docs' text, so the
docs cannot drift from what was run. nginx runs in the foreground (``daemon off``), one process.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from cluster_kit import HANG_GUARD, Cluster, Peer, within

from nanosocket import NanoSocket, Socket, connect

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
V1 = "nanosocket.v1"

UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)(\d+\.\d+\.\d+\.\d+:\d+)(.*)$", re.MULTILINE)


def docs_config() -> str:
    """The one ```nginx block of docs/deployment.md."""
    blocks = re.findall(r"^```nginx\n(.*?)^```", DOCS.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "docs/deployment.md should have exactly one nginx block"
    return str(blocks[0])


def upstream_count(config: str) -> int:
    upstream = re.search(r"upstream\s+\w+\s*\{(.*?)\}", config, re.DOTALL)
    assert upstream is not None, "the docs' nginx config has no upstream"
    return len(UPSTREAM_SERVER.findall(upstream.group(1)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx in the foreground with the docs' config (machine-specific names substituted)."""

    def __init__(self, directory: Path, upstreams: list[int]) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            pytest.fail("no nginx: `make nginx-deps` (apt-get install nginx-light)")
        self.binary = binary
        self.directory = directory
        self.https_port = free_port()
        self.http_port = free_port()
        self.cert, self.key = self._certificate()
        self.conf = directory / "nginx.conf"
        self.conf.write_text(self._config(upstreams), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def _certificate(self) -> tuple[Path, Path]:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail("the nginx test needs the openssl command (Debian: apt-get install openssl)")
        cert, key = self.directory / "chat.pem", self.directory / "chat.key"
        subprocess.run(
            [
                openssl,
                *[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                ],
                *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=chat.example.com"),
                *("-addext", "subjectAltName=DNS:chat.example.com,IP:127.0.0.1"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return cert, key

    def _config(self, upstreams: list[int]) -> str:
        site = docs_config()
        ports = iter(upstreams)
        site, count = UPSTREAM_SERVER.subn(lambda m: f"{m.group(1)}127.0.0.1:{next(ports)}{m.group(3)}", site)
        assert count == len(upstreams)
        replacements = [
            (r"listen 443 ssl;", f"listen 127.0.0.1:{self.https_port} ssl;"),
            (r"listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            (r"ssl_certificate\s+\S+;", f"ssl_certificate {self.cert};"),
            (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {self.key};"),
        ]
        for pattern, replacement in replacements:
            site, count = re.subn(pattern, lambda _m, r=replacement: r, site)
            assert count == 1, f"the docs' nginx config should have one {pattern!r}"
        d = self.directory
        temp = "\n".join(
            f"    {name}_temp_path {d / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # The main context and the http block a distribution's nginx.conf provides around
        # conf.d/*.conf, reduced to what a run in a test directory needs.
        return (
            f"daemon off;\nmaster_process off;\npid {d / 'nginx.pid'};\nerror_log {d / 'error.log'} info;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    access_log {d / 'access.log'};\n{temp}\n{site}\n}}\n"
        )

    def start(self) -> None:
        # -e: the error log from the start (before the config names it), not the distribution's.
        command = [
            self.binary,
            "-p",
            str(self.directory),
            "-e",
            str(self.directory / "error.log"),
            "-c",
            str(self.conf),
        ]
        test = subprocess.run([*command, "-t"], check=False, capture_output=True, timeout=60)
        assert test.returncode == 0, f"nginx rejects the docs' config:\n{test.stderr.decode()}"
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + HANG_GUARD
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start:\n{self.error_log()}") from None
                time.sleep(0.02)

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> None:
        process = self.process
        if process is not None:
            process.terminate()
            try:
                process.wait(HANG_GUARD)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.process = None

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
async def behind_nginx(cluster: Cluster, tmp_path: Path) -> AsyncIterator[tuple[Nginx, list[NanoSocket]]]:
    count = upstream_count(docs_config())
    assert count >= 2, "the docs' upstream should list several nodes"
    nodes = await cluster.nodes_of(count)
    for node in nodes:
        node.on("connection", on_connection)
    proxy = Nginx(tmp_path, [node.port for node in nodes])
    proxy.start()
    try:
        yield proxy, nodes
    finally:
        proxy.stop()


def on_connection(socket: Socket) -> None:
    def join(room: str) -> None:
        socket.join(room)

    socket.on("join", join)
    socket.on("say", lambda room, text: socket.to(room).emit("said", text))


async def through(proxy: Nginx) -> Peer:
    """A v1 client connected to nginx's https port (wss), past its $connect."""
    ws = await within(
        connect(
            f"wss://127.0.0.1:{proxy.https_port}/",
            subprotocols=[V1],
            ssl=proxy.client_context(),
        )
    )
    peer = Peer(ws)
    peer.emit("$connect", None)
    (answer,) = await peer.expect("$connect")
    peer.sid = answer["id"]
    return peer


def node_of(peer: Peer, nodes: list[NanoSocket]) -> NanoSocket:
    (node,) = [node for node in nodes if peer.sid in node.sockets]
    return node


async def https_requests(proxy: Nginx, paths: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """Plain HTTP/1.1 requests on one keep-alive connection to nginx; (status, headers, body) each."""
    reader, writer = await within(
        asyncio.open_connection("127.0.0.1", proxy.https_port, ssl=proxy.client_context())
    )
    answers = []
    try:
        for path in paths:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: chat.example.com\r\n\r\n".encode())
            head = (await within(reader.readuntil(b"\r\n\r\n"))).decode("latin-1")
            lines = head.split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            assert "content-length" in headers, head
            body = await within(reader.readexactly(int(headers["content-length"])))
            answers.append((int(lines[0].split(" ", 2)[1]), headers, body))
    finally:
        writer.close()
    return answers


async def test_the_docs_nginx_config_proxies_websockets_and_http_to_every_node(
    behind_nginx: tuple[Nginx, list[NanoSocket]],
) -> None:
    proxy, nodes = behind_nginx
    # least_conn: clients opened one after another land on different upstreams.
    peers: list[Peer] = []
    while len({node_of(peer, nodes).port for peer in peers}) < 2:
        assert len(peers) < 2 * len(nodes), "nginx sent every client to one node"
        peers.append(await through(proxy))
    first = peers[0]
    (second,) = [peer for peer in peers if node_of(peer, nodes) is not node_of(first, nodes)][:1]
    for peer in (first, second):
        peer.emit("join", "lobby", ack=1)
        await peer.expect_ack(1)
    # A room shared across nodes, through the proxy both ways.
    first.emit("say", "lobby", "hello from one node")
    assert await second.expect("said") == ["hello from one node"]
    second.emit("say", "lobby", "and from the other")
    assert await first.expect("said") == ["and from the other"]

    # Plain HTTP through the same location, on one kept-alive client connection.
    answers = await https_requests(proxy, ["/health", "/health"])
    for status, _headers, body in answers:
        assert status == 200, body
        assert orjson.loads(body)["status"] == "ok"
    log = (proxy.directory / "access.log").read_text(encoding="utf-8")
    assert log.count('"GET /health HTTP/1.1" 200') == 2, log  # it did go through nginx
    # The plain-http server redirects to https.
    reader, writer = await within(asyncio.open_connection("127.0.0.1", proxy.http_port))
    try:
        writer.write(b"GET /room?x=1 HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n")
        head = (await within(reader.read())).decode("latin-1")
    finally:
        writer.close()
    assert head.startswith("HTTP/1.1 301"), head
    assert "\r\nLocation: https://chat.example.com/room?x=1\r\n" in head, head

    # A node shutting down: its client gets the 1001 through nginx; the other node's stays.
    closing = node_of(first, nodes)
    await within(closing.close())
    closed = await first.closed()
    assert (closed.code, closed.reason) == (1001, "server shutting down")
    second.emit("join", "after", ack=2)
    await second.expect_ack(2)


async def test_a_request_without_upgrade_reaches_a_node_as_plain_http(
    behind_nginx: tuple[Nginx, list[NanoSocket]],
) -> None:
    """The docs' note on the upgrade headers: without an ``Upgrade`` from the client, nginx sends
    an empty ``Connection`` and the node answers as plain HTTP (426), not with a 101."""
    proxy, _nodes = behind_nginx
    reader, writer = await within(
        asyncio.open_connection("127.0.0.1", proxy.https_port, ssl=proxy.client_context())
    )
    try:
        writer.write(
            b"GET / HTTP/1.1\r\nHost: chat.example.com\r\nConnection: keep-alive\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = (await within(reader.readuntil(b"\r\n\r\n"))).decode("latin-1")
    finally:
        writer.close()
    assert head.startswith("HTTP/1.1 426"), head
