"""The Events-API-compatible HTTP application: a plain ASGI 3 callable, no web framework.

``POST /v2/events`` takes one batch and ``POST /v2/bulkevents`` a JSON array of batches (a
trailing slash is accepted). A request goes through, in order: route and method, Basic auth
(401/403 before any body is read), Content-Type, the declared Content-Length against
``max_request_bytes`` (413 without reading), the body read with a running total (413 as soon as
it is over) under ``body_timeout`` (408), decoding and validation (400/413), and finally
``Intake.submit``. Only when the intake says the batches are durable is 202 sent, with the body
``{}``. Every exception becomes a response in one place, ``responses.rejection_for``.

Also served: ``GET /healthz`` (the process answers), ``GET /readyz`` (the intake and an optional
extra check can take data) and ``GET /metrics`` (Prometheus text). The service can add or
replace routes with ``extra_routes``. The mParticle Web SDK's endpoints for web inputs (issue 13)
are answered by ``api/web.py``; their uploads join the same intake path through ``_submit``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from s3forward.api.auth import Authenticator
from s3forward.api.responses import (
    ACCEPTED_BODY,
    BodyTimeout,
    ClientDisconnected,
    MethodNotAllowed,
    Response,
    RouteNotFound,
    UnsupportedMediaType,
    json_response,
    rejection_for,
)
from s3forward.api.web import AliasSink, WebApi
from s3forward.config import Config
from s3forward.errors import PayloadTooLargeError, Problem
from s3forward.intake import Intake
from s3forward.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from s3forward.mparticle import (
    Limits,
    decode_body,
    parse_alias_request,
    parse_bulk_request,
    parse_events_request,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Readiness = Callable[[], tuple[bool, str]]
"""An extra readiness check: ``(ready, reason when not ready)``."""

_log = structlog.get_logger("s3forward.api")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_REQUEST_PREFIX = os.urandom(6).hex()
_request_counter = itertools.count(1)


def _new_request_id() -> bytes:
    """Unique per process run, without a system call on the hot path."""
    return f"{_REQUEST_PREFIX}-{next(_request_counter):x}".encode()


_JSON_MEDIA_TYPES = frozenset(
    # curl -d sends application/x-www-form-urlencoded unless told otherwise; the body is still
    # parsed as JSON, so a quick `curl -d @batch.json` works.
    {b"application/json", b"text/json", b"text/plain", b"application/x-www-form-urlencoded"}
)
_UNAUTHENTICATED = "-"
"""The ``input`` label of rejections before an input is known (not a valid input name)."""


class Request:
    """What a handler sees of one HTTP request. Header names are lower-case bytes."""

    __slots__ = (
        "body_complete",
        "body_stalled",
        "client",
        "content_length",
        "extra_headers",
        "headers",
        "input_name",
        "method",
        "path",
        "receive",
        "request_id",
        "started",
    )

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.started = time.perf_counter()
        self.method: str = scope["method"]
        path: str = scope["path"]
        self.path = path.rstrip("/") or "/"
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.receive = receive
        self.input_name: str | None = None
        given = self.headers.get(b"x-request-id")
        self.request_id = given if given and _REQUEST_ID.fullmatch(given) else _new_request_id()
        self.content_length = _content_length(self.headers)
        # No Content-Length and no chunked encoding means no body at all (RFC 9112 6.3).
        chunked = b"transfer-encoding" in self.headers
        self.body_complete = not chunked and not self.content_length
        self.body_stalled = False
        # Issue 13: the peer address (rate limits) and headers every answer carries (CORS).
        peer = scope.get("client")
        self.client: str = peer[0] if peer else "-"
        self.extra_headers: list[tuple[bytes, bytes]] = []


Handler = Callable[[Request], Awaitable[Response]]


def _content_length(headers: Mapping[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    # The HTTP parser has already rejected a malformed Content-Length.
    return int(value) if value is not None and value.isdigit() else None


class IngestApp:
    """The ASGI application. See the module docstring for the request flow."""

    def __init__(
        self,
        config: Config,
        intake: Intake,
        metrics: Metrics,
        *,
        extra_routes: Mapping[tuple[str, str], Handler] | None = None,
        readiness: Readiness | None = None,
        on_alias: AliasSink | None = None,
    ) -> None:
        server = config.server
        self._limits = Limits(
            max_batch_bytes=server.max_batch_bytes,
            max_request_bytes=server.max_request_bytes,
            max_batches=server.max_batches_per_request,
            max_json_depth=server.max_json_depth,
        )
        self._body_timeout = server.body_timeout
        self._retry_after = config.spool.retry_after
        self._auth = Authenticator(config.inputs)
        self._intake = intake
        self._metrics = metrics
        self._readiness = readiness
        self._routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v2/events"): self._events,
            ("POST", "/v2/bulkevents"): self._bulk_events,
            ("POST", "/v1/identity/alias"): self._alias,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics_page,
        }
        for (method, path), handler in (extra_routes or {}).items():
            self._routes[(method.upper(), path.rstrip("/") or "/")] = handler
        # Issue 13: the Web SDK's endpoints, answered by api/web.py through the same intake.
        self._web = WebApi(
            config,
            read_body=self._read_body,
            accept=self._accept,
            on_alias=on_alias or self._store_web_alias,
        )
        self._methods: dict[str, list[str]] = {}
        for method, path in self._routes:
            self._methods.setdefault(path, []).append(method)
        # Bound once so the hot path skips the label lookup.
        self._ingest_seconds = {
            name: metrics.ingest_seconds.labels(name)
            for name in ("events", "bulkevents", "alias", "webevents")
        }
        self._input_counters = {
            name: (
                metrics.batches_received_total.labels(name),
                metrics.events_received_total.labels(name),
                metrics.batches_deduplicated_total.labels(name),
            )
            for name in config.inputs
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off and websockets are not served
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except ClientDisconnected:
            return
        except Exception as exc:
            response = self._reject(request, exc)
        await self._send(send, request, response)

    async def _dispatch(self, request: Request) -> Response:
        handler = self._routes.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        web = self._web.handler_for(request)
        if web is not None:
            return await web()
        allowed = self._methods.get(request.path)
        if allowed is None:
            raise RouteNotFound(f"no such path: {request.path[:200]}")
        raise MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}",
            allow=allowed,
        )

    # ----------------------------------------------------------------------------------------
    # Ingest

    async def _events(self, request: Request) -> Response:
        return await self._ingest(request, "events", parse_events_request)

    async def _bulk_events(self, request: Request) -> Response:
        return await self._ingest(request, "bulkevents", parse_bulk_request)

    async def _alias(self, request: Request) -> Response:
        return await self._ingest(request, "alias", parse_alias_request)

    async def _ingest(
        self, request: Request, endpoint: str, parse: Callable[..., list[dict[str, Any]]]
    ) -> Response:
        source = self._auth.authenticate(request.headers.get(b"authorization"))
        request.input_name = source.name
        _check_content_type(request.headers.get(b"content-type"))
        body = await self._read_body(request)
        received_at = time.time()
        encoding = request.headers.get(b"content-encoding")
        payload = decode_body(
            body,
            content_encoding=encoding.decode("latin-1") if encoding is not None else None,
            limits=self._limits,
        )
        batches = parse(payload, limits=self._limits)
        await self._submit(request, source.name, batches, endpoint, received_at)
        return Response(202, ACCEPTED_BODY)

    async def _submit(
        self,
        request: Request,
        input_name: str,
        batches: list[dict[str, Any]],
        endpoint: str,
        received_at: float,
    ) -> None:
        result = await self._intake.submit(input_name, batches, received_at=received_at)
        self._count_accepted(input_name, batches, result.duplicates)
        self._ingest_seconds[endpoint].observe(time.perf_counter() - request.started)

    async def _store_web_alias(self, input_name: str, alias: dict[str, Any]) -> None:
        """A web input's alias call takes the path of ``POST /v1/identity/alias``: stored
        durably, and forwarded by connections with ``send_alias_requests``."""
        batches = parse_alias_request(alias, limits=self._limits)
        result = await self._intake.submit(input_name, batches, received_at=time.time())
        self._count_accepted(input_name, batches, result.duplicates)

    async def _accept(
        self, request: Request, input_name: str, batches: list[dict[str, Any]]
    ) -> None:
        """The web upload's way into the same intake path (issue 13)."""
        await self._submit(request, input_name, batches, "webevents", time.time())

    async def _read_body(self, request: Request) -> bytes:
        """The whole body, refused as soon as it passes ``max_request_bytes`` or the timeout."""
        limit = self._limits.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(f"the body is {request.content_length} bytes", limit)
        # A bare timer instead of asyncio.timeout(): same semantics, a fraction of the cost on
        # a path that runs for every request.
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(self._body_timeout, expire)
        try:
            body = await _receive_all(request, limit)
        except asyncio.CancelledError:
            if not expired:
                raise  # cancelled by someone else (shutdown): not ours to swallow
            task.uncancel()
            request.body_stalled = True
            raise BodyTimeout(
                f"the request body was not received within {self._body_timeout:g} seconds"
            ) from None
        finally:
            timer.cancel()
        request.body_complete = True
        return body

    def _count_accepted(self, input_name: str, batches: list[dict[str, Any]], dups: int) -> None:
        batches_total, events_total, deduplicated = self._input_counters[input_name]
        batches_total.inc(len(batches))
        events = 0
        for batch in batches:
            batch_events = batch.get("events")
            if isinstance(batch_events, list):
                events += len(batch_events)
        if events:
            events_total.inc(events)
        if dups:
            deduplicated.inc(dups)

    # ----------------------------------------------------------------------------------------
    # Operations endpoints

    async def _healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        reasons: list[str] = []
        for check in (self._intake.ready, self._readiness):
            if check is not None:
                ready, why = check()
                if not ready:
                    reasons.append(why)
        if reasons:
            return json_response(503, {"ready": False, "reasons": reasons})
        return json_response(200, {"ready": True})

    async def _metrics_page(self, request: Request) -> Response:
        return Response(200, self._metrics.render(), PROMETHEUS_CONTENT_TYPE.encode())

    # ----------------------------------------------------------------------------------------
    # Answers

    def _reject(self, request: Request, exc: Exception) -> Response:
        rejection = rejection_for(exc, retry_after=self._retry_after)
        input_name = request.input_name or _UNAUTHENTICATED
        self._metrics.requests_rejected_total.labels(input_name, rejection.reason).inc()
        fields = {
            "request_id": request.request_id.decode(),
            "input": input_name,
            "method": request.method,
            "path": request.path[:200],
            "status": rejection.response.status,
            "reason": rejection.reason,
        }
        if rejection.reason == "internal":
            _log.error("request failed", **fields, exc_info=exc)
        else:
            # Messages can quote payload values; only their count is logged. Debug level:
            # s3forward_requests_rejected_total counts them (a bad client must not flood logs).
            _log.debug("request rejected", **fields, problems=len(rejection.messages))
        return rejection.response

    async def _send(self, send: Send, request: Request, response: Response) -> None:
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            (b"x-request-id", request.request_id),
        ]
        if response.headers:
            headers.extend(response.headers)
        headers.extend(request.extra_headers)
        if not self._can_keep_alive(request):
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _can_keep_alive(self, request: Request) -> bool:
        """Whether the connection can serve another request after this answer.

        When the body was not read to its end, the server would have to swallow the rest to
        find the next request. That is fine for a body within the limit, but a huge or
        unbounded (chunked) body, or one that stalled, is cut off by closing the connection.
        """
        if request.body_complete:
            return True
        if request.body_stalled:
            return False
        length = request.content_length
        return length is not None and length <= self._limits.max_request_bytes


def _check_content_type(value: bytes | None) -> None:
    """Accept JSON-like, text/plain and absent Content-Types (clients are often sloppy)."""
    if not value:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media in _JSON_MEDIA_TYPES or media.endswith(b"+json"):
        return
    shown = media[:100].decode("latin-1")
    raise UnsupportedMediaType(
        f"Content-Type {shown!r} is not supported; send application/json (optionally gzipped)"
    )


async def _receive_all(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client disconnected while sending its body")
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _too_large(f"the body is over {total} bytes", limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(what: str, limit: int) -> PayloadTooLargeError:
    message = f"{what}, over the limit of {limit} bytes per request"
    return PayloadTooLargeError([Problem("request", message)])


__all__ = ["Handler", "IngestApp", "Readiness", "Request"]
