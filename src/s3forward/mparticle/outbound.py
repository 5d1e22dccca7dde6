"""The outbound form of a batch: what one NDJSON line in S3 holds (product spec "What is written").

Only the documented fields change; everything else, unknown fields included, passes through as
the same Python objects, so numbers keep the form they arrived in (int64 never become floats).
"""

from __future__ import annotations

import random
from typing import Any

from s3forward.mparticle.catalogue import (
    BATCH_FIELDS,
    COMMON_DATA_FIELDS,
    DATA_FIELDS,
    as_int64,
    check_int64,
)

OUTBOUND_MESSAGE_TYPE = "events"
OUTBOUND_SCHEMA_VERSION = 2
# The Python and Ruby SDKs send the customer id under this key; mParticle's is customer_id.
SDK_CUSTOMER_ID_KEY = "customerid"
CUSTOMER_ID = "customer_id"
ALIAS_MESSAGE_TYPE = "alias"

# Issue 11: int64 fields whose numeric strings are written as JSON numbers.
_INT64_BATCH_FIELDS = tuple(k for k, c in BATCH_FIELDS.items() if c is check_int64)
_COMMON_INT64_DATA_FIELDS = tuple(k for k, c in COMMON_DATA_FIELDS.items() if c is check_int64)
_INT64_DATA_FIELDS: dict[str, tuple[str, ...]] = {
    event_type: tuple(k for k, c in fields.items() if c is check_int64)
    for event_type, fields in DATA_FIELDS.items()
}


def to_outbound(
    batch: dict[str, Any],
    *,
    received_at_ms: int,
    batch_id: int,
    message_id: str,
    unique_id: str | None,
) -> dict[str, Any]:
    """Return the outbound form of ``batch`` (a new dict; ``batch`` is not changed).

    - ``user_identities``: an inbound map becomes an array of ``{identity_type, identity}`` in
      the map's order, with ``customerid`` read as ``customer_id`` and null identities dropped;
      an inbound array is kept as is; absent or null stays so.
    - ``batch_id``: the inbound one when present, else ``batch_id``.
    - ``message_id``, ``message_type: "events"``, ``schema_version: 2`` are set.
    - ``timestamp_unixtime_ms`` = ``received_at_ms`` (the receive time replaces the SDK's).
    - ``unique_id`` is set when given (non-empty).
    - ``events`` is always an array (absent or null: ``[]``); an event's null or absent
      ``data`` is ``{}``; every event with a ``timestamp_unixtime_ms`` and no
      ``event_start_unixtime_ms`` gets one equal to it (mParticle: "every event gets
      event_start_unixtime_ms").
    - int64 fields sent as numeric strings (``"mpid": "123"``) are written as JSON numbers.
    - ``system_notifications`` is ``[]`` unless the inbound batch has one (s3forward keeps no
      profiles, so it never detects a consent change itself).
    """
    out = dict(batch)
    _numbers_for_int64_strings(out, _INT64_BATCH_FIELDS)
    events = batch.get("events")
    out["events"] = [_outbound_event(e) for e in events] if type(events) is list else []
    if out.get("system_notifications") is None:
        out["system_notifications"] = []
    identities = batch.get("user_identities")
    if type(identities) is dict:
        out["user_identities"] = identities_array(identities)
    if batch.get("batch_id") is None:
        out["batch_id"] = batch_id
    out["message_id"] = message_id
    out["message_type"] = OUTBOUND_MESSAGE_TYPE
    out["schema_version"] = OUTBOUND_SCHEMA_VERSION
    out["timestamp_unixtime_ms"] = received_at_ms
    if unique_id:
        out["unique_id"] = unique_id
    return out


def _numbers_for_int64_strings(obj: dict[str, Any], names: tuple[str, ...]) -> bool:
    """Replace numeric strings in ``obj``'s int64 fields by numbers; True if any changed."""
    changed = False
    for name in names:
        value = obj.get(name)
        if type(value) is str:
            number = as_int64(value)
            if number is not None:
                obj[name] = number
                changed = True
    return changed


def _outbound_event(event: Any) -> Any:
    if type(event) is not dict:
        return event
    data = event.get("data")
    if data is None:
        data = {}
    elif type(data) is not dict:
        return event  # validation refuses this; never reached for accepted batches
    event_type = event.get("event_type")
    fields = _INT64_DATA_FIELDS.get(event_type, _COMMON_INT64_DATA_FIELDS)  # type: ignore[arg-type]
    out = dict(data)
    for name in fields:  # numeric strings are rare: look first, convert only when one is seen
        if type(out.get(name)) is str:
            _numbers_for_int64_strings(out, fields)
            break
    timestamp = out.get("timestamp_unixtime_ms")
    if timestamp is not None and out.get("event_start_unixtime_ms") is None:
        out["event_start_unixtime_ms"] = timestamp
    return {**event, "data": out}


def alias_outbound(
    request: dict[str, Any], *, received_at_ms: int, message_id: str
) -> dict[str, Any]:
    """The documented line for a forwarded alias request (Send Alias Requests).

    The request as received (``request_type``, ``request_id``, ``environment``, ``data`` with
    ``source_mpid``, ``destination_mpid``, ``start_unixtime_ms``, ``end_unixtime_ms``, ...)
    without ``api_key`` (the input already says whose it is), plus ``message_id``,
    ``message_type: "alias"``, ``schema_version: 2`` and ``timestamp_unixtime_ms`` = the time
    s3forward received it. mParticle does not publish its own form of this line.
    """
    out = {k: v for k, v in request.items() if k != "api_key"}
    data = out.get("data")
    if type(data) is dict:
        data = dict(data)
        _numbers_for_int64_strings(data, ALIAS_INT64_FIELDS)
        out["data"] = data
    out["message_id"] = message_id
    out["message_type"] = ALIAS_MESSAGE_TYPE
    out["schema_version"] = OUTBOUND_SCHEMA_VERSION
    out["timestamp_unixtime_ms"] = received_at_ms
    return out


ALIAS_INT64_FIELDS = ("source_mpid", "destination_mpid", "start_unixtime_ms", "end_unixtime_ms")


def identities_array(identities: dict[str, Any]) -> list[dict[str, Any]]:
    """The inbound identity map as mParticle's outbound array.

    When both ``customerid`` and ``customer_id`` are present, ``customer_id`` wins and the SDK
    alias is dropped, so the line never carries two customer ids.
    """
    has_customer_id = identities.get(CUSTOMER_ID) is not None
    array: list[dict[str, Any]] = []
    for key, identity in identities.items():
        if identity is None or (key == SDK_CUSTOMER_ID_KEY and has_customer_id):
            continue
        identity_type = CUSTOMER_ID if key == SDK_CUSTOMER_ID_KEY else key
        array.append({"identity_type": identity_type, "identity": identity})
    return array


def new_batch_id(rng: random.Random) -> int:
    """A random positive int63, for batches that arrive without a ``batch_id``."""
    return rng.randrange(1, 2**63)


def batch_id_for(batch: dict[str, Any], rng: random.Random) -> int:
    """The batch's own ``batch_id`` when it has a valid int64 one, else a new random one."""
    kept = as_int64(batch.get("batch_id"))
    return kept if kept is not None else new_batch_id(rng)
