"""Ingest: durable acceptance of validated batches (implements ``Intake``).

A request's batches become one operation of the writer's next commit: the size cap is checked,
repeated ``source_request_id``s are skipped (dedup), each new batch is stored once at its
position with its receive time and ``batch_id`` fixed, and placed in the windows of every
connection that reads its input. The caller's answer waits for the commit (fsync).
"""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import Future
from typing import Any, NamedTuple

import orjson

from s3forward.config import BatchingMode, Config
from s3forward.errors import PayloadTooLargeError, Problem, SpoolFullError, StoppingError
from s3forward.intake import SubmitResult
from s3forward.mparticle import new_batch_id
from s3forward.mparticle.parse import ValidatedBatches
from s3forward.pipeline.prepared import (
    PreparedBatch,
    missing_modes,
    modes_for,
    prepare_batches,
)
from s3forward.pipeline.usage import SpoolUsage, event_line_size, line_size, on_disk
from s3forward.pipeline.windowbook import ConnectionWindows, WindowBook
from s3forward.pipeline.writer import GroupCommitWriter, Op
from s3forward.spool.base import SpoolTransaction
from s3forward.spool.codec import BodyCodec
from s3forward.windows import planned_item_count, planned_items

READY_FRACTION = 0.9
"""Readiness turns false at this fraction of the spool cap, before ingest starts answering 429."""


class _IngestOp:
    """One accepted request's prepared batches, waiting for the writer's next commit."""

    __slots__ = ("ingest", "input_name", "modes", "prepared", "received_at")

    def __init__(
        self,
        ingest: Ingest,
        input_name: str,
        prepared: list[PreparedBatch],
        modes: frozenset[BatchingMode],
        received_at: float,
    ) -> None:
        self.ingest = ingest
        self.input_name = input_name
        self.prepared = prepared
        self.modes = modes
        self.received_at = received_at

    def __call__(self, txn: SpoolTransaction, now: float) -> SubmitResult:
        return self.ingest._apply(self, txn, now)


class Ingest:
    """Cap, dedup and placement of accepted batches; a participant of every writer commit."""

    def __init__(
        self,
        config: Config,
        writer: GroupCommitWriter,
        book: WindowBook,
        usage: SpoolUsage,
        *,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.writer = writer
        self.book = book
        self.usage = usage
        self.rng = rng
        self.stopping = threading.Event()
        self._known: dict[str, set[str]] = {}
        self._refused_bytes = 0
        """The size of the last request refused for the cap: not ready while it would not fit."""

    # ---------------------------------------------------------------- Intake

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        result: SubmitResult = await asyncio.wrap_future(
            self._enqueue(input_name, batches, received_at)
        )
        return result

    def submit_sync(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        result: SubmitResult = self._enqueue(input_name, batches, received_at).result()
        return result

    def ready(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "shutting down"
        if self.writer.last_error is not None:
            return False, self.writer.last_error
        cap = self.config.spool.max_bytes
        held = self.usage.bytes
        if held >= cap * READY_FRACTION or held + self._refused_bytes > cap:
            return False, (
                f"spool holds {held} bytes, {held / cap:.0%} of its {cap}-byte cap: "
                "delivery is behind"
            )
        return True, "ok"

    def _enqueue(
        self, input_name: str, batches: list[dict[str, Any]], received_at: float
    ) -> Future[SubmitResult]:
        self._check_open(input_name)
        if isinstance(batches, ValidatedBatches) and len(batches.encoded) == len(batches):
            bodies = batches.encoded  # serialised once already, by validation
        else:
            bodies = [orjson.dumps(b) for b in batches]
        # Issue 10: prepared (and compressed) here, on the caller's thread, so the writer
        # thread only stores; HTTP worker processes run the same function and send the result.
        modes = modes_for(self.config, input_name)
        prepared = prepare_batches(input_name, batches, bodies, modes)
        return self.writer.submit(_IngestOp(self, input_name, prepared, modes, received_at))

    def submit_prepared(
        self,
        input_name: str,
        prepared: list[PreparedBatch],
        modes: frozenset[BatchingMode],
        *,
        received_at: float,
    ) -> Future[SubmitResult]:
        """Queue batches prepared elsewhere (an HTTP worker process) for the next commit, with
        the same promises as ``submit``: all or nothing, the future resolves once durable."""
        self._check_open(input_name)
        return self.writer.submit(_IngestOp(self, input_name, prepared, modes, received_at))

    def _check_open(self, input_name: str) -> None:
        if self.stopping.is_set():
            raise StoppingError("s3forward is shutting down and takes no new data")
        if input_name not in self.config.inputs:
            # Only a request authenticated just before a reload removed its input gets here.
            raise StoppingError(f"input {input_name!r} is no longer configured")

    # ---------------------------------------------------------------- in the writer

    def before_ops(self, txn: SpoolTransaction, now: float, ops: list[Op]) -> None:
        """Read the dedup index once per input for every request id of this commit."""
        wanted: dict[str, set[str]] = {}
        for op in ops:
            if isinstance(op, _IngestOp):
                ids = wanted.setdefault(op.input_name, set())
                ids.update(p.dedup_key for p in op.prepared if p.dedup_key is not None)
        self._known = {name: txn.known_requests(name, ids) for name, ids in wanted.items()}

    def after_ops(self, txn: SpoolTransaction, now: float) -> None:
        self._known = {}

    def next_wakeup(self, now: float) -> float | None:
        return None

    def _apply(self, op: _IngestOp, txn: SpoolTransaction, now: float) -> SubmitResult:
        connections = self.book.for_input(op.input_name)
        if not connections:  # the input was removed by a reload after this request was queued
            raise StoppingError(f"input {op.input_name!r} is no longer configured")
        missing = missing_modes(op.modes, {c.settings.batching_mode for c in connections})
        if missing:  # a reload changed the input's connections while the request was prepared
            raise StoppingError(
                f"input {op.input_name!r} gained {', '.join(sorted(missing))} connections "
                "after this request was prepared; retry"
            )
        incoming = sum(self._incoming(p, connections) for p in op.prepared)
        cap = self.config.spool.max_bytes
        if incoming > cap * READY_FRACTION:
            # Even an empty spool could not take it: retrying later would never help.
            raise PayloadTooLargeError(
                [
                    Problem(
                        "body",
                        f"this request needs about {incoming} bytes of spool (its batches and "
                        f"the files they become), more than the {cap}-byte spool.max_bytes "
                        "allows; send smaller requests or raise spool.max_bytes",
                    )
                ]
            )
        if self.usage.bytes + incoming > cap:
            self._refused_bytes = incoming
            raise SpoolFullError(
                f"the spool is full ({self.usage.bytes} of {cap} bytes); "
                "delivery is behind, retry later",
                retry_after=self.config.spool.retry_after,
            )
        self._refused_bytes = 0
        received_ms = int(op.received_at * 1000)
        seen = self._known.setdefault(op.input_name, set())
        stored = duplicates = 0
        for prepared in op.prepared:
            request_id = prepared.dedup_key
            if request_id is not None:
                if request_id in seen:
                    duplicates += 1
                    continue
                seen.add(request_id)
                txn.remember_request(op.input_name, request_id, now)
            self.usage.unbuilt += self._store_split(
                txn, now, op.input_name, prepared, received_ms, connections
            )
            stored += 1
        return SubmitResult(stored=stored, duplicates=duplicates)

    def _store_split(
        self,
        txn: SpoolTransaction,
        now: float,
        input_name: str,
        prepared: PreparedBatch,
        received_ms: int,
        connections: list[ConnectionWindows],
    ) -> int:
        """Store a batch for every connection; per-session connections get a batch holding
        several sessions as one part per session (``mparticle.split_by_session``), each a
        batch of its own at its own position, sharing the batch's ``batch_id``."""
        split, whole = _split_by_parts(prepared, connections)
        batch_id, projected = prepared.batch_id, 0
        if split:
            if batch_id is None:
                batch_id = new_batch_id(self.rng)
            for part in prepared.parts:
                projected += self._store(
                    txn,
                    now,
                    input_name,
                    _Placement(part.stored, part.body_bytes, 0, [], "", part.group),
                    part.ends_session,
                    received_ms,
                    split,
                    batch_id,
                )
        if whole:
            placement = _Placement(
                prepared.stored,
                prepared.body_bytes,
                prepared.events,
                prepared.event_sizes,
                prepared.device_group,
                prepared.session_group,
            )
            projected += self._store(
                txn,
                now,
                input_name,
                placement,
                prepared.ends_session,
                received_ms,
                whole,
                batch_id,
            )
        return projected

    def _store(
        self,
        txn: SpoolTransaction,
        now: float,
        input_name: str,
        item: _Placement,
        ends: bool,
        received_ms: int,
        connections: list[ConnectionWindows],
        batch_id: int | None,
    ) -> int:
        """Store one batch (or session part) and place it; returns the projected bytes of its
        window items. Sizes come from its JSON's length, the spool keeps it compressed."""
        self.usage.added += on_disk(len(item.stored))
        if batch_id is None:
            batch_id = new_batch_id(self.rng)
        refs = sum(
            planned_item_count(state.settings.batching_mode, item.events) for state in connections
        )
        position = txn.append_batch(
            input_name, received_ms, batch_id, item.stored, refs, BodyCodec.ZLIB
        )
        projected = 0
        for state in connections:
            plans = planned_items(
                mode=state.settings.batching_mode,
                events=item.events,
                device_group=item.device_group,
                session_group=item.session_group,  # present: checked by missing_modes
                ends_session=ends,
                input_name=input_name,
                position=position,
            )
            for plan in plans:
                index = plan.event_index
                if index is None:
                    size = line_size(item.body_bytes)
                else:
                    size = event_line_size(item.body_bytes, item.event_sizes, index)
                projected += size
                self.book.place(
                    txn,
                    now,
                    state,
                    group=plan.group,
                    input_name=input_name,
                    position=position,
                    event_index=index,
                    size=size,
                    ends_session=plan.ends_session,
                )
        return projected

    @staticmethod
    def _incoming(prepared: PreparedBatch, connections: list[ConnectionWindows]) -> int:
        """The spool bytes a batch will take: what is stored of it and the files still to be
        built from it (an upper estimate). A batch of several sessions is stored once per
        session part for per-session connections, each part with the batch's envelope: every
        part is counted, so a batch that splits into many parts cannot pass the cap unseen."""
        body_bytes, sizes = prepared.body_bytes, prepared.event_sizes
        split, whole = _split_by_parts(prepared, connections)
        total = 0
        if split:
            total += sum(on_disk(part.body_bytes) for part in prepared.parts)
            total += len(split) * sum(line_size(part.body_bytes) for part in prepared.parts)
        if whole:
            total += on_disk(body_bytes)
        for state in whole:
            if sizes and state.settings.batching_mode is BatchingMode.PER_EVENT:
                total += sum(event_line_size(body_bytes, sizes, i) for i in range(len(sizes)))
            else:
                total += line_size(body_bytes)
        return total


def _split_by_parts(
    prepared: PreparedBatch, connections: list[ConnectionWindows]
) -> tuple[list[ConnectionWindows], list[ConnectionWindows]]:
    """(the connections that store ``prepared`` as its session parts, those that store it
    whole): per-session connections take the parts when the batch holds several sessions."""
    if not prepared.parts:
        return [], connections
    split = [c for c in connections if c.settings.batching_mode is BatchingMode.PER_SESSION]
    return split, [c for c in connections if c not in split]


class _Placement(NamedTuple):
    """What ``_store`` stores and places: a prepared batch, or one session part of it."""

    stored: bytes
    body_bytes: int
    events: int
    event_sizes: list[int]
    device_group: str
    session_group: str | None
