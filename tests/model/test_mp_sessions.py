"""Issue 11: splitting a batch by session (Wait for Complete Batch) is pure and lossless."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from s3forward.mparticle import session_key, split_by_session
from s3forward.mparticle.sessions import event_session


def event(session: str | None = None, session_id: int | None = None, n: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = {"n": n}
    if session is not None:
        data["session_uuid"] = session
    if session_id is not None:
        data["session_id"] = session_id
    return {"event_type": "custom_event", "data": data}


def test_a_batch_of_one_session_is_returned_as_is() -> None:
    """No copy when there is nothing to split: same object back."""
    batch = {"mpid": 1, "events": [event("a"), event(None), event("a")]}
    [same] = split_by_session(batch)
    assert same is batch


def test_a_batch_naming_no_session_is_returned_as_is() -> None:
    """Events without any session info: one part, the batch itself."""
    batch = {"events": [event(), event()]}
    assert split_by_session(batch) == [batch]


def test_two_sessions_give_two_parts_with_the_envelope() -> None:
    """Each part keeps every envelope field and its session's events in order."""
    batch = {"mpid": 7, "events": [event("a", n=1), event("b", n=2), event("a", n=3)]}
    parts = split_by_session(batch)
    assert [[e["data"]["n"] for e in p["events"]] for p in parts] == [[1, 3], [2]]
    assert all(p["mpid"] == 7 for p in parts)
    assert [session_key(p) for p in parts] == ["a", "b"]
    assert batch["events"] == [event("a", n=1), event("b", n=2), event("a", n=3)]


def test_unsessioned_events_follow_the_session_before_them() -> None:
    """An event with no session joins the previous session; leading ones join the first."""
    batch = {"events": [event(n=0), event("a", n=1), event("b", n=2), event(n=3)]}
    parts = split_by_session(batch)
    assert [[e["data"]["n"] for e in p["events"]] for p in parts] == [[0, 1], [2, 3]]


def test_session_id_alone_names_a_session() -> None:
    """Without session_uuid, session_id tells sessions apart (as session_key does)."""
    parts = split_by_session({"events": [event(session_id=1), event(session_id=2)]})
    assert [session_key(p) for p in parts] == ["session_id:1", "session_id:2"]


sessions = st.sampled_from([None, "a", "b", "c"])


@given(st.lists(sessions, max_size=12))
def test_splitting_keeps_every_event_once_and_each_sessions_order(
    labels: list[str | None],
) -> None:
    """The parts hold exactly the batch's events; within a part the original order is kept;
    every part names exactly one session (or the batch is returned whole)."""
    batch = {"events": [event(s, n=i) for i, s in enumerate(labels)]}
    parts = split_by_session(batch)
    numbers = [e["data"]["n"] for p in parts for e in p["events"]]
    assert sorted(numbers) == list(range(len(labels)))
    for part in parts:
        ns = [e["data"]["n"] for e in part["events"]]
        assert ns == sorted(ns)
        if len(parts) > 1:
            assert len({event_session(e) for e in part["events"]} - {None}) == 1
