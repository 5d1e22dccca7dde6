"""The offline pipeline behind ``s3forward forward``: batches from files straight to a sink.

The same core as the service (filters, outbound form, batching mode, layout, sink), without the
spool: every batch counts as received now, windows are sealed at their caps and at the end of
the input. A file that fails to write stops the run with its error; files already written stay.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from s3forward.clock import Clock, SystemClock
from s3forward.config import BatchingMode, ConnectionSettings
from s3forward.errors import KeyTakenError
from s3forward.files import EmptyWindow, FileItem, build_file, with_new_digits
from s3forward.layout import EncodedObject
from s3forward.mparticle import batch_id_for, split_by_session
from s3forward.pipeline.usage import sized_items
from s3forward.sinks.base import Sink, WriteOutcome
from s3forward.windows import Grouper, Sealed, WindowPolicy

_MAX_KEY_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class WrittenFile:
    key: str
    batches: int
    events: int
    bytes: int
    outcome: WriteOutcome


@dataclass(slots=True)
class ForwardSummary:
    files: list[WrittenFile] = field(default_factory=list)

    @property
    def batches(self) -> int:
        return sum(f.batches for f in self.files)

    @property
    def events(self) -> int:
        return sum(f.events for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def write_with_fresh_key(
    sink: Sink, obj: EncodedObject, rng: random.Random
) -> tuple[str, WriteOutcome]:
    """Write ``obj``; when its key holds a different object, retry with new random digits."""
    for _ in range(_MAX_KEY_ATTEMPTS):
        try:
            return obj.key, sink.write(obj)
        except KeyTakenError:
            obj = EncodedObject(
                key=with_new_digits(obj.key, rng),
                body=obj.body,
                content_type=obj.content_type,
                content_encoding=obj.content_encoding,
                sha256=obj.sha256,
            )
    raise KeyTakenError(obj.key)


def forward_batches(
    batches: Iterable[dict[str, Any]],
    settings: ConnectionSettings,
    sink: Sink,
    *,
    input_name: str,
    app_name: str,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    on_file: Callable[[WrittenFile], None] | None = None,
) -> ForwardSummary:
    """Group ``batches`` by the connection's batching mode and write every file to ``sink``."""
    clock = clock or SystemClock()
    rng = rng or random.Random()
    grouper: Grouper[FileItem] = Grouper(WindowPolicy.from_settings(settings))
    summary = ForwardSummary()
    mode = settings.batching_mode

    def write(sealed: list[tuple[Sealed, list[FileItem]]]) -> None:
        now = clock.now()
        for _window, items in sealed:
            built = build_file(
                items, settings, app_name=app_name, sealed_at=now, digits=rng.randrange(100_000)
            )
            if isinstance(built, EmptyWindow):
                continue  # nothing to write for this window (see build_file)
            key, outcome = write_with_fresh_key(sink, built.obj, rng)
            written = WrittenFile(key, built.batches, built.events, len(built.obj.body), outcome)
            summary.files.append(written)
            if on_file is not None:
                on_file(written)

    positions = itertools.count(1)
    for batch in batches:
        now = clock.now()
        received_ms = int(now * 1000)
        batch_id = batch_id_for(batch, rng)
        # Issue 11: per session, a batch of several sessions is split as the service does;
        # each part is a batch of its own, with a position of its own.
        parts = split_by_session(batch) if mode is BatchingMode.PER_SESSION else [batch]
        for part in parts:
            position = next(positions)
            body_bytes = len(orjson.dumps(part))
            for plan, size in sized_items(part, body_bytes, input_name, mode, position):
                index = plan.event_index
                item = FileItem(part, received_ms, batch_id, index, position, input_name)
                write(grouper.add(plan.group, item, size, now, ends_session=plan.ends_session))
        write(grouper.due(now))
    write(grouper.finish())
    return summary
