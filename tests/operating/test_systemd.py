"""systemd (issue 12): the unit file passes ``systemd-analyze verify``, and the service speaks
sd_notify (READY, RELOADING, STOPPING, WATCHDOG) over a real ``NOTIFY_SOCKET``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opskit import EXECUTABLE, OpsService
from servicekit import wait_for

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "s3forward.service"


def unit_for_this_machine(directory: Path, text: str | None = None) -> Path:
    """The unit with its commands pointing at this virtualenv (verify checks they exist)."""
    path = directory / "s3forward.service"
    path.write_text((text or UNIT.read_text()).replace("/usr/local/bin/s3forward", str(EXECUTABLE)))
    return path


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd; .ci/run installs it)",
)


@needs_systemd_analyze
def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = verify(unit_for_this_machine(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "s3forward.service" not in result.stderr, result.stderr


@needs_systemd_analyze
def test_systemd_analyze_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: an unknown directive and a missing binary are reported."""
    broken = UNIT.read_text().replace("Type=notify", "Type=notify\nRestartt=always")
    result = verify(unit_for_this_machine(tmp_path, broken))
    assert "Restartt" in result.stderr
    missing = unit_for_this_machine(tmp_path, UNIT.read_text())
    missing.write_text(missing.read_text().replace(str(EXECUTABLE), "/nonexistent/s3forward"))
    result = verify(missing)
    assert result.returncode != 0


def test_the_unit_is_a_hardened_notify_service_with_a_writable_spool() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    for wanted in (
        "Type=notify",
        "WatchdogSec=30",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/s3forward",
        "StateDirectory=s3forward",
        "NoNewPrivileges=true",
        "Environment=S3FORWARD_CONFIG=/etc/s3forward/s3forward.toml",
        "ExecReload=/usr/local/bin/s3forward reload",
        "KillMode=mixed",
    ):
        assert wanted in lines, wanted


class NotifySocket:
    """A datagram socket standing in for systemd's; collects every message sent to it."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="s3f-", dir="/tmp"))  # short: sun_path
        self.path = self.directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.mark.slow
def test_the_service_notifies_ready_reloading_watchdog_and_stopping(
    ops_service: Callable[..., OpsService], notify_socket: NotifySocket
) -> None:
    service = ops_service(env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"})
    wait_for(lambda: "READY=1" in notify_socket.lines(), 30, "READY=1")
    assert any(
        line.startswith("STATUS=listening on http://127.0.0.1:") for line in notify_socket.lines()
    )
    wait_for(lambda: notify_socket.lines().count("WATCHDOG=1") >= 3, 30, "watchdog pings")
    service.signal(signal.SIGHUP)
    wait_for(lambda: "RELOADING=1" in notify_socket.lines(), 30, "RELOADING=1")
    wait_for(
        lambda: (
            notify_socket.lines()[notify_socket.lines().index("RELOADING=1") :].count("READY=1")
            >= 1
        ),
        30,
        "READY=1 after the reload",
    )
    assert any(line.startswith("MONOTONIC_USEC=") for line in notify_socket.lines())
    service.stop()
    wait_for(lambda: "STOPPING=1" in notify_socket.lines(), 10, "STOPPING=1")
