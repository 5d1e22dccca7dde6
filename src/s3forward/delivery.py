"""Delivery: claim stored files, write them to their connection's sink, acknowledge.

Each connection has its own worker threads, so a slow or broken bucket never stalls another
connection. A file is marked delivered only after the sink confirmed the write. Transient errors
are retried forever with capped exponential backoff and jitter; a permanent error (credentials,
permissions, missing bucket) keeps the data, marks the connection unhealthy and pauses it for
``permanent_retry_interval`` before it tries again. A key found holding a different object gets
new random digits; a key found holding the same bytes (our own earlier attempt that landed
before a crash) counts as delivered. So a file is never written under two keys and never
overwrites another object.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from s3forward.clock import Clock, SystemClock
from s3forward.config import Config
from s3forward.errors import KeyTakenError, PermanentSinkError, S3ForwardError, SinkError
from s3forward.files import with_new_digits
from s3forward.layout import EncodedObject
from s3forward.metrics import Metrics
from s3forward.sinks.base import Sink, WriteOutcome
from s3forward.spool.base import StoredFile

log = structlog.get_logger("s3forward.delivery")


class Ledger(Protocol):
    """Delivery's bookkeeping: which files are due, and what happened to each attempt.

    Contract: every state change is durable when the call returns. ``delivered`` is idempotent
    (a file already delivered stays so); a crash between the sink's confirmation and
    ``delivered`` means the file is written again to the same key with the same bytes, which
    the sink recognises as its own earlier write. Calls may come from several threads.
    """

    def due_files(self, connection: str, now: float, limit: int) -> list[StoredFile]:
        """Pending files of ``connection`` due by ``now``, soonest first."""
        ...

    def file_body(self, file_id: int) -> bytes | None:
        """The body of a pending file; None once delivered."""
        ...

    def delivered(self, file_id: int) -> None:
        """The sink confirmed the write: the file is delivered and its body released."""
        ...

    def failed(self, file_id: int, next_attempt_at: float, error: str) -> None:
        """An attempt failed: count it and schedule the next."""
        ...

    def rekeyed(self, file_id: int, key: str) -> None:
        """The file's key holds a different object: it is written under ``key`` from now on."""
        ...


@dataclass(frozen=True, slots=True)
class Health:
    """What an operator needs to know about one connection's deliveries."""

    healthy: bool = True
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None
    last_error_code: str | None = None
    failing_since: float | None = None
    paused_until: float | None = None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""
    ceiling = min(cap, base * float(2 ** min(attempt, 30)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class _ConnectionDelivery:
    def __init__(self, owner: Delivery, name: str, sink: Sink) -> None:
        self.owner = owner
        self.name = name
        self.sink = sink
        self.health = Health()
        self.inflight: set[int] = set()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.threads: list[threading.Thread] = []
        # Since when files have been waiting or uploading without any being delivered.
        self.backlog_since: float | None = None
        self.retired = False  # removed by a reload: workers finish their upload and exit
        self.old_sinks: list[Sink] = []  # replaced by a reload; closed at stop

    # ------------------------------------------------------------ claiming

    def claim(self) -> StoredFile | None:
        owner = self.owner
        now = owner.clock.now()
        with self.lock:
            paused = self.health.paused_until
            if paused is not None and now < paused:
                return None
            for stored in owner.ledger.due_files(self.name, now, limit=64):
                if stored.file_id not in self.inflight:
                    self.inflight.add(stored.file_id)
                    if self.backlog_since is None:
                        self.backlog_since = now
                    return stored
            if not self.inflight:
                self.backlog_since = None  # nothing due and nothing uploading: not stalled
        return None

    def stalled_for(self, now: float) -> float:
        """Seconds files have waited or uploaded while none was delivered (0 when idle)."""
        with self.lock:
            since = self.backlog_since
        return 0.0 if since is None else max(0.0, now - since)

    def release(self, file_id: int) -> None:
        with self.lock:
            self.inflight.discard(file_id)

    def idle(self) -> bool:
        with self.lock:
            return not self.inflight

    def notify(self) -> None:
        with self.wake:
            self.wake.notify_all()

    # ------------------------------------------------------------ working

    def run(self, index: int = 0) -> None:
        owner = self.owner
        while not owner.stopping.is_set() and not self.retired and index < owner.workers:
            try:
                stored = self.claim()
            except Exception:  # the spool could not be read: wait and try again
                log.exception("claiming files failed", connection=self.name)
                owner.stopping.wait(1.0)
                continue
            if stored is None:
                with self.wake:
                    self.wake.wait(timeout=owner.poll_interval)
                continue
            try:
                self.deliver(stored)
            except S3ForwardError as exc:  # the spool is unavailable: try again later
                log.error("delivery bookkeeping failed", connection=self.name, error=str(exc))
                owner.stopping.wait(1.0)
            except Exception:  # a bug must not end this worker: the file is retried later
                log.exception(
                    "delivery failed unexpectedly", connection=self.name, file_id=stored.file_id
                )
                owner.stopping.wait(1.0)
            finally:
                self.release(stored.file_id)

    def deliver(self, stored: StoredFile) -> None:
        owner = self.owner
        body = owner.ledger.file_body(stored.file_id)
        if body is None:
            return  # delivered meanwhile
        obj = EncodedObject(
            key=stored.key,
            body=body,
            content_type=stored.content_type,
            content_encoding=stored.content_encoding,
            sha256=stored.sha256,
        )
        started = time.monotonic()
        now = owner.clock.now()
        try:
            outcome = self.sink.write(obj)
        except KeyTakenError:
            new_key = with_new_digits(stored.key, owner.rng)
            log.warning(
                "object key taken by a different object; choosing new digits",
                connection=self.name,
                file_id=stored.file_id,
                key=stored.key,
                new_key=new_key,
            )
            owner.ledger.rekeyed(stored.file_id, new_key)
            return
        except SinkError as exc:
            self.failed(stored, exc, now)
            return
        elapsed = time.monotonic() - started
        owner.ledger.delivered(stored.file_id)
        metrics = owner.metrics
        metrics.upload_seconds.labels(self.name).observe(elapsed)
        metrics.files_delivered_total.labels(self.name).inc()
        metrics.bytes_delivered_total.labels(self.name).inc(len(body))
        self.succeeded(now)
        log.info(
            "file delivered",
            connection=self.name,
            file_id=stored.file_id,
            key=stored.key,
            bytes=len(body),
            attempts=stored.attempts + 1,
            outcome="created" if outcome is WriteOutcome.CREATED else "already present",
            seconds=round(elapsed, 4),
        )

    def succeeded(self, now: float) -> None:
        with self.lock:
            was_healthy = self.health.healthy
            self.health = Health(healthy=True, last_success_at=now, last_attempt_at=now)
            self.backlog_since = self.owner.clock.now() if self.backlog_since is not None else None
        self.owner.metrics.connection_healthy.labels(self.name).set(1)
        if not was_healthy:
            log.info("connection recovered", connection=self.name)

    def failed(self, stored: StoredFile, exc: SinkError, now: float) -> None:
        owner = self.owner
        settings = owner.config.delivery
        permanent = isinstance(exc, PermanentSinkError)
        if permanent:
            delay = settings.permanent_retry_interval * owner.rng.uniform(0.9, 1.1)
        else:
            delay = backoff_delay(
                stored.attempts, settings.backoff_base, settings.backoff_cap, owner.rng
            )
        owner.ledger.failed(stored.file_id, now + delay, f"{exc.code}: {exc}")
        counter = (
            owner.metrics.file_uploads_failed_total
            if permanent
            else (owner.metrics.file_uploads_retried_total)
        )
        counter.labels(self.name, exc.code).inc()
        with self.lock:
            previous = self.health
            failing_since = previous.failing_since or now
            unhealthy = permanent or now - failing_since >= settings.unhealthy_after
            self.health = replace(
                previous,
                healthy=not unhealthy,
                last_attempt_at=now,
                last_error=str(exc),
                last_error_code=exc.code,
                failing_since=failing_since,
                paused_until=now + delay if permanent else None,
            )
        if unhealthy:
            owner.metrics.connection_healthy.labels(self.name).set(0)
        log.warning(
            "upload failed; will retry",
            connection=self.name,
            file_id=stored.file_id,
            key=stored.key,
            error_code=exc.code,
            error=str(exc),
            permanent=permanent,
            attempt=stored.attempts + 1,
            retry_in_seconds=round(delay, 3),
        )
        if unhealthy and previous.healthy:
            log.error("connection unhealthy", connection=self.name, error=str(exc))


class Delivery:
    """Worker threads per connection, writing stored files to their sinks."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        sinks: Mapping[str, Sink],
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.poll_interval = poll_interval
        self.stopping = threading.Event()
        self.workers = config.delivery.workers_per_connection
        self._started = False
        self._retired: list[_ConnectionDelivery] = []
        self._connections = {
            name: _ConnectionDelivery(self, name, sink) for name, sink in sinks.items()
        }
        for name in self._connections:
            metrics.connection_healthy.labels(name).set(1)

    def start(self) -> None:
        self._started = True
        for conn in self._connections.values():
            self._start_workers(conn)

    def _start_workers(self, conn: _ConnectionDelivery) -> None:
        conn.threads = [t for t in conn.threads if t.is_alive()]
        for index in range(len(conn.threads), self.workers):
            thread = threading.Thread(
                target=conn.run, args=(index,), name=f"deliver-{conn.name}-{index}", daemon=True
            )
            conn.threads.append(thread)
            thread.start()

    def apply_config(self, config: Config, sinks: Mapping[str, Sink]) -> None:
        """Switch to ``config`` (issue 12, reload); ``sinks`` holds a new sink for every
        connection that was added or whose settings changed.

        Uploads in flight finish on the sink they started with. A changed connection's next
        upload uses its new sink (rotated keys, new endpoint), its pause after a permanent error
        is lifted and its health starts afresh. A removed connection's workers exit after their
        current upload; its files stay pending in the spool. ``[delivery]`` settings apply to the
        next attempt; ``workers_per_connection`` adds or retires workers.
        """
        self.config = config
        self.workers = config.delivery.workers_per_connection
        for name in [n for n in self._connections if n not in config.connections]:
            conn = self._connections.pop(name)
            conn.retired = True
            conn.notify()
            self._retired.append(conn)
            self.metrics.connection_healthy.remove(name)
        for name in config.connections:
            existing = self._connections.get(name)
            sink = sinks.get(name)
            if existing is None:
                if sink is None:
                    raise ValueError(f"no sink for the added connection {name!r}")
                conn = _ConnectionDelivery(self, name, sink)
                self._connections[name] = conn
                self.metrics.connection_healthy.labels(name).set(1)
            else:
                conn = existing
            if existing is not None and sink is not None:
                with conn.lock:
                    conn.old_sinks.append(conn.sink)
                    conn.sink = sink
                    conn.health = Health()
                self.metrics.connection_healthy.labels(name).set(1)
            if self._started and not self.stopping.is_set():
                self._start_workers(conn)
            conn.notify()

    def wake(self, connection: str) -> None:
        conn = self._connections.get(connection)
        if conn is not None:
            conn.notify()

    def health(self) -> dict[str, Health]:
        # A snapshot: a reload may add or remove connections from another thread meanwhile.
        return {name: conn.health for name, conn in list(self._connections.items())}

    def stalled(self) -> dict[str, float]:
        """Connections that delivered nothing for ``[delivery] stalled_after`` seconds while
        files waited or uploaded, with how long (issue 12: a hung S3 turns /readyz red)."""
        now = self.clock.now()
        limit = self.config.delivery.stalled_after
        waited = {name: conn.stalled_for(now) for name, conn in list(self._connections.items())}
        return {name: seconds for name, seconds in waited.items() if seconds >= limit}

    def mark_unhealthy(self, connection: str, message: str, code: str) -> None:
        """Record a failed start-up check: the connection keeps its data and keeps retrying."""
        conn = self._connections[connection]
        now = self.clock.now()
        with conn.lock:
            conn.health = replace(
                conn.health,
                healthy=False,
                last_error=message,
                last_error_code=code,
                last_attempt_at=now,
                failing_since=conn.health.failing_since or now,
            )
        self.metrics.connection_healthy.labels(connection).set(0)

    def stop(self, grace: float) -> bool:
        """Take no new files; wait up to ``grace`` seconds for uploads in flight.

        Returns True when every in-flight upload finished; what did not finish stays pending
        in the spool and is retried (same key, same bytes) on the next start.
        """
        self.stopping.set()
        every = [*self._connections.values(), *self._retired]
        for conn in every:
            conn.notify()
        deadline = time.monotonic() + grace
        for conn in every:
            for thread in conn.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        finished = all(conn.idle() for conn in every)
        for conn in every:
            if conn.idle():
                for sink in (*conn.old_sinks, conn.sink):
                    sink.close()
        return finished
