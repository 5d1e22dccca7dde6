"""Web inputs in the configuration (issue 13): kind = "web", origins, limits, the identity key."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from s3forward.config import (
    InputKind,
    WebInputSettings,
    config_from_mapping,
    describe_config,
)
from s3forward.errors import ConfigError

SOURCE = "test.toml"
IDENTITY_KEY = "0123456789abcdef0123"


def document(server: dict[str, Any] | None = None, **web: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "kind": "web",
        "api_key": "site-key",
        "allowed_origins": ["https://www.example.com"],
        "identity_key": "${IDENTITY_KEY}",
    }
    site.update(web)
    return {
        "server": server or {},
        "inputs": {
            "site": {k: v for k, v in site.items() if v is not None},
            "srv": {"api_key": "k", "api_secret": "s"},
        },
        "connections": {
            "x": {
                "inputs": ["site", "srv"],
                "destination": "localdir",
                "local_path": "/tmp/b",
                "store_data_in_folders_by_date": "none",
            }
        },
    }


def load(server: dict[str, Any] | None = None, **web: Any) -> Any:
    return config_from_mapping(
        document(server, **web), source=SOURCE, env={"IDENTITY_KEY": IDENTITY_KEY}
    )


def problems(server: dict[str, Any] | None = None, **web: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(server, **web)
    return [str(p) for p in caught.value.problems]


def test_a_web_input_has_defaults_and_no_secret() -> None:
    config = load()
    site = config.inputs["site"]
    assert site.kind is InputKind.WEB
    assert config.inputs["srv"].kind is InputKind.SERVER
    assert site.web == WebInputSettings(
        allowed_origins=("https://www.example.com",), identity_key=site.web.identity_key
    )
    assert site.web.identity_key.reveal() == IDENTITY_KEY
    assert site.api_secret.reveal() == ""
    assert site.app_name == "site"


def test_every_web_setting_is_read() -> None:
    site = load(
        allowed_origins=["https://a.example", "http://127.0.0.1:8000/"],
        per_ip_requests_per_minute=10,
        per_ip_burst=5,
        per_device_requests_per_minute=4,
        per_device_burst=2,
        quota_batches_per_hour=100,
        quota_bytes_per_hour="1MiB",
        max_batch_bytes="32KiB",
        sdk_flags={"eventBatchingIntervalMillis": "5000"},
        require_issued_mpid=True,
    ).inputs["site"]
    assert site.web.allowed_origins == ("https://a.example", "http://127.0.0.1:8000")
    assert (site.web.per_ip_requests_per_minute, site.web.per_ip_burst) == (10, 5)
    assert (site.web.per_device_requests_per_minute, site.web.per_device_burst) == (4, 2)
    assert (site.web.quota_batches_per_hour, site.web.quota_bytes_per_hour) == (100, 1024**2)
    assert site.web.max_batch_bytes == 32 * 1024
    assert site.web.sdk_flags == {"eventBatchingIntervalMillis": "5000"}
    assert site.web.require_issued_mpid is True


def test_a_web_input_refuses_a_secret_and_needs_origins_and_a_key() -> None:
    found = problems(api_secret="s", allowed_origins=None, identity_key=None)
    assert any("inputs.site.api_secret: is not used by a kind" in p for p in found)
    assert any("inputs.site.allowed_origins: is required" in p for p in found)
    assert any("inputs.site.identity_key: is required" in p for p in found)


@pytest.mark.parametrize(
    "origin", ["www.example.com", "https://www.example.com/path", "*", "HTTPS://X.COM"]
)
def test_an_origin_must_be_scheme_host_and_port(origin: str) -> None:
    assert any("is not an origin" in p for p in problems(allowed_origins=[origin]))


def test_a_short_identity_key_is_refused_without_showing_it() -> None:
    found = problems(identity_key="short-key")
    assert any("identity_key: must be at least 16 characters" in p for p in found)
    assert not any("short-key" in p for p in found)


def test_web_path_prefix_and_client_ip_header() -> None:
    server = load({"web_path_prefix": "/mp/", "client_ip_header": "X-Forwarded-For"}).server
    assert (server.web_path_prefix, server.client_ip_header) == ("/mp", "x-forwarded-for")
    assert any("web_path_prefix" in p for p in problems({"web_path_prefix": "mp"}))
    assert any("client_ip_header" in p for p in problems({"client_ip_header": "a b"}))


def test_unknown_web_setting_is_reported_with_a_hint() -> None:
    assert any("did you mean 'per_ip_burst'" in p for p in problems(per_ip_bust=3))


def test_validate_config_masks_the_identity_key() -> None:
    described = describe_config(load())
    text = orjson.dumps(described).decode()
    assert IDENTITY_KEY not in text
    assert described["inputs"]["site"]["web"]["identity_key"] == "****"
    assert described["inputs"]["site"]["web"]["allowed_origins"] == ["https://www.example.com"]
