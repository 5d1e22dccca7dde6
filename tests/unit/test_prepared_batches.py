"""``prepare_batches``: the one function that reduces a validated batch to what placement needs,
used by the in-process path and by HTTP worker processes alike (issue 10)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3forward.clock import ManualClock
from s3forward.config import (
    BatchingMode,
    Config,
    ConnectionSettings,
    DateFolders,
    Destination,
    InputSettings,
    Secret,
    SpoolSettings,
)
from s3forward.engine import Engine
from s3forward.errors import StoppingError
from s3forward.metrics import Metrics
from s3forward.mparticle import (
    batch_id_for,
    dedup_key,
    ends_session,
    new_batch_id,
    split_by_session,
)
from s3forward.multicore.frames import Submit, encode, worker_frames
from s3forward.pipeline.prepared import modes_for, prepare_batches
from s3forward.spool.codec import BodyCodec, body_json
from s3forward.spool.memory import MemorySpool
from s3forward.windows import group_of

ALL_MODES = frozenset(BatchingMode)

_sessions = st.sampled_from(["s1", "s2", "s3"])
_event = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["custom_event", "session_start", "session_end"]),
        "data": st.fixed_dictionaries(
            {},
            optional={
                "session_uuid": _sessions,
                "session_id": st.integers(1, 3),
                "event_name": st.text(max_size=8),
            },
        ),
    }
)
_batch = st.fixed_dictionaries(
    {"events": st.lists(_event, max_size=6)},
    optional={
        "source_request_id": st.text(min_size=1, max_size=10),
        "batch_id": st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=4)),
        "mp_deviceid": st.text(min_size=1, max_size=6),
        "device_info": st.fixed_dictionaries({}, optional={"android_uuid": st.text(max_size=6)}),
        "mpid": st.integers(1, 10),
    },
)
_modes = st.frozensets(st.sampled_from(list(BatchingMode)))


@settings(max_examples=300, deadline=None)
@given(batch=_batch, modes=_modes)
def test_a_prepared_batch_carries_exactly_the_facts_placement_computes_from_the_batch(
    batch: dict[str, Any], modes: frozenset[BatchingMode]
) -> None:
    """Each field equals the rule applied to the batch itself (the rules placement used to run
    on the dict): groups, session end, session parts, event sizes, dedup key, stored body."""
    body = orjson.dumps(batch)
    (prepared,) = prepare_batches("app", [batch], [body], modes)
    assert body_json(BodyCodec.ZLIB, prepared.stored) == body
    assert prepared.body_bytes == len(body)
    assert prepared.events == len(batch["events"])
    assert prepared.dedup_key == dedup_key(batch)
    assert prepared.device_group == group_of(batch, "app", BatchingMode.PER_DEVICE)
    per_session = BatchingMode.PER_SESSION in modes
    if per_session:
        assert prepared.session_group == group_of(batch, "app", BatchingMode.PER_SESSION)
    else:
        assert prepared.session_group is None
    assert prepared.ends_session == (per_session and ends_session(batch))
    # Stored with the batch's own id when it has one, else a drawn one, as before.
    drawn = new_batch_id(random.Random(0))
    own = prepared.batch_id if prepared.batch_id is not None else drawn
    assert own == batch_id_for(batch, random.Random(0))
    if BatchingMode.PER_EVENT in modes:
        assert prepared.event_sizes == [len(orjson.dumps(e)) for e in batch["events"]]
    else:
        assert prepared.event_sizes == []
    parts = split_by_session(batch) if per_session else [batch]
    if len(parts) > 1:
        assert [body_json(BodyCodec.ZLIB, p.stored) for p in prepared.parts] == [
            orjson.dumps(p) for p in parts
        ]
        assert [p.group for p in prepared.parts] == [
            group_of(p, "app", BatchingMode.PER_SESSION) for p in parts
        ]
        assert [p.ends_session for p in prepared.parts] == [ends_session(p) for p in parts]
    else:
        assert prepared.parts == []


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(_batch, min_size=1, max_size=4), modes=_modes)
def test_a_prepared_request_survives_the_frame_codec_unchanged(
    batches: list[dict[str, Any]], modes: frozenset[BatchingMode]
) -> None:
    """What a worker sends is what the engine places: the frame round trip is lossless."""
    prepared = prepare_batches("app", batches, [orjson.dumps(b) for b in batches], modes)
    frame = Submit(7, "app", sorted(m.value for m in modes), 1.25, prepared)
    (decoded,) = worker_frames().feed(encode(frame))
    assert decoded == frame


def test_an_alias_request_is_deduplicated_by_its_request_id_apart_from_batch_ids() -> None:
    """An alias request's request_id never collides with a batch's source_request_id."""
    alias = {"request_type": "alias", "request_id": "r1"}
    assert dedup_key(alias) == "alias\x1fr1"
    assert dedup_key({"source_request_id": "r1"}) == "r1"
    assert dedup_key({"events": []}) is None


def _config(tmp_path: Path, *settings_: dict[str, Any]) -> Config:
    connections = {
        f"c{i}": ConnectionSettings(
            name=f"c{i}",
            inputs=("app",),
            s3_bucket_name="",
            destination=Destination.LOCALDIR,
            local_path=tmp_path / f"c{i}",
            store_data_in_folders_by_date=DateFolders.NONE,
            **extra,
        )
        for i, extra in enumerate(settings_)
    }
    return Config(
        inputs={"app": InputSettings("app", "k", Secret("s"), "App")},
        connections=connections,
        spool=SpoolSettings(path=tmp_path / "unused.db"),
    )


def test_the_modes_of_an_input_are_those_of_its_connections(tmp_path: Path) -> None:
    """Event sizes and session parts are only prepared when a connection will use them."""
    config = _config(tmp_path, {}, {"send_as_batch": False}, {"wait_for_complete_batch": True})
    assert modes_for(config, "app") == ALL_MODES
    assert modes_for(_config(tmp_path, {}), "app") == {BatchingMode.PER_DEVICE}


def test_a_request_prepared_before_a_reload_added_a_batching_mode_is_refused_not_misplaced(
    tmp_path: Path,
) -> None:
    """A worker that prepared a request for per_device only cannot have it placed in a
    per_session connection's windows without its session facts: 503 (retry), nothing stored."""
    config = _config(tmp_path, {}, {"wait_for_complete_batch": True})
    spool = MemorySpool()
    engine = Engine(config, spool, Metrics(), clock=ManualClock(), rng=random.Random(1))
    engine.start()
    try:
        batch = {"events": [{"event_type": "custom_event", "data": {"session_uuid": "s"}}]}
        prepared = prepare_batches(
            "app", [batch], [orjson.dumps(batch)], frozenset({BatchingMode.PER_DEVICE})
        )
        future = engine.ingest.submit_prepared(
            "app", prepared, frozenset({BatchingMode.PER_DEVICE}), received_at=1.0
        )
        with pytest.raises(StoppingError, match="per_session"):
            future.result(timeout=5)
        assert spool.counts().batches == 0
        full = modes_for(config, "app")
        prepared = prepare_batches("app", [batch], [orjson.dumps(batch)], full)
        result = engine.ingest.submit_prepared("app", prepared, full, received_at=1.0)
        assert result.result(timeout=5).stored == 1
        assert engine.open_window_counts() == {"c0": 1, "c1": 1}
    finally:
        engine.close()
