"""The spool's schema is versioned: older spools are upgraded in place, newer ones refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from s3forward.errors import SpoolVersionError
from s3forward.spool.base import FileState, NewFile, WindowState
from s3forward.spool.codec import BodyCodec, compress_body
from s3forward.spool.sqlite import _SCHEMA_V0, MIGRATIONS, SCHEMA_VERSION, SqliteSpool

V0 = Path(__file__).parent.parent / "fixtures" / "spool-v0.db"


@pytest.fixture
def v0_spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool.db"
    shutil.copy(V0, path)
    return path


def test_a_spool_written_before_schema_versions_is_upgraded_without_losing_anything(
    v0_spool: Path,
) -> None:
    """The 471c56f fixture keeps every batch, window and file, with its state, after upgrade."""
    raw = sqlite3.connect(v0_spool)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 0
    before = {
        "batches": raw.execute("SELECT id, body FROM batches ORDER BY id").fetchall(),
        "windows": raw.execute("SELECT id, sealed_at FROM windows ORDER BY id").fetchall(),
        "files": raw.execute("SELECT id, key, state, body FROM files ORDER BY id").fetchall(),
        "requests": raw.execute("SELECT request_id FROM requests ORDER BY 1").fetchall(),
    }
    raw.close()
    assert len(before["batches"]) == 4 and len(before["windows"]) == 7

    spool = SqliteSpool.open(v0_spool)
    try:
        assert spool.schema_version() == SCHEMA_VERSION
        windows = {w.window_id: w for w in spool.open_windows() + spool.sealed_windows()}
        assert sorted((w, windows[w].sealed_at) for w in windows) == before["windows"]
        for w in windows.values():
            if w.state is WindowState.SEALED:
                assert w.digits is not None and 0 <= w.digits < 100_000
            else:
                assert w.digits is None
        bodies = {i.position: i.body for w in windows for i in spool.window_items(w)}
        assert sorted(bodies.items()) == before["batches"]
        files = sorted(spool.files(limit=100), key=lambda f: f.file_id)
        assert [(f.file_id, f.key, str(f.state)) for f in files] == [
            (i, k, s) for i, k, s, _ in before["files"]
        ]
        for file_id, _, state, body in before["files"]:
            assert spool.file_body(file_id) == (body if state == FileState.PENDING else None)
        with spool.write("reading") as txn:
            known = txn.known_requests("app", ["req-1", "req-2", "req-3", "other"])
        assert known == {r for (r,) in before["requests"]}
        # New positions and window ids continue after the old ones, never reusing them.
        assert spool.max_window_id() == 11
        assert spool.max_position() == max(p for p, _ in before["batches"])
    finally:
        spool.close()


def test_the_upgrade_happens_once_and_a_reopen_changes_nothing(v0_spool: Path) -> None:
    """Opening an upgraded spool again keeps the digits chosen by the first upgrade."""
    first = SqliteSpool.open(v0_spool)
    digits = {w.window_id: w.digits for w in first.sealed_windows()}
    first.close()
    again = SqliteSpool.open(v0_spool)
    try:
        assert {w.window_id: w.digits for w in again.sealed_windows()} == digits
    finally:
        again.close()


def test_a_spool_from_a_newer_release_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """An unknown newer schema is never guessed at: s3forward refuses it and says what to do."""
    path = tmp_path / "spool.db"
    SqliteSpool.open(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(
        SpoolVersionError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this s3forward"
    ):
        SqliteSpool.open(path)
    # and the refusal released the lock: the file can be opened once the version is right
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    raw.commit()
    raw.close()
    SqliteSpool.open(path).close()


def test_positions_are_never_reused_after_every_batch_is_released(tmp_path: Path) -> None:
    """Even when the batches table is empty, the next batch gets a new, higher position."""
    path = tmp_path / "spool.db"
    spool = SqliteSpool.open(path)
    with spool.write("t") as txn:
        first = txn.append_batch("in", 1, 1, b"x", 0)
    with spool.write("t") as txn:
        txn.open_window(1, "c", "g", "in", 0.0)
        txn.add_item(1, 0, first, None, 1, 0.0)
        txn.seal_window(1, 1.0, "drain", 5)
    with spool.write("t") as txn:
        txn.store_file(NewFile("c", 1, "k", b"f", "s", "t", None, 1, 1, 1, 1.0, 1))
    assert spool.counts().batches == 0
    spool.close()
    spool = SqliteSpool.open(path)
    try:
        with spool.write("t") as txn:
            second = txn.append_batch("in", 1, 1, b"y", 1)
        assert second > first
    finally:
        spool.close()


def test_status_shows_the_spool_schema_version(tmp_path: Path) -> None:
    """`s3forward status` (read from the spool file) names the schema version it found."""
    from s3forward.config import embedded_default
    from s3forward.status import plain_lines, snapshot_from_spool

    config = embedded_default(tmp_path)
    shutil.copy(V0, config.spool.path)
    SqliteSpool.open(config.spool.path).close()  # the upgrade a start performs
    snap = snapshot_from_spool(config)
    assert snap["spool"]["schema_version"] == SCHEMA_VERSION
    assert any(f"schema v{SCHEMA_VERSION}" in line for line in plain_lines(snap))


@pytest.fixture
def v1_spool(v0_spool: Path) -> Path:
    """The 471c56f fixture as the first versioned release left it: schema 1, JSON bodies."""
    raw = sqlite3.connect(v0_spool, isolation_level=None)
    raw.execute("BEGIN")
    for statement in _SCHEMA_V0.split(";"):
        if statement.strip():
            raw.execute(statement)
    MIGRATIONS[0](raw)
    raw.execute("PRAGMA user_version = 1")
    raw.execute("COMMIT")
    raw.close()
    return v0_spool


def test_a_version_1_spool_upgrades_to_compressed_bodies_without_loss(v1_spool: Path) -> None:
    """Issue 10: rows stored before compression are read as they were (codec JSON), next to
    new compressed rows; windows, items and files are untouched."""
    raw = sqlite3.connect(v1_spool)
    before_batches = raw.execute("SELECT id, body FROM batches ORDER BY id").fetchall()
    before_windows = raw.execute("SELECT * FROM windows ORDER BY id").fetchall()
    before_files = raw.execute("SELECT * FROM files ORDER BY id").fetchall()
    raw.close()
    assert before_batches

    spool = SqliteSpool.open(v1_spool)
    try:
        assert spool.schema_version() == SCHEMA_VERSION == 2
        assert [(b.position, b.body) for b in spool.replay(0)] == before_batches
        windows = [w.window_id for w in spool.open_windows() + spool.sealed_windows()]
        old_items = {i.position: i.body for w in windows for i in spool.window_items(w)}
        assert sorted(old_items.items()) == before_batches

        new_json = b'{"events":[],"mpid":1,"padding":"' + b"x" * 400 + b'"}'
        with spool.write("ingest") as txn:
            position = txn.append_batch("app", 1, 2, compress_body(new_json), 1, BodyCodec.ZLIB)
            txn.open_window(99, "dev", "g", "app", 1.0)
            txn.add_item(99, 0, position, None, len(new_json), 1.0)
        assert [i.body for i in spool.window_items(99)] == [new_json]
        assert [b.body for b in spool.replay(position)] == [new_json]
    finally:
        spool.close()

    raw = sqlite3.connect(v1_spool)
    codecs = dict(raw.execute("SELECT id, codec FROM batches").fetchall())
    stored = raw.execute("SELECT LENGTH(body) FROM batches WHERE id = ?", (position,)).fetchone()
    assert raw.execute("SELECT * FROM windows WHERE id != 99 ORDER BY id").fetchall() == (
        before_windows
    )
    assert raw.execute("SELECT * FROM files ORDER BY id").fetchall() == before_files
    raw.close()
    assert codecs == {**{p: BodyCodec.JSON for p, _ in before_batches}, position: BodyCodec.ZLIB}
    assert stored[0] < len(new_json) / 2
