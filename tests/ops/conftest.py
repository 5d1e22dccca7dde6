"""Fixtures for operating s3forward: a running ``s3forward serve`` against moto, and readers of
its ``/metrics`` and ``/status.json``.

- ``start_service`` and ``fault_proxy`` come from ``tests/conftest.py``.
- ``scrape`` (function): ``scrape(service) -> Scrape``, the parsed ``/metrics`` of a service.
- ``make_batch``: ``(device, seq, events=3, event_type="custom_event") -> batch``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from servicekit import ServiceProcess


@dataclass
class Scrape:
    """One parsed ``/metrics`` page."""

    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, ls, v in self.samples
            if n == name and all(ls.get(k) == want for k, want in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            n == name and all(ls.get(k) == want for k, want in labels.items())
            for n, ls, _ in self.samples
        )


def parse_metrics(text: str) -> Scrape:
    samples = [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return Scrape(samples)


@pytest.fixture
def scrape() -> Callable[[ServiceProcess], Scrape]:
    """``scrape(service)``: GET /metrics and parse it."""

    def get(service: ServiceProcess) -> Scrape:
        status, body = service.get("/metrics")
        assert status == 200
        return parse_metrics(body.decode())

    return get


@pytest.fixture
def make_batch() -> Callable[..., dict[str, Any]]:
    """A factory of valid batches with unique ``source_request_id`` per (device, seq)."""

    def make(
        device: int, seq: int, events: int = 3, event_type: str = "custom_event"
    ) -> dict[str, Any]:
        if event_type == "custom_event":
            data: dict[str, Any] = {"event_name": "tick", "custom_event_type": "other"}
        else:
            data = {"screen_name": "home"}
        return {
            "source_request_id": f"req-{device}-{seq}",
            "environment": "production",
            "mpid": 1000 + device,
            "device_info": {"android_uuid": f"device-{device}"},
            "events": [
                {
                    "event_type": event_type,
                    "data": {**data, "timestamp_unixtime_ms": 1_700_000_000_000 + seq * 10 + i},
                }
                for i in range(events)
            ],
        }

    return make
