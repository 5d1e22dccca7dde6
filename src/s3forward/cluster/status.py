"""The cluster as every node sees it: partitions, owners, lag, lease moves, oldest undelivered.

Each worker's heartbeat (``w.<id>`` in the lease bucket) carries its report
(``WorkerStatus.report``): per owned partition its lag (messages in the log not yet applied),
backlog, open windows and when its oldest undelivered data arrived. The partition leases
(``p.<n>``) name the owners. Any node, ingest-only ones too, follows both with one long-lived
watch of the bucket (``LeaseWatch``: no polling) and sums them up, so ``/status.json``,
``s3forward status`` and the status page show the whole cluster from whichever node they ask.
A report is as fresh as the last heartbeat (``lease_ttl / 3``). Keys that expire by the
bucket's TTL send no event to a watch, so an entry not refreshed within ``lease_ttl`` counts
as gone (heartbeats and lease renewals refresh theirs every ``lease_ttl / 3``).

``cluster_snapshot`` gives the status page's usual shape (the fields ``status.js`` and
``status.plain_lines`` read) with the node-local parts that have no meaning in cluster mode
(the SQLite spool, its file lists) filled as empty, plus a ``cluster`` object.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from s3forward import __version__
from s3forward.config import Config
from s3forward.metrics import Metrics
from s3forward.status import Snapshot, describe_destination, input_facts


@dataclass
class ClusterState:
    """One reading of the lease bucket. ``error`` says why it could not be read, if so."""

    partitions: int
    read_at: float = 0.0
    owners: dict[int, str] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per partition: its owner and what the owner last reported of it."""
        out = []
        for p in range(self.partitions):
            owner = self.owners.get(p)
            report = (self.workers.get(owner or "", {}).get("partitions") or {}).get(str(p), {})
            out.append(
                {
                    "partition": p,
                    "owner": owner,
                    "state": report.get("state", "unowned" if owner is None else "starting"),
                    "lag": int(report.get("lag", 0)),
                    "backlog": int(report.get("backlog", 0)),
                    "open_windows": int(report.get("open_windows", 0)),
                    "files_written": int(report.get("files_written", 0)),
                    "oldest_undelivered_at": report.get("oldest_undelivered_at"),
                }
            )
        return out

    def summary(self, now: float) -> dict[str, Any]:
        rows = self.rows()
        oldest = [r["oldest_undelivered_at"] for r in rows if r["oldest_undelivered_at"]]
        return {
            "read_at": self.read_at,
            "error": self.error,
            "partitions": self.partitions,
            "unowned_partitions": [r["partition"] for r in rows if r["owner"] is None],
            "workers": [
                {
                    "id": worker,
                    "partitions_owned": sorted(p for p, o in self.owners.items() if o == worker),
                    "lease_moves": int(report.get("lease_moves", 0)),
                    "draining": bool(report.get("draining", False)),
                    "last_error": report.get("last_error"),
                    "reported_at": report.get("at"),
                }
                for worker, report in sorted(self.workers.items())
            ],
            "lease_moves": sum(int(r.get("lease_moves", 0)) for r in self.workers.values()),
            "lag_messages": sum(r["lag"] for r in rows),
            "open_windows": sum(r["open_windows"] for r in rows),
            "oldest_undelivered_age_seconds": max(0.0, now - min(oldest)) if oldest else 0.0,
            "partition_rows": rows,
        }


def _apply(state: ClusterState, key: str, value: bytes) -> None:
    if key.startswith("p.") and key[2:].isdigit():
        state.owners[int(key[2:])] = value.decode(errors="replace")
    elif key.startswith(("w.", "d.")):  # d.: a draining worker (worker.drain)
        try:
            report = orjson.loads(value)
        except orjson.JSONDecodeError:
            report = {}  # a heartbeat without a report (an older worker)
        state.workers[key[2:]] = report if isinstance(report, dict) else {}


class LeaseWatch:
    """Follows the lease bucket with one watch; ``state()`` is the current reading.

    The watch is started again when it has been silent for ``lease_ttl`` (a live cluster
    writes heartbeats every ``lease_ttl / 3``; silence may be a consumer lost to a leader
    change)."""

    def __init__(self, leases: KeyValue, partitions: int, lease_ttl: float) -> None:
        self._leases = leases
        self._partitions = partitions
        self._ttl = lease_ttl
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._error: str | None = "no reading of the lease bucket yet"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-lease-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                watcher = await self._leases.watchall()
            except (nats.errors.Error, TimeoutError) as exc:
                self._error = f"cannot watch the lease bucket: {exc or type(exc).__name__}"
                await asyncio.sleep(self._ttl / 3)
                continue
            try:
                while True:
                    try:
                        entry = await watcher.updates(timeout=self._ttl)  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher untyped
                    except nats.errors.TimeoutError:
                        break  # silent for a whole lease_ttl: watch again
                    self._error = None
                    if entry is None:
                        continue  # the marker after the initial values
                    if entry.operation in ("DEL", "PURGE"):
                        self._entries.pop(entry.key, None)
                    else:
                        self._entries[entry.key] = (entry.value or b"", time.monotonic())
            finally:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await watcher.stop()  # type: ignore[no-untyped-call]  # untyped in nats-py

    def state(self) -> ClusterState:
        state = ClusterState(self._partitions, read_at=time.time(), error=self._error)
        fresh_after = time.monotonic() - self._ttl
        for key, (value, seen) in list(self._entries.items()):
            if seen >= fresh_after:
                _apply(state, key, value)
        return state


def cluster_snapshot(
    config: Config,
    metrics: Metrics,
    *,
    roles: list[str],
    started_at: float,
    readiness: tuple[bool, str],
    state: ClusterState | None,
    node_worker: str | None,
) -> Snapshot:
    """The status page's shape for a cluster node (see the module docstring)."""
    now = time.time()
    ready, reason = readiness
    summary = state.summary(now) if state is not None else None
    connections = [
        {
            "name": name,
            "destination": describe_destination(settings),
            "state": "unknown",
            "healthy": True,
            "message": "cluster mode: delivery runs on the workers (see cluster)",
            "last_error": None,
            "last_error_code": None,
            "last_success_at": None,
            "last_attempt_at": None,
            "failing_since": None,
            "open_windows": 0,
            "pending_files": 0,
            "pending_bytes": 0,
            "oldest_undelivered_age_seconds": (
                summary["oldest_undelivered_age_seconds"] if summary else 0.0
            ),
            "uploads_retried": {},
            "uploads_failed": {},
            "events_filtered": {},
        }
        for name, settings in config.connections.items()
    ]
    return {
        "source": "server",
        "version": __version__,
        "generated_at": now,
        "started_at": started_at,
        "uptime_seconds": max(0.0, now - started_at),
        "ready": ready,
        "ready_reasons": [] if ready else [reason],
        "inputs": input_facts(metrics.registry, config),
        "connections": connections,
        "spool": {
            "path": "JetStream (cluster mode)",
            "bytes": 0,
            "max_bytes": 0,
            "schema_version": None,
            "open_windows": summary["open_windows"] if summary else 0,
            "sealed_windows": 0,
            "pending_files": 0,
            "delivered_files": 0,
            "batches": 0,
        },
        "waiting_files": [],
        "recent_files": [],
        "history": {"interval_seconds": None, "points": []},
        "cluster": {"roles": roles, "node_worker": node_worker, **(summary or {})},
    }


__all__ = ["ClusterState", "LeaseWatch", "cluster_snapshot"]
