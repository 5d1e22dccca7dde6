"""Ingest answers: 429 when the stream is full (discard: new), 503 when the ack is late."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import nats
from clusterkit import NodeFactory, make_batch
from natskit import NatsCluster, wait_until


def _stream_leader(urls: list[str], stream: str) -> str:
    async def ask() -> str:
        nc = await nats.connect(servers=urls)
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None and info.cluster.leader is not None
            return str(info.cluster.leader)
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_full_stream_answers_429_with_retry_after(cluster_nodes: NodeFactory) -> None:
    """With no worker to drain it, a 1 MiB stream fills up; the next batch gets 429, not 202."""
    node = cluster_nodes(roles='["ingest"]', streams=1, max_stream_bytes='"1MiB"')
    padding = "x" * 60_000
    statuses = []
    for number in range(40):
        batch = make_batch("dev-full", number, user_attributes={"pad": padding})
        status, headers, body = node.post("/v2/events", batch)
        statuses.append(status)
        if status != 202:
            break
    assert statuses[0] == 202
    assert statuses[-1] == 429, statuses
    assert int(headers["retry-after"]) >= 1
    assert "full" in body["errors"][0]["message"]


def test_late_ack_answers_503_with_retry_after(
    cluster_nodes: NodeFactory, nats_cluster: NatsCluster, cluster_name: str
) -> None:
    """The stream leader is frozen (SIGSTOP): no ack within ack_timeout gives 503 and
    Retry-After; after it thaws, the same batch is accepted."""
    node = cluster_nodes(roles='["ingest"]', streams=1, ack_timeout='"0.5s"')
    assert node.post("/v2/events", make_batch("dev-late", 0))[0] == 202
    leader = nats_cluster.node(_stream_leader(nats_cluster.urls, f"{cluster_name}_IN_0"))
    assert leader.process is not None
    leader.process.send_signal(signal.SIGSTOP)
    try:
        status, headers, _ = node.post("/v2/events", make_batch("dev-late", 1), timeout=30)
    finally:
        leader.process.send_signal(signal.SIGCONT)
    assert status == 503
    assert int(headers["retry-after"]) >= 1

    def accepted() -> bool:
        return node.post("/v2/events", make_batch("dev-late", 1), timeout=30)[0] == 202

    wait_until(accepted, 60, "the batch to be accepted after the leader thawed")
    assert Path(node.log_path).exists()
