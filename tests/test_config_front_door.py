"""The [server] limits of issue 10: defaults, units, and bounds."""

from __future__ import annotations

from typing import Any

import pytest

from s3forward.config import ServerSettings, config_from_mapping
from s3forward.errors import ConfigError


def server(**settings: Any) -> ServerSettings:
    data = {
        "server": settings,
        "inputs": {"web": {"api_key": "k", "api_secret": "s", "app_name": "App"}},
        "connections": {
            "x": {
                "inputs": ["web"],
                "s3_bucket_name": "mp-forwarding-test",
                "store_data_in_folders_by_date": "none",
            },
        },
    }
    return config_from_mapping(data, source="test.toml", env={}).server


def test_the_front_door_limits_have_safe_defaults() -> None:
    settings = server()
    assert settings.max_header_bytes == 32 * 1024
    assert settings.header_timeout == 10.0
    assert settings.keep_alive_timeout == 15.0
    assert settings.max_connections == 1024
    assert settings.max_json_depth == 64


def test_the_front_door_limits_read_sizes_durations_and_numbers() -> None:
    settings = server(
        max_header_bytes="8KiB",
        header_timeout="2s",
        keep_alive_timeout="1m",
        max_connections=10,
        max_json_depth=20,
    )
    assert (settings.max_header_bytes, settings.header_timeout) == (8192, 2.0)
    assert (settings.keep_alive_timeout, settings.max_connections) == (60.0, 10)
    assert settings.max_json_depth == 20


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_json_depth", 201, "expected a number from 8 to 200, got 201"),
        ("max_connections", 0, "expected a number from 1 to 1000000, got 0"),
        ("max_header_bytes", 100, "1024"),
        ("header_timeout", "0s", "0.1"),
    ],
)
def test_front_door_limits_out_of_bounds_are_config_errors(
    key: str, value: Any, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        server(**{key: value})
    assert any(expected in str(p) and key in str(p) for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]
