"""BuildLoop: sealed windows -> built files -> stored in the spool, in a thread of its own.

It reads sealed windows through the ``SpoolView``, has the ``FileBuilder`` turn each into its
object (in a worker process), and stores the results with one writer operation per round. A
window is stored exactly once (the spool refuses a second file for a window); a crash between
building and storing only means building again, to the same bytes.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable

import structlog

from s3forward.builder import BuildJob, FileBuilder
from s3forward.config import Config
from s3forward.errors import S3ForwardError
from s3forward.files import BuiltFile, EmptyWindow
from s3forward.metrics import Metrics
from s3forward.pipeline.usage import SpoolUsage, on_disk
from s3forward.pipeline.writer import GroupCommitWriter, Op
from s3forward.spool.base import NewFile, SpoolTransaction, SpoolView, StoredWindow

log = structlog.get_logger("s3forward.build")

_BUILD_ROUND = 16


class BuildLoop:
    """Builds every sealed window of the configured connections, as they are sealed."""

    def __init__(
        self,
        config: Config,
        view: SpoolView,
        writer: GroupCommitWriter,
        builder: FileBuilder,
        usage: SpoolUsage,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.view = view
        self.writer = writer
        self.builder = builder
        self.usage = usage
        self.metrics = metrics
        self.stopped = threading.Event()
        self.wanted = threading.Event()
        self._building: set[int] = set()
        self._building_lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self._thread: threading.Thread | None = None

    def on_file_stored(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(connection name)`` after a file is stored (delivery wakes up)."""
        self._listeners.append(listener)

    def wake(self) -> None:
        self.wanted.set()

    def start(self) -> None:
        self.builder.start()
        self._thread = threading.Thread(target=self._loop, name="file-builder", daemon=True)
        self._thread.start()
        self.wanted.set()

    def stop(self, timeout: float) -> None:
        self.stopped.set()
        self.wanted.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.builder.close()

    def _loop(self) -> None:
        while not self.stopped.is_set():
            self.wanted.wait(timeout=1.0)
            self.wanted.clear()
            try:
                self.build_sealed()
            except S3ForwardError as exc:
                if self.stopped.is_set():
                    return  # shutting down: the windows stay sealed for the next start
                log.error("building files failed; will try again", error=str(exc))
                self.stopped.wait(0.5)
                self.wanted.set()
            except Exception:  # a bug must not stop file building for good
                log.exception("building files failed; will try again")
                self.stopped.wait(1.0)
                self.wanted.set()

    def _sealed(self, limit: int) -> list[StoredWindow]:
        return self.view.sealed_windows(limit=limit, connections=tuple(self.config.connections))

    def build_sealed(self) -> int:
        """Build and store a file for every sealed window. Returns how many were stored."""
        built = 0
        while not self.stopped.is_set():
            windows = self._sealed(_BUILD_ROUND)
            with self._building_lock:
                todo = [w for w in windows if w.window_id not in self._building]
                self._building.update(w.window_id for w in todo)
            if not todo:
                break
            try:
                stored = self._build_round(todo)
            finally:
                with self._building_lock:
                    self._building.difference_update(w.window_id for w in todo)
            built += stored
            if stored == 0:
                break  # nothing could be built this round: wait to be woken again
        return built

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until no sealed window is waiting to be built (used by drain and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._sealed(1):
                return True
            self.wanted.set()
            time.sleep(0.02)
        return False

    def _build_round(self, windows: list[StoredWindow]) -> int:
        jobs: list[tuple[StoredWindow, BuildJob]] = []
        for window in windows:
            settings = self.config.connections.get(window.connection)
            if settings is None:
                continue  # a connection removed from the config keeps its data on disk
            app = self.config.inputs.get(window.input)
            assert window.sealed_at is not None
            job = BuildJob(
                window_id=window.window_id,
                settings=settings.file_settings,
                app_name=app.app_name if app is not None else window.input,
                sealed_at=window.sealed_at,
                digits=window.digits if window.digits is not None else 0,
            )
            jobs.append((window, job))
        if not jobs:
            return 0
        results = self.builder.build([job for _, job in jobs])
        done = [(window, file) for (window, _), file in zip(jobs, results, strict=True)]
        self.writer.run(self._store_op(done))
        return sum(1 for _, file in done if isinstance(file, BuiltFile))

    def _store_op(self, done: list[tuple[StoredWindow, BuiltFile | EmptyWindow]]) -> Op:
        def apply(txn: SpoolTransaction, now: float) -> None:
            for window, built in done:
                if isinstance(built, EmptyWindow):
                    # Nothing left to write (batches without events not sent, alias requests
                    # not sent): the window and its batches are released.
                    txn.drop_window(window.window_id)
                    self.usage.unbuilt -= window.bytes
                    name = window.connection
                    self.writer.after_commit(
                        functools.partial(self._count_filtered, name, built.filtered_out)
                    )
                else:
                    self._store(txn, now, window, built)

        return apply

    def _store(
        self, txn: SpoolTransaction, now: float, window: StoredWindow, built: BuiltFile
    ) -> None:
        obj = built.obj
        file_id, _released = txn.store_file(
            NewFile(
                connection=window.connection,
                window_id=window.window_id,
                key=obj.key,
                body=obj.body,
                sha256=obj.sha256,
                content_type=obj.content_type,
                content_encoding=obj.content_encoding,
                raw_bytes=built.raw_bytes,
                batches=built.batches,
                events=built.events,
                sealed_at=window.sealed_at or now,
                first_received_ms=built.first_received_ms,
            )
        )
        # The file's bytes replace the projection its window's items were counted at.
        self.usage.unbuilt -= window.bytes
        self.usage.added += on_disk(len(obj.body))
        name = window.connection
        reason = window.seal_reason or "unknown"
        self.writer.after_commit(lambda: self._count_stored(name, reason, built))
        log.info(
            "file sealed",
            connection=name,
            window_id=window.window_id,
            file_id=file_id,
            reason=window.seal_reason,
            key=obj.key,
            batches=built.batches,
            events=built.events,
            bytes=len(obj.body),
        )
        for listener in self._listeners:
            self.writer.after_commit(functools.partial(listener, name))

    def _count_stored(self, connection: str, reason: str, built: BuiltFile) -> None:
        self.metrics.files_sealed_total.labels(connection, reason).inc()
        self.metrics.bytes_sealed_total.labels(connection).inc(built.raw_bytes)
        self._count_filtered(connection, built.filtered_out)

    def _count_filtered(self, connection: str, filtered_out: Counter[str]) -> None:
        for event_type, count in filtered_out.items():
            self.metrics.events_filtered_total.labels(connection, event_type).inc(count)
