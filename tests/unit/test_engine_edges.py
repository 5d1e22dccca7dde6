"""Edges of the engine found in review: a reload that does not commit, a request too big to
ever fit the spool. In process, over MemorySpool."""

from __future__ import annotations

import random
from pathlib import Path

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
from s3forward.errors import PayloadTooLargeError, SpoolUnavailableError
from s3forward.metrics import Metrics
from s3forward.spool.memory import MemorySpool


def config(
    tmp_path: Path,
    *names: str,
    max_bytes: int = 64 * 1024 * 1024,
    per_session: bool = False,
) -> Config:
    connections = {
        name: ConnectionSettings(
            name=name,
            inputs=("app",),
            s3_bucket_name="",
            destination=Destination.LOCALDIR,
            local_path=tmp_path / name,
            store_data_in_folders_by_date=DateFolders.NONE,
            wait_for_complete_batch=per_session,
        )
        for name in names
    }
    return Config(
        inputs={"app": InputSettings("app", "k", Secret("s"), "App")},
        connections=connections,
        spool=SpoolSettings(path=tmp_path / "unused.db", max_bytes=max_bytes),
    )


def batch(device: str, pad: int = 0) -> dict[str, object]:
    return {
        "device_info": {"android_uuid": device},
        "user_attributes": {"pad": "x" * pad},
        "events": [{"event_type": "custom_event", "data": {"event_name": "e"}}],
    }


def test_a_reload_whose_switch_does_not_commit_leaves_the_old_config_everywhere(
    tmp_path: Path,
) -> None:
    """The switch fails with its commit: the caller hears so, and every part of the engine
    still runs the old config (no windows of the connection that was to be added)."""
    old = config(tmp_path, "local")
    spool = MemorySpool()
    engine = Engine(old, spool, Metrics(), clock=ManualClock(), rng=random.Random(1))
    engine.start()
    try:
        spool.fail_next_commit = OSError("disk full")
        with pytest.raises(SpoolUnavailableError):
            engine.apply_config(config(tmp_path, "local", "other"))
        assert engine.config is old and engine.ingest.config is old
        assert engine.builds.config is old and engine.book.config is old
        engine.submit_sync("app", [batch("d1")], received_at=1.0)
        assert engine.open_window_counts() == {"local": 1}
        assert [w.connection for w in spool.open_windows()] == ["local"]
    finally:
        engine.close()


def test_a_request_that_could_never_fit_the_spool_is_413_and_readiness_stays_green(
    tmp_path: Path,
) -> None:
    """Retrying a request bigger than the whole cap would never help: 413, not 429."""
    spool = MemorySpool()
    cfg = config(tmp_path, "a", "b", "c", "d", max_bytes=1024 * 1024)
    engine = Engine(cfg, spool, Metrics(), clock=ManualClock(), rng=random.Random(1))
    engine.start()
    try:
        with pytest.raises(PayloadTooLargeError, match="more than the 1048576-byte"):
            engine.submit_sync("app", [batch("d1", pad=250_000)], received_at=1.0)
        assert engine.ready() == (True, "ok")
        assert engine.submit_sync("app", [batch("d2")], received_at=1.0).stored == 1
    finally:
        engine.close()


def test_a_batch_of_many_sessions_is_counted_per_part_against_the_cap(tmp_path: Path) -> None:
    """A per-session connection stores a batch of several sessions once per session, each
    part with the batch's envelope: 40 sessions of a 20 KB envelope are 800 KB of parts from a
    request of 20 KB, so a 1 MiB spool refuses it (413) instead of letting it past the cap."""
    spool = MemorySpool()
    cfg = config(tmp_path, "s", max_bytes=1024 * 1024, per_session=True)
    engine = Engine(cfg, spool, Metrics(), clock=ManualClock(), rng=random.Random(1))
    engine.start()
    many = batch("d1", pad=20_000)
    many["events"] = [
        {"event_type": "custom_event", "data": {"event_name": "e", "session_uuid": f"s{n}"}}
        for n in range(40)
    ]
    try:
        with pytest.raises(PayloadTooLargeError, match="more than the 1048576-byte"):
            engine.submit_sync("app", [many], received_at=1.0)
        assert spool.open_windows() == []
        many["events"] = many["events"][:2]  # two sessions: two parts, well within the cap
        assert engine.submit_sync("app", [many], received_at=1.0).stored == 1
        assert len(spool.open_windows()) == 2
    finally:
        engine.close()


def test_a_retried_alias_request_is_stored_once(tmp_path: Path) -> None:
    """An alias request's request_id dedups like a batch's source_request_id."""
    spool = MemorySpool()
    engine = Engine(config(tmp_path, "a"), spool, Metrics(), clock=ManualClock())
    engine.start()
    try:
        alias = {
            "request_type": "alias",
            "request_id": "r-1",
            "data": {"source_mpid": 1, "destination_mpid": 2},
        }
        first = engine.submit_sync("app", [dict(alias)], received_at=1.0)
        again = engine.submit_sync("app", [dict(alias)], received_at=2.0)
        assert (first.stored, again.stored, again.duplicates) == (1, 0, 1)
        assert spool.counts().batches == 1
    finally:
        engine.close()
