"""Running the ASGI app on uvicorn (uvloop event loop, httptools parser).

The service owns the event loop and the signals: it ``await``s ``server.serve()`` inside its
own loop and stops the server with ``server.should_exit = True``. uvicorn's own SIGINT/SIGTERM
handlers are therefore switched off unless asked for, and uvicorn does not touch logging
configuration (``log_config=None``): s3forward configures structlog and the stdlib itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_uvicorn_server(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    handle_signals: bool = False,
    timeout_keep_alive: int = 30,
    timeout_graceful_shutdown: int | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app``, tuned for many small POSTs on one core.

    No access log (the app logs rejections itself), no ``Server`` header, no lifespan or
    websockets. ``handle_signals=True`` keeps uvicorn's SIGINT/SIGTERM handling (standalone
    use); by default the caller stops the server with ``server.should_exit = True``.
    ``ssl_certfile``/``ssl_keyfile`` (PEM) serve HTTPS; the owner may load a renewed
    certificate into the live ``server.config.ssl`` context later.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        log_config=None,
        log_level=log_level,
        timeout_keep_alive=timeout_keep_alive,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    return uvicorn.Server(config) if handle_signals else QuietServer(config)


__all__ = ["QuietServer", "make_uvicorn_server"]
