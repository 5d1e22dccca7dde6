"""HTTP responses of the API, and the one place where exceptions become error responses.

Error bodies have the mParticle Events API shape, one entry per problem::

    {"errors": [{"code": "BAD_REQUEST", "message": "batch[2].events[0].event_type: ..."}]}

``rejection_for`` maps every exception the request path can raise to a status, a code, a metric
``reason`` and extra headers (``WWW-Authenticate``, ``Allow``, ``Retry-After``). Messages for
5xx answers are fixed words: internal details (paths, tracebacks) go to the log, not the client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from s3forward.api.auth import BadCredentials, MissingCredentials
from s3forward.errors import (
    BodyTimeout,
    ClientDisconnected,
    HttpError,
    InputError,
    MethodNotAllowed,
    OriginNotAllowed,
    PayloadTooLargeError,
    QuotaExceeded,
    RateLimited,
    RouteNotFound,
    SpoolFullError,
    SpoolUnavailableError,
    StoppingError,
    UnacceptableBatch,
    UnknownWebKey,
    UnsupportedMediaType,
)

JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Response:
    """A complete HTTP response; ``headers`` excludes content-type and content-length."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: Headers | None = None


def json_response(status: int, data: object, headers: Headers | None = None) -> Response:
    return Response(status, orjson.dumps(data), JSON, headers)


ACCEPTED_BODY = b"{}"
"""mParticle answers 202 with an empty body; ours is ``{}`` so that every body parses as JSON."""


# --------------------------------------------------------------------------------------------
# The mapping.


@dataclass(frozen=True, slots=True)
class Rejection:
    """How one failed request is answered and counted."""

    response: Response
    reason: str
    """The ``reason`` label of ``requests_rejected_total``."""
    messages: tuple[str, ...]


def _error_body(code: str, messages: Sequence[str]) -> bytes:
    return orjson.dumps({"errors": [{"code": code, "message": m} for m in messages]})


def _reject(
    status: int, code: str, reason: str, messages: Sequence[str], headers: Headers | None = None
) -> Rejection:
    response = Response(status, _error_body(code, messages), JSON, headers)
    return Rejection(response, reason, tuple(messages))


INTERNAL_MESSAGE = "internal error; the request was not stored, retry later"
UNAVAILABLE_MESSAGE = "the service cannot store data right now; retry later"
STOPPING_MESSAGE = "the service is shutting down; retry later"


def rejection_for(exc: BaseException, *, retry_after: int) -> Rejection:
    """The answer to a request that failed with ``exc``.

    ``retry_after`` (seconds) goes into ``Retry-After`` of 503 answers; a 429 uses the
    ``retry_after`` of its ``SpoolFullError``. Unknown exceptions give a generic 500.
    """
    retry = [(b"retry-after", str(retry_after).encode())]
    match exc:
        case PayloadTooLargeError():
            return _reject(413, "PAYLOAD_TOO_LARGE", "too_large", [str(p) for p in exc.problems])
        case InputError():
            return _reject(400, "BAD_REQUEST", "bad_request", [str(p) for p in exc.problems])
        case MissingCredentials():
            header = [(b"www-authenticate", b'Basic realm="s3forward"')]
            return _reject(401, "UNAUTHORIZED", "unauthorized", [str(exc)], header)
        case BadCredentials():
            return _reject(403, "FORBIDDEN", "forbidden", [str(exc)])
        case SpoolFullError():
            headers = [(b"retry-after", str(exc.retry_after).encode())]
            message = f"the local buffer is full; retry after {exc.retry_after} seconds"
            return _reject(429, "TOO_MANY_REQUESTS", "spool_full", [message], headers)
        case SpoolUnavailableError():
            return _reject(503, "SERVICE_UNAVAILABLE", "unavailable", [UNAVAILABLE_MESSAGE], retry)
        case StoppingError():
            return _reject(503, "SERVICE_UNAVAILABLE", "unavailable", [STOPPING_MESSAGE], retry)
        case RouteNotFound():
            return _reject(404, "NOT_FOUND", "not_found", [str(exc)])
        case MethodNotAllowed():
            allow = [(b"allow", ", ".join(exc.allow).encode())]
            return _reject(405, "METHOD_NOT_ALLOWED", "method_not_allowed", [str(exc)], allow)
        case UnsupportedMediaType():
            return _reject(415, "UNSUPPORTED_MEDIA_TYPE", "unsupported_media_type", [str(exc)])
        case BodyTimeout():
            return _reject(408, "REQUEST_TIMEOUT", "timeout", [str(exc)])
        case OriginNotAllowed():
            return _reject(403, "FORBIDDEN", "origin_not_allowed", [str(exc)])
        case UnknownWebKey():
            return _reject(403, "FORBIDDEN", "forbidden", [str(exc)])
        case QuotaExceeded():
            headers = [(b"retry-after", str(exc.retry_after).encode())]
            return _reject(429, "TOO_MANY_REQUESTS", "quota_exceeded", [str(exc)], headers)
        case RateLimited():
            headers = [(b"retry-after", str(exc.retry_after).encode())]
            return _reject(429, "TOO_MANY_REQUESTS", "rate_limited", [str(exc)], headers)
        case UnacceptableBatch():
            return _reject(422, "UNPROCESSABLE_ENTITY", "unprocessable", list(exc.problems))
        case _:
            return _reject(500, "INTERNAL", "internal", [INTERNAL_MESSAGE])


__all__ = [
    "ACCEPTED_BODY",
    "BodyTimeout",
    "ClientDisconnected",
    "HttpError",
    "MethodNotAllowed",
    "OriginNotAllowed",
    "QuotaExceeded",
    "RateLimited",
    "Rejection",
    "Response",
    "RouteNotFound",
    "UnacceptableBatch",
    "UnknownWebKey",
    "UnsupportedMediaType",
    "json_response",
    "rejection_for",
]
