"""The inter-node message codec (adapters/messages.py), bytes in and out: no Redis, no sockets."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanosocket.adapters.base import BroadcastTarget, SocketInfo
from nanosocket.adapters.messages import (
    SCHEMAS,
    VERSION,
    BadMessage,
    MessageType,
    decode,
    encode,
    encode_socket_info,
    encode_target,
)
from nanosocket.protocol.handshake import Headers

TARGET = BroadcastTarget(frozenset({"a", "b"}), frozenset({"c"}), frozenset({"id1"}), True)


def test_every_type_has_a_schema() -> None:
    assert set(SCHEMAS) == set(MessageType)


def test_a_broadcast_round_trips_with_its_routing() -> None:
    data = encode(MessageType.BROADCAST, "node-1", b'{"event":"x","data":[]}', False, encode_target(TARGET))
    message = decode(data)
    assert message.kind is MessageType.BROADCAST and message.origin == "node-1"
    assert message.body == (b'{"event":"x","data":[]}', False, TARGET)


def test_a_socket_descriptor_round_trips() -> None:
    info = SocketInfo(
        id="s" * 20,
        rooms=frozenset({"r"}),
        headers=Headers([("Host", "example"), ("X-A", "1"), ("x-a", "2")]),
        query={"q": "1"},
        auth={"token": "t"},
        url="/?q=1",
        time=1.5,
        address="10.0.0.1",
        data={"name": "bob", "tags": {"x"}, "obj": object()},
        node="n2",
    )
    data = encode(MessageType.FETCH_SOCKETS_RESPONSE, "n2", 7, [encode_socket_info(info)])
    request_id, (back,) = decode(data).body
    assert request_id == 7
    assert back.id == info.id and back.rooms == info.rooms and back.node == "n2"
    assert back.headers.raw_items() == [("host", "example"), ("x-a", "1"), ("x-a", "2")]
    assert back.query == {"q": "1"} and back.auth == {"token": "t"} and back.time == 1.5
    # What msgpack cannot carry travels as a list (sets) or its repr (anything else).
    assert back.data["name"] == "bob" and back.data["tags"] == ["x"]
    assert back.data["obj"].startswith("<object object")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (b"\x93\x01\x02\x03", "malformed"),  # three elements
        (msgpack.packb("text"), "malformed"),
        (msgpack.packb(msgpack.ExtType(1, b"")), "malformed"),
        (msgpack.packb([VERSION, 1, "n", [], "extra"]), "malformed"),
        (msgpack.packb([2, int(MessageType.CANARY), "n", []]), "version"),
        (msgpack.packb(["1", int(MessageType.CANARY), "n", []]), "version"),
        (msgpack.packb([True, int(MessageType.CANARY), "n", []]), "version"),
        (msgpack.packb([VERSION, 0, "n", []]), "type"),
        (msgpack.packb([VERSION, "CANARY", "n", []]), "type"),
        (msgpack.packb([VERSION, int(MessageType.CANARY), "", []]), "malformed"),
        (msgpack.packb([VERSION, int(MessageType.CANARY), 5, []]), "malformed"),
        (msgpack.packb([VERSION, int(MessageType.CANARY), "n", [1]]), "field"),
        (msgpack.packb([VERSION, int(MessageType.DELETE_ROOM), "n", [""]]), "field"),
        (msgpack.packb([VERSION, int(MessageType.FETCH_ROOM_SIZE), "n", [1.5, "r"]]), "field"),
        (msgpack.packb([VERSION, int(MessageType.BROADCAST), "n", [b"", 1, [[], [], [], False]]]), "field"),
        (
            msgpack.packb([VERSION, int(MessageType.BROADCAST), "n", [b"", True, [[5], [], [], False]]]),
            "field",
        ),
        (
            msgpack.packb([VERSION, int(MessageType.BROADCAST_WITH_ACK), "n", [1, 2, 0, b"", True, []]]),
            "field",
        ),
        (msgpack.packb([VERSION, int(MessageType.FETCH_SOCKETS_RESPONSE), "n", [1, [["x"]]]]), "field"),
    ],
)
def test_anything_else_is_a_bad_message_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode(data)
    assert caught.value.reason == reason


@given(st.binary(max_size=200))
def test_garbage_raises_bad_message_only(data: bytes) -> None:
    try:
        decode(data)
    except BadMessage:
        pass


@given(
    st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
            max_leaves=8,
        ),
        max_size=5,
    ),
    st.sampled_from(list(MessageType)),
)
def test_well_framed_messages_of_any_fields_decode_or_raise_bad_message(
    body: list[Any], kind: MessageType
) -> None:
    try:
        decode(msgpack.packb([VERSION, int(kind), "node", body]))
    except BadMessage:
        pass
