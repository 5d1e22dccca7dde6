"""The durable pipeline: accepted batches -> windows -> sealed files, all in the spool.

One writer thread owns the spool's write connection and every connection's ``Windower``. Work
reaches it as operations on a queue; it applies every waiting operation in one transaction and
commits once (group commit: concurrent requests share one fsync), then answers each caller. If
a commit fails (disk full, I/O error) every operation in it fails, nothing is half-written, and
the in-memory windows are reloaded from the spool so memory and disk agree again.

A builder thread turns sealed windows into files (filters, outbound form, encoding, key) outside
the writer, and hands the result back to the writer to store. Delivery (``delivery.py``) takes
stored files from there.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from s3forward.builder import BuildJob, FileBuilder
from s3forward.clock import Clock, SystemClock
from s3forward.config import BatchingMode, Config, ConnectionSettings
from s3forward.errors import (
    S3ForwardError,
    SpoolFullError,
    SpoolUnavailableError,
    StoppingError,
)
from s3forward.files import BuiltFile
from s3forward.intake import SubmitResult
from s3forward.metrics import Metrics
from s3forward.mparticle import batch_id_for, device_key, ends_session, session_key
from s3forward.mparticle.parse import ValidatedBatches
from s3forward.spool.sqlite import SqliteSpool, StoredWindow, WriteSet
from s3forward.windows import OpenWindow, Sealed, SealReason, Windower, WindowPolicy

log = structlog.get_logger("s3forward.engine")

_MAX_OPS_PER_COMMIT = 512
_BUILD_ROUND = 16
_MAINTENANCE_INTERVAL = 60.0
_DELIVERED_HISTORY = 1000
READY_FRACTION = 0.9
"""Readiness turns false at this fraction of the spool cap, before ingest starts answering 429."""

Op = Callable[[sqlite3.Connection, float], Any]


@dataclass(slots=True)
class _Pending:
    op: Op
    future: Future[Any]


@dataclass(frozen=True, slots=True)
class ConfigChanges:
    """Which connections a reload added, removed or changed (by name)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


@dataclass(slots=True)
class _ConnectionState:
    settings: ConnectionSettings
    windower: Windower
    next_seq: dict[int, int] = field(default_factory=dict)
    window_input: dict[int, str] = field(default_factory=dict)


def group_of(batch: dict[str, Any], input_name: str, mode: BatchingMode) -> str:
    """The window a batch joins: per input and device, or per input and session."""
    if mode is BatchingMode.PER_SESSION:
        session = session_key(batch)
        if session is not None:
            return f"{input_name}\x1fsession:{session}"
    return f"{input_name}\x1f{device_key(batch)}"


def _wanted_requests(batch: list[_Pending]) -> dict[str, set[str]]:
    """The source_request_ids of every ingest operation in a commit, per input."""
    wanted: dict[str, set[str]] = {}
    for pending in batch:
        op = pending.op
        if isinstance(op, _IngestOp):
            ids = wanted.setdefault(op.input_name, set())
            ids.update(rid for rid in op.request_ids if rid is not None)
    return wanted


class _IngestOp:
    """One accepted request's batches, waiting for the writer's next commit."""

    __slots__ = ("batches", "bodies", "engine", "input_name", "received_at", "request_ids")

    def __init__(
        self,
        engine: Engine,
        input_name: str,
        batches: list[dict[str, Any]],
        bodies: list[bytes],
        received_at: float,
    ) -> None:
        self.engine = engine
        self.input_name = input_name
        self.batches = batches
        self.bodies = bodies
        self.received_at = received_at
        self.request_ids = [
            rid if isinstance(rid := b.get("source_request_id"), str) and rid else None
            for b in batches
        ]

    def __call__(self, conn: sqlite3.Connection, now: float) -> SubmitResult:
        return self.engine._apply_ingest(self, now)


class Engine:
    """Implements ``Intake``: durable acceptance, windowing over time, file building."""

    def __init__(
        self,
        config: Config,
        spool: SqliteSpool,
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
        self.rng = rng or random.Random()
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._build_wanted = threading.Event()
        self._building: set[int] = set()
        self._building_lock = threading.Lock()
        self._file_listeners: list[Callable[[str], None]] = []
        self._after_commit: list[Callable[[], None]] = []
        self._writes = WriteSet()
        self._next_batch_ref = 0
        self._spool_bytes = 0
        self._last_error: str | None = None
        self._last_maintenance = 0.0
        self._connections: dict[str, _ConnectionState] = {}
        self._next_window_id = 0
        self._writer: threading.Thread | None = None
        self._file_builder = FileBuilder(spool.path, processes=build_processes)
        self._writer_done = False
        self._needs_reload = False
        self._enqueue_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._load_state()

    # ---------------------------------------------------------------- state

    def _load_state(self) -> None:
        """Rebuild the in-memory windows from the spool; all or nothing."""
        next_window_id = self.spool.max_window_id()
        next_batch_ref = self.spool.max_batch_ref()
        connections = {
            name: _ConnectionState(
                settings=settings,
                windower=Windower(
                    WindowPolicy.from_settings(settings), next_id=self._new_window_id
                ),
            )
            for name, settings in self.config.connections.items()
        }
        orphans: set[str] = set()
        for stored in self.spool.open_windows():
            state = connections.get(stored.connection)
            if state is None:
                orphans.add(stored.connection)  # a removed connection keeps its data on disk
                continue
            state.windower.restore(
                OpenWindow(
                    window_id=stored.window_id,
                    group=stored.group,
                    opened_at=stored.opened_at,
                    last_activity=stored.last_activity,
                    bytes=stored.bytes,
                    items=stored.items,
                )
            )
            state.next_seq[stored.window_id] = stored.next_seq
            state.window_input[stored.window_id] = stored.input
        spool_bytes = self.spool.stored_bytes()
        if orphans:
            log.warning(
                "the spool holds windows of connections no longer configured; their data is "
                "kept but not forwarded until they are configured again",
                connections=sorted(orphans),
            )
        self._next_window_id = next_window_id
        self._next_batch_ref = next_batch_ref
        self._connections = connections
        self._spool_bytes = spool_bytes
        self._needs_reload = False
        self._update_gauges()

    def _new_window_id(self) -> int:
        self._next_window_id += 1
        return self._next_window_id

    def on_file_stored(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(connection name)`` after a file is stored (delivery wakes up)."""
        self._file_listeners.append(listener)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.spool.start_checkpoints()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._builder = threading.Thread(target=self._build_loop, name="file-builder", daemon=True)
        self._writer.start()
        self._builder.start()
        self._build_wanted.set()

    def stop_intake(self) -> None:
        """Refuse new data from now on (503); work already queued still completes."""
        self._stopping.set()

    def close(self, timeout: float = 10.0) -> bool:
        """Finish queued work, then stop the writer and builder threads.

        Returns whether the writer stopped; if not, the spool must not be closed under it.
        """
        self._stopping.set()
        self._stopped.set()
        self._build_wanted.set()
        if self._builder is not None:
            self._builder.join(timeout)
        self._file_builder.close()
        with self._enqueue_lock:
            self._writer_done = True  # nothing may queue behind the stop marker
            self._queue.put(None)
        if self._writer is not None:
            self._writer.join(timeout)
        return self._writer is None or not self._writer.is_alive()

    # ---------------------------------------------------------------- Intake

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        future = self._enqueue_ingest(input_name, batches, received_at)
        result: SubmitResult = await asyncio.wrap_future(future)
        return result

    def submit_sync(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        result: SubmitResult = self._enqueue_ingest(input_name, batches, received_at).result()
        return result

    def ready(self) -> tuple[bool, str]:
        if self._stopping.is_set():
            return False, "shutting down"
        if self._last_error is not None:
            return False, self._last_error
        cap = self.config.spool.max_bytes
        if self._spool_bytes >= cap * READY_FRACTION:
            return False, (
                f"spool holds {self._spool_bytes} bytes, {READY_FRACTION:.0%} of its "
                f"{cap}-byte cap or more: delivery is behind"
            )
        return True, "ok"

    @property
    def spool_bytes(self) -> int:
        return self._spool_bytes

    def _enqueue_ingest(
        self, input_name: str, batches: list[dict[str, Any]], received_at: float
    ) -> Future[SubmitResult]:
        if self._stopping.is_set():
            raise StoppingError("s3forward is shutting down and takes no new data")
        if input_name not in self.config.inputs:
            # Only a request authenticated just before a reload removed its input gets here.
            raise StoppingError(f"input {input_name!r} is no longer configured")
        if isinstance(batches, ValidatedBatches) and len(batches.encoded) == len(batches):
            bodies = batches.encoded  # serialised once already, by validation
        else:
            bodies = [orjson.dumps(b) for b in batches]
        return self._enqueue(self._ingest_op(input_name, batches, bodies, received_at))

    def _enqueue(self, op: Op) -> Future[Any]:
        future: Future[Any] = Future()
        with self._enqueue_lock:
            if self._writer_done:
                raise StoppingError("the spool writer has stopped")
            self._queue.put(_Pending(op, future))
        return future

    def run(self, op: Op) -> Any:
        """Run an operation in the writer's next transaction and wait for its result."""
        return self._enqueue(op).result()

    # ---------------------------------------------------------------- operations

    def _ingest_op(
        self,
        input_name: str,
        batches: list[dict[str, Any]],
        bodies: list[bytes],
        received_at: float,
    ) -> Op:
        return _IngestOp(self, input_name, batches, bodies, received_at)

    def _apply_ingest(self, op: _IngestOp, now: float) -> SubmitResult:
        incoming = sum(len(b) for b in op.bodies)
        cap = self.config.spool.max_bytes
        if self._spool_bytes + incoming > cap:
            raise SpoolFullError(
                f"the spool is full ({self._spool_bytes} of {cap} bytes); "
                "delivery is behind, retry later",
                retry_after=self.config.spool.retry_after,
            )
        received_ms = int(op.received_at * 1000)
        connections = [
            self._connections[c.name] for c in self.config.connections_for_input(op.input_name)
        ]
        if not connections:  # the input was removed by a reload after this request was queued
            raise StoppingError(f"input {op.input_name!r} is no longer configured")
        seen = self._writes.known_requests(op.input_name)
        stored = duplicates = 0
        for batch, body, request_id in zip(op.batches, op.bodies, op.request_ids, strict=True):
            if request_id is not None:
                if request_id in seen:
                    duplicates += 1
                    continue
                seen.add(request_id)
                self._writes.requests.append((op.input_name, request_id, now))
            self._store_batch(now, op.input_name, batch, body, received_ms, connections)
            stored += 1
            self._spool_bytes += len(body)
        return SubmitResult(stored=stored, duplicates=duplicates)

    def _store_batch(
        self,
        now: float,
        input_name: str,
        batch: dict[str, Any],
        body: bytes,
        received_ms: int,
        connections: list[_ConnectionState],
    ) -> None:
        batch_id = batch_id_for(batch, self.rng)
        events = batch.get("events") or []
        plan: list[tuple[_ConnectionState, list[int | None]]] = []
        for state in connections:
            if state.settings.batching_mode is BatchingMode.PER_EVENT and events:
                plan.append((state, list(range(len(events)))))
            else:
                plan.append((state, [None]))
        refs = sum(len(indexes) for _, indexes in plan)
        self._next_batch_ref += 1
        batch_ref = self._next_batch_ref
        self._writes.batches.append((batch_ref, input_name, received_ms, batch_id, body, refs))
        for state, indexes in plan:
            mode = state.settings.batching_mode
            for index in indexes:
                if index is None:
                    group = group_of(batch, input_name, mode)
                    size = len(body)
                    closes = mode is BatchingMode.PER_SESSION and ends_session(batch)
                else:
                    group = f"{input_name}\x1fevent:{batch_ref}:{index}"
                    size = len(orjson.dumps(events[index]))
                    closes = False
                placement = state.windower.place(group, size, now, ends_session=closes)
                self._add_item(
                    state, placement.window_id, group, input_name, now, batch_ref, index, size
                )
                self._seal(state, placement.sealed, now)

    def _add_item(
        self,
        state: _ConnectionState,
        window_id: int,
        group: str,
        input_name: str,
        now: float,
        batch_ref: int,
        event_index: int | None,
        size: int,
    ) -> None:
        if window_id not in state.next_seq:
            self._writes.windows.append((window_id, state.settings.name, group, input_name, now))
            state.next_seq[window_id] = 0
            state.window_input[window_id] = input_name
        seq = state.next_seq[window_id]
        state.next_seq[window_id] = seq + 1
        self._writes.items.append((window_id, seq, batch_ref, event_index, size, now))

    def _seal(
        self,
        state: _ConnectionState,
        sealed: tuple[Sealed, ...] | list[Sealed],
        now: float,
    ) -> None:
        name = state.settings.name
        for window in sealed:
            self._writes.seals.append((now, window.reason.value, window.window_id))
            state.next_seq.pop(window.window_id, None)
            state.window_input.pop(window.window_id, None)
            self._after_commit.append(
                self.metrics.files_sealed_total.labels(name, window.reason.value).inc
            )
        if sealed:
            self._after_commit.append(self._build_wanted.set)

    def seal_all(self, reason: SealReason = SealReason.DRAIN) -> int:
        """Seal every open window now (drain). Returns how many were sealed."""

        def apply(conn: sqlite3.Connection, now: float) -> int:
            count = 0
            for state in self._connections.values():
                sealed = state.windower.seal_all(reason)
                self._seal(state, sealed, now)
                count += len(sealed)
            return count

        result: int = self.run(apply)
        return result

    # ---------------------------------------------------------------- reload (issue 12)

    def apply_config(self, config: Config) -> ConfigChanges:
        """Switch to ``config`` between two commits of the writer; nothing stored is lost.

        Runs on the writer thread, so no batch is half-placed when the switch happens: every
        batch committed before it used the old config, every batch after it the new one.

        - an added connection starts with the open windows the spool still holds for it (a
          connection removed earlier and configured again resumes them);
        - a removed connection's windows and files stay in the spool, untouched, and are not
          forwarded until a connection of that name is configured again;
        - a changed connection keeps its open windows; their deadlines and caps follow the new
          window settings from now on, and every file built after the switch (sealed windows
          included) uses the new settings, and its files waiting for a retry are due at once;
        - inputs, spool limits and everything read per request apply to the next request.

        The caller validates ``config`` first; only ``spool.path`` may not change (ValueError).
        """
        if config.spool.path != self.config.spool.path:
            raise ValueError("spool.path cannot change while running")

        def apply(conn: sqlite3.Connection, now: float) -> ConfigChanges:
            changes = self._switch_config(config)
            for name in changes.changed:  # e.g. rotated keys: retry now, not in minutes
                self.spool.retry_now(conn, name, now)
            return changes

        result: ConfigChanges = self.run(apply)
        return result

    def _switch_config(self, config: Config) -> ConfigChanges:
        old = self._connections
        added = [name for name in config.connections if name not in old]
        removed = [name for name in old if name not in config.connections]
        changed = [
            name
            for name, settings in config.connections.items()
            if name in old and old[name].settings != settings
        ]
        stored = self.spool.open_windows() if added else []
        connections: dict[str, _ConnectionState] = {}
        for name, settings in config.connections.items():
            state = old.get(name)
            policy = WindowPolicy.from_settings(settings)
            if state is None:
                state = _ConnectionState(
                    settings=settings,
                    windower=Windower(policy, next_id=self._new_window_id),
                )
                for window in stored:
                    if window.connection == name:
                        self._restore_window(state, window)
            else:
                if state.windower.policy != policy:
                    # Rebuilt from the live windows: deadlines are computed under the new policy.
                    windower = Windower(policy, next_id=self._new_window_id)
                    for live in state.windower.open_windows():
                        windower.restore(live)
                    state.windower = windower
                state.settings = settings
            connections[name] = state
        self._connections = connections
        self.config = config
        for name in removed:
            self.metrics.windows_open.labels(name).set(0)
        self._update_gauges()
        self._build_wanted.set()  # sealed windows of an added connection can be built now
        return ConfigChanges(added=tuple(added), removed=tuple(removed), changed=tuple(changed))

    @staticmethod
    def _restore_window(state: _ConnectionState, stored: StoredWindow) -> None:
        state.windower.restore(
            OpenWindow(
                window_id=stored.window_id,
                group=stored.group,
                opened_at=stored.opened_at,
                last_activity=stored.last_activity,
                bytes=stored.bytes,
                items=stored.items,
            )
        )
        state.next_seq[stored.window_id] = stored.next_seq
        state.window_input[stored.window_id] = stored.input

    # ---------------------------------------------------------------- writer thread

    def _write_loop(self) -> None:
        while True:
            timeout = self._seconds_to_next_deadline()
            try:
                first = self._queue.get(timeout=timeout)
            except queue.Empty:
                first = _Pending(lambda conn, now: None, Future())
            if first is None:
                self._drain_queue_on_exit()
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

    def _commit_safely(self, batch: list[_Pending]) -> None:
        """Commit, and whatever happens, answer every caller and keep the writer alive."""
        try:
            if self._needs_reload:
                self._reload_windows()
            if self._needs_reload:
                error = SpoolUnavailableError(
                    f"the spool cannot be read back after a failed write: {self._last_error}"
                )
                self._fail_futures(batch, error)
                time.sleep(0.2)  # do not spin while the disk is failing
                return
            self._commit(batch)
        except BaseException as exc:
            log.exception("spool writer failed; continuing")
            self._needs_reload = True
            self._fail_futures(batch, exc)

    def _drain_queue_on_exit(self) -> None:
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

    def _seconds_to_next_deadline(self) -> float:
        now = self.clock.now()
        wait = 1.0
        for state in self._connections.values():
            deadline = state.windower.next_deadline()
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
        return max(wait, 0.001)

    def _commit(self, batch: list[_Pending]) -> None:
        now = self.clock.now()
        results: list[tuple[_Pending, Any, BaseException | None]] = []
        bytes_before = self._spool_bytes
        try:
            with self.spool.write("storing accepted batches") as conn:
                self._writes.load_known_requests(conn, _wanted_requests(batch))
                for pending in batch:
                    try:
                        results.append((pending, pending.op(conn, now), None))
                    except S3ForwardError as exc:
                        results.append((pending, None, exc))
                for state in self._connections.values():
                    self._seal(state, state.windower.due(now), now)
                self._writes.flush(conn)
                self._maintain(conn, now)
        except SpoolUnavailableError as exc:
            self._last_error = str(exc)
            log.error("spool write failed", error=str(exc))
            self._fail_commit(batch, exc, bytes_before)
            return
        except Exception as exc:  # a bug must not kill the writer; callers see the error
            log.exception("spool operation failed")
            self._fail_commit(batch, exc, bytes_before)
            return
        self._last_error = None
        after, self._after_commit = self._after_commit, []
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
        self._update_gauges()

    def _fail_commit(self, batch: list[_Pending], exc: BaseException, bytes_before: int) -> None:
        """Nothing of this commit happened: tell every caller, then undo its in-memory effects."""
        self._after_commit = []
        self._writes = WriteSet()
        self._spool_bytes = bytes_before
        self._fail_futures(batch, exc)
        self._reload_windows()

    @staticmethod
    def _fail_futures(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _maintain(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._last_maintenance < _MAINTENANCE_INTERVAL:
            return
        self._last_maintenance = now
        self.spool.forget_requests_before(conn, now - self.config.spool.dedup_window)
        self.spool.prune_delivered(conn, _DELIVERED_HISTORY)

    def _reload_windows(self) -> None:
        """After a failed commit: make the in-memory windows match the spool again.

        If the spool cannot even be read, every operation is refused (503) and the reload is
        tried again before the next commit, so memory and disk never diverge.
        """
        try:
            self._load_state()
        except Exception as exc:  # sqlite3 errors included: the disk may still be failing
            self._needs_reload = True
            log.error("cannot reload the spool; refusing writes until it can", error=str(exc))

    def _update_gauges(self) -> None:
        for name, state in self._connections.items():
            self.metrics.windows_open.labels(name).set(state.windower.open_count)
        self.metrics.spool_bytes.set(self._spool_bytes)

    # ---------------------------------------------------------------- builder thread

    def _build_loop(self) -> None:
        while not self._stopped.is_set():
            self._build_wanted.wait(timeout=1.0)
            self._build_wanted.clear()
            try:
                self.build_sealed()
            except S3ForwardError as exc:
                if self._stopped.is_set():
                    return  # shutting down: the windows stay sealed for the next start
                log.error("building files failed; will try again", error=str(exc))
                self._stopped.wait(0.5)
                self._build_wanted.set()
            except Exception:  # a bug must not stop file building for good
                log.exception("building files failed; will try again")
                self._stopped.wait(1.0)
                self._build_wanted.set()

    def build_sealed(self) -> int:
        """Build and store a file for every sealed window. Returns how many were stored."""
        built = 0
        while not self._stopped.is_set():
            windows = self.spool.sealed_windows(
                limit=_BUILD_ROUND, connections=tuple(self._connections)
            )
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

    def _build_round(self, windows: list[StoredWindow]) -> int:
        jobs = []
        for window in windows:
            state = self._connections.get(window.connection)
            if state is None:
                continue  # a connection removed from the config keeps its data on disk
            app = self.config.inputs.get(window.input)
            assert window.sealed_at is not None
            jobs.append(
                (
                    window,
                    BuildJob(
                        window_id=window.window_id,
                        settings=state.settings,
                        app_name=app.app_name if app is not None else window.input,
                        sealed_at=window.sealed_at,
                    ),
                )
            )
        if not jobs:
            return 0
        results = self._file_builder.build([job for _, job in jobs])
        done = [(window, file) for (window, _), file in zip(jobs, results, strict=True)]
        self.run(self._store_files_op(done))
        return sum(1 for _, file in done if file is not None)

    def _store_files_op(self, done: list[tuple[StoredWindow, BuiltFile | None]]) -> Op:
        def apply(conn: sqlite3.Connection, now: float) -> None:
            for window, built in done:
                if built is None:
                    self.spool.drop_window(conn, window.window_id)
                else:
                    self._store_file(conn, now, window, built)

        return apply

    def _store_file(
        self, conn: sqlite3.Connection, now: float, window: StoredWindow, built: BuiltFile
    ) -> int:
        file_id, released = self.spool.store_file(
            conn,
            connection=window.connection,
            window_id=window.window_id,
            key=built.obj.key,
            body=built.obj.body,
            sha256=built.obj.sha256,
            content_type=built.obj.content_type,
            content_encoding=built.obj.content_encoding,
            raw_bytes=built.raw_bytes,
            batches=built.batches,
            events=built.events,
            sealed_at=window.sealed_at or now,
            first_received_ms=built.first_received_ms,
        )
        self._spool_bytes += len(built.obj.body) - released
        name = window.connection
        self._after_commit.append(lambda: self._count_stored(name, built))
        log.info(
            "file sealed",
            connection=name,
            window_id=window.window_id,
            file_id=file_id,
            reason=window.seal_reason,
            key=built.obj.key,
            batches=built.batches,
            events=built.events,
            bytes=len(built.obj.body),
        )
        for listener in self._file_listeners:
            self._after_commit.append(functools.partial(listener, name))
        return file_id

    def _count_stored(self, connection: str, built: BuiltFile) -> None:
        self.metrics.bytes_sealed_total.labels(connection).inc(built.raw_bytes)
        for event_type, count in built.filtered_out.items():
            self.metrics.events_filtered_total.labels(connection, event_type).inc(count)

    # ---------------------------------------------------------------- delivery bookkeeping

    def release_delivered(self, file_id: int) -> None:
        def apply(conn: sqlite3.Connection, now: float) -> None:
            self._spool_bytes -= self.spool.mark_delivered(conn, file_id, now)

        self.run(apply)

    def record_failure(self, file_id: int, next_attempt_at: float, error: str) -> None:
        self.run(
            lambda conn, now: self.spool.mark_attempt_failed(conn, file_id, next_attempt_at, error)
        )

    def record_new_key(self, file_id: int, key: str) -> None:
        self.run(lambda conn, now: self.spool.rekey(conn, file_id, key))

    def open_window_counts(self) -> dict[str, int]:
        return {name: s.windower.open_count for name, s in self._connections.items()}

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until no sealed window is waiting to be built (used by drain and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.spool.sealed_windows(limit=1, connections=tuple(self._connections)):
                return True
            self._build_wanted.set()
            time.sleep(0.02)
        return False
