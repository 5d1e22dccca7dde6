"""The status facts: history rates, health in plain words, export paths, page access rules."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.api.app import IngestApp
from s3forward.api.status_page import is_loopback, status_routes
from s3forward.config import Config, ConnectionSettings, InputSettings, Secret, ServerSettings
from s3forward.delivery import Health
from s3forward.metrics import Metrics
from s3forward.status import History, describe_destination, describe_health, export_path, preview


def test_history_turns_counter_samples_into_rates_per_interval() -> None:
    """Each point is the counter change since the previous sample divided by the elapsed time."""
    metrics = Metrics()
    history = History(interval=10.0)
    history.sample(metrics.registry, 1000.0)
    metrics.events_received_total.labels("app").inc(50)
    metrics.files_delivered_total.labels("s3").inc(3)
    metrics.oldest_undelivered_age_seconds.labels("s3").set(42.0)
    history.sample(metrics.registry, 1010.0)
    points = history.points()
    assert len(points) == 1
    assert points[0]["t"] == 1010.0
    assert points[0]["events_per_second"] == 5.0
    assert points[0]["files_delivered"] == 3.0
    assert points[0]["oldest_undelivered_age_seconds"] == 42.0


def test_history_keeps_one_hour_of_samples() -> None:
    """Samples older than the span fall off, so memory stays bounded."""
    metrics = Metrics()
    history = History(interval=10.0, span=3600.0)
    for i in range(1000):
        history.sample(metrics.registry, 1000.0 + 10 * i)
    points = history.points()
    assert len(points) == 360
    assert points[-1]["t"] - points[0]["t"] == 3590.0


def test_health_is_described_in_plain_words() -> None:
    """Failing, retrying and healthy connections each get a state and a readable message."""
    failing = Health(
        healthy=False,
        last_error="bucket b does not exist in us-east-1: create it",
        failing_since=100.0,
        paused_until=400.0,
    )
    state, message = describe_health(failing, now=220.0)
    assert state == "failing"
    assert message == (
        "Failing for 2m: bucket b does not exist in us-east-1: create it. "
        "Data is kept; next try in 3m."
    )
    state, message = describe_health(Health(last_error="S3 answered 503"), now=0.0)
    assert (state, message) == ("retrying", "Retrying after an error: S3 answered 503")
    state, message = describe_health(Health(last_success_at=90.0), now=100.0)
    assert (state, message) == ("healthy", "Delivering; last file delivered 10s ago.")


def test_destination_shows_where_data_goes_but_no_secret() -> None:
    """Access keys are masked to their last four characters and the secret key never shown."""
    settings = ConnectionSettings(
        name="s3",
        inputs=("app",),
        s3_bucket_name="mp-forwarding-x",
        folder_name="events/",
        access_key_id=Secret("AKIAABCDEFGH1234"),
        secret_access_key=Secret("super-secret-value"),
    )
    shown = orjson.dumps(describe_destination(settings)).decode()
    assert "s3://mp-forwarding-x/events/" in shown
    assert "****1234" in shown
    assert "AKIAABCDEFGH" not in shown
    assert "super-secret-value" not in shown


def test_export_paths_mirror_keys_and_refuse_escapes(tmp_path: Path) -> None:
    """A key becomes a path under the directory; keys with '..' or a leading '/' are refused."""
    assert export_path(tmp_path, "a/b/c.txt") == tmp_path / "a" / "b" / "c.txt"
    assert export_path(tmp_path, "a/c.txt", "conn") == tmp_path / "conn" / "a" / "c.txt"
    for bad in ("../x", "a/../../x", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="cannot be written"):
            export_path(tmp_path, bad)


def test_preview_decompresses_gzipped_bodies() -> None:
    """The first lines of a gzipped file are shown as text."""
    import gzip

    body = gzip.compress(b'{"a":1}\n{"a":2}\n{"a":3}\n')
    assert preview(body, "gzip", 2) == ['{"a":1}', '{"a":2}']


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.1.2.3", False), ("::", False)],
)  # fmt: skip
def test_loopback_addresses_are_recognised(host: str, loopback: bool) -> None:
    """Only loopback listen addresses leave the status page open."""
    assert is_loopback(host) is loopback


class _Intake:
    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    def ready(self) -> tuple[bool, str]:
        return True, "ok"


def _call(app: IngestApp, path: str, auth: str | None) -> tuple[int, dict[bytes, bytes], bytes]:
    headers = [(b"host", b"x")]
    if auth is not None:
        headers.append((b"authorization", b"Basic " + base64.b64encode(auth.encode())))
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def _app(host: str, status_page: bool = True) -> IngestApp:
    config = Config(
        inputs={"app": InputSettings("app", "key", Secret("secret"), "App")},
        connections={},
        server=ServerSettings(host=host, status_page=status_page),
    )
    routes = status_routes(config, lambda: {"ok": True})
    return IngestApp(config, _Intake(), Metrics(), extra_routes=routes)  # type: ignore[arg-type]


def test_status_page_needs_input_credentials_off_loopback() -> None:
    """Listening on 0.0.0.0, / and /status.json answer 401 without and 200 with credentials."""
    app = _app("0.0.0.0")
    for path in ("/", "/status.json", "/status.js"):
        status, headers, _ = _call(app, path, None)
        assert status == 401
        assert headers[b"www-authenticate"].startswith(b"Basic")
        assert _call(app, path, "key:wrong")[0] == 403
        assert _call(app, path, "key:secret")[0] == 200
    assert _call(app, "/status.json", "key:secret")[2] == b'{"ok":true}'


def test_status_page_is_open_on_loopback_and_locked_down_by_headers() -> None:
    """On loopback no credentials are needed; the page forbids any request to elsewhere."""
    status, headers, body = _call(_app("127.0.0.1"), "/", None)
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/html")
    assert b"connect-src 'self'" in headers[b"content-security-policy"]
    assert b"http://" not in body
    assert b"https://" not in body


def test_status_page_can_be_turned_off() -> None:
    """With [server] status_page = false, / is not served."""
    assert _call(_app("127.0.0.1", status_page=False), "/", None)[0] == 404
