"""s3forward serve in cluster mode: real 3-node JetStream, real moto S3, real HTTP."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from typing import Any

import nats
import nats.js.errors
import orjson
from clusterkit import NodeFactory, assert_exactly_once, make_batch, names_by_object
from natskit import NatsCluster, wait_until
from servicekit import ServiceProcess


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


def _objects(s3: Any, bucket: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every object as (key without its date folder, seal time and digits; lines without
    message_id and receive time), sorted: what must agree between two services that got
    the same batches."""
    out = []
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        if item["Key"].endswith(".gz"):
            body = gzip.decompress(body)
        lines = [orjson.loads(line) for line in body.splitlines() if line]
        for line in lines:
            line.pop("message_id", None)
            line.pop("timestamp_unixtime_ms", None)  # when this service received it
        app, rest = item["Key"].rsplit("/", 1)[-1].split("_", 1)
        out.append((f"{app}_<time>_<digits>{rest[rest.index('.') :]}", lines))
    return sorted(out, key=repr)


def test_a_batch_of_two_sessions_gives_the_objects_single_node_mode_gives(
    cluster_nodes: NodeFactory,
    start_service: Callable[..., ServiceProcess],
    s3_client: Any,
    bucket: str,
) -> None:
    """Per session, the same batch of two sessions (and a later one) sent to a cluster node
    and to a single-node service: the same objects (one per session, the batch's batch_id in
    both) but for the seal time and digits of the key, the lines' message_ids and the
    receive times."""
    per_session = 'wait_for_complete_batch = true\nsession_timeout = "60s"'
    single_bucket = f"{bucket}-single"
    s3_client.create_bucket(Bucket=single_bucket)
    node = cluster_nodes(connection=per_session)
    single = start_service(bucket_name=single_bucket, connection=per_session)

    def session_event(name: str, session: str, kind: str = "custom_event") -> dict[str, Any]:
        data = {"event_name": name, "custom_event_type": "other", "session_uuid": session}
        return {"event_type": kind, "data": data}

    two_sessions = {
        "environment": "development",
        "batch_id": 4242,
        "device_info": {"android_uuid": "dev-s"},
        "events": [
            session_event("a1", "sess-a"),
            session_event("b1", "sess-b"),
            session_event("a-end", "sess-a", "session_end"),
            session_event("b-end", "sess-b", "session_end"),
        ],
    }
    for service in (node, single):
        assert service.post("/v2/events", two_sessions)[0] == 202
    wait_until(
        lambda: (
            len(_objects(s3_client, bucket)) >= 2 and len(_objects(s3_client, single_bucket)) >= 2
        ),
        60,
        "each session's object in both buckets",
    )
    time.sleep(1.5)  # anything written twice would show by now
    cluster_objects, single_objects = (
        _objects(s3_client, bucket),
        _objects(s3_client, single_bucket),
    )
    assert cluster_objects == single_objects
    names = sorted(
        [e["data"]["event_name"] for line in lines for e in line["events"]]
        for _, lines in cluster_objects
    )
    assert names == [["a1", "a-end"], ["b1", "b-end"]]
    assert {lines[0]["batch_id"] for _, lines in cluster_objects} == {4242}


def test_a_retried_alias_request_is_stored_once_after_the_jetstream_duplicate_window(
    cluster_nodes: NodeFactory, s3_client: Any, bucket: str
) -> None:
    """As in single-node mode, an alias request's request_id dedups like a source_request_id:
    the same alias request sent again after JetStream's 1 s dedup window is stored in the log
    again, and the worker drops it (request KV); it lands once."""
    node = cluster_nodes(duplicate_window='"1s"', connection="send_alias_requests = true")

    def alias(request_id: str) -> dict[str, Any]:
        return {
            "request_type": "alias",
            "request_id": request_id,
            "environment": "development",
            "data": {"source_mpid": 1, "destination_mpid": 2},
        }

    def landed() -> list[str]:
        return sorted(
            line["request_id"] for _, lines in _objects(s3_client, bucket) for line in lines
        )

    assert node.post("/v1/identity/alias", alias("r-1"))[0] == 202
    wait_until(lambda: landed() == ["r-1"], 60, "the first alias request's file")
    time.sleep(1.5)  # past the stream's duplicate_window
    assert node.post("/v1/identity/alias", alias("r-1"))[0] == 202
    assert node.post("/v1/identity/alias", alias("r-2"))[0] == 202
    wait_until(lambda: "r-2" in landed(), 60, "the later alias request")
    time.sleep(2)
    assert landed() == ["r-1", "r-2"]
