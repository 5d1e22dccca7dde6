"""The fenced seal log against the real cluster: a stale owner cannot append after a
takeover, and a key held by a foreign object gets new digits through a fenced record."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
from clusterkit import cluster_config
from natskit import NatsCluster

from s3forward.cluster.admin import init_cluster
from s3forward.cluster.connection import FencedError, connect
from s3forward.cluster.replay import LogEntry, PartitionReplay
from s3forward.cluster.worker import ClusterWorker, _PartitionRunner
from s3forward.config import Config, load_config
from s3forward.errors import KeyTakenError
from s3forward.layout import EncodedObject
from s3forward.sinks.base import WriteOutcome


class TakenOnceSink:
    """A sink whose first key is held by someone else's object."""

    name = "taken-once"

    def __init__(self) -> None:
        self.written: list[str] = []
        self.refused = False

    def write(self, obj: EncodedObject) -> WriteOutcome:
        if not self.refused:
            self.refused = True
            raise KeyTakenError(obj.key)
        self.written.append(obj.key)
        return WriteOutcome.CREATED

    def close(self) -> None:
        pass


def _config(tmp_path: Path, nats_cluster: NatsCluster, name: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(
        cluster_config(
            port=1,
            workdir=tmp_path,
            bucket="mp-forwarding-unused",
            endpoint="http://127.0.0.1:1",
            urls=nats_cluster.urls,
            name=name,
        )
    )
    return load_config(path, env={"S3F_TEST_SECRET": "x"})


async def _worker(config: Config, worker_id: str, sink: Any) -> ClusterWorker:
    assert config.cluster is not None
    worker = ClusterWorker(config, config.cluster, {"s3": sink}, worker_id=worker_id)
    # connected without the lease loop: these tests drive one partition by hand
    worker._nc = await connect(config.cluster)
    worker._js = worker._nc.jetstream(timeout=10)
    worker._requests = await worker._js.key_value(worker.names.request_bucket)
    return worker


def test_a_stale_owner_is_fenced_off_by_the_takeover_record(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str
) -> None:
    """A owns partition 0; B takes it over (takeover record first); A's next seal append fails
    with FencedError instead of landing after B's."""
    config = _config(tmp_path, nats_cluster, cluster_name)

    async def scenario() -> None:
        await init_cluster(config)
        a = await _worker(config, "a", TakenOnceSink())
        b = await _worker(config, "b", TakenOnceSink())
        try:
            stale = _PartitionRunner(a, 0)
            await stale._read_seal_log()
            await stale._append({"type": "takeover", "low": 1})
            fresh = _PartitionRunner(b, 0)
            await fresh._read_seal_log()
            assert fresh.seal_seq == stale.seal_seq
            await fresh._append({"type": "takeover", "low": 1})
            with pytest.raises(FencedError):
                await stale._append({"type": "watermark", "low": 2})
            await fresh._append({"type": "watermark", "low": 2})  # the owner goes on
        finally:
            for worker in (a, b):
                assert worker._nc is not None
                await worker._nc.close()

    asyncio.run(scenario())


def test_a_foreign_object_on_the_key_gets_new_digits_through_a_fenced_record(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str
) -> None:
    """The sink says the key holds a different object: the worker appends a rekey record,
    writes under the new key, and a later reader of the seal log sees the new key."""
    config = _config(tmp_path, nats_cluster, cluster_name)
    sink = TakenOnceSink()

    async def scenario() -> None:
        await init_cluster(config)
        worker = await _worker(config, "w", sink)
        try:
            runner = _PartitionRunner(worker, 1)
            await runner._read_seal_log()
            await runner._append({"type": "takeover", "low": 1})
            replay = PartitionReplay(config, prefix=cluster_name, partition=1, start=1)
            body = orjson.dumps({"device_info": {"android_uuid": "d"}, "events": []})
            replay.feed(LogEntry(1, 1_700_000_000.0, "app", body, 1, 1))
            (sealed,) = replay.feed(LogEntry(2, 1_700_000_100.0, None))
            await runner._append({**sealed.record.to_json(), "low": 1})
            await runner._write(sealed)
            assert len(sink.written) == 1 and sink.written[0] != sealed.record.key
            reader = _PartitionRunner(worker, 1)
            (record,) = await reader._read_seal_log()
            assert record.key == sink.written[0]
        finally:
            assert worker._nc is not None
            await worker._nc.close()

    asyncio.run(scenario())


def test_a_recorded_window_rebuilt_with_other_bytes_keeps_its_earlier_object(
    tmp_path: Path, nats_cluster: NatsCluster, cluster_name: str
) -> None:
    """After a takeover under changed settings the rebuilt bytes differ from the recorded
    ones: the object on the recorded key is the window's own earlier write, so nothing is
    written again and no new digits are recorded (no second copy)."""
    config = _config(tmp_path, nats_cluster, cluster_name)
    sink = TakenOnceSink()

    async def scenario() -> None:
        await init_cluster(config)
        worker = await _worker(config, "w", sink)
        try:
            runner = _PartitionRunner(worker, 1)
            await runner._read_seal_log()
            await runner._append({"type": "takeover", "low": 1})
            replay = PartitionReplay(config, prefix=cluster_name, partition=1, start=1)
            body = orjson.dumps({"device_info": {"android_uuid": "d"}, "events": []})
            replay.feed(LogEntry(1, 1_700_000_000.0, "app", body, 1, 1))
            (sealed,) = replay.feed(LogEntry(2, 1_700_000_100.0, None))
            await runner._append({**sealed.record.to_json(), "low": 1})
            earlier = dataclasses.replace(sealed.record, sha256="sha-of-the-first-build")
            await runner._write(dataclasses.replace(sealed, record=earlier, recorded=True))
            assert sink.written == [], "the earlier object is kept, not written twice"
            (record,) = await _PartitionRunner(worker, 1)._read_seal_log()
            assert record.key == sealed.record.key, "no rekey record"
        finally:
            assert worker._nc is not None
            await worker._nc.close()

    asyncio.run(scenario())
