"""GroupCommitWriter: the one thread that writes to the spool.

Work reaches it as operations ``op(txn, now)`` on a queue. It applies every waiting operation in
one transaction and commits once (group commit: concurrent requests share one fsync), then
answers each caller. If the commit fails (disk full, I/O error) every operation in it fails,
nothing is half-written, and ``reload`` makes the in-memory state match the spool again; while
that reload keeps failing, every operation is refused (503) so memory and disk never diverge.

One operation that fails (an ``S3ForwardError`` it raises is its answer; anything else is a bug
that may have left half its writes in the transaction) never fails the others of its commit:
on an unexpected exception the transaction is rolled back, the in-memory state reloaded, the
failing operation answered with its exception, and the others committed again without it.

Operations that want something done only once their commit is durable (metrics, waking a
worker) register it with ``after_commit``; a failed commit drops those actions.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from s3forward.clock import Clock
from s3forward.errors import S3ForwardError, SpoolUnavailableError, StoppingError
from s3forward.spool.base import Spool, SpoolTransaction

log = structlog.get_logger("s3forward.writer")

Op = Callable[[SpoolTransaction, float], Any]

_MAX_OPS_PER_COMMIT = 512


class _OpFailed(Exception):
    """Raised out of a transaction to roll it back because one operation failed unexpectedly."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class CommitParticipant(Protocol):
    """A part of the pipeline that takes part in every commit of the writer."""

    def before_ops(self, txn: SpoolTransaction, now: float, ops: list[Op]) -> None:
        """Called first in every transaction (e.g. read the dedup index for its ops)."""
        ...

    def after_ops(self, txn: SpoolTransaction, now: float) -> None:
        """Called last in every transaction (e.g. seal what is due, upkeep)."""
        ...

    def next_wakeup(self, now: float) -> float | None:
        """When (clock time) the writer must run a commit even with no work queued."""
        ...


@dataclass(slots=True)
class _Pending:
    op: Op
    future: Future[Any]


class GroupCommitWriter:
    """Runs operations on the spool in group commits, in one thread of its own."""

    def __init__(
        self,
        spool: Spool,
        clock: Clock,
        *,
        reload: Callable[[], None],
        participants: list[CommitParticipant],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """``on_commit`` runs after every successful commit, before its callers are answered
        (keep it cheap: the spool's usage and gauges)."""
        self.spool = spool
        self.clock = clock
        self._reload_state = reload
        self._participants = participants
        self._on_commit = on_commit
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._enqueue_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._after_commit: list[Callable[[], None]] = []
        self._needs_reload = False
        self.last_error: str | None = None
        """Why the last commit failed; None once one succeeds."""

    # ---------------------------------------------------------------- callers

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="spool-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op) -> Future[Any]:
        """Queue ``op`` for the next commit; its future resolves once that commit is durable."""
        future: Future[Any] = Future()
        with self._enqueue_lock:
            if self._closed:
                raise StoppingError("the spool writer has stopped")
            self._queue.put(_Pending(op, future))
        return future

    def run(self, op: Op) -> Any:
        """Run ``op`` in the next commit and wait for its result."""
        return self.submit(op).result()

    def after_commit(self, action: Callable[[], None]) -> None:
        """From inside an op: run ``action`` once this commit is durable (never if it fails)."""
        self._after_commit.append(action)

    def close(self, timeout: float = 10.0) -> bool:
        """Finish queued work and stop. Returns whether the thread stopped (if not, the spool
        must not be closed under it)."""
        with self._enqueue_lock:
            self._closed = True  # nothing may queue behind the stop marker
            self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    # ---------------------------------------------------------------- the thread

    def _seconds_to_next_wakeup(self) -> float:
        now = self.clock.now()
        wait = 1.0
        for part in self._participants:
            at = part.next_wakeup(now)
            if at is not None:
                wait = min(wait, max(0.0, at - now))
        return max(wait, 0.001)

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._seconds_to_next_wakeup())
            except queue.Empty:
                first = _Pending(lambda txn, now: None, Future())
            if first is None:
                self._drain_on_exit()
                return
            batch = [first]
            while len(batch) < _MAX_OPS_PER_COMMIT:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # handle the stop after this commit
                    break
                batch.append(item)
            self._commit_safely(batch)

    def _drain_on_exit(self) -> None:
        leftovers: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        if leftovers:
            self._commit_safely(leftovers)

    def _commit_safely(self, batch: list[_Pending]) -> None:
        """Commit, and whatever happens, answer every caller and keep the thread alive."""
        try:
            if self._needs_reload:
                self._reload()
            if self._needs_reload:
                error = SpoolUnavailableError(
                    f"the spool cannot be read back after a failed write: {self.last_error}"
                )
                _fail(batch, error)
                time.sleep(0.2)  # do not spin while the disk is failing
                return
            self._commit(batch)
        except BaseException as exc:
            log.exception("spool writer failed; continuing")
            self._needs_reload = True
            _fail(batch, exc)

    def _commit(self, batch: list[_Pending], *, isolate: bool = True) -> None:
        """One transaction for ``batch``. ``isolate``: an operation failing unexpectedly is
        answered alone and the rest tried once more (a second such failure, as when the disk
        itself fails under every operation, fails them all)."""
        now = self.clock.now()
        results: list[tuple[_Pending, Any, BaseException | None]] = []
        ops = [pending.op for pending in batch]
        try:
            with self.spool.write("storing accepted batches") as txn:
                for part in self._participants:
                    part.before_ops(txn, now, ops)
                for index, pending in enumerate(batch):
                    try:
                        results.append((pending, pending.op(txn, now), None))
                    except S3ForwardError as exc:
                        results.append((pending, None, exc))
                    except Exception as exc:
                        raise _OpFailed(index, exc) from exc
                for part in self._participants:
                    part.after_ops(txn, now)
        except _OpFailed as failed:
            # Rolled back: answer the failing operation, undo the in-memory effects of the
            # whole attempt, and commit the others without it.
            log.error("spool operation failed", exc_info=failed.error)
            self._after_commit = []
            batch[failed.index].future.set_exception(failed.error)
            rest = batch[: failed.index] + batch[failed.index + 1 :]
            self._reload()
            if not rest:
                return
            if isolate and not self._needs_reload:
                self._commit(rest, isolate=False)
            else:
                _fail(rest, failed.error)
            return
        except SpoolUnavailableError as exc:
            self.last_error = str(exc)
            log.error("spool write failed", error=str(exc))
            self._fail_commit(batch, exc)
            return
        except Exception as exc:  # a bug must not kill the writer; callers see the error
            log.exception("spool operation failed")
            self._fail_commit(batch, exc)
            return
        self.last_error = None
        after, self._after_commit = self._after_commit, []
        if self._on_commit is not None:
            try:
                self._on_commit()  # first, so callers see the state their commit made
            except Exception:
                log.exception("after-commit bookkeeping failed")
        for pending, value, error in results:
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(value)
        for action in after:  # metrics and wake-ups: never at the expense of an answer
            try:
                action()
            except Exception:
                log.exception("after-commit action failed")

    def _fail_commit(self, batch: list[_Pending], exc: BaseException) -> None:
        """Nothing of this commit happened: tell every caller, then undo its in-memory effects."""
        self._after_commit = []
        _fail(batch, exc)
        self._reload()

    def _reload(self) -> None:
        try:
            self._reload_state()
            self._needs_reload = False
        except Exception as exc:  # the disk may still be failing
            self._needs_reload = True
            log.error("cannot reload the spool; refusing writes until it can", error=str(exc))


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
