"""Cluster replay cuts the same files as single-node mode: the same input, through the
single-node engine (real SQLite spool, manual clock) and through ``PartitionReplay`` (broker
time), gives the same objects but for the key digits and the line message_ids (both modes
derive those from where the batch sits in their own log)."""

from __future__ import annotations

import gzip
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.cluster.replay import LogEntry, PartitionReplay
from s3forward.config import Config
from test_engine import Harness, make_config
from test_engine_mp_settings import SESSION_A, SESSION_B, event

T0 = 1_700_000_000.0


def batch(batch_id: int, device: str, *events: dict[str, Any]) -> dict[str, Any]:
    return {"batch_id": batch_id, "device_info": {"android_uuid": device}, "events": list(events)}


# (seconds after T0, batch); a batch of None is a tick: time passes, due windows seal
TIMELINE: list[tuple[float, dict[str, Any] | None]] = [
    (0.0, batch(11, "d1", event("a1", SESSION_A), event("b1", SESSION_B), event("b-none", None))),
    (5.0, batch(12, "d1", event("a3", SESSION_A), event("a-end", SESSION_A, "session_end"))),
    (6.0, batch(13, "d2", event("x1", None), event("x2", None))),
    (8.0, batch(14, "d1", event("b2", SESSION_B), event("c1", "c-session"))),
    (200.0, None),
]


def canonical(key: str, body: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The key without its five random digits, and the lines without their message_id."""
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    lines = [orjson.loads(line) for line in body.splitlines() if line]
    for line in lines:
        line.pop("message_id", None)
    return re.sub(r"_\d{5}(\.txt)", r"_XXXXX\1", key), lines


def single_node_objects(config: Config) -> list[tuple[str, list[dict[str, Any]]]]:
    h = Harness(config)
    try:
        for at, item in TIMELINE:
            h.tick(T0 + at - h.clock.now())
            if item is not None:
                h.submit(item)
                h.tick(0)
        out = []
        for stored in h.spool.files(limit=1000):
            out.append(canonical(stored.key, h.spool.file_body(stored.file_id) or b""))
        return sorted(out, key=repr)
    finally:
        h.close()


def cluster_objects(config: Config) -> list[tuple[str, list[dict[str, Any]]]]:
    replay = PartitionReplay(config, prefix="t", partition=0, start=1)
    out = []
    for seq, (at, item) in enumerate(TIMELINE, start=1):
        when = T0 + at
        if item is None:
            entry = LogEntry(seq, when, None)
        else:
            entry = LogEntry(seq, when, "app", orjson.dumps(item), int(when * 1000), 0)
        for sealed in replay.feed(entry):
            out.append(canonical(sealed.record.key, sealed.built.obj.body))
    return sorted(out, key=repr)


MODES = {
    "per_session": {"wait_for_complete_batch": True, "session_timeout": 60.0},
    "per_device": {"batch_window": 30.0},
    "per_event": {"send_as_batch": False},
    "per_device, small files": {"batch_window": 30.0, "max_file_bytes": 1000},
    "per_session, small files": {
        "wait_for_complete_batch": True,
        "session_timeout": 60.0,
        "max_file_bytes": 1000,
    },
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_cluster_replay_writes_the_objects_single_node_mode_writes(
    tmp_path: Path, mode: str
) -> None:
    """Same timeline, same files: per session a batch of several sessions is one part per
    session in each engine (sharing the batch's batch_id), and item sizes (max_file_bytes)
    count the same."""
    config = make_config(tmp_path, **MODES[mode])
    config = replace(config, spool=replace(config.spool, max_bytes=64 * 1024 * 1024))
    single = single_node_objects(config)
    assert single, "the timeline writes files"
    assert cluster_objects(config) == single


def test_a_split_batch_lands_in_each_sessions_file_in_both_modes(tmp_path: Path) -> None:
    """What the parity above stands on, spelled out for per_session: the first batch's event
    of session A is in A's file, its events of session B (and the one after it naming no
    session) in B's, with one batch_id; events naming no session stay in their device's."""
    config = make_config(tmp_path, **MODES["per_session"])
    for objects in (single_node_objects(config), cluster_objects(config)):
        by_names = {
            tuple(e["data"].get("event_name") for line in lines for e in line["events"]): lines
            for _, lines in objects
        }
        assert sorted(by_names) == [
            ("a1", "a3", "a-end"),
            ("b1", "b-none", "b2"),
            ("c1",),
            ("x1", "x2"),
        ]
        a_lines, b_lines = by_names[("a1", "a3", "a-end")], by_names[("b1", "b-none", "b2")]
        assert a_lines[0]["batch_id"] == b_lines[0]["batch_id"] == 11
