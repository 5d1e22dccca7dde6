"""SqliteSpool: the durable buffer in one SQLite database (WAL, synchronous=FULL).

What lives here, and the states it moves through::

    batches   inbound batches as received (orjson bytes), reference-counted by window items
    windows   open -> sealed (sealed_at set) -> gone once its file is stored
    items     which batch (or which event of a batch) belongs to which window, in arrival order;
              a window's size, item count and last activity are derived from its items
    files     pending -> delivered (body dropped, row kept as recent history)
    requests  source_request_id seen per input (the dedup index)

Exactly one ``SpoolWriter`` (a thread in the engine) writes; readers open their own connections.
A commit is an fsync: a batch is durable once the transaction that inserted it has committed.
sqlite3 errors are translated here into ``SpoolUnavailableError``.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3forward.errors import SpoolUnavailableError

SCHEMA = """
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

_WAL_RESTART_BYTES = 8 * 1024 * 1024
PENDING = "pending"
DELIVERED = "delivered"


@dataclass(frozen=True, slots=True)
class StoredWindow:
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


_MAX_VARIABLES = 30_000
"""Stay under SQLite's limit of bound parameters per statement (32,766 since 3.32)."""


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


@dataclass(slots=True)
class WriteSet:
    """Rows gathered during one writer commit, written with one statement per table.

    Batching the inserts keeps the writer's cost per batch low; ``load_known_requests`` reads
    the dedup index for every request id of the commit in one query per input.
    """

    requests: list[tuple[str, str, float]] = field(default_factory=list)
    batches: list[tuple[int, str, int, int, bytes, int]] = field(default_factory=list)
    windows: list[tuple[int, str, str, str, float]] = field(default_factory=list)
    items: list[tuple[int, int, int, int | None, int, float]] = field(default_factory=list)
    seals: list[tuple[float, str, int]] = field(default_factory=list)
    known: dict[str, set[str]] = field(default_factory=dict)

    def load_known_requests(self, conn: sqlite3.Connection, wanted: dict[str, set[str]]) -> None:
        for input_name, ids in wanted.items():
            known = self.known.setdefault(input_name, set())
            pending = list(ids)
            for start in range(0, len(pending), 500):
                chunk = pending[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT request_id FROM requests WHERE input = ? "  # noqa: S608
                    f"AND request_id IN ({marks})",
                    [input_name, *chunk],
                )
                known.update(row[0] for row in rows)

    def known_requests(self, input_name: str) -> set[str]:
        """Request ids already accepted for ``input_name`` (loaded, plus this commit's)."""
        return self.known.setdefault(input_name, set())

    def flush(self, conn: sqlite3.Connection) -> None:
        # Multi-row statements: the sqlite3 module releases the GIL around every statement
        # step, and each time the writer must win it back from the HTTP thread. One step per
        # table instead of one per row keeps commits short when the server is busy.
        _insert_rows(
            conn, "INSERT OR REPLACE INTO requests (input, request_id, seen_at)", self.requests
        )
        _insert_rows(
            conn,
            "INSERT INTO batches (id, input, received_ms, batch_id, body, refs)",
            self.batches,
        )
        _insert_rows(
            conn, "INSERT INTO windows (id, connection, grp, input, opened_at)", self.windows
        )
        _insert_rows(
            conn,
            "INSERT INTO items (window_id, seq, batch_ref, event_index, size, added_at)",
            self.items,
        )
        by_reason: dict[tuple[float, str], list[int]] = {}
        for sealed_at, reason, window_id in self.seals:
            by_reason.setdefault((sealed_at, reason), []).append(window_id)
        for (sealed_at, reason), ids in by_reason.items():
            for start in range(0, len(ids), _MAX_VARIABLES - 2):
                chunk = ids[start : start + _MAX_VARIABLES - 2]
                conn.execute(
                    "UPDATE windows SET sealed_at = ?, seal_reason = ? "  # noqa: S608
                    f"WHERE sealed_at IS NULL AND id IN ({','.join('?' * len(chunk))})",
                    [sealed_at, reason, *chunk],
                )
        self.clear()

    def clear(self) -> None:
        self.requests.clear()
        self.batches.clear()
        self.windows.clear()
        self.items.clear()
        self.seals.clear()
        self.known.clear()


@dataclass(frozen=True, slots=True)
class WindowItem:
    batch_ref: int
    event_index: int | None
    input: str
    received_ms: int
    batch_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredFile:
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
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    delivered_at: float | None


_WINDOW_QUERY = (
    "SELECT w.id, w.connection, w.grp, w.input, w.opened_at, "
    "COALESCE(MAX(i.added_at), w.opened_at), COALESCE(SUM(i.size), 0), COUNT(i.seq), "
    "COALESCE(MAX(i.seq) + 1, 0), w.sealed_at, w.seal_reason "
    "FROM windows w LEFT JOIN items i ON i.window_id = w.id WHERE {where} GROUP BY w.id "
    "ORDER BY {order}"
)
_FILE_COLUMNS = (
    "id, connection, window_id, key, sha256, content_type, content_encoding, raw_bytes, "
    "stored_bytes, batches, events, sealed_at, first_received_ms, state, attempts, "
    "next_attempt_at, last_error, delivered_at"
)


def _translate(exc: sqlite3.Error, doing: str) -> SpoolUnavailableError:
    message = str(exc)
    if "full" in message:
        return SpoolUnavailableError(f"the spool's disk is full while {doing}")
    return SpoolUnavailableError(f"the spool cannot be written while {doing}: {message}")


def connect(path: Path, *, writer: bool = True) -> sqlite3.Connection:
    """Open the spool database with the pragmas every connection needs."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    if writer:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: every commit is fsync'd, so a 202 sent after commit survives power loss.
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def read_window_items(conn: sqlite3.Connection, window_id: int) -> list[WindowItem]:
    """A window's items in arrival order, each with its stored batch."""
    rows = conn.execute(
        "SELECT i.batch_ref, i.event_index, b.input, b.received_ms, b.batch_id, b.body "
        "FROM items i JOIN batches b ON b.id = i.batch_ref WHERE i.window_id = ? "
        "ORDER BY i.seq",
        (window_id,),
    )
    return [WindowItem(*row) for row in rows]


class SqliteSpool:
    """The spool's storage. ``write()`` gives the single writer a transaction; reads are safe
    from any thread (each thread gets its own read connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(path.with_suffix(path.suffix + ".lock"), "a+b")  # noqa: SIM115
        except OSError as exc:
            raise SpoolUnavailableError(
                f"cannot create the spool at {path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise SpoolUnavailableError(
                f"the spool {path} is in use by another s3forward process; each process needs "
                "its own spool"
            ) from None
        try:
            self._writer = connect(path)
            self._writer.executescript(SCHEMA)
            # Checkpoints (copying the WAL into the database, with its own fsync) run in the
            # background on their own connection, so that a commit only waits for the WAL.
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer_conn = connect(path)
        except sqlite3.Error as exc:
            self._lock_file.close()
            raise _translate(exc, "opening it") from None
        self._local = threading.local()
        self._closing = threading.Event()
        self._checkpoint_thread: threading.Thread | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # ---------------------------------------------------------------- connections

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A write transaction on the writer connection; commit (fsync) on success.

        Only one thread may call this. sqlite3 errors become ``SpoolUnavailableError`` and the
        transaction is rolled back, so nothing already committed is harmed.
        """
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, doing) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise _translate(exc, doing) from None
        except BaseException:
            self._rollback(conn)
            raise

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        with suppress(sqlite3.Error):  # SQLite may have rolled back already
            conn.execute("ROLLBACK")

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

    def start_checkpoints(self, interval: float = 0.1) -> None:
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

    # ---------------------------------------------------------------- writes (writer only)

    @staticmethod
    def forget_requests_before(conn: sqlite3.Connection, cutoff: float) -> int:
        return conn.execute("DELETE FROM requests WHERE seen_at < ?", (cutoff,)).rowcount

    @staticmethod
    def store_file(
        conn: sqlite3.Connection,
        *,
        connection: str,
        window_id: int,
        key: str,
        body: bytes,
        sha256: str,
        content_type: str,
        content_encoding: str | None,
        raw_bytes: int,
        batches: int,
        events: int,
        sealed_at: float,
        first_received_ms: int,
    ) -> tuple[int, int]:
        """Store a sealed window's file and release the window and its batches.

        Returns (file id, bytes of batch bodies released).
        """
        cur = conn.execute(
            "INSERT INTO files (connection, window_id, key, body, sha256, content_type, "
            "content_encoding, raw_bytes, stored_bytes, batches, events, sealed_at, "
            "first_received_ms, state, attempts, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
            (
                connection,
                window_id,
                key,
                body,
                sha256,
                content_type,
                content_encoding,
                raw_bytes,
                len(body),
                batches,
                events,
                sealed_at,
                first_received_ms,
                PENDING,
            ),
        )
        assert cur.lastrowid is not None
        refs = conn.execute(
            "SELECT batch_ref, COUNT(*) FROM items WHERE window_id = ? GROUP BY batch_ref",
            (window_id,),
        ).fetchall()
        conn.executemany(
            "UPDATE batches SET refs = refs - ? WHERE id = ?", [(n, ref) for ref, n in refs]
        )
        released = 0
        if refs:
            marks = ",".join("?" * len(refs))
            ids = [ref for ref, _ in refs]
            row = conn.execute(
                f"SELECT COALESCE(SUM(LENGTH(body)), 0) FROM batches "  # noqa: S608 - placeholders only
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
        return cur.lastrowid, released

    @staticmethod
    def drop_window(conn: sqlite3.Connection, window_id: int) -> None:
        """Forget a sealed window that holds no items (nothing to write)."""
        conn.execute(
            "DELETE FROM windows WHERE id = ? AND NOT EXISTS "
            "(SELECT 1 FROM items WHERE window_id = ?)",
            (window_id, window_id),
        )

    @staticmethod
    def mark_delivered(conn: sqlite3.Connection, file_id: int, now: float) -> int:
        """Mark a file delivered and drop its body. Returns the bytes released."""
        row = conn.execute(
            "SELECT LENGTH(body) FROM files WHERE id = ? AND state = ?", (file_id, PENDING)
        ).fetchone()
        if row is None:
            return 0
        conn.execute(
            "UPDATE files SET state = ?, body = NULL, delivered_at = ?, last_error = NULL "
            "WHERE id = ?",
            (DELIVERED, now, file_id),
        )
        return int(row[0] or 0)

    @staticmethod
    def mark_attempt_failed(
        conn: sqlite3.Connection, file_id: int, next_attempt_at: float, error: str
    ) -> None:
        conn.execute(
            "UPDATE files SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
            "WHERE id = ? AND state = ?",
            (next_attempt_at, error, file_id, PENDING),
        )

    @staticmethod
    def retry_now(conn: sqlite3.Connection, connection: str, now: float) -> None:
        """Make every waiting file of ``connection`` due at ``now`` (issue 12: its settings
        changed on reload, e.g. rotated keys, so a retry scheduled minutes away is tried now)."""
        conn.execute(
            "UPDATE files SET next_attempt_at = ? WHERE connection = ? AND state = ? "
            "AND next_attempt_at > ?",
            (now, connection, PENDING, now),
        )

    @staticmethod
    def rekey(conn: sqlite3.Connection, file_id: int, key: str) -> None:
        conn.execute("UPDATE files SET key = ? WHERE id = ? AND state = ?", (key, file_id, PENDING))

    @staticmethod
    def prune_delivered(conn: sqlite3.Connection, keep: int) -> None:
        conn.execute(
            "DELETE FROM files WHERE state = ? AND id NOT IN "
            "(SELECT id FROM files WHERE state = ? ORDER BY delivered_at DESC LIMIT ?)",
            (DELIVERED, DELIVERED, keep),
        )

    # ---------------------------------------------------------------- reads (any thread)

    def open_windows(self) -> list[StoredWindow]:
        return self._windows("w.sealed_at IS NULL", "w.opened_at, w.id")

    def sealed_windows(
        self, limit: int = 1000, connections: tuple[str, ...] | None = None
    ) -> list[StoredWindow]:
        """Sealed windows waiting for their file, oldest first; only of ``connections``."""
        where = "w.sealed_at IS NOT NULL"
        if connections is not None:
            names = ",".join("'" + name.replace("'", "''") + "'" for name in connections)
            where += f" AND w.connection IN ({names or 'NULL'})"
        return self._windows(where, f"w.sealed_at, w.id LIMIT {int(limit)}")

    def _windows(self, where: str, order: str) -> list[StoredWindow]:
        # ``where`` and ``order`` are the fixed clauses above, never user input.
        rows = self._reader().execute(_WINDOW_QUERY.format(where=where, order=order))
        return [StoredWindow(*row) for row in rows]

    def window_items(self, window_id: int) -> list[WindowItem]:
        return read_window_items(self._reader(), window_id)

    def max_batch_ref(self) -> int:
        row = self._reader().execute("SELECT MAX(id) FROM batches").fetchone()
        return int(row[0] or 0)

    def max_window_id(self) -> int:
        row = (
            self._reader()
            .execute(
                "SELECT MAX(m) FROM (SELECT MAX(id) AS m FROM windows "
                "UNION ALL SELECT MAX(window_id) FROM files)"
            )
            .fetchone()
        )
        return int(row[0] or 0)

    def due_files(self, connection: str, now: float, limit: int) -> list[StoredFile]:
        rows = self._reader().execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE state = ? AND connection = ? "  # noqa: S608
            "AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
            (PENDING, connection, now, limit),
        )
        return [StoredFile(*row) for row in rows]

    def file_body(self, file_id: int) -> bytes | None:
        row = self._reader().execute("SELECT body FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else row[0]

    def files(self, *, state: str | None = None, limit: int = 100) -> list[StoredFile]:
        if state is None:
            rows = self._reader().execute(
                f"SELECT {_FILE_COLUMNS} FROM files ORDER BY id DESC LIMIT ?",  # noqa: S608
                (limit,),
            )
        else:
            order = "delivered_at DESC" if state == DELIVERED else "id"
            rows = self._reader().execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE state = ? "  # noqa: S608
                f"ORDER BY {order} LIMIT ?",
                (state, limit),
            )
        return [StoredFile(*row) for row in rows]

    def stored_bytes(self) -> int:
        """Bytes of data held: batch bodies plus undelivered file bodies."""
        return SpoolReader(self._reader()).stored_bytes()

    def counts(self) -> dict[str, int]:
        return SpoolReader(self._reader()).counts()

    def oldest_pending(self) -> dict[str, float]:
        """Per connection: the earliest first-received time (s) of an undelivered file."""
        return SpoolReader(self._reader()).oldest_pending()


# ------------------------------------------------------------------------------ read-only


_FILE_FIELDS = (
    "id, connection, key, raw_bytes, stored_bytes, COALESCE(LENGTH(body), 0), batches, events, "
    "sealed_at, first_received_ms, state, attempts, next_attempt_at, last_error, delivered_at, "
    "content_type, content_encoding"
)
_FILE_KEYS = (
    "id",
    "connection",
    "key",
    "raw_bytes",
    "stored_bytes",
    "body_bytes",
    "batches",
    "events",
    "sealed_at",
    "first_received_ms",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "delivered_at",
    "content_type",
    "content_encoding",
)


class SpoolReader:
    """Read-only queries on a spool database connection (no payloads unless asked by id)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def files(self, state: str, limit: int) -> list[dict[str, Any]]:
        """Files in ``state``: pending oldest first, delivered newest first."""
        order = "delivered_at DESC, id DESC" if state == "delivered" else "id"
        rows = self.conn.execute(
            f"SELECT {_FILE_FIELDS} FROM files WHERE state = ? "  # noqa: S608 - fixed clauses
            f"ORDER BY {order} LIMIT ?",
            (state, limit),
        )
        return [dict(zip(_FILE_KEYS, row, strict=True)) for row in rows]

    def file(self, file_id: int) -> dict[str, Any] | None:
        row = self.conn.execute(
            f"SELECT {_FILE_FIELDS} FROM files WHERE id = ?",  # noqa: S608 - fixed clauses
            (file_id,),
        ).fetchone()
        return None if row is None else dict(zip(_FILE_KEYS, row, strict=True))

    def body(self, file_id: int) -> bytes | None:
        row = self.conn.execute("SELECT body FROM files WHERE id = ?", (file_id,)).fetchone()
        return None if row is None else row[0]

    def pending_ids(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM files WHERE state = 'pending'")]

    def pending_by_connection(self) -> dict[str, tuple[int, int]]:
        """Per connection: (undelivered files, their stored bytes)."""
        rows = self.conn.execute(
            "SELECT connection, COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM files "
            "WHERE state = 'pending' GROUP BY connection"
        )
        return {name: (int(n), int(b)) for name, n, b in rows}

    def open_windows_by_connection(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT connection, COUNT(*) FROM windows WHERE sealed_at IS NULL GROUP BY connection"
        )
        return {name: int(n) for name, n in rows}

    def oldest_pending(self) -> dict[str, float]:
        """Per connection: when (s) the oldest batch in a waiting file was received."""
        rows = self.conn.execute(
            "SELECT connection, MIN(first_received_ms) / 1000.0 FROM files "
            "WHERE state = 'pending' GROUP BY connection"
        )
        return {name: float(t) for name, t in rows}

    def last_errors(self) -> dict[str, tuple[str, int]]:
        """Per connection: the error of its most recently failed waiting file, and attempts."""
        rows = self.conn.execute(
            "SELECT connection, last_error, attempts FROM files WHERE state = 'pending' "
            "AND last_error IS NOT NULL ORDER BY next_attempt_at"
        )
        return {name: (error, int(attempts)) for name, error, attempts in rows}

    def stored_bytes(self) -> int:
        batches = self.conn.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM batches")
        files = self.conn.execute(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM files WHERE state = 'pending'"
        )
        return int(batches.fetchone()[0]) + int(files.fetchone()[0])

    def counts(self) -> dict[str, int]:
        open_w, sealed_w = self.conn.execute(
            "SELECT COALESCE(SUM(sealed_at IS NULL), 0), COALESCE(SUM(sealed_at IS NOT NULL), 0) "
            "FROM windows"
        ).fetchone()
        pending, delivered = self.conn.execute(
            "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'delivered'), 0) "
            "FROM files"
        ).fetchone()
        batches = self.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        return {
            "open_windows": int(open_w),
            "sealed_windows": int(sealed_w),
            "pending_files": int(pending),
            "delivered_files": int(delivered),
            "batches": int(batches),
        }


@contextmanager
def open_spool_readonly(path: Path) -> Iterator[SpoolReader]:
    """The spool at ``path`` opened read-only with sqlite3 (works while a server holds it)."""
    if not path.exists():
        raise SpoolUnavailableError(f"there is no spool at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise SpoolUnavailableError(f"cannot open the spool {path}: {exc}") from None
    with closing(conn):
        conn.execute("PRAGMA busy_timeout = 10000")
        try:
            yield SpoolReader(conn)
        except sqlite3.Error as exc:
            raise SpoolUnavailableError(f"cannot read the spool {path}: {exc}") from None
