"""Prometheus metrics of s3forward, all in one registry owned by a ``Metrics`` object.

Each ``Metrics`` owns its own ``CollectorRegistry`` (never the process-global one), so that tests
and several services in one process never share counters. Every metric is defined here, up
front, so that the names and labels are one documented list; the parts of the service only
increment them. Names are prefixed ``s3forward_``; byte counters say whether they count
uncompressed (sealed) or stored (delivered) bytes.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PROMETHEUS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST

REJECT_REASONS = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "too_large",
    "timeout",
    "spool_full",
    "unavailable",
    "not_found",
    "method_not_allowed",
    "unsupported_media_type",
    "internal",
    # Issue 13: web inputs.
    "origin_not_allowed",
    "rate_limited",
    "quota_exceeded",
    "unprocessable",
)
"""Values of the ``reason`` label of ``requests_rejected_total``."""

# Ingest is fast (a group-committed fsync); uploads can take seconds on a slow link.
_INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_UPLOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Every metric of one s3forward service, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        # Ingest API.
        self.batches_received_total = Counter(
            "s3forward_batches_received_total",
            "Batches accepted by the API (202), duplicates included.",
            ["input"],
            registry=r,
        )
        self.events_received_total = Counter(
            "s3forward_events_received_total",
            "Events in the batches accepted by the API.",
            ["input"],
            registry=r,
        )
        self.requests_rejected_total = Counter(
            "s3forward_requests_rejected_total",
            "API requests answered with an error, by reason; input is '-' before authentication.",
            ["input", "reason"],
            registry=r,
        )
        self.batches_deduplicated_total = Counter(
            "s3forward_batches_deduplicated_total",
            "Accepted batches not stored again because their source_request_id was already seen.",
            ["input"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "s3forward_ingest_seconds",
            "Time from the start of an ingest request to its 202 answer.",
            ["endpoint"],
            buckets=_INGEST_BUCKETS,
            registry=r,
        )
        # Filtering and windows.
        self.events_filtered_total = Counter(
            "s3forward_events_filtered_total",
            "Events removed by a connection's filters.",
            ["connection", "event_type"],
            registry=r,
        )
        self.windows_open = Gauge(
            "s3forward_windows_open",
            "Batching windows (device, session) currently open.",
            ["connection"],
            registry=r,
        )
        self.files_sealed_total = Counter(
            "s3forward_files_sealed_total",
            "Files built for delivery, by why their window was sealed (a window that writes "
            "nothing, every event filtered out, is no file).",
            ["connection", "reason"],
            registry=r,
        )
        self.bytes_sealed_total = Counter(
            "s3forward_bytes_sealed_total",
            "Bytes of NDJSON sealed into files, before compression.",
            ["connection"],
            registry=r,
        )
        # Delivery.
        self.files_delivered_total = Counter(
            "s3forward_files_delivered_total",
            "Files written to their destination.",
            ["connection"],
            registry=r,
        )
        self.bytes_delivered_total = Counter(
            "s3forward_bytes_delivered_total",
            "Bytes written to the destination, as stored (after compression).",
            ["connection"],
            registry=r,
        )
        self.file_uploads_retried_total = Counter(
            "s3forward_file_uploads_retried_total",
            "Upload attempts that failed with a transient error and will be retried.",
            ["connection", "error"],
            registry=r,
        )
        self.file_uploads_failed_total = Counter(
            "s3forward_file_uploads_failed_total",
            "Upload attempts that failed with a permanent error (data kept, retried slowly).",
            ["connection", "error"],
            registry=r,
        )
        self.upload_seconds = Histogram(
            "s3forward_upload_seconds",
            "Duration of one successful file upload.",
            ["connection"],
            buckets=_UPLOAD_BUCKETS,
            registry=r,
        )
        self.oldest_undelivered_age_seconds = Gauge(
            "s3forward_oldest_undelivered_age_seconds",
            "Age of the oldest accepted batch not yet delivered (0 when none).",
            ["connection"],
            registry=r,
        )
        self.connection_healthy = Gauge(
            "s3forward_connection_healthy",
            "1 when the connection's last upload succeeded or failed only transiently, else 0.",
            ["connection"],
            registry=r,
        )
        # Spool.
        self.spool_bytes = Gauge(
            "s3forward_spool_bytes",
            "Bytes the local spool holds, as counted against spool.max_bytes: database pages "
            "in use (an empty spool has a few) plus the projected size of files to be built.",
            registry=r,
        )
        self.spool_files = Gauge(
            "s3forward_spool_files",
            "Files in the spool, by state.",
            ["state"],
            registry=r,
        )
        # Operating (issue 12).
        self.config_reloads_total = Counter(
            "s3forward_config_reloads_total",
            "Configuration reloads (SIGHUP or s3forward reload), by result: applied, rejected.",
            ["result"],
            registry=r,
        )
        self.config_last_reload_success = Gauge(
            "s3forward_config_last_reload_success",
            "1 when the last reload was applied (or none was tried), 0 when it was rejected.",
            registry=r,
        )
        self.config_last_reload_success.set(1)
        self.log_messages_suppressed_total = Counter(
            "s3forward_log_messages_suppressed_total",
            "Repeated identical warnings and errors left out of the log (see logs.py).",
            registry=r,
        )
        # Issue 10: HTTP worker processes ([server] workers > 1).
        self.http_workers_running = Gauge(
            "s3forward_http_workers_running",
            "HTTP worker processes running now (0 when the engine serves HTTP itself).",
            registry=r,
        )
        self.http_worker_restarts_total = Counter(
            "s3forward_http_worker_restarts_total",
            "HTTP worker processes that exited while serving and were started again.",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric in this registry."""
        return bytes(generate_latest(self.registry))


__all__ = ["PROMETHEUS_CONTENT_TYPE", "REJECT_REASONS", "Metrics"]
