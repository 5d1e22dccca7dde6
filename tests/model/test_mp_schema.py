"""The typed msgspec schema (issue 10) never accepts what the catalogue's Python walk refuses.

The schema is the fast path: a batch it accepts skips the walk. So for every batch the schema
accepts, the walk must find nothing; a batch the schema refuses goes to the walk, which words
the problem (the messages themselves are pinned in test_mp_validation.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3forward.errors import BatchValidationError, Problem
from s3forward.mparticle import Limits, parse_bulk_request, requests
from s3forward.mparticle.catalogue import (
    BATCH_FIELDS,
    DATA_FIELDS,
    ENUM_VALUES,
    EVENT_TYPES,
    INT64_MAX,
    INT64_MIN,
    validate_batch,
)
from s3forward.mparticle.requests import validate_item
from s3forward.mparticle.schema import conforms

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import datagen

EXAMPLES = int(os.environ.get("S3F_SCHEMA_EXAMPLES", "600"))
"""Examples of the two schema-against-walk properties (the fast tier's budget; a deep run:
S3F_SCHEMA_EXAMPLES=5000)."""

_TRICKY_STRINGS = [
    "123",
    "-7",
    "123\n",
    " 1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "0000000000000000000001",
    "12345678901234567890",
    "1e3",
    "",
]
_ENUM_WORDS = sorted({v for values in ENUM_VALUES.values() for v in values})

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN - 2, max_value=INT64_MAX + 2),
    st.sampled_from([0, -1, INT64_MIN, INT64_MAX, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, -0.0]),
    st.text(max_size=5),
    st.sampled_from(_TRICKY_STRINGS),
    st.sampled_from(_ENUM_WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "action", "identity_type", "identity"]), inner),
    ),
    max_leaves=6,
)


def _fields(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(names), values, max_size=6)


@st.composite
def events(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(values)
    event_type = draw(st.sampled_from([*EVENT_TYPES, "nope", 3, None]))
    event: dict[str, Any] = {} if event_type is None else {"event_type": event_type}
    fields = DATA_FIELDS.get(event_type, DATA_FIELDS["custom_event"])  # type: ignore[arg-type]
    choice = draw(st.integers(0, 10))
    if choice == 0:
        event["data"] = draw(values)
    elif choice > 1:
        event["data"] = draw(_fields([*fields, "unknown_field"]))
    return event


@st.composite
def batches(draw: st.DrawFn) -> Any:
    batch = draw(_fields([*BATCH_FIELDS, "unknown_field"]))
    if draw(st.booleans()):
        batch["events"] = draw(st.one_of(st.lists(events(), max_size=4), values))
    return batch


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches())
def test_a_batch_the_schema_accepts_passes_the_walk(batch: Any) -> None:
    if conforms(batch):
        problems: list[Any] = []
        validate_batch(batch, "batch", problems)
        assert problems == [], batch


# Values at the edge of what a typed field accepts, drawn often so that every one of them
# meets every kind of field.
_TRICKY: list[Any] = [
    *_TRICKY_STRINGS,
    *_ENUM_WORDS,
    None,
    True,
    False,
    0,
    1.0,
    -0.0,
    1.5,
    INT64_MIN,
    INT64_MAX,
    INT64_MAX + 1,
    INT64_MIN - 1,
    2**64,
    {},
    [],
    {"action": "view"},
    [{"identity_type": "email", "identity": "a@b"}],
]
_REALISTIC = [orjson.loads(orjson.dumps(b)) for b in datagen.make_batches(60, seed=5)]


@st.composite
def one_field_changed(draw: st.DrawFn) -> Any:
    """A realistic (valid) batch with one typed field, anywhere, set to a drawn value: the
    schema must refuse every value the walk refuses, even when all else is valid."""
    batch = orjson.loads(orjson.dumps(draw(st.sampled_from(_REALISTIC))))
    value = draw(st.one_of(st.sampled_from(_TRICKY), values))
    events = batch.get("events") or []
    where = draw(st.sampled_from(["batch", "event", "data", "nested"]))
    if where == "batch" or not events:
        batch[draw(st.sampled_from(sorted(BATCH_FIELDS)))] = value
    elif where == "event":
        event = draw(st.sampled_from(events))
        event[draw(st.sampled_from(["event_type", "data"]))] = value
    elif where == "data":
        event = draw(st.sampled_from(events))
        fields = sorted(DATA_FIELDS.get(event.get("event_type"), DATA_FIELDS["custom_event"]))
        data = event.setdefault("data", {})
        data[draw(st.sampled_from(fields))] = value
    else:
        target = draw(st.sampled_from(["device_info", "user_identities", "user_attributes"]))
        container = batch.setdefault(target, {})
        if type(container) is dict:
            container[draw(st.sampled_from(["ios_idfv", "android_uuid", "customerid", "x"]))] = (
                value
            )
    return batch


def _walk_only(batch: Any) -> list[Problem]:
    problems: list[Problem] = []
    with mock.patch.object(requests, "conforms", lambda _: False):
        validate_item(batch, "batch", problems)
    return problems


@settings(max_examples=EXAMPLES * 3 // 2, deadline=None)
@given(one_field_changed())
def test_one_wrong_field_in_a_valid_batch_gets_the_same_verdict_with_and_without_the_schema(
    batch: Any,
) -> None:
    problems: list[Problem] = []
    validate_item(batch, "batch", problems)
    assert problems == _walk_only(batch), batch


def test_realistic_batches_take_the_fast_path() -> None:
    for batch in datagen.make_batches(300, seed=3):
        assert conforms(orjson.loads(orjson.dumps(batch)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mpid", "9223372036854775807"),  # 19 digits: the schema defers, the walk accepts
        ("mpid", "-0000000000000000000001"),
    ],
)
def test_what_the_schema_cannot_express_is_decided_by_the_walk(field: str, value: str) -> None:
    batch = {"events": [], field: value}
    assert not conforms(batch)
    assert parse_bulk_request([batch], limits=Limits()) == [batch]


def test_a_refused_batch_still_gets_the_walks_precise_message() -> None:
    bulk = [
        {"events": []},
        {"events": [{"event_type": "custom_event", "data": {"event_id": 1.5}}]},
    ]
    with pytest.raises(BatchValidationError) as caught:
        parse_bulk_request(bulk, limits=Limits())
    (problem,) = caught.value.problems
    assert problem.where == "batch[1].events[0].data.event_id"
    assert problem.message == "expected an int64 (whole number), got 1.5 (a number)"
