"""Wiring and lifecycle of the long-running service.

``start`` opens the spool, resumes its windows, starts the writer, builder and delivery workers
and the HTTP server. SIGTERM/SIGINT stop intake at once (503), let uploads in flight finish
within the grace period, and leave everything else in the spool for the next start. ``drain``
seals every open window and delivers everything now, for a node that will not come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import structlog
import uvicorn

from s3forward.admin import AdminApp, ReloadResult, token_path, write_token
from s3forward.api.app import IngestApp
from s3forward.api.frontdoor import raise_open_files_limit
from s3forward.api.listen import bind_listener, url_of
from s3forward.api.server import front_door_limits, make_uvicorn_server, tune_garbage_collector
from s3forward.api.status_page import is_loopback, status_routes
from s3forward.clock import Clock, SystemClock
from s3forward.config import Config, ConnectionSettings, ServerSettings
from s3forward.delivery import Delivery, Health
from s3forward.engine import Engine
from s3forward.errors import ConfigError, Problem, S3ForwardError
from s3forward.metrics import Metrics
from s3forward.multicore.hub import WorkerHub
from s3forward.sinks import make_sink
from s3forward.sinks.base import Sink
from s3forward.spool.base import Spool
from s3forward.spool.sqlite import SqliteSpool
from s3forward.status import History, snapshot
from s3forward.systemd import Notifier

log = structlog.get_logger("s3forward.service")

_GAUGE_INTERVAL = 2.0


@dataclass
class Runtime:
    """Everything a running s3forward holds, for the HTTP app, the status page and tests."""

    config: Config
    spool: Spool
    metrics: Metrics
    engine: Engine
    delivery: Delivery
    sinks: dict[str, Sink]
    started_at: float

    def readiness(self) -> tuple[bool, str]:
        """Ready when the spool can take data and no connection has been failing too long."""
        ok, reason = self.engine.ready()
        if not ok:
            return ok, reason
        failing = [
            f"connection {name!r} is failing: {h.last_error}"
            for name, h in self.delivery.health().items()
            if not h.healthy
        ]
        failing += [
            f"connection {name!r} delivered nothing for {seconds:.0f}s while files waited "
            f"(stalled_after {self.config.delivery.stalled_after:g}s): S3 may be hanging"
            for name, seconds in self.delivery.stalled().items()
        ]
        if failing:
            return False, "; ".join(failing)
        return True, "ok"

    def health(self) -> dict[str, Health]:
        return self.delivery.health()

    def open_window_counts(self) -> dict[str, int]:
        return self.engine.open_window_counts()

    @property
    def spool_bytes(self) -> int:
        return self.engine.spool_bytes

    def refresh_gauges(self) -> None:
        now = time.time()
        oldest = self.spool.oldest_pending()
        for name in self.config.connections:
            since = oldest.get(name)
            self.metrics.oldest_undelivered_age_seconds.labels(name).set(
                max(0.0, now - since) if since is not None else 0.0
            )
        counts = self.spool.counts()
        self.metrics.spool_files.labels("pending").set(counts.pending_files)
        self.metrics.spool_files.labels("sealed_windows").set(counts.sealed_windows)
        self.metrics.spool_bytes.set(self.engine.spool_bytes)


def open_runtime(
    config: Config,
    *,
    clock: Clock | None = None,
    sinks: dict[str, Sink] | None = None,
    metrics: Metrics | None = None,
    build_processes: int = 1,
) -> Runtime:
    """Open the spool and build the engine and delivery (not started yet)."""
    clock = clock or SystemClock()
    metrics = metrics or Metrics()
    spool = SqliteSpool.open(config.spool.path)
    try:
        engine = Engine(config, spool, metrics, clock=clock, build_processes=build_processes)
        sinks = sinks or {name: sink_for(config, c) for name, c in config.connections.items()}
        delivery = Delivery(config, engine.ledger, sinks, metrics, clock=clock)
        engine.on_file_stored(delivery.wake)
    except BaseException:
        spool.close()
        raise
    return Runtime(
        config=config,
        spool=spool,
        metrics=metrics,
        engine=engine,
        delivery=delivery,
        sinks=sinks,
        started_at=clock.now(),
    )


def sink_for(config: Config, settings: ConnectionSettings) -> Sink:
    """The sink of one connection, with the configured S3 timeouts."""
    return make_sink(
        settings,
        connect_timeout=config.delivery.s3_connect_timeout,
        read_timeout=config.delivery.s3_read_timeout,
    )


class Service:
    """The HTTP server plus the runtime, with signal-driven shutdown."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        grace: float = 30.0,
        on_ready: Callable[[str], None] | None = None,
        extra_routes: dict[tuple[str, str], object] | None = None,
        load_config: Callable[[], Config] | None = None,
        notifier: Notifier | None = None,
        listener: socket.socket | None = None,
        log_format: str | None = None,
        log_level: str = "info",
    ) -> None:
        self.runtime = runtime
        self.listener = listener
        """An already-bound listening socket to serve on (``serve --fd``); by default
        ``serve`` binds ``[server] listen`` itself."""
        self.grace = grace
        self.on_ready = on_ready
        self.extra_routes = extra_routes or {}
        self.load_config = load_config
        self.notifier = notifier or Notifier()
        self._server: uvicorn.Server | None = None
        self._stop_requested = threading.Event()
        self._history = History()
        self._admin: AdminApp | None = None
        self._reload_lock = asyncio.Lock()
        self._reload_tasks: set[asyncio.Task[ReloadResult]] = set()
        self._pending_certificate: tuple[Path | None, Path | None] | None = None
        # Issue 10: with [server] workers > 1, HTTP is served by worker processes.
        self._hub: WorkerHub | None = None
        self._log_args = (log_format, log_level)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def request_stop(self) -> None:
        """Stop intake now and let ``serve`` return after the grace period."""
        if self._stop_requested.is_set():
            return
        self._stop_requested.set()
        self.notifier.stopping()
        log.info("stopping: intake closed, finishing uploads in flight", grace_seconds=self.grace)
        self.runtime.engine.stop_intake()
        if self._hub is not None:
            self._hub.stopping()
        if self._server is not None:
            self._server.should_exit = True
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)

    async def serve(self) -> None:
        tune_garbage_collector()
        rt = self.runtime
        config = rt.config
        history = self._history
        token_file = token_path(config.spool.path)
        admin = AdminApp(self._build_app(config), write_token(token_file), self.reload)
        self._admin = admin
        tls = config.server
        # Bound before anything starts: a port in use fails the start, with nothing to undo.
        listener = self.listener or bind_listener(config.server.host, config.server.port)
        self.listener = listener
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server: uvicorn.Server | None = None
        if config.server.workers == 1:  # the engine serves HTTP itself, as it always did
            server = make_uvicorn_server(
                admin,
                config.server.host,
                config.server.port,
                ssl_certfile=str(tls.tls_cert_file) if tls.tls_cert_file else None,
                ssl_keyfile=str(tls.tls_key_file) if tls.tls_key_file else None,
                limits=front_door_limits(config.server),
            )
            # Issue 10: enough open files for server.max_connections, or a warning saying so.
            files_warning = raise_open_files_limit(config.server.max_connections)
            if files_warning is not None:
                log.warning("open-files limit too low", problem=files_warning)
        self._server = server
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        if not tls.tls and not is_loopback(config.server.host):
            log.warning(
                "listening on a non-loopback address without TLS: API secrets travel in clear "
                "text; set [server] tls_cert_file and tls_key_file, or terminate TLS in a proxy",
                host=config.server.host,
            )
        rt.engine.start()
        rt.delivery.start()
        # In a thread: a slow or unreachable endpoint must not delay start-up.
        threading.Thread(
            target=check_at_start, args=(rt,), name="startup-check", daemon=True
        ).start()
        watchdog: asyncio.Task[None] | None = None
        gauges = asyncio.create_task(self._refresh_gauges())
        sampler = asyncio.create_task(history.run(rt.metrics.registry))
        try:
            if server is not None:
                serving = asyncio.create_task(server.serve(sockets=[listener]))
                while not server.started and not serving.done():
                    await asyncio.sleep(0.01)
                if serving.done():
                    await serving  # re-raise a start-up failure
            else:
                await self._start_workers(config, listener)
                serving = asyncio.create_task(self._until_stopped())
            url = url_of(listener, "https" if tls.tls else "http")
            log.info(
                "listening",
                url=url,
                inputs=list(config.inputs),
                connections=list(config.connections),
            )
            if self.on_ready is not None:
                self.on_ready(url)
            self.notifier.ready(f"listening on {url}")
            if self.notifier.watchdog_interval is not None:
                watchdog = asyncio.create_task(self._watchdog(self.notifier.watchdog_interval))
            await serving
        finally:
            gauges.cancel()
            sampler.cancel()
            if watchdog is not None:
                watchdog.cancel()
            self.request_stop()
            if self._hub is not None:
                await self._hub.stop()  # they answer what is in flight before the drain
            with contextlib.suppress(OSError):
                token_file.unlink()
            await asyncio.to_thread(self._shutdown)

    async def _until_stopped(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()

    async def _start_workers(self, config: Config, listener: socket.socket) -> None:
        """Start ``[server] workers`` HTTP worker processes, all accepting on ``listener``."""
        if config.text is None:
            raise ConfigError(
                [Problem("server.workers", "worker processes need a config file to read")]
            )
        hub = WorkerHub(
            count=config.server.workers,
            listener=listener,
            ingest=self.runtime.engine.ingest,
            app=self._require_admin,
            metrics=self.runtime.metrics,
            config=config,
            grace=self.grace,
            log_format=self._log_args[0],
            log_level=self._log_args[1],
        )
        self._hub = hub
        await hub.start()
        log.info("HTTP worker processes serving", workers=config.server.workers, pids=hub.pids())

    def _require_admin(self) -> AdminApp:
        assert self._admin is not None
        return self._admin

    def _build_app(self, config: Config) -> IngestApp:
        rt = self.runtime
        routes = {
            **status_routes(config, lambda: snapshot(rt, self._history)),
            **self.extra_routes,
        }
        return IngestApp(
            config,
            rt.engine,
            rt.metrics,
            readiness=rt.readiness,
            extra_routes=routes,  # type: ignore[arg-type]
        )

    async def _watchdog(self, interval: float) -> None:
        # Sent from the event loop: a loop that stops turning stops the pings.
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ reload (issue 12)

    def _reload_on_signal(self) -> None:
        log.info("SIGHUP: reloading the configuration")
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reload_tasks.add(task)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self) -> ReloadResult:
        """Re-read the config and apply it; on any problem keep the running one and say why.

        One reload at a time; requests keep being served meanwhile. What applies to open
        windows and what only to new ones is documented in ``Engine.apply_config`` and the
        README ("Reloading the configuration").
        """
        async with self._reload_lock:
            if self._stop_requested.is_set():
                return ReloadResult(ok=False, problems=["the service is stopping"])
            self.notifier.reloading()
            try:
                result = await asyncio.to_thread(self._reload_now)
                if self._hub is not None:
                    result = await self._reload_workers(result)
                else:
                    self._load_pending_certificate()
            except Exception as exc:  # a bug in applying must not take the service down
                log.exception("reloading the configuration failed; keeping the old one")
                result = ReloadResult(ok=False, problems=[f"reload failed: {exc}"])
            self.runtime.metrics.config_reloads_total.labels(
                "applied" if result.ok else "rejected"
            ).inc()
            if result.ok:
                self.runtime.metrics.config_last_reload_success.set(1)
                log.info("configuration reloaded", **_changes(result))
            else:
                self.runtime.metrics.config_last_reload_success.set(0)
                log.error(
                    "the new configuration was rejected; the running one stays in effect",
                    problems=result.problems,
                )
            self.notifier.ready()
            return result

    async def _reload_workers(self, result: ReloadResult) -> ReloadResult:
        """Send the applied config (and a reloaded certificate) to every HTTP worker."""
        assert self._hub is not None
        pending, self._pending_certificate = self._pending_certificate, None
        if not result.ok:
            return result
        certificate = None
        if pending is not None and pending[0] is not None:
            certificate = (str(pending[0]), str(pending[1]) if pending[1] else None)
        problems = await self._hub.use_config(self.runtime.config, certificate=certificate)
        for problem in problems:
            log.error("an HTTP worker did not take the new configuration", problem=problem)
        return result

    def _load_pending_certificate(self) -> None:
        pending, self._pending_certificate = self._pending_certificate, None
        if pending is None or self._server is None:
            return
        live = self._server.config.ssl
        if isinstance(live, ssl.SSLContext) and pending[0] is not None:
            live.load_cert_chain(pending[0], pending[1])

    def _reload_now(self) -> ReloadResult:
        rt = self.runtime
        old = rt.config
        if self.load_config is None:
            return ReloadResult(ok=False, problems=["this server runs without a config file"])
        try:
            new = self.load_config()
        except ConfigError as exc:
            return ReloadResult(ok=False, problems=[str(p) for p in exc.problems])
        problems: list[str] = []
        if new.spool.path != old.spool.path:
            problems.append(
                f"spool.path changed from {str(old.spool.path)!r} to {str(new.spool.path)!r}: "
                "the spool cannot move while running; restart to use a new spool"
            )
        restart_needed: list[str] = []
        server = new.server
        if (server.host, server.port) != (old.server.host, old.server.port):
            restart_needed.append("server.listen")
        if server.tls != old.server.tls:
            restart_needed.append("server.tls (turning TLS on or off)")
        if server.workers != old.server.workers:
            restart_needed.append("server.workers")
        # What cannot change live keeps its running value, so status shows what is in effect.
        # TLS stays on or off as started; with it on, the new paths (or the old ones if the
        # new config turns it off) are what a reload loads.
        tls_source = server if server.tls else old.server
        server = replace(
            server,
            host=old.server.host,
            port=old.server.port,
            tls_cert_file=tls_source.tls_cert_file if old.server.tls else None,
            tls_key_file=tls_source.tls_key_file if old.server.tls else None,
            workers=old.server.workers,
        )
        new = replace(new, server=server)
        certificate = None
        if server.tls and not problems:
            try:
                certificate = _load_certificate(server)
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"server.tls_cert_file/tls_key_file cannot be loaded: {exc}")
        sinks: dict[str, Sink] = {}
        if not problems:
            for name, settings in new.connections.items():
                same_timeouts = (old.delivery.s3_connect_timeout, old.delivery.s3_read_timeout) == (
                    new.delivery.s3_connect_timeout,
                    new.delivery.s3_read_timeout,
                )
                if old.connections.get(name) == settings and same_timeouts:
                    continue
                try:
                    sinks[name] = sink_for(new, settings)
                except S3ForwardError as exc:
                    problems.append(f"connection {name!r}: {exc}")
        if problems:
            for sink in sinks.values():
                sink.close()
            return ReloadResult(ok=False, problems=problems)
        changes = rt.engine.apply_config(new)
        rt.delivery.apply_config(new, sinks)
        rt.sinks = {**{n: s for n, s in rt.sinks.items() if n in new.connections}, **sinks}
        rt.config = new
        for name in changes.removed:  # a removed connection's gauges must not stay frozen
            with contextlib.suppress(KeyError):
                rt.metrics.oldest_undelivered_age_seconds.remove(name)
        if self._admin is not None:
            self._admin.app = self._build_app(new)
        if certificate is not None:
            # Loaded into the live context by the event loop (see reload): handshakes run there,
            # so none can see a new certificate with the old key.
            self._pending_certificate = (server.tls_cert_file, server.tls_key_file)
        return ReloadResult(
            ok=True,
            added=list(changes.added),
            removed=list(changes.removed),
            changed=list(changes.changed),
            inputs=sorted(new.inputs),
            tls_reloaded=certificate is not None,
            restart_needed=restart_needed,
        )

    async def _refresh_gauges(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.runtime.refresh_gauges)
            except Exception:  # gauges must never take the service down
                log.exception("refreshing gauges failed")
            await asyncio.sleep(_GAUGE_INTERVAL)

    def _shutdown(self) -> None:
        rt = self.runtime
        finished = rt.delivery.stop(self.grace)
        writer_stopped = rt.engine.close()
        counts = rt.spool.counts()
        if writer_stopped:
            rt.spool.close()  # never under a writer still in a transaction
        log.info(
            "stopped",
            uploads_finished=finished,
            pending_files=counts.pending_files,
            open_windows=counts.open_windows,
            sealed_windows=counts.sealed_windows,
        )


def _load_certificate(server: ServerSettings) -> ssl.SSLContext:
    """Check that the certificate and key load (and match) before touching the live context."""
    assert server.tls_cert_file is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    return context


def _changes(result: ReloadResult) -> dict[str, object]:
    fields = {
        "added": result.added,
        "removed": result.removed,
        "changed": result.changed,
        "inputs": result.inputs,
        "tls_reloaded": result.tls_reloaded,
    }
    if result.restart_needed:
        fields["restart_needed"] = result.restart_needed
    return fields


def check_at_start(runtime: Runtime) -> None:
    """Run `check`'s read-only steps for every connection; mark the failing ones unhealthy.

    A failing connection keeps its data (delivery goes on retrying it); the others are not
    affected. The verification write is left to the first delivery.
    """
    from s3forward.checks import check_connection, first_failure  # noqa: PLC0415 - boto3

    for name, settings in runtime.config.connections.items():
        try:
            report = check_connection(settings, write=False)
        except Exception:  # a check must never take the service down
            log.exception("start-up check crashed", connection=name)
            continue
        failed = first_failure(report)
        if failed is None:
            log.info("start-up check passed", connection=name)
            continue
        message = f"start-up check: {failed.name}: {failed.message}; fix: {failed.fix}"
        log.error("connection unhealthy", connection=name, error=message)
        runtime.delivery.mark_unhealthy(name, message, failed.code or "CheckFailed")


def drain(
    runtime: Runtime, *, timeout: float, progress: Callable[[int, int], None] | None = None
) -> int:
    """Seal every window and deliver every file now. Returns how many files remain pending."""
    rt = runtime
    rt.engine.start()
    rt.delivery.start()
    try:
        sealed = rt.engine.seal_all()
        log.info("drain: sealed open windows", windows=sealed)
        rt.engine.settle(timeout)
        deadline = time.monotonic() + timeout
        total = max(rt.spool.counts().pending_files, 1)
        while time.monotonic() < deadline:
            pending = rt.spool.counts().pending_files
            if progress is not None:
                progress(total - pending, total)
            if pending == 0:
                break
            time.sleep(0.1)
        return int(rt.spool.counts().pending_files)
    finally:
        rt.delivery.stop(grace=10.0)
        if rt.engine.close():
            rt.spool.close()
