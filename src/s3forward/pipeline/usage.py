"""SpoolUsage: the bytes the spool holds, as the writer thread keeps count of them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SpoolUsage:
    """Bytes of accepted batch bodies plus undelivered file bodies in the spool.

    Changed only by operations on the writer thread; reset from the spool after a failed
    commit. Readers on other threads see a recent value (a plain int is read atomically).
    """

    bytes: int = 0
