"""Configs and helpers for running s3forward in cluster mode in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from servicekit import API_SECRET, ServiceProcess, service_config

NodeFactory = Callable[..., ServiceProcess]


def cluster_section(urls: list[str], name: str, **extra: object) -> str:
    """A ``[cluster]`` table for the test cluster; ``extra`` values are TOML literals."""
    servers = ", ".join(f'"{u}"' for u in urls)
    values: dict[str, object] = {
        "servers": f"[{servers}]",
        "name": f'"{name}"',
        "partitions": 8,
        "streams": 2,
        "replicas": 3,
        "lease_ttl": '"3s"',
        "tick_interval": '"0.25s"',
        "watermark_interval": '"1s"',
        "outage_budget": '"1h"',
        # JetStream reserves max_bytes of storage per stream: keep many test streams small
        "max_stream_bytes": '"64MiB"',
        **extra,
    }
    lines = ["", "[cluster]", *(f"{key} = {value}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def cluster_config(
    *,
    port: int,
    workdir: Path,
    bucket: str,
    endpoint: str,
    urls: list[str],
    name: str,
    batch_window: str = "1s",
    connection: str = "",
    **extra: object,
) -> str:
    base = service_config(
        port=port,
        spool=workdir / "spool.db",
        bucket=bucket,
        endpoint=endpoint,
        batch_window=batch_window,
        connection=connection,
    )
    return base + cluster_section(urls, name, **extra)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "s3forward"
    env = {**os.environ, "S3F_TEST_SECRET": API_SECRET}
    return subprocess.run(
        [str(executable), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def make_batch(device: str, number: int, **extra: object) -> dict[str, object]:
    """A batch whose one event is named ``<device>#<number>``, to find it in the bucket."""
    return {
        "environment": "development",
        "device_info": {"android_uuid": device},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": f"{device}#{number}", "custom_event_type": "other"},
            }
        ],
        **extra,
    }


def names_by_object(s3: object, bucket: str) -> dict[str, list[str]]:
    """Every object's key -> the event names of its lines, in file order."""
    import gzip

    import orjson

    out: dict[str, list[str]] = {}
    paginator = s3.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
    for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()  # type: ignore[attr-defined]
            if item["Key"].endswith(".gz"):
                body = gzip.decompress(body)
            names: list[str] = []
            for line in body.splitlines():
                if line:
                    for event in orjson.loads(line).get("events", []):
                        if "event_name" in event["data"]:  # session_end events have none
                            names.append(event["data"]["event_name"])
            out[item["Key"]] = names
    return out


def assert_exactly_once(objects: dict[str, list[str]], sent: list[str]) -> None:
    counts = Counter(name for names in objects.values() for name in names)
    doubled = {name: n for name, n in counts.items() if n > 1}
    missing = [name for name in sent if name not in counts]
    assert not doubled, f"batches in more than one place: {sorted(doubled)[:10]}"
    assert not missing, f"accepted batches missing: {missing[:10]}"
    for key, names in objects.items():
        by_device: dict[str, list[int]] = {}
        for name in names:
            device, number = name.split("#")
            by_device.setdefault(device, []).append(int(number))
        for device, numbers in by_device.items():
            assert numbers == sorted(numbers), f"{key}: {device} out of order: {numbers}"
