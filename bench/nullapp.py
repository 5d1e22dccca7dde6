"""The null app: the reference ``bench/load.py`` prints next to s3forward.

    python bench/nullapp.py FD

An ASGI app on the same HTTP stack as ``s3forward serve`` (``api.server.make_uvicorn_server``:
uvicorn, uvloop, httptools, the same front-door protocol and limits) that reads each request's
body to its end and answers 202 ``{}``, with no auth, parsing or storage. Whatever s3forward
costs beyond it is the cost of its own work. It serves on the listening socket inherited as
descriptor ``FD`` and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from typing import Any

from s3forward.api.server import make_uvicorn_server

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def null_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


async def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    server = make_uvicorn_server(null_app, "127.0.0.1", sock.getsockname()[1])
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(int(sys.argv[1])))
