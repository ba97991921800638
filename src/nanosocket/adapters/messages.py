"""The messages nodes of a cluster send each other: typed, versioned, msgpack (never pickle).

Sans-I/O: bytes in, ``Message`` out, and back. A message is the msgpack array

    [VERSION, type, origin, body]

``type`` is a ``MessageType``; ``origin`` the sending node's id; ``body`` an array whose fields
are given by the type's schema (``SCHEMAS``) and checked when decoded, so a handler can unpack
them without checking again. ``decode`` raises ``BadMessage`` (with a ``reason`` used as a metric
label) for anything else: garbage, another version, an unknown type, a field of the wrong type.
msgpack extension types (and so timestamps) are refused.

Broadcast payloads travel as the envelope already encoded at the origin (JSON text or msgpack,
the ``binary`` flag says which): a receiving node frames them and writes them, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, Final, NamedTuple

import msgpack

from ..protocol.handshake import Headers
from .base import BroadcastTarget, SocketInfo

__all__ = [
    "SCHEMAS",
    "VERSION",
    "BadMessage",
    "Message",
    "MessageType",
    "decode",
    "decode_socket_info",
    "decode_target",
    "encode",
    "encode_socket_info",
    "encode_target",
]

#: The version of this format; messages of any other version are dropped.
VERSION: Final = 1


class MessageType(IntEnum):
    """What a message asks or answers. Requests carry a request id; their responses go to the
    origin's own channel and carry the same id."""

    # Liveness
    CANARY = 1  #: periodic: "I am here"; a node also expects to hear its own (deaf-node check)
    HELLO = 2  #: a node (re)subscribed: the others answer with a canary at once
    BYE = 3  #: a node is closing: stop waiting for it
    # Fire and forget
    BROADCAST = 10  #: payload, binary, target
    SOCKETS_JOIN = 11  #: target, rooms
    SOCKETS_LEAVE = 12  #: target, rooms
    DISCONNECT_SOCKETS = 13  #: target, close
    DELETE_ROOM = 14  #: room
    SERVER_SIDE_EMIT = 15  #: request id or None (None: no reply wanted), event, args
    SESSION_TAKEN = 16  #: pid: a node recovered this session; the node still holding it ends it
    # Requests
    FETCH_SOCKETS = 20  #: request id, target
    FETCH_ROOM_NAMES = 21  #: request id
    FETCH_ROOM_SIZE = 22  #: request id, room
    BROADCAST_WITH_ACK = 23  #: request id, ack id, timeout, payload, binary, target
    # Responses
    FETCH_SOCKETS_RESPONSE = 30  #: request id, socket descriptors
    FETCH_ROOM_NAMES_RESPONSE = 31  #: request id, room names
    FETCH_ROOM_SIZE_RESPONSE = 32  #: request id, size
    SERVER_SIDE_EMIT_RESPONSE = 33  #: request id, answered, value
    BROADCAST_ACK_COUNT = 34  #: request id, ids of the sockets the message was written to
    BROADCAST_ACK = 35  #: request id, socket id, ok, value (ok False: value is the error object)


class BadMessage(ValueError):
    """Not a message of ours (``reason``: malformed, version, type, field)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Message(NamedTuple):
    kind: MessageType
    origin: str
    body: tuple[Any, ...]


# ------------------------------------------------------------------ field checks


def _str(value: Any) -> str:
    if type(value) is not str:
        raise TypeError("a string")
    return value


def _room(value: Any) -> str:
    if type(value) is not str or not value:
        raise TypeError("a non-empty string")
    return value


def _bytes(value: Any) -> bytes:
    if type(value) is not bytes:
        raise TypeError("bytes")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError("a boolean")
    return value


def _uint(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError("a non-negative integer")
    return value


def _seconds(value: Any) -> float:
    if type(value) not in (int, float) or not 0 < value < 86400:
        raise TypeError("a number of seconds")
    return float(value)


def _rooms(value: Any) -> frozenset[str]:
    if type(value) is not list:
        raise TypeError("a list of rooms")
    return frozenset(_room(item) for item in value)


def _ids(value: Any) -> list[str]:
    if type(value) is not list:
        raise TypeError("a list of ids")
    return [_room(item) for item in value]


def _args(value: Any) -> list[Any]:
    if type(value) is not list:
        raise TypeError("a list of arguments")
    return value


def _any(value: Any) -> Any:
    return value


def _optional_request(value: Any) -> int | None:
    return None if value is None else _uint(value)


def _target(value: Any) -> BroadcastTarget:
    if type(value) is not list or len(value) != 4:
        raise TypeError("a target [rooms, except_rooms, except_ids, volatile]")
    return BroadcastTarget(_rooms(value[0]), _rooms(value[1]), _rooms(value[2]), _bool(value[3]))


def _sockets(value: Any) -> list[SocketInfo]:
    if type(value) is not list:
        raise TypeError("a list of socket descriptors")
    return [decode_socket_info(item) for item in value]


def _names(value: Any) -> set[str]:
    return set(_rooms(value))


SCHEMAS: Final[dict[MessageType, tuple[Callable[[Any], Any], ...]]] = {
    MessageType.CANARY: (),
    MessageType.HELLO: (),
    MessageType.BYE: (),
    MessageType.BROADCAST: (_bytes, _bool, _target),
    MessageType.SOCKETS_JOIN: (_target, _rooms),
    MessageType.SOCKETS_LEAVE: (_target, _rooms),
    MessageType.DISCONNECT_SOCKETS: (_target, _bool),
    MessageType.DELETE_ROOM: (_room,),
    MessageType.SERVER_SIDE_EMIT: (_optional_request, _room, _args),
    MessageType.SESSION_TAKEN: (_room,),
    MessageType.FETCH_SOCKETS: (_uint, _target),
    MessageType.FETCH_ROOM_NAMES: (_uint,),
    MessageType.FETCH_ROOM_SIZE: (_uint, _room),
    MessageType.BROADCAST_WITH_ACK: (_uint, _uint, _seconds, _bytes, _bool, _target),
    MessageType.FETCH_SOCKETS_RESPONSE: (_uint, _sockets),
    MessageType.FETCH_ROOM_NAMES_RESPONSE: (_uint, _names),
    MessageType.FETCH_ROOM_SIZE_RESPONSE: (_uint, _uint),
    MessageType.SERVER_SIDE_EMIT_RESPONSE: (_uint, _bool, _any),
    MessageType.BROADCAST_ACK_COUNT: (_uint, _ids),
    MessageType.BROADCAST_ACK: (_uint, _room, _bool, _any),
}

_KINDS: Final = {int(kind): kind for kind in MessageType}


# ------------------------------------------------------------------ encode / decode


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code}")


def _fallback(value: Any) -> Any:
    """What msgpack cannot encode (a set, a custom object in socket.data) travels as its repr."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def encode(kind: MessageType, origin: str, *body: Any) -> bytes:
    """One message. Field values are those the schema reads back (targets and socket
    descriptors as given by ``encode_target`` / ``encode_socket_info``)."""
    return msgpack.packb([VERSION, int(kind), origin, list(body)], use_bin_type=True, default=_fallback)  # type: ignore[no-any-return]


def decode(data: bytes) -> Message:
    """The message in ``data``; BadMessage for anything that is not one of this version."""
    try:
        value = msgpack.unpackb(data, raw=False, ext_hook=_refuse_ext, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise BadMessage("malformed", f"not msgpack ({type(exc).__name__})") from None
    if type(value) is not list or len(value) != 4:
        raise BadMessage("malformed", "not a [version, type, origin, body] array")
    version, kind_number, origin, body = value
    if version != VERSION or type(version) is not int:
        raise BadMessage("version", f"version {version!r} (this node speaks {VERSION})")
    kind = _KINDS.get(kind_number) if type(kind_number) is int else None
    if kind is None:
        raise BadMessage("type", f"unknown message type {kind_number!r}")
    if type(origin) is not str or not origin:
        raise BadMessage("malformed", "no origin node id")
    schema = SCHEMAS[kind]
    if type(body) is not list or len(body) != len(schema):
        raise BadMessage("field", f"{kind.name} needs {len(schema)} fields")
    fields = []
    for index, (check, field) in enumerate(zip(schema, body, strict=True)):
        try:
            fields.append(check(field))
        except (TypeError, ValueError) as exc:
            raise BadMessage("field", f"{kind.name} field {index} must be {exc}") from None
    return Message(kind, origin, tuple(fields))


def encode_target(target: BroadcastTarget) -> list[Any]:
    return [list(target.rooms), list(target.except_rooms), list(target.except_ids), target.volatile]


def decode_target(value: Any) -> BroadcastTarget:
    return _target(value)


def encode_socket_info(info: SocketInfo) -> list[Any]:
    return [
        info.id,
        list(info.rooms),
        [list(pair) for pair in info.headers.raw_items()],
        info.query,
        info.auth,
        info.url,
        info.time,
        info.address,
        info.data,
        info.node,
    ]


def decode_socket_info(value: Any) -> SocketInfo:
    if type(value) is not list or len(value) != 10:
        raise TypeError("a socket descriptor")
    sid, rooms, headers, query, auth, url, time, address, data, node = value
    if type(headers) is not list or not all(
        type(pair) is list and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str
        for pair in headers
    ):
        raise TypeError("headers as [name, value] pairs")
    if type(query) is not dict or not all(type(k) is str and type(v) is str for k, v in query.items()):
        raise TypeError("a query as a map of strings")
    if type(time) not in (int, float):
        raise TypeError("a time")
    return SocketInfo(
        id=_room(sid),
        rooms=_rooms(rooms),
        headers=Headers((name, value) for name, value in headers),
        query=query,
        auth=auth,
        url=_str(url),
        time=float(time),
        address=_str(address),
        data=data,
        node=_room(node),
    )
