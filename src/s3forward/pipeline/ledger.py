"""DeliveryLedger: delivery's bookkeeping in the spool (implements ``delivery.Ledger``).

Reads (which files are due, a file's body) go straight to the spool's view; every state change
(delivered, attempt failed, new key) is one writer operation, durable when the call returns.
"""

from __future__ import annotations

from s3forward.pipeline.writer import GroupCommitWriter
from s3forward.spool.base import SpoolView, StoredFile


class DeliveryLedger:
    def __init__(self, view: SpoolView, writer: GroupCommitWriter) -> None:
        self.view = view
        self.writer = writer

    def due_files(self, connection: str, now: float, limit: int) -> list[StoredFile]:
        return self.view.due_files(connection, now, limit)

    def file_body(self, file_id: int) -> bytes | None:
        return self.view.file_body(file_id)

    def delivered(self, file_id: int) -> None:
        # The freed pages leave ``usage`` when the commit measures the footprint again.
        self.writer.run(lambda txn, now: txn.mark_delivered(file_id, now))

    def failed(self, file_id: int, next_attempt_at: float, error: str) -> None:
        self.writer.run(lambda txn, now: txn.mark_attempt_failed(file_id, next_attempt_at, error))

    def rekeyed(self, file_id: int, key: str) -> None:
        self.writer.run(lambda txn, now: txn.rekey(file_id, key))
