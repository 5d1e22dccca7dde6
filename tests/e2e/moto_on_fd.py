"""moto's server (what ``moto_server`` runs) on a listening socket inherited as a descriptor.

``python moto_on_fd.py FD``: the tests bind the socket and pass it, so the port is theirs from
the moment it is chosen. The application and request handler are the ones ``moto_server``
uses; only the socket comes from the parent (werkzeug's public ``make_server(fd=...)``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from types import FrameType

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


def main() -> None:
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    host, port = sock.getsockname()[:2]
    sock.detach()  # make_server wraps (a duplicate of) the same descriptor itself
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler, fd=fd)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
