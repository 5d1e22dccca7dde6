"""The mParticle Web SDK's endpoints, for web inputs (issue 13).

Served under both of the SDK's layouts (per-URL options and the single ``domain`` option), after
``[server] web_path_prefix`` when one is set::

    POST /v3/JS/<key>/events            /webevents/v3/JS/<key>/events      upload (also sendBeacon)
    POST /v1/identify|login|logout      /identity/v1/identify|login|logout  MPID (identity.py)
    POST /v1/<mpid>/modify              /identity/v1/<mpid>/modify          acknowledged
    POST /v1/identity/<key>/Alias       /webevents/v1/identity/<key>/Alias  answered, see below
    GET  /JS/v2/<key>/config            /tags/JS/v2/<key>/config            static SDK config
    POST /v1|v2/JS/<key>/Forwarding     /webevents/v1|v2/JS/<key>/...       kit stats, discarded
    OPTIONS on each of them             the CORS preflight

A request goes through: the input (the key in the path, or ``x-mp-key``; 403 when it names no
web input), the page's ``Origin`` against the input's allow-list (403), the per-address rate
limit (429 with ``Retry-After``), the body (the app's bounded reader, then the input's
``max_batch_bytes``: 413), the per-device rate limit (429), validation (422), the hourly quota
(429), and finally the same ``accept`` path as ``/v2/events`` (the intake), so every filter,
batching mode and S3 setting applies. Once the origin is known to be allowed, every answer,
errors included, carries the CORS headers (cors.py).

Answer codes follow the Web SDK's retry rules: it re-sends on 400, 429, 5xx and network
failures without end (and a failing batch holds back every later one of the page), and drops
the batch on any other 4xx. So a batch that can never be accepted gets 422 or 413, never 400,
and only conditions that pass (rate, quota, a full spool) get 429 or 503.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog

from s3forward.api.cors import OriginPolicy
from s3forward.api.identity import (
    DEVICE_STAMP,
    MpidIssuer,
    identify_answer,
    issued_mpids,
    modify_answer,
)
from s3forward.api.ratelimit import Clock, HourlyQuota, TokenBucketLimiter, retry_after_seconds
from s3forward.api.responses import (
    ACCEPTED_BODY,
    MethodNotAllowed,
    OriginNotAllowed,
    QuotaExceeded,
    RateLimited,
    Response,
    UnacceptableBatch,
    UnknownWebKey,
    json_response,
)
from s3forward.config import Config, InputSettings, WebInputSettings
from s3forward.errors import BatchValidationError, InputError, PayloadTooLargeError, Problem
from s3forward.mparticle import Limits, decode_body, parse_events_request
from s3forward.mparticle.catalogue import as_int64

_log = structlog.get_logger("s3forward.api.web")

AliasSink = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Takes ``(input name, alias request body)`` of an alias call, before it is answered: the
app stores it as ``POST /v1/identity/alias`` does (forwarded under ``send_alias_requests``)."""


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    method: str
    pattern: re.Pattern[str]


_ROUTES: tuple[Route, ...] = (
    Route("events", "POST", re.compile(r"/(?:webevents/)?v3/JS/(?P<key>[^/]+)/events")),
    Route("identity", "POST", re.compile(r"/(?:identity/)?v1/(?P<call>identify|login|logout)")),
    Route("modify", "POST", re.compile(r"/(?:identity/)?v1/(?P<mpid>-?[0-9]{1,20})/modify")),
    Route("alias", "POST", re.compile(r"/(?:webevents/)?v1/identity/(?P<key>[^/]+)/[Aa]lias")),
    Route("config", "GET", re.compile(r"/(?:tags/)?JS/v2/(?P<key>[^/]+)/config")),
    Route("forwarding", "POST", re.compile(r"/(?:webevents/)?v[12]/JS/(?P<key>[^/]+)/Forwarding")),
)
_IDENTITY_BODY_BYTES = 64 * 1024


class WebRequest(Protocol):
    """What the web endpoints use of a request (``s3forward.api.app.Request`` has it all)."""

    method: str
    path: str
    headers: dict[bytes, bytes]
    client: str
    input_name: str | None
    extra_headers: list[tuple[bytes, bytes]]


ReadBody = Callable[[Any], Awaitable[bytes]]
Accept = Callable[[Any, str, list[dict[str, Any]]], Awaitable[None]]


class _WebInput:
    """One web input's runtime parts: origins, MPID issuer, limiters, quota, limits."""

    def __init__(self, settings: InputSettings, web: WebInputSettings, max_request: int) -> None:
        self.name = settings.name
        self.web = web
        self.origins = OriginPolicy(web.allowed_origins)
        self.issuer = MpidIssuer(web.identity_key.reveal().encode())
        self.per_ip = TokenBucketLimiter(web.per_ip_requests_per_minute, web.per_ip_burst)
        self.per_device = TokenBucketLimiter(
            web.per_device_requests_per_minute, web.per_device_burst
        )
        self.quota = HourlyQuota(web.quota_batches_per_hour, web.quota_bytes_per_hour)
        self.limits = Limits(
            max_batch_bytes=web.max_batch_bytes,
            max_request_bytes=min(max_request, max(web.max_batch_bytes, 1024)),
            max_batches=1,
        )
        self.config_body = orjson.dumps({"flags": dict(web.sdk_flags)} if web.sdk_flags else {})


class WebApi:
    """Routes and answers the Web SDK's requests; see the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        read_body: ReadBody,
        accept: Accept,
        on_alias: AliasSink,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._prefix = config.server.web_path_prefix
        self._ip_header = config.server.client_ip_header
        self._read_body = read_body
        self._accept = accept
        self._on_alias = on_alias
        self._clock = clock
        self._wall = wall_clock
        self._by_key: dict[str, _WebInput] = {
            i.api_key: _WebInput(i, i.web, config.server.max_request_bytes)
            for i in config.inputs.values()
            if i.web is not None
        }
        self._any_origin = OriginPolicy(
            o for w in self._by_key.values() for o in w.web.allowed_origins
        )

    @property
    def enabled(self) -> bool:
        return bool(self._by_key)

    def handler_for(self, request: WebRequest) -> Callable[[], Awaitable[Response]] | None:
        """The handler of a Web SDK path, or None when ``request`` is not one."""
        if not self._by_key:
            return None
        path: str = request.path
        if self._prefix:
            if not path.startswith(self._prefix + "/"):
                return None
            path = path[len(self._prefix) :]
        for route in _ROUTES:
            match = route.pattern.fullmatch(path)
            if match is not None:
                params = match.groupdict()
                return lambda: self._handle(request, route, params)
        return None

    # ----------------------------------------------------------------------------------------

    async def _handle(
        self, request: WebRequest, route: Route, params: Mapping[str, str]
    ) -> Response:
        request.extra_headers = [(b"vary", b"Origin")]
        if request.method == "OPTIONS":
            return self._preflight(request, params.get("key"))
        if request.method != route.method:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; use {route.method}",
                allow=[route.method, "OPTIONS"],
            )
        if route.kind in ("identity", "modify"):
            web = self._input_for(request, request.headers.get(b"x-mp-key"), "x-mp-key header")
        else:
            web = self._input_for(request, params["key"].encode(), "key in the path")
        self._check_origin(request, web)
        self._limit(web.per_ip, self._client(request), "this address", "per_ip")
        match route.kind:
            case "events":
                return await self._events(request, web)
            case "identity":
                return await self._identity(request, web)
            case "modify":
                return await self._modify(request, web, params["mpid"])
            case "alias":
                return await self._alias(request, web)
            case "config":
                return Response(200, web.config_body)
            case _:  # forwarding statistics of client-side kits: not kept
                await self._read_body(request)
                return Response(202, ACCEPTED_BODY)

    def _preflight(self, request: WebRequest, key: str | None) -> Response:
        origin = request.headers.get(b"origin")
        policy = self._any_origin
        web = self._by_key.get(key) if key is not None else None
        if web is not None:
            request.input_name = web.name
            policy = web.origins
        if not policy.allows(origin):
            raise OriginNotAllowed(_origin_message(origin))
        request.extra_headers = policy.preflight_headers(origin)
        return Response(204, b"", b"text/plain")

    def _input_for(self, request: WebRequest, key: bytes | None, where: str) -> _WebInput:
        web = self._by_key.get(key.decode("latin-1")) if key else None
        if web is None:
            # A page on an allowed origin with a wrong key must be able to read this 403 (and
            # drop the batch) rather than see a CORS failure (and re-send it forever).
            request.extra_headers = self._any_origin.answer_headers(request.headers.get(b"origin"))
            raise UnknownWebKey(f"the {where} names no web input")
        request.input_name = web.name
        return web

    def _check_origin(self, request: WebRequest, web: _WebInput) -> None:
        origin = request.headers.get(b"origin")
        if not web.origins.allows(origin):
            raise OriginNotAllowed(_origin_message(origin))
        request.extra_headers = web.origins.answer_headers(origin)

    def _client(self, request: WebRequest) -> str:
        if self._ip_header is not None:
            value = request.headers.get(self._ip_header.encode())
            if value:
                # The last address is the one the (trusted) proxy in front of us appended.
                return str(value.decode("latin-1").rsplit(",", 1)[-1].strip())
        return str(request.client)

    def _limit(self, limiter: TokenBucketLimiter, key: str, what: str, name: str) -> None:
        wait = limiter.take(key, self._clock())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise RateLimited(
                f"too many requests from {what} ({name} limit); retry after {seconds} seconds",
                retry_after=seconds,
            )

    async def _json_body(self, request: WebRequest, limit: int) -> Any:
        body = await self._read_body(request)
        if len(body) > limit:
            raise PayloadTooLargeError(
                [Problem("request", f"the body is {len(body)} bytes; the limit is {limit}")]
            )
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BatchValidationError([Problem("body", f"is not valid JSON: {exc}")]) from None

    # ----------------------------------------------------------------------------------------

    async def _events(self, request: WebRequest, web: _WebInput) -> Response:
        body = await self._read_body(request)
        if len(body) > web.web.max_batch_bytes:
            raise PayloadTooLargeError(
                [
                    Problem(
                        "batch",
                        f"the upload is {len(body)} bytes; this web input accepts at most "
                        f"{web.web.max_batch_bytes} bytes per batch (max_batch_bytes)",
                    )
                ]
            )
        encoding = request.headers.get(b"content-encoding")
        try:
            payload = decode_body(
                body,
                content_encoding=encoding.decode("latin-1") if encoding is not None else None,
                limits=web.limits,
            )
            device = payload.get("mp_deviceid") if type(payload) is dict else None
            if type(device) is str and device:
                self._limit(web.per_device, device, "this device", "per_device")
            batches = parse_events_request(payload, limits=web.limits)
        except PayloadTooLargeError:
            raise
        except InputError as exc:
            raise UnacceptableBatch(exc.problems) from None
        if web.web.require_issued_mpid:
            mpid = as_int64(batches[0].get("mpid"))
            if mpid is None or mpid not in issued_mpids(web.issuer, batches[0]):
                raise UnacceptableBatch(
                    [
                        Problem(
                            "batch.mpid",
                            "is not an MPID this service issued for the batch's mp_deviceid, "
                            "customer_id or email (require_issued_mpid)",
                        )
                    ]
                )
        wait = web.quota.take(len(batches), len(body), self._wall())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise QuotaExceeded(
                f"the hourly quota of this web input is used up; retry after {seconds} seconds",
                retry_after=seconds,
            )
        await self._accept(request, web.name, batches)
        return Response(202, ACCEPTED_BODY)

    async def _identity(self, request: WebRequest, web: _WebInput) -> Response:
        body = await self._json_body(request, _IDENTITY_BODY_BYTES)
        known = body.get("known_identities") if type(body) is dict else None
        stamp = known.get(DEVICE_STAMP) if type(known) is dict else None
        if type(stamp) is str and stamp:
            self._limit(web.per_device, stamp, "this device", "per_device")
        return json_response(200, identify_answer(web.issuer, body))

    async def _modify(self, request: WebRequest, web: _WebInput, mpid_text: str) -> Response:
        mpid = as_int64(mpid_text)
        if mpid is None:
            raise BatchValidationError([Problem("path", "the MPID is not a 64-bit integer")])
        body = await self._json_body(request, _IDENTITY_BODY_BYTES)
        return json_response(200, modify_answer(mpid, body))

    async def _alias(self, request: WebRequest, web: _WebInput) -> Response:
        """The SDK's alias call, under the web input's limits like an upload: per device, the
        hourly quota; only the alias request's own fields are kept (the key is public, so
        nothing else a caller adds reaches the bucket). A malformed one is 422: the SDK
        would retry a 400 forever."""
        body = await self._json_body(request, _IDENTITY_BODY_BYTES)
        data = body.get("data") if type(body) is dict else None
        if type(data) is not dict:
            raise UnacceptableBatch(
                [Problem("data", "expected an object with source_mpid and destination_mpid")]
            )
        problems = [
            Problem(f"data.{field}", "expected a 64-bit integer MPID")
            for field in ("source_mpid", "destination_mpid")
            if as_int64(data.get(field)) is None
        ]
        if problems:
            raise UnacceptableBatch(problems)
        stamp = data.get("device_application_stamp")
        if type(stamp) is str and stamp:
            self._limit(web.per_device, stamp, "this device", "per_device")
        alias = {k: body[k] for k in _ALIAS_FIELDS if k in body}
        alias["data"] = {k: data[k] for k in _ALIAS_DATA_FIELDS if k in data}
        wait = web.quota.take(1, len(orjson.dumps(alias)), self._wall())
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise QuotaExceeded(
                f"the hourly quota of this web input is used up; retry after {seconds} seconds",
                retry_after=seconds,
            )
        try:
            await self._on_alias(web.name, alias)
        except InputError as exc:
            raise UnacceptableBatch(exc.problems) from None
        return Response(202, ACCEPTED_BODY)


_ALIAS_FIELDS = ("request_type", "request_id", "environment")
_ALIAS_DATA_FIELDS = (
    "source_mpid",
    "destination_mpid",
    "start_unixtime_ms",
    "end_unixtime_ms",
    "scope",
    "device_application_stamp",
)


def _origin_message(origin: bytes | None) -> str:
    if origin is None:
        return "no Origin header: web inputs answer browsers on allowed page origins only"
    shown = origin[:100].decode("latin-1")
    return f"the page origin {shown!r} is not in this web input's allowed_origins"


__all__ = ["AliasSink", "WebApi"]
