"""The Events API batch as a typed msgspec schema: the catalogue's type checks, run in C.

The schema is generated from the catalogue's tables (``BATCH_FIELDS``, ``DATA_FIELDS`` and
the checks they name), so the two cannot drift apart: every check maps to a msgspec type, and
a check without a mapping fails at import. ``conforms`` only answers yes or no; the catalogue's
Python walk stays the authority and writes the precise messages (batch index, JSON path, what
was found, what was expected). The schema is never more lenient than the walk: anything it
cannot express exactly (numeric strings of 19 digits, for one) it refuses, and the walk then
decides. ``tests/model/test_mp_schema.py`` pins that with generated batches.

Nothing is decoded into the schema's types for keeps: batches stay the plain dicts orjson
returned (lossless: unknown fields pass through, int64 stay exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from s3forward.mparticle.catalogue import (
    BATCH_FIELDS,
    DATA_FIELDS,
    ENUM_VALUES,
    INT64_MAX,
    INT64_MIN,
    OBJECT_FIELDS,
    Check,
    check_array,
    check_bool,
    check_int64,
    check_object,
    check_object_or_null,
    check_string,
    check_user_attributes,
    check_user_identities,
)

# A numeric string of at most 18 digits always fits int64; longer ones go to the walk.
Int64 = (
    Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
    | Annotated[str, msgspec.Meta(pattern=r"\A-?[0-9]{1,18}\Z")]
)


class _Identity(msgspec.Struct):
    identity_type: str
    identity: str | None = None


_SIMPLE: dict[Check, Any] = {
    check_int64: Int64,
    check_string: str,
    check_bool: bool,
    check_object: dict[str, Any],
    check_object_or_null: dict[str, Any],
    check_array: list[Any],
    check_user_identities: dict[str, str | None] | list[_Identity],
    check_user_attributes: dict[str, str | int | float | bool | list[Any] | None],
}


def _type_of(check: Check, name: str) -> Any:
    if check in _SIMPLE:
        return _SIMPLE[check]
    if check in ENUM_VALUES:
        return Literal[ENUM_VALUES[check]]
    if check in OBJECT_FIELDS:
        return _struct(name, OBJECT_FIELDS[check])
    raise TypeError(f"no msgspec type for the check of {name!r}: add it to schema._SIMPLE")


def _struct(name: str, fields: Mapping[str, Check], **options: Any) -> type[msgspec.Struct]:
    """A Struct whose every field is optional and may be null, as the walk treats them."""
    return msgspec.defstruct(
        name,
        [(key, _type_of(check, key) | None, None) for key, check in fields.items()],
        **options,
    )


_EVENTS = tuple(
    msgspec.defstruct(
        f"Event_{event_type}",
        [("data", _struct(f"Data_{event_type}", fields) | None, None)],
        tag_field="event_type",
        tag=event_type,
    )
    for event_type, fields in DATA_FIELDS.items()
)
_EventUnion: Any = _EVENTS[0]
for _event in _EVENTS[1:]:
    _EventUnion = _EventUnion | _event

Batch = msgspec.defstruct(
    "Batch",
    [
        *((key, _type_of(check, key) | None, None) for key, check in BATCH_FIELDS.items()),
        ("events", list[_EventUnion] | None, None),
    ],
)


def conforms(batch: Any) -> bool:
    """True if every typed field of ``batch`` has its documented type (checked in C).

    False means "not certainly valid": run the catalogue's walk for the verdict and messages.
    """
    try:
        msgspec.convert(batch, Batch)
    except msgspec.ValidationError:
        return False
    return True


__all__ = ["Batch", "Int64", "conforms"]
