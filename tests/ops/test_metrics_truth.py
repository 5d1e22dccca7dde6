"""Metrics and health over HTTP against a running service and a moto S3 server: send N, see N,
including an outage and a permission failure."""

from __future__ import annotations

import base64
import http.client
from collections.abc import Callable
from typing import Any

import orjson
from servicekit import FaultProxy, ServiceProcess, bucket_lines, wait_for


def _objects(s3: Any, bucket: str) -> dict[str, int]:
    """Every object key in ``bucket`` with its size."""
    listing = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listing}


def _with_screen_views(batch: dict[str, Any], count: int) -> dict[str, Any]:
    batch["events"] += [
        {"event_type": "screen_view", "data": {"screen_name": f"s{i}"}} for i in range(count)
    ]
    return batch


def _raw_post(service: ServiceProcess, body: bytes, auth: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        conn.request("POST", "/v2/events", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _settled(scrape: Callable[[ServiceProcess], Any], service: ServiceProcess) -> Any:
    """Wait until every window is sealed and every file delivered, then scrape once more."""

    def done() -> bool:
        m = scrape(service)
        delivered = m.value("s3forward_files_delivered_total")
        return (
            delivered > 0
            and m.value("s3forward_windows_open") == 0
            and m.value("s3forward_spool_files", state="pending") == 0
            and delivered == m.value("s3forward_files_sealed_total")
        )

    wait_for(done, 30, "every file sealed and delivered", step=0.3)
    return scrape(service)


def test_every_counter_matches_what_was_sent_and_stored(
    start_service: Callable[..., ServiceProcess],
    scrape: Callable[[ServiceProcess], Any],
    make_batch: Callable[..., dict[str, Any]],
    s3_client: Any,
    bucket: str,
) -> None:
    """Batches, events, duplicates, rejections, filtered events, files and bytes are exact;
    a window whose every event is filtered out writes no file and counts as none."""
    service = start_service(
        connection="send_screen_views = false\nsend_batches_without_events = false"
    )
    sent = [_with_screen_views(make_batch(seq % 4, seq, events=3), 2) for seq in range(10)]
    for b in sent:
        assert service.post("/v2/events", b)[0] == 202
    for b in sent[:2]:  # the same source_request_id again: accepted, not stored twice
        assert service.post("/v2/events", b)[0] == 202
    bulk = [_with_screen_views(make_batch(9, 100 + i, events=3), 2) for i in range(3)]
    assert service.post("/v2/bulkevents", bulk)[0] == 202
    only_filtered = make_batch(7, 200, events=3, event_type="screen_view")  # its own window
    assert service.post("/v2/events", only_filtered)[0] == 202
    assert _raw_post(service, orjson.dumps(sent[0]), None) == 401
    assert _raw_post(service, orjson.dumps(sent[0]), "test-key:wrong") == 403
    assert _raw_post(service, b"{not json", "test-key:test-secret-value") == 400

    m = _settled(scrape, service)
    objects = _objects(s3_client, bucket)
    _, lines = bucket_lines(s3_client, bucket)
    stored_events = [e for line in lines for e in line["events"]]

    assert m.value("s3forward_batches_received_total", input="app") == 16
    assert m.value("s3forward_events_received_total", input="app") == 15 * 5 + 3
    assert m.value("s3forward_batches_deduplicated_total", input="app") == 2
    assert m.value("s3forward_requests_rejected_total", input="-", reason="unauthorized") == 1
    assert m.value("s3forward_requests_rejected_total", input="-", reason="forbidden") == 1
    assert m.value("s3forward_requests_rejected_total", input="app", reason="bad_request") == 1
    assert m.value("s3forward_requests_rejected_total") == 3
    filtered = m.value("s3forward_events_filtered_total", connection="s3", event_type="screen_view")
    assert filtered == 13 * 2 + 3
    assert len(stored_events) == 13 * 3
    assert len(lines) == 13  # the batch left without events is not sent
    assert {e["event_type"] for e in stored_events} == {"custom_event"}
    assert m.value("s3forward_files_sealed_total", connection="s3") == len(objects)
    assert m.value("s3forward_files_delivered_total", connection="s3") == len(objects)
    assert m.value("s3forward_bytes_delivered_total", connection="s3") == sum(objects.values())
    # No compression: the bytes sealed are the bytes stored.
    assert m.value("s3forward_bytes_sealed_total", connection="s3") == sum(objects.values())
    assert m.value("s3forward_upload_seconds_count", connection="s3") == len(objects)
    assert m.value("s3forward_ingest_seconds_count", endpoint="events") == 13
    assert m.value("s3forward_ingest_seconds_count", endpoint="bulkevents") == 1
    assert m.value("s3forward_file_uploads_retried_total") == 0
    assert m.value("s3forward_file_uploads_failed_total") == 0
    assert m.value("s3forward_connection_healthy", connection="s3") == 1
    assert m.value("s3forward_oldest_undelivered_age_seconds", connection="s3") == 0
    # Everything delivered: what is left is an empty spool's own database pages.
    assert m.value("s3forward_spool_bytes") < 128 * 1024
    assert service.get("/readyz")[0] == 200


def test_an_outage_shows_in_metrics_readiness_and_freshness_then_clears(
    start_service: Callable[..., ServiceProcess],
    scrape: Callable[[ServiceProcess], Any],
    make_batch: Callable[..., dict[str, Any]],
    fault_proxy: FaultProxy,
    s3_client: Any,
    bucket: str,
) -> None:
    """S3 down: retries by error class, unhealthy, stale, 503 /readyz; S3 back: all clear."""
    service = start_service(endpoint=fault_proxy.url)
    fault_proxy.down()
    for seq in range(5):
        assert service.post("/v2/events", make_batch(seq, seq))[0] == 202

    def failing() -> bool:
        m = scrape(service)
        return (
            m.value("s3forward_connection_healthy", connection="s3") == 0
            and m.value("s3forward_oldest_undelivered_age_seconds", connection="s3") > 0
            and m.value("s3forward_spool_files", state="pending") > 0
        )

    wait_for(failing, 30, "the connection to be reported unhealthy and stale", step=0.3)
    m = scrape(service)
    retried = [s for s in m.samples if s[0] == "s3forward_file_uploads_retried_total" and s[2]]
    assert retried, "connection refused is a transient error, counted as retried"
    assert all(labels["connection"] == "s3" and labels["error"] for _, labels, _ in retried)
    assert m.value("s3forward_file_uploads_failed_total") == 0
    assert m.value("s3forward_files_delivered_total") == 0
    assert m.value("s3forward_spool_bytes") > 0
    status, body = service.get("/readyz")
    assert status == 503
    reasons = orjson.loads(body)["reasons"]
    assert any("'s3'" in r and "failing" in r for r in reasons), reasons

    fault_proxy.up()
    m = _settled(scrape, service)
    assert m.value("s3forward_files_delivered_total", connection="s3") == len(
        _objects(s3_client, bucket)
    )
    wait_for(lambda: service.get("/readyz")[0] == 200, 10, "/readyz to recover")
    m = scrape(service)
    assert m.value("s3forward_connection_healthy", connection="s3") == 1
    assert m.value("s3forward_oldest_undelivered_age_seconds", connection="s3") == 0
    log = service.log()
    assert "connection unhealthy" in log
    assert "connection recovered" in log


def test_a_missing_bucket_is_a_permanent_failure_named_in_readyz_and_status(
    start_service: Callable[..., ServiceProcess],
    scrape: Callable[[ServiceProcess], Any],
    make_batch: Callable[..., dict[str, Any]],
) -> None:
    """NoSuchBucket: failed (not retried) by error class, unhealthy at once, reason in /readyz."""
    service = start_service(bucket_name="mp-forwarding-no-such-bucket-here")
    assert service.post("/v2/events", make_batch(1, 1))[0] == 202
    wait_for(
        lambda: (
            scrape(service).value("s3forward_file_uploads_failed_total", error="NoSuchBucket") >= 1
        ),
        30,
        "a NoSuchBucket failure",
        step=0.3,
    )
    m = scrape(service)
    assert m.value("s3forward_connection_healthy", connection="s3") == 0
    assert m.value("s3forward_files_delivered_total") == 0
    assert m.value("s3forward_file_uploads_retried_total") == 0
    status, body = service.get("/readyz")
    assert status == 503
    assert "mp-forwarding-no-such-bucket-here does not exist" in body.decode()
    _, raw = service.get("/status.json")
    connection = orjson.loads(raw)["connections"][0]
    assert connection["state"] == "failing"
    assert connection["last_error_code"] == "NoSuchBucket"
    assert "does not exist" in connection["message"]
