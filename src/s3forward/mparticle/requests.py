"""What a body item must be to be accepted: an Events API batch or an alias request (issue 11).

**The minimum that makes a batch**: a JSON object holding ``events`` as an array (it may be
empty) or, for a batch without events, at least one of the fields that say something about a
user or device: ``user_identities``, ``user_attributes``, ``deleted_user_attributes``,
``consent_state``, ``mpid``, ``mp_deviceid``, ``device_info``, ``application_info``,
``partner_identities`` (null counts as absent). ``{}`` or an object of envelope fields only
(``environment``, ``source_request_id``, ``ip`` ...) is refused, so that a misconfigured client
gets a 400 instead of a 202 for data that would land as empty lines.

**Known other mParticle formats** are refused by name: the mobile SDKs' internal upload format
(``{"dt": ..., "msgs": [...]}``) and IDSync identity requests (``known_identities``).

**Alias requests** (``{"request_type": "alias", "data": {"source_mpid", "destination_mpid",
"start_unixtime_ms", "end_unixtime_ms"}, ...}``, the body mParticle's SDKs send to its
identity service) are accepted on ``POST /v1/identity/alias`` and, recognised by their
``request_type``, on the Events API endpoints too. They are forwarded only by connections with
``send_alias_requests = true``.
"""

from __future__ import annotations

from typing import Any

from s3forward.errors import Problem
from s3forward.mparticle.catalogue import check_int64, check_string, describe, validate_batch
from s3forward.mparticle.schema import conforms

ALIAS_REQUEST_TYPE = "alias"

BATCH_CONTENT_FIELDS: tuple[str, ...] = (
    "events",
    "user_identities",
    "user_attributes",
    "deleted_user_attributes",
    "consent_state",
    "mpid",
    "mp_deviceid",
    "device_info",
    "application_info",
    "partner_identities",
)

_EXPECTED_BATCH = (
    'expected an Events API batch: an object with "events" (an array of '
    '{"event_type": ..., "data": {...}}) or at least one of ' + ", ".join(BATCH_CONTENT_FIELDS[1:])
)
_MOBILE_SDK_KEYS = frozenset({"dt", "msgs"})
_ALIAS_REQUIRED = ("source_mpid", "destination_mpid")
_ALIAS_INT64 = ("source_mpid", "destination_mpid", "start_unixtime_ms", "end_unixtime_ms")


def is_alias_request(item: Any) -> bool:
    """True for an object whose ``request_type`` is ``"alias"``."""
    return type(item) is dict and item.get("request_type") == ALIAS_REQUEST_TYPE


def dedup_key(batch: dict[str, Any]) -> str | None:
    """The id a client retry repeats: ``source_request_id``, or an alias request's
    ``request_id`` (kept apart from batch ids by a prefix); None when it has neither."""
    rid = batch.get("source_request_id")
    if isinstance(rid, str) and rid:
        return rid
    if is_alias_request(batch):
        alias_id = batch.get("request_id")
        if isinstance(alias_id, str) and alias_id:
            return f"alias\x1f{alias_id}"
    return None


def validate_item(item: Any, where: str, problems: list[Problem]) -> None:
    """Append to ``problems`` everything wrong with one body item (a batch or an alias)."""
    if is_alias_request(item):
        validate_alias_request(item, where, problems)
        return
    if type(item) is dict:
        foreign = _other_format(item)
        if foreign is not None:
            problems.append(Problem(where, f"is not an Events API batch: {foreign}"))
            return
        # Issue 10: the typed schema checks the common case in C; only a batch it does not
        # certainly accept takes the Python walk, which is the authority and words the problems.
        if _has_content(item) and not _two_customer_ids(item) and conforms(item):
            return
    before = len(problems)
    validate_batch(item, where, problems)
    if len(problems) == before and type(item) is dict and not _has_content(item):
        problems.append(Problem(where, _empty_message(item)))


def _two_customer_ids(batch: dict[str, Any]) -> bool:
    """Both spellings of the customer id present (the walk decides whether they differ)."""
    identities = batch.get("user_identities")
    return (
        type(identities) is dict
        and identities.get("customerid") is not None
        and identities.get("customer_id") is not None
    )


def _has_content(batch: dict[str, Any]) -> bool:
    return any(batch.get(name) is not None for name in BATCH_CONTENT_FIELDS)


def _empty_message(batch: dict[str, Any]) -> str:
    if not batch:
        return f"is an empty object; {_EXPECTED_BATCH}"
    keys = ", ".join(list(batch)[:8])
    return f"holds no events and nothing about a user or device (keys: {keys}); {_EXPECTED_BATCH}"


def _other_format(item: dict[str, Any]) -> str | None:
    """The name of a known other mParticle format ``item`` is in, with advice; else None."""
    if _MOBILE_SDK_KEYS & item.keys() and "events" not in item:
        return (
            'this is the mParticle mobile SDKs\' internal upload format ("dt"/"msgs"), which '
            "the iOS and Android SDKs send to mParticle's own SDK endpoints; only server-side "
            "SDKs (Python, Node, Java, Go, Ruby, .NET) and HTTP clients speak the Events API. "
            + _EXPECTED_BATCH
        )
    if "known_identities" in item and "events" not in item:
        return (
            "this is an mParticle IDSync identity request (identify, login, logout, modify), "
            "which goes to mParticle's Identity API; " + _EXPECTED_BATCH
        )
    return None


def validate_alias_request(item: dict[str, Any], where: str, problems: list[Problem]) -> None:
    """``data`` must be an object with int64 ``source_mpid`` and ``destination_mpid``; the
    optional window bounds must be int64; ``request_id`` and ``environment`` strings."""
    for name in ("request_id", "environment"):
        value = item.get(name)
        if value is not None and check_string(value):
            problems.append(Problem(f"{where}.{name}", f"expected a string, got {describe(value)}"))
    data = item.get("data")
    if type(data) is not dict:
        problems.append(
            Problem(
                f"{where}.data",
                "expected an object with source_mpid and destination_mpid (an alias request), "
                f"got {describe(data)}",
            )
        )
        return
    for name in _ALIAS_INT64:
        value = data.get(name)
        if value is None:
            if name in _ALIAS_REQUIRED:
                problems.append(Problem(f"{where}.data.{name}", "is required (an int64 MPID)"))
            continue
        found = check_int64(value)
        if found:
            problems.extend(Problem(f"{where}.data.{name}", message) for _, message in found)
