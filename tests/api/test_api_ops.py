"""Operations endpoints (/healthz, /readyz, /metrics), extra routes, and the ingest metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families

from s3forward.api.app import Request
from s3forward.api.responses import Response, json_response
from s3forward.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import RecordingIntake  # tests/api/conftest.py


def batch(events: int) -> dict[str, Any]:
    return {
        "environment": "production",
        "mp_deviceid": "d-1",
        "events": [{"event_type": "screen_view", "data": {"screen_name": "s"}}] * events,
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def test_healthz_answers_ok(api_url: str) -> None:
    """/healthz says the process is up."""
    response = requests.get(f"{api_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_follows_the_intake(api_url: str, intake: RecordingIntake) -> None:
    """/readyz is 200 when the intake is ready and 503 with its reason when it is not."""
    assert requests.get(f"{api_url}/readyz", timeout=10).json() == {"ready": True}
    intake.not_ready = "spool is over its size cap"
    response = requests.get(f"{api_url}/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reasons": ["spool is over its size cap"]}


def test_readyz_combines_an_injected_check(
    start_api: Callable[..., str], intake: RecordingIntake
) -> None:
    """An injected readiness check adds its reason to the intake's."""
    intake.not_ready = "intake closed"
    url = start_api(readiness=lambda: (False, "connection s3 unhealthy"))
    response = requests.get(f"{url}/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["reasons"] == ["intake closed", "connection s3 unhealthy"]


def test_extra_routes_are_served_and_can_replace_defaults(start_api: Callable[..., str]) -> None:
    """The service can add routes (GET /) and replace a built-in one (/healthz)."""

    async def index(request: Request) -> Response:
        return Response(200, b"<h1>s3forward</h1>", b"text/html; charset=utf-8")

    async def health(request: Request) -> Response:
        return json_response(200, {"status": "custom"})

    routes = {("GET", "/"): index, ("GET", "/healthz/"): health}
    url = start_api(extra_routes=routes)
    page = requests.get(f"{url}/", timeout=10)
    health_page = requests.get(f"{url}/healthz", timeout=10)
    assert page.status_code == 200
    assert page.text == "<h1>s3forward</h1>"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert health_page.json() == {"status": "custom"}


def test_metrics_count_what_was_sent(
    api_url: str, web_auth: tuple[str, str], ios_auth: tuple[str, str]
) -> None:
    """After N accepted batches and some rejections, /metrics shows exactly those counts."""
    for events in range(1, 6):  # 5 batches, 15 events
        response = requests.post(
            f"{api_url}/v2/events", data=orjson.dumps(batch(events)), auth=web_auth, timeout=10
        )
        assert response.status_code == 202
    bulk = orjson.dumps([batch(2), batch(2), batch(0)])
    assert requests.post(f"{api_url}/v2/bulkevents", data=bulk, auth=ios_auth, timeout=10).ok
    for _ in range(3):
        requests.post(f"{api_url}/v2/events", data=b"[", auth=web_auth, timeout=10)
    requests.post(f"{api_url}/v2/events", data=b"{}", timeout=10)
    requests.get(f"{api_url}/nowhere", timeout=10)

    text = requests.get(f"{api_url}/metrics", timeout=10).text
    received = "s3forward_batches_received_total"
    assert sample(text, received, input="web") == 5
    assert sample(text, received, input="ios") == 3
    assert sample(text, "s3forward_events_received_total", input="web") == 15
    assert sample(text, "s3forward_events_received_total", input="ios") == 4
    rejected = "s3forward_requests_rejected_total"
    assert sample(text, rejected, input="web", reason="bad_request") == 3
    assert sample(text, rejected, input="-", reason="unauthorized") == 1
    assert sample(text, rejected, input="-", reason="not_found") == 1
    assert sample(text, "s3forward_ingest_seconds_count", endpoint="events") == 5
    assert sample(text, "s3forward_ingest_seconds_count", endpoint="bulkevents") == 1


def test_duplicates_reported_by_the_intake_are_counted(
    start_api: Callable[..., str], intake: RecordingIntake, metrics: Metrics, web_auth: Any
) -> None:
    """Batches the intake reports as duplicates are counted, and still answered 202."""
    url = start_api()
    intake.duplicates = 2
    body = orjson.dumps([batch(1), batch(1), batch(1)])
    assert requests.post(f"{url}/v2/bulkevents", data=body, auth=web_auth, timeout=10).ok
    text = metrics.render().decode()
    assert sample(text, "s3forward_batches_deduplicated_total", input="web") == 2
    assert sample(text, "s3forward_batches_received_total", input="web") == 3


def test_every_metric_is_defined_with_its_prefix() -> None:
    """All metrics the other parts increment exist up front, all named s3forward_*."""
    metrics = Metrics()
    metrics.spool_files.labels("sealed").set(3)
    metrics.connection_healthy.labels("main").set(1)
    names = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
    expected = {
        "s3forward_batches_received",
        "s3forward_events_received",
        "s3forward_requests_rejected",
        "s3forward_batches_deduplicated",
        "s3forward_events_filtered",
        "s3forward_windows_open",
        "s3forward_files_sealed",
        "s3forward_files_delivered",
        "s3forward_file_uploads_retried",
        "s3forward_file_uploads_failed",
        "s3forward_bytes_sealed",
        "s3forward_bytes_delivered",
        "s3forward_spool_bytes",
        "s3forward_spool_files",
        "s3forward_oldest_undelivered_age_seconds",
        "s3forward_upload_seconds",
        "s3forward_ingest_seconds",
        "s3forward_connection_healthy",
    }
    assert expected <= names
    assert all(name.startswith("s3forward_") for name in names)


def test_two_metrics_objects_do_not_share_counts() -> None:
    """Each Metrics has its own registry, so two services never add into each other."""
    first, second = Metrics(), Metrics()
    first.batches_received_total.labels("web").inc(4)
    text = second.render().decode()
    assert sample(text, "s3forward_batches_received_total", input="web") is None
