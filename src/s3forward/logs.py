"""Structured logs: JSON lines, or a readable console format when stderr is a terminal.

One event per state change (window sealed, file stored, delivered, retrying, connection
unhealthy or recovered), with ids (request_id, window_id, file_id, key) that let one follow a
batch from request to S3 key. Never secrets, never event payloads at info level.

Repeated identical warnings and errors (a full disk, a hung bucket) are rate-limited by
``RepeatFilter``: the first one of a kind is written at once, the same kind again within
``window`` seconds is left out and counted, and the next one written after that carries
``repeated`` (how many were left out) and ``repeated_seconds`` (over how long).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Literal

import structlog

LogFormat = Literal["json", "console"]

REPEAT_WINDOW = 30.0
"""Seconds during which the same warning or error is written once."""

_LIMITED_LEVELS = frozenset({"warning", "error", "critical"})
# The fields that say what went wrong and where; per-item ids (file_id, request_id, attempt)
# are left out so that the same failure of many files counts as one kind.
_KIND_FIELDS = ("logger", "connection", "error_code", "error", "reason", "status", "input")


class RepeatFilter:
    """A structlog processor: writes a warning or error kind once per ``window`` seconds."""

    def __init__(
        self,
        window: float = REPEAT_WINDOW,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_suppressed: Callable[[], None] | None = None,
    ) -> None:
        self.window = window
        self.clock = clock
        self.on_suppressed = on_suppressed
        self._lock = threading.Lock()
        # kind -> (when the last written one was written, how many left out since)
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        level = str(event.get("level", method)).lower()
        if level not in _LIMITED_LEVELS:
            return event
        kind = (level, event.get("event"), *(repr(event.get(f)) for f in _KIND_FIELDS))
        now = self.clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.window:
                self._seen[kind] = (seen[0], seen[1] + 1)
                suppressed = True
            else:
                self._seen[kind] = (now, 0)
                if len(self._seen) > 10_000:  # bounded memory: forget the oldest kinds
                    for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5000]:
                        del self._seen[old]
                suppressed = False
        if suppressed:
            if self.on_suppressed is not None:
                self.on_suppressed()
            raise structlog.DropEvent
        if seen is not None and seen[1]:
            event["repeated"] = seen[1]
            event["repeated_seconds"] = round(now - seen[0], 1)
        return event


REPEATS = RepeatFilter()
"""The process's filter; the service points ``on_suppressed`` at its metric."""


def default_format() -> LogFormat:
    """Console lines for a person at a terminal, JSON for journald, files and pipes."""
    return "console" if sys.stderr.isatty() else "json"


def configure_logging(fmt: LogFormat | None = None, level: str = "info") -> None:
    """Route structlog (and the stdlib loggers of our dependencies) to stderr.

    ``fmt=None`` picks ``default_format()``.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    chosen = fmt or default_format()
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if chosen == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            REPEATS,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
    # botocore logs request details (never credentials) at DEBUG; keep it quiet by default.
    logging.getLogger("botocore").setLevel(logging.WARNING)
