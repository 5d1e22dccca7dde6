"""Connection-level limits that uvicorn's httptools protocol does not enforce by itself.

``guarded_protocol(limits)`` returns a subclass of uvicorn's ``HttpToolsProtocol`` that adds,
per connection:

- **request head size**: the bytes of a request head (request line and headers) are counted as
  they arrive; once more than ``max_header_bytes`` have come without the head ending, the
  client gets 431 and the connection is closed without feeding the parser anything further.
- **request head time**: a timer armed when the connection opens and when a new request's
  first byte arrives; a head not complete within ``header_timeout`` gets 408 and the
  connection is closed (slowloris). The body has its own timeout in the app (``body_timeout``).
- **connection cap**: a connection accepted while ``max_connections`` are open is answered 503
  (``Retry-After: 1``) at once and closed; it never reaches the app and is not counted.
- **malformed HTTP**: 400 with the parser's reason in the usual JSON error body (uvicorn's own
  answer is a plain-text 400).
- **half-close**: a client that shuts down its sending side after a complete request still
  gets the answer; the connection closes after it. A half-close in the middle of a request
  closes the connection (the request was incomplete, so nothing was stored).

- **keep-alive idle time**: uvicorn's own keep-alive timer, set to ``keep_alive_timeout``.

Refusals (400, 431, 408, 503) are written with ``Connection: close``, then the sending side is
shut and whatever the client still sends is read and dropped for at most ``_LINGER_SECONDS``
before the socket is closed: closing with unread data would send a reset that can destroy the
answer before the client reads it.

``raise_open_files_limit`` runs at start: it raises the soft RLIMIT_NOFILE towards what
``max_connections`` needs and returns a warning when the limit stays too low.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_LINGER_SECONDS = 1.0
_MAX_LINGERING = 256
"""Refused connections kept open to linger at once; past this a refusal closes at once (a
flood of refusals must not use up the open files that the cap protects)."""
FILES_RESERVE = 256
"""Open files the service needs besides client connections: spool, logs, builder pipes, S3."""


@dataclass(frozen=True, slots=True)
class FrontDoorLimits:
    """Per-connection limits; sizes in bytes, times in seconds."""

    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    max_connections: int = 1024
    keep_alive_timeout: float = 15.0


def _refusal(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"errors": [{"code": code, "message": message}]})
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n",
            extra,
            b"\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits in the module docstring.

    Use ``guarded_protocol(limits)``: the limits are a class attribute of the subclass it makes.
    """

    limits: ClassVar[FrontDoorLimits] = FrontDoorLimits()
    lingering: ClassVar[list[int]] = [0]
    """How many refused connections are lingering now (one counter per server)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn types its timeout as int seconds; call_later takes any float.
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._reading_head = True
        self._head_bytes = 0
        self._heads_completed = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # ----------------------------------------------------------------------------------------
    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            message = (
                f"the server has {len(self.connections)} connections open, its limit; "
                "retry in a moment"
            )
            self._refuse(
                _refusal(
                    b"503 Service Unavailable",
                    "SERVICE_UNAVAILABLE",
                    message,
                    b"retry-after: 1\r\n",
                )
            )
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            self.lingering[0] -= 1
        if self._refused:
            self.connections.discard(self)
            self._unset_keepalive_if_required()
            if exc is None:
                self.transport.close()
            return
        super().connection_lost(exc)

    # asyncio.Protocol.eof_received may return True to keep the socket open; uvicorn never does.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        """Keep the socket open to answer a request read to its end; else close it."""
        if self._refused:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            # cycle is the newest request; any pipelined before it are complete too.
            cycle.keep_alive = False
            self._cancel_head_timer()
            return True
        return None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: drop what the client still sends
        self._unset_keepalive_if_required()
        limit = self.limits.max_header_bytes
        view = memoryview(data)
        while view:
            if not self._reading_head:
                self._feed(view)
                return
            room = limit - self._head_bytes
            if len(view) <= room:
                self._head_bytes += len(view)
                self._feed(view)
                return
            completed = self._heads_completed
            self._head_bytes = limit
            self._feed(view[:room])
            if self.transport.is_closing():
                return  # the parser refused the bytes (400) or the connection is going
            if self._heads_completed == completed:
                self._refuse_head_too_large()
                return
            view = view[room:]

    def _feed(self, data: memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                self.transport.close()  # garbage behind a request still being answered
                return
            self._refuse(
                _refusal(
                    b"400 Bad Request",
                    "BAD_REQUEST",
                    f"the request is not valid HTTP/1.1: {str(exc)[:200]}",
                )
            )
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()

    # ----------------------------------------------------------------------------------------
    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._heads_completed += 1
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0

    # ----------------------------------------------------------------------------------------
    # Refusals

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A pipelined head is late while an earlier request is being answered: let that
            # answer go out, then close.
            cycle.keep_alive = False
            return
        timeout = self.limits.header_timeout
        self._refuse(
            _refusal(
                b"408 Request Timeout",
                "REQUEST_TIMEOUT",
                f"the request head was not received within {timeout:g} seconds",
            )
        )

    def _refuse_head_too_large(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An earlier request on this connection is still being answered: cut it off too,
            # rather than read an unbounded head.
            self.transport.close()
            return
        limit = self.limits.max_header_bytes
        self._refuse(
            _refusal(
                b"431 Request Header Fields Too Large",
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                f"the request line and headers are over {limit} bytes; the limit is {limit}",
            )
        )

    def _refuse(self, response: bytes) -> None:
        """Answer ``response``, shut the sending side, drop input until EOF or the linger time."""
        self._refused = True
        self._cancel_head_timer()
        self.connections.discard(self)
        transport = self.transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        self._linger_timer = asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.close)


def guarded_protocol(limits: FrontDoorLimits) -> type[GuardedHttpToolsProtocol]:
    """A ``GuardedHttpToolsProtocol`` subclass enforcing ``limits`` (pass it as ``http=``)."""
    attributes = {"limits": limits, "lingering": [0]}
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), attributes)


def raise_open_files_limit(
    max_connections: int,
    *,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> str | None:
    """Raise the soft open-files limit towards ``max_connections + FILES_RESERVE``.

    The soft limit goes up to what is needed, at most the hard limit. Returns a warning when
    the limit stays below what is needed, None when it is enough.
    """
    needed = max_connections + FILES_RESERVE
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (OSError, ValueError):
                pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    return (
        f"the open-files limit (RLIMIT_NOFILE) is {soft} (hard limit {hard}), but "
        f"server.max_connections = {max_connections} needs about {needed} "
        f"({FILES_RESERVE} for the service itself); lower server.max_connections or raise the "
        "limit (ulimit -n, LimitNOFILE= in systemd)"
    )


__all__ = [
    "FILES_RESERVE",
    "FrontDoorLimits",
    "GuardedHttpToolsProtocol",
    "guarded_protocol",
    "raise_open_files_limit",
]
