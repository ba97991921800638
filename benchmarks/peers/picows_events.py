"""The reference event server: NanoSocket's events, written by hand on the raw picows API with orjson.

It speaks the same wire format as a NanoSocket server to a plain client (docs/protocol.md):
``{"event": name, "data": [args]}`` in, ``{"event": name, "data": [args]}`` out, and does the same
work per message as ``benchmarks/apps/nanosocket_events.py``, with nothing else:

- ``echo(data)`` -> ``{"event":"echo","data":[data]}``;
- ``join(room)`` -> joins the room (a dict of sets), answers ``{"event":"joined","data":[room]}``;
- ``publish(room, payload)`` -> encodes ``{"event":"message","data":[payload]}`` and frames it once,
  then writes the same bytes to every member of the room, the publisher included;
- ``call(data)`` with an ``ack`` id -> ``{"ack":id,"data":[data]}``.

It is the bar NanoSocket's framework is measured against, so it is as fast as a careful hand-written
picows server gets:

- payloads are parsed by orjson straight from picows' zero-copy frame view; one dict lookup
  dispatches; handlers, constants and each connection's ``write`` are bound once;
- replies to the client whose frames are being handled are gathered and written with one
  ``writelines`` (one ``writev``) after the last frame of picows' read buffer
  (``WSFrame.last_in_buffer``), instead of one ``send`` system call per reply. This is what
  ``WSTransport.send`` cannot do (it writes every frame at once), so the server builds its own
  frames: a server frame is unmasked, a header and the payload. Broadcast copies to other clients are
  written at once (nothing of theirs is pending), the same bytes for each;
- picows still does everything else: the upgrade, frame parsing and unmasking, pings, the closing
  handshake.

What it leaves out (and NanoSocket does) is validation beyond what parsing gives, handler registries,
acks both ways, middleware, a backpressure policy, metrics. A malformed message closes the
connection (1007 / 1008). Runs on uvloop with picows' default buffers, like ``picows_echo.py``.

    python -m benchmarks.peers.picows_events --port 9004
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

import orjson
import uvloop
from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

TEXT = WSMsgType.TEXT
CONTINUATION = WSMsgType.CONTINUATION
CLOSE = WSMsgType.CLOSE
loads = orjson.loads
dumps = orjson.dumps

#: Headers of unmasked final text frames with a 7-bit length, by length.
_SHORT_HEADERS = [bytes((0x81, n)) for n in range(126)]


def text_header(n: int) -> bytes:
    """The header of an unmasked, final text frame of ``n`` payload bytes (RFC 6455 5.2)."""
    if n < 126:
        return _SHORT_HEADERS[n]
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


#: Room name -> its members.
rooms: dict[str, set[EventListener]] = {}


class EventListener(WSListener):
    """One client: decode its events, dispatch by name, answer."""

    __slots__ = ("fragments", "joined", "out", "transport", "write", "writelines")

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        underlying = transport.underlying_transport
        self.write = underlying.write
        self.writelines = underlying.writelines
        #: Frames for this client while a read buffer of its frames is handled, else None.
        self.out: list[bytes] | None = None
        self.joined: list[str] | None = None  # the rooms it is in, for the cleanup
        self.fragments: bytearray | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        out = self.out
        if out is None:
            out = self.out = []
        msg_type = frame.msg_type
        if msg_type == TEXT and frame.fin:
            try:
                message = loads(frame.get_payload_as_memoryview())
            except orjson.JSONDecodeError:
                return self._fail(WSCloseCode.INVALID_TEXT)
        elif msg_type == CLOSE:
            self._flush()
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return None
        elif msg_type in (TEXT, CONTINUATION):
            message = self._fragment(frame)
        else:
            message = None  # binary frames are not part of this benchmark; pings are picows' own
        if message is not None:
            try:
                HANDLERS[message["event"]](self, out, message["data"], message.get("ack"))
            except (KeyError, TypeError, ValueError, IndexError):
                return self._fail(WSCloseCode.POLICY_VIOLATION)
        if frame.last_in_buffer:
            self.out = None
            if out:
                self.writelines(out)
        return None

    def on_echo(self, out: list[bytes], data: list[Any], ack: Any) -> None:
        payload = dumps({"event": "echo", "data": data})
        out.append(text_header(len(payload)))
        out.append(payload)

    def on_join(self, out: list[bytes], data: list[Any], ack: Any) -> None:
        room = data[0]
        members = rooms.get(room)
        if members is None:
            members = rooms[room] = set()
        if self not in members:
            members.add(self)
            if self.joined is None:
                self.joined = []
            self.joined.append(room)
        payload = dumps({"event": "joined", "data": [room]})
        out.append(text_header(len(payload)))
        out.append(payload)

    def on_publish(self, out: list[bytes], data: list[Any], ack: Any) -> None:
        room, payload = data
        encoded = dumps({"event": "message", "data": [payload]})
        frame = text_header(len(encoded)) + encoded
        for member in rooms.get(room, ()):
            if member is self:
                out.append(frame)  # after this client's earlier replies, in order
            else:
                try:
                    member.write(frame)
                except RuntimeError:
                    pass  # its transport is closed; on_ws_disconnected takes it out of the room

    def on_call(self, out: list[bytes], data: list[Any], ack: Any) -> None:
        payload = dumps({"ack": ack, "data": data})
        out.append(text_header(len(payload)))
        out.append(payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.out = None
        for room in self.joined or ():
            members = rooms.get(room)
            if members is not None:
                members.discard(self)
                if not members:
                    del rooms[room]

    def _fragment(self, frame: WSFrame) -> Any:
        """A fragmented text message (rare): gather its frames; the message once complete."""
        if frame.msg_type == TEXT:
            self.fragments = bytearray()
        if self.fragments is None:
            return self._fail(WSCloseCode.PROTOCOL_ERROR)
        self.fragments += frame.get_payload_as_memoryview()
        if not frame.fin:
            return None
        payload, self.fragments = self.fragments, None
        try:
            return loads(payload)
        except orjson.JSONDecodeError:
            return self._fail(WSCloseCode.INVALID_TEXT)

    def _flush(self) -> None:
        out, self.out = self.out, None
        if out:
            self.writelines(out)
            out.clear()  # on_ws_frame may still hold it

    def _fail(self, code: WSCloseCode) -> None:
        self._flush()
        self.transport.send_close(code)
        self.transport.disconnect()


#: Event name -> handler, looked up once per message.
HANDLERS: dict[str, Callable[[EventListener, list[bytes], list[Any], Any], None]] = {
    "echo": EventListener.on_echo,
    "join": EventListener.on_join,
    "publish": EventListener.on_publish,
    "call": EventListener.on_call,
}


def _listener_factory(request: WSUpgradeRequest) -> EventListener:
    return EventListener()


async def _serve(host: str, port: int) -> None:
    server = await ws_create_server(_listener_factory, host, port, backlog=2048)
    print(f"picows event server listening on ws://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal picows + orjson event server (benchmark reference)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9004)
    args = parser.parse_args()
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
