"""`s3forward drain`: seal every open window and deliver everything, for a node going away."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servicekit import API_SECRET, ServiceProcess, bucket_lines


def batch(device: int, name: str) -> dict[str, Any]:
    return {
        "device_info": {"android_uuid": f"device-{device}"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": name, "custom_event_type": "other"},
            }
        ],
    }


def run_drain(service: ServiceProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "s3forward"
    return subprocess.run(
        [str(executable), "drain", "--config", str(service.config_path), *extra],
        cwd=service.workdir,
        env={**os.environ, "S3F_TEST_SECRET": API_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_drain_delivers_open_windows_of_a_stopped_node(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """Windows open at shutdown are sealed and delivered by `drain`; a second drain is a no-op."""
    service = start_service(batch_window="1h")
    for device in range(3):
        assert service.post("/v2/events", batch(device, f"e{device}"))[0] == 202
    assert service.terminate() == 0
    assert bucket_lines(s3_client, bucket)[0] == []
    result = run_drain(service)
    assert result.returncode == 0, result.stderr
    assert "drained" in result.stderr
    keys, lines = bucket_lines(s3_client, bucket)
    assert len(keys) == 3
    assert sorted(line["events"][0]["data"]["event_name"] for line in lines) == ["e0", "e1", "e2"]
    again = run_drain(service)
    assert again.returncode == 0
    assert len(bucket_lines(s3_client, bucket)[0]) == 3, "a second drain writes nothing new"


def test_drain_reports_what_it_could_not_deliver(
    start_service: Callable[..., ServiceProcess], moto_server: str, s3_client: Any, bucket: str
) -> None:
    """When the bucket is gone, drain exits 1, says how many files remain, and keeps them."""
    service = start_service(batch_window="1h")
    assert service.post("/v2/events", batch(1, "kept"))[0] == 202
    assert service.terminate() == 0
    s3_client.delete_bucket(Bucket=bucket)
    result = run_drain(service, "--timeout", "3")
    assert result.returncode == 1
    assert "1 files are still undelivered" in result.stderr
    s3_client.create_bucket(Bucket=bucket)
    assert run_drain(service).returncode == 0
    assert len(bucket_lines(s3_client, bucket)[1]) == 1
