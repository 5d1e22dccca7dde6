"""Wiring of ``s3forward serve`` in cluster mode: an ingest node, a worker, or both.

Every role serves HTTP: ``/healthz``, ``/readyz``, ``/metrics``, the status page (``/``,
``/status.json``, read by ``s3forward status``) with the whole cluster's partitions, owners, lag,
lease moves and oldest undelivered age (``cluster.status``), and ``/cluster/status.json`` (this
worker's own partitions in detail). A node
without the ingest role answers the Events API with 503 (``this node has no ingest role``).
SIGTERM/SIGINT stop intake, stop the partitions, give the leases back (another worker takes
over within one lease round) and close the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import structlog
from prometheus_client import Gauge

from s3forward.api.app import IngestApp, Request
from s3forward.api.auth import Authenticator, BadCredentials, MissingCredentials
from s3forward.api.listen import bind_listener, url_of
from s3forward.api.responses import Response, json_response
from s3forward.api.server import front_door_limits, make_uvicorn_server, tune_garbage_collector
from s3forward.api.status_page import status_routes
from s3forward.cluster.ingest import JetStreamIntake
from s3forward.cluster.naming import ClusterNames
from s3forward.cluster.status import ClusterState, LeaseWatch, cluster_snapshot
from s3forward.cluster.worker import ClusterWorker, WorkerStatus
from s3forward.config import ClusterRole, ClusterSettings, Config
from s3forward.errors import SpoolUnavailableError
from s3forward.intake import SubmitResult
from s3forward.metrics import Metrics
from s3forward.sinks import make_sink

log = structlog.get_logger("s3forward.cluster")


class ClusterMetrics:
    """The cluster gauges, in the service's registry (names prefixed ``s3forward_cluster_``)."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.partitions_owned = Gauge(
            "s3forward_cluster_partitions_owned", "Partitions this worker runs", registry=r
        )
        self.lease_moves = Gauge(
            "s3forward_cluster_lease_moves", "Leases this worker has taken so far", registry=r
        )
        self.live_workers = Gauge(
            "s3forward_cluster_live_workers", "Workers with a live heartbeat", registry=r
        )
        self.partition_lag = Gauge(
            "s3forward_cluster_partition_lag_messages",
            "Messages read but not yet applied, per owned partition",
            ["partition"],
            registry=r,
        )
        self.open_windows = Gauge(
            "s3forward_cluster_open_windows",
            "Open windows per owned partition",
            ["partition"],
            registry=r,
        )
        self.backlog = Gauge(
            "s3forward_cluster_partition_backlog_messages",
            "Log positions between the low watermark and the next message, per partition",
            ["partition"],
            registry=r,
        )

        self.cluster_lag = Gauge(
            "s3forward_cluster_lag_messages",
            "Messages in every partition's log not yet applied by its owner, cluster-wide",
            registry=r,
        )
        self.cluster_oldest = Gauge(
            "s3forward_cluster_oldest_undelivered_age_seconds",
            "Age of the oldest data not yet delivered, cluster-wide (from the heartbeats)",
            registry=r,
        )
        self.unowned = Gauge(
            "s3forward_cluster_unowned_partitions",
            "Partitions no worker holds a lease on",
            registry=r,
        )
        self.oldest_open_age = Gauge(
            "s3forward_cluster_oldest_open_window_age_seconds",
            "Age of this worker's oldest open window (max over workers: the cluster's)",
            registry=r,
        )

    def update_cluster(self, state: ClusterState) -> None:
        summary = state.summary(time.time())
        self.cluster_lag.set(summary["lag_messages"])
        self.cluster_oldest.set(summary["oldest_undelivered_age_seconds"])
        self.unowned.set(len(summary["unowned_partitions"]))

    def update(self, status: WorkerStatus) -> None:
        self.partitions_owned.set(len(status.partitions))
        self.lease_moves.set(status.lease_moves)
        self.live_workers.set(len(status.live_workers))
        for gauge in (self.partition_lag, self.open_windows, self.backlog):
            gauge.clear()
        opened = [p.oldest_open_at for p in status.partitions.values() if p.oldest_open_at]
        self.oldest_open_age.set(max(0.0, time.time() - min(opened)) if opened else 0.0)
        for p in status.partitions.values():
            label = str(p.partition)
            self.partition_lag.labels(label).set(p.lag)
            self.open_windows.labels(label).set(p.open_windows)
            self.backlog.labels(label).set(max(0, p.next_seq - p.low_watermark))


class NoIngest:
    """The ``Intake`` of a worker-only node: every request is refused with 503."""

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        raise SpoolUnavailableError("this node has no ingest role; send to an ingest node")

    def ready(self) -> tuple[bool, str]:
        return True, "ok"


class ClusterService:
    """The HTTP server plus the cluster roles, with signal-driven shutdown."""

    def __init__(
        self,
        config: Config,
        *,
        on_ready: Callable[[str], None] | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        assert config.cluster is not None
        self.config = config
        self.listener = listener
        self.cluster: ClusterSettings = config.cluster
        self.on_ready = on_ready
        self.metrics = Metrics()
        roles = self.cluster.roles
        self.intake = JetStreamIntake(config, self.cluster) if ClusterRole.INGEST in roles else None
        self.worker = (
            ClusterWorker(
                config,
                self.cluster,
                {name: make_sink(c) for name, c in config.connections.items()},
            )
            if ClusterRole.WORKER in roles
            else None
        )
        self.started_at = time.time()
        self.cluster_metrics = ClusterMetrics(self.metrics)
        self.names = ClusterNames.of(self.cluster)
        self.cluster_state: ClusterState | None = None
        self._server: Any = None

    def readiness(self) -> tuple[bool, str]:
        if self.worker is not None:
            return self.worker.ready()
        return True, "ok"

    def snapshot(self) -> dict[str, Any]:
        """The status page's facts (``cluster.status``); the cluster part is at most one
        refresh (2 s) old."""
        intake_ready = self.intake.ready() if self.intake is not None else (True, "ok")
        ready = intake_ready if not intake_ready[0] else self.readiness()
        return cluster_snapshot(
            self.config,
            self.metrics,
            roles=[r.value for r in self.cluster.roles],
            started_at=self.started_at,
            readiness=ready,
            state=self.cluster_state,
            node_worker=self.worker.worker_id if self.worker is not None else None,
        )

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "roles": [r.value for r in self.cluster.roles],
            "started_at": self.started_at,
        }
        if self.worker is not None:
            status = self.worker.status
            out["worker"] = {
                "id": status.worker_id,
                "live_workers": status.live_workers,
                "lease_moves": status.lease_moves,
                "draining": status.draining,
                "owned": sorted(status.partitions),
                "last_error": status.last_error,
                "partitions": [
                    {**dataclasses.asdict(p), "lag": p.lag}
                    for p in sorted(status.partitions.values(), key=lambda p: p.partition)
                ],
            }
        return out

    async def _refresh_gauges(self) -> None:
        nc = self.worker.connection if self.worker is not None else None
        if nc is None and self.intake is not None:
            nc = self.intake.connection
        watch: LeaseWatch | None = None
        try:
            while True:
                if self.worker is not None:
                    self.cluster_metrics.update(self.worker.status)
                try:
                    if watch is None and nc is not None:
                        js = nc.jetstream(timeout=5)
                        leases = await js.key_value(self.names.lease_bucket)
                        watch = LeaseWatch(leases, self.names.partitions, self.cluster.lease_ttl)
                        watch.start()
                except (nats.errors.Error, TimeoutError) as exc:
                    state = ClusterState(self.names.partitions, read_at=time.time())
                    state.error = f"cannot read the lease bucket: {exc or type(exc).__name__}"
                    self.cluster_state = state
                if watch is not None:
                    self.cluster_state = watch.state()
                    self.cluster_metrics.update_cluster(self.cluster_state)
                await asyncio.sleep(2.0)
        finally:
            if watch is not None:
                await watch.stop()

    def request_stop(self) -> None:
        if self.intake is not None:
            self.intake.stop_intake()
        if self._server is not None:
            self._server.should_exit = True

    async def serve(self) -> None:
        tune_garbage_collector()

        async def status_json(_request: object) -> Response:
            return json_response(200, self.status())

        authenticator = Authenticator(self.config.inputs)

        async def drain(request: Request) -> Response:
            """POST /cluster/drain (an input's Basic credentials): retire this worker."""
            try:
                authenticator.authenticate(request.headers.get(b"authorization"))
            except MissingCredentials:
                return json_response(401, {"error": "credentials required"})
            except BadCredentials:
                return json_response(403, {"error": "invalid credentials"})
            if self.worker is None:
                return json_response(409, {"error": "this node has no worker role to drain"})
            self.worker.drain()
            log.warning("draining: handing every partition over", worker=self.worker.worker_id)
            return json_response(202, {"draining": True, "worker": self.worker.worker_id})

        intake = self.intake if self.intake is not None else NoIngest()
        app = IngestApp(
            self.config,
            intake,
            self.metrics,
            readiness=self.readiness,
            extra_routes={
                **status_routes(self.config, self.snapshot),
                ("GET", "/cluster/status.json"): status_json,
                ("POST", "/cluster/drain"): drain,
            },
        )
        server_settings = self.config.server
        listener = self.listener or bind_listener(server_settings.host, server_settings.port)
        self.listener = listener
        server = make_uvicorn_server(
            app,
            server_settings.host,
            server_settings.port,
            limits=front_door_limits(server_settings),
        )
        self._server = server
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        if self.intake is not None:
            await self.intake.start()
        if self.worker is not None:
            await self.worker.start()
        gauges = asyncio.create_task(self._refresh_gauges())
        try:
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            while not server.started and not serving.done():
                await asyncio.sleep(0.01)
            if serving.done():
                await serving
            url = url_of(listener)
            log.info("listening (cluster mode)", url=url, roles=list(self.cluster.roles))
            if self.on_ready is not None:
                self.on_ready(url)
            await serving
        finally:
            gauges.cancel()
            self.request_stop()
            if self.worker is not None:
                await self.worker.stop()
                for sink in self.worker.sinks.values():
                    sink.close()
            if self.intake is not None:
                await self.intake.close()
            log.info("stopped (cluster mode)")


__all__ = ["ClusterService", "NoIngest"]
