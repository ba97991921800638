"""The examples under examples/ run for real, over sockets on 127.0.0.1, and do what they show.

Each example is loaded from its file and built on port 0; each is also run as a script, the way a
reader would run it. The chat demo is driven by a browser-like plain WebSocket client and by a
NanoSocketClient. The docs' code blocks compile, and README's are excerpts of examples/ files.
Waits are bounded by HANG_GUARD only to turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import re
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from nanosocket import (
    AckError,
    ConnectionClosedError,
    NanoSocketClient,
    WebSocket,
    connect,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HANG_GUARD = 10.0
T = TypeVar("T")

#: The subprocess tests run scripts that pick their own event loop: once is enough.
one_loop = pytest.mark.asyncio(loop_factories=["asyncio"])


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD)


def load(relative: str) -> ModuleType:
    """Import an example file as a module of its own (examples/ is not a package)."""
    path = EXAMPLES / relative
    name = "example_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_test_here() -> None:
    tested = {
        "server.py",
        "client.py",
        "rooms.py",
        "middleware_auth.py",
        "acks.py",
        "raw_echo.py",
        "shared_handlers.py",
        "at_least_once.py",
    }
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested
    assert {path.name for path in EXAMPLES.glob("*/*.py")} == {"app.py"}


# ----------------------------------------------------------------- server.py and client.py


async def test_readme_client_talks_to_readme_server(capsys: pytest.CaptureFixture[str]) -> None:
    server = load("server.py").create_app(port=0, host="127.0.0.1")
    async with server:
        result = await bounded(load("client.py").main(f"ws://127.0.0.1:{server.port}"))
        assert result["reply"] == {"ok": True}
        client_id = result["joined"]  # server.to(room) includes the socket that just joined
        assert isinstance(client_id, str) and len(client_id) == 20
    assert capsys.readouterr().out.splitlines() == [
        "welcome: Hello from NanoSocket!",
        "echo: hi",
        "ack: {'ok': True}",
        f"user-joined: {client_id} (that is us)",
    ]


async def test_readme_server_tells_a_room_who_joined() -> None:
    server = load("server.py").create_app(port=0, host="127.0.0.1")
    async with server:
        url = f"ws://127.0.0.1:{server.port}"
        async with NanoSocketClient(url) as first, NanoSocketClient(url) as second:
            joined: asyncio.Queue[str] = asyncio.Queue()
            first.on("user-joined", joined.put_nowait)
            first.emit("join-room", "lobby")
            assert await bounded(joined.get()) == first.id
            second.emit("join-room", "lobby")
            assert await bounded(joined.get()) == second.id
            assert server.get_room_size("lobby") == 2
            # The message handler answers only when asked: a plain emit gets just the echo.
            echoes: asyncio.Queue[Any] = asyncio.Queue()
            second.on("echo", echoes.put_nowait)
            second.emit("message", {"n": 1})
            assert await bounded(echoes.get()) == {"n": 1}


@one_loop
async def test_server_and_client_scripts() -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "server.py"),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        port = None
        while port is None:
            line = (await bounded(server.stderr.readline())).decode()
            assert line, "the server script ended before it listened"
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        out, err = await run_script("client.py", f"ws://127.0.0.1:{port}")
        lines = out.splitlines()
        assert lines[:3] == ["welcome: Hello from NanoSocket!", "echo: hi", "ack: {'ok': True}"], err
        assert lines[3].startswith("user-joined: ") and lines[3].endswith("(that is us)")
        server.send_signal(signal.SIGINT)  # run() closes gracefully on SIGINT and SIGTERM
        await bounded(server.communicate())
        assert server.returncode == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


async def run_script(name: str, *args: str) -> tuple[str, str]:
    """Run ``examples/<name>`` to its end; its stdout and stderr (it must exit with 0)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await bounded(process.communicate())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


@one_loop
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rooms.py", "'counts': {'announce': 3, 'say': 1, 'shout': 2}"),
        ("middleware_auth.py", "ConnectError: invalid token {'login': '/login'}"),
        ("acks.py", "slow: AckTimeoutError no acknowledgement within 0.1 s"),
        ("raw_echo.py", "reply: b'\\x00\\x01\\x02'"),
        ("shared_handlers.py", "whoami: ada"),
        ("at_least_once.py", "orders placed: ['tea', 'cake']"),
    ],
)
async def test_demo_scripts_run(name: str, expected: str) -> None:
    out, _ = await run_script(name, "--port", "0")
    assert expected in out


# ------------------------------------------------------------------------------ rooms.py


async def test_rooms_reach_each_member_once_and_leave_the_sender_out() -> None:
    rooms = load("rooms.py")
    async with rooms.create_app(port=0, host="127.0.0.1") as server:
        result = await bounded(rooms.demo(f"ws://127.0.0.1:{server.port}"))
    assert result["counts"] == {"announce": 3, "say": 1, "shout": 2}
    assert result["received"] == {
        # in red and blue, alice still gets the announcement once
        "alice": ["news: hello", "bob said: hi red", "shouted: hey all"],
        # bob said it (socket.to leaves him out); carol shouted it (socket.broadcast leaves her out)
        "bob": ["news: hello", "shouted: hey all"],
        "carol": ["news: hello"],
    }
    assert result["rooms"] == {"alice": ["blue", "red"], "bob": ["red"], "carol": ["blue"]}


async def test_rooms_are_gone_when_their_members_are() -> None:
    rooms = load("rooms.py")
    async with rooms.create_app(port=0, host="127.0.0.1") as server:
        reasons: asyncio.Queue[str] = asyncio.Queue()
        server.on("disconnect", lambda socket, reason: reasons.put_nowait(reason))
        await bounded(rooms.demo(f"ws://127.0.0.1:{server.port}"))
        assert [await bounded(reasons.get()) for _ in range(3)] == ["client disconnect"] * 3
        assert server.room_names == []
        assert server.connection_count == 0


# --------------------------------------------------------------------- middleware_auth.py


async def test_auth_middleware_accepts_a_token_and_refuses_a_forged_one() -> None:
    example = load("middleware_auth.py")
    async with example.create_app(port=0, host="127.0.0.1") as server:
        lines = await bounded(example.demo(f"ws://127.0.0.1:{server.port}"))
        assert server.stats.connections_rejected == 1
    assert lines == [
        "accepted as alice",
        "connect_error event: invalid token",
        "ConnectError: invalid token {'login': '/login'}",
    ]


async def test_auth_middleware_refuses_a_plain_client_without_auth() -> None:
    """A browser-style client sends no $connect: its auth is {} and it gets connect_error + 1008."""
    example = load("middleware_auth.py")
    async with example.create_app(port=0, host="127.0.0.1") as server:
        ws = await bounded(connect(f"ws://127.0.0.1:{server.port}/"))
        try:
            refusal = json.loads(await bounded(ws.recv()))
            assert refusal == {
                "event": "connect_error",
                "data": [{"message": "invalid token", "data": {"login": "/login"}}],
            }
            with pytest.raises(ConnectionClosedError) as closed:
                await bounded(ws.recv())
            assert closed.value.code == 1008
        finally:
            ws.abort()
        assert server.connection_count == 0


async def test_auth_middleware_gives_each_socket_its_user() -> None:
    example = load("middleware_auth.py")
    async with example.create_app(port=0, host="127.0.0.1") as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with (
            NanoSocketClient(url, auth={"token": "token-alice"}) as alice,
            NanoSocketClient(url, auth={"token": "token-bob"}) as bob,
        ):
            assert await bounded(bob.call("whoami")) == "bob"
            assert await bounded(alice.call("whoami")) == "alice"
            assert sorted(s.data["user"] for s in server.sockets.values()) == ["alice", "bob"]


# --------------------------------------------------------------------- shared_handlers.py


async def test_shared_handlers_serve_every_socket_before_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    shared = load("shared_handlers.py")
    async with shared.create_app(port=0, host="127.0.0.1") as server:
        lines = await bounded(shared.demo(f"ws://127.0.0.1:{server.port}"))
        second = await bounded(shared.demo(f"ws://127.0.0.1:{server.port}"))
    assert second == lines
    assert lines == [
        "echo: hello",
        "add: 5",
        "whoami: anonymous",
        "rename: AckError a name cannot be empty",
        "rename: ada",
        "whoami: ada",
    ]
    assert capsys.readouterr().out.splitlines() == ["server: echoed 'hello' to 127.0.0.1"] * 2


# ----------------------------------------------------------------------- at_least_once.py


async def test_at_least_once_places_each_order_once_though_copies_were_sent() -> None:
    example = load("at_least_once.py")
    orders: list[str] = []
    async with example.create_app(orders, port=0, host="127.0.0.1") as server:
        lines = await bounded(example.demo(f"ws://127.0.0.1:{server.port}"))
        copies = server.adapter.stats.duplicates
    assert lines == ["receipt 1 for tea", "receipt 2 for cake"]
    assert orders == ["tea", "cake"]
    assert copies >= 1  # the slow first order was sent again, and answered from the store


# -------------------------------------------------------------------------------- acks.py


async def test_acks_both_ways_with_an_error_and_a_timeout() -> None:
    acks = load("acks.py")
    async with acks.create_app(port=0, host="127.0.0.1") as server:
        lines = await bounded(acks.demo(f"ws://127.0.0.1:{server.port}"))
    assert lines == [
        "add: 5",
        "ask-me: the client answered 'PING'",
        "divide: AckError division by zero {'message': 'division by zero', 'type': 'ZeroDivisionError'}",
        "slow: AckTimeoutError no acknowledgement within 0.1 s",
    ]


async def test_a_failing_client_handler_is_an_ack_error_on_the_server() -> None:
    """The server's socket.call raises AckError; ask-me lets it escape, so the client gets one too."""
    acks = load("acks.py")
    async with acks.create_app(port=0, host="127.0.0.1") as server:
        errors: list[BaseException] = []
        server.on("error", lambda error, socket: errors.append(error))

        def refuse(question: str) -> str:
            raise ValueError(f"will not answer {question!r}")

        client = NanoSocketClient(f"ws://127.0.0.1:{server.port}")
        client.on("question", refuse)
        async with client:
            with pytest.raises(AckError) as failed:
                await bounded(client.call("ask-me", "why"))
    assert str(failed.value) == "will not answer 'why'"
    assert failed.value.data == {"message": "will not answer 'why'", "type": "AckError"}
    assert len(errors) == 1 and isinstance(errors[0], AckError)
    assert errors[0].data == {"message": "will not answer 'why'", "type": "ValueError"}


# ---------------------------------------------------------------------------- raw_echo.py


async def test_raw_echo_returns_text_as_text_and_bytes_as_bytes() -> None:
    raw = load("raw_echo.py")
    server = await raw.start(0)
    try:
        replies = await bounded(raw.demo(f"ws://127.0.0.1:{server.port}/"))
        assert replies == ["hello", b"\x00\x01\x02"]
    finally:
        await bounded(server.close())


# ----------------------------------------------------------------------- examples/chat/app.py


class Browser:
    """The chat page's side of the wire: a plain WebSocket, JSON envelopes, its own ack ids."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_ack = 0

    def emit(self, event: str, *args: Any) -> None:
        self.ws.send(json.dumps({"event": event, "data": list(args)}))

    def call(self, event: str, *args: Any) -> int:
        self.next_ack += 1
        self.ws.send(json.dumps({"event": event, "data": list(args), "ack": self.next_ack}))
        return self.next_ack

    def answer(self, ack: int, value: Any) -> None:
        self.ws.send(json.dumps({"ack": ack, "data": [value]}))

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await bounded(self.ws.recv()))
        return message


async def test_chat_page_is_served() -> None:
    chat = load("chat/app.py")
    async with chat.create_app(port=0, host="127.0.0.1") as server:
        reader, writer = await bounded(asyncio.open_connection("127.0.0.1", server.port))
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = await bounded(reader.read())  # the server closes after its answer
        finally:
            writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-type: text/html; charset=utf-8" in head.lower()
    assert body == (EXAMPLES / "chat" / "index.html").read_bytes()


async def test_chat_rooms_presence_messages_typing_and_leaving() -> None:
    chat = load("chat/app.py")
    async with chat.create_app(port=0, host="127.0.0.1") as server:
        url = f"ws://127.0.0.1:{server.port}/"
        alice = Browser(await bounded(connect(url)))
        bob_got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        bob = NanoSocketClient(url, reconnection=False)
        for event in ("presence", "message", "typing", "delivered"):
            bob.on(event, lambda *args, event=event: bob_got.put_nowait((event, *args)))
        try:
            # alice joins: the room's presence (just her), then her ack.
            ack = alice.call("join", "lobby", "alice")
            assert await alice.receive() == {"event": "presence", "data": ["lobby", ["alice"]]}
            joined = {"room": "lobby", "name": "alice", "members": ["alice"]}
            assert await alice.receive() == {"ack": ack, "data": [joined]}

            # bob joins: both see the presence list with both names.
            await bounded(bob.connect())
            reply = await bounded(bob.call("join", "lobby", "bob"))
            assert reply == {"room": "lobby", "name": "bob", "members": ["alice", "bob"]}
            assert await bounded(bob_got.get()) == ("presence", "lobby", ["alice", "bob"])
            assert await alice.receive() == {"event": "presence", "data": ["lobby", ["alice", "bob"]]}

            # bob says something: his ack is the "sent" tick. alice gets the message as a call;
            # her answer is the "delivered" tick bob then gets.
            assert await bounded(bob.call("say", "hello")) == {"mid": 1, "recipients": 1}
            message = {"from": "bob", "text": "hello", "id": bob.id, "mid": 1}
            received = await alice.receive()
            assert received == {"event": "message", "data": [message], "ack": received["ack"]}
            alice.answer(received["ack"], True)
            assert await bounded(bob_got.get()) == ("delivered", 1)

            # typing is relayed to the others in the room.
            bob.emit("typing", True)
            assert await alice.receive() == {"event": "typing", "data": ["bob", True]}

            # and the other way round (bob's handler answers the call: delivered).
            ack = alice.call("say", "hi bob")
            assert await alice.receive() == {"ack": ack, "data": [{"mid": 2, "recipients": 1}]}
            event, received = await bounded(bob_got.get())
            assert (event, received["from"], received["text"]) == ("message", "alice", "hi bob")
            assert await alice.receive() == {"event": "delivered", "data": [2]}

            # bob switches rooms: alice sees the lobby without him.
            reply = await bounded(bob.call("join", "games", "bob"))
            assert reply == {"room": "games", "name": "bob", "members": ["bob"]}
            assert await alice.receive() == {"event": "presence", "data": ["lobby", ["alice"]]}
            assert await bounded(bob_got.get()) == ("presence", "games", ["bob"])

            # bob comes back, then leaves for good: alice sees him come and go.
            await bounded(bob.call("join", "lobby", "bob"))
            assert await alice.receive() == {"event": "presence", "data": ["lobby", ["alice", "bob"]]}
            await bounded(bob.disconnect())
            assert await alice.receive() == {"event": "presence", "data": ["lobby", ["alice"]]}
            assert server.room_names == ["lobby"]
        finally:
            await bounded(bob.disconnect())
            alice.ws.abort()


async def test_chat_refuses_to_say_before_joining() -> None:
    chat = load("chat/app.py")
    async with (
        chat.create_app(port=0, host="127.0.0.1") as server,
        NanoSocketClient(f"ws://127.0.0.1:{server.port}/") as client,
    ):
        with pytest.raises(AckError, match="join a room first"):
            await bounded(client.call("say", "anyone?"))
        # A handler that raises never costs the connection.
        assert client.connected and client.id is not None
        # Empty names fall back: the lobby, and the guest name the server gave the socket.
        guest = f"guest-{client.id[:4]}"
        reply = await bounded(client.call("join", "", ""))
        assert reply == {"room": "lobby", "name": guest, "members": [guest]}


# -------------------------------------------------------------------------------- the docs

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown file, with the line each starts on."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in PYTHON_BLOCK.finditer(text)]


DOC_BLOCKS = [
    pytest.param(code, id=f"{path.relative_to(ROOT)}:{line}")
    for path in DOCS
    for line, code in python_blocks(path)
]


def test_readme_and_api_docs_have_python_blocks() -> None:
    assert len(python_blocks(ROOT / "README.md")) >= 2
    assert len(python_blocks(ROOT / "docs" / "api.md")) >= 10


@pytest.mark.parametrize("code", DOC_BLOCKS)
def test_doc_block_compiles(code: str) -> None:
    # Snippets may await at top level, as they would inside a coroutine.
    compile(code, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_readme_blocks_are_excerpts_of_examples() -> None:
    sources = [path.read_text(encoding="utf-8") for path in EXAMPLES.rglob("*.py")]
    readme = ROOT / "README.md"
    for line, code in python_blocks(readme):
        assert any(code in source for source in sources), f"README.md:{line} is not in examples/"
    text = readme.read_text(encoding="utf-8")
    assert "examples/server.py" in text and "examples/client.py" in text
