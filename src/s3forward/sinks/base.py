"""The Sink contract: where sealed files go."""

from __future__ import annotations

import enum
from typing import Protocol

from s3forward.layout import EncodedObject

SHA256_METADATA = "s3forward-sha256"


class WriteOutcome(enum.Enum):
    """What a successful ``Sink.write`` did."""

    CREATED = "created"
    ALREADY_PRESENT = "already_present"


class Sink(Protocol):
    """A destination for sealed files.

    Contract:

    - ``write(obj)`` makes ``obj.key`` hold exactly ``obj.body``. It never overwrites: if the key
      already holds an object with the same sha256 (S3: object metadata ``s3forward-sha256``;
      localdir: the file's content) it returns ``ALREADY_PRESENT``, so retrying a write that may
      have succeeded is safe. If the key holds a different object it raises ``KeyTakenError``
      and the caller picks a new key.
    - Failures raise ``TransientSinkError`` (retry soon) or ``PermanentSinkError`` (an operator
      must fix something), each with a short ``code``; no third-party exception escapes.
    - A write that raised may or may not have landed; the next attempt with the same object
      settles it (``CREATED`` or ``ALREADY_PRESENT``).
    - Thread-safe: ``write`` may be called from several threads at once. ``close`` is called
      once, after the last write.
    """

    name: str

    def write(self, obj: EncodedObject) -> WriteOutcome: ...

    def close(self) -> None: ...


__all__ = ["SHA256_METADATA", "Sink", "WriteOutcome"]
