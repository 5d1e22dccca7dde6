"""The delivery promises under crashes, outages, throttling, back-pressure and shutdown."""

from __future__ import annotations

import hashlib
import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servicekit import FaultProxy, ServiceProcess, bucket_lines, wait_for
from servicekit import unique_batch as batch


def event_ids(lines: list[dict[str, Any]]) -> Counter[int]:
    return Counter(e["data"]["event_id"] for line in lines for e in line["events"])


class Sender:
    """Posts batches in a background thread, remembering which ones got a 202."""

    def __init__(self, service: ServiceProcess, devices: int = 20) -> None:
        self.service = service
        self.devices = devices
        self.acked: list[dict[str, Any]] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seq = 0

    def _run(self) -> None:
        rng = random.Random(3)
        while not self._stop.is_set() and self._seq < 5000:
            self._seq += 1
            b = batch(rng.randrange(self.devices), self._seq)
            try:
                status, _, _ = self.service.post("/v2/events", b, timeout=5)
            except (OSError, http.client.HTTPException):
                # The service is down (killed), or was killed mid-answer (IncompleteRead):
                # that batch got no 202; try the next one.
                time.sleep(0.02)
                continue
            self.sent += 1
            if status == 202:
                self.acked.append(b)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def assert_exactly_once(s3: Any, bucket: str, acked: list[dict[str, Any]]) -> None:
    keys, lines = bucket_lines(s3, bucket)
    seen = event_ids(lines)
    doubled = {eid: n for eid, n in seen.items() if n > 1}
    assert not doubled, f"events delivered more than once: {list(doubled)[:10]}"
    wanted = {e["data"]["event_id"] for b in acked for e in b["events"]}
    missing = wanted - set(seen)
    assert not missing, f"{len(missing)} acknowledged events missing, e.g. {sorted(missing)[:10]}"
    bodies = Counter(
        hashlib.sha256(s3.get_object(Bucket=bucket, Key=k)["Body"].read()).hexdigest() for k in keys
    )
    assert max(bodies.values(), default=1) == 1, "the same file landed under two keys"


@pytest.mark.slow
def test_kill9_during_ingest_and_upload_loses_and_doubles_nothing(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """Every event that got a 202 is in the bucket exactly once after repeated kill -9."""
    service = start_service(batch_window="0.2s")
    with Sender(service) as sender:
        for round_ in range(4):
            time.sleep(0.8 + 0.3 * round_)
            service.kill9()
            service.start()
        time.sleep(0.5)
    assert len(sender.acked) > 50, f"the test sent too little to mean much: {len(sender.acked)}"
    wanted = sum(len(b["events"]) for b in sender.acked)
    wait_for(
        lambda: len(event_ids(bucket_lines(s3_client, bucket)[1])) >= wanted,
        60,
        "every acknowledged event in the bucket",
        step=0.5,
    )
    assert_exactly_once(s3_client, bucket, sender.acked)


def test_an_s3_outage_delays_but_loses_nothing(
    start_service: Callable[..., ServiceProcess],
    fault_proxy: FaultProxy,
    s3_client: Any,
    bucket: str,
) -> None:
    """With S3 unreachable, ingest keeps answering 202; once it is back, everything arrives."""
    service = start_service(endpoint=fault_proxy.url)
    fault_proxy.down()
    acked = []
    for seq in range(30):
        b = batch(seq % 5, seq)
        status, _, _ = service.post("/v2/events", b)
        assert status == 202
        acked.append(b)
    wait_for(
        lambda: b"s3forward_file_uploads_retried_total{" in service.get("/metrics")[1],
        20,
        "delivery to retry against the unreachable endpoint",
        step=0.2,
    )
    assert bucket_lines(s3_client, bucket)[0] == [], "nothing can land while S3 is down"
    fault_proxy.up()
    wait_for(
        lambda: len(event_ids(bucket_lines(s3_client, bucket)[1])) == 90,
        30,
        "all events after the outage",
        step=0.3,
    )
    assert_exactly_once(s3_client, bucket, acked)


def test_throttling_and_connection_resets_lose_and_double_nothing(
    start_service: Callable[..., ServiceProcess],
    fault_proxy: FaultProxy,
    s3_client: Any,
    bucket: str,
) -> None:
    """503 SlowDown and reset connections on a third of requests: all arrive, exactly once."""
    fault_proxy.slowdown = 0.2
    fault_proxy.reset = 0.15
    service = start_service(endpoint=fault_proxy.url, connection="send_as_batch = false")
    acked = []
    for seq in range(20):
        b = batch(seq % 4, seq, events=2)
        status, _, _ = service.post("/v2/events", b)
        assert status == 202
        acked.append(b)
    wait_for(
        lambda: len(event_ids(bucket_lines(s3_client, bucket)[1])) == 40,
        60,
        "all events through the faults",
        step=0.3,
    )
    assert fault_proxy.counts["slowdown"] > 0 and fault_proxy.counts["reset"] > 0
    assert_exactly_once(s3_client, bucket, acked)


def test_a_full_spool_answers_429_then_recovers_once_delivery_catches_up(
    start_service: Callable[..., ServiceProcess],
    fault_proxy: FaultProxy,
    s3_client: Any,
    bucket: str,
) -> None:
    """Past the spool cap ingest answers 429 with Retry-After, and 202 again after draining."""
    service = start_service(endpoint=fault_proxy.url, spool_extra='max_bytes = "1MiB"')
    fault_proxy.down()
    padding = "x" * 60_000
    big = batch(1, 1)
    big["user_attributes"] = {"padding": padding}
    statuses = []
    for seq in range(40):
        big["source_request_id"] = f"big-{seq}"
        status, headers, body = service.post("/v2/events", big)
        statuses.append(status)
        if status == 429:
            assert headers["retry-after"].isdigit()
            assert "full" in body["errors"][0]["message"]
            break
    assert statuses[-1] == 429, statuses
    ready_status, _ = service.get("/readyz")
    assert ready_status == 503, "readiness fails before and while the spool is full"
    fault_proxy.up()

    def accepted_again() -> bool:
        big["source_request_id"] = f"after-{time.monotonic()}"
        return service.post("/v2/events", big)[0] == 202

    wait_for(accepted_again, 30, "ingest to accept again", step=0.5)


def test_sigterm_keeps_open_windows_and_a_restart_resumes_their_open_time(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """A window open at SIGTERM is kept and sealed on its original schedule after restart."""
    service = start_service(batch_window="4s")
    sent_at = time.time()
    assert service.post("/v2/events", batch(1, 1))[0] == 202
    assert service.terminate() == 0
    assert "stopped" in service.log()
    time.sleep(2.0)  # the scenario: the window's time runs on while the service is down
    assert bucket_lines(s3_client, bucket)[0] == []
    service.start()
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[0]) == 1, 20, "the resumed window")
    delivered_at = time.time()
    assert delivered_at - sent_at < 4.0 + 2.0 + 1.5, (
        "the window kept its original open time instead of starting over at restart"
    )
    _, lines = bucket_lines(s3_client, bucket)
    assert len(lines) == 1


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def test_a_killed_service_leaves_no_worker_process_behind(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """After kill -9, the file-building worker notices and exits instead of lingering."""
    service = start_service()
    assert service.process is not None
    assert service.post("/v2/events", batch(1, 1))[0] == 202
    wait_for(lambda: bool(children_of(service.process.pid)), 10, "the worker process")
    children = children_of(service.process.pid)
    service.kill9()
    wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 10, "workers to exit")
