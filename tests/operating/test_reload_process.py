"""Reload over a real process (issue 12): SIGHUP and ``s3forward reload`` under load, nothing
lost or duplicated, an invalid config keeps the running one and says why."""

from __future__ import annotations

import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from opskit import OpsService
from servicekit import API_KEY, bucket_lines, wait_for

pytestmark = pytest.mark.slow


def event_batch(name: str) -> dict[str, Any]:
    return {
        "source_request_id": name,
        "environment": "production",
        "device_info": {"android_uuid": f"device-{hash(name) % 5}"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": name, "custom_event_type": "other"},
            }
        ],
    }


class Load:
    """Posts batches one after another from a few threads; remembers every accepted one."""

    def __init__(self, service: OpsService, threads: int = 3) -> None:
        self.service = service
        self.accepted: list[str] = []
        self.refused: list[tuple[int, Any]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set() and n < 5000:
            name = f"w{worker}-{n}-{uuid.uuid4().hex[:6]}"
            status, _, body = self.service.post("/v2/events", event_batch(name), timeout=30)
            with self.lock:
                (
                    self.accepted.append(name)
                    if status == 202
                    else self.refused.append((status, body))
                )
            n += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def names_in(s3: Any, bucket: str) -> list[str]:
    _, lines = bucket_lines(s3, bucket)
    return [e["data"]["event_name"] for line in lines for e in line["events"]]


def reloaded_count(service: OpsService) -> int:
    return service.log().count('"configuration reloaded"')


def test_sighup_reloads_under_load_and_every_accepted_batch_lands_exactly_once(
    ops_service: Callable[..., OpsService], s3_client: Any, bucket: str
) -> None:
    second_bucket = f"mp-forwarding-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=second_bucket)
    service = ops_service()
    original = service.config_path.read_text()
    endpoint = original.split('endpoint_url = "')[1].split('"')[0]
    with Load(service) as load:
        wait_for(lambda: load.count() >= 30, 60, "some accepted batches")
        # 1. rotate the S3 keys, change the window and add a connection.
        rotated = original.replace('access_key_id = "testing"', 'access_key_id = "rotated"')
        rotated = rotated.replace('batch_window = "0.5s"', 'batch_window = "1s"')
        rotated += f"""
[connections.second]
inputs = ["app"]
s3_bucket_name = "{second_bucket}"
endpoint_url = "{endpoint}"
force_path_style = true
access_key_id = "testing"
secret_access_key = "testing"
store_data_in_folders_by_date = "upload_time"
batch_window = "0.5s"
"""
        service.config_path.write_text(rotated)
        service.signal(signal.SIGHUP)
        wait_for(lambda: reloaded_count(service) == 1, 60, "the first reload")
        at_reload = load.count()
        wait_for(lambda: load.count() >= at_reload + 30, 60, "batches after the reload")
        # 2. an invalid config is rejected and the running one stays.
        service.config_path.write_text(rotated.replace("[server]\n", "[server]\nlisten_typo = 1\n"))
        service.signal(signal.SIGHUP)
        wait_for(lambda: "was rejected" in service.log(), 60, "the rejected reload")
        assert service.alive()
        # 3. back to one connection: "second" keeps whatever it has not delivered yet.
        service.config_path.write_text(rotated)
        service.signal(signal.SIGHUP)
        wait_for(lambda: reloaded_count(service) == 2, 60, "the third reload")
        wait_for(lambda: load.count() >= at_reload + 60, 60, "more batches")
    assert load.refused == []
    assert service.metric("s3forward_config_reloads_total", result="applied") == 2
    assert service.metric("s3forward_config_reloads_total", result="rejected") == 1
    assert service.metric("s3forward_config_last_reload_success") == 1
    log = service.log()
    assert "listen_typo" in log and "unknown setting" in log
    expected = sorted(load.accepted)

    def all_landed() -> bool:
        return len(names_in(s3_client, bucket)) >= len(expected)

    wait_for(all_landed, 90, "every accepted batch in the bucket", step=0.5)
    landed = names_in(s3_client, bucket)
    assert sorted(landed) == expected, "lost or duplicated batches"
    second = names_in(s3_client, second_bucket)
    assert second, "the added connection forwarded nothing"
    assert max(Counter(second).values()) == 1
    assert set(second) <= set(expected)
    service.stop()
    assert "Traceback" not in service.log()


def test_reload_command_reports_applied_and_rejected_configs_with_exit_codes(
    ops_service: Callable[..., OpsService],
) -> None:
    service = ops_service()
    original = service.config_path.read_text()
    # A new input (and its key) becomes usable once the reload is applied.
    with_input = (
        original.replace('inputs = ["app"]', 'inputs = ["app", "web"]')
        + '\n[inputs.web]\napi_key = "web-key"\napi_secret = "web-secret"\napp_name = "Web"\n'
    )
    status, _, _ = service.post("/v2/events", event_batch("x"), auth=("web-key", "web-secret"))
    assert status == 403
    service.config_path.write_text(with_input)
    done = service.reload_command()
    assert done.returncode == 0, done.stderr
    assert "reloaded" in done.stderr
    status, _, _ = service.post("/v2/events", event_batch("y"), auth=("web-key", "web-secret"))
    assert status == 202
    # Invalid: exit 2, every problem printed, the running config (with "web") stays.
    service.config_path.write_text(with_input.replace('api_key = "web-key"', "api_key = 42"))
    refused = service.reload_command()
    assert refused.returncode == 2
    assert "rejected" in refused.stderr and "api_key" in refused.stderr
    assert "web-secret" not in refused.stderr + service.log()
    status, _, _ = service.post("/v2/events", event_batch("z"), auth=("web-key", "web-secret"))
    assert status == 202
    assert service.metric("s3forward_config_last_reload_success") == 0


def test_a_rotated_input_secret_applies_to_the_next_request(
    ops_service: Callable[..., OpsService],
) -> None:
    service = ops_service()
    text = service.config_path.read_text().replace(
        'api_secret = "${S3F_TEST_SECRET}"', 'api_secret = "rotated-secret"'
    )
    service.config_path.write_text(text)
    assert service.reload_command().returncode == 0
    assert service.post("/v2/events", event_batch("a"))[0] == 403
    assert service.post("/v2/events", event_batch("b"), auth=(API_KEY, "rotated-secret"))[0] == 202


def test_a_request_in_flight_during_a_reload_is_answered_202(
    ops_service: Callable[..., OpsService],
) -> None:
    """Half a body sent, the config reloaded, the rest sent: the request completes normally."""
    import base64
    import socket

    import orjson

    service = ops_service()
    body = orjson.dumps(event_batch("in-flight"))
    token = base64.b64encode(f"{API_KEY}:test-secret-value".encode()).decode()
    head = (
        f"POST /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        sock.sendall(head + body[:10])
        text = service.config_path.read_text().replace(
            'batch_window = "0.5s"', 'batch_window = "2s"'
        )
        service.config_path.write_text(text)
        assert service.reload_command().returncode == 0
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]


def test_reload_command_fails_plainly_when_no_server_runs(
    ops_service: Callable[..., OpsService],
) -> None:
    service = ops_service(start=False)
    result = service.reload_command()
    assert result.returncode == 1
    assert "admin token" in result.stderr and "Traceback" not in result.stderr


def test_the_admin_endpoint_needs_the_token_and_post(
    ops_service: Callable[..., OpsService],
) -> None:
    import urllib.error
    import urllib.request

    service = ops_service()
    token_file = service.config_path.parent / "spool" / "spool.db.admin-token"
    assert token_file.stat().st_mode & 0o077 == 0, "the token must be private to its user"
    url = f"{service.url}/admin/reload"
    for headers, want in (({}, 401), ({"Authorization": "Bearer wrong"}, 403)):
        request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == want
        else:
            raise AssertionError(f"expected {want}")
    assert service.get("/admin/reload")[0] == 405
    assert service.metric("s3forward_config_reloads_total") == 0
    service.stop()
    assert not token_file.exists(), "the token is removed at stop"
