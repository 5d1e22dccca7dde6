"""systemd integration without a dependency: ``sd_notify`` over ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd waits for ``READY=1`` before it counts the service as started,
shows ``RELOADING=1`` / ``STOPPING=1`` while those happen, and, with ``WatchdogSec=``, restarts a
service that stops sending ``WATCHDOG=1``. Outside systemd (no ``NOTIFY_SOCKET``) every call is a
no-op. A failed notification is never fatal: it is logged once and otherwise ignored.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("s3forward.systemd")


class Notifier:
    """Sends state lines to the socket systemd named in ``NOTIFY_SOCKET`` (if any)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        environment = os.environ if env is None else env
        address = environment.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace: a leading NUL byte on Linux.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._warned = False
        self.watchdog_interval = _watchdog_interval(environment)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``"READY=1"``, ...) as one datagram; True when it was sent."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd", socket=self.address, error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload units match the reload to this message.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds when the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


__all__ = ["Notifier"]
