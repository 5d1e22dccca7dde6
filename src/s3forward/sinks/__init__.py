"""Destinations for sealed files: a ``Sink`` Protocol and its implementations."""

from __future__ import annotations

from pathlib import Path

from s3forward.config import ConnectionSettings, Destination
from s3forward.sinks.base import SHA256_METADATA, Sink, WriteOutcome


def make_sink(settings: ConnectionSettings) -> Sink:
    """The sink a connection's settings describe: ``S3Sink`` or ``LocalDirSink``."""
    if settings.destination is Destination.LOCALDIR:
        from s3forward.sinks.localdir import LocalDirSink  # noqa: PLC0415 - keep boto3 optional here

        root = settings.local_path or Path(settings.s3_bucket_name or settings.name)
        return LocalDirSink(root, settings.name)
    from s3forward.sinks.s3 import S3Sink  # noqa: PLC0415 - boto3 import is slow; only when used

    return S3Sink(settings)


__all__ = ["SHA256_METADATA", "Sink", "WriteOutcome", "make_sink"]
