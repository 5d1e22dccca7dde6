"""The seam between the HTTP API and the durable pipeline.

The API authenticates and validates a request, then hands its batches to an ``Intake``. The intake
returns only once the batches are durable (fsync'd) or raises; the API answers 202 only after that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What happened to the batches of one accepted request."""

    stored: int
    """Batches written to the spool."""
    duplicates: int
    """Batches skipped because their ``source_request_id`` was already accepted (dedup window)."""


class Intake(Protocol):
    """Durable acceptance of validated batches.

    Contract: ``submit`` stores all of ``batches`` or none of them (one transaction). When it
    returns, the data survives a crash (kill -9, power loss after fsync). It raises
    ``SpoolFullError`` (answer 429 with Retry-After), ``SpoolUnavailableError`` (503) or
    ``StoppingError`` (503, the service is shutting down). Safe to call concurrently from the
    event loop; concurrent submits share one fsync (group commit).
    """

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult: ...

    def ready(self) -> tuple[bool, str]:
        """Whether new data can be taken now, and if not, why (plain words)."""
        ...
