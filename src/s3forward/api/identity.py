"""MPIDs without a database: the Web SDK's identify, login, logout and modify calls (issue 13).

The Web SDK uploads nothing until ``/v1/identify`` gives it an MPID, and a failed identify loses
every event of the page. So identity here can never fail while the service is up: an MPID is
computed, not looked up.

- Known user (any identity other than the device stamp): ``customerid`` if sent, else ``email``
  (trimmed and lower-cased), else the first other identity type in alphabetical order. The MPID
  is the keyed hash of that identity, so the same user gets the same MPID on every device.
- Anonymous (only the device stamp): the keyed hash of ``device_application_stamp``, so one
  browser keeps its MPID across page loads.

The hash is HMAC-SHA256 under the input's ``identity_key`` (a configured secret), its first 8
bytes read as a signed 64-bit integer (0 is skipped: mParticle uses it for "no user"). Without
the key, an MPID cannot be computed from an email, and an email cannot be learned from an MPID.

This is a stable pseudonymous id, not mParticle's IDSync: there are no profiles, no merges, no
identity priorities and no lookups; ``modify`` is acknowledged but does not move a user to
another MPID. Identity bodies carry personal data: nothing here logs them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from s3forward.errors import BatchValidationError, Problem

DEVICE_STAMP = "device_application_stamp"
_PREFERRED = ("customerid", "email")
_MAX_IDENTITY_CHARS = 1024


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


class MpidIssuer:
    """Computes MPIDs with one input's key. Pure and thread-safe."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("an MPID issuer needs a non-empty key")
        self._key = key

    def _hash(self, label: str, value: str) -> int:
        digest = hmac.new(self._key, f"{label}\x00{value}".encode(), hashlib.sha256).digest()
        for start in range(len(digest) - 7):
            mpid = int.from_bytes(digest[start : start + 8], "big", signed=True)
            if mpid != 0:
                return mpid
        raise AssertionError("unreachable: a SHA-256 digest is not all zeros")  # pragma: no cover

    def for_device(self, stamp: str) -> int:
        """The anonymous MPID of one browser (its device application stamp)."""
        return self._hash("das", stamp)

    def for_identity(self, identity_type: str, value: str) -> int:
        """The MPID of a known user, by one identity."""
        if identity_type == "email":
            value = value.strip().lower()
        return self._hash(f"id:{identity_type}", value)

    def identify(self, known: Mapping[str, str]) -> tuple[int, bool]:
        """``(mpid, is_logged_in)`` for the ``known_identities`` of an identity request."""
        users = {k: v for k, v in known.items() if k != DEVICE_STAMP and v}
        if users:
            chosen = next((k for k in _PREFERRED if k in users), None) or min(users)
            return self.for_identity(chosen, users[chosen]), True
        stamp = known.get(DEVICE_STAMP)
        if not stamp:
            raise BatchValidationError(
                [
                    Problem(
                        "known_identities",
                        f"holds no identity: send {DEVICE_STAMP} (the Web SDK always does) or a "
                        "user identity such as customerid or email",
                    )
                ]
            )
        return self.for_device(stamp), False


# Batch identity names (inbound map or outbound array) -> the identity-call names they hash as.
_VERIFIABLE = {"customer_id": "customerid", "customerid": "customerid", "email": "email"}


def issued_mpids(issuer: MpidIssuer, batch: Mapping[str, Any]) -> set[int]:
    """The MPIDs this service can have issued for a batch: its device's, and its user's by
    ``customer_id`` or ``email`` (other identity types are not checked)."""
    found: set[int] = set()
    stamp = batch.get("mp_deviceid")
    if type(stamp) is str and stamp:
        found.add(issuer.for_device(stamp))
    identities = batch.get("user_identities")
    pairs: list[tuple[Any, Any]] = []
    if type(identities) is dict:
        pairs = list(identities.items())
    elif type(identities) is list:
        pairs = [(i.get("identity_type"), i.get("identity")) for i in identities if type(i) is dict]
    for name, value in pairs:
        sdk_name = _VERIFIABLE.get(name) if type(name) is str else None
        if sdk_name is not None and type(value) is str and value:
            found.add(issuer.for_identity(sdk_name, value))
    return found


def known_identities(body: Any) -> dict[str, str]:
    """The ``known_identities`` of an identify/login/logout body, checked; nulls dropped."""
    if type(body) is not dict:
        raise BatchValidationError(
            [Problem("body", f"expected an identity request object, got {_describe(body)}")]
        )
    known = body.get("known_identities")
    if known is None:
        known = {}
    if type(known) is not dict:
        raise BatchValidationError(
            [Problem("known_identities", f"expected an object, got {_describe(known)}")]
        )
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for key, value in known.items():
        if value is None:
            continue
        if type(value) is not str:
            problems.append(
                Problem(f"known_identities.{key}", f"expected a string, got {_describe(value)}")
            )
        elif len(value) > _MAX_IDENTITY_CHARS:
            problems.append(
                Problem(
                    f"known_identities.{key}",
                    f"is {len(value)} characters; the limit is {_MAX_IDENTITY_CHARS}",
                )
            )
        else:
            out[key] = value
    if problems:
        raise BatchValidationError(problems)
    return out


def identify_answer(issuer: MpidIssuer, body: Any) -> dict[str, Any]:
    """The JSON answer to identify, login or logout, as the Web SDK reads it."""
    known = known_identities(body)
    mpid, logged_in = issuer.identify(known)
    return {
        "context": None,
        "mpid": str(mpid),
        "is_logged_in": logged_in,
        "matched_identities": {k: v for k, v in known.items() if k != DEVICE_STAMP},
        "is_ephemeral": False,
    }


def modify_answer(mpid: int, body: Any) -> dict[str, Any]:
    """The answer to ``/v1/<mpid>/modify``: every change acknowledged, the MPID unchanged."""
    if type(body) is not dict:
        raise BatchValidationError(
            [Problem("body", f"expected an identity request object, got {_describe(body)}")]
        )
    changes = body.get("identity_changes") or []
    if type(changes) is not list or not all(type(c) is dict for c in changes):
        raise BatchValidationError(
            [Problem("identity_changes", "expected an array of {identity_type, ...} objects")]
        )
    return {
        "change_results": [
            {"identity_type": c.get("identity_type"), "modified_mpid": str(mpid)} for c in changes
        ]
    }


__all__ = [
    "DEVICE_STAMP",
    "MpidIssuer",
    "identify_answer",
    "issued_mpids",
    "known_identities",
    "modify_answer",
]
