"""/health and /metrics over HTTP, and the counters behind them (server/metrics.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from server_kit import Harness, Recorder, until, within

from nanosocket import ConnectError, NanoSocket, Socket
from nanosocket.server.metrics import Stats, current_rss, render_prometheus

HEALTH_FIELDS = {
    "status",
    "adapter",
    "connections",
    "rooms",
    "uptime",
    "memory",
    "messages_in",
    "messages_out",
    "messages_per_second",
}


async def health(ns: Harness, server: NanoSocket) -> dict[str, Any]:
    reply = await ns.http(server, "/health")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    data: dict[str, Any] = reply.json()
    return data


async def metrics(ns: Harness, server: NanoSocket) -> dict[str, float]:
    """The samples of /metrics by name (parsed as Prometheus text, so the format is checked too)."""
    reply = await ns.http(server, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[sample.name] = sample.value
    return samples


async def health_until(
    ns: Harness, server: NanoSocket, condition: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll /health (bounded) until ``condition`` holds; the last reading."""
    readings: list[dict[str, Any]] = []

    async def poll() -> None:
        while True:
            readings.append(await health(ns, server))
            if condition(readings[-1]):
                return
            await asyncio.sleep(0.02)

    await within(poll())
    return readings[-1]


async def test_health_fields_of_an_idle_server(ns: Harness) -> None:
    server = await ns.start()
    data = await health(ns, server)
    assert set(data) == HEALTH_FIELDS
    assert data["status"] == "ok"
    assert data["adapter"] == {"type": "MemoryAdapter", "status": "ok"}
    assert data["connections"] == 0 and data["rooms"] == 0
    assert data["messages_in"] == 0 and data["messages_out"] == 0
    assert data["messages_per_second"] == 0
    assert isinstance(data["memory"], int) and data["memory"] > 1024 * 1024
    assert isinstance(data["uptime"], float) and data["uptime"] >= 0


async def test_health_values_follow_the_traffic(ns: Harness) -> None:
    server = await ns.start()

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.join(["lobby", f"own-{socket.id}"])
        socket.on("note", lambda *args: None)

    a = await ns.plain(server)
    b = await ns.plain(server)
    before = await health(ns, server)
    assert before["connections"] == 2
    assert before["rooms"] == 3  # lobby and one room each
    for n in range(5):
        a.emit("note", n)
    a.send([{"event": "note"}, {"event": "note"}])  # one message
    after_in = await health_until(ns, server, lambda h: h["messages_in"] == before["messages_in"] + 6)
    assert after_in["messages_out"] == before["messages_out"]
    assert server.emit("news", "x") == 2
    after_out = await health(ns, server)
    assert after_out["messages_out"] == before["messages_out"] + 2
    assert after_out["uptime"] >= before["uptime"]
    rate = await health_until(ns, server, lambda h: h["messages_per_second"] > 0)
    assert rate["messages_per_second"] > 0
    b.ws.close()
    fewer = await health_until(ns, server, lambda h: h["connections"] == 1)
    assert fewer["rooms"] == 2
    await asyncio.sleep(0.01)
    assert (await health(ns, server))["uptime"] > before["uptime"]


async def test_messages_per_second_falls_back_when_traffic_stops(ns: Harness) -> None:
    server = await ns.start()
    peer = await ns.plain(server)
    server.on("connection", lambda socket: None)
    for n in range(20):
        peer.emit("x", n)
    await health_until(ns, server, lambda h: h["messages_per_second"] > 0)
    quiet = await health_until(ns, server, lambda h: h["messages_per_second"] == 0)
    assert quiet["messages_in"] == 20


async def test_metrics_has_every_nanosocket_family(ns: Harness) -> None:
    server = await ns.start()
    samples = await metrics(ns, server)
    expected = {
        "nanosocket_connections_total",
        "nanosocket_disconnections_total",
        "nanosocket_connections_rejected_total",
        "nanosocket_messages_received_total",
        "nanosocket_messages_sent_total",
        "nanosocket_bytes_sent_total",
        "nanosocket_volatile_dropped_total",
        "nanosocket_backpressure_closes_total",
        "nanosocket_protocol_errors_total",
        "nanosocket_handler_errors_total",
        "nanosocket_unknown_acks_total",
        "nanosocket_connected_sockets",
        "nanosocket_rooms",
        "nanosocket_uptime_seconds",
        "nanosocket_resident_memory_bytes",
        "nanosocket_messages_per_second",
    }
    assert expected <= set(samples)
    assert all(name.startswith("nanosocket_") for name in samples)
    assert samples["nanosocket_resident_memory_bytes"] > 0


async def test_metrics_counters_count(ns: Harness) -> None:
    server = await ns.start()

    @server.use
    def only_friends(socket: Socket) -> None:
        if socket.handshake.query.get("friend") != "yes":
            raise ConnectError("strangers not allowed")

    @server.on("connection")
    def on_connection(socket: Socket) -> None:
        socket.join("room")
        socket.on("fail", lambda: 1 / 0)

    disconnects = Recorder()
    server.on("disconnect", disconnects)
    friend = await ns.plain(server, path="/?friend=yes")
    stranger = await ns.plain(server, path="/")
    assert await stranger.close_code() == 1008
    friend.emit("fail")
    friend.send({"ack": 99, "data": []})
    server.emit("news")
    await friend.expect("news")
    bad = await ns.plain(server, path="/?friend=yes")
    bad.ws.send("not json")
    assert await bad.close_code() == 1007
    await disconnects.wait()
    samples = await metrics(ns, server)
    assert samples["nanosocket_connections_total"] == 2
    assert samples["nanosocket_disconnections_total"] == 1
    assert samples["nanosocket_connections_rejected_total"] == 1
    assert samples["nanosocket_handler_errors_total"] == 1
    assert samples["nanosocket_unknown_acks_total"] == 1
    assert samples["nanosocket_protocol_errors_total"] == 1
    assert samples["nanosocket_messages_received_total"] == 3
    assert samples["nanosocket_messages_sent_total"] == 2  # connect_error to the stranger, news to friend
    assert samples["nanosocket_bytes_sent_total"] > 0
    assert samples["nanosocket_connected_sockets"] == 1
    assert samples["nanosocket_rooms"] == 1
    assert samples["nanosocket_backpressure_closes_total"] == 0
    assert samples["nanosocket_volatile_dropped_total"] == 0
    assert samples["nanosocket_uptime_seconds"] >= 0


async def test_stats_sampler_starts_and_stops_with_the_server(ns: Harness) -> None:
    server = await ns.start()
    assert server.stats._sampler is not None
    await server.close()
    assert server.stats._sampler is None


async def test_stats_sampler_computes_a_rate() -> None:
    stats = Stats()
    stats.start_sampling(interval=0.05)
    try:
        stats.messages_in += 100
        await until(lambda: stats.messages_per_second > 0)
        stats.messages_out += 0
        await until(lambda: stats.messages_per_second == 0)
    finally:
        stats.stop_sampling()
    assert stats._sampler is None


def test_render_prometheus_includes_the_given_gauges() -> None:
    stats = Stats()
    stats.messages_in = 7
    text = render_prometheus(stats, lambda: {"connected_sockets": 3, "rooms": 2}).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["nanosocket_messages_received"].type == "counter"
    assert families["nanosocket_messages_received"].samples[0].value == 7
    assert families["nanosocket_connected_sockets"].type == "gauge"
    assert families["nanosocket_connected_sockets"].samples[0].value == 3
    assert families["nanosocket_rooms"].samples[0].value == 2


def test_current_rss_is_a_plausible_size() -> None:
    rss = current_rss()
    assert isinstance(rss, int)
    assert 1024 * 1024 < rss < 1024**4
