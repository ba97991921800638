"""Hardening, the Origin policy against Cross-Site WebSocket Hijacking: same-origin by default, an
exact-match allow-list, refusals answered 403 before the upgrade with no middleware, handler or
route invoked; ``cors="*"`` warns when the server is constructed.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hardening_kit import Bystanders, Memory, forget, start_server
from server_kit import Harness, Recorder, within

from nanosocket import HandshakeRejected, NanoSocket, connect
from nanosocket.protocol.handshake import build_request, generate_key, parse_ws_url


class Calls:
    """Counts every place user code could run for a connection: middleware, ``connection``
    handlers, HTTP routes."""

    def __init__(self, server: NanoSocket) -> None:
        self.middleware = Recorder()
        self.connection = Recorder()
        self.route = Recorder()
        server.use(self.middleware)
        server.on("connection", self.connection)
        server.route("/")(lambda request: self.route(request) or "route")

    @property
    def total(self) -> int:
        return len(self.middleware.calls) + len(self.connection.calls) + len(self.route.calls)


async def upgrade_status(ns: Harness, server: NanoSocket, origin: str | None) -> int:
    """Send an upgrade request with ``origin`` (and the server's own Host) by hand; the status."""
    raw = await ns.tcp(server.port)
    headers = [] if origin is None else [("Origin", origin)]
    raw.writer.write(
        build_request(parse_ws_url(f"ws://127.0.0.1:{server.port}/"), generate_key(), headers=headers)
    )
    head = await within(raw.reader.readuntil(b"\r\n\r\n"))
    forget(ns, raw)
    return int(head.split(b" ", 2)[1])


CROSS_ORIGIN = [
    "http://evil.example",
    "http://127.0.0.1.evil.example:{port}",
    "http://127.0.0.1:{other}",  # same host, another port
    "http://localhost:{port}",  # another name for the same machine is another origin
    "https://127.0.0.1",  # another scheme and its default port
    "null",  # sandboxed iframes, file:// pages
    "file://",
    "http://[::1",
    "",
]


@pytest.mark.parametrize("origin", CROSS_ORIGIN)
async def test_same_origin_by_default(ns: Harness, origin: str) -> None:
    server = await start_server(ns)
    calls = Calls(server)
    bystanders = await Bystanders.connect(ns, server)
    seen = calls.total
    assert await upgrade_status(ns, server, f"http://127.0.0.1:{server.port}") == 101
    assert await upgrade_status(ns, server, None) == 101  # not a browser: no Origin to check
    await bystanders.check()
    allowed_calls = calls.total
    assert allowed_calls > seen
    refused = origin.format(port=server.port, other=server.port + 1)
    assert await upgrade_status(ns, server, refused) == 403
    assert calls.total == allowed_calls  # nothing ran for the refused request
    await bystanders.check()


ALLOWED = ("https://app.example", "http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://app.example", 101),
        ("https://app.example/", 101),
        ("HTTPS://APP.EXAMPLE", 101),
        ("http://127.0.0.1:8080", 101),
        ("https://app.example.evil.example", 403),
        ("https://evil.app.example", 403),
        ("https://evil.example/https://app.example", 403),
        ("http://app.example", 403),
        ("https://app.example:443", 403),  # exact match: not the string that was listed
        ("https://app.example:8443", 403),
        ("http://127.0.0.1:8081", 403),
        ("http://127.0.0.1:{port}", 403),  # an allow-list replaces same-origin
        ("null", 403),
    ],
)
async def test_exact_match_allow_list(ns: Harness, origin: str, status: int) -> None:
    server = await start_server(ns, cors=list(ALLOWED))
    calls = Calls(server)
    got = await upgrade_status(ns, server, origin.format(port=server.port))
    assert got == status
    if status == 403:
        assert calls.total == 0
    else:
        await within(_until_admitted(calls))


async def _until_admitted(calls: Calls) -> None:
    await calls.connection.wait()
    assert len(calls.middleware.calls) == 1


async def test_refusals_cost_nothing_and_bystanders_are_served(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns)
    calls = Calls(server)
    bystanders = await Bystanders.connect(ns, server)
    seen = calls.total
    await memory.baseline()
    for n in range(200):
        with pytest.raises(HandshakeRejected) as refused:
            await within(
                connect(f"ws://127.0.0.1:{server.port}/", headers=[("Origin", f"https://evil{n}.example")])
            )
        assert refused.value.status == 403
        if n % 50 == 0:
            await bystanders.check()
    assert calls.total == seen
    assert server.stats.connections_total == len(bystanders.peers)
    await bystanders.check()
    await memory.assert_released()


# ------------------------------------------------------------------------- cors="*" warns


@pytest.mark.parametrize("cors", ["*", ["https://app.example", "*"], ("*",)])
async def test_any_origin_warns_once_at_construction(
    ns: Harness, caplog: pytest.LogCaptureFixture, cors: Any
) -> None:
    with caplog.at_level(logging.WARNING, logger="nanosocket.server"):
        server = ns.server(cors=cors)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "any origin" in warnings[0].getMessage()
        assert "cookies" in warnings[0].getMessage()
        await within(server.listen())
        for n in range(3):  # connections from anywhere are allowed, and warn no more
            ws = await within(
                connect(f"ws://127.0.0.1:{server.port}/", headers=[("Origin", f"https://site{n}.example")])
            )
            ws.close()
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@pytest.mark.parametrize("cors", [None, "https://app.example", ["https://a.example", "https://b.example"]])
def test_no_warning_without_a_wildcard(caplog: pytest.LogCaptureFixture, cors: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="nanosocket.server"):
        NanoSocket(cors=cors)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
