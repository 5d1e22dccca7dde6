"""The outbound form: only the documented fields change, everything else passes through."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import mparticle
import orjson
from hypothesis import given
from hypothesis import strategies as st

from s3forward.mparticle import Limits, new_batch_id, parse_events_request, to_outbound

EXAMPLE = Path(__file__).parents[1] / "fixtures" / "sdk-example-batch.json"
ADDED = {"batch_id", "message_id", "message_type", "schema_version", "timestamp_unixtime_ms"}
# Issue 11: events always an array (with event_start_unixtime_ms), system_notifications [],
# int64 numeric strings written as numbers.
NORMALISED = {"events", "system_notifications", "mpid", "origin_mpid"}
CHANGED = {*ADDED, *NORMALISED, "user_identities", "unique_id"}
RECEIVED = 1_700_000_123_456


def outbound(batch: dict[str, Any], unique_id: str | None = None) -> dict[str, Any]:
    return to_outbound(
        batch, received_at_ms=RECEIVED, batch_id=77, message_id="m-1", unique_id=unique_id
    )


def events_as_sent(out: dict[str, Any]) -> list[Any]:
    """The outbound events without the event_start_unixtime_ms that outbound adds."""
    events = []
    for event in out["events"]:
        data = dict(event["data"])
        if data.get("event_start_unixtime_ms") == data.get("timestamp_unixtime_ms"):
            data.pop("event_start_unixtime_ms", None)
        events.append({**event, "data": data})
    return events


def test_documented_fields_are_added() -> None:
    """batch_id, message_id, message_type, schema_version and the receive time are set."""
    out = outbound({"events": [], "timestamp_unixtime_ms": 5})
    assert {k: out[k] for k in ADDED} == {
        "batch_id": 77,
        "message_id": "m-1",
        "message_type": "events",
        "schema_version": 2,
        "timestamp_unixtime_ms": RECEIVED,
    }
    assert "unique_id" not in out


def test_inbound_batch_id_is_kept() -> None:
    """A batch that already has a batch_id keeps it; a numeric string is written as a number."""
    assert outbound({"batch_id": "123"})["batch_id"] == 123
    assert outbound({"batch_id": None})["batch_id"] == 77


def test_unique_id_is_added_when_set() -> None:
    """The connection's Unique ID becomes a top-level unique_id."""
    assert outbound({}, unique_id="abc123")["unique_id"] == "abc123"
    assert "unique_id" not in outbound({}, unique_id="")


def test_identity_map_becomes_array_with_customer_id() -> None:
    """The inbound identity map becomes an array; customerid is read as customer_id; nulls go."""
    out = outbound({"user_identities": {"customerid": "c-1", "email": "a@b", "other": None}})
    assert out["user_identities"] == [
        {"identity_type": "customer_id", "identity": "c-1"},
        {"identity_type": "email", "identity": "a@b"},
    ]


def test_customer_id_wins_over_the_sdk_alias() -> None:
    """When both customer_id and customerid are sent, only customer_id is written."""
    out = outbound({"user_identities": {"customerid": "old", "customer_id": "new"}})
    assert out["user_identities"] == [{"identity_type": "customer_id", "identity": "new"}]


def test_identity_array_is_kept_as_is() -> None:
    """An inbound identity array (outbound style) passes through untouched."""
    identities = [{"identity_type": "email", "identity": "a@b", "timestamp_unixtime_ms": 1}]
    assert outbound({"user_identities": identities})["user_identities"] is identities


def test_outbound_does_not_mutate_the_input() -> None:
    """to_outbound returns a new dict and leaves the inbound batch as it was."""
    batch = orjson.loads(EXAMPLE.read_bytes())
    before = copy.deepcopy(batch)
    outbound(batch, unique_id="u")
    assert batch == before


def test_reference_example_outbound_line() -> None:
    """The shared SDK example becomes the documented outbound line, other fields unchanged."""
    batch = orjson.loads(EXAMPLE.read_bytes())
    out = outbound(batch, unique_id="u-1")
    assert out["user_identities"] == [
        {"identity_type": "customer_id", "identity": "cust-42"},
        {"identity_type": "email", "identity": "user@example.com"},
    ]
    assert {k: v for k, v in out.items() if k not in CHANGED} == {
        k: v for k, v in batch.items() if k not in CHANGED
    }
    assert events_as_sent(out) == batch["events"]
    assert out["system_notifications"] == []
    assert b'"mpid":1234567890123456789' in orjson.dumps(out)


def test_official_python_sdk_batch_is_accepted_and_kept() -> None:
    """A batch built with the official mparticle SDK validates and survives outbound intact."""
    batch = mparticle.Batch()
    batch.environment = "development"
    batch.mpid = 9_007_199_254_740_993  # above 2**53: must not pass through a float
    batch.source_request_id = "req-1"
    identities = mparticle.UserIdentities()
    identities.customerid = "cust-1"
    identities.email = "user@example.com"
    batch.user_identities = identities
    batch.user_attributes = {"plan": "pro", "tags": ["a", "b"], "age": 30}
    device = mparticle.DeviceInformation()
    device.ios_idfv = "1c2b3a4d-0000-4000-8000-00000000abcd"
    batch.device_info = device
    session_start = mparticle.SessionStartEvent()
    session_start.session_id = 12345
    session_start.session_uuid = "6b6e8e4e-1d8c-4bd6-9c36-0b1f9a4c2a01"
    session_start.timestamp_unixtime_ms = 1_700_000_000_000
    app_event = mparticle.AppEvent("Clicked Buy", "navigation", custom_attributes={"sku": "x"})
    app_event.timestamp_unixtime_ms = 1_700_000_000_500
    app_event.location = mparticle.GeoLocation(52.52, 13.40)
    crash = mparticle.CrashReportEvent()  # the SDK sends it as a commerce_event
    crash.message = "boom"
    batch.events = [session_start, app_event, crash]
    wire = orjson.loads(orjson.dumps(mparticle.ApiClient.sanitize_for_serialization(batch)))
    assert wire["user_identities"] == {"customerid": "cust-1", "email": "user@example.com"}

    [accepted] = parse_events_request(wire, limits=Limits())
    out = outbound(accepted)

    assert out["user_identities"] == [
        {"identity_type": "customer_id", "identity": "cust-1"},
        {"identity_type": "email", "identity": "user@example.com"},
    ]
    assert {k: v for k, v in out.items() if k not in CHANGED} == {
        k: v for k, v in wire.items() if k not in CHANGED
    }
    assert events_as_sent(out) == wire["events"]
    assert [e["event_type"] for e in out["events"]] == [
        "session_start",
        "custom_event",
        "commerce_event",
    ]
    assert b'"mpid":9007199254740993' in orjson.dumps(out)


def test_new_batch_id_is_a_positive_int63() -> None:
    """Generated batch ids are positive, fit in 63 bits, and follow the random source."""
    ids = [new_batch_id(random.Random(seed)) for seed in range(200)]
    assert all(0 < i < 2**63 for i in ids)
    assert len(set(ids)) == 200
    assert new_batch_id(random.Random(1)) == ids[1]


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
identity_maps = st.dictionaries(
    st.sampled_from(["customerid", "customer_id", "email", "other", "mobile_number"]),
    st.none() | st.text(max_size=8),
)
batches = st.dictionaries(st.text(max_size=12), json_values, max_size=8).flatmap(
    lambda extra: st.fixed_dictionaries({}, optional={"user_identities": identity_maps}).map(
        lambda ids: {**extra, **ids}
    )
)


@given(batches, st.none() | st.text(min_size=1, max_size=5))
def test_outbound_is_lossless_apart_from_documented_fields(
    batch: dict[str, Any], unique_id: str | None
) -> None:
    """Every field but the documented ones is passed through, and every identity is kept."""
    before = orjson.dumps(batch)
    out = outbound(batch, unique_id=unique_id)
    assert orjson.dumps(batch) == before
    assert {k: v for k, v in out.items() if k not in CHANGED} == {
        k: v for k, v in batch.items() if k not in CHANGED
    }
    identities = batch.get("user_identities")
    if isinstance(identities, dict):
        expected = {
            ("customer_id" if k == "customerid" else k, v)
            for k, v in identities.items()
            if v is not None
            and not (k == "customerid" and identities.get("customer_id") is not None)
        }
        assert {(i["identity_type"], i["identity"]) for i in out["user_identities"]} == expected
    assert orjson.loads(orjson.dumps(out)) == out


def test_batch_id_is_kept_when_valid_and_generated_otherwise() -> None:
    """An int64 batch_id (number or numeric string) is kept; a missing one is generated."""
    import random

    from s3forward.mparticle import batch_id_for

    rng = random.Random(1)
    assert batch_id_for({"batch_id": 42}, rng) == 42
    assert batch_id_for({"batch_id": "-7"}, rng) == -7
    generated = batch_id_for({}, rng)
    assert 1 <= generated < 2**63
    assert batch_id_for({"batch_id": 2**64}, rng) != 2**64
