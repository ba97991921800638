"""The reference peer: a minimal echo server on the raw picows API, as fast as picows allows.

Each data frame is sent straight back from picows' zero-copy frame view (same opcode and FIN bit, so
fragmented messages are echoed fragment by fragment); pings are answered by picows itself. It runs on
uvloop with picows' default buffers, as picows ships.

    python -m benchmarks.peers.picows_echo --port 9002
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

_DATA_TYPES = frozenset((WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION))


class EchoListener(WSListener):
    """Echoes every data frame; answers a close frame and disconnects."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type in _DATA_TYPES:
            transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)
        elif msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


def _listener_factory(request: WSUpgradeRequest) -> EchoListener:
    return EchoListener()


async def _serve(host: str, port: int) -> None:
    server = await ws_create_server(_listener_factory, host, port, backlog=2048)
    print(f"picows echo server listening on ws://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal picows echo server (benchmark reference)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    args = parser.parse_args()
    uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
