"""Request bodies and files -> validated batch dicts, and the few fields routing reads.

Batches stay plain dicts exactly as decoded (lossless: unknown fields and numbers as they came);
the routing helpers at the bottom read them without changing them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from s3forward.errors import BatchValidationError, PayloadTooLargeError, Problem
from s3forward.mparticle.catalogue import DEVICE_ID_FIELDS, as_int64, describe
from s3forward.mparticle.normalise import normalise_batch
from s3forward.mparticle.requests import is_alias_request, validate_item

GZIP_MAGIC = b"\x1f\x8b"
_IDENTITY_ENCODINGS = frozenset({"", "identity"})
# An advertising id of all zeros means "limit ad tracking": every such device shares it.
_ZERO_AD_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True, slots=True)
class Limits:
    """Events API size limits; all sizes in bytes."""

    max_batch_bytes: int = 128 * 1024
    max_request_bytes: int = 256 * 1024
    max_batches: int = 100
    max_json_depth: int = 64
    """Nesting levels a batch may have; the batch object itself is level 1."""


# --------------------------------------------------------------------------------------------
# Bodies


def decode_body(body: bytes, *, content_encoding: str | None, limits: Limits) -> Any:
    """Decode a request body: gzip (by header or magic bytes), then JSON.

    ``max_request_bytes`` applies to the body as received and again after decompression; the
    decompression stops as soon as the limit is passed, so a gzip bomb never allocates more than
    the limit. Raises PayloadTooLargeError or BatchValidationError.
    """
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",")]
    unsupported = [e for e in encodings if e not in _IDENTITY_ENCODINGS and e != "gzip"]
    if unsupported:
        raise BatchValidationError(
            [
                Problem(
                    "Content-Encoding",
                    f"{unsupported[0]!r} is not supported; send gzip or an uncompressed body",
                )
            ]
        )
    limit = limits.max_request_bytes
    if len(body) > limit:
        raise PayloadTooLargeError(
            [Problem("body", f"is {len(body)} bytes; the limit is {limit} bytes per request")]
        )
    if "gzip" in encodings or body.startswith(GZIP_MAGIC):
        body = gunzip(body, limit=limit, where="body")
    return loads(body, where="body")


def gunzip(data: bytes, *, limit: int | None, where: str) -> bytes:
    """Decompress one or more gzip members, refusing output larger than ``limit`` bytes."""
    out = bytearray()
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = data
    try:
        while True:
            room = 0 if limit is None else limit + 1 - len(out)
            chunk = decompressor.decompress(pending, room)
            out += chunk
            if limit is not None and len(out) > limit:
                raise PayloadTooLargeError(
                    [
                        Problem(
                            where,
                            f"is more than {limit} bytes after gzip decompression; "
                            f"the limit is {limit} bytes per request",
                        )
                    ]
                )
            pending = decompressor.unconsumed_tail
            if decompressor.eof:
                rest = decompressor.unused_data
                if not rest.strip(b"\0"):
                    return bytes(out)
                if not rest.startswith(GZIP_MAGIC):
                    raise _bad_gzip(where, "unexpected bytes after the gzip data")
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                pending = rest
            elif not chunk and not pending:
                raise _bad_gzip(where, "the gzip data is truncated")
    except zlib.error as exc:
        raise _bad_gzip(where, str(exc)) from None


def _bad_gzip(where: str, reason: str) -> BatchValidationError:
    return BatchValidationError([Problem(where, f"is not valid gzip: {reason}")])


def loads(data: bytes, *, where: str) -> Any:
    """Parse JSON with orjson, translating its error into a Problem at ``where``."""
    if not data or data.isspace():
        raise BatchValidationError([Problem(where, "is empty; expected JSON")])
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BatchValidationError([Problem(where, _json_error(exc))]) from None


def _json_error(exc: orjson.JSONDecodeError) -> str:
    return f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


# --------------------------------------------------------------------------------------------
# Requests and files


def parse_events_request(payload: Any, *, limits: Limits) -> list[dict[str, Any]]:
    """Validate the body of ``POST /v2/events`` (one batch); returns ``[batch]``."""
    return _validated([("batch", payload)], limits)


def parse_alias_request(payload: Any, *, limits: Limits) -> list[dict[str, Any]]:
    """Validate the body of ``POST /v1/identity/alias`` (one alias request); ``[request]``."""
    if not is_alias_request(payload):
        raise BatchValidationError(
            [
                Problem(
                    "body",
                    'expected an alias request: {"request_type": "alias", "data": '
                    '{"source_mpid": ..., "destination_mpid": ...}}, '
                    f"got {describe(payload) if type(payload) is not dict else 'an object'}"
                    + ("" if type(payload) is not dict else ' without request_type "alias"'),
                )
            ]
        )
    return _validated([("alias", payload)], limits)


def parse_bulk_request(payload: Any, *, limits: Limits) -> list[dict[str, Any]]:
    """Validate the body of ``POST /v2/bulkevents`` (an array of batches), all or nothing.

    Every problem of every batch is collected before raising; oversized batches (413) take
    precedence over malformed ones (400).
    """
    if type(payload) is not list:
        raise BatchValidationError(
            [Problem("body", f"expected an array of batches, got {describe(payload)}")]
        )
    if len(payload) > limits.max_batches:
        raise PayloadTooLargeError(
            [
                Problem(
                    "body",
                    f"holds {len(payload)} batches; the limit is {limits.max_batches} per request",
                )
            ]
        )
    return _validated([(f"batch[{i}]", batch) for i, batch in enumerate(payload)], limits)


def read_batches(data: bytes, *, source: str, limits: Limits) -> list[dict[str, Any]]:
    """Batches from a file: one JSON batch, a JSON array of batches, or NDJSON (one per line).

    The file may be gzipped (detected by its magic bytes). There is no request-size limit, but
    each batch is validated and must fit ``max_batch_bytes``. Problem paths name the source and
    the line (NDJSON) or array index: ``events.ndjson:3:batch.events[0].event_type``.
    """
    if data.startswith(GZIP_MAGIC):
        data = gunzip(data, limit=None, where=source)
    text = data.lstrip()
    if not text:
        return []
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if text.startswith(b"{"):  # several objects: NDJSON
            return _validated(_ndjson_items(data, source), limits)
        raise BatchValidationError([Problem(source, _json_error(exc))]) from None
    if type(document) is list:
        return _validated([(f"{source}:batch[{i}]", b) for i, b in enumerate(document)], limits)
    return _validated([(f"{source}:batch", document)], limits)


def _ndjson_items(data: bytes, source: str) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append((f"{source}:{number}:batch", orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            problems.append(Problem(f"{source}:{number}", _json_error(exc)))
    if problems:
        raise BatchValidationError(problems)
    return items


class ValidatedBatches(list[dict[str, Any]]):
    """Batches that passed validation, with each one's compact JSON in ``encoded``.

    The size check serialises every batch anyway; keeping the bytes saves the spool from
    serialising it again on the ingest path.
    """

    encoded: list[bytes]


def _validated(items: list[tuple[str, Any]], limits: Limits) -> ValidatedBatches:
    problems: list[Problem] = []
    too_large: list[Problem] = []
    result = ValidatedBatches()
    result.encoded = []
    for where, batch in items:
        before = len(problems)
        normalise_batch(batch)
        validate_item(batch, where, problems)
        if len(problems) == before:
            encoded = _encode_within_depth(batch, where, limits.max_json_depth, problems)
            if encoded is None:
                continue
            if len(encoded) > limits.max_batch_bytes:
                too_large.append(
                    Problem(
                        where,
                        f"is {len(encoded)} bytes; the limit is {limits.max_batch_bytes} bytes "
                        "per batch",
                    )
                )
            result.append(batch)
            result.encoded.append(encoded)
    if too_large:
        raise PayloadTooLargeError(too_large)
    if problems:
        raise BatchValidationError(problems)
    return result


def _encode_within_depth(
    batch: Any, where: str, max_depth: int, problems: list[Problem]
) -> bytes | None:
    """``batch`` as compact JSON, or None (with a Problem naming the path) when too deep.

    A batch can be no deeper than the number of ``{`` and ``[`` in its JSON, so the walk that
    finds the path only runs for batches with more brackets than ``max_depth`` (or that orjson
    cannot write at all: it stops at 254 levels).
    """
    try:
        encoded: bytes | None = orjson.dumps(batch)
    except orjson.JSONEncodeError:
        encoded = None
    if encoded is None or encoded.count(b"{") + encoded.count(b"[") > max_depth:
        too_deep = _too_deep_path(batch, where, max_depth)
        if too_deep is not None:
            problems.append(
                Problem(
                    too_deep,
                    f"is nested more than {max_depth} levels deep; the limit is "
                    f"{max_depth} levels per batch",
                )
            )
            return None
        if encoded is None:  # not depth: nothing orjson.loads returns should get here
            return orjson.dumps(batch)
    return encoded


def _too_deep_path(root: Any, where: str, max_depth: int) -> str | None:
    """The path of the first container at level ``max_depth + 1`` (``root`` is level 1)."""
    stack: list[tuple[Any, int, str]] = [(root, 1, where)]
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            return path
        items = node.items() if type(node) is dict else enumerate(node)
        for key, value in items:
            if type(value) is dict or type(value) is list:
                stack.append((value, depth + 1, path + _path_step(key)))
    return None


def _path_step(key: str | int) -> str:
    if type(key) is int:
        return f"[{key}]"
    shown = str(key)[:40]
    return f".{shown}" if shown.isidentifier() else f"[{orjson.dumps(shown).decode()}]"


# --------------------------------------------------------------------------------------------
# What routing reads


def _events(batch: dict[str, Any]) -> list[Any]:
    events = batch.get("events")
    return events if type(events) is list else []


def _data(event: Any) -> dict[str, Any]:
    data = event.get("data") if type(event) is dict else None
    return data if type(data) is dict else {}


def device_key(batch: dict[str, Any]) -> str:
    """The key of the device a batch came from, prefixed with its kind so kinds never collide.

    ``das:<mp_deviceid>``, else the first device identifier in device_info (in the order of
    ``DEVICE_ID_FIELDS``; all-zero advertising ids are skipped), else ``mpid:<mpid>``, else
    ``unknown``.
    """
    das = batch.get("mp_deviceid")
    if das:
        return f"das:{das}"
    info = batch.get("device_info")
    if type(info) is dict:
        for name in DEVICE_ID_FIELDS:
            value = info.get(name)
            if value and value != _ZERO_AD_ID:
                return f"{name}:{value}"
    mpid = as_int64(batch.get("mpid"))
    if mpid is not None:
        return f"mpid:{mpid}"
    return "unknown"


def _event_session(data: dict[str, Any]) -> str | None:
    uuid = data.get("session_uuid")
    if uuid:
        return str(uuid)
    session_id = as_int64(data.get("session_id"))
    return None if session_id is None else f"session_id:{session_id}"


def session_key(batch: dict[str, Any]) -> str | None:
    """The batch's session: the first event's ``session_uuid`` found, else ``session_id:<n>``.

    None when no event names a session.
    """
    events = _events(batch)
    for event in events:
        uuid = _data(event).get("session_uuid")
        if uuid:
            return str(uuid)
    for event in events:
        session_id = as_int64(_data(event).get("session_id"))
        if session_id is not None:
            return f"session_id:{session_id}"
    return None


def ends_session(batch: dict[str, Any]) -> bool:
    """True if the batch has a session_end for its own session (or one naming no session)."""
    key: str | None = None
    looked_up = False
    for event in _events(batch):
        if type(event) is not dict or event.get("event_type") != "session_end":
            continue
        if not looked_up:
            key, looked_up = session_key(batch), True
        if _event_session(_data(event)) in (None, key):
            return True
    return False


def first_event_time_ms(batch: dict[str, Any]) -> int | None:
    """``timestamp_unixtime_ms`` of the batch's first event, as an int; None when absent."""
    events = _events(batch)
    if not events:
        return None
    return as_int64(_data(events[0]).get("timestamp_unixtime_ms"))


def split_events(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """One batch per event, each with the envelope (shared, not deep-copied) and one event.

    A batch without events is returned as ``[batch]``.
    """
    events = _events(batch)
    if not events:
        return [batch]
    return [{**batch, "events": [event]} for event in events]
