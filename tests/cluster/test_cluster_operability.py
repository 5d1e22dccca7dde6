"""Cluster operability without servers: readiness rules, the cluster-wide sums of the status
page, its text form, and how a pipelined publish reads JetStream's answers."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import orjson

from s3forward.cluster.connection import publish_error
from s3forward.cluster.publish import Ack, _ack_of
from s3forward.cluster.status import ClusterState, LeaseWatch, cluster_snapshot
from s3forward.cluster.worker import ClusterWorker
from s3forward.config import Config, config_from_mapping
from s3forward.errors import SpoolFullError, SpoolUnavailableError
from s3forward.metrics import Metrics
from s3forward.status import plain_lines


def _config(**cluster: Any) -> Config:
    document = {
        "inputs": {"app": {"api_key": "k", "api_secret": "s"}},
        "connections": {
            "c": {
                "inputs": ["app"],
                "s3_bucket_name": "mp-forwarding-x",
                "store_data_in_folders_by_date": "none",
            }
        },
        "cluster": {"servers": ["nats://127.0.0.1:4222"], "lease_ttl": "3s", **cluster},
    }
    return config_from_mapping(document, source="t.toml", env={})


def _connected_worker(partitions: int = 4) -> ClusterWorker:
    config = _config(partitions=partitions, streams=1)
    assert config.cluster is not None
    worker = ClusterWorker(config, config.cluster, {}, worker_id="w1")
    worker._nc = SimpleNamespace(is_connected=True)  # type: ignore[assignment]
    return worker


def test_a_fresh_connected_worker_is_ready() -> None:
    """Just started, heartbeat taken, no partition yet but within the grace: ready."""
    worker = _connected_worker()
    worker.status.last_lease_round_at = time.time()
    assert worker.ready() == (True, "ok")


def test_a_worker_whose_heartbeats_are_not_taken_is_not_ready() -> None:
    """No heartbeat accepted for longer than lease_ttl: its leases are expiring."""
    worker = _connected_worker()
    now = time.time()
    worker.status.last_lease_round_at = now - 10
    ready, reason = worker.ready(now)
    assert not ready and "no lease heartbeat taken" in reason


def test_an_idle_worker_is_not_ready_unless_workers_outnumber_partitions() -> None:
    """Owning no partition for 3 lease rounds is red while there is a partition for every
    live worker; with more workers than partitions an idle worker is expected."""
    worker = _connected_worker(partitions=2)
    now = time.time()
    worker.status.started_at = now - 60
    worker.status.last_lease_round_at = now
    worker.status.live_workers = ["w0", "w1"]
    ready, reason = worker.ready(now)
    assert not ready and "owns no partition" in reason
    worker.status.live_workers = ["w0", "w1", "w2"]
    assert worker.ready(now) == (True, "ok")


def test_a_draining_worker_is_not_ready_and_says_when_it_is_safe_to_stop() -> None:
    """Draining: red while partitions remain, then 'safe to stop'."""
    worker = _connected_worker()
    worker.status.last_lease_round_at = time.time()
    worker.drain()
    worker._owned = {0: 5}
    ready, reason = worker.ready()
    assert not ready and "1 partitions still to hand over" in reason
    worker._owned = {}
    assert worker.ready() == (False, "drained: owns no partition; safe to stop")


def _state(now: float) -> ClusterState:
    report = {
        "lease_moves": 3,
        "partitions": {
            "0": {
                "state": "running",
                "lag": 5,
                "open_windows": 2,
                "oldest_undelivered_at": now - 30,
            },
            "1": {"state": "running", "lag": 1, "open_windows": 0},
        },
    }
    other = {
        "lease_moves": 1,
        "draining": True,
        "partitions": {"2": {"state": "running", "lag": 4, "oldest_undelivered_at": now - 90}},
    }
    return ClusterState(
        partitions=4,
        read_at=now,
        owners={0: "a", 1: "a", 2: "b"},
        workers={"a": report, "b": other},
    )


def test_lag_and_oldest_undelivered_are_summed_over_the_whole_cluster() -> None:
    """Lag adds up over partitions of every worker; the oldest age is the cluster's maximum;
    a partition without a lease is listed as unowned."""
    now = time.time()
    summary = _state(now).summary(now)
    assert summary["lag_messages"] == 10
    assert 89 <= summary["oldest_undelivered_age_seconds"] <= 91
    assert summary["unowned_partitions"] == [3]
    assert summary["lease_moves"] == 4
    assert [w["partitions_owned"] for w in summary["workers"]] == [[0, 1], [2]]
    assert summary["partition_rows"][3]["state"] == "unowned"


def test_status_snapshot_and_text_show_the_cluster_without_secrets() -> None:
    """The status page's shape carries the cluster; the text names workers, unowned
    partitions and draining; no secret appears."""
    config = _config(partitions=4, streams=1, token="sekret-token")
    now = time.time()
    snap = cluster_snapshot(
        config,
        Metrics(),
        roles=["ingest", "worker"],
        started_at=now - 5,
        readiness=(True, "ok"),
        state=_state(now),
        node_worker="a",
    )
    text = "\n".join(plain_lines(snap))
    assert "cluster: 2 workers, 4 partitions (1 unowned), lag 10 messages" in text
    assert "worker b: partitions 2; lease moves 1  DRAINING" in text
    assert "partition 3: owner - [unowned]" in text
    assert b"sekret-token" not in orjson.dumps(snap)


def _reply(data: bytes, headers: dict[str, str] | None = None) -> Any:
    return SimpleNamespace(data=data, headers=headers)


def test_pipelined_acks_read_as_jetstream_meant_them() -> None:
    """A stored ack, a duplicate, a full stream (429) and no responders (503)."""
    assert _ack_of(_reply(b'{"stream":"S","seq":7}')) == Ack(7, False)
    assert _ack_of(_reply(b'{"stream":"S","seq":7,"duplicate":true}')) == Ack(7, True)
    full = _ack_of(
        _reply(b'{"error":{"code":503,"err_code":10077,"description":"maximum bytes exceeded"}}')
    )
    assert isinstance(full, BaseException)
    assert isinstance(publish_error(full, retry_after=2), SpoolFullError)
    nobody = _ack_of(_reply(b"", {"Status": "503"}))
    assert isinstance(publish_error(nobody, retry_after=2), SpoolUnavailableError)


def test_lease_watch_forgets_entries_the_bucket_ttl_expired() -> None:
    """A TTL expiry sends no watch event: an entry not refreshed within lease_ttl is gone, so
    a dead worker's partitions show as unowned and the worker disappears."""
    watch = LeaseWatch(leases=None, partitions=2, lease_ttl=3.0)  # type: ignore[arg-type]
    now = time.monotonic()
    watch._entries = {
        "p.0": (b"alive-worker", now),
        "w.alive-worker": (b'{"lease_moves": 1}', now),
        "p.1": (b"dead-worker", now - 10),
        "w.dead-worker": (b'{"lease_moves": 1}', now - 10),
    }
    summary = watch.state().summary(time.time())
    assert summary["unowned_partitions"] == [1]
    assert [w["id"] for w in summary["workers"]] == ["alive-worker"]
