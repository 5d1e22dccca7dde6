"""Batch validation: every event type accepted, and precise messages for what is rejected."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from s3forward.errors import BatchValidationError, Problem
from s3forward.mparticle import EVENT_TYPES, Limits, parse_bulk_request, parse_events_request
from s3forward.mparticle.catalogue import validate_batch

LIMITS = Limits()
TS = 1_700_000_000_000
SESSION = {"session_id": 1111, "session_uuid": "6b6e8e4e-1d8c-4bd6-9c36-0b1f9a4c2a01"}

# One realistic event of each type (fields as SDKs and the docs' sample send them).
EXAMPLES: dict[str, dict[str, Any]] = {
    "session_start": {**SESSION, "timestamp_unixtime_ms": TS, "source_message_id": "s-1"},
    "session_end": {**SESSION, "timestamp_unixtime_ms": TS + 60_000, "session_duration_ms": 60000},
    "screen_view": {
        **SESSION,
        "timestamp_unixtime_ms": TS,
        "screen_name": "Checkout",
        "activity_type": "activity_started",
        "custom_flags": {"flag": "1"},
    },
    "custom_event": {
        "timestamp_unixtime_ms": TS,
        "event_name": "Play",
        "custom_event_type": "media",
        "custom_attributes": {"content_id": "abc", "duration": 3.5},
    },
    "crash_report": {
        "timestamp_unixtime_ms": TS,
        "class_name": "NullPointerException",
        "message": "boom",
        "stack_trace": "at Foo.bar()",
        "exception_handled": False,
        "breadcrumbs": [{"label": "tap", "session_number": 3}],
    },
    "opt_out": {"timestamp_unixtime_ms": TS, "is_opted_out": True},
    "first_run": {"timestamp_unixtime_ms": TS},
    "pre_attribution": {"timestamp_unixtime_ms": TS},
    "push_registration": {"timestamp_unixtime_ms": TS, "register": True, "registration_token": "t"},
    "application_state_transition": {
        "timestamp_unixtime_ms": TS,
        "application_transition_type": "application_initialized",
        "is_first_run": True,
        "is_upgrade": False,
    },
    "push_message": {
        "timestamp_unixtime_ms": TS,
        "push_message_token": "tok",
        "push_message_type": "received",
        "push_notification_payload": '{"aps":{}}',
        "network": "apn",
        "application_state": "background",
    },
    "network_performance": {
        "timestamp_unixtime_ms": TS,
        "http_verb": "GET",
        "url": "https://example.com/",
        "time_elapsed": 120,
        "bytes_in": 100,
        "bytes_out": 10,
        "response_code": 200,
    },
    "breadcrumb": {"timestamp_unixtime_ms": TS, "label": "tapped buy", "session_number": 3},
    "profile": {
        "timestamp_unixtime_ms": TS,
        "previous_mpid": "0",
        "current_mpid": -4_000_000_000_000_000_000,
        "profile_event_type": "login",
    },
    "push_reaction": {"timestamp_unixtime_ms": TS},
    "commerce_event": {
        "timestamp_unixtime_ms": TS,
        "currency_code": "USD",
        "product_action": {
            "action": "remove_from_wish_list",
            "products": [{"id": "sku-1", "price": 9.99, "quantity": 2}],
        },
    },
    "user_attribute_change": {
        "timestamp_unixtime_ms": TS,
        "user_attribute_name": "plan",
        "new": ["a", "b"],
        "old": None,
        "deleted": False,
        "is_new_attribute": True,
    },
    "user_identity_change": {
        "timestamp_unixtime_ms": TS,
        "new": {
            "identity_type": "email",
            "identity": "a@example.com",
            "timestamp_unixtime_ms": TS,
            "created_this_batch": True,
        },
        "old": None,
    },
    "uninstall": {"timestamp_unixtime_ms": TS},
}


def batch_of(*events: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    return {"events": list(events), "environment": "production", "mpid": 42, **envelope}


def event(event_type: str, **data: Any) -> dict[str, Any]:
    return {"data": data, "event_type": event_type}


def problems_of(batch: Any) -> list[Problem]:
    problems: list[Problem] = []
    validate_batch(batch, "batch", problems)
    return problems


def single_problem(batch: Any) -> str:
    problems = problems_of(batch)
    assert len(problems) == 1, problems
    return str(problems[0])


def test_examples_cover_every_event_type_in_message_type_order() -> None:
    """The catalogue lists the 19 event types in the Redshift MessageTypeId order."""
    assert len(EVENT_TYPES) == 19
    assert EVENT_TYPES[0] == "session_start"
    assert EVENT_TYPES[15] == "commerce_event"
    assert EVENT_TYPES[-1] == "uninstall"
    assert set(EXAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_event_type_is_accepted_with_a_realistic_example(event_type: str) -> None:
    """A realistic event of each of the 19 types validates and is returned unchanged."""
    batch = batch_of({"data": EXAMPLES[event_type], "event_type": event_type})
    snapshot = orjson.dumps(batch)
    assert parse_events_request(batch, limits=LIMITS) == [batch]
    assert orjson.dumps(batch) == snapshot


def test_all_event_types_in_one_batch_are_accepted() -> None:
    """A batch holding one event of every type validates."""
    batch = batch_of(*({"data": d, "event_type": t} for t, d in EXAMPLES.items()))
    assert problems_of(batch) == []


def test_fields_may_be_omitted_or_null() -> None:
    """Requiredness is lenient: empty data, missing data and null fields are all accepted."""
    batch = batch_of(
        {"event_type": "custom_event"},
        event("screen_view"),
        event("commerce_event", message="boom"),  # the Python SDK's crash report
        event("custom_event", event_name=None, timestamp_unixtime_ms=None),
        mpid=None,
        device_info=None,
        events_extra=None,
    )
    assert problems_of(batch) == []
    assert problems_of({}) == []


def test_unknown_fields_are_accepted_and_kept() -> None:
    """Fields the catalogue does not know pass validation and stay in the returned batch."""
    batch = batch_of(
        event("custom_event", event_name="x", custom_event_type="other", brand_new_field=[1]),
        future_top_level={"a": 1},
    )
    [returned] = parse_events_request(batch, limits=LIMITS)
    assert returned["future_top_level"] == {"a": 1}
    assert returned["events"][0]["data"]["brand_new_field"] == [1]


def test_int64_string_in_timestamp_is_rejected_with_what_was_found() -> None:
    """A non-numeric timestamp names its path and says what was found and expected."""
    batch = batch_of(event("session_start", timestamp_unixtime_ms="abc"))
    assert single_problem(batch) == (
        'batch.events[0].data.timestamp_unixtime_ms: expected an int64 (whole number), got "abc" '
        "(a string)"
    )


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (1.5, "1.5 (a number)"),
        (True, "true (a boolean)"),
        (2**63, "9223372036854775808 (a number outside the int64 range)"),
        (-(2**63) - 1, "-9223372036854775809 (a number outside the int64 range)"),
        ("9223372036854775808", '"9223372036854775808" (a string outside the int64 range)'),
        ("1e3", '"1e3" (a string)'),
        ({"a": 1}, "an object"),
        ([1], "an array"),
    ],
)
def test_int64_fields_reject_non_int64_values(value: Any, got: str) -> None:
    """int64 fields refuse floats, booleans, out-of-range numbers and non-numeric strings."""
    batch = batch_of(event("custom_event", event_id=value))
    assert single_problem(batch) == (
        f"batch.events[0].data.event_id: expected an int64 (whole number), got {got}"
    )


@pytest.mark.parametrize(
    "value", [0, 2**63 - 1, -(2**63), "9223372036854775807", "-9223372036854775808", "007"]
)
def test_int64_fields_accept_the_full_range_as_numbers_or_strings(value: Any) -> None:
    """int64 bounds are inclusive and numeric strings are accepted."""
    assert problems_of(batch_of(event("session_start", session_id=value), mpid=value)) == []


def test_unknown_event_type_lists_the_known_ones() -> None:
    """An unknown event_type is named and the message lists the accepted values."""
    message = single_problem(batch_of(event("media_event")))
    assert message.startswith(
        'batch.events[0].event_type: "media_event" is not a known event_type; expected one of '
        "session_start, session_end, screen_view,"
    )
    assert message.endswith("user_identity_change, uninstall")


def test_missing_event_type_is_required() -> None:
    """An event without event_type is reported as missing that field."""
    message = single_problem(batch_of({"data": {}}))
    assert message.startswith("batch.events[0].event_type: is required; expected one of")


def test_non_string_event_type_says_what_it_got() -> None:
    """An event_type that is not a string is reported with its type."""
    message = single_problem(batch_of({"data": {}, "event_type": 4}))
    assert message.startswith("batch.events[0].event_type: expected a string, one of")
    assert message.endswith("got 4 (a number)")


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ([], "batch: expected an object (one batch), got an array"),
        (batch_of(events={}), "batch.events: expected an array, got an object"),
        (
            {"events": ["x"]},
            'batch.events[0]: expected an object with event_type and data, got "x" (a string)',
        ),
        (
            {"events": [{"event_type": "first_run", "data": [1]}]},
            "batch.events[0].data: expected an object, got an array",
        ),
        (
            batch_of(environment="staging"),
            'batch.environment: expected one of "production", "development", "unknown", '
            'got "staging" (a string)',
        ),
        (
            batch_of(mpid="abc"),
            'batch.mpid: expected an int64 (whole number), got "abc" (a string)',
        ),
        (
            batch_of(batch_id=1.0),
            "batch.batch_id: expected an int64 (whole number), got 1.0 (a number)",
        ),
        (
            batch_of(source_request_id=5),
            "batch.source_request_id: expected a string, got 5 (a number)",
        ),
        (batch_of(mp_deviceid=["x"]), "batch.mp_deviceid: expected a string, got an array"),
        (
            batch_of(user_identities={"email": 5}),
            "batch.user_identities.email: expected a string or null, got 5 (a number)",
        ),
        (
            batch_of(user_identities=[{"identity": "a"}]),
            "batch.user_identities[0].identity_type: expected a string, got null",
        ),
        (
            batch_of(user_identities="a"),
            "batch.user_identities: expected an object (identity type -> identity) or an array "
            'of identities, got "a" (a string)',
        ),
        (
            batch_of(user_attributes={"a": {"b": 1}}),
            "batch.user_attributes.a: expected a string, number, boolean, null or array, "
            "got an object",
        ),
        (
            batch_of(device_info="ios"),
            'batch.device_info: expected an object, got "ios" (a string)',
        ),
        (
            batch_of(device_info={"ios_idfv": 7}),
            "batch.device_info.ios_idfv: expected a string, got 7 (a number)",
        ),
        (batch_of(application_info=[]), "batch.application_info: expected an object, got an array"),
        (batch_of(consent_state=1), "batch.consent_state: expected an object, got 1 (a number)"),
        (batch_of(source_info=True), "batch.source_info: expected an object, got true (a boolean)"),
        (batch_of(context="x"), 'batch.context: expected an object, got "x" (a string)'),
        (
            batch_of(integration_attributes=[]),
            "batch.integration_attributes: expected an object, got an array",
        ),
    ],
)
def test_envelope_problems_are_precise(batch: Any, expected: str) -> None:
    """Each envelope problem names the field and says what was found and expected."""
    assert single_problem(batch) == expected


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        ("custom_event", {"event_name": 1}, "data.event_name: expected a string, got 1 (a number)"),
        (
            "custom_event",
            {"custom_event_type": "Navigation"},
            'data.custom_event_type: expected one of "attribution", "location", "media", '
            '"navigation", "search", "social", "transaction", "user_content", '
            '"user_preference", "other", "unknown", got "Navigation" (a string)',
        ),
        (
            "screen_view",
            {"screen_name": None, "session_uuid": 5},
            "data.session_uuid: expected a string, got 5 (a number)",
        ),
        ("screen_view", {"screen_name": {}}, "data.screen_name: expected a string, got an object"),
        (
            "opt_out",
            {"is_opted_out": "true"},
            'data.is_opted_out: expected a boolean (true or false), got "true" (a string)',
        ),
        (
            "push_registration",
            {"register": 1},
            "data.register: expected a boolean (true or false), got 1 (a number)",
        ),
        (
            "application_state_transition",
            {"application_transition_type": "application_start"},
            'data.application_transition_type: expected one of "application_initialized", '
            '"application_exit", "application_background", "application_foreground", '
            'got "application_start" (a string)',
        ),
        (
            "profile",
            {"profile_event_type": "signin"},
            'data.profile_event_type: expected one of "signup", "login", "logout", "update", '
            '"delete", got "signin" (a string)',
        ),
        (
            "commerce_event",
            {"product_action": {"action": "buy"}},
            'data.product_action.action: expected one of "add_to_cart", "remove_from_cart", '
            '"checkout", "checkout_option", "click", "view_detail", "purchase", "refund", '
            '"add_to_wishlist", "remove_from_wish_list", got "buy" (a string)',
        ),
        (
            "commerce_event",
            {"product_action": "purchase"},
            'data.product_action: expected an object, got "purchase" (a string)',
        ),
        (
            "session_end",
            {"session_duration_ms": "1m"},
            'data.session_duration_ms: expected an int64 (whole number), got "1m" (a string)',
        ),
        (
            "user_attribute_change",
            {"user_attribute_name": ["a"]},
            "data.user_attribute_name: expected a string, got an array",
        ),
        (
            "user_identity_change",
            {"new": "a@example.com", "old": None},
            'data.new: expected an object or null, got "a@example.com" (a string)',
        ),
        (
            "first_run",
            {"custom_attributes": []},
            "data.custom_attributes: expected an object, got an array",
        ),
        (
            "first_run",
            {"location": "here"},
            'data.location: expected an object, got "here" (a string)',
        ),
        (
            "first_run",
            {"source_message_id": 12},
            "data.source_message_id: expected a string, got 12 (a number)",
        ),
    ],
)
def test_event_data_problems_are_precise(
    event_type: str, data: dict[str, Any], expected: str
) -> None:
    """Each event-data problem names the field and says what was found and expected."""
    batch = batch_of({"data": data, "event_type": event_type})
    assert single_problem(batch) == f"batch.events[0].{expected}"


def test_type_specific_fields_are_only_checked_for_their_type() -> None:
    """A field typed for one event type is free-form on another (e.g. ``register`` on a custom)."""
    assert problems_of(batch_of(event("custom_event", register="yes", screen_name=5))) == []


def test_long_strings_are_shortened_in_messages() -> None:
    """A long bad value is cut in the message, which still says how long it was."""
    message = single_problem(batch_of(mpid="x" * 500))
    assert message == (
        'batch.mpid: expected an int64 (whole number), got "' + "x" * 40 + '…" '
        "(a string of 500 characters)"
    )


def test_every_problem_of_a_batch_is_listed() -> None:
    """Validation reports all problems of a batch, not just the first."""
    batch = batch_of(
        event("nope"),
        event("session_start", session_id="x", session_uuid=1),
        environment="prod",
    )
    assert [p.where for p in problems_of(batch)] == [
        "batch.environment",
        "batch.events[0].event_type",
        "batch.events[1].data.session_id",
        "batch.events[1].data.session_uuid",
    ]


def test_bulk_request_is_all_or_nothing_with_every_problem() -> None:
    """One bad batch rejects the bulk request, and problems of every batch are listed by index."""
    good = batch_of(event("first_run"))
    bulk = [good, batch_of(event("nope")), good, batch_of(mpid="x", environment="x")]
    with pytest.raises(BatchValidationError) as caught:
        parse_bulk_request(bulk, limits=LIMITS)
    assert [p.where for p in caught.value.problems] == [
        "batch[1].events[0].event_type",
        "batch[3].environment",
        "batch[3].mpid",
    ]
    assert "batch[3].mpid: expected an int64" in str(caught.value)


def test_events_request_rejects_a_non_object() -> None:
    """POST /v2/events needs one batch object."""
    with pytest.raises(BatchValidationError) as caught:
        parse_events_request([{}], limits=LIMITS)
    assert str(caught.value) == "batch: expected an object (one batch), got an array"
