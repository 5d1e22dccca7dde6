"""The engine's side of the HTTP worker processes (issue 10: ingest on every core).

``WorkerHub`` starts ``[server] workers`` processes (``multicore.worker``), each with the shared
listening socket and a private socket pair, and serves their frames:

- ``Submit``: the prepared batches go to ``Ingest.submit_prepared``, the one place where batches
  are deduplicated, counted against the cap and placed in windows, in the writer's group
  commit; ``Accepted`` is sent once that commit is fsync'd, ``Refused`` (typed) otherwise.
- ``Forward``: the request runs on the engine's own ASGI app (``AdminApp`` around the
  ``IngestApp``), in this process, and its response goes back as ``Answer``.
- ``Stats``: the worker's counter increments and ``ingest_seconds`` observations are added to
  the engine's metrics, so /metrics and the status page count every worker.

A worker that exits while the hub runs is started again after a backoff (0.5 s doubling to
10 s, back to 0.5 s once a worker has run for a minute), logged and counted in
``s3forward_http_worker_restarts_total``. Its requests waiting for a commit lose their answer;
those batches may be stored, so the client's retry is deduplicated by its
``source_request_id``. ``stop`` sends SIGTERM to every worker and waits for them to answer what
they have in flight; the caller then closes intake and drains the engine as in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Counter

from s3forward.config import BatchingMode, Config
from s3forward.errors import S3ForwardError, WorkerChannelError
from s3forward.intake import SubmitResult
from s3forward.metrics import Metrics
from s3forward.multicore.channel import FrameChannel
from s3forward.multicore.frames import (
    Accepted,
    Answer,
    ConfigApplied,
    FlushStats,
    Forward,
    Stats,
    Submit,
    UseConfig,
    refusal_for,
    worker_frames,
)
from s3forward.pipeline.ingest import Ingest

log = structlog.get_logger("s3forward.hub")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0
STABLE_AFTER = 60.0
"""A worker that ran this long resets the restart backoff."""
_POLL = 0.1
FLUSH_TIMEOUT = 0.5
"""How long a page showing counts waits for the workers' (a paused or dying one is skipped)."""


@dataclass
class _Slot:
    """One worker position: the process in it now, and its restart history."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    channel: FrameChannel | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None
    applied: dict[int, asyncio.Future[str | None]] = field(default_factory=dict)


class WorkerHub:
    """Starts, serves, restarts and stops the HTTP worker processes."""

    def __init__(
        self,
        *,
        count: int,
        listener: socket.socket,
        ingest: Ingest,
        app: Callable[[], ASGIApp],
        metrics: Metrics,
        config: Config,
        grace: float,
        log_format: str | None = None,
        log_level: str = "info",
    ) -> None:
        self.count = count
        self.listener = listener
        self.ingest = ingest
        self._app = app
        self.metrics = metrics
        self.config = config
        self.grace = grace
        self._log_args = ["--log-level", log_level]
        if log_format is not None:
            self._log_args += ["--log-format", log_format]
        self._slots = [_Slot(i) for i in range(count)]
        self._generation = 0
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answers: list[tuple[FrameChannel, int, Future[SubmitResult]]] = []
        self._flushes: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._flush_ids = itertools.count(1)
        self._answers_lock = threading.Lock()
        self._counters = self._counter_index(metrics)

    @staticmethod
    def _counter_index(metrics: Metrics) -> dict[str, Counter]:
        """Every counter of ``metrics`` by its family name (what a worker's ``Stats`` names)."""
        return {
            next(iter(metric.describe())).name: metric
            for metric in vars(metrics).values()
            if isinstance(metric, Counter)
        }

    # ---------------------------------------------------------------- lifecycle

    async def start(self, timeout: float = 30.0) -> None:
        """Start every worker and return once each serves (or raise why not)."""
        for slot in self._slots:
            await self._spawn(slot)
        waits = [slot.applied[self._generation] for slot in self._slots]
        done, pending = await asyncio.wait(waits, timeout=timeout)
        if pending:
            raise WorkerChannelError(
                f"{len(pending)} of {self.count} HTTP worker processes did not start within "
                f"{timeout:g} s; their errors are in the log above"
            )
        problems = [p for p in (f.result() for f in done) if p is not None]
        if problems:
            raise WorkerChannelError("; ".join(problems))
        self._supervisor = asyncio.create_task(self._supervise())

    def running(self) -> int:
        return sum(1 for s in self._slots if s.process is not None and s.process.poll() is None)

    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process is not None]

    def stopping(self) -> None:
        """From now on a worker that exits is not restarted (it may be stopping by a signal
        sent to the whole process group, before ``stop`` runs)."""
        self._stopping = True

    async def stop(self) -> None:
        """SIGTERM every worker, wait for them to finish what they have in flight."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5.0
        while self.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                log.error("an HTTP worker did not stop in time; killing it", worker=slot.index)
                slot.process.kill()
                slot.process.wait()
            if slot.channel is not None:
                slot.channel.close()

    async def use_config(
        self, config: Config, *, certificate: tuple[str, str | None] | None = None
    ) -> list[str]:
        """Send ``config`` to every worker; returns the problems of those that refused it."""
        self.config = config
        self._generation += 1
        frame = self._config_frame(certificate)
        waits: list[asyncio.Future[str | None]] = []
        for slot in self._slots:
            if slot.channel is None or slot.channel.closed:
                continue  # a worker started later gets the new config at its start
            waits.append(self._expect(slot, frame.generation))
            slot.channel.send(frame)
        if not waits:
            return []
        done, pending = await asyncio.wait(waits, timeout=10.0)
        problems = [p for p in (f.result() for f in done) if p is not None]
        problems += [f"{len(pending)} worker(s) did not confirm the new configuration"] * bool(
            pending
        )
        return problems

    def _config_frame(self, certificate: tuple[str, str | None] | None = None) -> UseConfig:
        config = self.config
        return UseConfig(
            generation=self._generation,
            source=config.source,
            text=config.text,
            tls_cert_file=certificate[0] if certificate else None,
            tls_key_file=certificate[1] if certificate else None,
        )

    def _expect(self, slot: _Slot, generation: int) -> asyncio.Future[str | None]:
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        slot.applied[generation] = future
        return future

    # ---------------------------------------------------------------- processes

    async def _spawn(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_fd = self.listener.fileno()
        command = [
            sys.executable,
            "-m",
            "s3forward.multicore.worker",
            "--index",
            str(slot.index),
            "--listen-fd",
            str(listen_fd),
            "--channel-fd",
            str(theirs.fileno()),
            "--grace",
            str(self.grace),
            *self._log_args,
        ]
        try:
            # S603: the command is this interpreter and this package's module, no outside input.
            slot.process = subprocess.Popen(  # noqa: S603
                command, pass_fds=(listen_fd, theirs.fileno())
            )
        finally:
            theirs.close()
        slot.started_at = time.monotonic()
        slot.restart_at = None
        channel = FrameChannel(
            worker_frames(),
            lambda frame: self._received(slot, channel, frame),
            lambda exc: None,
        )
        slot.channel = channel
        await loop.create_unix_connection(lambda: channel, sock=ours)
        self._expect(slot, self._generation)
        channel.send(self._config_frame())
        log.info("HTTP worker started", worker=slot.index, pid=slot.process.pid)

    async def _supervise(self) -> None:
        while True:
            self.metrics.http_workers_running.set(self.running())
            if self._stopping:
                return
            now = time.monotonic()
            for slot in self._slots:
                process = slot.process
                if process is not None and process.poll() is not None:
                    ran = now - slot.started_at
                    slot.backoff = BACKOFF_FIRST if ran >= STABLE_AFTER else slot.backoff
                    slot.restart_at = now + slot.backoff
                    log.error(
                        "an HTTP worker exited; restarting it",
                        worker=slot.index,
                        pid=process.pid,
                        exit_code=process.returncode,
                        ran_seconds=round(ran, 1),
                        restart_in_seconds=slot.backoff,
                    )
                    self.metrics.http_worker_restarts_total.inc()
                    slot.backoff = min(slot.backoff * 2, BACKOFF_CAP)
                    slot.process = None
                    if slot.channel is not None:
                        slot.channel.close()
                        slot.channel = None
                elif process is None and slot.restart_at is not None and now >= slot.restart_at:
                    try:
                        await self._spawn(slot)
                    except OSError as exc:
                        log.error("cannot start an HTTP worker", worker=slot.index, error=str(exc))
                        slot.restart_at = now + slot.backoff
            await asyncio.sleep(_POLL)

    # ---------------------------------------------------------------- frames

    def _received(self, slot: _Slot, channel: FrameChannel, frame: Any) -> None:
        if isinstance(frame, Submit):
            self._submit(channel, frame)
        elif isinstance(frame, Stats):
            self._count(frame)
            if frame.flushed:
                flushed = self._flushes.get((id(channel), frame.flushed))
                if flushed is not None and not flushed.done():
                    flushed.set_result(None)
        elif isinstance(frame, Forward):
            task = asyncio.create_task(self._forward(channel, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(frame, ConfigApplied):
            waiting = slot.applied.pop(frame.generation, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(frame.problem)

    def _submit(self, channel: FrameChannel, frame: Submit) -> None:
        request_id = frame.id
        try:
            modes = frozenset(BatchingMode(m) for m in frame.modes)
            future = self.ingest.submit_prepared(
                frame.input_name, frame.batches, modes, received_at=frame.received_at
            )
        except S3ForwardError as exc:
            channel.send(refusal_for(request_id, exc))
            return
        except Exception as exc:
            log.exception("storing a worker's request failed")
            channel.send(refusal_for(request_id, exc))
            return
        loop = asyncio.get_running_loop()

        def committed(done: Future[SubmitResult]) -> None:  # on the writer thread
            # One wake-up of the event loop per commit, not per request: the writer resolves
            # every request of a commit in a row.
            with self._answers_lock:
                first = not self._answers
                self._answers.append((channel, request_id, done))
            if first:
                loop.call_soon_threadsafe(self._send_answers)

        future.add_done_callback(committed)

    def _send_answers(self) -> None:
        with self._answers_lock:
            answers, self._answers = self._answers, []
        for channel, request_id, done in answers:
            self._answer_submit(channel, request_id, done)

    @staticmethod
    def _answer_submit(channel: FrameChannel, request_id: int, done: Future[SubmitResult]) -> None:
        error = done.exception()
        if error is None:
            result = done.result()
            channel.send(Accepted(request_id, result.stored, result.duplicates))
        else:
            if not isinstance(error, S3ForwardError):
                log.error("storing a worker's request failed", error=repr(error))
            channel.send(refusal_for(request_id, error))

    def _count(self, frame: Stats) -> None:
        for name, labels, delta in frame.counters:
            counter = self._counters.get(name)
            if counter is None or delta <= 0:
                continue
            try:
                (counter.labels(**labels) if labels else counter).inc(delta)
            except ValueError:  # labels this counter does not have: a version mismatch
                log.warning("a worker sent counts this engine cannot add", metric=name)
        seconds = self.metrics.ingest_seconds
        for endpoint, value in frame.observations:
            seconds.labels(endpoint).observe(value)

    async def flush_stats(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Have every running worker send its counts, and add them, before answering a page
        that shows them: every request answered before this call is then counted."""
        flush_id = next(self._flush_ids)
        loop = asyncio.get_running_loop()
        keys: list[tuple[int, int]] = []
        for slot in self._slots:
            channel = slot.channel
            if channel is None or channel.closed:
                continue
            key = (id(channel), flush_id)
            self._flushes[key] = loop.create_future()
            keys.append(key)
            channel.send(FlushStats(flush_id))
        try:
            if keys:
                await asyncio.wait([self._flushes[k] for k in keys], timeout=timeout)
        finally:
            for key in keys:
                self._flushes.pop(key, None)

    async def _forward(self, channel: FrameChannel, frame: Forward) -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": frame.method,
            "scheme": frame.scheme,
            "path": frame.path,
            "raw_path": frame.raw_path,
            "query_string": frame.query_string,
            "root_path": "",
            "headers": frame.headers,
            "client": frame.client,
            "server": None,
        }
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": frame.body, "more_body": False}
            await asyncio.Event().wait()  # the request is whole; nothing more comes
            raise AssertionError("unreachable")

        status = 500
        headers: list[tuple[bytes, bytes]] = []
        body: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                body.append(bytes(message.get("body", b"")))

        if frame.path.rstrip("/") != "/readyz":
            await self.flush_stats()  # /metrics and the status page count every worker
        try:
            await self._app()(scope, receive, send)
        except Exception:
            log.exception("the engine's app failed on a forwarded request", path=frame.path)
            status, headers, body = 500, [(b"content-type", b"application/json")], [b"{}"]
        channel.send(Answer(frame.id, status, headers, b"".join(body)))


__all__ = ["WorkerHub"]
