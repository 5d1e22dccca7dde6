"""Issue 11: the outbound form's additions from mParticle's description of outgoing JSON."""

from __future__ import annotations

from typing import Any

from s3forward.mparticle import alias_outbound, to_outbound


def outbound(batch: dict[str, Any]) -> dict[str, Any]:
    return to_outbound(batch, received_at_ms=5, batch_id=9, message_id="m", unique_id=None)


def test_event_start_is_the_event_time_unless_sent() -> None:
    """event_start_unixtime_ms copies timestamp_unixtime_ms; a sent one is kept; no timestamp,
    no event start."""
    out = outbound(
        {
            "events": [
                {"event_type": "uninstall", "data": {"timestamp_unixtime_ms": 10}},
                {
                    "event_type": "uninstall",
                    "data": {"timestamp_unixtime_ms": 10, "event_start_unixtime_ms": 3},
                },
                {"event_type": "uninstall", "data": {}},
            ]
        }
    )
    assert [e["data"].get("event_start_unixtime_ms") for e in out["events"]] == [10, 3, None]


def test_numeric_strings_become_numbers_in_int64_fields_only() -> None:
    """mpid and event int64s become numbers; a string field that looks numeric stays a string."""
    out = outbound(
        {
            "mpid": "-42",
            "events": [
                {
                    "event_type": "session_end",
                    "data": {"session_duration_ms": "60", "session_uuid": "123"},
                },
                {"event_type": "custom_event", "data": {"event_name": "7", "event_id": "8"}},
            ],
        }
    )
    assert out["mpid"] == -42
    assert out["events"][0]["data"] == {"session_duration_ms": 60, "session_uuid": "123"}
    assert out["events"][1]["data"] == {"event_name": "7", "event_id": 8}


def test_missing_or_null_events_and_data_are_written_empty() -> None:
    """No events key or null: []; an event's null or missing data: {}."""
    assert outbound({"mpid": 1})["events"] == []
    assert outbound({"events": None})["events"] == []
    out = outbound({"events": [{"event_type": "uninstall", "data": None}]})
    assert out["events"] == [{"event_type": "uninstall", "data": {}}]


def test_system_notifications_are_empty_unless_sent() -> None:
    """[] by default; an inbound array is passed through."""
    assert outbound({"events": []})["system_notifications"] == []
    sent = [{"type": "gdpr_change", "data": {}}]
    assert outbound({"events": [], "system_notifications": sent})["system_notifications"] == sent


def test_the_inbound_batch_is_not_changed() -> None:
    """The outbound form is a new object; nested event data is copied, not mutated."""
    data = {"timestamp_unixtime_ms": "10"}
    batch = {"events": [{"event_type": "uninstall", "data": data}]}
    outbound(batch)
    assert data == {"timestamp_unixtime_ms": "10"}


def test_alias_line_drops_the_api_key_and_adds_the_envelope() -> None:
    """The documented alias line: the request minus api_key, int64s as numbers, our fields."""
    request = {
        "request_type": "alias",
        "api_key": "k",
        "data": {"source_mpid": "1", "destination_mpid": 2},
    }
    line = alias_outbound(request, received_at_ms=5, message_id="m")
    assert line == {
        "request_type": "alias",
        "data": {"source_mpid": 1, "destination_mpid": 2},
        "message_id": "m",
        "message_type": "alias",
        "schema_version": 2,
        "timestamp_unixtime_ms": 5,
    }
    assert request["data"] == {"source_mpid": "1", "destination_mpid": 2}
