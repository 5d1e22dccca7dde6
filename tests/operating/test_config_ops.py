"""The settings of issue 12: TLS paths, S3 timeouts, stall detection, where the config is found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from s3forward.config import (
    DEFAULT_CONFIG_PATH,
    DeliverySettings,
    config_from_mapping,
    default_config_path,
)
from s3forward.errors import ConfigError


def document(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": {"a": {"api_key": "k", "api_secret": "s", "app_name": "A"}},
        "connections": {
            "c": {
                "inputs": ["a"],
                "destination": "localdir",
                "local_path": str(tmp_path / "b"),
                "store_data_in_folders_by_date": "none",
            }
        },
        **sections,
    }


def problems(tmp_path: Path, **sections: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(document(tmp_path, **sections), source="t.toml")
    return "\n".join(str(p) for p in info.value.problems)


def test_the_new_delivery_settings_have_bounded_defaults_and_parse_durations(
    tmp_path: Path,
) -> None:
    defaults = DeliverySettings()
    assert (defaults.s3_connect_timeout, defaults.s3_read_timeout) == (5.0, 10.0)
    assert defaults.stalled_after == 60.0
    config = config_from_mapping(
        document(
            tmp_path,
            delivery={"s3_connect_timeout": "2s", "s3_read_timeout": 3, "stalled_after": "5m"},
        ),
        source="t.toml",
    )
    assert config.delivery.s3_connect_timeout == 2.0
    assert config.delivery.s3_read_timeout == 3.0
    assert config.delivery.stalled_after == 300.0


def test_timeouts_that_are_not_durations_are_reported(tmp_path: Path) -> None:
    text = problems(tmp_path, delivery={"s3_read_timeout": "soon", "stalled_after": 0})
    assert "delivery.s3_read_timeout" in text and "soon" in text
    assert "delivery.stalled_after" in text


def test_tls_needs_a_readable_certificate_and_key_together(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    assert "tls_key_file: is required when tls_cert_file is set" in problems(
        tmp_path, server={"tls_cert_file": str(cert)}
    )
    missing = problems(
        tmp_path, server={"tls_cert_file": str(cert), "tls_key_file": str(tmp_path / "no.pem")}
    )
    assert "server.tls_key_file" in missing and "cannot read" in missing
    config = config_from_mapping(
        document(tmp_path, server={"tls_cert_file": str(cert), "tls_key_file": str(cert)}),
        source="t.toml",
    )
    assert config.server.tls and config.server.tls_cert_file == cert


def test_the_config_is_found_through_s3forward_config_first(tmp_path: Path) -> None:
    named = tmp_path / "named.toml"
    assert default_config_path({"S3FORWARD_CONFIG": str(named)}) == named
    expected = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None
    assert default_config_path({}) == expected
    assert Path("/etc/s3forward/s3forward.toml") == DEFAULT_CONFIG_PATH
