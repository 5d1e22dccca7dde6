"""Connecting to NATS, and the one place where nats-py exceptions become ours."""

from __future__ import annotations

from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client

from s3forward.config import ClusterSettings
from s3forward.errors import (
    ClusterError,
    FencedError,
    S3ForwardError,
    SpoolFullError,
    SpoolUnavailableError,
)

log = structlog.get_logger("s3forward.cluster")

# JetStream API error codes (nats-server errors.json).
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
_STREAM_FULL = frozenset({10077, 10078, 10047, 10028})


async def _log_error(exc: Exception) -> None:
    log.warning("nats connection problem", error=_describe(exc))


async def connect(
    settings: ClusterSettings, *, name: str = "s3forward", persistent: bool = True
) -> Client:
    """A connection to the cluster. ``persistent`` ones reconnect forever (JetStream elections
    are brief); the others (init, check) give up after a few attempts."""
    options: dict[str, Any] = {
        "servers": list(settings.servers),
        "name": name,
        "connect_timeout": 5 if persistent else 2,
        "max_reconnect_attempts": -1 if persistent else 2,
        "error_cb": _log_error,
        "reconnect_time_wait": 0.5,
        "allow_reconnect": True,
    }
    if settings.token is not None:
        options["token"] = settings.token.reveal()
    if settings.user is not None and settings.password is not None:
        options["user"] = settings.user
        options["password"] = settings.password.reveal()
    if settings.credentials_file is not None:
        options["user_credentials"] = settings.credentials_file
    try:
        return await nats.connect(**options)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        servers = ", ".join(settings.servers)
        raise ClusterError(f"cannot connect to NATS at {servers}: {_describe(exc)}") from None


def is_wrong_last_sequence(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in _WRONG_LAST_SEQUENCE


def publish_error(exc: BaseException, *, retry_after: int) -> S3ForwardError:
    """What a failed publish of accepted data means for the client: 429 or 503."""
    if isinstance(exc, nats.js.errors.APIError) and (
        exc.err_code in _STREAM_FULL or "maximum" in (exc.description or "").lower()
    ):
        return SpoolFullError(
            "the cluster's stream is full (discard: new); workers are behind, retry later",
            retry_after=retry_after,
        )
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return SpoolUnavailableError("JetStream did not acknowledge in time (leader election?)")
    return SpoolUnavailableError(f"JetStream refused the batch: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, nats.js.errors.APIError):
        return f"{exc.description or type(exc).__name__} (code {exc.err_code})"
    return str(exc) or type(exc).__name__


__all__ = [
    "ClusterError",
    "FencedError",
    "connect",
    "is_wrong_last_sequence",
    "publish_error",
]
