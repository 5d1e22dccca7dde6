"""The [cluster] section, partition choice and message ids: fast unit tests, no servers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from s3forward.cluster.admin import retention_seconds
from s3forward.cluster.ingest import message_id
from s3forward.cluster.naming import ClusterNames, partition_of
from s3forward.config import ClusterRole, Config, config_from_mapping, describe_config
from s3forward.errors import ConfigError


def document(**cluster: Any) -> dict[str, Any]:
    return {
        "inputs": {"app": {"api_key": "k", "api_secret": "s"}},
        "connections": {
            "c": {
                "inputs": ["app"],
                "s3_bucket_name": "mp-forwarding-x",
                "store_data_in_folders_by_date": "none",
                "wait_for_complete_batch": True,
                "max_session_age": "6h",
            }
        },
        "cluster": {"servers": ["nats://127.0.0.1:4222"], **cluster},
    }


def load(**cluster: Any) -> Config:
    return config_from_mapping(document(**cluster), source="t.toml", env={})


def problems(**cluster: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(**cluster)
    return str(info.value)


def test_without_a_cluster_section_nothing_changes() -> None:
    """No [cluster]: the config has no cluster settings, so serve runs single-node."""
    data = document()
    del data["cluster"]
    assert config_from_mapping(data, source="t.toml", env={}).cluster is None


def test_cluster_section_defaults_and_values() -> None:
    """Defaults fill in; durations and sizes parse; both roles unless told."""
    cluster = load(partitions=16, ack_timeout="500ms", max_stream_bytes="1GiB").cluster
    assert cluster is not None
    assert cluster.partitions == 16 and cluster.streams == 4 and cluster.replicas == 3
    assert cluster.ack_timeout == 0.5 and cluster.max_stream_bytes == 1024**3
    assert cluster.roles == (ClusterRole.INGEST, ClusterRole.WORKER)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"servers": []}, "cluster.servers: list at least one NATS server URL"),
        ({"servers": ["http://x:1"]}, "expected nats://HOST:PORT"),
        ({"partitions": 4, "streams": 8}, "cluster.streams: cannot exceed partitions (4)"),
        ({"roles": ["ingest", "router"]}, "expected 'ingest' and/or 'worker', got 'router'"),
        ({"user": "u"}, "user and password go together"),
        ({"replicas": 7}, "cluster.replicas"),
        ({"partition": 8}, "did you mean"),
    ],
)
def test_bad_cluster_settings_are_refused_precisely(values: dict[str, Any], message: str) -> None:
    """Each mistake is named with its location and what was expected."""
    assert message in problems(**values)


def test_cluster_secrets_are_masked_in_the_described_config() -> None:
    """validate-config shows the cluster section but never the token or password."""
    described = orjson.dumps(describe_config(load(token="tok-123", user="u", password="pw-9")))
    assert b"tok-123" not in described and b"pw-9" not in described
    assert b'"cluster"' in described


def test_partition_is_a_stable_crc32_of_input_and_device() -> None:
    """The partition never depends on the process (no salted hash()): fixed values."""
    assert partition_of("app", "das:abc", 32) == partition_of("app", "das:abc", 32)
    assert [partition_of("app", f"das:{n}", 32) for n in range(4)] == [
        partition_of("app", f"das:{n}", 32) for n in range(4)
    ]
    import zlib

    assert partition_of("app", "das:abc", 32) == zlib.crc32(b"app\x1fdas:abc") % 32


def test_partitions_spread_round_robin_over_the_streams() -> None:
    """Partition p lives in stream p mod streams, and every partition's subject is listed."""
    names = ClusterNames("x", partitions=6, streams=4)
    assert names.data_stream(5) == "x_IN_1"
    streams = names.data_streams()
    assert sorted(s for subjects in streams.values() for s in subjects) == sorted(
        f"x.in.{p}" for p in range(6)
    )


def test_message_id_is_deterministic_by_request_id_else_by_bytes() -> None:
    """A retry gets the same id; a different source_request_id or body gets another."""
    body = b'{"events":[]}'
    with_id = {"source_request_id": "r-1"}
    assert message_id("app", with_id, body) == message_id("app", with_id, b"other bytes")
    assert message_id("app", with_id, body) != message_id("app", {"source_request_id": "r-2"}, body)
    assert message_id("app", {}, body) == message_id("app", {}, body)
    assert message_id("app", {}, body) != message_id("app", {}, body + b" ")
    assert message_id("app", {}, body) != message_id("other", {}, body)


def test_an_alias_requests_message_id_follows_its_request_id() -> None:
    """As single-node dedup does: an alias request's request_id names it, apart from any
    source_request_id of the same text."""
    alias = {"request_type": "alias", "request_id": "r-1"}
    assert message_id("app", alias, b"a") == message_id("app", alias, b"b")
    assert message_id("app", alias, b"a") != message_id("app", {"source_request_id": "r-1"}, b"a")


def test_retention_is_the_longest_window_plus_the_outage_budget() -> None:
    """A per-session connection with a 6 h max age and a 1 h budget keeps 7 h of log."""
    config = load(outage_budget="1h")
    assert config.cluster is not None
    assert retention_seconds(config, config.cluster) == 7 * 3600
