"""A validated batch reduced to what storing and placing it needs (issue 10: every core).

``prepare_batches`` is the one function that turns validated batches into ``PreparedBatch``es:
the dedup key, the body as the spool stores it (compressed), the window group per batching
mode, whether it ends its session, event sizes for per-event connections and the session
parts for per-session connections. It is pure and runs wherever the batches were validated:
on the event loop in a single process, or in an HTTP worker process, which sends the result
to the engine (``api.frames``). ``Ingest`` places only prepared batches, so both paths share
one copy of these rules and the engine never sees, or re-validates, the batch itself.

What is computed depends on the batching modes of the input's connections (``modes_for``):
event sizes cost a serialisation per event and are only made for ``per_event``. A request
prepared under one configuration and placed under another (a reload in between) may lack a
fact; ``missing_modes`` says so and the engine refuses it (503, the client retries).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import orjson

from s3forward.config import BatchingMode, Config
from s3forward.mparticle import dedup_key, ends_session, split_by_session
from s3forward.mparticle.catalogue import as_int64
from s3forward.spool.codec import compress_body
from s3forward.windows import group_of


class PreparedPart(msgspec.Struct, array_like=True, frozen=True):
    """One session's part of a batch holding several sessions (per-session connections)."""

    body_bytes: int
    """Length of the part's compact JSON (what the files built from it are sized by)."""
    stored: bytes
    """The part's JSON as the spool stores it (``BodyCodec.ZLIB``)."""
    group: str
    ends_session: bool


class PreparedBatch(msgspec.Struct, array_like=True, frozen=True):
    """Everything ``Ingest`` needs to store and place one validated batch."""

    dedup_key: str | None
    """``mparticle.dedup_key`` of the batch; None: no dedup."""
    body_bytes: int
    stored: bytes
    events: int
    """How many events the batch holds."""
    batch_id: int | None
    """The batch's own valid int64 ``batch_id``; None: the engine draws one when storing it."""
    device_group: str
    """The window of ``per_device`` connections (and of ``per_event`` ones without events)."""
    session_group: str | None
    """The window of ``per_session`` connections; None unless prepared for them."""
    ends_session: bool
    event_sizes: list[int]
    """Each event's JSON length; empty unless prepared for ``per_event`` (and events exist)."""
    parts: list[PreparedPart]
    """One part per session when prepared for ``per_session`` and the batch holds several
    sessions; empty otherwise (the batch is stored whole)."""


def modes_for(config: Config, input_name: str) -> frozenset[BatchingMode]:
    """The batching modes of the connections that read ``input_name``."""
    return frozenset(c.batching_mode for c in config.connections_for_input(input_name))


def missing_modes(
    prepared_for: Iterable[BatchingMode], needed: Iterable[BatchingMode]
) -> set[BatchingMode]:
    """The modes placement needs that a request was not prepared for (empty: fine)."""
    return set(needed) - set(prepared_for)


def prepare_batches(
    input_name: str,
    batches: Sequence[dict[str, Any]],
    bodies: Sequence[bytes],
    modes: frozenset[BatchingMode],
) -> list[PreparedBatch]:
    """``batches`` (validated, with each one's compact JSON in ``bodies``) made ready for
    ``Ingest``, for connections of ``modes``. Pure: no clock, no randomness, no I/O."""
    return [
        _prepare(input_name, batch, body, modes)
        for batch, body in zip(batches, bodies, strict=True)
    ]


def _prepare(
    input_name: str, batch: dict[str, Any], body: bytes, modes: frozenset[BatchingMode]
) -> PreparedBatch:
    events = batch.get("events")
    event_list: list[Any] = events if type(events) is list else []
    per_session = BatchingMode.PER_SESSION in modes
    parts: list[PreparedPart] = []
    if per_session:
        split = split_by_session(batch)
        if len(split) > 1:
            for part in split:
                part_body = orjson.dumps(part)  # rare: one batch of several sessions
                parts.append(
                    PreparedPart(
                        body_bytes=len(part_body),
                        stored=compress_body(part_body),
                        group=group_of(part, input_name, BatchingMode.PER_SESSION),
                        ends_session=ends_session(part),
                    )
                )
    session_group = group_of(batch, input_name, BatchingMode.PER_SESSION) if per_session else None
    sizes: list[int] = []
    if BatchingMode.PER_EVENT in modes and event_list:
        sizes = [len(orjson.dumps(e)) for e in event_list]
    return PreparedBatch(
        dedup_key=dedup_key(batch),
        body_bytes=len(body),
        stored=compress_body(body),
        events=len(event_list),
        batch_id=as_int64(batch.get("batch_id")),
        device_group=group_of(batch, input_name, BatchingMode.PER_DEVICE),
        session_group=session_group,
        ends_session=per_session and ends_session(batch),
        event_sizes=sizes,
        parts=parts,
    )


__all__ = [
    "PreparedBatch",
    "PreparedPart",
    "missing_modes",
    "modes_for",
    "prepare_batches",
]
