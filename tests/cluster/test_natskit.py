"""The local test cluster itself: three nodes, a meta leader, fsync on every write."""

from __future__ import annotations

from natskit import NatsCluster


def test_three_node_cluster_elects_a_meta_leader_and_syncs_always(
    nats_cluster: NatsCluster,
) -> None:
    """Every node answers, one meta leader is known, and the nodes were told to fsync always."""
    assert len(nats_cluster.nodes) == 3
    assert nats_cluster.has_meta_leader()
    for node in nats_cluster.nodes:
        assert node.jsz() is not None
        assert "sync_interval: always" in node.config.read_text()
