"""`s3forward cluster init` and `cluster check` against the real 3-node cluster."""

from __future__ import annotations

from pathlib import Path

from clusterkit import cluster_config, run_cli
from natskit import NatsCluster


def _write(tmp_path: Path, nats_cluster: NatsCluster, name: str, **extra: object) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(
        cluster_config(
            port=1,
            workdir=tmp_path,
            bucket="mp-forwarding-unused",
            endpoint="http://127.0.0.1:1",
            urls=nats_cluster.urls,
            name=name,
            **extra,
        )
    )
    return path


def test_init_creates_streams_and_buckets_idempotently_and_check_passes(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str
) -> None:
    """init creates 2 data streams, the seal stream and 2 buckets; a second init changes
    nothing and succeeds; check then passes every step, sync_interval read from /varz."""
    monitors = ", ".join(f'"http://127.0.0.1:{n.http_port}"' for n in nats_cluster.nodes)
    config = _write(tmp_path, nats_cluster, cluster_name, monitor_urls=f"[{monitors}]")
    first = run_cli("cluster", "init", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 5, first.stdout
    second = run_cli("cluster", "init", "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    check = run_cli("cluster", "check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"stream {cluster_name}_IN_0" in check.stdout
    assert "3 replicas" in check.stdout
    assert check.stdout.count("sync_interval") == 3
    assert "FAIL" not in check.stdout


def test_check_fails_on_missing_streams_and_unverifiable_sync(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str
) -> None:
    """Before init, check names every missing stream and says sync_interval is unverified."""
    config = _write(tmp_path, nats_cluster, cluster_name)
    check = run_cli("cluster", "check", "--config", str(config))
    assert check.returncode == 1
    assert f"FAIL stream {cluster_name}_SEALS: missing" in check.stdout
    assert "FAIL sync_interval: cannot be verified" in check.stdout


def test_check_reports_unreachable_servers(tmp_path: Path, cluster_name: str) -> None:
    """No server answers: check fails at its first step with the URLs it tried."""
    path = tmp_path / "cluster.toml"
    path.write_text(
        cluster_config(
            port=1,
            workdir=tmp_path,
            bucket="mp-forwarding-unused",
            endpoint="http://127.0.0.1:1",
            urls=["nats://127.0.0.1:1"],
            name=cluster_name,
        )
    )
    check = run_cli("cluster", "check", "--config", str(path))
    assert check.returncode == 1
    assert "FAIL servers: cannot connect to NATS at nats://127.0.0.1:1" in check.stdout
