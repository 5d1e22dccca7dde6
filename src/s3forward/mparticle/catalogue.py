"""The mParticle Events API v2 batch format: event types and the type checks applied on ingest.

Validation is deliberately lenient about *requiredness* and strict about *types*: SDKs omit
fields freely (the official Python SDK even sends crash reports as ``commerce_event`` carrying only
``{"message": ...}``), and ``null`` is treated as "absent" because mParticle's own sample batch is
full of nulls. A field that is present and not null must have the documented type, because
routing (device, session, event time) and filtering read those fields. Unknown fields are never
checked and never removed: the data stays lossless.

The checks are table driven and run in one pass over each object's keys, so a typical batch
validates in tens of microseconds. A check returns ``None`` when the value is fine (the common,
allocation-free case) or a list of ``(path suffix, message)`` findings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from s3forward.errors import Problem

# The 19 event types, in the order of the Redshift integration's MessageTypeId (1-19).
EVENT_TYPES: tuple[str, ...] = (
    "session_start",
    "session_end",
    "screen_view",
    "custom_event",
    "crash_report",
    "opt_out",
    "first_run",
    "pre_attribution",
    "push_registration",
    "application_state_transition",
    "push_message",
    "network_performance",
    "breadcrumb",
    "profile",
    "push_reaction",
    "commerce_event",
    "user_attribute_change",
    "user_identity_change",
    "uninstall",
)

ENVIRONMENTS: tuple[str, ...] = ("production", "development", "unknown")

# D-JSON's list plus "attribution" and "unknown" (both accepted by the Python SDK).
CUSTOM_EVENT_TYPES: tuple[str, ...] = (
    "attribution",
    "location",
    "media",
    "navigation",
    "search",
    "social",
    "transaction",
    "user_content",
    "user_preference",
    "other",
    "unknown",
)
APPLICATION_TRANSITION_TYPES: tuple[str, ...] = (
    "application_initialized",
    "application_exit",
    "application_background",
    "application_foreground",
)
PROFILE_EVENT_TYPES: tuple[str, ...] = ("signup", "login", "logout", "update", "delete")
PRODUCT_ACTIONS: tuple[str, ...] = (
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "checkout_option",
    "click",
    "view_detail",
    "purchase",
    "refund",
    "add_to_wishlist",
    "remove_from_wish_list",
)
PROMOTION_ACTIONS: tuple[str, ...] = ("view", "click")

# Device identifiers in device_info, in the order device_key() prefers them; typed as strings
# because routing reads them.
DEVICE_ID_FIELDS: tuple[str, ...] = (
    "ios_idfv",
    "android_uuid",
    "ios_advertising_id",
    "android_advertising_id",
    "fire_advertising_id",
    "roku_advertising_id",
    "microsoft_advertising_id",
    "amp_id",
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Finding = list[tuple[str, str]]
Check = Callable[[Any], Finding | None]

_INT_STRING = re.compile(r"-?[0-9]+")
_SHOWN_CHARS = 40
_INT64 = "an int64 (whole number)"
_ATTRIBUTE_TYPES = (str, int, float, list)


def describe(value: Any, qualifier: str = "") -> str:
    """A short, JSON-flavoured description of a received value for error messages.

    ``qualifier`` is appended inside the parentheses, e.g. " outside the int64 range".
    """
    if value is None:
        return "null"
    if value is True or value is False:
        return f"{'true' if value else 'false'} (a boolean{qualifier})"
    if isinstance(value, str):
        length = f" of {len(value)} characters" if len(value) > _SHOWN_CHARS else ""
        return f"{quote(value)} (a string{length}{qualifier})"
    if isinstance(value, int | float):
        return f"{value!r} (a number{qualifier})"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def quote(text: str) -> str:
    """``text`` as a JSON string, cut to a readable length."""
    if len(text) > _SHOWN_CHARS:
        return orjson.dumps(text[:_SHOWN_CHARS]).decode()[:-1] + '…"'
    return orjson.dumps(text).decode()


def _fail(expected: str, value: Any, suffix: str = "", qualifier: str = "") -> Finding:
    return [(suffix, f"expected {expected}, got {describe(value, qualifier)}")]


def as_int64(value: Any) -> int | None:
    """The int64 a field holds (an int, or a string of an optional '-' and digits), else None."""
    if type(value) is int:
        return value if INT64_MIN <= value <= INT64_MAX else None
    if type(value) is str and _INT_STRING.fullmatch(value):
        if len(value.lstrip("-").lstrip("0")) > 19:
            return None  # beyond int64; also keeps int() away from huge digit strings
        number = int(value)
        return number if INT64_MIN <= number <= INT64_MAX else None
    return None


def check_int64(value: Any) -> Finding | None:
    """Whole numbers in the signed 64-bit range, as JSON numbers or numeric strings."""
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return None  # the common case, inlined: this runs for most fields of every event
    if as_int64(value) is not None:
        return None
    if type(value) is int or (type(value) is str and _INT_STRING.fullmatch(value)):
        return _fail(_INT64, value, qualifier=" outside the int64 range")
    return _fail(_INT64, value)


def check_string(value: Any) -> Finding | None:
    return None if type(value) is str else _fail("a string", value)


def check_bool(value: Any) -> Finding | None:
    return None if value is True or value is False else _fail("a boolean (true or false)", value)


def check_object(value: Any) -> Finding | None:
    return None if type(value) is dict else _fail("an object", value)


def check_array(value: Any) -> Finding | None:
    return None if type(value) is list else _fail("an array", value)


def check_object_or_null(value: Any) -> Finding | None:
    return None if value is None or type(value) is dict else _fail("an object or null", value)


# What the composite checks below were built from, for the typed schema that mirrors these
# tables in C (``mparticle/schema.py``, issue 10).
ENUM_VALUES: dict[Check, tuple[str, ...]] = {}
OBJECT_FIELDS: dict[Check, Mapping[str, Check]] = {}


def enum(values: tuple[str, ...]) -> Check:
    """A check that the value is one of ``values`` (exact, case-sensitive)."""
    allowed = frozenset(values)
    listed = ", ".join(f'"{v}"' for v in values)

    def check(value: Any) -> Finding | None:
        if type(value) is str and value in allowed:
            return None
        return _fail(f"one of {listed}", value)

    ENUM_VALUES[check] = values
    return check


def object_with(fields: Mapping[str, Check]) -> Check:
    """A check that the value is an object whose listed fields (when not null) pass their checks."""

    def check(value: Any) -> Finding | None:
        if type(value) is not dict:
            return _fail("an object", value)
        return check_fields(value, fields)

    OBJECT_FIELDS[check] = fields
    return check


def check_fields(obj: dict[str, Any], fields: Mapping[str, Check]) -> Finding | None:
    """Run the checks of ``fields`` over the keys ``obj`` has; null counts as absent."""
    findings: Finding | None = None
    for key, value in obj.items():
        check = fields.get(key)
        if check is None or value is None:
            continue
        found = check(value)
        if found:
            findings = findings or []
            findings.extend((f".{key}{suffix}", message) for suffix, message in found)
    return findings


def check_user_identities(value: Any) -> Finding | None:
    """Inbound map ``{type: identity|null}`` or outbound-style array of identity objects."""
    if type(value) is dict:
        findings: Finding = []
        for key, identity in value.items():
            if identity is not None and type(identity) is not str:
                findings += _fail("a string or null", identity, f".{key}")
        # Issue 11: the Python/Ruby SDKs' "customerid" means "customer_id"; two different
        # customer ids in one batch cannot both be kept, so the batch is refused.
        sdk_id, customer_id = value.get("customerid"), value.get("customer_id")
        if sdk_id is not None and customer_id is not None and sdk_id != customer_id:
            findings.append(
                (
                    ".customerid",
                    f"is {describe(sdk_id)} but customer_id is {describe(customer_id)}: "
                    "customerid (the Python and Ruby SDKs' spelling) means customer_id, so a "
                    "batch may hold only one customer id; send one of the two",
                )
            )
        return findings or None
    if type(value) is list:
        findings = []
        for index, item in enumerate(value):
            where = f"[{index}]"
            if type(item) is not dict:
                findings += _fail("an object with identity_type and identity", item, where)
                continue
            if type(item.get("identity_type")) is not str:
                findings += _fail("a string", item.get("identity_type"), f"{where}.identity_type")
            identity = item.get("identity")
            if identity is not None and type(identity) is not str:
                findings += _fail("a string or null", identity, f"{where}.identity")
        return findings or None
    return _fail("an object (identity type -> identity) or an array of identities", value)


def check_user_attributes(value: Any) -> Finding | None:
    """A map of attribute name -> string, number, boolean, null or array."""
    if type(value) is not dict:
        return _fail("an object", value)
    findings: Finding = []
    for key, attribute in value.items():
        if attribute is None or isinstance(attribute, _ATTRIBUTE_TYPES):
            continue  # bool is an int subclass, so booleans pass here too
        findings += _fail("a string, number, boolean, null or array", attribute, f".{key}")
    return findings or None


BATCH_FIELDS: dict[str, Check] = {
    "source_request_id": check_string,
    "environment": enum(ENVIRONMENTS),
    "mpid": check_int64,
    "mp_deviceid": check_string,
    "batch_id": check_int64,
    "timestamp_unixtime_ms": check_int64,
    "origin_mpid": check_int64,
    "ip": check_string,
    "user_identities": check_user_identities,
    "user_attributes": check_user_attributes,
    "deleted_user_attributes": check_array,
    "device_info": object_with(dict.fromkeys(DEVICE_ID_FIELDS, check_string)),
    "application_info": check_object,
    "consent_state": check_object,
    "source_info": check_object,
    "context": check_object,
    "integration_attributes": check_object,
    "partner_identities": check_object,
}

COMMON_DATA_FIELDS: dict[str, Check] = {
    "timestamp_unixtime_ms": check_int64,
    "event_id": check_int64,
    "session_id": check_int64,
    "event_num": check_int64,
    "session_start_unixtime_ms": check_int64,
    "event_start_unixtime_ms": check_int64,
    "session_uuid": check_string,
    "source_message_id": check_string,
    "custom_attributes": check_object,
    "custom_flags": check_object,
    "location": check_object,
}

_TYPE_FIELDS: dict[str, dict[str, Check]] = {
    "session_end": {"session_duration_ms": check_int64},
    "screen_view": {"screen_name": check_string},
    "custom_event": {
        "event_name": check_string,
        "custom_event_type": enum(CUSTOM_EVENT_TYPES),
    },
    "opt_out": {"is_opted_out": check_bool},
    "push_registration": {"register": check_bool, "registration_token": check_string},
    "application_state_transition": {
        "application_transition_type": enum(APPLICATION_TRANSITION_TYPES),
    },
    "profile": {
        "profile_event_type": enum(PROFILE_EVENT_TYPES),
        "previous_mpid": check_int64,
        "current_mpid": check_int64,
    },
    "commerce_event": {
        "product_action": object_with({"action": enum(PRODUCT_ACTIONS)}),
        "promotion_action": object_with({"action": enum(PROMOTION_ACTIONS)}),
        "product_impressions": check_array,
    },
    "user_attribute_change": {
        "user_attribute_name": check_string,
        "deleted": check_bool,
        "is_new_attribute": check_bool,
    },
    "user_identity_change": {"new": check_object_or_null, "old": check_object_or_null},
}

# event_type -> the checks for its data object (the common fields plus its own).
DATA_FIELDS: dict[str, dict[str, Check]] = {
    event_type: {**COMMON_DATA_FIELDS, **_TYPE_FIELDS.get(event_type, {})}
    for event_type in EVENT_TYPES
}

_EVENT_TYPE_LIST = ", ".join(EVENT_TYPES)


def validate_batch(batch: Any, where: str, problems: list[Problem]) -> None:
    """Append to ``problems`` everything wrong with one batch; ``where`` prefixes every path."""
    if type(batch) is not dict:
        problems.append(Problem(where, f"expected an object (one batch), got {describe(batch)}"))
        return
    found = check_fields(batch, BATCH_FIELDS)
    if found:
        problems.extend(Problem(where + suffix, message) for suffix, message in found)
    events = batch.get("events")
    if events is None:
        return
    if type(events) is not list:
        problems.append(Problem(f"{where}.events", f"expected an array, got {describe(events)}"))
        return
    for index, event in enumerate(events):
        _validate_event(event, f"{where}.events[{index}]", problems)


def _validate_event(event: Any, where: str, problems: list[Problem]) -> None:
    if type(event) is not dict:
        problems.append(
            Problem(where, f"expected an object with event_type and data, got {describe(event)}")
        )
        return
    event_type = event.get("event_type")
    fields = DATA_FIELDS.get(event_type) if type(event_type) is str else None
    if fields is None:
        problems.append(Problem(f"{where}.event_type", _event_type_message(event_type)))
    data = event.get("data")
    if data is None:
        return  # no data: nothing to check; routing treats it as {}
    if type(data) is not dict:
        problems.append(Problem(f"{where}.data", f"expected an object, got {describe(data)}"))
        return
    found = check_fields(data, fields or COMMON_DATA_FIELDS)
    if found:
        problems.extend(Problem(f"{where}.data{suffix}", message) for suffix, message in found)


def _event_type_message(event_type: Any) -> str:
    if event_type is None:
        return f"is required; expected one of {_EVENT_TYPE_LIST}"
    if type(event_type) is str:
        return f"{quote(event_type)} is not a known event_type; expected one of {_EVENT_TYPE_LIST}"
    return f"expected a string, one of {_EVENT_TYPE_LIST}; got {describe(event_type)}"
