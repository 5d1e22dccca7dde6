"""`s3forward status` and `s3forward spool list|show|export` against a real service and spool."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from servicekit import API_SECRET, FaultProxy, ServiceProcess, wait_for


def _cli(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "s3forward"
    env = {**os.environ, "S3F_TEST_SECRET": API_SECRET}
    return subprocess.run(  # noqa: PLW1510 - callers check the code
        [str(executable), *args],
        cwd=service.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _waiting_files(
    start_service: Callable[..., ServiceProcess],
    fault_proxy: FaultProxy,
    make_batch: Callable[..., dict[str, Any]],
) -> ServiceProcess:
    """A service whose S3 is down, holding undelivered files for 3 devices, then killed."""
    service = start_service(endpoint=fault_proxy.url, connection="use_compression = true")
    fault_proxy.down()
    for seq in range(6):
        assert service.post("/v2/events", make_batch(seq % 3, seq))[0] == 202

    def files_waiting() -> bool:
        _, body = service.get("/status.json")
        snap = orjson.loads(body)
        return snap["spool"]["pending_files"] == 3 and bool(snap["waiting_files"][0]["last_error"])

    wait_for(files_waiting, 30, "three files waiting with an error", step=0.3)
    return service


def test_status_reads_the_running_server_then_the_spool_when_it_is_down(
    start_service: Callable[..., ServiceProcess],
    fault_proxy: FaultProxy,
    make_batch: Callable[..., dict[str, Any]],
) -> None:
    """Up: facts from /status.json; killed: the same waiting files read from the spool file."""
    service = _waiting_files(start_service, fault_proxy, make_batch)
    live = _cli(service, "status", "--url", service.url)
    assert live.returncode == 0, live.stderr
    assert "from the running server" in live.stdout
    assert "[FAILING]" in live.stdout or "[RETRYING]" in live.stdout
    assert "waiting: 3 files" in live.stdout
    by_config = _cli(service, "status", "--config", str(service.config_path), "--json")
    assert orjson.loads(by_config.stdout)["source"] == "server"

    service.kill9()
    down = _cli(service, "status", "--config", str(service.config_path), "--json")
    assert down.returncode == 0, down.stderr
    snap = orjson.loads(down.stdout)
    assert snap["source"] == "spool"
    assert snap["spool"]["pending_files"] == 3
    assert snap["connections"][0]["pending_files"] == 3
    assert snap["connections"][0]["oldest_undelivered_age_seconds"] > 0
    assert "Server not running" in snap["connections"][0]["message"]
    text = _cli(service, "status", "--config", str(service.config_path))
    assert "spool file (server down)" in text.stdout


def test_spool_list_show_and_export_hand_over_undelivered_files(
    start_service: Callable[..., ServiceProcess],
    fault_proxy: FaultProxy,
    make_batch: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Undelivered files are listed, shown decompressed, and exported as key-named objects."""
    import gzip

    service = _waiting_files(start_service, fault_proxy, make_batch)
    config = str(service.config_path)
    listed = _cli(service, "spool", "list", "--config", config, "--json")
    assert listed.returncode == 0, listed.stderr
    files = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(files) == 3
    assert all(f["key"].endswith(".gz") and f["last_error"] for f in files)
    plain = _cli(service, "spool", "list", "--config", config)
    assert files[0]["key"] in plain.stdout

    shown = _cli(service, "spool", "show", str(files[0]["id"]), "--config", config)
    assert shown.returncode == 0, shown.stderr
    assert f"key: {files[0]['key']}" in shown.stdout
    content = shown.stdout.split("---\n", 1)[1]
    assert orjson.loads(content.splitlines()[0])["events"][0]["event_type"] == "custom_event"
    missing = _cli(service, "spool", "show", "99999", "--config", config)
    assert missing.returncode == 1
    assert "no file 99999" in missing.stderr

    service.kill9()
    out = tmp_path / "handover"
    exported = _cli(service, "spool", "export", str(out), "--config", config)
    assert exported.returncode == 0, exported.stderr
    assert "exported 3 undelivered files" in exported.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(f["key"] for f in files)
    events = [
        e
        for f in files
        for line in gzip.decompress((out / f["key"]).read_bytes()).splitlines()
        for e in orjson.loads(line)["events"]
    ]
    assert len(events) == 6 * 3
