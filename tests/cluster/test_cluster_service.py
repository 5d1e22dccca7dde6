"""s3forward serve in cluster mode: real 3-node JetStream, real moto S3, real HTTP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from clusterkit import cluster_config, make_batch, names_by_object, run_cli
from natskit import NatsCluster, wait_until
from servicekit import ServiceProcess, free_port

NodeFactory = Callable[..., ServiceProcess]


@pytest.fixture
def cluster_nodes(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str, moto_server: str, bucket: str
) -> Iterator[NodeFactory]:
    """A factory of s3forward cluster nodes sharing one ``[cluster] name``; init runs once."""
    started: list[ServiceProcess] = []
    initialised: list[bool] = []

    def start(roles: str = '["ingest", "worker"]', **extra: object) -> ServiceProcess:
        port = free_port()
        workdir = tmp_path / f"node-{len(started)}"
        workdir.mkdir()
        text = cluster_config(
            port=port,
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
        node = ServiceProcess(workdir, text, port)
        node.start(timeout=60)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.alive():
            node.kill9()


def assert_exactly_once(objects: dict[str, list[str]], sent: list[str]) -> None:
    counts = Counter(name for names in objects.values() for name in names)
    doubled = {name: n for name, n in counts.items() if n > 1}
    missing = [name for name in sent if name not in counts]
    assert not doubled, f"batches in more than one place: {sorted(doubled)[:10]}"
    assert not missing, f"accepted batches missing: {missing[:10]}"
    for key, names in objects.items():
        by_device: dict[str, list[int]] = {}
        for name in names:
            device, number = name.split("#")
            by_device.setdefault(device, []).append(int(number))
        for device, numbers in by_device.items():
            assert numbers == sorted(numbers), f"{key}: {device} out of order: {numbers}"


def test_accepted_batches_land_once_each_in_per_device_files(
    cluster_nodes: NodeFactory, s3_client: object, bucket: str
) -> None:
    """One node with both roles: 202 after the JetStream ack, then the worker seals the
    per-device windows on broker time (ticks) and writes one object per device window."""
    node = cluster_nodes()
    sent: list[str] = []
    for number in range(12):
        device = f"dev{number % 3}"
        status, _, _ = node.post("/v2/events", make_batch(device, number))
        assert status == 202
        sent.append(f"{device}#{number}")
    status, _, _ = node.post("/v2/bulkevents", [make_batch(f"dev{n}", 100 + n) for n in range(5)])
    assert status == 202
    sent.extend(f"dev{n}#{100 + n}" for n in range(5))

    def delivered() -> bool:
        found = names_by_object(s3_client, bucket)
        return sum(len(v) for v in found.values()) >= len(sent)

    wait_until(delivered, 90, "every accepted batch in the bucket")
    objects = names_by_object(s3_client, bucket)
    assert_exactly_once(objects, sent)
    # per_device windows of 1 s: every device's first 12 batches came within one window
    assert all(len({n.split("#")[0] for n in names}) == 1 for names in objects.values())
