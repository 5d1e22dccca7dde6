"""A sealed window's object depends only on what is stored for it: rebuilt anywhere, it is the
same key and the same bytes (so a replayed or retried window is recognised by the sink)."""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3forward.builder import BuildJob, build_window
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
from s3forward.metrics import Metrics
from s3forward.spool.base import Spool, StoredWindow
from s3forward.spool.memory import MemorySpool
from s3forward.spool.sqlite import SqliteSpool

EVENT = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["custom_event", "screen_view", "session_start"]),
        "data": st.fixed_dictionaries(
            {
                "event_name": st.text(max_size=8),
                "timestamp_unixtime_ms": st.integers(1_600_000_000_000, 1_900_000_000_000),
            }
        ),
    }
)
BATCH = st.fixed_dictionaries(
    {
        "device_info": st.fixed_dictionaries({"android_uuid": st.sampled_from(["d1", "d2"])}),
        "events": st.lists(EVENT, max_size=3),
    },
    optional={"batch_id": st.integers(1, 2**62), "user_attributes": st.just({"k": "v"})},
)


def config(tmp: Path, **overrides: Any) -> Config:
    connection = ConnectionSettings(
        name="c",
        inputs=("app",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=tmp / "bucket",
        store_data_in_folders_by_date=DateFolders.EVENT_TIME,
        access_key_id=Secret("AKIA-NOT-PICKLED"),
        secret_access_key=Secret("secret-not-pickled"),
    )
    return Config(
        inputs={"app": InputSettings("app", "key", Secret("s"), "App")},
        connections={"c": replace(connection, **overrides)},
        spool=SpoolSettings(path=tmp / "spool.db"),
    )


def sealed_without_building(spool: Spool, cfg: Config, batches: list[dict[str, Any]]) -> None:
    engine = Engine(cfg, spool, Metrics(), clock=ManualClock(), rng=random.Random(3))
    engine.start()
    engine.builds.stop(5)  # seal only: the files are built by the test
    for batch in batches:
        engine.submit_sync("app", [batch], received_at=1_700_000_000.5)
    engine.seal_all()
    engine.close()


def job(cfg: Config, window: StoredWindow) -> BuildJob:
    assert window.sealed_at is not None and window.digits is not None
    return BuildJob(
        window.window_id,
        cfg.connections["c"].file_settings,
        "App",
        window.sealed_at,
        window.digits,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(BATCH, min_size=1, max_size=6),
    compress=st.booleans(),
    per_event=st.booleans(),
)
def test_rebuilding_a_sealed_window_anywhere_gives_the_same_key_and_bytes(
    batches: list[dict[str, Any]], compress: bool, per_event: bool
) -> None:
    """The in-process view, a worker's fresh view, and a copy of the log in another backend
    all build byte-identical objects; so does the build loop that stores the file."""
    tmp = Path(tempfile.mkdtemp(prefix="determinism-"))
    try:
        cfg = config(tmp, use_compression=compress, send_as_batch=not per_event)
        sqlite = SqliteSpool.open(cfg.spool.path)
        memory = MemorySpool()
        try:
            sealed_without_building(sqlite, cfg, batches)
            sealed_without_building(memory, cfg, batches)
            windows = sqlite.sealed_windows()
            assert [w.window_id for w in windows] == [w.window_id for w in memory.sealed_windows()]
            worker = sqlite.worker_view()()
            expected = {}
            for window in windows:
                here = build_window(sqlite, job(cfg, window))
                elsewhere = build_window(worker, job(cfg, window))
                memory_window = next(
                    w for w in memory.sealed_windows() if w.window_id == window.window_id
                )
                other_backend = build_window(memory, job(cfg, memory_window))
                assert here is not None and elsewhere is not None and other_backend is not None
                assert here.obj.key == elsewhere.obj.key == other_backend.obj.key
                assert here.obj.body == elsewhere.obj.body == other_backend.obj.body
                again = build_window(sqlite, job(cfg, window))
                assert again is not None and again.obj.body == here.obj.body
                expected[window.window_id] = (here.obj.key, here.obj.body)
            engine = Engine(cfg, sqlite, Metrics(), clock=ManualClock())
            engine.start()
            assert engine.settle(10)
            engine.close()
            stored = {
                f.window_id: (f.key, sqlite.file_body(f.file_id)) for f in sqlite.files(limit=999)
            }
            assert stored == expected
        finally:
            sqlite.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_build_jobs_carry_no_secret(tmp_path: Path) -> None:
    """What is pickled to the build worker has no access keys in it."""
    import pickle

    cfg = config(tmp_path)
    window = StoredWindow(1, "c", "g", "app", 0.0, 0.0, 0, 0, 0, 1.0, "drain", 5)
    blob = pickle.dumps(job(cfg, window))
    assert b"not-pickled" not in blob
    assert b"AKIA" not in blob
