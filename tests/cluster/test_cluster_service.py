"""s3forward serve in cluster mode: real 3-node JetStream, real moto S3, real HTTP."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.js.errors
import orjson
from clusterkit import NodeFactory, assert_exactly_once, make_batch, names_by_object
from natskit import NatsCluster, wait_until


def _first_message_purged(urls: list[str], streams: list[str]) -> bool:
    async def ask() -> bool:
        nc = await nats.connect(servers=urls)
        try:
            js = nc.jetstream()
            for stream in streams:
                try:
                    await js.get_msg(stream, 1)
                    return False
                except nats.js.errors.NotFoundError:
                    continue
            return True
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_accepted_batches_land_once_each_in_per_device_files(
    cluster_nodes: NodeFactory,
    s3_client: object,
    bucket: str,
    nats_cluster: NatsCluster,
    cluster_name: str,
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
    # the worker's state is on /metrics and /cluster/status.json
    wait_until(
        lambda: b"s3forward_cluster_partitions_owned 8.0" in node.get("/metrics")[1],
        30,
        "the partitions-owned gauge",
    )
    status, page = node.get("/cluster/status.json")
    assert status == 200 and len(orjson.loads(page)["worker"]["partitions"]) == 8
    # delivered windows are purged from the streams below the low watermark
    streams = [f"{cluster_name}_IN_0", f"{cluster_name}_IN_1"]
    wait_until(lambda: _first_message_purged(nats_cluster.urls, streams), 60, "the purge")


def test_source_request_id_dedup_outlives_the_jetstream_duplicate_window(
    cluster_nodes: NodeFactory, s3_client: object, bucket: str
) -> None:
    """A batch resent with the same source_request_id after JetStream's 1 s dedup window is
    stored in the log again, and the worker drops it (request KV): it lands once."""
    node = cluster_nodes(duplicate_window='"1s"')
    first = make_batch("dev-r", 1, source_request_id="req-1")
    assert node.post("/v2/events", first)[0] == 202
    wait_until(lambda: bool(names_by_object(s3_client, bucket)), 60, "the first file")
    repeat = make_batch("dev-r", 1, source_request_id="req-1", user_attributes={"x": "1"})
    assert node.post("/v2/events", repeat)[0] == 202
    assert node.post("/v2/events", make_batch("dev-r", 2))[0] == 202
    wait_until(
        lambda: sum(len(v) for v in names_by_object(s3_client, bucket).values()) >= 2,
        60,
        "the later batch",
    )
    time.sleep(2)
    names = [n for v in names_by_object(s3_client, bucket).values() for n in v]
    assert sorted(names) == ["dev-r#1", "dev-r#2"]
