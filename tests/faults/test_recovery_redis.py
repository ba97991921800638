"""Connection-state recovery across nodes: RedisAdapter nodes sharing a real Redis (the one at
127.0.0.1:6379, keys under a prefix unique to each test, deleted afterwards), the Python client,
and the fault proxy cutting the line and sending the client back to another node.

Every wait is bounded by a hang guard only to turn a hang into a failure; nothing is timed. The
few sleeps make a cut last or outlast ``max_disconnection``: durations of faults, never
assertions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fault_proxy import FaultProxy
from recovery_kit import CLIENT_TRANSPORT, CUT, GUARD, SERVER_HEARTBEAT, App, Client, raw_connect, until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

from cluster_kit import RedisServer

from nanosocket import LogUnavailable, RedisAdapter, WebSocketOptions
from nanosocket.options import MiB

HERE = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:6379/0"


def position(app: App) -> int:
    """The last offset the app's node delivered."""
    return app.server.adapter.recovery_position()[1]


def adapter(prefix: str, url: str = REDIS_URL, **options: Any) -> RedisAdapter:
    return RedisAdapter(url, prefix=prefix, canary_interval=0.2, reconnect_delay_max=0.5, **options)


class Nodes:
    """Apps of one test: nodes of one cluster (one prefix), and a client behind a proxy."""

    def __init__(self) -> None:
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self.apps: list[App] = []
        self.proxies: list[FaultProxy] = []
        self.clients: list[Client] = []
        self.redis = aioredis.Redis.from_url(REDIS_URL)
        #: What the client must get, in the order of each sender.
        self.counter = 0

    async def node(
        self,
        port: int = 0,
        url: str = REDIS_URL,
        heartbeat: dict[str, Any] = SERVER_HEARTBEAT,
        sharded: bool = False,
        **recovery: Any,
    ) -> App:
        made = adapter(self.prefix, url, command_timeout=0.5, sharded=sharded)
        app = App(port=port, adapter=made, heartbeat=heartbeat, **recovery)
        await app.listen()
        self.apps.append(app)
        return app

    async def client_of(
        self, app: App, transport: WebSocketOptions = CLIENT_TRANSPORT
    ) -> tuple[FaultProxy, Client]:
        proxy = await FaultProxy(app.server.port).start()
        self.proxies.append(proxy)
        client = Client(proxy.url, transport)
        self.clients.append(client)
        await asyncio.wait_for(client.client.connect(), GUARD)
        await until(lambda: app.connections and app.connections[-1].id == client.client.id)
        return proxy, client

    def next(self) -> int:
        self.counter += 1
        return self.counter

    def send(self, app: App, socket_id: str, count: int = 2) -> None:
        """From ``app``: to the room, to the socket's id, to everyone; and what it must not get."""
        for _ in range(count):
            app.server.to("room").emit("msg", self.next())
            app.server.to(socket_id).emit("msg", self.next())
            app.server.broadcast("msg", self.next())
            app.server.to("elsewhere").emit("msg", -1)
            app.server.except_("other").emit("msg", -1)
            app.server.volatile.to("room").emit("volatile", -1)

    def expected(self) -> list[int]:
        return list(range(1, self.counter + 1))

    async def delivered(self, client: Client) -> None:
        """Wait until the client has everything sent so far, then check it got each once."""
        await until(lambda: len(client.got) >= self.counter)
        assert client.got == self.expected()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.client.disconnect()
        for proxy in self.proxies:
            await proxy.close()
        for app in self.apps:
            await app.server.close()
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}#*")]
        if keys:
            await self.redis.delete(*keys)
        await self.redis.aclose()


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    made = Nodes()
    try:
        yield made
    finally:
        await made.aclose()


async def lose(app: App, proxy: FaultProxy, how: str) -> None:
    """Cut the line (RST, or silence until the server's heartbeat gives up) and wait until the
    server has seen the loss."""
    lost = len(app.disconnections)
    if how == "reset":
        proxy.reset()
    else:
        proxy.blackhole()
    await until(lambda: len(app.disconnections) > lost)


async def come_back(proxy: FaultProxy, client: Client, to: App | None = None) -> None:
    connects = len(client.connects)
    if to is not None:
        proxy.redirect(to.server.port)
    proxy.restore()
    await until(lambda: len(client.connects) > connects)


@pytest.mark.parametrize("how", ["reset", "blackhole"])
async def test_a_cut_is_recovered_on_the_same_node(nodes: Nodes, how: str) -> None:
    a = await nodes.node()
    proxy, client = await nodes.client_of(a)
    first = a.last
    nodes.send(a, first.id)
    await nodes.delivered(client)
    await lose(a, proxy, how)
    nodes.send(a, first.id)
    first.emit("msg", nodes.next())  # by the old socket object: through the log
    await asyncio.sleep(CUT / 4)
    await come_back(proxy, client)
    assert client.connects[-1] == (first.id, True)
    assert a.last.recovered and a.last.joined_rooms == {"room", "other"}
    assert a.last.data == {"fresh_id": first.id}
    nodes.send(a, first.id)  # live again after the replay
    await nodes.delivered(client)


@pytest.mark.parametrize("how", ["reset", "blackhole"])
async def test_a_client_recovers_on_another_node(nodes: Nodes, how: str) -> None:
    a, b = await nodes.node(), await nodes.node()
    proxy, client = await nodes.client_of(a)
    first = a.last
    sent_by: dict[str, list[int]] = {"a": [], "b": []}

    def send(app: App, name: str) -> None:
        before = nodes.counter
        nodes.send(app, first.id, 1)
        sent_by[name].extend(range(before + 1, nodes.counter + 1))

    send(a, "a")
    send(b, "b")
    await until(lambda: len(client.got) >= nodes.counter)
    await lose(a, proxy, how)
    send(a, "a")
    send(b, "b")
    await come_back(proxy, client, to=b)
    assert client.connects[-1] == (first.id, True)
    assert b.last.recovered and b.last.id == first.id
    assert b.last.joined_rooms == {"room", "other"}
    assert b.last.data == {"fresh_id": first.id}
    assert b.server.sockets[first.id] is b.last
    send(a, "a")
    send(b, "b")
    await until(lambda: len(client.got) >= nodes.counter)
    # Each once; the two nodes' messages interleave in the log's order, each node's in its own.
    assert sorted(client.got) == nodes.expected()
    for name in ("a", "b"):
        assert [n for n in client.got if n in sent_by[name]] == sent_by[name]


async def test_sharded_nodes_recover_across_nodes(nodes: Nodes) -> None:
    # Room channels carry the volatile messages; the logged ones go through the log all the same.
    a, b = await nodes.node(sharded=True), await nodes.node(sharded=True)
    proxy, client = await nodes.client_of(a)
    first_id = a.last.id
    await lose(a, proxy, "reset")
    nodes.send(a, first_id)
    nodes.send(b, first_id)
    await come_back(proxy, client, to=b)
    assert client.connects[-1] == (first_id, True)
    nodes.send(b, first_id)
    await until(lambda: len(client.got) >= nodes.counter)
    assert sorted(client.got) == nodes.expected()


async def test_a_client_back_elsewhere_first_ends_its_old_connection(nodes: Nodes) -> None:
    # The client's heartbeat notices the blackhole first: it is back, on b, while a still holds
    # its connection. b takes the session (stored live) and tells the others; a ends the old
    # connection as lost (its session is already taken: nothing is kept again).
    quick = WebSocketOptions(
        idle_timeout=0.5, close_timeout=0.3, max_backpressure=1 * MiB, backpressure_policy="drop"
    )
    a = await nodes.node(heartbeat={"idle_timeout": 30.0})
    b = await nodes.node(heartbeat={"idle_timeout": 30.0})
    await until(lambda: a.server.adapter.node_id in b.server.adapter.nodes)
    await until(lambda: b.server.adapter.node_id in a.server.adapter.nodes)
    proxy, client = await nodes.client_of(a, quick)
    first = a.last
    proxy.blackhole()
    nodes.send(b, first.id)  # into the hole, through a
    proxy.redirect(b.server.port)
    proxy.restore()
    await until(lambda: len(client.connects) == 2)
    assert client.connects[-1] == (first.id, True)
    await until(lambda: a.disconnections)
    assert a.disconnections == [(first.id, "transport close")]
    assert a.server.connection_count == 0 and b.server.sockets[first.id] is b.last
    nodes.send(b, first.id)
    await nodes.delivered(client)


async def test_five_cuts_in_a_row_across_nodes(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    proxy, client = await nodes.client_of(a)
    first_id = a.last.id
    here, there = a, b
    for how in ("reset", "blackhole", "reset", "reset", "blackhole"):
        await lose(here, proxy, how)
        nodes.send(a, first_id, 1)
        nodes.send(b, first_id, 1)
        await come_back(proxy, client, to=there)
        assert client.connects[-1] == (first_id, True)
        assert there.last.joined_rooms == {"room", "other"}
        here, there = there, here
        await until(lambda: len(client.got) >= nodes.counter)
    assert sorted(client.got) == nodes.expected()
    assert [recovered for _, recovered in client.connects] == [False] + [True] * 5


async def test_a_node_closed_gracefully_hands_its_clients_to_another(nodes: Nodes) -> None:
    # A rolling restart: the node closes its clients with 1001 (their sessions are kept) and
    # they come back to another node.
    a, b = await nodes.node(), await nodes.node()
    proxy, client = await nodes.client_of(a)
    first = a.last
    proxy.redirect(b.server.port)
    await a.server.close()
    assert a.disconnections[-1] == (first.id, "server shutting down")
    await until(lambda: len(client.connects) == 2)
    assert client.connects[-1] == (first.id, True)
    nodes.send(b, first.id)
    await nodes.delivered(client)


async def test_room_changes_are_replayed_exactly_across_nodes(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    proxy, client = await nodes.client_of(a)
    first = a.last
    first.join("gone")
    proxy.blackhole()  # what is written meanwhile falls in the hole
    b.server.to("late").emit("msg", -1)  # before it joins "late"
    b.server.to("gone").emit("msg", nodes.next())  # before it leaves "gone"
    await until(lambda: position(a) >= 2)
    first.join("late")
    first.leave("gone")
    b.server.to("late").emit("msg", nodes.next())
    b.server.to("gone").emit("msg", -1)
    b.server.in_(first.id).sockets_join("cluster-room")  # through the log, in order
    b.server.to("cluster-room").emit("msg", nodes.next())
    await until(lambda: a.disconnections)
    await come_back(proxy, client, to=b)
    assert client.connects[-1] == (first.id, True)
    assert b.last.joined_rooms == {"room", "other", "late", "cluster-room"}
    await nodes.delivered(client)


async def test_a_cut_longer_than_max_disconnection_starts_afresh(nodes: Nodes) -> None:
    a = await nodes.node(max_disconnection=0.5)
    b = await nodes.node(max_disconnection=0.5)
    proxy, client = await nodes.client_of(a)
    first_id = a.last.id
    await lose(a, proxy, "reset")
    b.server.to("room").emit("msg", -1)
    await asyncio.sleep(1.0)  # outlast max_disconnection
    await come_back(proxy, client, to=b)
    new_id, recovered = client.connects[-1]
    assert not recovered and new_id != first_id and not b.last.recovered
    assert b.last.data == {"fresh_id": new_id}
    b.server.to("room").emit("msg", nodes.next())
    await nodes.delivered(client)


async def test_a_trimmed_log_starts_afresh(nodes: Nodes) -> None:
    # MAXLEN ~ trims whole stream nodes (100 entries each): 400 messages leave far fewer than
    # the 400 + 1 the client would need.
    a = await nodes.node(max_messages=10)
    b = await nodes.node(max_messages=10)
    proxy, client = await nodes.client_of(a)
    first_id = a.last.id
    await lose(a, proxy, "reset")
    for _ in range(400):
        b.server.to("room").emit("msg", -1)
    await until(lambda: position(b) >= 400)
    await come_back(proxy, client, to=b)
    new_id, recovered = client.connects[-1]
    assert not recovered and new_id != first_id
    b.server.to("room").emit("msg", nodes.next())
    await nodes.delivered(client)


async def test_a_lost_log_has_a_new_epoch(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    proxy, client = await nodes.client_of(a)
    _, other = await nodes.client_of(b)  # stays connected through the change
    first_id = a.last.id
    old_epoch = client.client._epoch
    await lose(a, proxy, "reset")
    b.server.to("room").emit("msg", -1)
    await until(lambda: position(b) >= 1)
    # Redis loses the log (a restart without persistence, a flush): its keys are gone.
    await nodes.redis.delete(f"{nodes.prefix}#{{log}}", f"{nodes.prefix}#{{log}}#meta")
    b.server.to("room").emit("msg", -1)  # creates the log again, with a new epoch
    # The client connected to b through the change holds positions of the old log: b ends it
    # (1013) and it comes back afresh rather than ignore the new log's lower offsets.
    await until(lambda: len(other.connects) == 2)
    assert other.connects[-1][1] is False
    await come_back(proxy, client, to=b)
    new_id, recovered = client.connects[-1]
    assert not recovered and new_id != first_id and client.client._epoch != old_epoch
    b.server.to("room").emit("msg", nodes.next())
    await nodes.delivered(client)
    # It had the old log's message (delivered before the change), then the new one's.
    await until(lambda: other.got == [-1, nodes.counter])


async def test_a_pid_is_spent_once_across_nodes(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    ws, first = await raw_connect(a.server.port)
    ws.abort()
    await until(lambda: a.disconnections)
    position = {"pid": first["pid"], "epoch": first["epoch"], "offset": first["offset"]}
    for wrong in ({"epoch": "another"}, {"offset": first["offset"] + 5}, {"pid": "A" * 24}):
        other, answer = await raw_connect(b.server.port, {**position, **wrong})
        assert answer["recovered"] is False
        other.abort()
    # The wrong epoch and offset spent the pid: it no longer recovers anywhere.
    again, answer = await raw_connect(b.server.port, position)
    assert answer["recovered"] is False and answer["id"] != first["id"]
    again.abort()


async def test_socket_data_that_msgpack_cannot_store_starts_afresh(nodes: Nodes) -> None:
    a, b = await nodes.node(), await nodes.node()
    proxy, client = await nodes.client_of(a)
    a.last.data["when"] = object()  # not msgpack: the session cannot be stored
    await lose(a, proxy, "reset")
    await come_back(proxy, client, to=b)
    assert client.connects[-1][1] is False


async def test_emits_before_listen_go_out_when_the_node_starts(nodes: Nodes) -> None:
    b = await nodes.node()
    _, client = await nodes.client_of(b)
    late = App(adapter=adapter(nodes.prefix))
    nodes.apps.append(late)
    late.server.to("room").emit("msg", nodes.next())  # queued: the node is not started
    await late.listen()
    await nodes.delivered(client)


async def test_a_full_log_queue_fails_the_emit_loudly(nodes: Nodes) -> None:
    app = App(adapter=adapter(nodes.prefix, max_outbox=3))
    nodes.apps.append(app)  # never listening: nothing is written to Redis
    for _ in range(3):
        app.server.to("room").emit("msg", 1)
    with pytest.raises(LogUnavailable, match="not sent"):
        app.server.to("room").emit("msg", 1)
    app.server.volatile.to("room").emit("msg", 1)  # not logged: no such limit


@pytest.fixture
def private_redis() -> Any:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_emits_while_redis_is_stalled_arrive_once_and_in_order(
    nodes: Nodes, private_redis: Any
) -> None:
    # Redis stops answering (SIGSTOP): the appends time out and are sent again, while the first
    # ones wait in Redis's socket; when it answers again, each message is in the log once.
    a = await nodes.node(url=private_redis.url)
    b = await nodes.node(url=private_redis.url)
    proxy, client = await nodes.client_of(a)
    first_id = a.last.id
    assert a.server.adapter.health()["recovery_log"] == "ok"
    private_redis.pause()
    try:
        nodes.send(a, first_id)
        nodes.send(b, first_id)
        # Several command timeouts and retries; /health says so meanwhile.
        await until(lambda: a.server.adapter.health()["recovery_log"] == "failing")
        assert a.server.adapter.health()["status"] == "degraded"
        assert a.server.adapter.health()["recovery_log_queue"] > 0
        await asyncio.sleep(1.0)
    finally:
        private_redis.resume()
    await until(lambda: len(client.got) >= nodes.counter)
    await until(lambda: a.server.adapter.health()["recovery_log"] == "ok")
    assert sorted(client.got) == nodes.expected()
    await lose(a, proxy, "reset")
    nodes.send(b, first_id)
    await come_back(proxy, client, to=b)
    assert client.connects[-1] == (first_id, True)
    await until(lambda: len(client.got) >= nodes.counter)
    assert sorted(client.got) == nodes.expected()


async def test_redis_restarted_without_its_data_starts_clients_afresh(
    nodes: Nodes, private_redis: Any
) -> None:
    # Redis restarts empty (no persistence): the node meets a new log (at its next check, every
    # max_disconnection / 4 here) and ends its client with 1013; the client comes back afresh
    # and gets what follows, rather than ignore the new log's low offsets.
    a = await nodes.node(url=private_redis.url, max_disconnection=2.0)
    _, client = await nodes.client_of(a)
    first_id = a.last.id
    a.server.to("room").emit("msg", -1)
    await until(lambda: client.got == [-1])
    private_redis.kill()
    private_redis.start()
    await until(lambda: len(client.connects) == 2)
    new_id, recovered = client.connects[-1]
    assert not recovered and new_id != first_id
    assert a.disconnections[0] == (first_id, "recovery reset")
    a.server.to("room").emit("msg", nodes.next())
    await until(lambda: len(client.got) == 2)
    assert client.got == [-1, nodes.counter]


# ------------------------------------------------------------------ a node killed


NODE = HERE / "recovery_node.py"


class NodeProcess:
    """A node in a process of its own (tests/faults/recovery_node.py), killed at will."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, prefix: str, port: int = 0) -> NodeProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE.parents[1] / "src"), env.get("PYTHONPATH")])
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE),
            REDIS_URL,
            prefix,
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60.0)
        assert line.startswith(b"ready "), line
        return cls(process, int(line.split()[1]))

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


@pytest.fixture
async def processes() -> AsyncIterator[Callable[..., Awaitable[NodeProcess]]]:
    started: list[NodeProcess] = []

    async def start(prefix: str, port: int = 0) -> NodeProcess:
        node = await NodeProcess.start(prefix, port)
        started.append(node)
        return node

    yield start
    for node in started:
        await node.kill()


async def test_a_killed_node_s_client_recovers_elsewhere_and_on_it_restarted(
    nodes: Nodes, processes: Callable[..., Awaitable[NodeProcess]]
) -> None:
    killed = await processes(nodes.prefix)
    b = await nodes.node()
    proxy = await FaultProxy(killed.port).start()
    nodes.proxies.append(proxy)
    client = Client(proxy.url)
    nodes.clients.append(client)
    await asyncio.wait_for(client.client.connect(), GUARD)
    first_id = client.client.id
    assert first_id is not None
    # A message to its room reached it: its session (with the room) is in Redis by then.
    b.server.to("room").emit("msg", nodes.next())
    await nodes.delivered(client)

    await killed.kill()  # SIGKILL: the node saves nothing on its way out
    nodes.send(b, first_id)
    await come_back(proxy, client, to=b)
    assert client.connects[-1] == (first_id, True)
    assert b.last.joined_rooms == {"room", "other"}
    assert b.last.data == {"fresh_id": first_id, "node": "process"}
    await nodes.delivered(client)

    # The killed node restarts on its port; the client is cut from b and comes back to it.
    restarted = await processes(nodes.prefix, killed.port)
    await lose_and_return_to(proxy, client, restarted.port, b, nodes)
    assert client.connects[-1] == (first_id, True)
    await nodes.delivered(client)


async def lose_and_return_to(proxy: FaultProxy, client: Client, port: int, b: App, nodes: Nodes) -> None:
    """Cut the client (now on ``b``) and send it back to the node on ``port``."""
    lost = len(b.disconnections)
    connects = len(client.connects)
    proxy.reset()
    await until(lambda: len(b.disconnections) > lost)
    nodes.send(b, b.disconnections[-1][0])
    proxy.redirect(port)
    proxy.restore()
    await until(lambda: len(client.connects) > connects)
