"""Issue 11 through the service's engine (real SQLite spool, manual clock): session split and
alias requests, read back from the files the engine stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_engine import Harness, make_config

SESSION_A = "aaaaaaaa-0000-4000-8000-000000000001"
SESSION_B = "bbbbbbbb-0000-4000-8000-000000000002"


def event(name: str, session: str | None, event_type: str = "custom_event") -> dict[str, Any]:
    data: dict[str, Any] = {"event_name": name, "custom_event_type": "other"}
    if session is not None:
        data["session_uuid"] = session
    return {"event_type": event_type, "data": data}


def two_session_batch() -> dict[str, Any]:
    return {
        "device_info": {"android_uuid": "dev-1"},
        "events": [
            event("a1", SESSION_A),
            event("a-end", SESSION_A, "session_end"),
            event("b1", SESSION_B),
            event("b2", None),
        ],
    }


def names(file: list[dict[str, Any]]) -> list[str]:
    return [e["data"].get("event_name") for line in file for e in line["events"]]


def test_a_batch_of_two_sessions_is_split_into_each_sessions_window(tmp_path: Path) -> None:
    """Per session: session A's part is sealed by its session_end at once; B's part waits for
    B's timeout; an event naming no session stays with the session before it."""
    h = Harness(make_config(tmp_path, wait_for_complete_batch=True, session_timeout=60.0))
    try:
        h.submit(two_session_batch())
        h.tick(0)
        assert [names(f) for f in h.files()] == [["a1", "a-end"]]
        h.tick(61)
        assert [names(f) for f in h.files()] == [["a1", "a-end"], ["b1", "b2"]]
        first, second = h.files()
        assert first[0]["batch_id"] == second[0]["batch_id"]
        assert first[0]["device_info"] == second[0]["device_info"]
    finally:
        h.close()


def test_a_split_batch_releases_all_its_spool_bytes(tmp_path: Path) -> None:
    """The parts' bytes are counted when stored and released when their files are stored."""
    h = Harness(make_config(tmp_path, wait_for_complete_batch=True, session_timeout=60.0))
    try:
        h.submit(two_session_batch())
        assert h.engine.spool_bytes > 0
        h.tick(61)
        stored_files = sum(
            len(h.spool.file_body(f.file_id) or b"") for f in h.spool.files(limit=100)
        )
        assert h.spool.stored_bytes() == stored_files, "the parts' batches are released"
        assert h.engine.usage.unbuilt == 0, "no projection is left for built windows"
        assert h.engine.spool_bytes == h.spool.footprint_bytes()
    finally:
        h.close()


def test_other_connections_keep_the_batch_whole(tmp_path: Path) -> None:
    """The split applies to per-session connections only; per-device ones get one line."""
    h = Harness(make_config(tmp_path, batch_window=30.0))
    try:
        h.submit(two_session_batch())
        h.tick(31)
        [file] = h.files()
        assert len(file) == 1
        assert names(file) == ["a1", "a-end", "b1", "b2"]
    finally:
        h.close()


def alias() -> dict[str, Any]:
    return {"request_type": "alias", "data": {"source_mpid": 1, "destination_mpid": 2}}


def test_alias_requests_reach_the_file_when_the_connection_sends_them(tmp_path: Path) -> None:
    """send_alias_requests = true: the alias request is a line of its own, message_type alias."""
    h = Harness(make_config(tmp_path, batch_window=30.0, send_alias_requests=True))
    try:
        h.submit(alias())
        h.tick(31)
        [[line]] = h.files()
        assert line["message_type"] == "alias"
        assert line["data"] == {"source_mpid": 1, "destination_mpid": 2}
    finally:
        h.close()


def test_alias_requests_are_dropped_when_the_connection_does_not_send_them(
    tmp_path: Path,
) -> None:
    """Default: no file for a window holding only an alias request, and its bytes are freed."""
    h = Harness(make_config(tmp_path, batch_window=30.0))
    try:
        h.submit(alias())
        h.tick(31)
        assert h.files() == []
        assert h.engine.open_window_counts() == {"local": 0}
        assert h.spool.stored_bytes() == 0 and h.spool.counts().batches == 0
        assert h.engine.usage.unbuilt == 0
    finally:
        h.close()
