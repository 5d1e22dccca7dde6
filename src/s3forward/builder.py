"""Building sealed windows into files, in a separate process.

Turning a window's batches into its file (parse the stored JSON, filter, outbound form,
NDJSON, gzip) is the service's heaviest CPU work after parsing requests. Done in the server's
process it would compete for the GIL with the HTTP loop and the spool writer; so a worker
process reads the window's items straight from the spool (SQLite allows readers in other
processes) and sends back the finished bytes. The engine stores them. Nothing is written by the
worker, so a crash of either process leaves the spool as it was: the window stays sealed and is
built again.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import orjson

from s3forward.config import ConnectionSettings
from s3forward.errors import S3ForwardError
from s3forward.files import BuiltFile, FileItem, build_file
from s3forward.spool.sqlite import connect, read_window_items


class BuilderError(S3ForwardError):
    """Building files failed for a reason outside the data (the worker process died)."""


@dataclass(frozen=True, slots=True)
class BuildJob:
    """What a worker needs to build one sealed window's file."""

    window_id: int
    settings: ConnectionSettings
    app_name: str
    sealed_at: float


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit when the server process is gone.

    A pool worker blocks on its task queue and would outlive a server killed with SIGKILL
    (nothing closes the queue), so a daemon thread checks once a second who its parent is.
    """

    # Ctrl-C in a terminal signals the whole process group: the server stops this worker
    # itself, so the worker must not die of KeyboardInterrupt with a traceback (issue 12).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


_worker_conn: sqlite3.Connection | None = None
_worker_path: str | None = None
_worker_rng = random.Random()


def _worker_connection(spool_path: str) -> sqlite3.Connection:
    global _worker_conn, _worker_path  # noqa: PLW0603 - one connection per worker process
    if _worker_conn is None or _worker_path != spool_path:
        _worker_conn = connect(Path(spool_path), writer=False)
        _worker_path = spool_path
    return _worker_conn


def build_window(spool_path: str, job: BuildJob) -> BuiltFile | None:
    """Build one window's file from the spool. None when the window is gone or empty."""
    conn = _worker_connection(spool_path)
    items = [
        FileItem(
            batch=orjson.loads(item.body),
            received_ms=item.received_ms,
            batch_id=item.batch_id,
            event_index=item.event_index,
        )
        for item in read_window_items(conn, job.window_id)
    ]
    if not items:
        return None
    return build_file(
        items, job.settings, app_name=job.app_name, sealed_at=job.sealed_at, rng=_worker_rng
    )


def build_windows(spool_path: str, jobs: list[BuildJob]) -> list[BuiltFile | None]:
    """Build several windows in one round trip to the worker."""
    return [build_window(spool_path, job) for job in jobs]


class FileBuilder:
    """Builds files in a worker process (``processes=1``, the default) or in the caller's
    thread (``processes=0``: tests, and machines that cannot start processes)."""

    def __init__(self, spool_path: Path, *, processes: int = 1) -> None:
        self.spool_path = str(spool_path)
        self._executor: Executor | None = None
        self._processes = processes
        self._context = multiprocessing.get_context("spawn")
        if processes > 0:
            self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=self._context,
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def build(self, jobs: list[BuildJob]) -> list[BuiltFile | None]:
        if self._executor is None:
            return build_windows(self.spool_path, jobs)
        try:
            return self._executor.submit(build_windows, self.spool_path, jobs).result()
        except BrokenProcessPool:
            # The worker died (killed, out of memory): start a new one; the windows are
            # still sealed in the spool and the caller tries them again.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            raise BuilderError("the file-building process stopped; restarted it") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
