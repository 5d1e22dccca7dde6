"""Ingest on every core (issue 10): ``[server] workers = 2``, real processes, real sockets.

HTTP worker processes validate and prepare; only the engine deduplicates, places and commits.
These tests pin what must hold across processes: exactly once through a worker's kill -9,
per-device windows whole, dedup across workers, reloads and stops reaching every worker,
metrics that count every worker, and no 202 without the engine.

To send a request to one chosen worker, the others are paused (SIGSTOP): a paused process
cannot accept, so the kernel hands the new connection to the one that runs.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from servicekit import (
    API_KEY,
    API_SECRET,
    ServiceProcess,
    bucket_lines,
    loopback_listener,
    port_of,
    service_config,
    wait_for,
)
from servicekit import (
    unique_batch as batch,
)

WORKERS = "workers = 2"


def run_cli(service: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "s3forward"
    return subprocess.run(
        [str(executable), *args, "--config", str(service.config_path)],
        cwd=service.workdir,
        env={**os.environ, "S3F_TEST_SECRET": API_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@contextmanager
def only_worker(service: ServiceProcess, index: int) -> Iterator[int]:
    """Pause every HTTP worker but ``index``, so new connections reach that one."""
    pids = service.http_workers()
    assert len(pids) == 2, f"expected 2 HTTP workers, found {pids}"
    paused = [pid for i, pid in enumerate(pids) if i != index]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids[index]
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)


def metric_values(service: ServiceProcess) -> dict[str, float]:
    """Every sample of /metrics, keyed by its name and labels as written."""
    status, body = service.get("/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        match = re.fullmatch(r"([a-zA-Z0-9_:]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def event_ids(lines: list[dict[str, Any]]) -> Counter[int]:
    return Counter(e["data"]["event_id"] for line in lines for e in line["events"])


def test_every_acknowledged_batch_lands_once_through_a_worker_kill9_and_windows_stay_whole(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """Concurrent clients (retrying what got no 202, as clients do) while one worker is
    killed: every 202'd batch is delivered exactly once, the worker is restarted and counted,
    and each device's batches of one window are in one file, never split by process."""
    service = start_service(server=WORKERS, batch_window="1h")
    acked: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            item = batch(number * 3 + seq % 3, number * 10_000 + seq)
            for _ in range(50):  # a client retries the same batch until it gets a 202
                try:
                    status, _, _ = service.post("/v2/events", item, timeout=5)
                except (OSError, http.client.HTTPException):
                    status = 0
                if status == 202:
                    with lock:
                        acked.append(item)
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    victim = service.http_workers()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(service.http_workers()) == 2 and victim not in service.http_workers(),
        15,
        "the killed worker to be replaced",
    )
    before_restart = len(acked)
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(acked) > before_restart > 50, (before_restart, len(acked))
    assert metric_values(service)["s3forward_http_worker_restarts_total"] == 1
    assert service.terminate() == 0
    drained = run_cli(service, "drain")
    assert drained.returncode == 0, drained.stderr
    keys, lines = bucket_lines(s3_client, bucket)
    seen = event_ids(lines)
    doubled = [eid for eid, n in seen.items() if n > 1]
    assert not doubled, f"events delivered more than once: {doubled[:10]}"
    wanted = {e["data"]["event_id"] for b in acked for e in b["events"]}
    assert wanted <= set(seen), f"{len(wanted - set(seen))} acknowledged events missing"
    files_of_device: dict[str, set[int]] = {}
    for number, key in enumerate(keys):
        _, file_lines = bucket_lines_of(s3_client, bucket, key)
        for line in file_lines:
            files_of_device.setdefault(line["device_info"]["android_uuid"], set()).add(number)
    split = {device: files for device, files in files_of_device.items() if len(files) > 1}
    assert not split, f"a device's window landed in several files: {split}"


def bucket_lines_of(s3: Any, bucket: str, key: str) -> tuple[str, list[dict[str, Any]]]:
    import gzip

    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    return key, [orjson.loads(line) for line in body.splitlines() if line]


def test_a_batch_sent_again_to_the_other_worker_is_stored_once(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """Dedup is the engine's, not a worker's: the same source_request_id through worker 0 and
    then worker 1 is one batch in the bucket, and /metrics counts one duplicate."""
    service = start_service(server=WORKERS, batch_window="1h")
    item = batch(1, 1)
    with only_worker(service, 0):
        assert service.post("/v2/events", item)[0] == 202
    with only_worker(service, 1):
        assert service.post("/v2/events", item)[0] == 202
    wait_for(
        lambda: (
            metric_values(service).get('s3forward_batches_deduplicated_total{input="app"}') == 1
        ),
        10,
        "the duplicate to be counted",
    )
    assert service.terminate() == 0
    assert run_cli(service, "drain").returncode == 0
    _, lines = bucket_lines(s3_client, bucket)
    assert [line["source_request_id"] for line in lines] == ["req-1-1"]


def test_metrics_count_what_every_worker_received_and_rejected(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """Counters and the latency histogram are the sum over workers, exactly and at once: what
    was sent, accepted, deduplicated and refused, whichever worker took it."""
    service = start_service(server=WORKERS)
    for index in (0, 1):
        with only_worker(service, index):
            for seq in range(3):
                assert service.post("/v2/events", batch(index, seq))[0] == 202
            bulk = [batch(index, 100 + i, events=2) for i in range(10)]
            assert service.post("/v2/bulkevents", bulk)[0] == 202
            assert service.post("/v2/events", batch(index, 0))[0] == 202  # a retry
            assert service.post("/v2/events", batch(index, 9), auth=None)[0] == 401
            assert service.post("/v2/events", {"events": "no"})[0] == 400
    expected = {
        's3forward_batches_received_total{input="app"}': 2 * (3 + 10 + 1),
        's3forward_events_received_total{input="app"}': 2 * (3 * 3 + 10 * 2 + 3),
        's3forward_batches_deduplicated_total{input="app"}': 2,
        's3forward_requests_rejected_total{input="-",reason="unauthorized"}': 2,
        's3forward_requests_rejected_total{input="app",reason="bad_request"}': 2,
        's3forward_ingest_seconds_count{endpoint="events"}': 2 * 4,
        's3forward_ingest_seconds_count{endpoint="bulkevents"}': 2,
    }

    def counted() -> dict[str, float]:
        values = metric_values(service)
        return {name: values.get(name, 0.0) for name in expected}

    # The engine asks every worker for its counts before it answers: exact at once.
    assert counted() == expected
    time.sleep(1.5)  # another round of every worker's stats: nothing is counted twice
    assert counted() == expected
    status, body = service.get("/status.json")
    assert status == 200
    (summary,) = [i for i in orjson.loads(body)["inputs"] if i["name"] == "app"]
    assert (summary["batches_received"], summary["batches_deduplicated"]) == (28, 2)


def test_a_reload_that_removes_an_input_reaches_every_worker(
    tmp_path: Path, moto_server: str, bucket: str
) -> None:
    """`s3forward reload` (the admin endpoint, forwarded to the engine) answers once every
    worker serves the new config: the removed input is refused by both, the other kept."""
    listener = loopback_listener()
    port = port_of(listener)
    base = service_config(
        port=port,
        spool=tmp_path / "spool" / "spool.db",
        bucket=bucket,
        endpoint=moto_server,
        server=WORKERS,
    )
    extra = '\n[inputs.other]\napi_key = "other-key"\napi_secret = "other-secret"\n'
    two_inputs = base.replace('inputs = ["app"]', 'inputs = ["app", "other"]') + extra
    service = ServiceProcess(tmp_path, two_inputs, listener)
    service.start()
    try:
        for index in (0, 1):
            with only_worker(service, index):
                status, _, _ = service.post(
                    "/v2/events", batch(3, index), auth=("other-key", "other-secret")
                )
                assert status == 202
        service.config_path.write_text(base)
        result = run_cli(service, "reload")
        assert result.returncode == 0, result.stderr + result.stdout
        for index in (0, 1):
            with only_worker(service, index):
                refused = service.post(
                    "/v2/events", batch(3, 10 + index), auth=("other-key", "other-secret")
                )
                assert refused[0] == 403, (index, refused)
                assert service.post("/v2/events", batch(4, index))[0] == 202
    finally:
        service.kill9()


def test_sigterm_answers_the_request_in_flight_then_stops_every_process(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """A request whose body is still arriving when SIGTERM comes gets its answer (202 or 503,
    never a dropped connection); then the workers and the engine exit 0, and what was
    acknowledged before is delivered by a later drain."""
    service = start_service(server=WORKERS, batch_window="1h")
    assert service.post("/v2/events", batch(5, 1))[0] == 202
    workers = service.http_workers()
    body = orjson.dumps(batch(5, 2))
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        token = __import__("base64").b64encode(f"{API_KEY}:{API_SECRET}".encode())
        head = (
            b"POST /v2/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Basic " + token + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        sock.sendall(head + body[:20])
        time.sleep(0.3)  # the worker has the head and part of the body
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[20:])
        answer = sock.recv(65536)
    assert answer.split(b" ", 2)[1] in (b"202", b"503"), answer
    assert service.terminate(timeout=30) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "workers left behind"
    assert run_cli(service, "drain").returncode == 0
    _, lines = bucket_lines(s3_client, bucket)
    assert "req-5-1" in {line["source_request_id"] for line in lines}


def test_when_the_engine_dies_the_workers_answer_503_and_exit(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """A worker never answers 202 without the engine's fsync: a request waiting on an engine
    that is killed gets 503, and every worker exits on its own."""
    service = start_service(server=WORKERS)
    assert service.process is not None
    workers = service.http_workers()
    os.kill(service.process.pid, signal.SIGSTOP)  # the engine takes the request, never answers
    answers: list[int] = []
    sender = threading.Thread(
        target=lambda: answers.append(service.post("/v2/events", batch(6, 1), timeout=20)[0])
    )
    sender.start()
    time.sleep(0.5)
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(timeout=10)
    sender.join(20)
    assert answers == [503]
    wait_for(
        lambda: not [pid for pid in workers if Path(f"/proc/{pid}").exists()],
        10,
        "the workers to exit",
    )


@pytest.mark.parametrize("value", ["auto", 2])
def test_the_service_starts_with_workers_auto_or_a_number(
    start_service: Callable[..., ServiceProcess], value: object
) -> None:
    """``workers = "auto"`` is one per core (at least one); a number is that many."""
    setting = f'workers = "{value}"' if value == "auto" else f"workers = {value}"
    service = start_service(server=setting)
    expected = max(1, os.cpu_count() or 1) if value == "auto" else 2
    assert len(service.http_workers()) == (expected if expected > 1 else 0)
    assert service.post("/v2/events", batch(7, 1))[0] == 202
    assert service.get("/readyz")[0] == 200
