"""Exactly-once objects through faults: kill -9 of workers and of a stream leader, a worker
joining, client resends; and sessions that survive their worker's death."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import mparticle
import nats
import orjson
import pytest
from clusterkit import NodeFactory, assert_exactly_once, make_batch, names_by_object
from natskit import NatsCluster, wait_until
from servicekit import API_KEY, API_SECRET, ServiceProcess

pytestmark = pytest.mark.slow


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


class Load:
    """Client threads, each owning some devices and sending their batches in order.

    A batch counts as accepted when it got 202; non-202 answers (503 during an election,
    429) are retried like a client would, with the same body. 5% of accepted requests are
    sent a second time (a client that did not see the answer). Every fourth batch goes
    through the official mParticle SDK.
    """

    def __init__(self, node: ServiceProcess, *, threads: int, limit: int = 5000) -> None:
        self.node = node
        self.accepted: list[str] = []
        self.resent = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(index, limit), daemon=True)
            for index in range(threads)
        ]
        config = mparticle.Configuration()
        config.api_key = API_KEY
        config.api_secret = API_SECRET
        config.host = f"{node.url}/v2"
        self.sdk = mparticle.EventsApi(config)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "load did not finish"

    def _send(self, batch: dict[str, Any], via_sdk: bool) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if via_sdk:
                    self.sdk.upload_events(_sdk_batch(batch))
                    return
                status, _, _ = self.node.post("/v2/events", batch, timeout=30)
                if status == 202:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise AssertionError("a batch was refused for two minutes")

    def _run(self, index: int, count: int) -> None:
        rng = random.Random(index)
        for number in range(count):
            if self.stopping.is_set():
                return
            device = f"t{index}d{number % 3}"
            batch = make_batch(device, number, source_request_id=str(uuid.uuid4()))
            via_sdk = number % 4 == 3
            self._send(batch, via_sdk)
            with self.lock:
                self.accepted.append(f"{device}#{number}")
            if rng.random() < 0.05:
                self._send(batch, via_sdk)
                with self.lock:
                    self.resent += 1
            time.sleep(0.02)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def owned(node: ServiceProcess) -> int:
    """How many partitions ``node``'s worker runs now (0 when it does not answer)."""
    try:
        status, page = node.get("/cluster/status.json", timeout=5)
    except OSError:
        return 0
    if status != 200:
        return 0
    partitions = orjson.loads(page)["worker"]["partitions"]
    return sum(1 for p in partitions if p["state"] == "running")


def progress(load: Load, batches: int, timeout: float = 180) -> None:
    target = load.count + batches
    wait_until(lambda: load.count >= target, timeout, f"{batches} more accepted batches")


def _sdk_batch(raw: dict[str, Any]) -> Any:
    batch = mparticle.Batch()
    batch.environment = "development"
    batch.source_request_id = raw["source_request_id"]
    info = mparticle.DeviceInformation()
    info.android_uuid = raw["device_info"]["android_uuid"]
    batch.device_info = info
    event = mparticle.AppEvent(
        event_name=raw["events"][0]["data"]["event_name"], custom_event_type="other"
    )
    batch.events = [event]
    return batch


def test_every_accepted_batch_lands_exactly_once_through_faults(
    cluster_nodes: NodeFactory,
    nats_cluster: NatsCluster,
    cluster_name: str,
    s3_client: Any,
    bucket: str,
) -> None:
    """Under load: a second worker joins, the first is killed (-9) mid-window and comes back,
    the leader of a data stream is killed (-9) and restarted, 5% of requests are resent. Then
    every 202'd batch is in exactly one object, no content is under two keys, and each file
    keeps every device's batches in the order they were sent."""
    ingest = cluster_nodes(roles='["ingest"]')
    first = cluster_nodes(roles='["worker"]')
    load = Load(ingest, threads=3)
    load.start()
    wait_until(lambda: owned(first) == 8, 60, "the first worker to own every partition")
    wait_until(lambda: load.count >= 60, 120, "load to start")
    second = cluster_nodes(roles='["worker"]')  # joins: partitions rebalance
    wait_until(lambda: owned(first) == owned(second) == 4, 90, "a fair rebalance")
    progress(load, 40)
    first.kill9()  # mid-window: its windows are open (batch_window 1 s, ticks 0.25 s)
    wait_until(lambda: owned(second) == 8, 90, "the survivor to take every partition")
    progress(load, 40)
    first.start(timeout=60)  # the same node comes back as a new worker
    wait_until(lambda: owned(first) == owned(second) == 4, 90, "a second rebalance")
    leader = nats_cluster.node(_stream_leader(nats_cluster.urls, f"{cluster_name}_IN_0"))
    nats_cluster.kill9(leader)
    progress(load, 60)  # through the election: 503s retried by the clients
    nats_cluster.start_node(leader)
    progress(load, 40)
    load.stop(120)
    sent = list(load.accepted)
    assert load.resent > 0

    def all_delivered() -> bool:
        objects = names_by_object(s3_client, bucket)
        return len({n for names in objects.values() for n in names} & set(sent)) == len(sent)

    wait_until(all_delivered, 180, "every accepted batch in the bucket")
    time.sleep(3)  # late duplicates, if any, would land now
    objects = names_by_object(s3_client, bucket)
    assert_exactly_once(objects, sent)
    bodies = Counter(
        hashlib.sha256(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
        for key in objects
    )
    assert max(bodies.values()) == 1, "the same object content under two keys"


def test_session_survives_its_workers_death_and_seals_once(
    cluster_nodes: NodeFactory, s3_client: Any, bucket: str
) -> None:
    """A per_session window opened on one worker, which is then killed (-9); the surviving
    worker rebuilds the open session from the log and seals it once when it ends. A second
    session that began inside a batch of the first (split per session) survives too."""
    connection = 'wait_for_complete_batch = true\nsession_timeout = "60s"'
    ingest = cluster_nodes(roles='["ingest"]', connection=connection)
    doomed = cluster_nodes(roles='["worker"]', connection=connection)

    def event(number: int, session: str, kind: str = "custom_event") -> dict[str, Any]:
        data = {"event_name": f"phone#{number}", "custom_event_type": "other"}
        if kind == "session_end":
            data = {}
        return {"event_type": kind, "data": {**data, "session_uuid": session}}

    def batch(number: int, *, end: bool = False, other: int | None = None) -> dict[str, Any]:
        body = make_batch("phone", number)
        body["events"] = [event(number, "sess-1")]
        if other is not None:  # an event of a second session in the same batch
            body["events"].append(event(other, "sess-2"))
        if end:
            body["events"].append(event(number, "sess-1", "session_end"))
        return body

    for number in range(3):
        assert (
            ingest.post("/v2/events", batch(number, other=100 if number == 1 else None))[0] == 202
        )

    def open_on_doomed() -> int:
        status, page = doomed.get("/cluster/status.json")
        assert status == 200
        return sum(p["open_windows"] for p in orjson.loads(page)["worker"]["partitions"])

    wait_until(lambda: open_on_doomed() == 2, 60, "both sessions open on the first worker")
    doomed.kill9()
    survivor = cluster_nodes(roles='["worker"]', connection=connection)
    for number in range(3, 5):
        assert ingest.post("/v2/events", batch(number))[0] == 202
    assert ingest.post("/v2/events", batch(5, end=True))[0] == 202
    second_ends = make_batch("phone", 101)
    second_ends["events"] = [event(101, "sess-2"), event(101, "sess-2", "session_end")]
    assert ingest.post("/v2/events", second_ends)[0] == 202
    wait_until(lambda: len(names_by_object(s3_client, bucket)) >= 2, 90, "both sessions' files")
    time.sleep(3)
    objects = names_by_object(s3_client, bucket)
    assert sorted(objects.values()) == [
        [f"phone#{n}" for n in range(6)],
        ["phone#100", "phone#101"],
    ], objects
    assert survivor.alive()
