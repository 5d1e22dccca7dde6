"""SpoolUpkeep: once a minute, inside a commit, forget old dedup entries and delivered files."""

from __future__ import annotations

from s3forward.config import SpoolSettings
from s3forward.pipeline.writer import Op
from s3forward.spool.base import SpoolTransaction

_INTERVAL = 60.0
DELIVERED_HISTORY = 1000
"""Delivered files kept as history (status page, `spool list`)."""


class SpoolUpkeep:
    """A writer participant: dedup index past its window, delivered history past its length."""

    def __init__(self, settings: SpoolSettings) -> None:
        self.settings = settings
        self._last = 0.0

    def before_ops(self, txn: SpoolTransaction, now: float, ops: list[Op]) -> None:
        return None

    def after_ops(self, txn: SpoolTransaction, now: float) -> None:
        if now - self._last < _INTERVAL:
            return
        self._last = now
        txn.forget_requests_before(now - self.settings.dedup_window)
        txn.prune_delivered(DELIVERED_HISTORY)

    def next_wakeup(self, now: float) -> float | None:
        return None
