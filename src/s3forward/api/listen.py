"""The listening socket: bound by s3forward itself, or inherited already bound.

A process that binds its own port from ``[server] listen`` is the usual case. An inherited
socket (``s3forward serve --fd N``) is for a supervisor that binds the port first: systemd
socket activation (``--fd 3``), a test harness that must know the port before the service
starts without racing another process for it, or a parent handing one socket to several
processes. Either way the server gets a socket that is already bound and listening, so a
client that connects while the server is still starting waits in the backlog instead of being
refused.
"""

from __future__ import annotations

import socket

from s3forward.errors import ConfigError, Problem

BACKLOG = 2048
"""Pending connections the kernel queues before ``accept`` (capped by ``net.core.somaxconn``)."""


def bind_listener(host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port) and listening.

    ``SO_REUSEADDR`` lets a restarted server bind the port its predecessor left in TIME_WAIT.
    Raises ``OSError`` when the address cannot be bound (in use, not local, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or "0.0.0.0", port))  # noqa: S104 - "" means every interface
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def inherited_listener(fd: int) -> socket.socket:
    """The listening TCP socket open as file descriptor ``fd``, checked.

    Raises ``ConfigError`` naming the descriptor when it is not open, not a socket, not a TCP
    stream socket, or not listening, so that a wrong ``--fd`` is a clear start-up error rather
    than a server that never answers.
    """
    where = f"--fd {fd}"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError([Problem(where, f"is not an open socket ({exc.strerror})")]) from None
    try:
        kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        sock.detach()
        raise ConfigError([Problem(where, f"is not a usable socket ({exc.strerror})")]) from None
    problem = None
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        problem = "is not an IPv4 or IPv6 socket"
    elif kind != socket.SOCK_STREAM:
        problem = "is not a TCP (stream) socket"
    elif not listening:
        problem = "is not listening: bind it and call listen() before passing it"
    if problem is not None:
        sock.detach()  # not ours to close: it belongs to whoever passed it
        raise ConfigError([Problem(where, problem)])
    return sock


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    """The base URL of a listening socket, such as ``http://127.0.0.1:8080``."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


__all__ = ["BACKLOG", "bind_listener", "inherited_listener", "url_of"]
