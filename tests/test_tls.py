"""TLS over real sockets: the server's ``ssl=`` (wss:// and https:// on one port), the client's
``ssl=`` for wss:// URLs, and the raw API. Certificates are self-signed, made for each test session
by ``openssl req``; a client trusts one only when its context says so.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from nanosocket import (
    ConfigurationError,
    HandshakeRejected,
    InvalidHandshake,
    NanoSocket,
    NanoSocketClient,
    Socket,
    WebSocket,
    connect,
    serve,
)
from nanosocket.protocol.handshake import Request

HANG_GUARD = 10.0


async def within(awaitable: Any) -> Any:
    """Await with a hang guard (a failure instead of a hang, never a measurement)."""
    return await asyncio.wait_for(awaitable, HANG_GUARD)


def make_certificate(directory: Path, name: str, alt_names: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key (EC P-256), valid for ``alt_names``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS tests need the openssl command (Debian: apt-get install openssl)")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    command = (
        f"{openssl} req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
        f" -keyout {key} -out {cert} -subj /CN={name} -addext subjectAltName={alt_names}"
    )
    subprocess.run(
        command.split(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class Certificates:
    def __init__(self, directory: Path) -> None:
        self.cert, self.key = make_certificate(directory, "nanosocket-test", "DNS:localhost,IP:127.0.0.1")
        self.other_cert, self.other_key = make_certificate(directory, "other", "DNS:other.example")

    def server(self, *, other: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if other:
            context.load_cert_chain(self.other_cert, self.other_key)
        else:
            context.load_cert_chain(self.cert, self.key)
        return context

    def client(self, *, other: bool = False) -> ssl.SSLContext:
        """A client context that trusts the test certificate (and verifies host names)."""
        return ssl.create_default_context(cafile=str(self.other_cert if other else self.cert))


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def servers() -> AsyncIterator[list[NanoSocket]]:
    started: list[NanoSocket] = []
    try:
        yield started
    finally:
        for server in started:
            await within(server.close())


async def tls_server(servers: list[NanoSocket], certificates: Certificates, **options: Any) -> NanoSocket:
    server = NanoSocket(port=0, host="127.0.0.1", ssl=certificates.server(), **options)
    servers.append(server)

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.on("echo", lambda *args: list(args))
        socket.on("shout", lambda text: socket.emit("heard", text.upper()))

    await within(server.listen())
    return server


async def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    reader, writer = await within(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        response = await within(reader.read())
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ---------------------------------------------------------------------------- server and client


async def test_wss_event_round_trip_and_https_routes(
    servers: list[NanoSocket], certificates: Certificates
) -> None:
    server = await tls_server(servers, certificates)
    client = NanoSocketClient(
        f"wss://127.0.0.1:{server.port}", ssl=certificates.client(), reconnection=False, timeout=5
    )
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    client.on("heard", heard.set_result)
    async with client:
        assert await within(client.call("echo", "over tls", {"n": 1}, b"\x00\xff")) == [
            "over tls",
            {"n": 1},
            b"\x00\xff",
        ]
        client.emit("shout", "hello")
        assert await within(heard) == "HELLO"
        big = "x" * (512 * 1024)
        assert await within(client.call("echo", big)) == [big]
    status, body = await https_get(server.port, "/health", certificates.client())
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    status, body = await https_get(server.port, "/metrics", certificates.client())
    assert status == 200 and b"nanosocket_connections_total 1.0" in body


async def test_listen_takes_a_context_of_its_own(
    servers: list[NanoSocket], certificates: Certificates
) -> None:
    server = NanoSocket(port=0, host="127.0.0.1")
    servers.append(server)
    server.on("connection", lambda socket: socket.on("echo", lambda text: text))
    await within(server.listen(ssl=certificates.server()))
    async with NanoSocketClient(
        f"https://127.0.0.1:{server.port}", ssl=certificates.client(), reconnection=False, timeout=5
    ) as client:
        assert await within(client.call("echo", "via listen(ssl=...)")) == "via listen(ssl=...)"


async def test_the_client_refuses_an_untrusted_certificate(
    servers: list[NanoSocket], certificates: Certificates
) -> None:
    server = await tls_server(servers, certificates)
    failures: list[BaseException] = []
    client = NanoSocketClient(
        f"wss://127.0.0.1:{server.port}", reconnection=False, auto_connect=False, timeout=5
    )
    client.on("connect_error", failures.append)
    with pytest.raises(ssl.SSLCertVerificationError, match=r"certificate verify failed: self.signed"):
        await within(client.connect())
    assert len(failures) == 1 and isinstance(failures[0], ssl.SSLCertVerificationError)
    # The raw client too, and a client that trusts the certificate still gets in.
    with pytest.raises(ssl.SSLCertVerificationError):
        await within(connect(f"wss://127.0.0.1:{server.port}/"))
    assert server.stats.connections_total == 0
    async with NanoSocketClient(
        f"wss://127.0.0.1:{server.port}", ssl=certificates.client(), reconnection=False, timeout=5
    ) as trusting:
        assert await within(trusting.call("echo", 1)) == [1]


async def test_a_trusted_certificate_for_another_host_is_refused(
    servers: list[NanoSocket], certificates: Certificates
) -> None:
    server = NanoSocket(port=0, host="127.0.0.1", ssl=certificates.server(other=True))
    servers.append(server)
    await within(server.listen())
    client = NanoSocketClient(
        f"wss://127.0.0.1:{server.port}", ssl=certificates.client(other=True), reconnection=False, timeout=5
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        await within(client.connect())


async def test_a_plain_client_cannot_talk_to_a_tls_server(
    servers: list[NanoSocket], certificates: Certificates
) -> None:
    server = await tls_server(servers, certificates)
    with pytest.raises(InvalidHandshake):
        await within(connect(f"ws://127.0.0.1:{server.port}/", timeout=5))
    async with NanoSocketClient(
        f"wss://127.0.0.1:{server.port}", ssl=certificates.client(), reconnection=False, timeout=5
    ) as client:
        assert await within(client.call("echo", "still serving")) == ["still serving"]


async def test_same_origin_over_tls_is_https(servers: list[NanoSocket], certificates: Certificates) -> None:
    server = await tls_server(servers, certificates)
    url = f"wss://127.0.0.1:{server.port}/"
    ws = await within(
        connect(url, ssl=certificates.client(), headers=[("Origin", f"https://127.0.0.1:{server.port}")])
    )
    ws.close()
    with pytest.raises(HandshakeRejected) as refused:
        await within(
            connect(url, ssl=certificates.client(), headers=[("Origin", f"http://127.0.0.1:{server.port}")])
        )
    assert refused.value.status == 403


# ---------------------------------------------------------------------------------- raw API


async def test_raw_wss_echo(certificates: Certificates) -> None:
    def echo(ws: WebSocket, request: Request) -> None:
        ws.on_message = ws.send

    server = await serve(echo, "127.0.0.1", 0, ssl=certificates.server())
    try:
        ws = await within(connect(f"wss://localhost:{server.port}/", ssl=certificates.client()))
        try:
            for message in ("text", b"\x00binary", "y" * 200_000):
                ws.send(message)
                assert await within(ws.recv()) == message
        finally:
            ws.close()
            await within(ws.wait_closed())
    finally:
        await within(server.close())


# ------------------------------------------------------------------------------- validation


async def test_ssl_must_be_a_context() -> None:
    with pytest.raises(ConfigurationError, match="ssl"):
        NanoSocket(ssl="cert.pem")  # type: ignore[arg-type]
    server = NanoSocket(port=0, host="127.0.0.1")
    with pytest.raises(ConfigurationError, match="ssl"):
        await server.listen(ssl=True)  # type: ignore[arg-type]
    assert not server.listening
    with pytest.raises(ConfigurationError, match="ssl"):
        NanoSocketClient("wss://127.0.0.1:1", ssl="cert.pem", auto_connect=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="wss://"):
        NanoSocketClient("ws://127.0.0.1:1", ssl=ssl.create_default_context(), auto_connect=False)
