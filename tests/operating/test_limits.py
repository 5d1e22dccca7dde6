"""Honest limits under faults (issue 12): a hung S3 endpoint is given up on quickly and turns
/readyz red, repeated errors are rate-limited in the log, rejected requests are counted, not
logged one by one."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import structlog
from opskit import OpsService
from servicekit import unused_port, wait_for

from s3forward.errors import TransientSinkError
from s3forward.layout import EncodedObject
from s3forward.logs import RepeatFilter
from s3forward.sinks.s3 import S3Sink

BATCH = {
    "environment": "production",
    "device_info": {"android_uuid": "d"},
    "events": [
        {"event_type": "custom_event", "data": {"event_name": "e", "custom_event_type": "other"}}
    ],
}


class HungEndpoint:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read from or answered

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung_endpoint() -> Iterator[HungEndpoint]:
    endpoint = HungEndpoint()
    yield endpoint
    endpoint.close()


def test_a_hung_s3_request_is_given_up_after_the_read_timeout(
    hung_endpoint: HungEndpoint, s3_connection: Callable[..., Any]
) -> None:
    settings = s3_connection("mp-forwarding-hung", endpoint_url=hung_endpoint.url)
    sink = S3Sink(settings, connect_timeout=1.0, read_timeout=0.5, max_attempts=2)
    obj = EncodedObject(
        key="k", body=b"{}\n", content_type="application/json", content_encoding=None, sha256="0"
    )
    started = time.monotonic()
    with pytest.raises(TransientSinkError):
        sink.write(obj)
    elapsed = time.monotonic() - started
    sink.close()
    assert hung_endpoint.accepted, "the request reached the hung endpoint"
    # Two attempts of 0.5 s plus botocore's short retry pause; far from the old 60 s per try.
    assert 0.5 <= elapsed < 20, elapsed


@pytest.mark.slow
def test_a_connection_that_delivers_nothing_turns_readyz_red_and_says_why(
    ops_service: Callable[..., OpsService], hung_endpoint: HungEndpoint
) -> None:
    service = ops_service(
        start=False,
        endpoint=hung_endpoint.url,
        delivery='s3_read_timeout = "1s"\ns3_connect_timeout = "1s"\nstalled_after = "2s"',
    )
    # Only the stall may turn readiness red here, not the failure count.
    text = service.config_path.read_text().replace(
        'unhealthy_after = "1s"', 'unhealthy_after = "1h"'
    )
    service.config_path.write_text(text)
    service.start()
    assert service.get("/readyz")[0] == 200
    assert service.post("/v2/events", BATCH)[0] == 202

    def red() -> bool:
        status, body = service.get("/readyz")
        return status == 503 and b"delivered nothing" in body

    wait_for(red, 60, "/readyz to report the stalled connection")
    _, body = service.get("/readyz")
    assert b"'s3'" in body and b"stalled_after 2s" in body
    # The hung requests time out and are retried, instead of holding the workers for minutes.
    wait_for(
        lambda: service.metric("s3forward_file_uploads_retried_total", connection="s3") >= 1,
        60,
        "a timed-out upload counted as a retry",
    )


@pytest.mark.slow
def test_repeated_identical_upload_errors_are_logged_once_with_a_count(
    ops_service: Callable[..., OpsService],
) -> None:
    refused = f"http://127.0.0.1:{unused_port()}"  # nothing listens: every attempt is refused
    service = ops_service(endpoint=refused)
    assert service.post("/v2/events", BATCH)[0] == 202
    wait_for(
        lambda: service.metric("s3forward_file_uploads_retried_total", connection="s3") >= 10,
        60,
        "ten failed attempts",
    )
    written = service.log().count('"upload failed; will retry"')
    assert written == 1, f"{written} identical lines in the log"
    assert service.metric("s3forward_log_messages_suppressed_total") >= 9


@pytest.mark.slow
def test_rejected_requests_are_counted_in_metrics_not_logged_one_by_one(
    ops_service: Callable[..., OpsService],
) -> None:
    service = ops_service()
    for _ in range(5):
        assert service.post("/v2/events", BATCH, auth=("test-key", "wrong"))[0] == 403
    assert service.metric("s3forward_requests_rejected_total", reason="forbidden") == 5
    assert "request rejected" not in service.log()


# ------------------------------------------------------------------------ RepeatFilter


def run(filt: RepeatFilter, level: str, event: str, **fields: Any) -> dict[str, Any] | None:
    try:
        return dict(filt(None, level, {"event": event, "level": level, **fields}))
    except structlog.DropEvent:
        return None


def test_repeat_filter_writes_a_kind_once_per_window_then_reports_the_count() -> None:
    now = [100.0]
    dropped: list[int] = []
    filt = RepeatFilter(10.0, clock=lambda: now[0], on_suppressed=lambda: dropped.append(1))
    assert run(filt, "error", "spool write failed", error="disk full") is not None
    for _ in range(4):
        now[0] += 1
        assert run(filt, "error", "spool write failed", error="disk full") is None
    # Another kind (different error, or another connection) is not held back.
    assert run(filt, "error", "spool write failed", error="I/O error") is not None
    now[0] = 111.0
    again = run(filt, "error", "spool write failed", error="disk full")
    assert again is not None
    assert again["repeated"] == 4 and again["repeated_seconds"] == 11.0
    assert len(dropped) == 4


def test_repeat_filter_ignores_per_file_ids_and_never_limits_info() -> None:
    filt = RepeatFilter(10.0, clock=lambda: 0.0)
    assert run(filt, "warning", "upload failed", connection="s3", file_id=1) is not None
    assert run(filt, "warning", "upload failed", connection="s3", file_id=2) is None
    assert run(filt, "warning", "upload failed", connection="other", file_id=3) is not None
    for _ in range(3):
        assert run(filt, "info", "file delivered", connection="s3") is not None


def test_repeat_filter_output_stays_json_serialisable() -> None:
    filt = RepeatFilter(1.0, clock=lambda: 0.0)
    event = run(filt, "error", "x", error="y")
    assert orjson.loads(orjson.dumps(event)) == event
