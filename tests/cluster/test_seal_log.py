"""The fenced seal log against the real cluster: a stale owner cannot append after a
takeover, and a key held by a foreign object gets new digits through a fenced record."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest
from clusterkit import cluster_config, make_batch
from natskit import NatsCluster

from s3forward.cluster import worker as worker_module
from s3forward.cluster.admin import init_cluster
from s3forward.cluster.connection import FencedError, connect
from s3forward.cluster.replay import LogEntry, PartitionReplay
from s3forward.cluster.worker import ClusterWorker, _feed_chunk, _PartitionRunner
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


@pytest.mark.parametrize("per_record", [200, 2])
def test_the_files_a_chunk_seals_are_recorded_in_one_append_that_a_successor_reads(
    tmp_path: Path,
    nats_cluster: NatsCluster,
    cluster_name: str,
    monkeypatch: pytest.MonkeyPatch,
    per_record: int,
) -> None:
    """Three devices' windows sealed by one chunk: one fenced ``seals`` record (not three;
    two when a record takes two files) before the writes, with the lowest watermark of every
    file recorded so far; a successor reading the seal log knows all three files under their
    keys and starts from that watermark, low enough to rebuild all three."""
    monkeypatch.setattr(worker_module, "_SEALS_PER_RECORD", per_record)
    config = _config(tmp_path, nats_cluster, cluster_name)
    sink = TakenOnceSink()
    sink.refused = True  # an ordinary sink: every key is free

    async def scenario() -> None:
        await init_cluster(config)
        worker = await _worker(config, "w", sink)
        try:
            runner = _PartitionRunner(worker, 2)
            await runner._read_seal_log()
            await runner._append({"type": "takeover", "low": 1})
            before = runner.seal_seq
            replay = PartitionReplay(config, prefix=cluster_name, partition=2, start=1)
            t0 = 1_700_000_000.0

            def batch_at(seq: int, at: float, device: str) -> LogEntry:
                body = orjson.dumps(make_batch(device, seq))
                return LogEntry(seq, t0 + at, "app", body, seq, seq)

            chunk = [
                batch_at(1, 1.0, "d0"),
                batch_at(2, 1.2, "d1"),
                batch_at(3, 1.4, "d2"),
                LogEntry(4, t0 + 3.5, None),  # a tick: the three 1 s windows are due
                batch_at(5, 4.0, "late"),  # opens a window that stays open
            ]
            applied = _feed_chunk(replay, chunk)
            sealed = [f for _, files, _ in applied for f in files]
            assert len(sealed) == 3
            await runner._record_and_write(applied)
            appends = -(-3 // per_record)
            assert runner.seal_seq == before + appends, "one append per record, not per file"
            assert sink.written == [f.record.key for f in sealed]
            successor = _PartitionRunner(worker, 2)
            recorded = await successor._read_seal_log()
            assert sorted(r.key for r in recorded) == sorted(sink.written)
            lows = [low for _, _, file_lows in applied for low in file_lows]
            assert successor.recorded_low == min(lows) == 1
        finally:
            assert worker._nc is not None
            await worker._nc.close()

    asyncio.run(scenario())
