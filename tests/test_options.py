"""WebSocketOptions: documented defaults, and every invalid value refused with the option's name."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from nanosocket.errors import ConfigurationError
from nanosocket.options import ServerOptions, WebSocketOptions, server_options

DEFAULTS: dict[str, Any] = {
    "max_payload_length": 1024 * 1024,
    "max_fragments": 1024,
    "max_control_payload": 125,
    "max_handshake_size": 16 * 1024,
    "max_headers": 64,
    "handshake_timeout": 10.0,
    "idle_timeout": 60.0,
    "close_timeout": 5.0,
    "max_backpressure": 64 * 1024,
    "backpressure_policy": "close",
    "subprotocols": (),
    "compression": "off",
    "compression_threshold": 1024,
    "compression_window_bits": 12,
    "compression_mem_level": 5,
    "max_compressed_size": 1024 * 1024,
}

NOT_NUMBERS: list[Any] = ["1", None, [1], True, False]

INVALID: dict[str, list[Any]] = {
    "max_payload_length": [0, -1, 1.0, 1.5, *NOT_NUMBERS],
    "max_fragments": [0, -5, 2.0, *NOT_NUMBERS],
    "max_control_payload": [1, 0, -1, 126, 1000, 125.0, *NOT_NUMBERS],
    "max_handshake_size": [255, 0, -1, 4096.0, *NOT_NUMBERS],
    "max_headers": [0, -1, 8.0, *NOT_NUMBERS],
    "handshake_timeout": [0, 0.0, -1, -0.5, math.inf, math.nan, -math.inf, "1", None, True, [1.0]],
    "idle_timeout": [0, 0.0, -1, math.inf, math.nan, "60", True, False],
    "close_timeout": [0, -0.1, math.inf, math.nan, None, "5", True],
    "max_backpressure": [0, -1, 1024.0, *NOT_NUMBERS],
    "backpressure_policy": ["CLOSE", "pause", "", None, 1],
    "subprotocols": [["chat"], "chat", ("",), ("chat", ""), (1,), ("chat", None), None, {"chat"}],
    "compression": ["on", "deflate", "Shared", "", True, None, 1],
    "compression_threshold": [-1, 1.0, "1", None, [1], True],
    # 8 is legal in RFC 7692 but zlib cannot compress with it.
    "compression_window_bits": [8, 16, 0, 12.0, *NOT_NUMBERS],
    "compression_mem_level": [0, 10, 5.0, *NOT_NUMBERS],
    "max_compressed_size": [0, -1, 1.5, *NOT_NUMBERS],
}

VALID_EDGES: dict[str, list[Any]] = {
    "max_payload_length": [1, 2**40],
    "max_fragments": [1, 10**6],
    "max_control_payload": [2, 125],
    "max_handshake_size": [256, 1024 * 1024],
    "max_headers": [1, 1000],
    "handshake_timeout": [0.001, 1, 3600.0],
    "idle_timeout": [None, 0.001, 1, 86400.0],
    "close_timeout": [0.001, 1, 60.0],
    "max_backpressure": [1, 2**30],
    "backpressure_policy": ["close", "drop"],
    "subprotocols": [(), ("chat",), ("Chat.V2", "superchat")],
    "compression": ["off", "shared", "dedicated"],
    "compression_threshold": [0, 1, 2**30],
    "compression_window_bits": [9, 15],
    "compression_mem_level": [1, 9],
    "max_compressed_size": [1, 2**40],
}


def test_the_tables_cover_every_option() -> None:
    names = set(WebSocketOptions.field_names())
    assert set(DEFAULTS) == names
    assert set(INVALID) == names
    assert set(VALID_EDGES) == names


def test_defaults_are_the_documented_ones() -> None:
    options = WebSocketOptions()
    for name, value in DEFAULTS.items():
        assert getattr(options, name) == value, name
        assert type(getattr(options, name)) is type(value), name


def test_field_names_in_declaration_order() -> None:
    assert WebSocketOptions.field_names() == tuple(DEFAULTS)


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in INVALID.items() for value in values],
    ids=[f"{name}={value!r}" for name, values in INVALID.items() for value in values],
)
def test_invalid_value_is_refused_with_the_options_name(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        WebSocketOptions(**{name: value})
    assert name in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in VALID_EDGES.items() for value in values],
    ids=[f"{name}={value!r}" for name, values in VALID_EDGES.items() for value in values],
)
def test_valid_edge_values_are_accepted(name: str, value: Any) -> None:
    assert getattr(WebSocketOptions(**{name: value}), name) == value


def test_options_are_frozen_and_slotted() -> None:
    options = WebSocketOptions(max_fragments=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_fragments = 9  # type: ignore[misc]
    assert not hasattr(options, "__dict__")  # slotted: one shared instance per endpoint, no dict
    assert dataclasses.replace(options, max_fragments=16).max_fragments == 16
    with pytest.raises(ConfigurationError, match="max_fragments"):
        dataclasses.replace(options, max_fragments=0)


def test_equal_options_compare_equal() -> None:
    assert WebSocketOptions(max_headers=10) == WebSocketOptions(max_headers=10)
    assert WebSocketOptions(max_headers=10) != WebSocketOptions(max_headers=11)


# ------------------------------------------------------------------ ServerOptions

SERVER_DEFAULTS: dict[str, Any] = {
    "max_payload_length": 1024 * 1024,
    "max_backpressure": 64 * 1024,
    "idle_timeout": 60.0,
    "handshake_timeout": 10.0,
    "close_timeout": 5.0,
    "max_fragments": 1024,
    "max_handshake_size": 16 * 1024,
    "max_headers": 64,
    "cors": None,
    "path": None,
    "max_pending_messages": 64,
    "ack_timeout": 30.0,
    "monitoring": True,
    "compression": "off",
    "compression_threshold": 1024,
    "compression_window_bits": 12,
    "compression_mem_level": 5,
    "max_compressed_size": 1024 * 1024,
    "dashboard": False,
    "dashboard_token": None,
    "rate_limit_messages": None,
    "rate_limit_messages_burst": None,
    "rate_limit_bytes": None,
    "rate_limit_bytes_burst": None,
    "recovery": None,
    "dedup_window": 300.0,
    "dedup_max_entries": 100_000,
    "dedup_max_bytes": 32 * 1024 * 1024,
    "dedup_max_reply": 64 * 1024,
}

SERVER_INVALID: dict[str, list[Any]] = {
    "max_payload_length": [0, 1.5, True],
    "max_backpressure": [0, "1"],
    "idle_timeout": [0, math.nan],
    "handshake_timeout": [None, -1],
    "close_timeout": [0, math.inf],
    "max_fragments": [0, None],
    "max_handshake_size": [255, 0],
    "max_headers": [0, 1.0],
    "cors": [["https://a.example"], "https://a.example", ("",), (None,)],
    "path": ["chat", "", 1],
    "max_pending_messages": [0, -1, 1.0, True],
    "ack_timeout": [0, -1, math.nan, None, "30"],
    "monitoring": ["no", 0, None],
    "compression": ["on", True, None],
    "compression_threshold": [-1, None],
    "compression_window_bits": [8, 16],
    "compression_mem_level": [0, 10],
    "max_compressed_size": [0, None],
    "dashboard": ["yes", 1, None],
    # Too short, not printable, not a string; and a token without dashboard=True.
    "dashboard_token": ["short", "line\nbreak-token", 12345678, b"bytes-token", "a-good-token"],
    "rate_limit_messages": [0, -1, math.nan, math.inf, True, "10"],
    # Below one message; and a burst without its rate.
    "rate_limit_messages_burst": [0.5, 0, math.inf, 10],
    "rate_limit_bytes": [0, -5, math.nan, False, b"1"],
    # Below max_payload_length (1 MiB): the largest message could never pass; without its rate.
    "rate_limit_bytes_burst": [1024, 0, math.inf, 2 * 1024 * 1024],
    "recovery": [True, {"max_disconnection": 1.0}, 120.0],
    "dedup_window": [0, -1.0, float("inf"), "300", None, True],
    "dedup_max_entries": [0, -1, 1.5, None, True],
    "dedup_max_bytes": [0, -1, 1.5, None],
    # Over dedup_max_bytes (32 MiB by default) too.
    "dedup_max_reply": [-1, 1.5, None, 64 * 1024 * 1024],
}


def test_server_option_tables_cover_every_option() -> None:
    names = {f.name for f in dataclasses.fields(ServerOptions)}
    assert set(SERVER_DEFAULTS) == names
    assert set(SERVER_INVALID) == names


def test_server_defaults_are_the_documented_ones() -> None:
    options = ServerOptions()
    for name, value in SERVER_DEFAULTS.items():
        assert getattr(options, name) == value, name


def _server_invalid_cases() -> list[Any]:
    cases = []
    for name, values in SERVER_INVALID.items():
        for value in values:
            cases.append(pytest.param(name, value, id=f"{name}={value!r}"))
    return cases


@pytest.mark.parametrize(("name", "value"), _server_invalid_cases())
def test_invalid_server_option_is_refused_with_its_name(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        ServerOptions(**{name: value})
    assert name in str(info.value)


def test_rate_limits_are_off_by_default_and_bursts_resolve() -> None:
    from nanosocket.options import RateLimits

    assert ServerOptions().rate_limits() is None
    # A burst defaults to one second's worth; the byte burst is at least max_payload_length.
    assert ServerOptions(rate_limit_messages=50).rate_limits() == RateLimits(50, 50.0, None, 1024 * 1024)
    assert ServerOptions(rate_limit_messages=0.5).rate_limits() == RateLimits(0.5, 1.0, None, 1024 * 1024)
    assert ServerOptions(rate_limit_bytes=1000, max_payload_length=4096).rate_limits() == RateLimits(
        None, 1.0, 1000, 4096.0
    )
    assert ServerOptions(rate_limit_bytes=10_000, max_payload_length=4096).rate_limits() == RateLimits(
        None, 1.0, 10_000, 10_000.0
    )
    given = ServerOptions(
        rate_limit_messages=10,
        rate_limit_messages_burst=100,
        rate_limit_bytes=5000,
        rate_limit_bytes_burst=8192,
        max_payload_length=8192,
    )
    assert given.rate_limits() == RateLimits(10, 100.0, 5000, 8192.0)


def test_a_byte_burst_below_max_payload_length_says_why() -> None:
    with pytest.raises(ConfigurationError, match="largest allowed size"):
        ServerOptions(rate_limit_bytes=100, rate_limit_bytes_burst=1000, max_payload_length=2000)


def test_server_options_give_the_engine_its_options() -> None:
    options = ServerOptions(max_payload_length=10, max_fragments=3, idle_timeout=None, max_headers=7)
    engine = options.websocket_options()
    assert isinstance(engine, WebSocketOptions)
    assert (engine.max_payload_length, engine.max_fragments, engine.idle_timeout, engine.max_headers) == (
        10,
        3,
        None,
        7,
    )
    assert engine.backpressure_policy == "close"


def test_server_options_give_the_engine_their_compression() -> None:
    options = ServerOptions(
        compression="dedicated",
        compression_threshold=0,
        compression_window_bits=10,
        compression_mem_level=2,
        max_compressed_size=4096,
    )
    engine = options.websocket_options()
    assert (
        engine.compression,
        engine.compression_threshold,
        engine.compression_window_bits,
        engine.compression_mem_level,
        engine.max_compressed_size,
    ) == ("dedicated", 0, 10, 2, 4096)
    assert server_options(compression="shared").compression == "shared"


def test_server_options_from_keywords() -> None:
    assert server_options(cors="*").cors == ("*",)
    assert server_options(cors=["https://a.example", "https://b.example"]).cors == (
        "https://a.example",
        "https://b.example",
    )
    assert server_options(path="/ws").path == "/ws"
    with pytest.raises(ConfigurationError, match="bogus"):
        server_options(bogus=1)
    with pytest.raises(ConfigurationError, match="max_fragments"):
        server_options(max_fragments=0)
