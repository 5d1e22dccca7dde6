"""mParticle Events API v2 batches: parsing and validation, routing fields, the outbound form."""

from s3forward.mparticle.catalogue import EVENT_TYPES, validate_batch
from s3forward.mparticle.outbound import alias_outbound, batch_id_for, new_batch_id, to_outbound
from s3forward.mparticle.parse import (
    Limits,
    decode_body,
    device_key,
    ends_session,
    first_event_time_ms,
    parse_alias_request,
    parse_bulk_request,
    parse_events_request,
    read_batches,
    session_key,
    split_events,
)
from s3forward.mparticle.requests import dedup_key, is_alias_request
from s3forward.mparticle.sessions import split_by_session

__all__ = [
    "EVENT_TYPES",
    "Limits",
    "alias_outbound",
    "batch_id_for",
    "decode_body",
    "dedup_key",
    "device_key",
    "ends_session",
    "first_event_time_ms",
    "is_alias_request",
    "new_batch_id",
    "parse_alias_request",
    "parse_bulk_request",
    "parse_events_request",
    "read_batches",
    "session_key",
    "split_by_session",
    "split_events",
    "to_outbound",
    "validate_batch",
]
