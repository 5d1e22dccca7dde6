"""The single-node pipeline, wired: accepted batches -> windows -> sealed files, in a spool.

``Engine`` composes the parts of ``s3forward.pipeline``, each with one job, over any ``Spool``:

- ``GroupCommitWriter``: the one thread that writes, in group commits;
- ``Ingest``: the ``Intake`` (cap, dedup, placement) whose answer waits for the commit;
- ``WindowBook``: every connection's open windows, restored from the spool at start;
- ``BuildLoop``: sealed windows built into files (in a worker process) and stored once;
- ``DeliveryLedger``: delivery's bookkeeping (``delivery.Ledger``).

No I/O happens in the constructor: ``load`` reads the spool's state, ``start`` starts threads.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from s3forward.builder import FileBuilder
from s3forward.clock import Clock, SystemClock
from s3forward.config import Config
from s3forward.intake import SubmitResult
from s3forward.metrics import Metrics
from s3forward.pipeline.buildloop import BuildLoop
from s3forward.pipeline.ingest import READY_FRACTION, Ingest
from s3forward.pipeline.ledger import DeliveryLedger
from s3forward.pipeline.upkeep import SpoolUpkeep
from s3forward.pipeline.usage import SpoolUsage
from s3forward.pipeline.windowbook import ConfigChanges, WindowBook
from s3forward.pipeline.writer import GroupCommitWriter, Op
from s3forward.spool.base import Spool, SpoolTransaction
from s3forward.windows import SealReason

__all__ = ["READY_FRACTION", "ConfigChanges", "Engine"]


class Engine:
    """Implements ``Intake``: durable acceptance, windowing over time, file building."""

    def __init__(
        self,
        config: Config,
        spool: Spool,
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        build_processes: int = 0,
    ) -> None:
        self.config = config
        self.spool = spool
        self.metrics = metrics
        self.clock = clock or SystemClock()
        rng = rng or random.Random()
        self.usage = SpoolUsage()
        participants: list[Any] = []
        self.writer = GroupCommitWriter(
            spool,
            self.clock,
            reload=self.load,
            participants=participants,
            on_commit=self._committed,
        )
        self.builds = BuildLoop(
            config,
            spool,
            self.writer,
            FileBuilder(spool.worker_view(), processes=build_processes if spool.shareable() else 0),
            self.usage,
            metrics,
        )
        self.book = WindowBook(
            config,
            metrics,
            rng=rng,
            after_commit=self.writer.after_commit,
            on_sealed=self.builds.wake,
        )
        self.ingest = Ingest(config, self.writer, self.book, self.usage, rng=rng)
        self.upkeep = SpoolUpkeep(config.spool)
        participants += [self.ingest, self.book, self.upkeep]
        self.ledger = DeliveryLedger(spool, self.writer)
        self._committed_config = config

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> None:
        """Read the windows and the spool's size from the spool; all or nothing.

        Also after a failed commit: every part goes back to the last committed config, so a
        reload whose switch did not commit leaves nothing of itself behind.
        """
        self._use_config(self._committed_config)
        windows = self.spool.open_windows() + self.spool.sealed_windows(limit=2**62)
        unbuilt = sum(w.bytes for w in windows)
        footprint = self.spool.footprint_bytes()
        self.book.load(self.spool)
        self.usage.unbuilt = unbuilt
        self.usage.committed(footprint)
        self._update_gauges()

    def _committed(self) -> None:
        self.usage.committed(self.spool.footprint_bytes())
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.book.update_gauges()
        self.metrics.spool_bytes.set(self.usage.bytes)

    def start(self) -> None:
        self.load()
        self.spool.start_background()
        self.writer.start()
        self.builds.start()

    def stop_intake(self) -> None:
        """Refuse new data from now on (503); work already queued still completes."""
        self.ingest.stopping.set()

    def close(self, timeout: float = 10.0) -> bool:
        """Finish queued work, then stop the writer and builder threads.

        Returns whether the writer stopped; if not, the spool must not be closed under it.
        """
        self.stop_intake()
        self.builds.stop(timeout)
        return self.writer.close(timeout)

    def apply_config(self, config: Config) -> ConfigChanges:
        """Switch to ``config`` (a reload) between two commits; nothing stored is lost.

        One writer operation: every batch committed before it used the old config, every
        batch after it the new one. Windows: see ``WindowBook.switch``. Every file built
        after the switch uses the new settings (sealed windows included), and a changed
        connection's files waiting for a retry are due at once (e.g. rotated keys). Inputs,
        spool limits and everything read per request apply to the next request. The caller
        validates ``config`` first; only ``spool.path`` may not change (ValueError).
        """
        if config.spool.path != self.config.spool.path:
            raise ValueError("spool.path cannot change while running")

        def apply(txn: SpoolTransaction, now: float) -> ConfigChanges:
            changes = self.book.switch(config, self.spool)
            for name in changes.changed:
                txn.retry_now(name, now)
            self._use_config(config)
            self.writer.after_commit(lambda: setattr(self, "_committed_config", config))
            self.writer.after_commit(self.builds.wake)  # an added connection's sealed windows
            return changes

        changes: ConfigChanges = self.writer.run(apply)
        return changes

    def _use_config(self, config: Config) -> None:
        self.config = self.ingest.config = self.builds.config = self.book.config = config
        self.upkeep.settings = config.spool

    # ---------------------------------------------------------------- Intake

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        return await self.ingest.submit(input_name, batches, received_at=received_at)

    def submit_sync(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        return self.ingest.submit_sync(input_name, batches, received_at=received_at)

    def ready(self) -> tuple[bool, str]:
        return self.ingest.ready()

    # ---------------------------------------------------------------- operations

    @property
    def spool_bytes(self) -> int:
        return self.usage.bytes

    def run(self, op: Op) -> Any:
        """Run an operation in the writer's next transaction and wait for its result."""
        return self.writer.run(op)

    def seal_all(self, reason: SealReason = SealReason.DRAIN) -> int:
        """Seal every open window now (drain). Returns how many were sealed."""
        sealed: int = self.writer.run(lambda txn, now: self.book.seal_all(txn, now, reason))
        return sealed

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until no sealed window is waiting to be built (used by drain and tests)."""
        return self.builds.settle(timeout)

    def open_window_counts(self) -> dict[str, int]:
        return self.book.open_counts()

    def on_file_stored(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(connection name)`` after a file is stored (delivery wakes up)."""
        self.builds.on_file_stored(listener)
