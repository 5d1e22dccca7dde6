"""The pure partition replay: deterministic files, and recovery from any low watermark."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from s3forward.cluster.replay import LogEntry, PartitionReplay, SealedFile, SealRecord
from s3forward.config import (
    Config,
    ConnectionSettings,
    DateFolders,
    Destination,
    InputSettings,
    Secret,
)


def make_config(**connection: Any) -> Config:
    settings = ConnectionSettings(
        name="c",
        inputs=("app",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=Path("unused"),
        store_data_in_folders_by_date=DateFolders.NONE,
        batch_window=10.0,
        session_timeout=20.0,
        max_session_age=60.0,
    )
    return Config(
        inputs={"app": InputSettings("app", "key", Secret("secret"), "App")},
        connections={"c": replace(settings, **connection)},
    )


def batch_entry(
    seq: int,
    time: float,
    device: int,
    *,
    session: int | None,
    end: bool,
    second: int | None = None,
) -> LogEntry:
    """A batch with event ``e<seq>``; with ``second``, also ``e<seq>b`` of another session
    of the same device (a batch of two sessions, split for per_session connections)."""
    events: list[dict[str, Any]] = [
        {
            "event_type": "custom_event",
            "data": {"event_name": f"e{seq}", "custom_event_type": "other"},
        }
    ]
    if session is not None:
        for event in events:
            event["data"]["session_uuid"] = f"s{device}-{session}"
        if second is not None and second != session:
            events.append(
                {
                    "event_type": "custom_event",
                    "data": {
                        "event_name": f"e{seq}b",
                        "custom_event_type": "other",
                        "session_uuid": f"s{device}-{second}",
                    },
                }
            )
        if end:
            events.append(
                {"event_type": "session_end", "data": {"session_uuid": f"s{device}-{session}"}}
            )
    body = orjson.dumps({"device_info": {"android_uuid": f"d{device}"}, "events": events})
    return LogEntry(seq, time, "app", body, int(time * 1000), seq * 7)


def run(
    config: Config, log: list[LogEntry], start: int, records: list[SealRecord]
) -> list[SealedFile]:
    replay = PartitionReplay(config, prefix="t", partition=3, start=start, recorded=records)
    out: list[SealedFile] = []
    for entry in log:
        if entry.seq >= start:
            out.extend(replay.feed(entry))
    return out


entries = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=8),  # time step
        st.integers(0, 3),  # device
        st.one_of(st.none(), st.integers(0, 2)),  # session
        st.booleans(),  # session end
        st.booleans(),  # a tick instead of a batch
        st.one_of(st.none(), st.integers(0, 2)),  # a second session in the same batch
    ),
    min_size=1,
    max_size=40,
)
MODES: dict[str, dict[str, bool]] = {
    "per_device": {},
    "per_session": {"wait_for_complete_batch": True},
    "per_event": {"send_as_batch": False},
}
modes = st.sampled_from(sorted(MODES))


Spec = list[tuple[float, int, int | None, bool, bool, int | None]]


def build_log(spec: Spec) -> list[LogEntry]:
    log: list[LogEntry] = []
    now = 1_700_000_000.0
    for seq, (step, device, session, end, tick, second) in enumerate(spec, start=1):
        now += step
        log.append(
            LogEntry(seq, now, None)
            if tick
            else batch_entry(seq, now, device, session=session, end=end, second=second)
        )
    log.append(LogEntry(len(log) + 1, now + 1000, None))  # a late tick seals everything
    return log


@settings(max_examples=150, deadline=None)
@given(spec=entries, mode=modes, data=st.data())
def test_replay_from_any_low_watermark_yields_byte_identical_objects(
    spec: Spec, mode: str, data: st.DataObject
) -> None:
    """A worker dies after any entry; its successor replays from the recorded watermark with the
    recorded seals: together they write each file once, under the same key, with the same bytes.
    Batches of two sessions are split per session on every replay the same way."""
    config = make_config(**MODES[mode])
    log = build_log(spec)
    reference = run(config, log, 1, [])
    expected = {f.record.key: f.built.obj.body for f in reference}
    assert len(expected) == len(reference)
    assert_each_event_once_and_sessions_apart(log, reference, split=mode == "per_session")

    crash_after = data.draw(st.integers(0, len(log)))
    delivered_upto = data.draw(st.integers(0, crash_after))
    first = PartitionReplay(config, prefix="t", partition=3, start=1)
    recorded: list[SealRecord] = []
    written: dict[str, bytes] = {}
    undelivered: list[SealRecord] = []
    for entry in log[:crash_after]:
        for sealed in first.feed(entry):
            recorded.append(sealed.record)  # recorded before the write
            if entry.seq <= delivered_upto:
                written[sealed.record.key] = sealed.built.obj.body
            else:
                undelivered.append(sealed.record)
    low = first.low_watermark(undelivered)

    for sealed in run(config, log, low, recorded):
        previous = written.setdefault(sealed.record.key, sealed.built.obj.body)
        assert previous == sealed.built.obj.body, "a rebuilt file differs from its first write"
    assert written == expected


def assert_each_event_once_and_sessions_apart(
    log: list[LogEntry], files: list[SealedFile], *, split: bool
) -> None:
    """Every event of the log is in exactly one file; with ``split``, every file holds one
    session's events (a batch of two sessions went to both sessions' files)."""
    sent = [
        e["data"]["event_name"]
        for entry in log
        if entry.input is not None
        for e in orjson.loads(entry.body)["events"]
        if "event_name" in e["data"]
    ]
    found: list[str] = []
    for sealed in files:
        sessions = set()
        for line in sealed.built.obj.body.splitlines():
            for event in orjson.loads(line)["events"]:
                sessions.add(event["data"].get("session_uuid"))
                if "event_name" in event["data"]:
                    found.append(event["data"]["event_name"])
        if split:
            assert len(sessions) == 1, f"{sealed.record.key} mixes sessions {sessions}"
    assert sorted(found) == sorted(sent)
