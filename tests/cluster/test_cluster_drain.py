"""Retiring a worker on a real cluster: the status page shows the cluster from any node, and
``s3forward cluster drain`` hands every partition over while the worker still runs."""

from __future__ import annotations

import orjson
from clusterkit import NodeFactory, make_batch, names_by_object, run_cli
from natskit import wait_until
from servicekit import ServiceProcess


def _cluster(node: ServiceProcess) -> dict[str, object]:
    status, body = node.get("/status.json")
    assert status == 200
    cluster: dict[str, object] = orjson.loads(body)["cluster"]
    return cluster


def _owned(node: ServiceProcess) -> list[int]:
    owned: list[int] = orjson.loads(node.get("/cluster/status.json")[1])["worker"]["owned"]
    return owned


def test_drain_hands_every_partition_over_and_the_status_page_shows_the_cluster(
    cluster_nodes: NodeFactory, s3_client: object, bucket: str
) -> None:
    """Two workers share 8 partitions, shown on every node's /status.json; after a drain the
    drained one owns none, says so on /readyz, the other owns all 8, and batches sent before
    and after land exactly once."""
    keeper = cluster_nodes()
    retiring = cluster_nodes(roles='["worker"]')
    wait_until(lambda: len(_owned(keeper)) == 4 and len(_owned(retiring)) == 4, 90, "4/4")

    def reported() -> bool:  # the heartbeats carry the reports: fresh within a lease round
        cluster = _cluster(retiring)
        return cluster.get("unowned_partitions") == [] and cluster["lease_moves"] >= 8  # type: ignore[operator]

    wait_until(reported, 30, "every lease taken and reported")
    cluster = _cluster(retiring)  # a worker-only node sees the whole cluster too
    assert len(cluster["workers"]) == 2  # type: ignore[arg-type]
    assert len(cluster["partition_rows"]) == 8  # type: ignore[arg-type]
    assert retiring.get("/readyz")[0] == 200
    assert retiring.post("/cluster/drain", {}, auth=None)[0] == 401  # a drain needs credentials

    devices = [f"d{n}" for n in range(12)]
    for device in devices:
        assert keeper.post("/v2/events", make_batch(device, 1))[0] == 202
    result = run_cli(
        "cluster",
        "drain",
        "--config",
        str(retiring.config_path),
        "--wait",
        "90",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "safe to stop" in result.stdout
    status, body = retiring.get("/readyz")
    assert status == 503 and b"drained" in body
    wait_until(lambda: len(_owned(keeper)) == 8, 60, "the keeper to own all 8")
    for device in devices:
        assert keeper.post("/v2/events", make_batch(device, 2))[0] == 202

    def landed() -> bool:
        return sum(len(v) for v in names_by_object(s3_client, bucket).values()) >= 24

    wait_until(landed, 90, "every batch in a file")
    names = sorted(n for v in names_by_object(s3_client, bucket).values() for n in v)
    assert names == sorted(f"{d}#{i}" for d in devices for i in (1, 2))

    def status_text_shows_the_drain() -> bool:  # the cluster part is refreshed every 2 s
        text = run_cli("status", "--url", f"http://127.0.0.1:{keeper.port}")
        assert text.returncode == 0, text.stderr
        return "DRAINING" in text.stdout and "(0 unowned)" in text.stdout

    wait_until(status_text_shows_the_drain, 30, "`s3forward status` to show the drain")
