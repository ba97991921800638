"""Hardening, illegal frames: reserved opcodes, reserved bits without an extension, oversized and
fragmented control frames, invalid close frames, invalid UTF-8, broken fragmentation, unmasked
frames. Each closes its connection with the right code, whole or dribbled one byte per write;
nothing of it reaches a handler, nothing escapes into the event loop (the autouse fixture of
conftest.py), and the server's other clients carry on.
"""

from __future__ import annotations

import os
import struct

import pytest
from hardening_kit import Bystanders, Memory, forget, start_server, write_until_closed
from server_kit import Harness, RawTCP, Recorder

from nanosocket import NanoSocket
from nanosocket.protocol.frames import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT

FIN, RSV1, RSV2, RSV3 = 0x80, 0x40, 0x20, 0x10
ENVELOPE = b'{"event":"x","data":[1]}'


def frame(first: int, payload: bytes = b"", *, masked: bool = True) -> bytes:
    """A frame with exactly this first byte (FIN, RSV bits, opcode), masked unless told otherwise."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((first, mask_bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


ILLEGAL: dict[str, tuple[bytes, int]] = {
    "opcode-3": (frame(FIN | 0x3, ENVELOPE), 1002),
    "opcode-7": (frame(FIN | 0x7), 1002),
    "opcode-B": (frame(FIN | 0xB), 1002),
    "opcode-F": (frame(FIN | 0xF, b"x"), 1002),
    "rsv1-text": (frame(FIN | RSV1 | TEXT, ENVELOPE), 1002),
    "rsv2-text": (frame(FIN | RSV2 | TEXT, ENVELOPE), 1002),
    "rsv3-binary": (frame(FIN | RSV3 | BINARY, b"\x81\xa5event\xa1x"), 1002),
    "rsv1-ping": (frame(FIN | RSV1 | PING), 1002),
    "ping-126-bytes": (frame(FIN | PING, b"p" * 126), 1002),
    "pong-300-bytes": (frame(FIN | PONG, b"p" * 300), 1002),
    "close-126-bytes": (frame(FIN | CLOSE, close_payload(1000, b"r" * 124)), 1002),
    "fragmented-ping": (frame(PING, b"half"), 1002),
    "fragmented-close": (frame(CLOSE, close_payload(1000)), 1002),
    "close-one-byte": (frame(FIN | CLOSE, b"\x03"), 1002),
    **{
        f"close-code-{code}": (frame(FIN | CLOSE, close_payload(code)), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    },
    "close-reason-invalid-utf8": (frame(FIN | CLOSE, close_payload(1000, b"\xff\xfe")), 1007),
    "continuation-first": (frame(FIN | CONTINUATION, ENVELOPE), 1002),
    "new-message-inside-a-message": (frame(TEXT, b'{"event":') + frame(FIN | TEXT, ENVELOPE), 1002),
    "unmasked": (frame(FIN | TEXT, ENVELOPE, masked=False), 1002),
    "length-not-minimal-16": (b"\x81\xfe\x00\x05" + os.urandom(4) + b"hello", 1002),
    "length-not-minimal-64": (b"\x81\xff" + struct.pack("!Q", 5) + os.urandom(4) + b"hello", 1002),
    "length-msb-set": (b"\x81\xff" + struct.pack("!Q", 1 << 63) + os.urandom(4), 1002),
    "invalid-utf8": (frame(FIN | TEXT, b'{"event":"x","data":["\xc3\x28"]}'), 1007),
    "surrogate": (frame(FIN | TEXT, b'{"event":"x","data":["\xed\xa0\x80"]}'), 1007),
    "overlong": (frame(FIN | TEXT, b'{"event":"x","data":["\xc0\xaf"]}'), 1007),
    "invalid-utf8-across-fragments": (
        frame(TEXT, b'{"event":"x","data":["\xe2\x82') + frame(FIN | CONTINUATION, b'\x28"]}'),
        1007,
    ),
    "utf8-cut-at-the-end": (
        frame(TEXT, b'{"event":"x","data":["') + frame(FIN | CONTINUATION, b'"]}\xe2\x82'),
        1007,
    ),
}


def dispatch_recorder(server: NanoSocket) -> Recorder:
    handled = Recorder()
    server.on("connection", lambda socket: socket.on("x", handled))
    return handled


async def offender(ns: Harness, server: NanoSocket) -> RawTCP:
    raw = await ns.tcp(server.port)
    assert await raw.upgrade(server.port) == 101
    return raw


async def send(raw: RawTCP, data: bytes, delivery: str) -> tuple[list[tuple[int, bytes]], tuple[int, str]]:
    """Send ``data`` whole or one byte per write; what came back up to the close frame."""
    if delivery == "whole":
        return await write_until_closed(raw, [data])
    return await write_until_closed(raw, (data[n : n + 1] for n in range(len(data))))


@pytest.mark.parametrize("delivery", ["whole", "dribbled"])
@pytest.mark.parametrize("case", list(ILLEGAL))
async def test_illegal_frames_close_with_the_right_code(ns: Harness, case: str, delivery: str) -> None:
    data, code = ILLEGAL[case]
    server = await start_server(ns)
    handled = dispatch_recorder(server)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    bystanders = await Bystanders.connect(ns, server)
    raw = await offender(ns, server)
    frames, (got, _) = await send(raw, data, delivery)
    assert frames == [] and got == code
    ((_, why),) = await disconnects.wait()
    assert why == "transport error"
    assert handled.calls == []
    await bystanders.check()


@pytest.mark.parametrize("delivery", ["whole", "dribbled"])
async def test_invalid_utf8_closes_before_its_frame_has_ended(ns: Harness, delivery: str) -> None:
    """A text frame that can no longer be valid UTF-8 closes its connection (1007) on the bytes
    that make it so: the rest of its frame is never sent."""
    server = await start_server(ns)
    handled = dispatch_recorder(server)
    bystanders = await Bystanders.connect(ns, server)
    raw = await offender(ns, server)
    payload = b'{"event":"x","data":["' + "é".encode() * 500 + b"\xed\xa0\x80" + b"b" * 5000 + b'"]}'
    data = frame(FIN | TEXT, payload)
    invalid_end = len(data) - len(payload) + payload.index(b"\xed") + 3
    frames, (got, _) = await send(raw, data[:invalid_end], delivery)
    assert frames == [] and got == 1007
    assert handled.calls == []
    await bystanders.check()


async def test_a_stream_of_offenders_costs_nothing(ns: Harness, memory: Memory) -> None:
    server = await start_server(ns)
    handled = dispatch_recorder(server)
    bystanders = await Bystanders.connect(ns, server)
    await memory.baseline()
    for round_ in range(3):
        for n, (data, code) in enumerate(ILLEGAL.values()):
            raw = await offender(ns, server)
            raw.writer.write(data)
            _, (got, _) = await raw.read_until_close()
            assert got == code
            forget(ns, raw)
            if n % 10 == 0:
                await bystanders.check()
        assert handled.calls == [], round_
    await bystanders.check()
    del raw
    await memory.assert_released()


@pytest.mark.parametrize(
    ("code", "why"), [(1000, "client disconnect"), (1001, "client going away"), (3000, None)]
)
async def test_valid_close_frames_are_echoed(ns: Harness, code: int, why: str | None) -> None:
    server = await start_server(ns)
    disconnects = Recorder()
    server.on("disconnect", disconnects)
    raw = await offender(ns, server)
    raw.writer.write(frame(FIN | CLOSE, close_payload(code, "bye ✓".encode())))
    frames, (got, _) = await raw.read_until_close()
    assert frames == [] and got == code  # the status code is echoed
    ((_, reason_seen),) = await disconnects.wait()
    if why is not None:
        assert reason_seen == why


async def test_control_frames_between_fragments_are_legal(ns: Harness) -> None:
    """The positive control: a fragmented message with a ping between its fragments is handled,
    and the ping answered."""
    server = await start_server(ns)
    handled = dispatch_recorder(server)
    raw = await offender(ns, server)
    raw.writer.write(
        frame(TEXT, b'{"event":"x",')
        + frame(FIN | PING, b"between")
        + frame(CONTINUATION, b'"data":')
        + frame(FIN | CONTINUATION, b'["\xc3\xa9t\xc3\xa9"]}')
    )
    assert await raw.read_frame() == (PONG, b"between")
    await handled.wait()
    assert handled.calls == [("été",)]
