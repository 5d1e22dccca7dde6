"""The log under the pipeline: one Protocol that every spool backend implements.

The pipeline talks to its durable store only through the types here. ``SqliteSpool``
(``spool/sqlite.py``) is the embedded default; ``MemorySpool`` (``spool/memory.py``) ships in
the package for tests. A partitioned, replicated log (JetStream, Kafka) fits the same shape: see
``ReplayableLog`` for what it adds.

What the spool holds, and the durable states it moves each thing through::

    batches   accepted inbound batches, each at a *position* (a number that only grows),
              with the receive time and batch_id fixed at ingest; released once no window
              refers to them
    windows   OPEN -> SEALED (seal time, reason and the key's five digits recorded)
              -> gone, once its file is stored
    items     which batch (or which event of a batch) belongs to which window, in order
    files     PENDING -> DELIVERED (body dropped; the row is kept as recent history)
    requests  the source_request_ids accepted per input (the dedup index)

Writes happen in transactions (``Spool.write``) owned by exactly one writer thread. Everything
a transaction did is durable (for SQLite: fsync'd) when ``write``'s block exits normally, and
none of it happened if the block raised: a crash at any point leaves the last committed state.
Reads are safe from any thread and see committed data only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from s3forward.spool.codec import BodyCodec


class FileState(StrEnum):
    """A built file's durable state."""

    PENDING = "pending"  # stored with its body, waiting for (another) delivery attempt
    DELIVERED = "delivered"  # the sink confirmed the write; the body is gone


class WindowState(StrEnum):
    """A window's durable state (derived: a sealed window has a seal time)."""

    OPEN = "open"
    SEALED = "sealed"


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """A window as stored. Size, item count and last activity are derived from its items."""

    window_id: int
    connection: str
    group: str
    input: str
    opened_at: float
    last_activity: float
    bytes: int
    items: int
    next_seq: int
    sealed_at: float | None
    seal_reason: str | None
    digits: int | None = None
    """The five random digits of the window's object key, chosen once when it was sealed."""

    @property
    def state(self) -> WindowState:
        return WindowState.OPEN if self.sealed_at is None else WindowState.SEALED


@dataclass(frozen=True, slots=True)
class WindowItem:
    """One item of a window with the batch it refers to, as ingest stored it."""

    position: int
    event_index: int | None
    input: str
    received_ms: int
    batch_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """An accepted batch at its position in the log."""

    position: int
    input: str
    received_ms: int
    batch_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class NewFile:
    """A sealed window's built object, to be stored once."""

    connection: str
    window_id: int
    key: str
    body: bytes
    sha256: str
    content_type: str
    content_encoding: str | None
    raw_bytes: int
    batches: int
    events: int
    sealed_at: float
    first_received_ms: int


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A stored file's metadata (the body is read separately, by id)."""

    file_id: int
    connection: str
    window_id: int
    key: str
    sha256: str
    content_type: str
    content_encoding: str | None
    raw_bytes: int
    stored_bytes: int
    batches: int
    events: int
    sealed_at: float
    first_received_ms: int
    state: FileState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class SpoolCounts:
    open_windows: int = 0
    sealed_windows: int = 0
    pending_files: int = 0
    delivered_files: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "open_windows": self.open_windows,
            "sealed_windows": self.sealed_windows,
            "pending_files": self.pending_files,
            "delivered_files": self.delivered_files,
            "batches": self.batches,
        }


class SpoolTransaction(Protocol):
    """The writes of one transaction. Nothing is durable until the transaction commits.

    Reads through the transaction (``known_requests``) see its own earlier writes.
    """

    def known_requests(self, input_name: str, request_ids: Iterable[str]) -> set[str]:
        """Which of ``request_ids`` were accepted for ``input_name`` (committed or in this
        transaction) and not yet forgotten."""
        ...

    def remember_request(self, input_name: str, request_id: str, seen_at: float) -> None:
        """Add a source_request_id to the dedup index. Idempotent (a repeat refreshes it)."""
        ...

    def forget_requests_before(self, cutoff: float) -> int:
        """Drop dedup entries seen before ``cutoff``. Returns how many."""
        ...

    def append_batch(
        self,
        input_name: str,
        received_ms: int,
        batch_id: int,
        body: bytes,
        refs: int,
        codec: BodyCodec = BodyCodec.JSON,
    ) -> int:
        """Store an accepted batch referenced by ``refs`` window items; returns its position.

        ``body`` is stored as given, in ``codec`` (``spool/codec.py``); reads of the batch
        (``window_items``, ``replay``) return its JSON whatever the codec.

        Positions only grow, also across restarts; a rolled-back transaction's positions may
        be handed out again.
        """
        ...

    def open_window(
        self, window_id: int, connection: str, group: str, input_name: str, opened_at: float
    ) -> None:
        """Record a new OPEN window. ``window_id`` must never have been used."""
        ...

    def add_item(
        self,
        window_id: int,
        seq: int,
        position: int,
        event_index: int | None,
        size: int,
        added_at: float,
    ) -> None:
        """Append an item to an open window; ``seq`` counts up from 0 per window."""
        ...

    def seal_window(self, window_id: int, sealed_at: float, reason: str, digits: int) -> None:
        """OPEN -> SEALED, with the seal time, reason and key digits. A window already
        sealed keeps its first seal (idempotent)."""
        ...

    def store_file(self, file: NewFile) -> tuple[int, int]:
        """Store a SEALED window's file and release the window, its items and every batch no
        other window refers to. Exactly once per window: storing a second file for the same
        window raises ``ValueError`` and changes nothing.

        Returns (file id, bytes of batch bodies released).
        """
        ...

    def drop_window(self, window_id: int) -> int:
        """Forget a window (a SEALED one whose file has nothing to write, or any window of a
        connection an operator discards), releasing its items and every batch no other window
        refers to, as ``store_file`` does. Idempotent. Returns the bytes of batch bodies
        released."""
        ...

    def discard_file(self, file_id: int) -> int:
        """Delete a PENDING file without delivering it (an operator discards a removed
        connection's data). Returns the bytes of its body; 0 (and no change) when the file is
        unknown or not pending. Idempotent."""
        ...

    def mark_delivered(self, file_id: int, now: float) -> int:
        """PENDING -> DELIVERED, dropping the body. Returns the bytes released; 0 (and no
        change) when the file is unknown or already delivered."""
        ...

    def mark_attempt_failed(self, file_id: int, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt on a PENDING file and schedule the next one."""
        ...

    def rekey(self, file_id: int, key: str) -> None:
        """Give a PENDING file a new key (its old one holds a different object)."""
        ...

    def retry_now(self, connection: str, now: float) -> None:
        """Make every PENDING file of ``connection`` due at ``now`` (its settings changed on
        reload, e.g. rotated keys: a retry scheduled minutes away is tried now)."""
        ...

    def prune_delivered(self, keep: int) -> None:
        """Keep only the ``keep`` most recently delivered files' rows."""
        ...


class SpoolView(Protocol):
    """Read-only views: for the pipeline, ``status`` and the ``spool`` CLI. Committed data only;
    safe from any thread. No payloads except by file or window id."""

    def open_windows(self) -> list[StoredWindow]:
        """Every OPEN window, oldest first."""
        ...

    def sealed_windows(
        self, limit: int = 1000, connections: Sequence[str] | None = None
    ) -> list[StoredWindow]:
        """SEALED windows waiting for their file, oldest seal first; only of ``connections``."""
        ...

    def window_items(self, window_id: int) -> list[WindowItem]:
        """A window's items in order, each with its batch."""
        ...

    def max_window_id(self) -> int:
        """The largest window id ever used (0 for none)."""
        ...

    def due_files(self, connection: str, now: float, limit: int) -> list[StoredFile]:
        """PENDING files of ``connection`` whose next attempt is due, soonest first."""
        ...

    def file(self, file_id: int) -> StoredFile | None: ...

    def file_body(self, file_id: int) -> bytes | None:
        """A PENDING file's body; None once delivered or unknown."""
        ...

    def files(self, state: FileState | None = None, limit: int = 100) -> list[StoredFile]:
        """Files in ``state``: pending oldest first, delivered newest first (all: newest)."""
        ...

    def stored_bytes(self) -> int:
        """Bytes of data held: batch bodies plus undelivered file bodies."""
        ...

    def footprint_bytes(self) -> int:
        """What the spool takes in its storage now, overheads included (SQLite: the pages in
        use; free pages are reused and not counted). The spool cap is compared with this."""
        ...

    def counts(self) -> SpoolCounts: ...

    def oldest_pending(self) -> dict[str, float]:
        """Per connection: when (s) the oldest batch in an undelivered file was received."""
        ...

    def pending_by_connection(self) -> dict[str, tuple[int, int]]:
        """Per connection: (undelivered files, their stored bytes)."""
        ...

    def open_windows_by_connection(self) -> dict[str, int]: ...

    def last_errors(self) -> dict[str, tuple[str, int]]:
        """Per connection: the error of its most recently failed waiting file, and attempts."""
        ...


class ReplayableLog(Protocol):
    """What a partitioned, replicated log needs beyond today's single-node pipeline.

    ``SqliteSpool`` and ``MemorySpool`` implement it over their one "partition" so that the
    model test pins the rules a distributed backend must keep:

    - positions: every accepted batch has a position that only grows;
    - replay: the batches at or after a position, in order, rebuild what was open;
    - fenced seals: only the current owner may record a seal; a stale owner's record fails
      (``FencedError``) instead of splitting a window;
    - release: everything below the low watermark (the first position an unsealed or
      unbuilt window still needs) can be dropped.
    """

    def replay(self, from_position: int) -> Iterator[StoredBatch]:
        """Stored batches at positions >= ``from_position``, in position order."""
        ...

    def low_watermark(self) -> int:
        """The smallest position still needed (by an open or sealed-but-unbuilt window), or
        the next position when nothing is needed."""
        ...

    def take_ownership(self) -> int:
        """Become the owner of the log; returns the new fence token. Every earlier token is
        fenced out from then on. Durable when it returns."""
        ...

    def record_seal(self, fence: int, window_id: int, sealed_at: float, reason: str) -> None:
        """Seal a window under ``fence``; raises ``FencedError`` if a newer owner exists."""
        ...


class Spool(SpoolView, Protocol):
    """A durable spool: read views, transactions, lifecycle."""

    def write(self, doing: str) -> AbstractContextManager[SpoolTransaction]:
        """A write transaction; commits (durably) when the block exits normally.

        Only one thread may write. A failed commit raises ``SpoolUnavailableError`` (disk
        full, I/O error) and leaves the spool as it was before the block.
        """
        ...

    def schema_version(self) -> int:
        """The version of the stored format this spool uses."""
        ...

    def worker_view(self) -> Callable[[], SpoolView]:
        """A picklable factory that opens a read-only view in another process (file
        building). Backends that cannot be shared return a factory for this same view and
        must be built in-process."""
        ...

    def shareable(self) -> bool:
        """Whether ``worker_view`` works in another process."""
        ...

    def start_background(self) -> None:
        """Start background upkeep (checkpoints); stopped by ``close``."""
        ...

    def close(self) -> None:
        """Release the spool. Committed data stays; a later ``open`` finds it."""
        ...
