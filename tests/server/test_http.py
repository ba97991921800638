"""Plain HTTP on the server's port (server/http.py, app.py): custom routes, 404/405/426, HEAD,
and the ``path`` option. /health and /metrics are in test_metrics.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from server_kit import Harness

from nanosocket import NanoSocket, Request
from nanosocket.errors import HandshakeRejected


async def test_sync_route_answers_text(ns: Harness) -> None:
    server = await ns.start()
    seen: list[Request] = []

    @server.route("/status")
    def status(request: Request) -> str:
        seen.append(request)
        return "all good ✓"

    reply = await ns.http(server, "/status?verbose=1", headers=[("X-Probe", "yes")])
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert reply.body == "all good ✓".encode()
    assert int(reply.headers["content-length"]) == len(reply.body)
    (request,) = seen
    assert request.method == "GET" and request.path == "/status"
    assert request.query == {"verbose": "1"}
    assert request.headers["x-probe"] == "yes"


async def test_async_route_answers_json(ns: Harness) -> None:
    server = await ns.start()

    @server.route("/users")
    async def users(request: Request) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"users": ["ada", "linus"], "count": 2}

    reply = await ns.http(server, "/users")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"users": ["ada", "linus"], "count": 2}


RETURNS: list[tuple[Any, int, str | None, bytes]] = [
    # what the route returns, the status, the content type and the body the client gets
    (b"\x00\x01raw", 200, "application/octet-stream", b"\x00\x01raw"),
    ([1, 2, 3], 200, "application/json", b"[1,2,3]"),
    ((201, {"id": 7}), 201, "application/json", b'{"id":7}'),
    ((418, "short and stout"), 418, "text/plain; charset=utf-8", b"short and stout"),
    ((200, b"<svg/>", {"Content-Type": "image/svg+xml"}), 200, "image/svg+xml", b"<svg/>"),
    ((202, "queued", {"X-Job": "9"}), 202, "text/plain; charset=utf-8", b"queued"),
    (None, 204, None, b""),
]


@pytest.mark.parametrize("case", RETURNS, ids=[f"{type(c[0]).__name__}-{c[1]}" for c in RETURNS])
@pytest.mark.parametrize("style", ["sync", "async"])
async def test_route_return_values(ns: Harness, case: tuple[Any, int, str | None, bytes], style: str) -> None:
    result, status, content_type, body = case
    server = await ns.start()
    if style == "sync":
        server.route("/r")(lambda request: result)
    else:

        async def handler(request: Request) -> Any:
            return result

        server.route("/r")(handler)
    reply = await ns.http(server, "/r")
    assert reply.status == status
    assert reply.body == body
    if content_type is not None:
        assert reply.headers["content-type"] == content_type
    if isinstance(result, tuple) and len(result) == 3 and "X-Job" in result[2]:
        assert reply.headers["x-job"] == "9"


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_route_errors_answer_500_and_the_server_keeps_serving(ns: Harness, style: str) -> None:
    server = await ns.start()
    if style == "sync":
        server.route("/boom")(lambda request: 1 / 0)
        server.route("/weird")(lambda request: object())
    else:

        async def boom(request: Request) -> None:
            raise RuntimeError("route broke")

        async def weird(request: Request) -> object:
            return object()

        server.route("/boom")(boom)
        server.route("/weird")(weird)
    server.route("/ok")(lambda request: "ok")
    assert (await ns.http(server, "/boom")).status == 500
    assert (await ns.http(server, "/weird")).status == 500
    assert (await ns.http(server, "/ok")).body == b"ok"
    peer = await ns.v1(server)
    assert peer.sid in server.sockets


async def test_other_methods_get_405_with_allow(ns: Harness) -> None:
    server = await ns.start()
    server.route("/only-get")(lambda request: "got")
    server.route("/submit", methods=("POST", "put"))(lambda request: (201, request.method))
    reply = await ns.http(server, "/only-get", method="POST")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"
    assert (await ns.http(server, "/only-get", method="DELETE")).status == 405
    created = await ns.http(server, "/submit", method="POST", headers=[("Content-Length", "0")])
    assert (created.status, created.body) == (201, b"POST")
    assert (await ns.http(server, "/submit", method="PUT", headers=[("Content-Length", "0")])).body == b"PUT"
    reply = await ns.http(server, "/submit")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST, PUT"


@pytest.mark.parametrize("path", ["/page", "/health", "/metrics"])
async def test_head_answers_the_get_headers_without_a_body(ns: Harness, path: str) -> None:
    server = await ns.start()
    server.route("/page")(lambda request: "a page body")
    get = await ns.http(server, path)
    head = await ns.http(server, path, method="HEAD")
    assert head.status == get.status == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0
    assert head.body == b""


async def test_head_on_an_async_route_has_no_body(ns: Harness) -> None:
    server = await ns.start()

    async def page(request: Request) -> str:
        return "later body"

    server.route("/later")(page)
    head = await ns.http(server, "/later", method="HEAD")
    assert head.status == 200
    assert head.headers["content-length"] == str(len(b"later body"))
    assert head.body == b""


async def test_plain_get_on_the_websocket_path_is_426_and_elsewhere_404(ns: Harness) -> None:
    server = await ns.start()
    reply = await ns.http(server, "/")
    assert reply.status == 426
    assert reply.headers["upgrade"] == "websocket"
    assert reply.headers["sec-websocket-version"] == "13"
    assert b"WebSocket" in reply.body
    assert (await ns.http(server, "/nothing-here")).status == 404
    assert (await ns.http(server, "/favicon.ico")).status == 404


async def test_path_option_restricts_upgrades(ns: Harness) -> None:
    server = await ns.start(path="/socket")
    with pytest.raises(HandshakeRejected) as info:
        await ns.plain(server, path="/")
    assert info.value.status == 404
    with pytest.raises(HandshakeRejected):
        await ns.v1_unconnected(server, path="/other")
    peer = await ns.v1(server, path="/socket?token=1")
    assert peer.sid in server.sockets
    assert (await ns.http(server, "/socket")).status == 426
    assert (await ns.http(server, "/")).status == 404


async def test_a_route_wins_over_the_websocket_path_for_plain_http(ns: Harness) -> None:
    server = await ns.start()
    server.route("/")(lambda request: "home page")
    assert (await ns.http(server, "/")).body == b"home page"
    peer = await ns.v1(server, path="/")  # upgrades still work there
    assert peer.sid in server.sockets


async def test_monitoring_off_hides_health_and_metrics(ns: Harness) -> None:
    server = await ns.start(monitoring=False)
    assert (await ns.http(server, "/health")).status == 404
    assert (await ns.http(server, "/metrics")).status == 404


async def test_a_custom_route_can_replace_health(ns: Harness) -> None:
    server = await ns.start()
    server.route("/health")(lambda request: {"mine": True})
    assert (await ns.http(server, "/health")).json() == {"mine": True}


def test_route_paths_start_with_a_slash() -> None:
    server = NanoSocket()
    with pytest.raises(ValueError, match="start with '/'"):
        server.route("status")(lambda request: "x")


async def test_route_decorator_returns_the_function(ns: Harness) -> None:
    server = ns.server()

    def handler(request: Request) -> str:
        return "x"

    assert server.route("/x")(handler) is handler
    await server.listen()
    assert (await ns.http(server, "/x")).body == b"x"
