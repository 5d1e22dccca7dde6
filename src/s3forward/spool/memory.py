"""MemorySpool: an in-memory ``Spool`` and ``ReplayableLog`` for tests (ships in the package).

It keeps the same contracts as ``SqliteSpool`` (``spool/base.py``) so that the pipeline can be
tested without a disk, and so that the model test can hold both to one reference. A transaction
works on a copy of the state and replaces it on commit, so a failing block changes nothing.
"Durable" means: survives ``close`` and a new ``MemorySpool(state=old.state)``, which is how tests
simulate a restart. ``fail_next_commit`` injects a commit failure (disk full).
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from s3forward.errors import FencedError, SpoolUnavailableError
from s3forward.spool.base import (
    FileState,
    NewFile,
    SpoolCounts,
    SpoolView,
    StoredBatch,
    StoredFile,
    StoredWindow,
    WindowItem,
)
from s3forward.spool.codec import BodyCodec, body_json

SCHEMA_VERSION = 2
"""Mirrors ``SqliteSpool``'s: batch bodies carry their codec (version 2)."""


@dataclass(slots=True)
class _Window:
    window_id: int
    connection: str
    group: str
    input: str
    opened_at: float
    sealed_at: float | None = None
    seal_reason: str | None = None
    digits: int | None = None
    items: list[tuple[int, int | None, int, float]] = field(default_factory=list)
    """(position, event index, size, added at) in order."""


@dataclass(slots=True)
class _Batch:
    input: str
    received_ms: int
    batch_id: int
    body: bytes
    refs: int
    codec: BodyCodec = BodyCodec.JSON

    @property
    def json(self) -> bytes:
        return body_json(self.codec, self.body)


@dataclass(slots=True)
class MemoryState:
    """Everything a MemorySpool holds; hand it to a new MemorySpool to "restart"."""

    batches: dict[int, _Batch] = field(default_factory=dict)
    windows: dict[int, _Window] = field(default_factory=dict)
    files: dict[int, StoredFile] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    requests: dict[tuple[str, str], float] = field(default_factory=dict)
    next_position: int = 1
    next_file_id: int = 1
    max_window_id: int = 0
    fence: int = 0


class _Transaction:
    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def known_requests(self, input_name: str, request_ids: Iterable[str]) -> set[str]:
        return {r for r in request_ids if (input_name, r) in self.state.requests}

    def remember_request(self, input_name: str, request_id: str, seen_at: float) -> None:
        self.state.requests[(input_name, request_id)] = seen_at

    def forget_requests_before(self, cutoff: float) -> int:
        old = [k for k, seen in self.state.requests.items() if seen < cutoff]
        for k in old:
            del self.state.requests[k]
        return len(old)

    def append_batch(
        self,
        input_name: str,
        received_ms: int,
        batch_id: int,
        body: bytes,
        refs: int,
        codec: BodyCodec = BodyCodec.JSON,
    ) -> int:
        position = self.state.next_position
        self.state.next_position += 1
        self.state.batches[position] = _Batch(input_name, received_ms, batch_id, body, refs, codec)
        return position

    def open_window(
        self, window_id: int, connection: str, group: str, input_name: str, opened_at: float
    ) -> None:
        if window_id in self.state.windows or window_id <= self.state.max_window_id:
            raise ValueError(f"window id {window_id} was used before")
        self.state.windows[window_id] = _Window(window_id, connection, group, input_name, opened_at)
        self.state.max_window_id = window_id

    def add_item(
        self,
        window_id: int,
        seq: int,
        position: int,
        event_index: int | None,
        size: int,
        added_at: float,
    ) -> None:
        window = self.state.windows[window_id]
        if seq != len(window.items):
            raise ValueError(f"window {window_id}: item {seq} out of order")
        window.items.append((position, event_index, size, added_at))

    def seal_window(self, window_id: int, sealed_at: float, reason: str, digits: int) -> None:
        window = self.state.windows.get(window_id)
        if window is not None and window.sealed_at is None:
            window.sealed_at, window.seal_reason, window.digits = sealed_at, reason, digits

    def store_file(self, file: NewFile) -> tuple[int, int]:
        state = self.state
        if any(f.window_id == file.window_id for f in state.files.values()):
            raise ValueError(f"window {file.window_id} already has its file")
        file_id = state.next_file_id
        state.next_file_id += 1
        state.files[file_id] = StoredFile(
            file_id=file_id,
            connection=file.connection,
            window_id=file.window_id,
            key=file.key,
            sha256=file.sha256,
            content_type=file.content_type,
            content_encoding=file.content_encoding,
            raw_bytes=file.raw_bytes,
            stored_bytes=len(file.body),
            batches=file.batches,
            events=file.events,
            sealed_at=file.sealed_at,
            first_received_ms=file.first_received_ms,
            state=FileState.PENDING,
            attempts=0,
            next_attempt_at=0.0,
            last_error=None,
            delivered_at=None,
        )
        state.bodies[file_id] = file.body
        return file_id, self._release_window(file.window_id)

    def drop_window(self, window_id: int) -> int:
        return self._release_window(window_id)

    def _release_window(self, window_id: int) -> int:
        state = self.state
        released = 0
        window = state.windows.pop(window_id, None)
        for position, _, _, _ in window.items if window is not None else ():
            batch = state.batches[position]
            batch.refs -= 1
            if batch.refs <= 0:
                released += len(batch.body)
                del state.batches[position]
        return released

    def _pending(self, file_id: int) -> StoredFile | None:
        stored = self.state.files.get(file_id)
        return stored if stored is not None and stored.state is FileState.PENDING else None

    def discard_file(self, file_id: int) -> int:
        if self._pending(file_id) is None:
            return 0
        del self.state.files[file_id]
        return len(self.state.bodies.pop(file_id, b""))

    def mark_delivered(self, file_id: int, now: float) -> int:
        stored = self._pending(file_id)
        if stored is None:
            return 0
        body = self.state.bodies.pop(file_id, b"")
        self.state.files[file_id] = replace(
            stored, state=FileState.DELIVERED, delivered_at=now, last_error=None
        )
        return len(body)

    def mark_attempt_failed(self, file_id: int, next_attempt_at: float, error: str) -> None:
        stored = self._pending(file_id)
        if stored is not None:
            self.state.files[file_id] = replace(
                stored,
                attempts=stored.attempts + 1,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )

    def rekey(self, file_id: int, key: str) -> None:
        stored = self._pending(file_id)
        if stored is not None:
            self.state.files[file_id] = replace(stored, key=key)

    def retry_now(self, connection: str, now: float) -> None:
        for stored in list(self.state.files.values()):
            if (
                stored.state is FileState.PENDING
                and stored.connection == connection
                and stored.next_attempt_at > now
            ):
                self.state.files[stored.file_id] = replace(stored, next_attempt_at=now)

    def prune_delivered(self, keep: int) -> None:
        delivered = sorted(
            (f for f in self.state.files.values() if f.state is FileState.DELIVERED),
            key=lambda f: (f.delivered_at or 0.0, f.file_id),
            reverse=True,
        )
        for stored in delivered[keep:]:
            del self.state.files[stored.file_id]


class MemorySpool:
    """``Spool`` in memory. Thread-safe; one writer at a time, as the contract requires."""

    def __init__(self, state: MemoryState | None = None) -> None:
        self.state = state or MemoryState()
        self._lock = threading.RLock()
        self.fail_next_commit: Exception | None = None
        self.commits = 0

    # ---------------------------------------------------------------- writes

    @contextmanager
    def write(self, doing: str) -> Iterator[_Transaction]:
        with self._lock:
            draft = copy.deepcopy(self.state)
            yield _Transaction(draft)
            failure, self.fail_next_commit = self.fail_next_commit, None
            if failure is not None:
                raise SpoolUnavailableError(f"the spool cannot be used while {doing}: {failure}")
            self.state = draft
            self.commits += 1

    def take_ownership(self) -> int:
        with self._lock:
            self.state.fence += 1
            return self.state.fence

    def record_seal(self, fence: int, window_id: int, sealed_at: float, reason: str) -> None:
        with self._lock:
            if fence != self.state.fence:
                raise FencedError(
                    f"seal of window {window_id} refused: fence {fence} is stale "
                    f"(the owner's is {self.state.fence})"
                )
            with self.write("recording a seal") as txn:
                txn.seal_window(window_id, sealed_at, reason, random.randrange(100_000))

    # ---------------------------------------------------------------- lifecycle

    def schema_version(self) -> int:
        return SCHEMA_VERSION

    def worker_view(self) -> Callable[[], SpoolView]:
        return lambda: self

    def shareable(self) -> bool:
        return False

    def start_background(self) -> None:
        return None

    def close(self) -> None:
        return None

    # ---------------------------------------------------------------- reads

    def _stored(self, w: _Window) -> StoredWindow:
        return StoredWindow(
            window_id=w.window_id,
            connection=w.connection,
            group=w.group,
            input=w.input,
            opened_at=w.opened_at,
            last_activity=max((i[3] for i in w.items), default=w.opened_at),
            bytes=sum(i[2] for i in w.items),
            items=len(w.items),
            next_seq=len(w.items),
            sealed_at=w.sealed_at,
            seal_reason=w.seal_reason,
            digits=w.digits,
        )

    def open_windows(self) -> list[StoredWindow]:
        with self._lock:
            windows = [w for w in self.state.windows.values() if w.sealed_at is None]
            return [
                self._stored(w) for w in sorted(windows, key=lambda w: (w.opened_at, w.window_id))
            ]

    def sealed_windows(
        self, limit: int = 1000, connections: Sequence[str] | None = None
    ) -> list[StoredWindow]:
        with self._lock:
            windows = [
                w
                for w in self.state.windows.values()
                if w.sealed_at is not None and (connections is None or w.connection in connections)
            ]
            windows.sort(key=lambda w: (w.sealed_at or 0.0, w.window_id))
            return [self._stored(w) for w in windows[:limit]]

    def window_items(self, window_id: int) -> list[WindowItem]:
        with self._lock:
            window = self.state.windows.get(window_id)
            if window is None:
                return []
            out = []
            for position, event_index, _, _ in window.items:
                b = self.state.batches[position]
                out.append(
                    WindowItem(position, event_index, b.input, b.received_ms, b.batch_id, b.json)
                )
            return out

    def max_window_id(self) -> int:
        with self._lock:
            return self.state.max_window_id

    def due_files(self, connection: str, now: float, limit: int) -> list[StoredFile]:
        with self._lock:
            due = [
                f
                for f in self.state.files.values()
                if f.state is FileState.PENDING
                and f.connection == connection
                and f.next_attempt_at <= now
            ]
            due.sort(key=lambda f: (f.next_attempt_at, f.file_id))
            return due[:limit]

    def file(self, file_id: int) -> StoredFile | None:
        with self._lock:
            return self.state.files.get(file_id)

    def file_body(self, file_id: int) -> bytes | None:
        with self._lock:
            return self.state.bodies.get(file_id)

    def files(self, state: FileState | None = None, limit: int = 100) -> list[StoredFile]:
        with self._lock:
            files = list(self.state.files.values())
        if state is None:
            files.sort(key=lambda f: f.file_id, reverse=True)
        elif state is FileState.DELIVERED:
            files = [f for f in files if f.state is state]
            files.sort(key=lambda f: (f.delivered_at or 0.0, f.file_id), reverse=True)
        else:
            files = sorted((f for f in files if f.state is state), key=lambda f: f.file_id)
        return files[:limit]

    def stored_bytes(self) -> int:
        with self._lock:
            return sum(len(b.body) for b in self.state.batches.values()) + sum(
                len(body) for body in self.state.bodies.values()
            )

    def footprint_bytes(self) -> int:
        return self.stored_bytes()

    def counts(self) -> SpoolCounts:
        with self._lock:
            windows = self.state.windows.values()
            files = self.state.files.values()
            return SpoolCounts(
                open_windows=sum(1 for w in windows if w.sealed_at is None),
                sealed_windows=sum(1 for w in windows if w.sealed_at is not None),
                pending_files=sum(1 for f in files if f.state is FileState.PENDING),
                delivered_files=sum(1 for f in files if f.state is FileState.DELIVERED),
                batches=len(self.state.batches),
            )

    def _pending_files(self) -> list[StoredFile]:
        with self._lock:
            return [f for f in self.state.files.values() if f.state is FileState.PENDING]

    def oldest_pending(self) -> dict[str, float]:
        oldest: dict[str, float] = {}
        for f in self._pending_files():
            t = f.first_received_ms / 1000.0
            oldest[f.connection] = min(t, oldest.get(f.connection, t))
        return oldest

    def pending_by_connection(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for f in self._pending_files():
            n, size = out.get(f.connection, (0, 0))
            out[f.connection] = (n + 1, size + f.stored_bytes)
        return out

    def open_windows_by_connection(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.open_windows():
            out[w.connection] = out.get(w.connection, 0) + 1
        return out

    def last_errors(self) -> dict[str, tuple[str, int]]:
        failed = sorted(
            (f for f in self._pending_files() if f.last_error is not None),
            key=lambda f: f.next_attempt_at,
        )
        return {f.connection: (f.last_error or "", f.attempts) for f in failed}

    def replay(self, from_position: int) -> Iterator[StoredBatch]:
        with self._lock:
            held = sorted(p for p in self.state.batches if p >= from_position)
            batches = [(p, self.state.batches[p]) for p in held]
        return (StoredBatch(p, b.input, b.received_ms, b.batch_id, b.json) for p, b in batches)

    def low_watermark(self) -> int:
        with self._lock:
            needed = [i[0] for w in self.state.windows.values() for i in w.items]
            return min(needed) if needed else self.state.next_position

    def max_position(self) -> int:
        with self._lock:
            return self.state.next_position - 1
