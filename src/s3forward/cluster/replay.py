"""One partition's log turned into sealed files: pure, deterministic, replayable.

A worker feeds every entry of its partition's log (batches and ticks, in stream order) to a
``PartitionReplay``. The only clock is the broker's timestamp of each entry, so the same log
always gives the same decisions. The items are those single-node mode would store (the same
``windows.items_of``, item sizes and session split): for a per_session connection a batch of
several sessions is one item per session part. Window ids are the log position of the window's
first item (``seq * 65536 + event index or part``), and each file's random parts (key digits) come
from an rng seeded with the window's identity: a window rebuilt after a takeover has the same
key and the same bytes.

Recovery starts at a low watermark ``L`` with the seal log's records. An item of a group is
skipped when a recorded window of that group spans its position (``first <= pos <= last``): a
group has at most one open window at a time, so a recorded window holds exactly the group's
items between its first and *last* item positions. (Comparing against the position at which the
window was sealed instead loses the items that arrived between the two.) Recorded windows that
start at or after ``L`` may not have been written yet; they are rebuilt from the log and
returned again (``recorded=True``) so the worker writes them under their recorded key, where
If-None-Match finds its own earlier object when it did land.

Not replayed identically: seals forced by ``max_open_windows``/``max_open_bytes`` depend on
windows that closed before ``L``; such windows were never recorded, so a replay may cut them
differently, but never writes an item twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from s3forward.config import BatchingMode, Config, ConnectionSettings
from s3forward.files import BuiltFile, FileItem, build_file
from s3forward.mparticle import split_by_session
from s3forward.pipeline.usage import sized_items
from s3forward.windows import Sealed, Windower, WindowPolicy

Position = tuple[int, int]
"""A log position: (stream sequence, the event index (per_event) or the session part (a batch
split by session), or -1 for the whole batch)."""

_ID_STRIDE = 65536


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One message of a partition's log, as the worker read it."""

    seq: int
    time: float
    """Broker timestamp, seconds since the epoch."""
    input: str | None
    """The input the batch came in on; None for a tick."""
    body: bytes = b""
    received_ms: int = 0
    batch_id: int = 0
    duplicate: bool = False
    """Its source_request_id was stored before (decided by the worker from the request KV)."""


@dataclass(frozen=True, slots=True)
class SealRecord:
    """What the seal log records for one file, before the object is written."""

    connection: str
    window_id: int
    group: str
    first: Position
    last: Position
    key: str
    sealed_at: float
    reason: str
    items: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "seal",
            "connection": self.connection,
            "window": self.window_id,
            "group": self.group,
            "first": list(self.first),
            "last": list(self.last),
            "key": self.key,
            "sealed_at": self.sealed_at,
            "reason": self.reason,
            "items": self.items,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SealRecord:
        first, last = data["first"], data["last"]
        return cls(
            connection=str(data["connection"]),
            window_id=int(data["window"]),
            group=str(data["group"]),
            first=(int(first[0]), int(first[1])),
            last=(int(last[0]), int(last[1])),
            key=str(data["key"]),
            sealed_at=float(data["sealed_at"]),
            reason=str(data["reason"]),
            items=int(data["items"]),
            sha256=str(data["sha256"]),
        )


@dataclass(frozen=True, slots=True)
class SealedFile:
    """A file to write: its record and its bytes (``built.obj.key == record.key``)."""

    record: SealRecord
    built: BuiltFile
    recorded: bool
    """True when the seal log already holds this record (a rebuild after a takeover)."""


def window_rng(prefix: str, partition: int, connection: str, window_id: int) -> random.Random:
    """The random source of one window's file, fixed by the window's identity."""
    digest = hashlib.sha256(f"{prefix}\x1f{partition}\x1f{connection}\x1f{window_id}".encode())
    return random.Random(int.from_bytes(digest.digest()[:16], "big"))


@dataclass(frozen=True, slots=True)
class _Piece:
    """What a connection windows of one log entry: the batch, or one of its session parts."""

    batch: dict[str, Any]
    part: int | None
    body_bytes: int


@dataclass(slots=True)
class _Rebuild:
    record: SealRecord
    items: list[FileItem]


class _ConnectionReplay:
    def __init__(self, owner: PartitionReplay, settings: ConnectionSettings) -> None:
        self.owner = owner
        self.settings = settings
        self.windower = Windower(WindowPolicy.from_settings(settings), next_id=self._next_id)
        self.pending_id = 0
        self.items: dict[int, list[FileItem]] = {}
        self.first: dict[int, Position] = {}
        self.last: dict[int, Position] = {}

    def _next_id(self) -> int:
        return self.pending_id


class PartitionReplay:
    """Feeds a partition's log through one ``Windower`` per connection. Not thread-safe."""

    def __init__(
        self,
        config: Config,
        *,
        prefix: str,
        partition: int,
        start: int,
        recorded: Iterable[SealRecord] = (),
    ) -> None:
        self.config = config
        self.prefix = prefix
        self.partition = partition
        self.start = start
        self.now = 0.0
        self.next_seq = start
        self._connections = {
            name: _ConnectionReplay(self, settings) for name, settings in config.connections.items()
        }
        self._recorded: dict[tuple[str, str], list[SealRecord]] = {}
        self._rebuilds: dict[tuple[str, int], _Rebuild] = {}
        for record in recorded:
            self.add_record(record)

    def add_record(self, record: SealRecord) -> None:
        """Know a recorded window (a later record of the same window replaces its key)."""
        ranges = self._recorded.setdefault((record.connection, record.group), [])
        ranges[:] = [r for r in ranges if r.window_id != record.window_id]
        ranges.append(record)
        if record.first >= (self.start, -1):
            self._rebuilds[(record.connection, record.window_id)] = _Rebuild(record, [])

    # ------------------------------------------------------------------------------------

    def feed(self, entry: LogEntry) -> list[SealedFile]:
        """Apply one log entry; return the files it completed, in the order they were sealed."""
        if entry.seq < self.next_seq:
            return []  # a redelivery after a consumer reset: already applied
        self.next_seq = entry.seq + 1
        self.now = max(self.now, entry.time)
        out: list[SealedFile] = []
        for conn in self._connections.values():
            out.extend(self._built(conn, conn.windower.due(self.now)))
        if entry.input is None or entry.duplicate:
            return out
        batch = orjson.loads(entry.body)
        whole = [_Piece(batch, None, len(entry.body))]
        parts: list[_Piece] | None = None
        for conn in self._connections.values():
            if entry.input not in conn.settings.inputs:
                continue
            pieces = whole
            if conn.settings.batching_mode is BatchingMode.PER_SESSION:
                # As single-node ingest stores it (``pipeline/ingest.py: _store_split``): a
                # batch of several sessions is one part per session, each in its session's
                # window. The split is a pure function of the stored bytes: replays agree.
                if parts is None:
                    split = split_by_session(batch)
                    parts = whole
                    if len(split) > 1:
                        parts = [_Piece(p, n, len(orjson.dumps(p))) for n, p in enumerate(split)]
                pieces = parts
            out.extend(self._place(conn, entry, pieces))
        return out

    def seal_all(self) -> list[SealedFile]:
        """Seal everything open now (an operator's drain of a partition)."""
        out: list[SealedFile] = []
        for conn in self._connections.values():
            out.extend(self._built(conn, conn.windower.seal_all()))
        return out

    def low_watermark(self, undelivered: Iterable[SealRecord] = ()) -> int:
        """The first log position still needed: open windows, rebuilds, ``undelivered``."""
        low = self.next_seq
        for conn in self._connections.values():
            for window in conn.windower.open_windows():
                low = min(low, conn.first[window.window_id][0])
        for rebuild in self._rebuilds.values():
            low = min(low, rebuild.record.first[0])
        for record in undelivered:
            low = min(low, record.first[0])
        return low

    def oldest_open_at(self) -> float | None:
        """Broker time at which the oldest open window opened (None when none is open)."""
        opened = [
            w.opened_at for c in self._connections.values() for w in c.windower.open_windows()
        ]
        return min(opened) if opened else None

    @property
    def open_windows(self) -> int:
        return sum(c.windower.open_count for c in self._connections.values())

    # ------------------------------------------------------------------------------------

    def _place(
        self, conn: _ConnectionReplay, entry: LogEntry, pieces: list[_Piece]
    ) -> list[SealedFile]:
        assert entry.input is not None
        mode = conn.settings.batching_mode
        out: list[SealedFile] = []
        for piece in pieces:
            plans = sized_items(piece.batch, piece.body_bytes, entry.input, mode, entry.seq)
            for plan, size in plans:
                index = plan.event_index
                if index is None:
                    pos = (entry.seq, -1 if piece.part is None else piece.part)
                else:
                    pos = (entry.seq, index)
                item = FileItem(
                    piece.batch,
                    entry.received_ms,
                    entry.batch_id,
                    index,
                    entry.seq,
                    entry.input,
                    piece.part,
                )
                record = self._recorded_window(conn.settings.name, plan.group, pos)
                if record is not None:
                    out.extend(self._rebuild_item(record, item, pos))
                    continue
                conn.pending_id = pos[0] * _ID_STRIDE + max(pos[1], 0)
                placement = conn.windower.place(
                    plan.group, size, self.now, ends_session=plan.ends_session
                )
                window_id = placement.window_id
                conn.items.setdefault(window_id, []).append(item)
                conn.first.setdefault(window_id, pos)
                conn.last[window_id] = pos
                out.extend(self._built(conn, placement.sealed))
        return out

    def _recorded_window(self, connection: str, group: str, pos: Position) -> SealRecord | None:
        for record in self._recorded.get((connection, group), ()):
            if record.first <= pos <= record.last:
                return record
        return None

    def _rebuild_item(self, record: SealRecord, item: FileItem, pos: Position) -> list[SealedFile]:
        rebuild = self._rebuilds.get((record.connection, record.window_id))
        if rebuild is None:
            return []  # started before the watermark: delivered before the records were written
        rebuild.items.append(item)
        if pos != record.last:
            return []
        del self._rebuilds[(record.connection, record.window_id)]
        settings = self.config.connections[record.connection]
        built = self._build(
            settings, record.window_id, record.group, rebuild.items, record.sealed_at
        )
        if built is None:  # cannot happen: the first build of this window had a line
            return []
        obj = dataclasses.replace(built.obj, key=record.key)
        return [SealedFile(record, dataclasses.replace(built, obj=obj), recorded=True)]

    def _built(self, conn: _ConnectionReplay, sealed: Iterable[Sealed]) -> list[SealedFile]:
        out: list[SealedFile] = []
        for window in sealed:
            items = conn.items.pop(window.window_id)
            first = conn.first.pop(window.window_id)
            last = conn.last.pop(window.window_id)
            built = self._build(conn.settings, window.window_id, window.group, items, self.now)
            if built is None:
                continue  # nothing to write (e.g. only batches without events, not sent)
            record = SealRecord(
                connection=conn.settings.name,
                window_id=window.window_id,
                group=window.group,
                first=first,
                last=last,
                key=built.obj.key,
                sealed_at=self.now,
                reason=window.reason.value,
                items=len(items),
                sha256=built.obj.sha256,
            )
            out.append(SealedFile(record, built, recorded=False))
        return out

    def _build(
        self,
        settings: ConnectionSettings,
        window_id: int,
        group: str,
        items: list[FileItem],
        sealed_at: float,
    ) -> BuiltFile | None:
        input_name = group.split("\x1f", 1)[0]
        app = self.config.inputs.get(input_name)
        built = build_file(
            items,
            settings,
            app_name=app.app_name if app is not None else input_name,
            sealed_at=sealed_at,
            digits=window_rng(self.prefix, self.partition, settings.name, window_id).randrange(
                100_000
            ),
        )
        return built if isinstance(built, BuiltFile) else None


__all__ = ["LogEntry", "PartitionReplay", "Position", "SealRecord", "SealedFile"]
