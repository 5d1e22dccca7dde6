"""Connection filters: each setting of the product spec's "Filters" table, and purity."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3forward.config import ConnectionSettings
from s3forward.filters import EVENT_TYPE_SETTINGS, apply_filters, blocked_event_types
from s3forward.mparticle import EVENT_TYPES

DEFAULTS = ConnectionSettings(name="c", inputs=("in",), s3_bucket_name="mp-forwarding-x")
BERLIN = {"latitude": 52.52, "longitude": 13.4, "accuracy": 10}

GOVERNED = [
    ("send_lifecycle_events", "session_start"),
    ("send_lifecycle_events", "session_end"),
    ("send_lifecycle_events", "application_state_transition"),
    ("send_lifecycle_events", "first_run"),
    ("send_screen_views", "screen_view"),
    ("send_crash_events", "crash_report"),
    ("send_network_performance_events", "network_performance"),
    ("send_custom_events", "custom_event"),
    ("send_push_registrations_and_receipts", "push_registration"),
    ("send_push_registrations_and_receipts", "push_message"),
    ("send_push_registrations_and_receipts", "push_reaction"),
    ("send_commerce_events", "commerce_event"),
    ("send_profile_change_events", "profile"),
    ("include_user_attribute_change_events", "user_attribute_change"),
    ("include_user_identity_change_events", "user_identity_change"),
]
ALWAYS_SENT = ("opt_out", "pre_attribution", "breadcrumb", "uninstall")  # EVENT_TYPES order


def settings(**changes: Any) -> ConnectionSettings:
    return replace(DEFAULTS, **changes)


def all_on() -> ConnectionSettings:
    return settings(
        include_user_attribute_change_events=True, include_user_identity_change_events=True
    )


def event(event_type: str, **data: Any) -> dict[str, Any]:
    return {"data": {"timestamp_unixtime_ms": 1_700_000_000_000, **data}, "event_type": event_type}


def every_event_batch() -> dict[str, Any]:
    return {"events": [event(t) for t in EVENT_TYPES], "mpid": 1}


def types_of(batch: dict[str, Any]) -> list[str]:
    return [e["event_type"] for e in batch["events"]]


def test_the_table_covers_exactly_the_governed_types() -> None:
    """Every event type but the four always-sent ones is governed by a setting."""
    assert set(EVENT_TYPE_SETTINGS.items()) == {(t, s) for s, t in GOVERNED}
    assert set(EVENT_TYPES) - set(EVENT_TYPE_SETTINGS) == set(ALWAYS_SENT)


@pytest.mark.parametrize(("setting", "event_type"), GOVERNED)
def test_event_type_setting_drops_only_its_types(setting: str, event_type: str) -> None:
    """Turning a send/include setting off drops its event types and keeps every other type."""
    on = apply_filters(every_event_batch(), all_on())
    off = apply_filters(every_event_batch(), replace(all_on(), **{setting: False}))
    assert event_type in types_of(on)
    dropped = {t for s, t in GOVERNED if s == setting}
    assert types_of(off) == [t for t in EVENT_TYPES if t not in dropped]


def test_change_events_are_off_by_default() -> None:
    """User attribute/identity change events are dropped with the seed's defaults."""
    kept = types_of(apply_filters(every_event_batch(), DEFAULTS))
    assert "user_attribute_change" not in kept
    assert "user_identity_change" not in kept
    assert len(kept) == len(EVENT_TYPES) - 2


def test_ungoverned_types_always_pass() -> None:
    """opt_out, breadcrumb, uninstall and pre_attribution pass with every setting off."""
    off = settings(**{s: False for s, _ in GOVERNED})
    assert blocked_event_types(off) == frozenset(EVENT_TYPE_SETTINGS)
    assert types_of(apply_filters(every_event_batch(), off)) == list(ALWAYS_SENT)


def test_batch_with_all_events_filtered_is_still_returned() -> None:
    """When every event is dropped the batch remains, with an empty events array."""
    batch = {"events": [event("custom_event")], "mpid": 7}
    out = apply_filters(batch, settings(send_custom_events=False))
    assert out == {"events": [], "mpid": 7}


def test_location_information_off_removes_event_locations() -> None:
    """include_location_information off removes data.location from every event, nothing else."""
    batch = {"events": [event("custom_event", location=BERLIN, event_name="a"), event("first_run")]}
    out = apply_filters(batch, settings(include_location_information=False))
    assert [e["data"] for e in out["events"]] == [
        {"timestamp_unixtime_ms": 1_700_000_000_000, "event_name": "a"},
        {"timestamp_unixtime_ms": 1_700_000_000_000},
    ]
    kept = apply_filters(batch, settings(include_location_information=True))
    assert kept["events"][0]["data"]["location"] == BERLIN


def test_event_batch_location_off_removes_context_location() -> None:
    """include_event_batch_location off (default) removes context.location, keeping the rest."""
    batch = {"context": {"location": BERLIN, "data_plan": {"plan_id": "p"}}, "events": []}
    assert apply_filters(batch, DEFAULTS)["context"] == {"data_plan": {"plan_id": "p"}}


def test_event_batch_location_off_drops_an_emptied_context() -> None:
    """A context that held only a location is removed entirely."""
    out = apply_filters({"context": {"location": BERLIN}, "events": []}, DEFAULTS)
    assert "context" not in out


def test_event_batch_location_on_fills_context_from_first_valid_event_location() -> None:
    """include_event_batch_location on sets context.location from the first valid location."""
    batch = {
        "context": {"data_plan": {"plan_id": "p"}},
        "events": [
            event("first_run"),
            event("custom_event", location={"latitude": "52", "longitude": 13}),
            event("custom_event", location={"latitude": 95.0, "longitude": 13}),
            event("custom_event", location=BERLIN),
            event("custom_event", location={"latitude": 1.0, "longitude": 2.0}),
        ],
    }
    out = apply_filters(batch, settings(include_event_batch_location=True))
    assert out["context"] == {"data_plan": {"plan_id": "p"}, "location": BERLIN}
    assert "location" not in batch["context"]


def test_event_batch_location_on_keeps_an_existing_context_location() -> None:
    """An inbound context.location is not replaced."""
    own = {"latitude": 1.0, "longitude": 1.0}
    batch = {"context": {"location": own}, "events": [event("custom_event", location=BERLIN)]}
    out = apply_filters(batch, settings(include_event_batch_location=True))
    assert out["context"]["location"] == own


def test_event_batch_location_on_without_locations_adds_nothing() -> None:
    """With no valid event location, no context is invented."""
    out = apply_filters(
        {"events": [event("first_run")]}, settings(include_event_batch_location=True)
    )
    assert "context" not in out


def test_user_identities_off_removes_identities() -> None:
    """include_user_identities off removes user_identities and partner_identities."""
    batch = {"user_identities": {"email": "a@b"}, "partner_identities": {"x_id": "1"}, "mpid": 1}
    assert apply_filters(batch, settings(include_user_identities=False)) == {"mpid": 1}
    assert apply_filters(batch, settings(include_user_identities=True)) == batch


def test_consent_state_is_removed_unless_included() -> None:
    """include_consent_state off (default) removes consent_state; on keeps it."""
    consent = {"ccpa": {"data_sale_opt_out": {"consented": True}}}
    batch = {"consent_state": consent, "mpid": 1}
    assert apply_filters(batch, DEFAULTS) == {"mpid": 1}
    assert apply_filters(batch, settings(include_consent_state=True))["consent_state"] == consent


def test_metadata_off_removes_metadata_but_keeps_the_package() -> None:
    """include_metadata off removes application_info, device_info, source_info but the package."""
    batch = {
        "application_info": {"application_name": "Demo", "package": "com.example.demo"},
        "device_info": {"ios_idfv": "v"},
        "source_info": {"channel": "native"},
        "mpid": 1,
    }
    out = apply_filters(batch, settings(include_metadata=False))
    assert out == {"application_info": {"package": "com.example.demo"}, "mpid": 1}
    assert apply_filters(batch, settings(include_metadata=True)) == batch


def test_metadata_off_without_package_removes_application_info() -> None:
    """Without a package name, application_info is removed entirely."""
    batch = {"application_info": {"application_name": "Demo"}}
    assert apply_filters(batch, settings(include_metadata=False)) == {}


def test_defaults_keep_a_plain_batch_equal() -> None:
    """With the seed's defaults a batch without consent, context or change events is unchanged."""
    batch = {
        "events": [event("custom_event", event_name="x", location=BERLIN)],
        "user_identities": {"email": "a@b"},
        "device_info": {"ios_idfv": "v"},
        "unknown_field": [1, 2],
    }
    assert apply_filters(batch, DEFAULTS) == batch


location_values = st.none() | st.fixed_dictionaries(
    {"latitude": st.floats(-100, 100), "longitude": st.floats(-200, 200)}
)
events = st.builds(
    lambda t, loc: {"event_type": t, "data": {} if loc is None else {"location": loc}},
    st.sampled_from(EVENT_TYPES),
    location_values,
)
filter_batches = st.fixed_dictionaries(
    {"events": st.lists(events, max_size=6)},
    optional={
        "context": st.fixed_dictionaries({}, optional={"location": location_values}),
        "user_identities": st.just({"email": "a@b"}),
        "partner_identities": st.just({"p": "1"}),
        "consent_state": st.just({"gdpr": {}}),
        "application_info": st.fixed_dictionaries({}, optional={"package": st.just("pkg")}),
        "device_info": st.just({"ios_idfv": "v"}),
        "source_info": st.just({"channel": "native"}),
        "mpid": st.integers(-(2**63), 2**63 - 1),
    },
)
setting_names = sorted(
    {s for s, _ in GOVERNED}
    | {
        "include_location_information",
        "include_event_batch_location",
        "include_user_identities",
        "include_consent_state",
        "include_metadata",
    }
)
connection_settings = st.fixed_dictionaries({n: st.booleans() for n in setting_names}).map(
    lambda values: settings(**values)
)


@given(filter_batches, connection_settings)
def test_filters_never_mutate_the_input(batch: dict[str, Any], conn: ConnectionSettings) -> None:
    """apply_filters leaves the inbound batch (and everything inside it) exactly as it was."""
    before = copy.deepcopy(batch)
    apply_filters(batch, conn)
    assert batch == before


@given(filter_batches, connection_settings)
def test_filters_only_remove_what_settings_ask(
    batch: dict[str, Any], conn: ConnectionSettings
) -> None:
    """Kept events are the unblocked ones in order, and untouched fields pass through."""
    out = apply_filters(batch, conn)
    blocked = blocked_event_types(conn)
    assert types_of(out) == [t for t in types_of(batch) if t not in blocked]
    assert out.get("mpid") == batch.get("mpid")
    if not conn.include_location_information:
        assert all("location" not in e["data"] for e in out["events"])
    if not conn.include_event_batch_location:
        assert "location" not in out.get("context", {})
    assert orjson.loads(orjson.dumps(out)) == out
