"""Turning a sealed window's batches into the S3 object the seed describes.

For each batch, in arrival order: the connection's filters, then the outbound form (one NDJSON
line), then the whole file is encoded (gzip when ``use_compression``) and given its key.

Deterministic: the key and the bytes depend only on what is stored for the window (its items
with their positions, receive times and batch_ids, the seal time and the five digits chosen at
seal) and the connection's settings. ``message_id`` is a name-based UUID of the line's stable
identity, gzip has mtime 0, so building the same window again, anywhere, gives the same object.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from s3forward.config import BuildRules
from s3forward.filters import apply_filters
from s3forward.layout import EncodedObject, encode_ndjson, encode_object, object_key
from s3forward.mparticle import alias_outbound, first_event_time_ms, is_alias_request, to_outbound


@dataclass(frozen=True, slots=True)
class FileItem:
    """One line-to-be: an inbound batch (or one event of it) with what ingest recorded."""

    batch: dict[str, Any]
    received_ms: int
    batch_id: int
    event_index: int | None = None
    position: int = 0
    """Where the batch sits in the log (with ``input``, its stable identity)."""
    input: str = ""
    part: int | None = None
    """Which session part of the batch at ``position`` this is, when a log keeps a batch of
    several sessions whole and splits it on reading (cluster mode); None otherwise."""

    @property
    def message_id(self) -> str:
        """The line's ``message_id``: the same for the same stored item, everywhere."""
        name = (
            f"{self.input}\x1f{self.position}\x1f{self.received_ms}\x1f{self.batch_id}"
            f"\x1f{'' if self.event_index is None else self.event_index}"
        )
        if self.part is not None:
            name += f"\x1fpart:{self.part}"
        return uuid5_string(name)

    def effective_batch(self) -> dict[str, Any]:
        """The batch this line is built from: per-event mode keeps only the chosen event."""
        if self.event_index is None:
            return self.batch
        events = self.batch.get("events") or []
        return {**self.batch, "events": [events[self.event_index]]}


@dataclass(frozen=True, slots=True)
class BuiltFile:
    obj: EncodedObject
    batches: int
    events: int
    raw_bytes: int
    first_received_ms: int
    first_event_ms: int | None
    filtered_out: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class EmptyWindow:
    """What a sealed window builds when no line is left to write: no object, only the events
    the connection's filters dropped (they are counted like those of a written file)."""

    filtered_out: Counter[str] = field(default_factory=Counter)


MESSAGE_ID_NAMESPACE = uuid.UUID("5f0e8d6c-3b1a-5c49-9a57-7d1f2b8e4a60")
"""Namespace of s3forward's name-based (version 5) message ids."""
_NAMESPACE_BYTES = MESSAGE_ID_NAMESPACE.bytes


def uuid5_string(name: str) -> str:
    """``str(uuid.uuid5(MESSAGE_ID_NAMESPACE, name))``, the same text at a third of the cost
    (no UUID object: RFC 4122 section 4.3 on the SHA-1 digest directly; issue 10)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def build_records(
    items: Iterable[FileItem], settings: BuildRules
) -> tuple[list[dict[str, Any]], int, int | None, Counter[str]]:
    """Filter and convert each item. Returns (records, events kept, first event ms, filtered)."""
    records: list[dict[str, Any]] = []
    events_kept = 0
    first_event_ms: int | None = None
    filtered: Counter[str] = Counter()
    for item in items:
        if is_alias_request(item.batch):  # issue 11: Send Alias Requests
            if settings.send_alias_requests:
                records.append(
                    alias_outbound(
                        item.batch, received_at_ms=item.received_ms, message_id=item.message_id
                    )
                )
            continue
        inbound = item.effective_batch()
        kept = apply_filters(inbound, settings)
        before = inbound.get("events") or []
        after = kept.get("events") or []
        if len(after) != len(before):
            kept_ids = {id(e) for e in after}
            for event in before:
                if id(event) not in kept_ids and isinstance(event, dict):
                    filtered[str(event.get("event_type"))] += 1
        if not after and not settings.send_batches_without_events:
            continue  # issue 11: Send Batches without Events = off
        events_kept += len(after)
        if not records:
            # The seed dates a file by the first event of its first batch, as written; a
            # first batch without one gives no event date, even if later batches have one.
            first_event_ms = first_event_time_ms(kept)
        if settings.raw_data_feed:  # issue 11: the inbound form, filters applied
            records.append(kept)
            continue
        outbound = to_outbound(
            kept,
            received_at_ms=item.received_ms,
            batch_id=item.batch_id,
            message_id=item.message_id,
            unique_id=settings.unique_id,
        )
        records.append(outbound)
    return records, events_kept, first_event_ms, filtered


def choose_key(
    settings: BuildRules,
    *,
    app_name: str,
    sealed_at: float,
    first_event_ms: int | None,
    first_received_ms: int,
    digits: int,
) -> str:
    """The object key: ``[folder/][date/]<App>_<sealed time>_<5 random digits>.txt[.gz]``."""
    return object_key(
        folder_name=settings.folder_name,
        date_folders=settings.store_data_in_folders_by_date,
        app_name=app_name,
        sealed_at=datetime.fromtimestamp(sealed_at, tz=UTC),
        digits=digits,
        first_event_ms=first_event_ms,
        first_received_ms=first_received_ms,
        compressed=settings.use_compression,
    )


def build_file(
    items: list[FileItem],
    settings: BuildRules,
    *,
    app_name: str,
    sealed_at: float,
    digits: int,
) -> BuiltFile | EmptyWindow:
    """Build the object for one sealed window. ``items`` must not be empty.

    ``digits`` are the key's five random digits, chosen once when the window was sealed.
    ``EmptyWindow`` when no line is left to write (every batch had no events, for example
    because the filters dropped them all, and Send Batches without Events is off; or only alias
    requests a connection does not send): the window is dropped.
    """
    if not items:
        raise ValueError("a file needs at least one batch")
    records, events, first_event_ms, filtered = build_records(items, settings)
    if not records:
        return EmptyWindow(filtered)
    payload = encode_ndjson(records)
    first_received_ms = items[0].received_ms
    key = choose_key(
        settings,
        app_name=app_name,
        sealed_at=sealed_at,
        first_event_ms=first_event_ms,
        first_received_ms=first_received_ms,
        digits=digits,
    )
    obj = encode_object(key, payload, compress=settings.use_compression)
    return BuiltFile(
        obj=obj,
        batches=len(records),
        events=events,
        raw_bytes=len(payload),
        first_received_ms=first_received_ms,
        first_event_ms=first_event_ms,
        filtered_out=filtered,
    )


_DIGITS = re.compile(r"_(\d{5})(\.txt(?:\.gz)?)$")


def with_new_digits(key: str, rng: random.Random) -> str:
    """The same key with fresh random digits: for a file whose key a different object holds."""
    match = _DIGITS.search(key)
    if match is None:
        raise ValueError(f"not an s3forward object key: {key!r}")
    current = match.group(1)
    digits = current
    while digits == current:
        digits = f"{rng.randrange(100_000):05d}"
    return f"{key[: match.start()]}_{digits}{match.group(2)}"
