"""Connection-state recovery end to end: a real server, the Python client, and the fault proxy
between them cutting the line (reset: RST both ways; blackhole: silence until heartbeats notice).

Every wait is bounded by a hang guard only to turn a hang into a failure; nothing is timed. The
few sleeps make a cut last (about 2 s) or outlast ``max_disconnection``: durations of faults,
never assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from fault_proxy import FaultProxy
from recovery_kit import (
    CLIENT_TRANSPORT,
    CUT,
    GUARD,
    SERVER_HEARTBEAT,
    App,
    Client,
    blackholed,
    cut,
    expected,
    raw_connect,
    until,
)

from nanosocket import RecoveryOptions, Socket, WebSocketOptions, connect
from nanosocket.options import MiB


@pytest.fixture
async def stack() -> AsyncIterator[Callable[..., Awaitable[tuple[App, FaultProxy, Client]]]]:
    opened: list[Any] = []

    async def make(
        heartbeat: dict[str, Any] = SERVER_HEARTBEAT,
        transport: WebSocketOptions = CLIENT_TRANSPORT,
        **recovery: Any,
    ) -> tuple[App, FaultProxy, Client]:
        app = App(heartbeat=heartbeat, **recovery)
        await app.listen()
        proxy = await FaultProxy(app.server.port).start()
        client = Client(proxy.url, transport)
        opened.extend([client, proxy, app])
        await asyncio.wait_for(client.client.connect(), GUARD)
        await until(lambda: app.connections)
        return app, proxy, client

    yield make
    for item in opened:
        if isinstance(item, Client):
            await item.client.disconnect()
        elif isinstance(item, FaultProxy):
            await item.close()
        else:
            await item.server.close()


@pytest.mark.parametrize("how", ["reset", "blackhole"])
async def test_a_cut_is_recovered_exactly_once_in_order(stack: Any, how: str) -> None:
    app, proxy, client = await stack()
    first = app.last
    app.send_all_kinds()
    await until(lambda: len(client.got) == app.counter)
    await cut(app, proxy, client, how)
    assert client.connects[-1] == (first.id, True)
    assert app.last.recovered and app.last.id == first.id
    assert app.last.joined_rooms == {"room", "other"}
    assert app.last.data == {"fresh_id": first.id}
    app.send_all_kinds()  # live again after the replay
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)


async def test_a_client_that_sees_the_loss_first_takes_its_session_over(stack: Any) -> None:
    # Here the client's heartbeat notices the blackhole first: when it comes back, the server
    # still holds the old connection. Presenting its pid ends that one as lost and recovers it.
    app, proxy, client = await stack(
        heartbeat={"idle_timeout": 30.0},
        transport=WebSocketOptions(
            idle_timeout=0.5, close_timeout=0.3, max_backpressure=1 * MiB, backpressure_policy="drop"
        ),
    )
    first = app.last
    proxy.blackhole()
    app.send_all_kinds()  # into the hole
    await asyncio.sleep(CUT)  # the cut
    app.send_all_kinds()
    proxy.restore()
    await until(lambda: len(client.connects) == 2)
    assert app.disconnections == [(first.id, "transport close")]
    assert client.connects[-1] == (first.id, True)
    assert app.last.recovered and app.last is not first and app.server.sockets[first.id] is app.last
    assert app.last.joined_rooms == {"room", "other"}
    app.send_all_kinds()
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)


async def test_five_cuts_in_a_row(stack: Any) -> None:
    app, proxy, client = await stack()
    first_id = app.last.id
    for how in ("reset", "blackhole", "reset", "reset", "blackhole"):
        await cut(app, proxy, client, how, during=2)
        assert client.connects[-1] == (first_id, True)
    app.send_all_kinds(1)
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)
    assert [recovered for _, recovered in client.connects] == [False] + [True] * 5


async def test_nothing_sent_since_the_disconnect(stack: Any) -> None:
    app, proxy, client = await stack()
    first_id = app.last.id
    proxy.reset()
    await until(lambda: app.disconnections)
    proxy.restore()
    await until(lambda: len(client.connects) == 2)
    assert client.connects[-1] == (first_id, True)
    app.send_all_kinds(1)
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)


async def test_a_cut_longer_than_max_disconnection_starts_afresh(stack: Any) -> None:
    app, proxy, client = await stack(max_disconnection=0.3)
    first_id = app.last.id
    proxy.reset()
    await until(lambda: app.disconnections)
    app.send_all_kinds(1)
    await asyncio.sleep(0.6)  # outlast max_disconnection
    proxy.restore()
    await until(lambda: len(client.connects) == 2)
    new_id, recovered = client.connects[-1]
    assert not recovered and not client.client.recovered
    assert new_id != first_id and not app.last.recovered
    assert app.last.data == {"fresh_id": new_id}


async def test_a_log_that_lost_the_gap_starts_afresh(stack: Any) -> None:
    app, proxy, client = await stack(max_messages=3)
    first_id = app.last.id
    proxy.reset()
    await until(lambda: app.disconnections)
    app.send_all_kinds(2)  # 8 logged messages: more than the log keeps
    proxy.restore()
    await until(lambda: len(client.connects) == 2)
    assert client.connects[-1][1] is False and client.connects[-1][0] != first_id
    # Positions count from the new session: what follows arrives.
    before = app.counter
    app.send_all_kinds(1)
    await until(lambda: len(client.got) >= 4)
    assert client.got == list(range(before + 1, app.counter + 1))


async def test_a_message_to_a_room_joined_later_is_not_replayed(stack: Any) -> None:
    app, proxy, client = await stack()
    first = app.last

    def meanwhile() -> None:
        app.server.to("late").emit("msg", -1)  # sent before the socket is in "late"
        first.join("late")
        app.server.to("late").emit("msg", app._next())

    await blackholed(app, proxy, client, meanwhile)
    assert client.connects[-1] == (first.id, True)
    assert app.last.joined_rooms == {"room", "other", "late"}
    app.send_all_kinds(1)
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)


async def test_a_message_to_a_room_left_before_the_loss_is_replayed(stack: Any) -> None:
    app, proxy, client = await stack()
    first = app.last
    first.join("gone")

    def meanwhile() -> None:
        app.server.to("gone").emit("msg", app._next())  # written into the hole
        first.leave("gone")
        app.server.to("gone").emit("msg", -1)
        app.server.except_("other").emit("msg", -1)
        first.leave("other")
        app.server.except_("other").emit("msg", app._next())

    await blackholed(app, proxy, client, meanwhile)
    assert client.connects[-1] == (first.id, True)
    assert app.last.joined_rooms == {"room"}
    app.server.to("room").emit("msg", app._next())  # live again
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)


async def test_join_leave_join_during_the_connection(stack: Any) -> None:
    app, proxy, client = await stack()
    first = app.last
    # Live first: the history of these changes goes with the session.
    first.join("c")
    app.server.to("c").emit("msg", app._next())
    first.leave("c")
    app.server.to("c").emit("msg", -1)
    await until(lambda: len(client.got) == app.counter)

    def meanwhile() -> None:
        app.server.to("c").emit("msg", -1)
        first.join(["c", "room"])  # "room" is no change: it is in it already
        app.server.to("c").emit("msg", app._next())
        first.leave("c")
        app.server.to("c").emit("msg", -1)
        app.server.to("room").except_("c").emit("msg", app._next())
        first.join("c")
        app.server.to("c").emit("msg", app._next())
        app.server.to("room").except_("c").emit("msg", -1)
        app.server.in_(first.id).sockets_leave("room")
        app.server.to("room").emit("msg", -1)
        app.server.in_(first.id).sockets_join("room")
        app.server.to("room").emit("msg", app._next())

    await blackholed(app, proxy, client, meanwhile)
    assert client.connects[-1] == (first.id, True)
    assert app.last.joined_rooms == {"room", "other", "c"}

    # A second cut: the recovered socket's changes follow those of the first connection.
    second = app.last

    def again() -> None:
        second.leave("c")
        app.server.to("c").emit("msg", -1)
        app.server.delete_room("room")
        app.server.to("room").emit("msg", -1)
        second.join("c")
        app.server.to("c").emit("msg", app._next())

    await blackholed(app, proxy, client, again)
    assert client.connects[-1] == (first.id, True)
    assert app.last.joined_rooms == {"other", "c"}
    app.server.to("c").emit("msg", app._next())  # live again
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)
    assert [recovered for _, recovered in client.connects] == [False, True, True]


async def test_room_changes_beyond_the_cap_start_afresh(stack: Any) -> None:
    app, proxy, client = await stack(max_room_changes=3)
    first = app.last

    def meanwhile() -> None:
        app.server.to("room").emit("msg", -1)
        for _ in range(2):  # four changes after the client's last offset: one more than kept
            first.join("c")
            first.leave("c")

    await blackholed(app, proxy, client, meanwhile)
    new_id, recovered = client.connects[-1]
    assert not recovered and new_id != first.id and not app.last.recovered
    before = app.counter
    app.send_all_kinds(1)
    await until(lambda: len(client.got) >= 4)
    assert client.got == list(range(before + 1, app.counter + 1))


async def test_room_changes_within_the_cap_recover(stack: Any) -> None:
    app, proxy, client = await stack(max_room_changes=3)
    first = app.last
    for _ in range(5):  # before the client's last offset: dropped, and not needed
        first.join("c")
        first.leave("c")
    app.server.to("room").emit("msg", app._next())
    await until(lambda: len(client.got) == app.counter)

    def meanwhile() -> None:
        first.join("c")
        app.server.to("c").emit("msg", app._next())

    await blackholed(app, proxy, client, meanwhile)
    assert client.connects[-1] == (first.id, True)
    app.send_all_kinds(1)
    await until(lambda: len(client.got) >= app.counter)
    assert client.got == expected(app)


@pytest.mark.parametrize("skip", [False, True])
async def test_recovery_runs_the_middleware_unless_skipped(stack: Any, skip: bool) -> None:
    app, proxy, client = await stack(skip_middleware=skip)
    runs: list[bool] = []

    @app.server.use
    def count(socket: Socket, next: Callable[..., None]) -> None:
        runs.append(socket.recovered)
        next()

    proxy.reset()
    await until(lambda: app.disconnections)
    proxy.restore()
    await until(lambda: len(client.connects) == 2)
    assert client.connects[-1][1] is True
    assert runs == ([] if skip else [True])


# ----------------------------------------------------------------- server restarts


async def test_a_restarted_server_cannot_recover_memory_sessions() -> None:
    app = App()
    await app.listen()
    port = app.server.port
    async with FaultProxy(port) as proxy:
        client = Client(proxy.url)
        try:
            await asyncio.wait_for(client.client.connect(), GUARD)
            first_id = client.client.id
            await app.server.close()  # 1001: recoverable, but this process's log goes with it
            again = App(port=port)
            await again.listen()
            try:
                await until(lambda: len(client.connects) == 2)
                new_id, recovered = client.connects[-1]
                assert not recovered and new_id != first_id
            finally:
                await client.client.disconnect()
                await again.server.close()
        finally:
            await client.client.disconnect()


async def test_the_same_server_listening_again_recovers_after_1001() -> None:
    app = App()
    await app.listen()
    port = app.server.port
    async with FaultProxy(port) as proxy:
        client = Client(proxy.url)
        try:
            await asyncio.wait_for(client.client.connect(), GUARD)
            first_id = client.client.id
            await app.server.close()
            assert app.disconnections[-1][1] == "server shutting down"
            app.server.to("room").emit("msg", app._next())
            await app.server.listen(port)
            await until(lambda: len(client.connects) == 2)
            assert client.connects[-1] == (first_id, True)
            await until(lambda: client.got)
            assert client.got == [1]
        finally:
            await client.client.disconnect()
            await app.server.close()


# ------------------------------------------------------------- the session id itself


async def test_a_pid_is_used_once_and_cannot_be_forged() -> None:
    app = App()
    await app.listen()
    try:
        port = app.server.port
        ws, first = await raw_connect(port)
        assert first["recovered"] is False and len(first["pid"]) >= 24
        ws.abort()
        await until(lambda: app.disconnections)
        position = {"pid": first["pid"], "epoch": first["epoch"], "offset": first["offset"]}
        for request in ({**position, "pid": "A" * 24}, {"offset": 0}, "not an object"):
            other, answer = await raw_connect(port, request)
            assert answer["recovered"] is False and answer["id"] != first["id"]
            other.abort()
        # Unknown pids consumed nothing: the real one still recovers.
        ws2, second = await raw_connect(port, position)
        assert second["recovered"] is True and second["id"] == first["id"]
        assert second["pid"] != first["pid"]
        ws2.abort()
        await until(lambda: len(app.disconnections) >= 5)
        ws3, third = await raw_connect(port, position)  # the first pid, again
        assert third["recovered"] is False and third["id"] != first["id"]
        ws3.abort()
        await until(lambda: len(app.disconnections) >= 6)
        # A pid presented with a wrong epoch or an offset the log never had is spent all the same.
        for wrong in ({"epoch": "another"}, {"offset": second["offset"] + 1}):
            ws4, fourth = await raw_connect(port)
            ws4.abort()
            await until(lambda: app.disconnections[-1][0] == fourth["id"])  # noqa: B023
            retry = {"pid": fourth["pid"], "epoch": fourth["epoch"], "offset": fourth["offset"]}
            ws5, fifth = await raw_connect(port, {**retry, **wrong})
            assert fifth["recovered"] is False
            ws5.abort()
            ws6, sixth = await raw_connect(port, retry)
            assert sixth["recovered"] is False and sixth["id"] != fourth["id"]
            ws6.abort()
    finally:
        await app.server.close()


async def test_a_session_lost_again_during_its_connect_step_stays() -> None:
    app = App()
    await app.listen()
    try:
        port = app.server.port
        ws, first = await raw_connect(port)
        ws.abort()
        await until(lambda: app.disconnections)
        hold = asyncio.Event()
        waiting: list[str] = []
        cancelled: list[str] = []

        @app.server.use
        async def slow(socket: Socket) -> None:
            if socket.recovered and not hold.is_set():
                waiting.append(socket.id)
                try:
                    await hold.wait()
                except asyncio.CancelledError:
                    cancelled.append(socket.id)
                    raise

        position = {"pid": first["pid"], "epoch": first["epoch"], "offset": first["offset"]}
        again = await connect(f"ws://127.0.0.1:{port}", subprotocols=("nanosocket.v1",))
        again.send_text(orjson.dumps({"event": "$connect", "data": [None, position]}).decode())
        await until(lambda: waiting)
        again.abort()  # lost while its middleware runs
        await until(lambda: cancelled)
        hold.set()
        ws2, second = await raw_connect(port, position)
        assert second["recovered"] is True and second["id"] == first["id"]
        ws2.abort()
    finally:
        await app.server.close()


async def test_recovery_off_changes_nothing() -> None:
    app = App(off=True)
    await app.listen()
    try:
        ws, answer = await raw_connect(app.server.port, {"pid": "x", "epoch": "y", "offset": 0})
        assert answer == {"id": answer["id"], "dedup_window": 300.0}
        await until(lambda: app.connections)
        app.last.emit("msg", 1)
        app.server.to("room").emit("msg", 2)
        assert orjson.loads(await ws.recv()) == {"event": "msg", "data": [1]}
        assert orjson.loads(await ws.recv()) == {"event": "msg", "data": [2]}
        ws.abort()
        await until(lambda: app.disconnections)
        async with FaultProxy(app.server.port) as proxy:
            client = Client(proxy.url)
            try:
                await asyncio.wait_for(client.client.connect(), GUARD)
                proxy.reset()
                await until(lambda: len(app.disconnections) == 2)
                proxy.restore()
                await until(lambda: len(client.connects) == 2)
                assert [recovered for _, recovered in client.connects] == [False, False]
                assert client.connects[0][0] != client.connects[1][0]
            finally:
                await client.client.disconnect()
    finally:
        await app.server.close()


def test_an_adapter_without_a_log_refuses_recovery() -> None:
    from nanosocket import Adapter, ConfigurationError, MemoryAdapter

    # What an adapter that does not override enable_recovery does.
    with pytest.raises(ConfigurationError, match="recovery"):
        Adapter.enable_recovery(MemoryAdapter(), RecoveryOptions())
