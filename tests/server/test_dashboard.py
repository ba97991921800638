"""The browser client script (GET /nanosocket.js) and the live dashboard (server/dashboard.py):
caching headers, the dashboard's admission rules, its stats pushes, and that dashboard sockets are
never the app's. The page itself is driven in a real browser by tests/browser/."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest
from server_kit import Harness, Recorder, until

from nanosocket import NanoSocket, Socket
from nanosocket.errors import ConfigurationError, ConnectError, HandshakeRejected

SCRIPT = (resources.files("nanosocket") / "static" / "nanosocket.js").read_bytes()
TOKEN = "dashboard-secret"


def test_the_installed_package_ships_the_browser_client() -> None:
    files = resources.files("nanosocket") / "static"
    assert (files / "nanosocket.js").read_text().count("export class NanoSocketClient") == 1
    assert "export declare class NanoSocketClient" in (files / "nanosocket.d.ts").read_text()
    assert "<canvas" in (files / "dashboard.html").read_text()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_client_script_is_served_with_a_strong_etag(ns: Harness, method: str) -> None:
    server = await ns.start()
    reply = await ns.http(server, "/nanosocket.js", method)
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/javascript; charset=utf-8"
    assert reply.headers["cache-control"] == "no-cache"
    assert int(reply.headers["content-length"]) == len(SCRIPT)
    assert reply.body == (SCRIPT if method == "GET" else b"")
    etag = reply.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [("{etag}", 304), ('"other", {etag}', 304), ("W/{etag}", 304), ("*", 304), ('"other"', 200)],
)
async def test_client_script_revalidation(ns: Harness, if_none_match: str, status: int) -> None:
    server = await ns.start()
    etag = (await ns.http(server, "/nanosocket.js")).headers["etag"]
    reply = await ns.http(
        server, "/nanosocket.js", headers=[("If-None-Match", if_none_match.format(etag=etag))]
    )
    assert reply.status == status
    assert reply.headers["etag"] == etag
    assert reply.body == (b"" if status == 304 else SCRIPT)
    if status == 304:
        assert "content-length" not in reply.headers


async def test_a_route_of_the_app_takes_precedence(ns: Harness) -> None:
    server = await ns.start()
    server.route("/nanosocket.js")(lambda request: "mine")
    assert (await ns.http(server, "/nanosocket.js")).body == b"mine"


async def test_no_dashboard_unless_asked(ns: Harness) -> None:
    server = await ns.start()
    assert (await ns.http(server, "/dashboard")).status == 404


def test_dashboard_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="dashboard_token"):
        NanoSocket(dashboard_token=TOKEN)
    with pytest.raises(ConfigurationError, match="dashboard_token"):
        NanoSocket(dashboard=True, dashboard_token="short")
    assert NanoSocket(dashboard=True, dashboard_token=TOKEN).options.dashboard_token == TOKEN


async def test_dashboard_page_is_served(ns: Harness) -> None:
    server = await ns.start(dashboard=True)
    reply = await ns.http(server, "/dashboard")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert b'from "/nanosocket.js"' in reply.body
    assert "etag" in reply.headers


async def test_dashboard_socket_with_token_gets_stats_and_is_not_the_apps(ns: Harness) -> None:
    server = await ns.start(dashboard=True, dashboard_token=TOKEN, path="/ws")
    connections, disconnects = Recorder(), Recorder()
    server.on("connection", connections)
    server.on("disconnect", disconnects)
    app_peer = await ns.v1(server, path="/ws")
    await connections.wait(1)
    app_socket: Socket = connections.calls[0][0]
    app_socket.join("games")

    dashboard = await ns.v1(server, {"token": TOKEN}, path="/dashboard/ws")
    (first,) = await dashboard.expect("stats")
    assert first["connections"] == 1
    assert {"name": "games", "size": 1} in first["rooms"]
    assert first["adapter"]["type"] == "MemoryAdapter"
    for key in ("messages_in_per_second", "messages_out_per_second", "bytes_out_per_second"):
        assert isinstance(first[key], (int, float))
    assert {"volatile_dropped", "backpressure_closes", "memory", "uptime"} <= set(first)
    # Pushed again (about once a second) while the dashboard stays connected.
    (second,) = await dashboard.expect("stats")
    assert second["time"] > first["time"]

    # The dashboard socket is nowhere in the app: not a connection, not in rooms or counts.
    assert len(connections.calls) == 1
    assert server.connection_count == 1
    assert server.room_names == ["games"]
    assert dashboard.sid not in server.sockets
    out_before = server.stats.messages_out
    await dashboard.expect("stats")
    assert server.stats.messages_out == out_before

    dashboard.ws.close()
    await dashboard.closed()
    app_peer.ws.close()
    await disconnects.wait(1)
    assert len(disconnects.calls) == 1


@pytest.mark.parametrize("auth", [None, {"token": "wrong-token"}, {"token": 12345678}, "dashboard-secret"])
async def test_dashboard_refuses_a_wrong_token(ns: Harness, auth: Any) -> None:
    server = await ns.start(dashboard=True, dashboard_token=TOKEN)
    peer = await ns.v1_unconnected(server, path="/dashboard/ws")
    peer.emit("$connect", auth)
    (refusal,) = await peer.expect("$connect_error")
    assert refusal["message"] == "the dashboard needs its token (dashboard_token)"
    assert await peer.close_code() == 1008
    assert server.stats.connections_rejected == 0  # the dashboard's own refusal


async def test_dashboard_without_token_asks_the_apps_middleware(ns: Harness) -> None:
    server = await ns.start(dashboard=True)
    seen: list[str] = []

    @server.use
    async def only_admins(socket: Socket) -> None:
        seen.append(socket.handshake.url)
        if socket.handshake.auth.get("role") != "admin":
            raise ConnectError("admins only", {"need": "admin"})

    refused = await ns.v1_unconnected(server, path="/dashboard/ws")
    refused.emit("$connect", {"role": "guest"})
    assert await refused.expect("$connect_error") == [{"message": "admins only", "data": {"need": "admin"}}]
    admitted = await ns.v1(server, {"role": "admin"}, path="/dashboard/ws")
    await admitted.expect("stats")
    assert seen == ["/dashboard/ws", "/dashboard/ws"]
    assert server.connection_count == 0


async def test_dashboard_without_token_or_middleware_admits_loopback(ns: Harness) -> None:
    server = await ns.start(dashboard=True)
    peer = await ns.v1(server, path="/dashboard/ws")
    (snapshot,) = await peer.expect("stats")
    assert snapshot["connections"] == 0
    assert snapshot["dashboards"] == 1


async def test_the_stats_stop_when_no_dashboard_is_connected(ns: Harness) -> None:
    server = await ns.start(dashboard=True, dashboard_token=TOKEN)
    dashboard = server._dashboard
    assert dashboard is not None
    assert dashboard._ticker is None
    peer = await ns.v1(server, {"token": TOKEN}, path="/dashboard/ws")
    await peer.expect("stats")
    assert dashboard._ticker is not None
    peer.ws.close()
    await peer.closed()
    await until(lambda: dashboard._ticker is None)


async def test_the_path_option_still_refuses_other_paths(ns: Harness) -> None:
    server = await ns.start(dashboard=True, path="/ws")
    with pytest.raises(HandshakeRejected):
        await ns.websocket(server, path="/elsewhere")
