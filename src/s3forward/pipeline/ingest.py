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
from typing import Any

import orjson

from s3forward.config import BatchingMode, Config
from s3forward.errors import PayloadTooLargeError, Problem, SpoolFullError, StoppingError
from s3forward.intake import SubmitResult
from s3forward.mparticle import batch_id_for, dedup_key, split_by_session
from s3forward.mparticle.parse import ValidatedBatches
from s3forward.pipeline.usage import (
    SpoolUsage,
    event_line_size,
    line_size,
    on_disk,
    sized_items,
)
from s3forward.pipeline.windowbook import ConnectionWindows, WindowBook
from s3forward.pipeline.writer import GroupCommitWriter, Op
from s3forward.spool.base import SpoolTransaction
from s3forward.spool.codec import BodyCodec, compress_body
from s3forward.windows import item_count

READY_FRACTION = 0.9
"""Readiness turns false at this fraction of the spool cap, before ingest starts answering 429."""


class _IngestOp:
    """One accepted request's batches, waiting for the writer's next commit."""

    __slots__ = (
        "batches",
        "bodies",
        "ingest",
        "input_name",
        "received_at",
        "request_ids",
        "stored",
    )

    def __init__(
        self,
        ingest: Ingest,
        input_name: str,
        batches: list[dict[str, Any]],
        bodies: list[bytes],
        received_at: float,
    ) -> None:
        self.ingest = ingest
        self.input_name = input_name
        self.batches = batches
        self.bodies = bodies
        # Issue 10: compressed here, on the caller's thread, so the writer thread only stores.
        self.stored = [compress_body(body) for body in bodies]
        self.received_at = received_at
        self.request_ids = [dedup_key(b) for b in batches]

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
        if self.stopping.is_set():
            raise StoppingError("s3forward is shutting down and takes no new data")
        if input_name not in self.config.inputs:
            # Only a request authenticated just before a reload removed its input gets here.
            raise StoppingError(f"input {input_name!r} is no longer configured")
        if isinstance(batches, ValidatedBatches) and len(batches.encoded) == len(batches):
            bodies = batches.encoded  # serialised once already, by validation
        else:
            bodies = [orjson.dumps(b) for b in batches]
        return self.writer.submit(_IngestOp(self, input_name, batches, bodies, received_at))

    # ---------------------------------------------------------------- in the writer

    def before_ops(self, txn: SpoolTransaction, now: float, ops: list[Op]) -> None:
        """Read the dedup index once per input for every request id of this commit."""
        wanted: dict[str, set[str]] = {}
        for op in ops:
            if isinstance(op, _IngestOp):
                ids = wanted.setdefault(op.input_name, set())
                ids.update(rid for rid in op.request_ids if rid is not None)
        self._known = {name: txn.known_requests(name, ids) for name, ids in wanted.items()}

    def after_ops(self, txn: SpoolTransaction, now: float) -> None:
        self._known = {}

    def next_wakeup(self, now: float) -> float | None:
        return None

    def _apply(self, op: _IngestOp, txn: SpoolTransaction, now: float) -> SubmitResult:
        connections = self.book.for_input(op.input_name)
        if not connections:  # the input was removed by a reload after this request was queued
            raise StoppingError(f"input {op.input_name!r} is no longer configured")
        sizes = [self._event_sizes(b.get("events") or [], connections) for b in op.batches]
        incoming = sum(
            on_disk(len(body)) + self._projected(body, event_sizes, connections)
            for body, event_sizes in zip(op.bodies, sizes, strict=True)
        )
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
        for batch, body, stored_body, request_id, event_sizes in zip(
            op.batches, op.bodies, op.stored, op.request_ids, sizes, strict=True
        ):
            if request_id is not None:
                if request_id in seen:
                    duplicates += 1
                    continue
                seen.add(request_id)
                txn.remember_request(op.input_name, request_id, now)
            self.usage.unbuilt += self._store_split(
                txn,
                now,
                op.input_name,
                batch,
                body,
                stored_body,
                event_sizes,
                received_ms,
                connections,
            )
            stored += 1
        return SubmitResult(stored=stored, duplicates=duplicates)

    def _store_split(
        self,
        txn: SpoolTransaction,
        now: float,
        input_name: str,
        batch: dict[str, Any],
        body: bytes,
        stored_body: bytes,
        event_sizes: list[int],
        received_ms: int,
        connections: list[ConnectionWindows],
    ) -> int:
        """Store a batch for every connection; per-session connections get a batch holding
        several sessions as one part per session (``mparticle.split_by_session``), each a
        batch of its own at its own position, sharing the batch's ``batch_id``."""
        per_session = [
            c for c in connections if c.settings.batching_mode is BatchingMode.PER_SESSION
        ]
        parts = split_by_session(batch) if per_session else [batch]
        whole, batch_id, projected = connections, None, 0
        if len(parts) > 1:
            batch_id = batch_id_for(batch, self.rng)
            for part in parts:
                part_body = orjson.dumps(part)  # rare: one batch of several sessions
                projected += self._store(
                    txn,
                    now,
                    input_name,
                    part,
                    part_body,
                    compress_body(part_body),
                    [],
                    received_ms,
                    per_session,
                    batch_id,
                )
            whole = [c for c in connections if c not in per_session]
        if whole:
            projected += self._store(
                txn,
                now,
                input_name,
                batch,
                body,
                stored_body,
                event_sizes,
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
        batch: dict[str, Any],
        body: bytes,
        stored_body: bytes,
        event_sizes: list[int],
        received_ms: int,
        connections: list[ConnectionWindows],
        batch_id: int | None = None,
    ) -> int:
        """Store one batch and place it; returns the projected bytes of its window items.

        ``body`` is the batch's JSON (the files built from it are sized by it), ``stored_body``
        the same compressed, as the spool keeps it."""
        self.usage.added += on_disk(len(stored_body))
        if batch_id is None:
            batch_id = batch_id_for(batch, self.rng)
        refs = sum(item_count(batch, state.settings.batching_mode) for state in connections)
        position = txn.append_batch(
            input_name, received_ms, batch_id, stored_body, refs, BodyCodec.ZLIB
        )
        projected = 0
        for state in connections:
            mode = state.settings.batching_mode
            for item, size in sized_items(
                batch, len(body), input_name, mode, position, event_sizes
            ):
                projected += size
                self.book.place(
                    txn,
                    now,
                    state,
                    group=item.group,
                    input_name=input_name,
                    position=position,
                    event_index=item.event_index,
                    size=size,
                    ends_session=item.ends_session,
                )
        return projected

    @staticmethod
    def _event_sizes(events: list[Any], connections: list[ConnectionWindows]) -> list[int]:
        if not events or all(
            c.settings.batching_mode is not BatchingMode.PER_EVENT for c in connections
        ):
            return []
        return [len(orjson.dumps(e)) for e in events]

    @staticmethod
    def _projected(body: bytes, sizes: list[int], connections: list[ConnectionWindows]) -> int:
        """The bytes the files still to be built from a batch may take (an upper estimate)."""
        total = 0
        for state in connections:
            if sizes and state.settings.batching_mode is BatchingMode.PER_EVENT:
                total += sum(event_line_size(len(body), sizes, i) for i in range(len(sizes)))
            else:
                total += line_size(len(body))
        return total
