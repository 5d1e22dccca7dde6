"""mParticle Events API v2 batches: parsing and validation, routing fields, the outbound form."""

from s3forward.mparticle.catalogue import EVENT_TYPES, validate_batch
from s3forward.mparticle.outbound import batch_id_for, new_batch_id, to_outbound
from s3forward.mparticle.parse import (
    Limits,
    decode_body,
    device_key,
    ends_session,
    first_event_time_ms,
    parse_bulk_request,
    parse_events_request,
    read_batches,
    session_key,
    split_events,
)

__all__ = [
    "EVENT_TYPES",
    "Limits",
    "batch_id_for",
    "decode_body",
    "device_key",
    "ends_session",
    "first_event_time_ms",
    "new_batch_id",
    "parse_bulk_request",
    "parse_events_request",
    "read_batches",
    "session_key",
    "split_events",
    "to_outbound",
    "validate_batch",
]
