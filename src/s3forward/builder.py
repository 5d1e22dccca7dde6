"""Building sealed windows into files, in a separate process.

Turning a window's batches into its file (parse the stored JSON, filter, outbound form,
NDJSON, gzip) is the service's heaviest CPU work after parsing requests. Done in the server's
process it would compete for the GIL with the HTTP loop and the spool writer; so a worker
process reads the window's items through a read-only ``SpoolView`` (the spool's
``worker_view``) and sends back the finished bytes. The build loop stores them. Nothing is
written by the worker, so a crash of either process leaves the spool as it was: the window stays
sealed and is built again, to the same bytes (``files.build_file`` is deterministic).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import orjson

from s3forward.config import FileSettings
from s3forward.errors import BuilderError
from s3forward.files import BuiltFile, EmptyWindow, FileItem, build_file
from s3forward.spool.base import SpoolView

ViewFactory = Callable[[], SpoolView]


@dataclass(frozen=True, slots=True)
class BuildJob:
    """What a worker needs to build one sealed window's file (no secrets: it is pickled)."""

    window_id: int
    settings: FileSettings
    app_name: str
    sealed_at: float
    digits: int


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


_views: dict[ViewFactory, SpoolView] = {}


def _view(factory: ViewFactory) -> SpoolView:
    view = _views.get(factory)
    if view is None:
        view = _views[factory] = factory()
    return view


def build_window(view: SpoolView, job: BuildJob) -> BuiltFile | EmptyWindow:
    """Build one window's file; ``EmptyWindow`` when the window is gone or writes nothing."""
    items = [
        FileItem(
            batch=orjson.loads(item.body),
            received_ms=item.received_ms,
            batch_id=item.batch_id,
            event_index=item.event_index,
            position=item.position,
            input=item.input,
        )
        for item in view.window_items(job.window_id)
    ]
    if not items:
        return EmptyWindow()
    return build_file(
        items, job.settings, app_name=job.app_name, sealed_at=job.sealed_at, digits=job.digits
    )


def build_windows(factory: ViewFactory, jobs: list[BuildJob]) -> list[BuiltFile | EmptyWindow]:
    """Build several windows in one round trip to the worker."""
    view = _view(factory)
    return [build_window(view, job) for job in jobs]


class FileBuilder:
    """Builds files in a worker process (``processes=1``, the default) or in the caller's
    thread (``processes=0``: tests, spools that cannot be shared, machines without processes).

    No I/O until the first ``build``: the worker process starts then.
    """

    def __init__(self, views: ViewFactory, *, processes: int = 1) -> None:
        self.views = views
        self._executor: Executor | None = None
        self._processes = processes
        self._context = multiprocessing.get_context("spawn")

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=self._context,
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def start(self) -> None:
        """Start the worker process now rather than at the first build."""
        if self._processes > 0 and self._executor is None:
            self._executor = self._new_executor()

    def build(self, jobs: list[BuildJob]) -> list[BuiltFile | EmptyWindow]:
        if self._processes == 0:
            return build_windows(self.views, jobs)
        self.start()
        assert self._executor is not None
        try:
            return self._executor.submit(build_windows, self.views, jobs).result()
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
