"""The exception tree of s3forward.

Every error raised on purpose by s3forward derives from ``S3ForwardError``. Each class says in
one way whether trying again later can help: ``transient`` is True (retry, answer 429/503) or
False (terminal: the input, the config or an operator must change something)::

    S3ForwardError                          transient?
    ├── ConfigError                         no   the config file or a CLI option is wrong
    ├── InputError                          no   inbound data is wrong; carries ``Problem`` items
    │   ├── BatchValidationError            no     not an Events API batch (400)
    │   └── PayloadTooLargeError            no     over a size limit (413)
    ├── AuthenticationError                 no   no valid input credentials
    │   ├── MissingCredentials              no     no Authorization header (401)
    │   └── BadCredentials                  no     malformed or unknown credentials (403)
    ├── HttpError                           no   refused by the HTTP layer before the pipeline
    │   ├── RouteNotFound                   no     404
    │   ├── MethodNotAllowed                no     405
    │   ├── UnsupportedMediaType            no     415
    │   ├── BodyTimeout                     yes    408: the body came too slowly
    │   ├── ClientDisconnected              yes    the client went away; nobody to answer
    │   ├── OriginNotAllowed                no     403: a web page origin not allowed
    │   ├── UnknownWebKey                   no     403: no web input has this key
    │   ├── RateLimited                     yes    429: one client address or device too fast
    │   │   └── QuotaExceeded               yes      429: the web input's hourly quota
    │   └── UnacceptableBatch               no     422: a web batch never to be accepted
    ├── SinkError                           -    writing to a destination failed
    │   ├── TransientSinkError              yes    5xx, SlowDown, timeouts, resets
    │   └── PermanentSinkError              no     AccessDenied, NoSuchBucket, bad keys
    ├── KeyTakenError                       yes  a different object holds the key: new digits
    ├── BuilderError                        yes  the file-building process died (restarted)
    ├── SpoolError                          -    the durable buffer cannot take more data
    │   ├── SpoolFullError                  yes    over its size cap (429 + Retry-After)
    │   ├── SpoolUnavailableError           yes    disk full, unwritable, unreadable (503)
    │   ├── SpoolVersionError               no     written by a newer s3forward
    │   └── FencedError                     no     a newer owner took the log over
    ├── ClusterError                        yes  cluster mode: JetStream unreachable or refusing
    ├── WorkerChannelError                  -    between an HTTP worker process and the engine
    │   ├── FrameError                      no     bytes on the channel that are no frame
    │   └── EngineInternalError             no     the engine failed on a request (500)
    └── StoppingError                       yes  the service is shutting down (503)

Third-party exceptions (botocore, sqlite3, gzip) are translated into this tree where they are
caught, so that callers never import them. Messages say what was received, where, and what was
expected; they never contain secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class S3ForwardError(Exception):
    """Base of every error s3forward raises on purpose."""

    transient: bool = False
    """Whether the same operation may succeed later without anyone changing anything."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, precise enough to fix it.

    ``where`` is a location such as ``batch[3].events[0].data.timestamp_unixtime_ms`` or
    ``config.toml: connections.main.folder_name``.
    """

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class _ProblemsError(S3ForwardError):
    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("an error needs at least one problem")
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class ConfigError(_ProblemsError):
    """The configuration is wrong. ``problems`` lists every problem found, not just the first."""


class InputError(_ProblemsError):
    """Inbound data is wrong. ``problems`` lists every problem found."""


class BatchValidationError(InputError):
    """A batch or request body does not match the mParticle Events API v2."""


class PayloadTooLargeError(InputError):
    """A batch or request body is larger than its configured limit."""


class SinkError(S3ForwardError):
    """Writing an object to a destination failed.

    ``code`` is a short machine-readable class (``AccessDenied``, ``SlowDown``, ``Timeout``...)
    used for metrics and retry decisions; the message is for people.
    """

    transient: bool = True

    def __init__(self, message: str, *, code: str = "Unknown") -> None:
        super().__init__(message)
        self.code = code


class TransientSinkError(SinkError):
    """Retry soon with backoff: the destination is throttling, slow or briefly unreachable."""

    transient = True


class PermanentSinkError(SinkError):
    """Retrying soon will not help: credentials, permissions or the bucket need fixing."""

    transient = False


class KeyTakenError(S3ForwardError):
    """A different object already exists under the key chosen for a file."""

    transient = True

    def __init__(self, key: str) -> None:
        super().__init__(f"object key {key!r} already holds a different object")
        self.key = key


class SpoolError(S3ForwardError):
    """The durable buffer cannot accept data right now."""


class SpoolFullError(SpoolError):
    """The spool is over its size cap; clients should retry after ``retry_after`` seconds."""

    transient = True

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SpoolUnavailableError(SpoolError):
    """The spool cannot write (disk full, read-only, I/O error). Nothing accepted is harmed."""

    transient = True


class SpoolVersionError(SpoolError):
    """The spool's schema is newer than this s3forward understands. Terminal: upgrade."""

    transient = False


class FencedError(SpoolError):
    """A newer owner took over the log; a stale owner's write (a seal) was refused."""

    transient = False


class ClusterError(S3ForwardError):
    """Cluster mode (issue 9): JetStream could not do what was asked (unreachable, no leader,
    refused). Translated from nats-py in ``cluster/connection.py`` only."""

    transient = True


class WorkerChannelError(S3ForwardError):
    """Issue 10: the channel between an HTTP worker process and the engine failed."""


class FrameError(WorkerChannelError):
    """The peer sent bytes that are not a frame: the channel is closed."""


class EngineInternalError(WorkerChannelError):
    """The engine failed on a worker's request for a reason of its own (logged there): the
    client gets 500."""


class StoppingError(S3ForwardError):
    """The service is shutting down and takes no new data (503)."""

    transient = True


class BuilderError(S3ForwardError):
    """Building files failed for a reason outside the data (the worker process died)."""

    transient = True


class AuthenticationError(S3ForwardError):
    """The request does not carry valid credentials of an input."""


class MissingCredentials(AuthenticationError):
    """No ``Authorization`` header (answer 401 with ``WWW-Authenticate``)."""


class BadCredentials(AuthenticationError):
    """An ``Authorization`` header that is malformed or names no input (answer 403)."""


class HttpError(S3ForwardError):
    """A request the HTTP layer refuses before it reaches the pipeline."""


class RouteNotFound(HttpError):
    """No route has this path (404)."""


class MethodNotAllowed(HttpError):
    """The path exists but not with this method (405, ``Allow`` lists the methods)."""

    def __init__(self, message: str, *, allow: Sequence[str]) -> None:
        super().__init__(message)
        self.allow = tuple(allow)


class UnsupportedMediaType(HttpError):
    """The body's Content-Type is not JSON-like (415)."""


class BodyTimeout(HttpError):
    """The client did not send its whole body within the body timeout (408)."""

    transient = True


class ClientDisconnected(HttpError):
    """The client went away before the body was read; there is no one to answer."""

    transient = True


# Issue 13: refusals of the Web SDK's endpoints (api/web.py).


class OriginNotAllowed(HttpError):
    """A web request from a page origin the input does not allow, or with none (403)."""


class UnknownWebKey(HttpError):
    """A web request naming no web input's API key (403)."""


class RateLimited(HttpError):
    """Too many requests from one client address or device (429, ``Retry-After``)."""

    transient = True

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """The input's hourly quota is used up (429, ``Retry-After`` until the next hour)."""


class UnacceptableBatch(HttpError):
    """A web batch that will never be accepted (422): the Web SDK retries a 400 forever, with
    every later batch of the page queued behind it, but drops a 422."""

    def __init__(self, problems: Sequence[object]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = tuple(str(p) for p in problems)
