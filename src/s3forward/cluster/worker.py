"""A cluster worker: owns partitions through KV leases, turns their logs into objects.

Leases. Every worker puts a heartbeat ``w.<id>`` into the lease bucket (a KV bucket whose TTL
is ``lease_ttl``) every ``lease_ttl / 3``. The live workers, sorted, share the partitions
round-robin (partition ``p`` goes to ``live[p % len(live)]``), so the spread is as fair as it
can be and changes when a worker joins, leaves or its heartbeat expires. A worker takes
partition ``p`` by creating ``p.<p>`` (create-if-absent), keeps it by renewing with a revision
compare-and-set, and gives back the partitions it should no longer own by deleting their keys
after stopping their work. A worker that stops renewing (killed, partitioned) loses its leases
when their TTL runs out.

Fencing. A lease alone cannot stop a stale owner that has not noticed it lost its lease, so
every decision goes through the partition's seal subject with
``Nats-Expected-Last-Subject-Sequence``. A new owner first appends a takeover record; the old
owner's next append fails and it stops. A file's seal record (connection, window, group, first
and last item positions, key, sha256, low watermark) is appended BEFORE the object is written
(the files one chunk of messages sealed, in one ``seals`` record);
a new key for a file whose key holds a foreign object is a fenced ``rekey`` record too.

Recovery. The new owner reads the seal records, replays the partition from the low watermark
of the latest record (``replay.PartitionReplay``), writes again the recorded files that may not
have landed (If-None-Match recognises its own earlier object), and then goes on live. Ticks
(empty messages the owner publishes every ``tick_interval``) carry broker time into the log so
that idle windows seal on time, and a replay decides exactly the same. Every
``watermark_interval`` the owner records the current low watermark and purges the partition's
messages, and the seal records, below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from s3forward.cluster.connection import FencedError, connect, is_wrong_last_sequence
from s3forward.cluster.ingest import (
    HEADER_BATCH_ID,
    HEADER_INPUT,
    HEADER_RECEIVED_MS,
    HEADER_REQUEST_ID,
    HEADER_TICK,
)
from s3forward.cluster.naming import ClusterNames
from s3forward.cluster.publish import Ack, Outbound, PipelinedPublisher
from s3forward.cluster.replay import LogEntry, PartitionReplay, SealedFile, SealRecord
from s3forward.config import ClusterSettings, Config
from s3forward.delivery import backoff_delay
from s3forward.errors import KeyTakenError, PermanentSinkError, S3ForwardError, SinkError
from s3forward.files import with_new_digits
from s3forward.layout import EncodedObject
from s3forward.sinks.base import Sink, WriteOutcome

log = structlog.get_logger("s3forward.cluster.worker")

EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
_CHUNK = 256
_APPEND_ATTEMPTS = 8
_SEALS_PER_RECORD = 200
"""Files per ``seals`` record: about 300 bytes each, far below NATS's 1 MiB payload limit."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _kv_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:100]


def request_key(input_name: str, request_id: str) -> str:
    """The request-KV key of a source_request_id (hashed: any characters, bounded length)."""
    return hashlib.sha256(f"{input_name}\x1f{request_id}".encode()).hexdigest()[:40]


@dataclass
class PartitionStatus:
    """What an operator sees of one owned partition."""

    partition: int
    state: str = "recovering"
    next_seq: int = 0
    last_seq: int = 0
    low_watermark: int = 0
    open_windows: int = 0
    files_written: int = 0
    oldest_open_at: float | None = None
    pending: int = 0  # messages in the stream after the last one read (JetStream's num_pending)
    writing_since: float | None = None  # a sealed file's write began then and has not ended

    @property
    def lag(self) -> int:
        """Messages in the partition's log not yet applied by its owner."""
        return self.pending + max(0, self.last_seq + 1 - self.next_seq)

    @property
    def oldest_undelivered_at(self) -> float | None:
        """When the oldest data this partition still has to deliver arrived (broker time)."""
        times = [t for t in (self.oldest_open_at, self.writing_since) if t is not None]
        return min(times) if times else None


@dataclass
class WorkerStatus:
    worker_id: str
    live_workers: list[str] = field(default_factory=list)
    partitions: dict[int, PartitionStatus] = field(default_factory=dict)
    lease_moves: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)
    last_lease_round_at: float | None = None  # the last heartbeat that JetStream took
    owned_some_at: float | None = None  # the last lease round that ended owning a partition
    draining: bool = False

    def report(self) -> dict[str, Any]:
        """The heartbeat's value: what every node reads to show the cluster (status.py)."""
        return {
            "at": time.time(),
            "lease_moves": self.lease_moves,
            "draining": self.draining,
            "last_error": self.last_error,
            "partitions": {
                str(p.partition): {
                    "state": p.state,
                    "lag": p.lag,
                    "backlog": max(0, p.next_seq - p.low_watermark),
                    "open_windows": p.open_windows,
                    "files_written": p.files_written,
                    "oldest_undelivered_at": p.oldest_undelivered_at,
                }
                for p in self.partitions.values()
            },
        }


class ClusterWorker:
    """Runs on the service's event loop; sinks are called in threads."""

    def __init__(
        self,
        config: Config,
        cluster: ClusterSettings,
        sinks: Mapping[str, Sink],
        *,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.names = ClusterNames.of(cluster)
        self.sinks = sinks
        self.worker_id = _kv_safe(worker_id or cluster.worker_id or default_worker_id())
        self.status = WorkerStatus(self.worker_id)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._leases: KeyValue | None = None
        self._requests: KeyValue | None = None
        self._publisher: PipelinedPublisher | None = None
        self._owned: dict[int, int] = {}  # partition -> lease revision
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._lease_task: asyncio.Task[None] | None = None
        self._stopping = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._nc = await connect(self.cluster, name=f"s3forward-worker-{self.worker_id}")
        self._js = self._nc.jetstream(timeout=10)
        self._leases = await self._js.key_value(self.names.lease_bucket)
        self._requests = await self._js.key_value(self.names.request_bucket)
        self._publisher = PipelinedPublisher(self._nc)
        await self._publisher.start()
        self._lease_task = asyncio.create_task(self._lease_loop(), name="cluster-leases")
        log.info("cluster worker started", worker=self.worker_id)

    async def stop(self) -> None:
        """Stop every partition, give the leases back so others take over at once."""
        self._stopping = True
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        for partition in list(self._tasks):
            await self._release(partition)
        if self._leases is not None:
            for beat in ("w", "d"):
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await self._leases.delete(f"{beat}.{self.worker_id}")
        if self._publisher is not None:
            await self._publisher.close()
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._nc.close()

    @property
    def connection(self) -> Client | None:
        return self._nc

    def ready(self, now: float | None = None) -> tuple[bool, str]:
        """Red when this worker cannot do its share: no connection, heartbeats that JetStream
        does not take (its leases are expiring), or no partition for several lease rounds
        while there are enough partitions for every live worker."""
        now = time.time() if now is None else now
        status = self.status
        if status.draining:
            if self._owned:
                return False, f"draining: {len(self._owned)} partitions still to hand over"
            return False, "drained: owns no partition; safe to stop"
        if self._nc is None or not self._nc.is_connected:
            return False, "not connected to NATS"
        grace = 3 * self.cluster.lease_ttl
        heartbeat = status.last_lease_round_at or status.started_at
        if now - heartbeat > self.cluster.lease_ttl:
            return False, f"no lease heartbeat taken for {now - heartbeat:.0f}s"
        enough = len(status.live_workers) <= self.names.partitions
        owned = status.owned_some_at or status.started_at
        if enough and now - owned > grace:
            return False, f"owns no partition for {now - owned:.0f}s"
        return True, "ok"

    # ---------------------------------------------------------------- leases

    async def _lease_loop(self) -> None:
        while not self._stopping:
            try:
                await self._lease_round()
            except (nats.errors.Error, TimeoutError) as exc:
                self.status.last_error = f"lease round failed: {exc}"
                log.warning("lease round failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.cluster.lease_ttl / 3)

    def drain(self) -> None:
        """Retire this worker without stopping it: from the next lease round on it leaves the
        live set (its heartbeat becomes ``d.<id>``), gives every partition back, and the other
        workers take them over (rebuilding open windows from the log). It takes none again."""
        self.status.draining = True

    async def _lease_round(self) -> None:
        leases = self._leases
        assert leases is not None
        draining = self.status.draining
        beat = f"{'d' if draining else 'w'}.{self.worker_id}"
        await leases.put(beat, orjson.dumps(self.status.report()))
        if draining:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await leases.delete(f"w.{self.worker_id}")
        self.status.last_lease_round_at = time.time()
        try:
            keys = await leases.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        live = sorted({k[2:] for k in keys if k.startswith("w.")} - {self.worker_id})
        if not draining:
            live = sorted({*live, self.worker_id})
        self.status.live_workers = live
        mine = {
            p
            for p in range(self.names.partitions)
            if not draining and live[p % len(live)] == self.worker_id
        }
        for partition in sorted(set(self._owned) - mine):
            await self._release(partition)
        for partition in sorted(set(self._owned) & mine):
            task = self._tasks.get(partition)
            if task is not None and task.done():
                await self._release(partition)  # fenced or failed: take it again below
                continue
            try:
                self._owned[partition] = await leases.update(
                    f"p.{partition}", self.worker_id.encode(), last=self._owned[partition]
                )
            except nats.js.errors.KeyWrongLastSequenceError:
                log.warning("lease lost", partition=partition, worker=self.worker_id)
                await self._stop_partition(partition)
                self._owned.pop(partition, None)
        for partition in sorted(mine - set(self._owned)):
            try:
                revision = await leases.create(f"p.{partition}", self.worker_id.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # still held by its previous owner: it gives it back or it expires
            self._owned[partition] = revision
            self.status.lease_moves += 1
            self._tasks[partition] = asyncio.create_task(
                self._run_partition(partition), name=f"partition-{partition}"
            )
            log.info("lease acquired", partition=partition, worker=self.worker_id)
        if self._owned or draining:
            self.status.owned_some_at = time.time()

    async def _stop_partition(self, partition: int) -> None:
        task = self._tasks.pop(partition, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.status.partitions.pop(partition, None)

    async def _release(self, partition: int) -> None:
        await self._stop_partition(partition)
        revision = self._owned.pop(partition, None)
        if revision is not None and self._leases is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._leases.delete(f"p.{partition}", last=revision)
            log.info("lease released", partition=partition, worker=self.worker_id)

    # ---------------------------------------------------------------- one partition

    async def _run_partition(self, partition: int) -> None:
        runner = _PartitionRunner(self, partition)
        self.status.partitions[partition] = runner.status
        try:
            await runner.run()
        except FencedError as exc:
            log.warning("partition fenced off", partition=partition, error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not take the worker down: the lease moves on
            self.status.last_error = f"partition {partition}: {exc}"
            log.exception("partition failed", partition=partition)
        finally:
            await runner.close()


class _PartitionRunner:
    def __init__(self, worker: ClusterWorker, partition: int) -> None:
        self.worker = worker
        self.partition = partition
        self.names = worker.names
        self.cluster = worker.cluster
        assert worker._js is not None
        self.js = worker._js
        self.status = PartitionStatus(partition)
        self.seal_seq = 0
        self.recorded_low = 0
        self.records: list[tuple[int, int]] = []  # (seal-stream seq, last item seq)
        self.replay: PartitionReplay | None = None
        self.rng = random.Random()
        self._sub: Any = None
        self._ticker: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    # ------------------------------------------------------------ the seal log

    async def _read_seal_log(self) -> list[SealRecord]:
        subject = self.names.seal_subject(self.partition)
        try:
            last = await self.js.get_last_msg(self.names.seal_stream, subject)
        except nats.js.errors.NotFoundError:
            return []
        last_seq = int(last.seq or 0)
        records: dict[tuple[str, int], SealRecord] = {}
        sub = await self.js.subscribe(subject, stream=self.names.seal_stream, ordered_consumer=True)
        try:
            while True:
                msg = await sub.next_msg(timeout=30)
                seq = msg.metadata.sequence.stream
                data = orjson.loads(msg.data)
                kind = data.get("type")
                if kind in ("seal", "seals"):
                    for item in data["files"] if kind == "seals" else [data]:
                        record = SealRecord.from_json(item)
                        records[(record.connection, record.window_id)] = record
                        self.records.append((seq, record.last[0]))
                elif kind == "rekey":
                    key = (str(data["connection"]), int(data["window"]))
                    if key in records:
                        records[key] = dataclasses.replace(records[key], key=str(data["key"]))
                self.recorded_low = int(data.get("low", self.recorded_low))
                if seq >= last_seq:
                    break
        finally:
            await sub.unsubscribe()
        self.seal_seq = last_seq
        return list(records.values())

    async def _append(self, record: dict[str, Any]) -> int:
        """Append to the seal subject, fenced on its last sequence. Retries are deduplicated."""
        subject = self.names.seal_subject(self.partition)
        headers = {
            EXPECTED_LAST_SUBJECT_SEQ: str(self.seal_seq),
            "Nats-Msg-Id": f"{self.names.prefix}.{self.partition}.{self.seal_seq}."
            f"{self.worker.worker_id}",
        }
        body = orjson.dumps({**record, "owner": self.worker.worker_id})
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                ack = await self.js.publish(
                    subject, body, timeout=10, stream=self.names.seal_stream, headers=headers
                )
            except nats.js.errors.APIError as exc:
                if is_wrong_last_sequence(exc):
                    raise FencedError(
                        f"partition {self.partition}: the seal log moved past {self.seal_seq}; "
                        "another worker owns it now"
                    ) from None
                await asyncio.sleep(backoff_delay(attempt, 0.2, 3.0, self.rng))
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(backoff_delay(attempt, 0.2, 3.0, self.rng))
            else:
                self.seal_seq = ack.seq
                if "low" in record:
                    self.recorded_low = int(record["low"])
                return ack.seq
        raise FencedError(f"partition {self.partition}: the seal log cannot be written")

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        recorded = await self._read_seal_log()
        start = max(self.recorded_low, 1)
        await self._append({"type": "takeover", "low": start})
        replay = PartitionReplay(
            self.worker.config,
            prefix=self.names.prefix,
            partition=self.partition,
            start=start,
            recorded=recorded,
        )
        self.replay = replay
        log.info(
            "partition recovering",
            partition=self.partition,
            worker=self.worker.worker_id,
            from_seq=start,
            recorded_files=len(recorded),
        )
        self._ticker = asyncio.create_task(self._tick_loop())
        await self._subscribe(start)
        self.status.state = "running"
        last_watermark = time.monotonic()
        silence = max(5.0, 8 * self.cluster.tick_interval)
        while True:
            try:
                msgs = await self._next_chunk(silence)
            except (nats.errors.TimeoutError, TimeoutError):
                log.warning("partition log silent; resubscribing", partition=self.partition)
                await self._subscribe(replay.next_seq)
                continue
            entries = await self._entries(msgs)
            # Windowing and file building run in a thread, so that on a node that is also an
            # ingest node the event loop keeps answering (and acking) while files are built.
            # Each file's low watermark is taken right after the entry that sealed it, as if
            # the chunk were fed one entry at a time; the records and writes then follow in
            # log order, each record before its file.
            applied = await asyncio.to_thread(_feed_chunk, replay, entries)
            await self._record_and_write(applied)
            if applied:
                self.status.last_seq = applied[-1][0].seq
            self._update_status(replay)
            if time.monotonic() - last_watermark >= self.cluster.watermark_interval:
                last_watermark = time.monotonic()
                await self._watermark(replay)

    async def _record_and_write(
        self, applied: list[tuple[LogEntry, list[SealedFile], list[int]]]
    ) -> None:
        """Record every new file a chunk sealed in fenced ``seals`` records (up to
        ``_SEALS_PER_RECORD`` files each), then write the files in log order.

        One append per chunk instead of one per file: fewer replicated writes and round trips.
        A record's low watermark is the lowest of the watermarks of every file recorded so far
        in the chunk (each taken right after the entry that sealed it): none of them is written
        yet, so a successor that reads up to any of these records replays far enough back to
        rebuild them all."""
        files = [
            (sealed, low)
            for _, sealed_files, lows in applied
            for sealed, low in zip(sealed_files, lows, strict=True)
        ]
        new = [(sealed, low) for sealed, low in files if not sealed.recorded]
        for start in range(0, len(new), _SEALS_PER_RECORD):
            end = start + _SEALS_PER_RECORD
            group = new[start:end]
            low = min(low for _, low in new[:end])
            seq = await self._append(seals_record([sealed.record for sealed, _ in group], low))
            self.records.extend((seq, sealed.record.last[0]) for sealed, _ in group)
        for sealed, _ in files:
            await self._write(sealed)

    async def _subscribe(self, start: int) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._sub = await self.js.subscribe(
            self.names.data_subject(self.partition),
            stream=self.names.data_stream(self.partition),
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=max(start, 1)),
            idle_heartbeat=2.0,
        )

    async def _next_chunk(self, timeout: float) -> list[Msg]:
        sub = self._sub
        msgs = [await sub.next_msg(timeout=timeout)]
        while len(msgs) < _CHUNK and sub.pending_msgs > 0:
            msgs.append(await sub.next_msg(timeout=timeout))
        return msgs

    async def _entries(self, msgs: list[Msg]) -> list[LogEntry]:
        entries: list[LogEntry] = []
        checks: list[tuple[int, str, int]] = []
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            when = meta.timestamp.timestamp()
            headers = msg.headers or {}
            input_name = headers.get(HEADER_INPUT)
            if headers.get(HEADER_TICK) or input_name is None:
                entries.append(LogEntry(seq, when, None))
                continue
            request_id = headers.get(HEADER_REQUEST_ID)
            if request_id:
                checks.append((len(entries), request_key(input_name, request_id), seq))
            entries.append(
                LogEntry(
                    seq,
                    when,
                    input_name,
                    msg.data,
                    int(headers.get(HEADER_RECEIVED_MS, "0")),
                    int(headers.get(HEADER_BATCH_ID, "0")),
                )
            )
        if msgs:
            pending = msgs[-1].metadata.num_pending or 0
            self.status.pending = int(pending) + int(self._sub.pending_msgs if self._sub else 0)
        if checks:
            verdicts = await self._are_duplicates([(k, s) for _, k, s in checks])
            for (index, _, _), duplicate in zip(checks, verdicts, strict=True):
                if duplicate:
                    entries[index] = dataclasses.replace(entries[index], duplicate=True)
        return entries

    async def _are_duplicates(self, checks: list[tuple[str, int]]) -> list[bool]:
        """``_is_duplicate`` for a chunk: the creates pipelined, one round trip for all.

        A create refused because the key exists (or any other trouble) takes the careful
        one-at-a-time path, which reads the entry and retries."""
        publisher = self.worker._publisher
        assert publisher is not None
        creates = [
            Outbound(
                f"$KV.{self.names.request_bucket}.{key}",
                f"{self.partition}:{seq}".encode(),
                {EXPECTED_LAST_SUBJECT_SEQ: "0"},
                f"KV_{self.names.request_bucket}",
            )
            for key, seq in checks
        ]
        results = await publisher.publish_all(creates, timeout=10)
        verdicts = [False] * len(checks)
        for index, result in enumerate(results):
            if not isinstance(result, Ack):
                key, seq = checks[index]
                verdicts[index] = await self._is_duplicate(key, seq)
        return verdicts

    async def _is_duplicate(self, key: str, seq: int) -> bool:
        """First position wins, recorded in the request KV: replays decide the same."""
        kv = self.worker._requests
        assert kv is not None
        mine = f"{self.partition}:{seq}".encode()  # seqs are per stream: name the partition
        for attempt in range(_APPEND_ATTEMPTS):
            try:
                await kv.create(key, mine)
                return False
            except nats.js.errors.KeyWrongLastSequenceError:
                try:
                    entry = await kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    continue  # expired between the two calls: try to create again
                return entry.value != mine
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(backoff_delay(attempt, 0.2, 3.0, self.rng))
        raise S3ForwardError("the request KV bucket does not answer")

    async def _write(self, sealed: SealedFile) -> None:
        sink = self.worker.sinks[sealed.record.connection]
        obj = sealed.built.obj
        self.status.writing_since = sealed.record.sealed_at
        try:
            await self._write_until_done(sealed, sink, obj)
        finally:
            self.status.writing_since = None

    async def _write_until_done(self, sealed: SealedFile, sink: Sink, obj: EncodedObject) -> None:
        delivery = self.worker.config.delivery
        attempt = 0
        while True:
            try:
                outcome = await asyncio.to_thread(sink.write, obj)
            except KeyTakenError:
                if sealed.recorded and obj.sha256 != sealed.record.sha256:
                    # Rebuilt after a takeover under changed settings: its bytes differ from
                    # those the seal recorded, so the object on the recorded key is this
                    # window's own earlier write, not a foreign one. Never write it twice.
                    log.warning(
                        "a recorded window rebuilt with other bytes found its object; kept",
                        key=obj.key,
                    )
                    outcome = WriteOutcome.ALREADY_PRESENT
                else:
                    new_key = with_new_digits(obj.key, self.rng)
                    await self._append(
                        {
                            "type": "rekey",
                            "connection": sealed.record.connection,
                            "window": sealed.record.window_id,
                            "key": new_key,
                        }
                    )
                    log.warning("object key taken; new digits", key=obj.key, new_key=new_key)
                    obj = dataclasses.replace(obj, key=new_key)
                    continue
            except SinkError as exc:
                if isinstance(exc, PermanentSinkError):
                    delay = delivery.permanent_retry_interval
                else:
                    delay = backoff_delay(
                        attempt, delivery.backoff_base, delivery.backoff_cap, self.rng
                    )
                attempt += 1
                self.worker.status.last_error = f"{exc.code}: {exc}"
                log.warning("upload failed; will retry", key=obj.key, error=str(exc))
                await asyncio.sleep(delay)
                continue
            self.status.files_written += 1
            log.info(
                "file delivered",
                partition=self.partition,
                connection=sealed.record.connection,
                key=obj.key,
                batches=sealed.built.batches,
                outcome="created" if outcome is WriteOutcome.CREATED else "already present",
                rebuilt=sealed.recorded,
            )
            return

    async def _tick_loop(self) -> None:
        subject = self.names.data_subject(self.partition)
        stream = self.names.data_stream(self.partition)
        while True:
            await asyncio.sleep(self.cluster.tick_interval)
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self.js.publish(
                    subject, b"", timeout=5, stream=stream, headers={HEADER_TICK: "1"}
                )

    async def _watermark(self, replay: PartitionReplay) -> None:
        low = replay.low_watermark()
        if low <= self.recorded_low:
            return
        await self._append({"type": "watermark", "low": low})
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.js.purge_stream(
                self.names.data_stream(self.partition),
                seq=low,
                subject=self.names.data_subject(self.partition),
            )
        self.records = [(s, last) for s, last in self.records if last >= low]
        keep_from = min([s for s, _ in self.records] + [self.seal_seq])
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self.js.purge_stream(
                self.names.seal_stream,
                seq=keep_from,
                subject=self.names.seal_subject(self.partition),
            )

    def _update_status(self, replay: PartitionReplay) -> None:
        status = self.status
        status.next_seq = replay.next_seq
        status.low_watermark = replay.low_watermark()
        status.open_windows = replay.open_windows
        status.oldest_open_at = replay.oldest_open_at()


def seals_record(records: list[SealRecord], low: int) -> dict[str, Any]:
    """The seal log's record of files sealed together, with the low watermark a successor
    that finds it starts from."""
    return {"type": "seals", "files": [r.to_json() for r in records], "low": low}


def _feed_chunk(
    replay: PartitionReplay, entries: list[LogEntry]
) -> list[tuple[LogEntry, list[SealedFile], list[int]]]:
    """Feed ``entries`` in order; per entry its sealed files and each file's low watermark
    (the lowest position still needed with that file and the ones sealed after it unwritten).
    Only the partition's runner calls it, and it awaits the result: one thread at a time."""
    out: list[tuple[LogEntry, list[SealedFile], list[int]]] = []
    for entry in entries:
        files = replay.feed(entry)
        lows = [
            replay.low_watermark([f.record for f in files[index:]]) for index in range(len(files))
        ]
        out.append((entry, files, lows))
    return out


__all__ = [
    "ClusterWorker",
    "PartitionStatus",
    "WorkerStatus",
    "default_worker_id",
    "seals_record",
]
