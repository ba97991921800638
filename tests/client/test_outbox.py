"""The client's offline queue limits (count, bytes, age) and how what they drop is reported:
a call fails with MessageDropped, an emit goes to the ``drop`` handlers; both are counted in
``client.dropped``. Against the protocol server of client_kit.py (or no server at all).

The one sleep outlasts ``max_queue_age``: the duration of a fault, never an assertion.
"""

from __future__ import annotations

import asyncio

import pytest
from client_kit import Kit, Recorder, until, within

from nanosocket import (
    ConfigurationError,
    ConnectionClosedError,
    DeliveryTimeoutError,
    MessageDropped,
    NanoSocketClient,
)

NOWHERE = "ws://127.0.0.1:9/"


async def test_over_the_count_the_oldest_emit_goes_and_is_reported(kit: Kit) -> None:
    client = kit.client(NOWHERE, max_queue_size=2)
    events = Recorder(client, "drop")
    for n in range(4):
        assert client.emit("echo", n) is True
    assert client.queued == 2 and client.dropped == 2
    assert events.of("drop") == [("queue_full", "echo"), ("queue_full", "echo")]


async def test_over_the_bytes_the_oldest_go_and_a_too_big_one_is_refused(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, max_queue_bytes=100)
    events = Recorder(client, "drop")
    assert client.emit("echo", "a" * 40) is True
    assert client.emit("echo", "b" * 40) is True  # about 55 bytes each: the first goes
    assert events.of("drop") == [("queue_bytes", "echo")]
    assert client.emit("echo", "c" * 200) is False  # bigger than the whole queue
    assert events.of("drop")[-1] == ("queue_bytes", "echo")
    assert client.queued == 1 and client.dropped == 2
    await within(client.connect())
    await until(lambda: server.events("echo"))
    assert server.events("echo") == [("echo", ["b" * 40])]


async def test_a_call_pushed_out_fails_with_message_dropped(kit: Kit) -> None:
    client = kit.client(NOWHERE, max_queue_bytes=100)
    call = asyncio.ensure_future(client.call("add", "x" * 40))
    await asyncio.sleep(0)
    client.emit("echo", "y" * 40)
    with pytest.raises(MessageDropped) as info:
        await within(call)
    assert info.value.why == "queue_bytes" and info.value.event == "add"
    assert isinstance(info.value, ConnectionClosedError) and info.value.code == 1006
    assert client.dropped == 1


async def test_what_waits_too_long_expires_and_is_reported(kit: Kit) -> None:
    server = await kit.server()
    client = kit.client(server, max_queue_age=0.1)
    events = Recorder(client, "drop")
    client.emit("echo", "old")
    call = asyncio.ensure_future(client.call("add", 1))
    await asyncio.sleep(0.2)  # outlast max_queue_age
    with pytest.raises(MessageDropped) as info:
        await within(call)
    assert info.value.why == "expired"
    await events.wait("drop")
    assert events.of("drop") == [("expired", "echo")]
    assert client.queued == 0 and client.dropped == 2
    client.emit("echo", "new")
    await within(client.connect())
    await until(lambda: server.events("echo"))
    assert server.events("echo") == [("echo", ["new"])]


async def test_at_least_once_calls_waiting_their_turn_count_against_the_limits(kit: Kit) -> None:
    client = kit.client(NOWHERE, max_queue_size=2, retries=1, ack_timeout=1.0)
    calls = [asyncio.ensure_future(client.call("add", n)) for n in range(3)]
    await asyncio.sleep(0)
    assert client.queued == 2 and client.pending == 2
    with pytest.raises(MessageDropped, match="offline queue"):
        await within(calls[0])
    for call in calls[1:]:
        call.cancel()


async def test_a_drop_handler_of_the_wrong_shape_is_refused(kit: Kit) -> None:
    client = kit.client(NOWHERE)
    with pytest.raises(TypeError):
        client.on("drop", lambda why, event, extra: None)
    client.on("drop", lambda why: None)  # fewer arguments are fine


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_queue_bytes", 0),
        ("max_queue_bytes", 1.5),
        ("max_queue_age", 0),
        ("max_queue_age", float("nan")),
        ("retries", -1),
        ("retries", True),
    ],
)
def test_invalid_limits_are_refused_with_their_name(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        NanoSocketClient(NOWHERE, auto_connect=False, ack_timeout=1.0, **{option: value})  # type: ignore[arg-type]


async def test_drop_is_a_reserved_event_name() -> None:
    client = NanoSocketClient(NOWHERE, auto_connect=False)
    with pytest.raises(ValueError, match="cannot emit"):
        client.emit("drop")


async def test_no_copy_goes_to_a_server_that_tells_no_window(kit: Kit) -> None:
    server = await kit.server()  # the protocol server of client_kit.py announces no window
    client = kit.client(server, retries=3, ack_timeout=0.1)
    await within(client.connect())
    with pytest.raises(DeliveryTimeoutError, match="does not tell its de-duplication window") as info:
        await within(client.call("silent", 1))
    assert info.value.copies == 1
    assert server.events("silent") == [("silent", [1])]
