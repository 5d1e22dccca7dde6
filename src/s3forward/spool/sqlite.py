"""SqliteSpool: the embedded spool in one SQLite database (WAL, synchronous=FULL).

Implements ``Spool`` and ``ReplayableLog`` (``spool/base.py``; the states are described there).
A commit is an fsync: a batch is durable once the transaction that stored it has committed.
Exactly one writer thread uses ``write``; readers get their own connections, in this process
(thread-local) or in another (``worker_view``, read-only). Every sqlite3 error is translated here
into ``SpoolUnavailableError``, on write and read paths alike.

The schema is versioned with ``PRAGMA user_version``. ``open`` upgrades an older spool in one
transaction (the migrations below, in order) and refuses one written by a newer s3forward.
"""

from __future__ import annotations

import fcntl
import random
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from s3forward.errors import FencedError, SpoolUnavailableError, SpoolVersionError
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
"""1: windows record their key digits at seal time; a meta table holds the owner's fence, the
next position, the next file id and the largest window id, so none is ever handed out twice.
2: batches record the codec of their body (``spool/codec.py``): new bodies are compressed."""

_SCHEMA_V0 = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    input TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    batch_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    refs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    grp TEXT NOT NULL,
    input TEXT NOT NULL,
    opened_at REAL NOT NULL,
    sealed_at REAL,
    seal_reason TEXT
);
CREATE INDEX IF NOT EXISTS windows_sealed ON windows(sealed_at) WHERE sealed_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS items (
    window_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    batch_ref INTEGER NOT NULL,
    event_index INTEGER,
    size INTEGER NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (window_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    connection TEXT NOT NULL,
    window_id INTEGER NOT NULL UNIQUE,
    key TEXT NOT NULL,
    body BLOB,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT,
    raw_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    events INTEGER NOT NULL,
    sealed_at REAL NOT NULL,
    first_received_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS files_pending ON files(connection, next_attempt_at)
    WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS requests (
    input TEXT NOT NULL,
    request_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (input, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_seen ON requests(seen_at);
"""


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """Key digits move from build time to seal time, so a rebuild gives the same key."""
    conn.execute("ALTER TABLE windows ADD COLUMN digits INTEGER")
    rng = random.SystemRandom()
    sealed = [row[0] for row in conn.execute("SELECT id FROM windows WHERE sealed_at IS NOT NULL")]
    conn.executemany(
        "UPDATE windows SET digits = ? WHERE id = ?", [(rng.randrange(100_000), w) for w in sealed]
    )
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("INSERT INTO meta (name, value) VALUES ('owner_fence', 0)")
    # Positions and window ids are never reused, even once every row holding them is gone.
    conn.execute(
        "INSERT INTO meta (name, value) SELECT 'next_position', COALESCE(MAX(id), 0) + 1 "
        "FROM batches"
    )
    conn.execute(
        "INSERT INTO meta (name, value) SELECT 'max_window_id', COALESCE(MAX(m), 0) FROM "
        "(SELECT MAX(id) AS m FROM windows UNION ALL SELECT MAX(window_id) FROM files)"
    )
    conn.execute(
        "INSERT INTO meta (name, value) SELECT 'next_file_id', COALESCE(MAX(id), 0) + 1 FROM files"
    )


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Batch bodies may be stored compressed; every body stored so far is JSON (codec 0) and
    is read as it is, so nothing is rewritten."""
    conn.execute(
        f"ALTER TABLE batches ADD COLUMN codec INTEGER NOT NULL DEFAULT {int(BodyCodec.JSON)}"
    )


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
}
"""``MIGRATIONS[n]`` upgrades a spool from version n to n + 1."""

_WAL_RESTART_BYTES = 8 * 1024 * 1024
_MAX_VARIABLES = 30_000
"""Stay under SQLite's limit of bound parameters per statement (32,766 since 3.32)."""


def _translate(exc: sqlite3.Error, doing: str) -> SpoolUnavailableError:
    message = str(exc)
    if "full" in message:
        return SpoolUnavailableError(f"the spool's disk is full while {doing}")
    return SpoolUnavailableError(f"the spool cannot be used while {doing}: {message}")


def connect(path: Path, *, writer: bool = True) -> sqlite3.Connection:
    """Open the spool database with the pragmas every connection needs."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    if writer:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: every commit is fsync'd, so a 202 sent after commit survives power loss.
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def _insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``head VALUES (...), (...), ...`` for ``rows``, in as few statements as the limit allows."""
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, _MAX_VARIABLES // width)
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = ",".join([one] * len(chunk))
        conn.execute(f"{head} VALUES {values}", [v for row in chunk for v in row])


def _marks(count: int) -> str:
    return ",".join("?" * count)


# ------------------------------------------------------------------------------ reads

_WINDOW_QUERY = (
    "SELECT w.id, w.connection, w.grp, w.input, w.opened_at, "
    "COALESCE(MAX(i.added_at), w.opened_at), COALESCE(SUM(i.size), 0), COUNT(i.seq), "
    "COALESCE(MAX(i.seq) + 1, 0), w.sealed_at, w.seal_reason, w.digits "
    "FROM windows w LEFT JOIN items i ON i.window_id = w.id WHERE {where} GROUP BY w.id "
    "ORDER BY {order}"
)
_FILE_COLUMNS = (
    "id, connection, window_id, key, sha256, content_type, content_encoding, raw_bytes, "
    "stored_bytes, batches, events, sealed_at, first_received_ms, state, attempts, "
    "next_attempt_at, last_error, delivered_at"
)


def _file(row: tuple[Any, ...]) -> StoredFile:
    values = list(row)
    values[13] = FileState(values[13])
    return StoredFile(*values)


class SqliteView:
    """The read queries of ``SpoolView`` over a connection supplied per call."""

    def __init__(self, connection: Callable[[], sqlite3.Connection], where: str) -> None:
        self._conn = connection
        self._where = where

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, f"reading {self._where}") from None

    def open_windows(self) -> list[StoredWindow]:
        return self._windows("w.sealed_at IS NULL", "w.opened_at, w.id")

    def sealed_windows(
        self, limit: int = 1000, connections: Sequence[str] | None = None
    ) -> list[StoredWindow]:
        where = "w.sealed_at IS NOT NULL"
        if connections is not None:
            names = ",".join("'" + name.replace("'", "''") + "'" for name in connections)
            where += f" AND w.connection IN ({names or 'NULL'})"
        return self._windows(where, f"w.sealed_at, w.id LIMIT {int(limit)}")

    def _windows(self, where: str, order: str) -> list[StoredWindow]:
        # ``where`` and ``order`` are the fixed clauses above (names quoted), never user input.
        rows = self._rows(_WINDOW_QUERY.format(where=where, order=order))
        return [StoredWindow(*row) for row in rows]

    def window_items(self, window_id: int) -> list[WindowItem]:
        rows = self._rows(
            "SELECT i.batch_ref, i.event_index, b.input, b.received_ms, b.batch_id, b.body, "
            "b.codec FROM items i JOIN batches b ON b.id = i.batch_ref WHERE i.window_id = ? "
            "ORDER BY i.seq",
            (window_id,),
        )
        return [
            WindowItem(row[0], row[1], row[2], row[3], row[4], body_json(row[6], row[5]))
            for row in rows
        ]

    def max_window_id(self) -> int:
        return self._meta("max_window_id")

    def _meta(self, name: str) -> int:
        rows = self._rows("SELECT value FROM meta WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def due_files(self, connection: str, now: float, limit: int) -> list[StoredFile]:
        rows = self._rows(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE state = ? AND connection = ? "  # noqa: S608 - fixed columns
            "AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
            (FileState.PENDING, connection, now, limit),
        )
        return [_file(row) for row in rows]

    def file(self, file_id: int) -> StoredFile | None:
        rows = self._rows(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?",  # noqa: S608 - fixed columns
            (file_id,),
        )
        return _file(rows[0]) if rows else None

    def file_body(self, file_id: int) -> bytes | None:
        rows = self._rows("SELECT body FROM files WHERE id = ?", (file_id,))
        return rows[0][0] if rows else None

    def files(self, state: FileState | None = None, limit: int = 100) -> list[StoredFile]:
        if state is None:
            rows = self._rows(
                f"SELECT {_FILE_COLUMNS} FROM files ORDER BY id DESC LIMIT ?",  # noqa: S608
                (limit,),
            )
        else:
            order = "delivered_at DESC, id DESC" if state is FileState.DELIVERED else "id"
            rows = self._rows(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE state = ? "  # noqa: S608 - fixed
                f"ORDER BY {order} LIMIT ?",
                (str(state), limit),
            )
        return [_file(row) for row in rows]

    def stored_bytes(self) -> int:
        batches = self._rows("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM batches")[0][0]
        files = self._rows(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM files WHERE state = ?",
            (FileState.PENDING,),
        )[0][0]
        return int(batches) + int(files)

    def footprint_bytes(self) -> int:
        pages = self._rows("PRAGMA page_count")[0][0]
        free = self._rows("PRAGMA freelist_count")[0][0]
        size = self._rows("PRAGMA page_size")[0][0]
        return int((pages - free) * size)

    def counts(self) -> SpoolCounts:
        open_w, sealed_w = self._rows(
            "SELECT COALESCE(SUM(sealed_at IS NULL), 0), COALESCE(SUM(sealed_at IS NOT NULL), 0) "
            "FROM windows"
        )[0]
        pending, delivered = self._rows(
            "SELECT COALESCE(SUM(state = ?), 0), COALESCE(SUM(state = ?), 0) FROM files",
            (FileState.PENDING, FileState.DELIVERED),
        )[0]
        batches = self._rows("SELECT COUNT(*) FROM batches")[0][0]
        return SpoolCounts(int(open_w), int(sealed_w), int(pending), int(delivered), int(batches))

    def oldest_pending(self) -> dict[str, float]:
        rows = self._rows(
            "SELECT connection, MIN(first_received_ms) / 1000.0 FROM files "
            "WHERE state = ? GROUP BY connection",
            (FileState.PENDING,),
        )
        return {name: float(t) for name, t in rows}

    def pending_by_connection(self) -> dict[str, tuple[int, int]]:
        rows = self._rows(
            "SELECT connection, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM files "
            "WHERE state = ? GROUP BY connection",
            (FileState.PENDING,),
        )
        return {name: (int(n), int(b)) for name, n, b in rows}

    def open_windows_by_connection(self) -> dict[str, int]:
        rows = self._rows(
            "SELECT connection, COUNT(*) FROM windows WHERE sealed_at IS NULL GROUP BY connection"
        )
        return {name: int(n) for name, n in rows}

    def last_errors(self) -> dict[str, tuple[str, int]]:
        rows = self._rows(
            "SELECT connection, last_error, attempts FROM files WHERE state = ? "
            "AND last_error IS NOT NULL ORDER BY next_attempt_at",
            (FileState.PENDING,),
        )
        return {name: (error, int(attempts)) for name, error, attempts in rows}

    # ReplayableLog reads

    def replay(self, from_position: int) -> Iterator[StoredBatch]:
        rows = self._rows(
            "SELECT id, input, received_ms, batch_id, body, codec FROM batches WHERE id >= ? "
            "ORDER BY id",
            (from_position,),
        )
        return (
            StoredBatch(row[0], row[1], row[2], row[3], body_json(row[5], row[4])) for row in rows
        )

    def low_watermark(self) -> int:
        row = self._rows("SELECT MIN(batch_ref) FROM items")[0]
        return int(row[0]) if row[0] is not None else self._meta("next_position")

    def max_position(self) -> int:
        return self._meta("next_position") - 1

    def schema_version(self) -> int:
        return int(self._rows("PRAGMA user_version")[0][0])


# ------------------------------------------------------------------------------ writes


@dataclass(frozen=True, slots=True)
class _WorkerView:
    """Opens a read-only view of the spool file in a file-building process."""

    path: str

    def __call__(self) -> SpoolView:
        conn = connect(Path(self.path), writer=False)
        return SqliteView(lambda: conn, f"the spool {self.path}")


class _Transaction:
    """``SpoolTransaction`` on the writer connection.

    Inserts of batches, windows, items and seals are gathered and written with one multi-row
    statement per table: the sqlite3 module releases the GIL around every statement step and
    each time the writer must win it back from the HTTP thread, so one step per table instead
    of one per row keeps commits short when the server is busy. Gathered rows are written
    before any other statement, so the transaction always reads its own writes.
    """

    def __init__(self, spool: SqliteSpool, conn: sqlite3.Connection) -> None:
        self._spool = spool
        self._conn = conn
        self._requests: list[tuple[str, str, float]] = []
        self._request_set: dict[str, set[str]] = {}
        self._batches: list[tuple[int, str, int, int, bytes, int, int]] = []
        self._windows: list[tuple[int, str, str, str, float]] = []
        self._items: list[tuple[int, int, int, int | None, int, float]] = []
        self._seals: list[tuple[int, float, str, int]] = []
        self.next_position = spool._next_position

    def flush(self) -> None:
        conn = self._conn
        _insert_rows(
            conn, "INSERT OR REPLACE INTO requests (input, request_id, seen_at)", self._requests
        )
        _insert_rows(
            conn,
            "INSERT INTO batches (id, input, received_ms, batch_id, body, refs, codec)",
            self._batches,
        )
        _insert_rows(
            conn, "INSERT INTO windows (id, connection, grp, input, opened_at)", self._windows
        )
        _insert_rows(
            conn,
            "INSERT INTO items (window_id, seq, batch_ref, event_index, size, added_at)",
            self._items,
        )
        if self._batches:
            conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'next_position'", (self.next_position,)
            )
        if self._windows:
            conn.execute(
                "UPDATE meta SET value = MAX(value, ?) WHERE name = 'max_window_id'",
                (max(w[0] for w in self._windows),),
            )
        per_statement = _MAX_VARIABLES // 4
        for start in range(0, len(self._seals), per_statement):
            chunk = self._seals[start : start + per_statement]
            values = ",".join(["(?,?,?,?)"] * len(chunk))
            conn.execute(
                "UPDATE windows SET sealed_at = s.column2, seal_reason = s.column3, "  # noqa: S608 - placeholders only
                f"digits = s.column4 FROM (VALUES {values}) AS s "
                "WHERE windows.id = s.column1 AND windows.sealed_at IS NULL",
                [v for row in chunk for v in row],
            )
        self._requests.clear()
        self._batches.clear()
        self._windows.clear()
        self._items.clear()
        self._seals.clear()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.flush()
        return self._conn.execute(sql, params)

    # dedup index

    def known_requests(self, input_name: str, request_ids: Iterable[str]) -> set[str]:
        wanted = list(request_ids)
        known = {r for r in wanted if r in self._request_set.get(input_name, ())}
        pending = [r for r in wanted if r not in known]
        for start in range(0, len(pending), 500):
            chunk = pending[start : start + 500]
            rows = self._conn.execute(
                f"SELECT request_id FROM requests WHERE input = ? AND request_id IN ({_marks(len(chunk))})",  # noqa: S608, E501
                [input_name, *chunk],
            )
            known.update(row[0] for row in rows)
        return known

    def remember_request(self, input_name: str, request_id: str, seen_at: float) -> None:
        self._requests.append((input_name, request_id, seen_at))
        self._request_set.setdefault(input_name, set()).add(request_id)

    def forget_requests_before(self, cutoff: float) -> int:
        return self._execute("DELETE FROM requests WHERE seen_at < ?", (cutoff,)).rowcount

    # batches, windows, items

    def append_batch(
        self,
        input_name: str,
        received_ms: int,
        batch_id: int,
        body: bytes,
        refs: int,
        codec: BodyCodec = BodyCodec.JSON,
    ) -> int:
        position = self.next_position
        self.next_position += 1
        self._batches.append((position, input_name, received_ms, batch_id, body, refs, int(codec)))
        return position

    def open_window(
        self, window_id: int, connection: str, group: str, input_name: str, opened_at: float
    ) -> None:
        self._windows.append((window_id, connection, group, input_name, opened_at))

    def add_item(
        self,
        window_id: int,
        seq: int,
        position: int,
        event_index: int | None,
        size: int,
        added_at: float,
    ) -> None:
        self._items.append((window_id, seq, position, event_index, size, added_at))

    def seal_window(self, window_id: int, sealed_at: float, reason: str, digits: int) -> None:
        self._seals.append((window_id, sealed_at, reason, digits))

    # files

    def store_file(self, file: NewFile) -> tuple[int, int]:
        exists = self._execute(
            "SELECT 1 FROM files WHERE window_id = ?", (file.window_id,)
        ).fetchone()
        if exists is not None:
            raise ValueError(f"window {file.window_id} already has its file")
        file_id = int(
            self._conn.execute("SELECT value FROM meta WHERE name = 'next_file_id'").fetchone()[0]
        )
        self._conn.execute("UPDATE meta SET value = ? WHERE name = 'next_file_id'", (file_id + 1,))
        self._conn.execute(
            "INSERT INTO files (id, connection, window_id, key, body, sha256, content_type, "
            "content_encoding, raw_bytes, stored_bytes, batches, events, sealed_at, "
            "first_received_ms, state, attempts, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
            (
                file_id,
                file.connection,
                file.window_id,
                file.key,
                file.body,
                file.sha256,
                file.content_type,
                file.content_encoding,
                file.raw_bytes,
                len(file.body),
                file.batches,
                file.events,
                file.sealed_at,
                file.first_received_ms,
                FileState.PENDING,
            ),
        )
        return file_id, self._release_window(file.window_id)

    def _release_window(self, window_id: int) -> int:
        conn = self._conn
        refs = conn.execute(
            "SELECT batch_ref, COUNT(*) FROM items WHERE window_id = ? GROUP BY batch_ref",
            (window_id,),
        ).fetchall()
        conn.executemany(
            "UPDATE batches SET refs = refs - ? WHERE id = ?", [(n, ref) for ref, n in refs]
        )
        released = 0
        if refs:
            marks = _marks(len(refs))
            ids = [ref for ref, _ in refs]
            row = conn.execute(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM batches "  # noqa: S608 - placeholders only
                f"WHERE refs <= 0 AND id IN ({marks})",
                ids,
            ).fetchone()
            released = int(row[0])
            conn.execute(
                f"DELETE FROM batches WHERE refs <= 0 AND id IN ({marks})",  # noqa: S608
                ids,
            )
        conn.execute("DELETE FROM items WHERE window_id = ?", (window_id,))
        conn.execute("DELETE FROM windows WHERE id = ?", (window_id,))
        return released

    def drop_window(self, window_id: int) -> int:
        self.flush()
        return self._release_window(window_id)

    def _pending_body_bytes(self, file_id: int) -> int | None:
        """The body length of a PENDING file; None when it is unknown or not pending."""
        row = self._execute(
            "SELECT LENGTH(body) FROM files WHERE id = ? AND state = ?",
            (file_id, FileState.PENDING),
        ).fetchone()
        return None if row is None else int(row[0] or 0)

    def discard_file(self, file_id: int) -> int:
        size = self._pending_body_bytes(file_id)
        if size is None:
            return 0
        self._conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        return size

    def mark_delivered(self, file_id: int, now: float) -> int:
        size = self._pending_body_bytes(file_id)
        if size is None:
            return 0
        self._conn.execute(
            "UPDATE files SET state = ?, body = NULL, delivered_at = ?, last_error = NULL "
            "WHERE id = ?",
            (FileState.DELIVERED, now, file_id),
        )
        return size

    def mark_attempt_failed(self, file_id: int, next_attempt_at: float, error: str) -> None:
        self._execute(
            "UPDATE files SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE id = ? AND state = ?",
            (next_attempt_at, error, file_id, FileState.PENDING),
        )

    def rekey(self, file_id: int, key: str) -> None:
        self._execute(
            "UPDATE files SET key = ? WHERE id = ? AND state = ?",
            (key, file_id, FileState.PENDING),
        )

    def retry_now(self, connection: str, now: float) -> None:
        self._execute(
            "UPDATE files SET next_attempt_at = ? WHERE connection = ? AND state = ? "
            "AND next_attempt_at > ?",
            (now, connection, FileState.PENDING, now),
        )

    def prune_delivered(self, keep: int) -> None:
        self._execute(
            "DELETE FROM files WHERE state = ? AND id NOT IN "
            "(SELECT id FROM files WHERE state = ? ORDER BY delivered_at DESC LIMIT ?)",
            (FileState.DELIVERED, FileState.DELIVERED, keep),
        )

    # fencing

    def fence(self) -> int:
        row = self._execute("SELECT value FROM meta WHERE name = 'owner_fence'").fetchone()
        return int(row[0])

    def set_fence(self, value: int) -> None:
        self._execute("UPDATE meta SET value = ? WHERE name = 'owner_fence'", (value,))


class SqliteSpool(SqliteView):
    """The embedded default ``Spool``. Open with ``SqliteSpool.open(path)``."""

    def __init__(
        self,
        path: Path,
        lock_file: IO[bytes],
        writer: sqlite3.Connection,
        checkpointer: sqlite3.Connection,
        next_position: int,
    ) -> None:
        self.path = path
        self._lock_file = lock_file
        self._writer = writer
        self._checkpointer_conn = checkpointer
        self._local = threading.local()
        self._closing = threading.Event()
        self._checkpoint_thread: threading.Thread | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        super().__init__(self._reader, f"the spool {path}")
        self._next_position = next_position

    @classmethod
    def open(cls, path: Path) -> SqliteSpool:
        """Lock, open (creating or upgrading its schema) and return the spool at ``path``.

        Raises ``SpoolUnavailableError`` when it cannot be created or another process holds
        it, ``SpoolVersionError`` when a newer s3forward wrote it.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(path.with_suffix(path.suffix + ".lock"), "a+b")  # noqa: SIM115
        except OSError as exc:
            raise SpoolUnavailableError(
                f"cannot create the spool at {path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise SpoolUnavailableError(
                f"the spool {path} is in use by another s3forward process; each process needs "
                "its own spool"
            ) from None
        try:
            writer = connect(path)
            _upgrade(writer, path)
            # Checkpoints (copying the WAL into the database, with its own fsync) run in the
            # background on their own connection, so that a commit only waits for the WAL.
            writer.execute("PRAGMA wal_autocheckpoint = 0")
            checkpointer = connect(path)
            row = writer.execute("SELECT value FROM meta WHERE name = 'next_position'").fetchone()
        except sqlite3.Error as exc:
            lock_file.close()
            raise _translate(exc, "opening it") from None
        except BaseException:
            lock_file.close()
            raise
        return cls(path, lock_file, writer, checkpointer, int(row[0]))

    # ---------------------------------------------------------------- connections

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def worker_view(self) -> Callable[[], SpoolView]:
        return _WorkerView(str(self.path))

    def shareable(self) -> bool:
        return True

    @contextmanager
    def write(self, doing: str) -> Iterator[_Transaction]:
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, doing) from None
        txn = _Transaction(self, conn)
        try:
            yield txn
            txn.flush()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise _translate(exc, doing) from None
        except BaseException:
            self._rollback(conn)
            raise
        self._next_position = txn.next_position

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        with suppress(sqlite3.Error):  # SQLite may have rolled back already
            conn.execute("ROLLBACK")

    # ---------------------------------------------------------------- ReplayableLog writes

    def take_ownership(self) -> int:
        with self.write("taking ownership") as txn:
            fence = txn.fence() + 1
            txn.set_fence(fence)
        return fence

    def record_seal(self, fence: int, window_id: int, sealed_at: float, reason: str) -> None:
        with self.write("recording a seal") as txn:
            current = txn.fence()
            if fence != current:
                raise FencedError(
                    f"seal of window {window_id} refused: fence {fence} is stale "
                    f"(the owner's is {current})"
                )
            txn.seal_window(window_id, sealed_at, reason, random.randrange(100_000))

    # ---------------------------------------------------------------- upkeep

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database, and keep the WAL file small.

        PASSIVE rounds (every 100 ms) never block the writer and keep each flush small. Under
        steady writes the WAL would still never start over, so once it passes
        ``_WAL_RESTART_BYTES`` a RESTART round makes the next commit write from its beginning:
        it waits for the writer only while it copies the little that is left.
        """
        try:
            self._checkpointer_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > _WAL_RESTART_BYTES:
                self._checkpointer_conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error:
            pass  # busy or failing: the next round tries again; commits are unaffected

    def start_background(self, interval: float = 0.1) -> None:
        """Checkpoint in a background thread until ``close``."""

        def run() -> None:
            while not self._closing.wait(interval):
                self.checkpoint()

        self._checkpoint_thread = threading.Thread(target=run, name="spool-checkpoint", daemon=True)
        self._checkpoint_thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join(5.0)
        self.checkpoint()
        self._checkpointer_conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer.close()
        self._lock_file.close()


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Create the current schema, or migrate an older one in a single transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise SpoolVersionError(
            f"the spool {path} has schema version {version}, newer than this s3forward "
            f"understands ({SCHEMA_VERSION}): run the s3forward release that wrote it, or "
            "upgrade this one"
        )
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA_V0.split(";"):
            if statement.strip():
                conn.execute(statement)
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](conn)
            version += 1
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


# ------------------------------------------------------------------------------ read-only


@contextmanager
def open_spool_readonly(path: Path) -> Iterator[SqliteView]:
    """The spool at ``path`` opened read-only (works while a server holds it)."""
    if not path.exists():
        raise SpoolUnavailableError(f"there is no spool at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
    except sqlite3.Error as exc:
        raise SpoolUnavailableError(f"cannot open the spool {path}: {exc}") from None
    with closing(conn):
        yield SqliteView(lambda: conn, f"the spool {path}")
