"""The exception tree of s3forward.

Every error raised on purpose by s3forward derives from ``S3ForwardError``::

    S3ForwardError
    ├── ConfigError             the config file or a CLI option is wrong (lists every problem)
    ├── InputError              inbound data is wrong; carries ``Problem`` items
    │   ├── BatchValidationError    a batch or request body does not match the Events API
    │   └── PayloadTooLargeError    a batch or request is over its size limit
    ├── SinkError               writing to a destination failed
    │   ├── TransientSinkError      worth retrying soon (5xx, SlowDown, timeouts, resets)
    │   └── PermanentSinkError      needs an operator (AccessDenied, NoSuchBucket, bad keys)
    ├── KeyTakenError           a different object already holds the chosen key
    ├── SpoolError              the durable buffer cannot take more data
    │   ├── SpoolFullError          over its size cap: ask clients to retry later (429)
    │   ├── SpoolUnavailableError   disk full, unwritable or unreadable (503)
    │   ├── SpoolVersionError       the spool was written by a newer s3forward (terminal)
    │   └── FencedError             a newer owner took the log over: this writer must stop
    └── StoppingError           the service is shutting down (503)

Third-party exceptions (botocore, sqlite3, gzip) are translated into this tree where they are
caught, so that callers never import them. Messages say what was received, where, and what was
expected; they never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass


class S3ForwardError(Exception):
    """Base of every error s3forward raises on purpose."""


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

    def __init__(self, key: str) -> None:
        super().__init__(f"object key {key!r} already holds a different object")
        self.key = key


class SpoolError(S3ForwardError):
    """The durable buffer cannot accept data right now."""


class SpoolFullError(SpoolError):
    """The spool is over its size cap; clients should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SpoolUnavailableError(SpoolError):
    """The spool cannot write (disk full, read-only, I/O error). Nothing accepted is harmed."""


class SpoolVersionError(SpoolError):
    """The spool's schema is newer than this s3forward understands. Terminal: upgrade."""

    transient = False


class FencedError(SpoolError):
    """A newer owner took over the log; a stale owner's write (a seal) was refused."""

    transient = False


class StoppingError(S3ForwardError):
    """The service is shutting down and takes no new data (503)."""
