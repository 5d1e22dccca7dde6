"""Fixtures of the cluster-mode tests.

- ``cluster_nodes`` (function): a factory of `s3forward serve` nodes in cluster mode on moto,
  sharing one fresh cluster name (`cluster init` runs before the first).
- ``nats_cluster`` (session): a real 3-node JetStream cluster on 127.0.0.1 (``natskit``), with
  ``sync_interval: always``; stopped after the session. Tests use their own ``[cluster] name``
  so that their streams and buckets never meet.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clusterkit import NodeFactory, cluster_config, run_cli
from natskit import NatsCluster
from servicekit import ServiceProcess, loopback_listener, port_of


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster.create(tmp_path_factory.mktemp("nats"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_name() -> str:
    """A fresh ``[cluster] name``: its own streams, subjects and buckets."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cluster_nodes(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str, moto_server: str, bucket: str
) -> Iterator[NodeFactory]:
    """A factory of s3forward cluster nodes sharing one ``[cluster] name``; init runs once."""
    started: list[ServiceProcess] = []
    initialised: list[bool] = []

    def start(roles: str = '["ingest", "worker"]', **extra: object) -> ServiceProcess:
        listener = loopback_listener()
        workdir = tmp_path / f"node-{len(started)}"
        workdir.mkdir()
        text = cluster_config(
            port=port_of(listener),
            workdir=workdir,
            bucket=bucket,
            endpoint=moto_server,
            urls=nats_cluster.urls,
            name=cluster_name,
            roles=roles,
            **extra,
        )
        if not initialised:
            (workdir / "init.toml").write_text(text)
            result = run_cli("cluster", "init", "--config", str(workdir / "init.toml"))
            assert result.returncode == 0, result.stderr
            initialised.append(True)
        node = ServiceProcess(workdir, text, listener)
        node.start(timeout=60)
        started.append(node)
        return node

    yield start
    for node in started:
        node.release_port()  # one never started still holds its socket
        if node.alive():
            node.kill9()
