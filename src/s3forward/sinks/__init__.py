"""Destinations for sealed files: a ``Sink`` Protocol and its implementations."""

from __future__ import annotations

from pathlib import Path

from s3forward.config import ConnectionSettings, Destination
from s3forward.sinks.base import SHA256_METADATA, Sink, WriteOutcome


def make_sink(
    settings: ConnectionSettings,
    *,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> Sink:
    """The sink a connection's settings describe: ``S3Sink`` or ``LocalDirSink``.

    ``connect_timeout`` / ``read_timeout`` bound each S3 request (None: the S3 sink's defaults).
    """
    if settings.destination is Destination.LOCALDIR:
        from s3forward.sinks.localdir import LocalDirSink  # noqa: PLC0415 - keep boto3 optional here

        root = settings.local_path or Path(settings.s3_bucket_name or settings.name)
        return LocalDirSink(root, settings.name)
    from s3forward.sinks.s3 import (  # noqa: PLC0415 - as above
        CONNECT_TIMEOUT,
        READ_TIMEOUT,
        S3Sink,
    )

    return S3Sink(
        settings,
        connect_timeout=CONNECT_TIMEOUT if connect_timeout is None else connect_timeout,
        read_timeout=READ_TIMEOUT if read_timeout is None else read_timeout,
    )


__all__ = ["SHA256_METADATA", "Sink", "WriteOutcome", "make_sink"]
