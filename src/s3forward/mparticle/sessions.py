"""Splitting a batch by session, for Wait for Complete Batch (issue 11). Pure.

A batch whose events belong to several sessions (an SDK that uploads after a session ended
and a new one began) is split into one batch per session, so that each session's file holds
exactly that session's events. An event's session is its ``session_uuid``, else its
``session_id``; an event naming no session stays with the session of the event before it
(or, before any sessioned event, with the batch's first session). Each part keeps the batch's
envelope (every field except ``events``) and its events in their original order; parts come in
the order their sessions first appear.
"""

from __future__ import annotations

from typing import Any

from s3forward.mparticle.catalogue import as_int64


def event_session(event: Any) -> str | None:
    """The session an event names, in the form ``session_key`` uses; None when none."""
    data = event.get("data") if type(event) is dict else None
    if type(data) is not dict:
        return None
    uuid = data.get("session_uuid")
    if uuid:
        return str(uuid)
    session_id = as_int64(data.get("session_id"))
    return None if session_id is None else f"session_id:{session_id}"


def split_by_session(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """``[batch]`` (the same object) when it holds at most one session, else one batch per
    session (shallow copies of the envelope)."""
    events = batch.get("events")
    if type(events) is not list or len(events) < 2:
        return [batch]
    sessions = [event_session(e) for e in events]
    named = [s for s in sessions if s is not None]
    if not named or all(s == named[0] for s in named):
        return [batch]
    groups: dict[str, list[Any]] = {}
    current = named[0]
    for event, session in zip(events, sessions, strict=True):
        if session is not None:
            current = session
        groups.setdefault(current, []).append(event)
    return [{**batch, "events": part} for part in groups.values()]
