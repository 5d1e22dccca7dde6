"""The durable pipeline in process: spool, windows over an injected clock, file building."""

from __future__ import annotations

import base64
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.clock import ManualClock
from s3forward.config import (
    Config,
    ConnectionSettings,
    DateFolders,
    Destination,
    InputSettings,
    Secret,
    SpoolSettings,
)
from s3forward.engine import Engine
from s3forward.errors import SpoolFullError, SpoolUnavailableError, StoppingError
from s3forward.metrics import Metrics
from s3forward.spool.codec import BodyCodec
from s3forward.spool.sqlite import SqliteSpool


def make_config(tmp_path: Path, **connection: Any) -> Config:
    settings = ConnectionSettings(
        name="local",
        inputs=("app",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=tmp_path / "bucket",
        store_data_in_folders_by_date=DateFolders.NONE,
        batch_window=600.0,
    )
    return Config(
        inputs={"app": InputSettings("app", "key", Secret("secret"), "App")},
        connections={"local": replace(settings, **connection)},
        spool=SpoolSettings(path=tmp_path / "spool.db", max_bytes=4 * 1024 * 1024),
    )


def random_text(length: int) -> str:
    """Text that compresses to about three quarters of its size: stored batches are compressed
    (issue 10), so a test that needs a batch to take room on disk pads it with this."""
    return base64.b64encode(random.Random(length).randbytes(length * 3 // 4 + 3)).decode()[:length]


def batch(device: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "device_info": {"android_uuid": device},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": name, "custom_event_type": "other"},
            }
        ],
        **extra,
    }


class Harness:
    """An engine over a real SQLite spool with a manual clock; reopenable like a restart."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = ManualClock(1_700_000_000.0)
        self.metrics = Metrics()
        self.spool = SqliteSpool.open(config.spool.path)
        self.engine = Engine(config, self.spool, self.metrics, clock=self.clock)
        self.engine.start()

    def submit(self, *batches: dict[str, Any]) -> Any:
        return self.engine.submit_sync("app", list(batches), received_at=self.clock.now())

    def tick(self, seconds: float) -> None:
        """Move time on and let the writer seal what is due, then build the files."""
        self.clock.advance(seconds)
        self.engine.run(lambda conn, now: None)
        assert self.engine.settle(10)

    def files(self) -> list[list[dict[str, Any]]]:
        out = []
        for stored in reversed(self.spool.files(limit=1000)):
            body = self.spool.file_body(stored.file_id) or b""
            out.append([orjson.loads(line) for line in body.splitlines()])
        return out

    def restart(self) -> Harness:
        self.close()
        again = Harness.__new__(Harness)
        again.config = self.config
        again.clock = self.clock
        again.metrics = Metrics()
        again.spool = SqliteSpool.open(self.config.spool.path)
        again.engine = Engine(self.config, again.spool, again.metrics, clock=self.clock)
        again.engine.start()
        return again

    def close(self) -> None:
        self.engine.close()
        self.spool.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(make_config(tmp_path))
    yield h
    h.close()


def names(lines: list[dict[str, Any]]) -> list[str]:
    return [e["data"].get("event_name", e["event_type"]) for line in lines for e in line["events"]]


def test_a_device_window_is_sealed_after_batch_window_with_its_batches_in_order(
    harness: Harness,
) -> None:
    """Batches of one device within batch_window share a file, sealed when the window ends."""
    harness.submit(batch("d1", "a"))
    harness.tick(300)
    harness.submit(batch("d1", "b"), batch("d2", "x"))
    assert harness.files() == []
    harness.tick(301)
    files = harness.files()
    assert [names(f) for f in files] == [["a", "b"]], "only d1's window (opened first) is due"
    harness.tick(300)
    assert sorted(names(f) for f in harness.files()) == [["a", "b"], ["x"]]


def test_a_restart_resumes_open_windows_with_their_original_open_time(harness: Harness) -> None:
    """After a restart, an open window keeps its open time and its batches."""
    harness.submit(batch("d1", "before"))
    harness.tick(500)
    harness = harness.restart()
    try:
        harness.submit(batch("d1", "after"))
        harness.tick(101)
        assert [names(f) for f in harness.files()] == [["before", "after"]]
    finally:
        harness.close()


def test_a_repeated_source_request_id_is_stored_once(harness: Harness) -> None:
    """A batch whose source_request_id was already accepted counts as a duplicate."""
    first = harness.submit(batch("d1", "a", source_request_id="r-1"))
    again = harness.submit(
        batch("d1", "a", source_request_id="r-1"), batch("d1", "b", source_request_id="r-2")
    )
    assert (first.stored, first.duplicates) == (1, 0)
    assert (again.stored, again.duplicates) == (1, 1)
    harness.tick(601)
    assert [names(f) for f in harness.files()] == [["a", "b"]]


def test_the_dedup_index_survives_a_restart(harness: Harness) -> None:
    """A client retry after a restart is still recognised."""
    harness.submit(batch("d1", "a", source_request_id="r-1"))
    harness = harness.restart()
    try:
        assert harness.submit(batch("d1", "a", source_request_id="r-1")).duplicates == 1
    finally:
        harness.close()


def test_ingest_past_the_spool_cap_raises_spool_full_and_stores_nothing(tmp_path: Path) -> None:
    """Over max_bytes the submit fails with a retry hint and the spool is unchanged.

    Each 320 KB batch counts twice: its body (as stored, compressed: random text, so about
    three quarters of it), and the file it will become."""
    config = make_config(tmp_path)
    config = replace(config, spool=replace(config.spool, max_bytes=2 * 1024 * 1024, retry_after=7))
    h = Harness(config)
    try:
        big = batch("d1", "big", user_attributes={"pad": random_text(320_000)})
        for _ in range(3):
            h.submit(big)
        with pytest.raises(SpoolFullError) as caught:
            h.submit(big)
        assert caught.value.retry_after == 7
        assert h.spool.counts().batches == 3
        ok, reason = h.engine.ready()
        assert not ok and "cap" in reason
    finally:
        h.close()


def test_a_full_disk_fails_the_request_and_harms_nothing_accepted(harness: Harness) -> None:
    """When SQLite cannot grow (disk full) the submit fails with 503 and earlier data stays."""
    harness.submit(batch("d1", "kept"))
    pages = harness.spool._writer.execute("PRAGMA page_count").fetchone()[0]
    harness.spool._writer.execute(f"PRAGMA max_page_count = {pages}")
    big = batch("d2", "lost", user_attributes={"pad": random_text(200_000)})
    with pytest.raises(SpoolUnavailableError, match="full"):
        harness.submit(big)
    assert not harness.engine.ready()[0]
    harness.spool._writer.execute("PRAGMA max_page_count = 1073741823")
    harness.submit(batch("d3", "later"))
    assert harness.engine.ready()[0]
    harness.tick(601)
    assert sorted(names(f) for f in harness.files()) == [["kept"], ["later"]]


def test_per_event_mode_stores_one_file_per_event_at_once(tmp_path: Path) -> None:
    """send_as_batch off: every event is sealed into its own file as it arrives."""
    h = Harness(make_config(tmp_path, send_as_batch=False))
    try:
        two = batch("d1", "a")
        two["events"].append({"event_type": "screen_view", "data": {"screen_name": "Home"}})
        h.submit(two)
        h.tick(0)
        files = h.files()
        assert len(files) == 2
        assert all(len(f) == 1 and len(f[0]["events"]) == 1 for f in files)
    finally:
        h.close()


def test_session_mode_seals_at_session_end_and_on_idle_timeout(tmp_path: Path) -> None:
    """wait_for_complete_batch: a session_end seals at once; an idle session after its timeout."""
    h = Harness(make_config(tmp_path, wait_for_complete_batch=True, session_timeout=60.0))
    try:

        def in_session(session: str, name: str, end: bool = False) -> dict[str, Any]:
            b = batch("d1", name)
            b["events"][0]["data"]["session_uuid"] = session
            if end:
                b["events"].append(
                    {
                        "event_type": "session_end",
                        "data": {"session_uuid": session, "session_duration_ms": 1000},
                    }
                )
            return b

        h.submit(in_session("s1", "one"))
        h.submit(in_session("s2", "idle"))
        h.tick(30)
        h.submit(in_session("s1", "two", end=True))
        h.tick(0)
        assert [names(f) for f in h.files()] == [["one", "two", "session_end"]]
        h.tick(31)
        assert [names(f) for f in h.files()] == [["one", "two", "session_end"], ["idle"]]
    finally:
        h.close()


def test_a_stopping_engine_refuses_new_batches(harness: Harness) -> None:
    """After stop_intake, submit raises StoppingError (the API answers 503)."""
    harness.engine.stop_intake()
    with pytest.raises(StoppingError):
        harness.submit(batch("d1", "late"))


def test_delivered_files_release_their_bytes(harness: Harness) -> None:
    """Marking a file delivered drops its body and its share of the spool size."""
    harness.submit(batch("d1", "a", user_attributes={"pad": "p" * 40_000}))
    harness.tick(601)
    stored = harness.spool.files(limit=1)[0]
    before = harness.engine.spool_bytes
    assert before > 40_000
    harness.engine.ledger.delivered(stored.file_id)
    assert harness.engine.spool_bytes == harness.spool.footprint_bytes() < before - 30_000
    assert harness.spool.file_body(stored.file_id) is None
    assert harness.spool.stored_bytes() == 0


def test_the_spool_refuses_a_second_process(tmp_path: Path) -> None:
    """Two s3forward processes never share one spool."""
    first = SqliteSpool.open(tmp_path / "spool.db")
    try:
        with pytest.raises(SpoolUnavailableError, match="in use"):
            SqliteSpool.open(tmp_path / "spool.db")
    finally:
        first.close()


def test_spool_errors_never_surface_as_sqlite_exceptions(tmp_path: Path) -> None:
    """An unwritable spool location becomes SpoolUnavailableError with the path."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolUnavailableError, match="cannot create the spool"):
        SqliteSpool.open(blocker / "spool.db")
    assert not issubclass(SpoolUnavailableError, sqlite3.Error)


def test_a_failing_reload_after_a_failed_commit_keeps_the_writer_alive(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the spool cannot even be read back, writes get 503 until it can, and none hang."""
    harness.submit(batch("d1", "kept"))
    pages = harness.spool._writer.execute("PRAGMA page_count").fetchone()[0]
    harness.spool._writer.execute(f"PRAGMA max_page_count = {pages}")
    broken = {"reads": True}
    real_open_windows = harness.spool.open_windows

    def open_windows() -> Any:
        if broken["reads"]:
            raise sqlite3.OperationalError("disk I/O error")
        return real_open_windows()

    monkeypatch.setattr(harness.spool, "open_windows", open_windows)
    big = batch("d2", "lost", user_attributes={"pad": random_text(200_000)})
    with pytest.raises(SpoolUnavailableError):
        harness.submit(big)
    with pytest.raises(SpoolUnavailableError, match="cannot be read back"):
        harness.submit(batch("d3", "refused"))
    broken["reads"] = False
    harness.spool._writer.execute("PRAGMA max_page_count = 1073741823")
    harness.submit(batch("d4", "later"))
    harness.tick(601)
    assert sorted(names(f) for f in harness.files()) == [["kept"], ["later"]]


def test_sealed_windows_of_a_removed_connection_do_not_block_the_others(tmp_path: Path) -> None:
    """After a connection is removed from the config, its sealed windows wait on disk while
    every other connection's windows are still built."""
    base = make_config(tmp_path)
    two = replace(
        base,
        connections={
            "local": base.connections["local"],
            "gone": replace(base.connections["local"], name="gone"),
        },
    )
    h = Harness(two)
    h.engine.builds.stop(5)  # seal without building, as if the service stopped right then
    for device in range(20):
        h.submit(batch(f"d{device}", f"e{device}"))
    h.engine.seal_all()
    h.close()
    again = Harness(base)
    try:
        assert again.engine.settle(10)
        built = [names(f) for f in again.files()]
        assert len(built) == 20
        assert len(again.spool.sealed_windows()) == 20, "the removed connection's data is kept"
    finally:
        again.close()


def _spool_footprint(spool: SqliteSpool) -> int:
    """Bytes the database file uses (pages in use; free pages are reused, not counted)."""
    conn = spool._writer
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


@pytest.mark.parametrize("send_as_batch", [False, True], ids=["per_event", "per_device"])
def test_the_spool_cap_bounds_batches_windows_and_built_files_within_5_percent(
    tmp_path: Path, send_as_batch: bool
) -> None:
    """Filled until 429 with undelivered files (no compression, fat envelopes that per-event
    mode repeats on every event's line), the spool never holds more than its cap + 5%."""
    cap = 4 * 1024 * 1024
    config = make_config(tmp_path, send_as_batch=send_as_batch, use_compression=False)
    config = replace(config, spool=replace(config.spool, max_bytes=cap))
    h = Harness(config)
    try:
        refused = False
        for n in range(2000):
            fat = batch(f"d{n % 50}", "e", user_attributes={"pad": "x" * 3000})
            fat["events"] = fat["events"] * 10
            try:
                h.submit(fat)
            except SpoolFullError:
                refused = True
                break
            if n % 20 == 0:
                h.tick(601)  # seal and build what is due, so built files pile up too
        assert refused, "the cap was never reached"
        h.tick(601)
        assert h.spool.counts().pending_files > 0
        footprint = _spool_footprint(h.spool)
        assert footprint <= cap * 1.05, f"{footprint} bytes held for a {cap}-byte cap"
        assert footprint >= cap * 0.5, "the cap refuses long before the spool is full"
        assert h.engine.spool_bytes <= cap
    finally:
        h.close()


def test_ingest_stores_each_batch_compressed_and_files_hold_its_json(harness: Harness) -> None:
    """Issue 10: the spool keeps a batch as a zlib stream (codec 1), well under its JSON size,
    and the file built from it holds the batch as sent, numbers exact, unknown fields kept."""
    sent = batch("d1", "a" * 2000, mpid=-9_223_372_036_854_775_808, custom_field={"x": [1.5]})
    harness.submit(sent)
    raw = sqlite3.connect(harness.config.spool.path)
    try:
        ((codec, stored),) = raw.execute("SELECT codec, LENGTH(body) FROM batches").fetchall()
    finally:
        raw.close()
    assert codec == BodyCodec.ZLIB
    assert stored < len(orjson.dumps(sent)) / 4
    harness.tick(601)
    ((line,),) = harness.files()
    assert line["mpid"] == -9_223_372_036_854_775_808
    assert line["custom_field"] == {"x": [1.5]}
    assert names([line]) == ["a" * 2000]
