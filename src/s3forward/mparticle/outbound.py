"""The outbound form of a batch: what one NDJSON line in S3 holds (product spec "What is written").

Only the documented fields change; everything else, unknown fields included, passes through as
the same Python objects, so numbers keep the form they arrived in (int64 never become floats).
"""

from __future__ import annotations

import random
from typing import Any

from s3forward.mparticle.catalogue import as_int64

OUTBOUND_MESSAGE_TYPE = "events"
OUTBOUND_SCHEMA_VERSION = 2
# The Python and Ruby SDKs send the customer id under this key; mParticle's is customer_id.
SDK_CUSTOMER_ID_KEY = "customerid"
CUSTOMER_ID = "customer_id"


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
    """
    out = dict(batch)
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
