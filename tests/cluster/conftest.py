"""Fixtures of the cluster-mode tests.

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

from natskit import NatsCluster


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
