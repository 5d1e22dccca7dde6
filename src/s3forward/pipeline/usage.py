"""SpoolUsage: how much of ``spool.max_bytes`` the spool uses, kept by the writer thread.

Three parts, so that the cap bounds everything the spool holds, overheads included:

- ``measured``: the spool's real footprint after the last commit (``SpoolView.footprint_bytes``:
  for SQLite, the database pages in use, so page slack, indexes and rows all count);
- ``unbuilt``: the projected size of every file still to be built: its windows' items (the
  outbound line of each batch, or of each event in per-event mode, rounded up to whole pages);
- ``added``: what operations of the commit in progress have added since ``measured``.

Changed only on the writer thread; other threads read a recent value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from s3forward.config import BatchingMode
from s3forward.windows import ItemPlan, items_of

PAGE = 4096
_PACKED = 1024
"""Rows smaller than this share pages; larger ones take whole pages, as SQLite stores them."""


def on_disk(size: int) -> int:
    """An upper estimate of the bytes a stored row of ``size`` bytes takes."""
    if size < _PACKED:
        return size + 64
    return -(-(size + 64) // (PAGE - 36)) * PAGE


LINE_OVERHEAD = 320
"""Bytes the outbound form may add to a batch's line (message_id, message_type, schema_version,
the receive time, a generated batch_id, the identity array form, unique_id), counted ahead so
that the spool cap covers the files still to be built, not only the batches."""


def line_size(body_bytes: int) -> int:
    """The size a window counts for a batch of ``body_bytes`` JSON bytes: its outbound line,
    stored. The same in every engine, so that ``max_file_bytes`` cuts the same files."""
    return on_disk(body_bytes + LINE_OVERHEAD)


def event_line_size(body_bytes: int, event_sizes: list[int], index: int) -> int:
    """The size of event ``index``'s own line (per_event): the batch's envelope plus that one
    event (``event_sizes``: each event's JSON bytes)."""
    events_bytes = sum(event_sizes) + len(event_sizes) + 1  # "[", "]" and the commas
    envelope = max(0, body_bytes - events_bytes)
    return on_disk(envelope + event_sizes[index] + 2 + LINE_OVERHEAD)


def sized_items(
    batch: dict[str, Any],
    body_bytes: int,
    input_name: str,
    mode: BatchingMode,
    position: int,
    event_sizes: list[int] | None = None,
) -> list[tuple[ItemPlan, int]]:
    """``windows.items_of`` with the size each item counts in its window (``body_bytes``: the
    batch's JSON; ``event_sizes``: each event's JSON bytes, when the caller has them)."""
    plans = items_of(batch, input_name, mode, position)
    out: list[tuple[ItemPlan, int]] = []
    for plan in plans:
        index = plan.event_index
        if index is None:
            out.append((plan, line_size(body_bytes)))
            continue
        if not event_sizes:
            event_sizes = [len(orjson.dumps(e)) for e in batch["events"]]
        out.append((plan, event_line_size(body_bytes, event_sizes, index)))
    return out


@dataclass(slots=True)
class SpoolUsage:
    measured: int = 0
    unbuilt: int = 0
    added: int = 0

    @property
    def bytes(self) -> int:
        return self.measured + self.unbuilt + self.added

    def committed(self, footprint: int) -> None:
        """After a commit: the real footprint replaces the running estimate."""
        self.measured = footprint
        self.added = 0
