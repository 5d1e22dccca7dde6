"""First start as a new user meets it (issue 12): logs that suit where they go, Ctrl-C that stops
cleanly (worker process included), --version, the config found through S3FORWARD_CONFIG, and a
status page in UTC."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from opskit import EXECUTABLE, OpsService
from servicekit import (
    API_SECRET,
    bucket_lines,
    loopback_listener,
    spawn_on,
    unused_port,
    wait_for,
)

BATCH = {
    "environment": "production",
    "device_info": {"android_uuid": "d"},
    "events": [
        {"event_type": "custom_event", "data": {"event_name": "e", "custom_event_type": "other"}}
    ],
}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_its_worker_without_a_traceback(
    ops_service: Callable[..., OpsService], s3_client: object, bucket: str
) -> None:
    service = ops_service()
    assert service.post("/v2/events", BATCH)[0] == 202
    # A delivered file means the file-building worker process has started.
    wait_for(lambda: bool(bucket_lines(s3_client, bucket)[0]), 60, "a delivered file")
    assert service.process is not None
    pgid = os.getpgid(service.process.pid)
    os.killpg(pgid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    assert service.process.wait(30) == 0
    wait_for(lambda: not group_alive(pgid), 30, "every process of the group to exit")
    log = service.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-2000:]
    assert '"stopped"' in log


def serve_embedded(workdir: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    """``s3forward serve`` on its embedded config, on a loopback socket bound here."""
    return spawn_on(
        loopback_listener(),
        [str(EXECUTABLE), "serve", "--fd", "{fd}"],
        cwd=workdir,
        env={k: v for k, v in os.environ.items() if k != "S3FORWARD_CONFIG"},
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.slow
def test_logs_are_json_lines_without_a_banner_when_not_on_a_terminal(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        process = serve_embedded(tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b'"listening"' in log.read_bytes(), 30, "listening")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    lines = [line for line in log.read_bytes().splitlines() if line.strip()]
    assert lines and all(isinstance(orjson.loads(line), dict) for line in lines)


@pytest.mark.slow
def test_logs_are_console_lines_with_the_banner_on_a_terminal(tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    process = serve_embedded(tmp_path, stdout=secondary, stderr=secondary)
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"Events API" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                seen += os.read(primary, 65536)
        process.send_signal(signal.SIGINT)
        process.wait(30)
    finally:
        os.close(primary)
    assert b"Events API" in seen
    assert b"listening" in seen
    assert not any(line.lstrip().startswith(b"{") for line in seen.splitlines())


def test_version_names_the_installed_release() -> None:
    done = subprocess.run(
        [str(EXECUTABLE), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert importlib.metadata.version("s3forward") in done.stdout


@pytest.mark.slow
def test_serve_reads_the_config_named_by_s3forward_config(
    ops_service: Callable[..., OpsService],
) -> None:
    service = ops_service(start=False)
    service.release_port()  # this one binds the port of its config itself
    env = {
        **os.environ,
        "S3FORWARD_CONFIG": str(service.config_path),
        "S3F_TEST_SECRET": API_SECRET,
    }
    with service.log_path.open("wb") as out:
        service.process = subprocess.Popen(
            [str(EXECUTABLE), "serve"], cwd=service.workdir, env=env, stdout=out, stderr=out
        )
    wait_for(service._answers, 30, "the service on the port of $S3FORWARD_CONFIG")
    assert service.post("/v2/events", BATCH)[0] == 202


def test_the_status_page_shows_its_time_in_utc(ops_service: Callable[..., OpsService]) -> None:
    script = (
        Path(__file__).resolve().parents[2] / "src/s3forward/api/static/status.js"
    ).read_text()
    assert "toLocaleTimeString" not in script and "toLocaleString()" not in script
    assert 'toISOString().slice(11, 19) + " UTC"' in script


@pytest.mark.slow
def test_sighup_on_the_embedded_config_is_refused_and_the_server_keeps_running(
    tmp_path: Path,
) -> None:
    log = tmp_path / "out.log"
    port = unused_port()  # --listen: this server binds the port itself
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(EXECUTABLE), "serve", "--listen", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "S3FORWARD_CONFIG"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: f'"url": "http://127.0.0.1:{port}"'.encode() in log.read_bytes(),
            30,
            "listening",
        )
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: b"no config file to re-read" in log.read_bytes(), 30, "the refusal")
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
