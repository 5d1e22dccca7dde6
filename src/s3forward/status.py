"""The facts an operator looks at, as plain data: for the status page, ``/status.json`` and
``s3forward status``.

``snapshot(runtime)`` reads a running service (its metrics registry, delivery health and spool).
``snapshot_from_spool(config)`` builds the same shape straight from the spool file, read-only,
for when the server is down (the server holds an exclusive lock on the spool, so the file is
opened with sqlite3 in read-only mode rather than through ``SqliteSpool``). ``History`` keeps an
hour of samples of the counters, in memory, for the throughput and freshness charts.

Nothing here returns a secret or an event payload: connection settings are reduced to where the
data goes (bucket, folder, region, endpoint) and how (authentication mode, batching, compression).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from s3forward import __version__
from s3forward.config import Config, ConnectionSettings, Destination
from s3forward.spool.base import FileState, SpoolView, StoredFile
from s3forward.spool.sqlite import open_spool_readonly

if TYPE_CHECKING:
    from s3forward.delivery import Health
    from s3forward.metrics import Metrics
    from s3forward.spool.base import Spool

Snapshot = dict[str, Any]


class RunningService(Protocol):
    """What a snapshot reads of a running service (``service.Runtime`` is one)."""

    config: Config
    spool: Spool
    metrics: Metrics
    started_at: float

    def readiness(self) -> tuple[bool, str]: ...

    def health(self) -> Mapping[str, Health]: ...

    def open_window_counts(self) -> dict[str, int]: ...

    @property
    def spool_bytes(self) -> int: ...


RECENT_FILES = 20
"""How many of the last delivered files and of the waiting files a snapshot lists."""
HISTORY_INTERVAL = 10.0
HISTORY_SPAN = 3600.0


# --------------------------------------------------------------------------------------------
# Reading counters out of a registry


def sample_values(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    """Every sample called ``name`` in ``registry``, keyed by its label values (in label order)."""
    found: dict[tuple[str, ...], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sample.labels.values())] = float(sample.value)
    return found


def _by_first_label(values: Mapping[tuple[str, ...], float]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in values.items():
        key = labels[0] if labels else ""
        totals[key] = totals.get(key, 0.0) + value
    return totals


def _nested(values: Mapping[tuple[str, ...], float]) -> dict[str, dict[str, int]]:
    """``{(a, b): n}`` -> ``{a: {b: n}}``, dropping zeros."""
    nested: dict[str, dict[str, int]] = {}
    for labels, value in values.items():
        if value and len(labels) >= 2:
            nested.setdefault(labels[0], {})[labels[1]] = int(value)
    return nested


# --------------------------------------------------------------------------------------------
# Plain words


def ago(seconds: float | None) -> str:
    """``12s ago``, ``4m ago``, ``3h ago``; ``never`` for None."""
    if seconds is None:
        return "never"
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    """A short human duration: ``45s``, ``12m``, ``3h 5m``, ``2d 4h``."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def describe_health(health: Health, now: float) -> tuple[str, str]:
    """``(state, message)``: state is ``healthy``, ``retrying`` or ``failing``, message plain words.

    ``retrying`` is a connection whose last attempt failed but which is not yet unhealthy (a
    transient error younger than ``unhealthy_after``).
    """
    if not health.healthy:
        since = health.failing_since if health.failing_since is not None else now
        error = (health.last_error or "unknown error").rstrip(".")
        message = f"Failing for {duration(now - since)}: {error}."
        if health.paused_until is not None and health.paused_until > now:
            message += f" Data is kept; next try in {duration(health.paused_until - now)}."
        else:
            message += " Data is kept in the spool and retried."
        return "failing", message
    if health.last_error is not None:
        return "retrying", f"Retrying after an error: {health.last_error}"
    if health.last_success_at is None:
        return "healthy", "No delivery attempted yet."
    return "healthy", f"Delivering; last file delivered {ago(now - health.last_success_at)}."


def describe_destination(c: ConnectionSettings) -> dict[str, Any]:
    """Where and how a connection writes, with no secret in it."""
    if c.destination is Destination.LOCALDIR:
        where = f"file://{c.local_path}"
    else:
        folder = c.folder_name.strip("/")
        where = f"s3://{c.s3_bucket_name}/{folder + '/' if folder else ''}"
    return {
        "url": where,
        "region": c.aws_region_endpoint if c.destination is Destination.S3 else None,
        "endpoint": c.endpoint_url,
        "authentication": (
            None
            if c.destination is Destination.LOCALDIR
            else "role-based"
            if c.role_based
            else "user-based"
        ),
        "access_key_id": _mask(c.access_key_id.reveal()) if c.access_key_id else None,
        "batching": c.batching_mode.value,
        "compression": c.use_compression,
        "date_folders": c.store_data_in_folders_by_date.value,
    }


def _mask(value: str) -> str:
    """Show the last four characters of an identifier, as AWS consoles do."""
    return "****" + value[-4:] if len(value) > 8 else "****"


# --------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True, slots=True)
class Sample:
    """Counter totals at one moment."""

    at: float
    events_received: float
    batches_received: float
    files_delivered: float
    bytes_delivered: float
    oldest_undelivered_age: float


class History:
    """The last hour of ``Sample``s, one every ``interval`` seconds, in memory.

    Charts need rates, so each point of ``points()`` is the change between two samples divided
    by the time between them. Restarting the process starts a new history.
    """

    def __init__(self, interval: float = HISTORY_INTERVAL, span: float = HISTORY_SPAN) -> None:
        self.interval = interval
        self._samples: deque[Sample] = deque(maxlen=int(span / interval) + 1)

    def sample(self, registry: CollectorRegistry, now: float) -> Sample:
        """Record the registry's totals at ``now`` (seconds since the epoch)."""

        def total(name: str) -> float:
            return sum(sample_values(registry, name).values())

        ages = sample_values(registry, "s3forward_oldest_undelivered_age_seconds").values()
        taken = Sample(
            at=now,
            events_received=total("s3forward_events_received_total"),
            batches_received=total("s3forward_batches_received_total"),
            files_delivered=total("s3forward_files_delivered_total"),
            bytes_delivered=total("s3forward_bytes_delivered_total"),
            oldest_undelivered_age=max(ages, default=0.0),
        )
        self._samples.append(taken)
        return taken

    def points(self) -> list[dict[str, float]]:
        """One point per interval: rates per second since the previous sample, and freshness."""
        out: list[dict[str, float]] = []
        previous: Sample | None = None
        for s in self._samples:
            if previous is not None and s.at > previous.at:
                dt = s.at - previous.at
                out.append(
                    {
                        "t": s.at,
                        "events_per_second": max(0.0, s.events_received - previous.events_received)
                        / dt,
                        "batches_per_second": max(
                            0.0, s.batches_received - previous.batches_received
                        )
                        / dt,
                        "files_delivered": max(0.0, s.files_delivered - previous.files_delivered),
                        "bytes_per_second": max(0.0, s.bytes_delivered - previous.bytes_delivered)
                        / dt,
                        "oldest_undelivered_age_seconds": s.oldest_undelivered_age,
                    }
                )
            previous = s
        return out

    async def run(self, registry: CollectorRegistry) -> None:
        """Sample forever, every ``interval`` seconds (cancel the task to stop)."""
        while True:
            self.sample(registry, time.time())
            await asyncio.sleep(self.interval)


# --------------------------------------------------------------------------------------------
# Snapshot of a running service


def snapshot(runtime: RunningService, history: History | None = None) -> Snapshot:
    """The facts about a running service. Reads the spool; call it off the event loop.

    Numbers that ``/metrics`` also shows are read from the same registry, so the two agree.
    """
    return _live_snapshot(runtime, runtime.spool, history)


def file_facts(f: StoredFile) -> dict[str, Any]:
    """A stored file as plain data (no payload), for the status page and `spool list`."""
    return {
        "id": f.file_id,
        "connection": f.connection,
        "key": f.key,
        "raw_bytes": f.raw_bytes,
        "stored_bytes": f.stored_bytes,
        "body_bytes": f.stored_bytes if f.state is FileState.PENDING else 0,
        "batches": f.batches,
        "events": f.events,
        "sealed_at": f.sealed_at,
        "first_received_ms": f.first_received_ms,
        "state": str(f.state),
        "attempts": f.attempts,
        "next_attempt_at": f.next_attempt_at,
        "last_error": f.last_error,
        "delivered_at": f.delivered_at,
        "content_type": f.content_type,
        "content_encoding": f.content_encoding,
    }


def _file_lists(reader: SpoolView) -> dict[str, list[dict[str, Any]]]:
    return {
        "waiting_files": [file_facts(f) for f in reader.files(FileState.PENDING, RECENT_FILES)],
        "recent_files": [file_facts(f) for f in reader.files(FileState.DELIVERED, RECENT_FILES)],
    }


def _live_snapshot(rt: RunningService, reader: SpoolView, history: History | None) -> Snapshot:
    now = time.time()
    registry = rt.metrics.registry
    ready, reason = rt.readiness()
    health = rt.health()
    pending = reader.pending_by_connection()
    open_counts = rt.open_window_counts()
    oldest = _by_first_label(sample_values(registry, "s3forward_oldest_undelivered_age_seconds"))
    delivered = _by_first_label(sample_values(registry, "s3forward_files_delivered_total"))
    delivered_bytes = _by_first_label(sample_values(registry, "s3forward_bytes_delivered_total"))
    sealed = _by_first_label(sample_values(registry, "s3forward_files_sealed_total"))
    retried = _nested(sample_values(registry, "s3forward_file_uploads_retried_total"))
    failed = _nested(sample_values(registry, "s3forward_file_uploads_failed_total"))
    filtered = _nested(sample_values(registry, "s3forward_events_filtered_total"))
    connections = []
    for name, settings in rt.config.connections.items():
        h = health.get(name)
        state, message = describe_health(h, now) if h is not None else ("unknown", "")
        files, bytes_ = pending.get(name, (0, 0))
        connections.append(
            {
                "name": name,
                "destination": describe_destination(settings),
                "state": state,
                "healthy": state != "failing",
                "message": message,
                "last_error": h.last_error if h else None,
                "last_error_code": h.last_error_code if h else None,
                "last_success_at": h.last_success_at if h else None,
                "last_attempt_at": h.last_attempt_at if h else None,
                "failing_since": h.failing_since if h else None,
                "open_windows": open_counts.get(name, 0),
                "pending_files": files,
                "pending_bytes": bytes_,
                "oldest_undelivered_age_seconds": oldest.get(name, 0.0),
                "files_sealed": int(sealed.get(name, 0)),
                "files_delivered": int(delivered.get(name, 0)),
                "bytes_delivered": int(delivered_bytes.get(name, 0)),
                "uploads_retried": retried.get(name, {}),
                "uploads_failed": failed.get(name, {}),
                "events_filtered": filtered.get(name, {}),
            }
        )
    return {
        "source": "server",
        "version": __version__,
        "generated_at": now,
        "started_at": rt.started_at,
        "uptime_seconds": max(0.0, now - rt.started_at),
        "ready": ready,
        "ready_reasons": [] if ready else [reason],
        "inputs": _inputs(registry, rt.config),
        "connections": connections,
        "spool": {
            "path": str(rt.config.spool.path),
            "bytes": rt.spool_bytes,
            "max_bytes": rt.config.spool.max_bytes,
            "schema_version": rt.spool.schema_version(),
            **reader.counts().as_dict(),
            "unconfigured": unconfigured_data(
                pending, reader.open_windows_by_connection(), rt.config
            ),
        },
        **_file_lists(reader),
        "history": {
            "interval_seconds": history.interval if history else None,
            "points": history.points() if history else [],
        },
    }


def unconfigured_data(
    pending: dict[str, tuple[int, int]], open_counts: dict[str, int], config: Config
) -> list[dict[str, Any]]:
    """What the spool holds for connections no longer in ``config`` (kept, not forwarded, until
    one of that name is configured again or ``spool discard`` lets it go), from the spool's
    ``pending_by_connection`` and ``open_windows_by_connection``."""
    names = (set(pending) | set(open_counts)) - set(config.connections)
    return [
        {
            "name": name,
            "pending_files": pending.get(name, (0, 0))[0],
            "pending_bytes": pending.get(name, (0, 0))[1],
            "open_windows": open_counts.get(name, 0),
        }
        for name in sorted(names)
    ]


def _age(since: float | None, now: float) -> float:
    return max(0.0, now - since) if since is not None else 0.0


def _inputs(registry: CollectorRegistry, config: Config) -> list[dict[str, Any]]:
    batches = _by_first_label(sample_values(registry, "s3forward_batches_received_total"))
    events = _by_first_label(sample_values(registry, "s3forward_events_received_total"))
    dedup = _by_first_label(sample_values(registry, "s3forward_batches_deduplicated_total"))
    rejected = _nested(sample_values(registry, "s3forward_requests_rejected_total"))
    rows = [
        {
            "name": name,
            "batches_received": int(batches.get(name, 0)),
            "events_received": int(events.get(name, 0)),
            "batches_deduplicated": int(dedup.get(name, 0)),
            "rejected": rejected.get(name, {}),
        }
        for name in config.inputs
    ]
    if "-" in rejected:  # rejected before an input was known (no or bad credentials)
        rows.append(
            {
                "name": "-",
                "batches_received": 0,
                "events_received": 0,
                "batches_deduplicated": 0,
                "rejected": rejected["-"],
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Reading the spool


def input_facts(registry: CollectorRegistry, config: Config) -> list[dict[str, Any]]:
    """The per-input counters of a snapshot (cluster mode's snapshot uses them too)."""
    return _inputs(registry, config)


def snapshot_from_spool(config: Config) -> Snapshot:
    """The facts, as far as the spool file knows them, for when the server is not running.

    Counters and delivery health live in the server's memory, so they are absent; a
    connection's last error is the one recorded on its waiting files.
    """
    now = time.time()
    with open_spool_readonly(config.spool.path) as reader:
        pending = reader.pending_by_connection()
        open_counts = reader.open_windows_by_connection()
        oldest = reader.oldest_pending()
        errors = reader.last_errors()
        connections = []
        for name, settings in config.connections.items():
            files, bytes_ = pending.get(name, (0, 0))
            error = errors.get(name)
            message = (
                f"Server not running. Last error on a waiting file "
                f"(after {error[1]} attempts): {error[0]}"
                if error
                else "Server not running; no delivery error recorded on waiting files."
            )
            connections.append(
                {
                    "name": name,
                    "destination": describe_destination(settings),
                    "state": "failing" if error else "unknown",
                    "healthy": error is None,
                    "message": message,
                    "last_error": error[0] if error else None,
                    "open_windows": open_counts.get(name, 0),
                    "pending_files": files,
                    "pending_bytes": bytes_,
                    "oldest_undelivered_age_seconds": _age(oldest.get(name), now),
                }
            )
        return {
            "source": "spool",
            "version": __version__,
            "generated_at": now,
            "ready": False,
            "ready_reasons": ["the server is not running (read from the spool file)"],
            "inputs": [],
            "connections": connections,
            "spool": {
                "path": str(config.spool.path),
                "bytes": reader.stored_bytes(),
                "max_bytes": config.spool.max_bytes,
                "schema_version": reader.schema_version(),
                **reader.counts().as_dict(),
                "unconfigured": unconfigured_data(pending, open_counts, config),
            },
            **_file_lists(reader),
            "history": {"interval_seconds": None, "points": []},
        }


# --------------------------------------------------------------------------------------------
# Spool files for the CLI


def preview(body: bytes, content_encoding: str | None, lines: int) -> list[str]:
    """The first ``lines`` lines of a file body, decompressed when it is gzipped."""
    if content_encoding == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return [line.decode("utf-8", "replace") for line in body.splitlines()[:lines]]


def export_path(directory: Path, key: str, prefix: str | None = None) -> Path:
    """Where the object ``key`` lands under ``directory`` (``prefix/key`` when given).

    Refuses keys that would escape ``directory`` (absolute, or with ``..`` segments).
    """
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or key.startswith("/"):
        raise ValueError(f"the key {key!r} cannot be written as a path")
    base = directory / prefix if prefix else directory
    return base.joinpath(*parts)


def write_exported(path: Path, body: bytes) -> None:
    """Write ``body`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(body)
    os.replace(partial, path)


def plain_lines(snap: Snapshot) -> Iterable[str]:
    """``snap`` as lines of text for a terminal."""
    now = float(snap["generated_at"])
    source = "running server" if snap["source"] == "server" else "spool file (server down)"
    yield f"s3forward {snap['version']} - from the {source}"
    if snap["ready"]:
        yield "ready: yes"
    else:
        yield "ready: NO - " + "; ".join(snap["ready_reasons"])
    spool = snap["spool"]
    yield (
        f"spool: {spool['path']}  {_size(spool['bytes'])} of {_size(spool['max_bytes'])}  "
        f"open windows {spool['open_windows']}  sealed windows {spool['sealed_windows']}  "
        f"files waiting {spool['pending_files']}  schema v{spool.get('schema_version', '?')}"
    )
    for gone in spool.get("unconfigured", []):
        yield (
            f"  held for connection {gone['name']} (no longer configured): "
            f"{gone['pending_files']} files ({_size(gone['pending_bytes'])}), open windows "
            f"{gone['open_windows']}; not forwarded. Configure it again, or let it go with "
            f"`s3forward spool discard --connection {gone['name']}` (server stopped)"
        )
    yield ""
    for c in snap["connections"]:
        yield f"connection {c['name']} -> {c['destination']['url']}  [{c['state'].upper()}]"
        yield f"  {c['message']}"
        line = (
            f"  waiting: {c['pending_files']} files ({_size(c['pending_bytes'])}), "
            f"open windows {c['open_windows']}, oldest undelivered "
            f"{duration(c['oldest_undelivered_age_seconds'])}"
        )
        if "files_delivered" in c:
            line += f", delivered {c['files_delivered']} files ({_size(c['bytes_delivered'])})"
        yield line
    for i in snap["inputs"]:
        rejected = sum(i["rejected"].values())
        yield (
            f"input {i['name']}: {i['batches_received']} batches, {i['events_received']} events, "
            f"{i['batches_deduplicated']} deduplicated, {rejected} requests rejected"
        )
    if snap.get("cluster"):
        yield from _cluster_lines(snap["cluster"])
    if snap["recent_files"]:
        yield ""
        yield "last files delivered:"
        for f in snap["recent_files"][:10]:
            when = ago(now - f["delivered_at"]) if f["delivered_at"] else ""
            yield f"  {f['key']}  {_size(f['stored_bytes'])}  {when}"


def _cluster_lines(cluster: Mapping[str, Any]) -> Iterable[str]:
    """Cluster mode (issue 9): the workers, the partitions and the cluster-wide sums."""
    yield ""
    if cluster.get("error"):
        yield f"cluster: {cluster['error']}"
    if "partitions" not in cluster:
        yield "cluster: no reading of the lease bucket yet"
        return
    unowned = cluster["unowned_partitions"]
    yield (
        f"cluster: {len(cluster['workers'])} workers, {cluster['partitions']} partitions "
        f"({len(unowned)} unowned), lag {cluster['lag_messages']} messages, "
        f"oldest undelivered {duration(cluster['oldest_undelivered_age_seconds'])}, "
        f"lease moves {cluster['lease_moves']}"
    )
    for w in cluster["workers"]:
        flag = "  DRAINING" if w["draining"] else ""
        owned = ",".join(str(p) for p in w["partitions_owned"]) or "-"
        yield f"  worker {w['id']}: partitions {owned}; lease moves {w['lease_moves']}{flag}"
    for row in cluster["partition_rows"]:
        if row["lag"] or row["owner"] is None:
            yield (
                f"  partition {row['partition']}: owner {row['owner'] or '-'} "
                f"[{row['state']}] lag {row['lag']}, open windows {row['open_windows']}"
            )


def _size(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


__all__ = [
    "History",
    "Sample",
    "Snapshot",
    "ago",
    "describe_destination",
    "describe_health",
    "duration",
    "export_path",
    "input_facts",
    "plain_lines",
    "preview",
    "sample_values",
    "snapshot",
    "snapshot_from_spool",
    "write_exported",
]
