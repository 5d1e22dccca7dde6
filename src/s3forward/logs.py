"""Structured logs: JSON lines by default, a readable console format on request.

One event per state change (window sealed, file stored, delivered, retrying, connection
unhealthy or recovered), with ids (request_id, window_id, file_id, key) that let one follow a
batch from request to S3 key. Never secrets, never event payloads at info level.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]


def configure_logging(fmt: LogFormat = "json", level: str = "info") -> None:
    """Route structlog (and the stdlib loggers of our dependencies) to stderr."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
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
