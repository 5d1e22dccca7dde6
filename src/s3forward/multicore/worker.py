"""An HTTP worker process: the front door, validation and preparation on a core of its own.

Started by the engine (``multicore.hub``) as ``python -m s3forward.multicore.worker`` with two
inherited file descriptors: the listening socket (shared by every worker; the kernel hands each
new connection to one of them) and its end of a private socket pair with the engine. It serves
the same ``IngestApp`` as a single process, on the same guarded uvicorn protocol, with one
difference: its ``Intake`` is ``RemoteIntake``, which prepares the validated batches
(``pipeline.prepared``) and sends them to the engine, and answers 202 only when the engine
replies that their commit is fsync'd. Requests that need the engine's state (/readyz,
/metrics, the status page, /admin/...) are forwarded whole and answered by the engine's app.

The worker keeps no state of its own that matters: its counters are sent to the engine
(``Stats``) every half second and before every forwarded request. If the engine goes away the
channel ends: every request waiting for a commit is answered 503 (never 202) and the worker
exits. SIGTERM/SIGINT stop it gracefully (no new connections, requests in flight answered).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog
import uvicorn
import uvloop

from s3forward.admin import RELOAD_PATH
from s3forward.api.app import IngestApp
from s3forward.api.frontdoor import raise_open_files_limit
from s3forward.api.listen import inherited_listener
from s3forward.api.server import front_door_limits, make_uvicorn_server, tune_garbage_collector
from s3forward.api.status_page import status_routes
from s3forward.config import Config, config_from_text, embedded_default
from s3forward.errors import SpoolUnavailableError
from s3forward.intake import SubmitResult
from s3forward.logs import configure_logging
from s3forward.metrics import Metrics
from s3forward.mparticle.parse import ValidatedBatches
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
    engine_frames,
    error_of,
)
from s3forward.pipeline.prepared import modes_for, prepare_batches

log = structlog.get_logger("s3forward.worker")

STATS_INTERVAL = 0.5
"""Seconds between two ``Stats`` frames (and so how stale /metrics may be for this worker)."""
ENGINE_GONE = "the engine process is gone; nothing was stored, retry"

Scope = dict[str, Any]


# ------------------------------------------------------------------------------ the engine


class EngineClient:
    """The worker's side of the socket pair: requests with ids, answers matched to them."""

    def __init__(
        self,
        on_config: Callable[[UseConfig], None],
        on_lost: Callable[[], None],
        on_flush: Callable[[FlushStats], None] = lambda frame: None,
    ):
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._on_config = on_config
        self._on_flush = on_flush
        self._on_lost_callback = on_lost
        self.channel = FrameChannel(engine_frames(), self._received, self._lost)

    @property
    def gone(self) -> bool:
        return self.channel.closed

    def next_id(self) -> int:
        return next(self._ids)

    async def request(self, frame: Submit | Forward) -> Any:
        """Send ``frame`` and wait for the engine's answer to it."""
        if self.channel.closed:
            raise SpoolUnavailableError(ENGINE_GONE)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[frame.id] = future
        self.channel.send(frame)
        try:
            return await future
        finally:
            self._waiting.pop(frame.id, None)

    def send(self, frame: Stats | ConfigApplied) -> None:
        self.channel.send(frame)

    def _received(self, frame: Any) -> None:
        if isinstance(frame, UseConfig):
            self._on_config(frame)
            return
        if isinstance(frame, FlushStats):
            self._on_flush(frame)
            return
        future = self._waiting.get(frame.id)
        if future is not None and not future.done():
            future.set_result(frame)

    def _lost(self, exc: Exception | None) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(SpoolUnavailableError(ENGINE_GONE))
        self._on_lost_callback()


class RemoteIntake:
    """``Intake`` over the socket pair: prepare here, place and commit in the engine."""

    def __init__(self, engine: EngineClient, config: Config) -> None:
        self._engine = engine
        self._config = config
        self._modes = {name: modes_for(config, name) for name in config.inputs}

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        if isinstance(batches, ValidatedBatches) and len(batches.encoded) == len(batches):
            bodies = batches.encoded
        else:
            bodies = [orjson.dumps(b) for b in batches]
        modes = self._modes.get(input_name) or modes_for(self._config, input_name)
        prepared = prepare_batches(input_name, batches, bodies, modes)
        frame = Submit(
            self._engine.next_id(),
            input_name,
            sorted(m.value for m in modes),
            received_at,
            prepared,
        )
        reply = await self._engine.request(frame)
        if isinstance(reply, Accepted):
            return SubmitResult(stored=reply.stored, duplicates=reply.duplicates)
        raise error_of(reply)

    def ready(self) -> tuple[bool, str]:
        # /readyz is answered by the engine; this is only asked if a route is not forwarded.
        return (False, ENGINE_GONE) if self._engine.gone else (True, "ok")


# ------------------------------------------------------------------------------ metrics


class _Observations:
    """Stands in for ``Metrics.ingest_seconds`` in a worker: observations are sent, not kept."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, float]] = []

    def labels(self, endpoint: str) -> _Observer:
        return _Observer(endpoint, self.pending)


class _Observer:
    __slots__ = ("endpoint", "pending")

    def __init__(self, endpoint: str, pending: list[tuple[str, float]]) -> None:
        self.endpoint = endpoint
        self.pending = pending

    def observe(self, seconds: float) -> None:
        self.pending.append((self.endpoint, seconds))


class MetricsRelay:
    """The worker's counters, sent to the engine as increments since the last ``Stats``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.observations = _Observations()
        metrics.ingest_seconds = self.observations  # type: ignore[assignment]
        self._sent: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def take(self) -> Stats | None:
        counters: list[tuple[str, dict[str, str], float]] = []
        for family in self.metrics.registry.collect():
            if family.type != "counter":
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = (family.name, tuple(sorted(sample.labels.items())))
                delta = sample.value - self._sent.get(key, 0.0)
                if delta:
                    self._sent[key] = sample.value
                    counters.append((family.name, dict(sample.labels), delta))
        observations, self.observations.pending[:] = list(self.observations.pending), []
        if not counters and not observations:
            return None
        return Stats(counters, observations)


# ------------------------------------------------------------------------------ the app


def forwarded_paths(config: Config) -> frozenset[str]:
    """Paths answered by the engine's own app (they read the engine's state)."""
    status = {path for _, path in status_routes(config, lambda: None)}  # type: ignore[arg-type,return-value]
    return frozenset({"/readyz", "/metrics", RELOAD_PATH, *status})


class WorkerApp:
    """ASGI: ingest and the Web SDK endpoints here, the rest forwarded to the engine."""

    def __init__(self, engine: EngineClient, relay: MetricsRelay) -> None:
        self.engine = engine
        self.relay = relay
        self.app: IngestApp | None = None
        self.config: Config | None = None
        self.forwarded: frozenset[str] = frozenset()

    def use(self, config: Config) -> None:
        intake = RemoteIntake(self.engine, config)
        self.app = IngestApp(config, intake, self.relay.metrics)
        self.config = config
        self.forwarded = forwarded_paths(config)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        app = self.app
        if scope["type"] != "http" or app is None:
            return
        path: str = scope["path"]
        if (path.rstrip("/") or "/") in self.forwarded:
            await self._forward(scope, receive, send)
            return
        await app(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Any, send: Any) -> None:
        assert self.config is not None
        limit = self.config.server.max_request_bytes
        chunks: list[bytes] = []
        total, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                error = {"code": "PAYLOAD_TOO_LARGE", "message": f"over {limit} bytes"}
                body = orjson.dumps({"errors": [error]})
                await _answer(send, 413, body, [(b"content-type", b"application/json")])
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        stats = self.relay.take()
        if stats is not None:
            self.engine.send(stats)  # first, so the engine's /metrics includes this worker's
        client = scope.get("client")
        frame = Forward(
            self.engine.next_id(),
            scope["method"],
            scope["path"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
            [(bytes(k), bytes(v)) for k, v in scope["headers"]],
            b"".join(chunks),
            (str(client[0]), int(client[1])) if client else None,
            scope.get("scheme", "http"),
        )
        try:
            answer: Answer = await self.engine.request(frame)
        except SpoolUnavailableError:
            body = orjson.dumps(
                {"errors": [{"code": "SERVICE_UNAVAILABLE", "message": ENGINE_GONE}]}
            )
            await _answer(send, 503, body, [(b"content-type", b"application/json")])
            return
        await _answer(send, answer.status, answer.body, answer.headers)


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    names = {name.lower() for name, _ in headers}
    extra = [] if b"content-length" in names else [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------ the process


class Worker:
    """One worker process's lifecycle: wait for the config, serve, stop."""

    def __init__(self, index: int, listen_fd: int, channel_fd: int, grace: float) -> None:
        self.index = index
        self.listen_fd = listen_fd
        self.channel_fd = channel_fd
        self.grace = grace
        self.engine = EngineClient(self._use_config, self._engine_lost, self._flush_stats)
        self.relay = MetricsRelay(Metrics())
        self.app = WorkerApp(self.engine, self.relay)
        self.server: uvicorn.Server | None = None
        self._first_config: asyncio.Future[UseConfig] | None = None
        self.engine_lost = False

    def _use_config(self, frame: UseConfig) -> None:
        if self._first_config is not None and not self._first_config.done():
            self._first_config.set_result(frame)
            return
        try:
            config = _parse(frame)
            self._load_certificate(frame)
            self.app.use(config)
        except Exception as exc:  # keep serving with the config in effect
            log.exception("cannot use the new configuration", worker=self.index)
            self.engine.send(ConfigApplied(frame.generation, f"worker {self.index}: {exc}"))
            return
        self.engine.send(ConfigApplied(frame.generation))

    def _flush_stats(self, frame: FlushStats) -> None:
        stats = self.relay.take() or Stats([], [])
        stats.flushed = frame.id
        self.engine.send(stats)

    def _load_certificate(self, frame: UseConfig) -> None:
        if frame.tls_cert_file is None or self.server is None:
            return
        live = self.server.config.ssl
        if isinstance(live, ssl.SSLContext):
            live.load_cert_chain(frame.tls_cert_file, frame.tls_key_file)

    def _engine_lost(self) -> None:
        self.engine_lost = True
        log.error("the engine process is gone; stopping this worker", worker=self.index)
        if self.server is not None:
            self.server.should_exit = True
        if self._first_config is not None and not self._first_config.done():
            self._first_config.cancel()

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        elif self._first_config is not None and not self._first_config.done():
            self._first_config.cancel()  # stopped before it began serving

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._first_config = loop.create_future()
        channel_sock = socket.socket(fileno=self.channel_fd)
        await loop.create_unix_connection(lambda: self.engine.channel, sock=channel_sock)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        try:
            first = await self._first_config
        except asyncio.CancelledError:
            return 1
        config = _parse(first)
        self.app.use(config)
        server_settings = config.server
        warning = raise_open_files_limit(server_settings.max_connections)
        if warning is not None and self.index == 0:
            log.warning("open-files limit too low", problem=warning)
        server = make_uvicorn_server(
            self.app,
            server_settings.host,
            server_settings.port,
            ssl_certfile=str(server_settings.tls_cert_file)
            if server_settings.tls_cert_file
            else None,
            ssl_keyfile=str(server_settings.tls_key_file) if server_settings.tls_key_file else None,
            limits=front_door_limits(server_settings),
            timeout_graceful_shutdown=max(1, int(self.grace)),
        )
        self.server = server
        stats = asyncio.create_task(self._send_stats())
        listener = inherited_listener(self.listen_fd)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            self.engine.send(ConfigApplied(first.generation))
        try:
            await serving
        finally:
            stats.cancel()
            last = self.relay.take()
            if last is not None:
                self.engine.send(last)
                await asyncio.sleep(0)  # let the channel write it before the loop ends
        return 1 if self.engine_lost else 0

    async def _send_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            stats = self.relay.take()
            if stats is not None:
                self.engine.send(stats)


def _parse(frame: UseConfig) -> Config:
    if frame.text is None:
        return embedded_default()
    return config_from_text(frame.text, source=frame.source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s3forward.multicore.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--log-format", choices=["json", "console"], default=None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the engine reloads; it tells the workers
    configure_logging(args.log_format, args.log_level)
    structlog.contextvars.bind_contextvars(worker=args.index, pid=os.getpid())
    tune_garbage_collector()
    worker = Worker(args.index, args.listen_fd, args.channel_fd, args.grace)
    code = uvloop.run(worker.run())
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
