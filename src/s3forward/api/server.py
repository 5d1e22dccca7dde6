"""Running the ASGI app on uvicorn (uvloop event loop, httptools parser, ``api.frontdoor``).

The service owns the event loop and the signals: it ``await``s ``server.serve()`` inside its
own loop and stops the server with ``server.should_exit = True``. uvicorn's own SIGINT/SIGTERM
handlers are therefore switched off unless asked for, and uvicorn does not touch logging
configuration (``log_config=None``): s3forward configures structlog and the stdlib itself.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Generator
from typing import Any

import uvicorn

from s3forward.api.frontdoor import FrontDoorLimits, guarded_protocol
from s3forward.config import ServerSettings


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def tune_garbage_collector() -> None:
    """Collect less often: every request allocates thousands of short-lived JSON objects.

    With CPython's default threshold (700) the collector runs every few requests and scans the
    long-lived objects (windows, settings, modules) each time; freezing what exists at start-up
    and raising the threshold took the load benchmark from about 41,000 to 52,000 events/s.
    Cluster nodes too: with the default threshold an ingest node's full collections paused its
    event loop for about 50 ms each, in the middle of requests waiting for their acks.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def make_uvicorn_server(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    handle_signals: bool = False,
    limits: FrontDoorLimits | None = None,
    timeout_graceful_shutdown: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app``, tuned for many small POSTs on one core.

    No access log (the app logs rejections itself), no ``Server`` header, no lifespan or
    websockets. ``handle_signals=True`` keeps uvicorn's SIGINT/SIGTERM handling (standalone
    use); by default the caller stops the server with ``server.should_exit = True``.
    The connection limits (head size and time, keep-alive, connection cap, half-close) are
    ``api.frontdoor``'s, with ``limits`` or its defaults.
    ``ssl_certfile``/``ssl_keyfile`` (PEM) serve HTTPS; the owner may load a renewed
    certificate into the live ``server.config.ssl`` context later.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(limits or FrontDoorLimits()),
        ws="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
        log_level=log_level,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    return uvicorn.Server(config) if handle_signals else QuietServer(config)


def front_door_limits(server: ServerSettings) -> FrontDoorLimits:
    """The connection limits of the ``[server]`` settings."""
    return FrontDoorLimits(
        max_header_bytes=server.max_header_bytes,
        header_timeout=server.header_timeout,
        max_connections=server.max_connections,
        keep_alive_timeout=server.keep_alive_timeout,
    )


__all__ = ["QuietServer", "front_door_limits", "make_uvicorn_server"]
