"""POST /v2/events and /v2/bulkevents over real sockets: answers, errors, what is submitted."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import requests

from s3forward.errors import SpoolFullError, SpoolUnavailableError, StoppingError

if TYPE_CHECKING:
    from conftest import RecordingIntake  # tests/api/conftest.py

BIG_MPID = 9223372036854775807  # int64 max: must not come back as a float


def make_batch(device: str = "dev-1", events: int = 1, **extra: Any) -> dict[str, Any]:
    """A valid batch with ``events`` custom events."""
    return {
        "environment": "development",
        "mpid": BIG_MPID,
        "mp_deviceid": device,
        "user_identities": {"customer_id": "c-1"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": f"click {i}",
                    "custom_event_type": "navigation",
                    "timestamp_unixtime_ms": 1700000000000 + i,
                },
            }
            for i in range(events)
        ],
        **extra,
    }


def post(url: str, body: Any, auth: tuple[str, str] | None, **kwargs: Any) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return requests.post(url, data=data, auth=auth, headers=headers, timeout=10, **kwargs)


def errors_of(response: requests.Response) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = response.json()["errors"]
    return errors


def test_single_batch_is_accepted_and_submitted_intact(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A valid batch gets 202 with a JSON body, and the intake receives it unchanged."""
    batch = make_batch(events=2, unknown_field={"kept": [1, 2.5, None]})
    response = post(f"{api_url}/v2/events", batch, web_auth)
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert len(intake.submitted) == 1
    assert intake.submitted[0].input_name == "web"
    assert intake.submitted[0].batches == [batch]
    assert type(intake.submitted[0].batches[0]["mpid"]) is int


def test_bulk_batches_are_accepted_and_submitted_in_order(
    api_url: str, intake: RecordingIntake, ios_auth: tuple[str, str]
) -> None:
    """A bulk array is submitted as one call, in order, under the input of the credentials."""
    batches = [make_batch(device=f"dev-{i}") for i in range(5)]
    response = post(f"{api_url}/v2/bulkevents", batches, ios_auth)
    assert response.status_code == 202
    assert [(s.input_name, s.batches) for s in intake.submitted] == [("ios", batches)]


@pytest.mark.parametrize("path", ["/v2/events/", "/v2/bulkevents/"])
def test_trailing_slash_is_accepted(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str], path: str
) -> None:
    """Both endpoints also answer with a trailing slash."""
    body: Any = make_batch() if "bulk" not in path else [make_batch()]
    assert post(f"{api_url}{path}", body, web_auth).status_code == 202
    assert len(intake.batches) == 1


def test_missing_credentials_get_401_with_a_challenge(
    api_url: str, intake: RecordingIntake
) -> None:
    """No Authorization header: 401 UNAUTHORIZED with WWW-Authenticate, nothing submitted."""
    response = post(f"{api_url}/v2/events", make_batch(), None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="s3forward"'
    assert errors_of(response)[0]["code"] == "UNAUTHORIZED"
    assert intake.submitted == []


def test_wrong_secret_and_unknown_key_get_the_same_403(
    api_url: str, intake: RecordingIntake
) -> None:
    """A wrong secret and an unknown key are indistinguishable 403s that name neither."""
    wrong_secret = post(f"{api_url}/v2/events", make_batch(), ("key-web", "nope"))
    unknown_key = post(f"{api_url}/v2/events", make_batch(), ("key-nobody", "secret-web"))
    assert wrong_secret.status_code == unknown_key.status_code == 403
    assert errors_of(wrong_secret) == errors_of(unknown_key)
    assert errors_of(wrong_secret)[0]["code"] == "FORBIDDEN"
    for secret_word in ("key-web", "nope", "key-nobody", "secret-web"):
        assert secret_word not in wrong_secret.text + unknown_key.text
    assert intake.submitted == []


def test_malformed_json_gets_400_with_a_precise_message(
    api_url: str, web_auth: tuple[str, str]
) -> None:
    """A body that is not JSON gets 400 BAD_REQUEST saying where the JSON breaks."""
    response = post(f"{api_url}/v2/events", b'{"events": [', web_auth)
    assert response.status_code == 400
    [error] = errors_of(response)
    assert error["code"] == "BAD_REQUEST"
    assert "not valid JSON" in error["message"]
    assert "line 1" in error["message"]


def test_bulk_with_bad_batches_is_rejected_whole(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """One entry per problem, each naming its batch index and field; nothing is submitted."""
    bad_type = make_batch()
    bad_type["events"][0]["event_type"] = "not_a_type"
    batches = [make_batch(), make_batch(), bad_type, make_batch(environment=5)]
    response = post(f"{api_url}/v2/bulkevents", batches, web_auth)
    assert response.status_code == 400
    messages = [e["message"] for e in errors_of(response)]
    assert len(messages) == 2
    assert messages[0].startswith("batch[2].events[0].event_type: ")
    assert messages[1].startswith("batch[3].environment: ")
    assert {e["code"] for e in errors_of(response)} == {"BAD_REQUEST"}
    assert intake.submitted == []


def test_gzip_body_is_accepted(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A gzip body with Content-Encoding: gzip is decompressed and submitted."""
    batches = [make_batch(events=3), make_batch(device="dev-2")]
    body = gzip.compress(orjson.dumps(batches))
    response = post(
        f"{api_url}/v2/bulkevents", body, web_auth, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 202
    assert intake.batches == batches


def test_broken_gzip_gets_400(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A truncated gzip body is a 400 that says the gzip is broken."""
    body = gzip.compress(orjson.dumps(make_batch()))[:-12]
    response = post(f"{api_url}/v2/events", body, web_auth, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in errors_of(response)[0]["message"]
    assert intake.submitted == []


def test_full_spool_gets_429_with_retry_after(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """SpoolFullError becomes 429 with the Retry-After the spool asked for."""
    intake.error = SpoolFullError("spool over its cap", retry_after=11)
    response = post(f"{api_url}/v2/events", make_batch(), web_auth)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "11"
    assert errors_of(response)[0]["code"] == "TOO_MANY_REQUESTS"


@pytest.mark.parametrize(
    "error",
    [SpoolUnavailableError("/data/spool.db: disk full"), StoppingError("shutting down")],
)
def test_unavailable_spool_and_stopping_get_503_with_retry_after(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str], error: Exception
) -> None:
    """A spool that cannot write or a stopping service gives 503 with Retry-After, no internals."""
    intake.error = error
    response = post(f"{api_url}/v2/events", make_batch(), web_auth)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"  # the configured spool.retry_after
    assert "/data/spool.db" not in response.text


def test_unexpected_error_gets_500_and_the_server_keeps_serving(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A bug in the pipeline is a generic 500; the next request is served normally."""
    intake.error = RuntimeError("secret internal detail")
    response = post(f"{api_url}/v2/events", make_batch(), web_auth)
    assert response.status_code == 500
    assert "secret internal detail" not in response.text
    intake.error = None
    assert post(f"{api_url}/v2/events", make_batch(), web_auth).status_code == 202


def test_unknown_path_gets_404(api_url: str, web_auth: tuple[str, str]) -> None:
    """A path that is not routed gets 404 NOT_FOUND as JSON."""
    response = post(f"{api_url}/v2/nothing", make_batch(), web_auth)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert errors_of(response)[0]["code"] == "NOT_FOUND"


def test_wrong_method_gets_405_with_allow(api_url: str, web_auth: tuple[str, str]) -> None:
    """GET on an ingest endpoint gets 405 with an Allow header naming POST."""
    response = requests.get(f"{api_url}/v2/events", auth=web_auth, timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x", "image/png"])
def test_non_json_content_type_gets_415(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str], content_type: str
) -> None:
    """A multipart form or binary Content-Type is refused with 415."""
    response = post(
        f"{api_url}/v2/events", make_batch(), web_auth, headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert intake.submitted == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json; charset=utf-8", "", "application/x-www-form-urlencoded"],
)
def test_lenient_content_types_are_accepted(
    api_url: str, web_auth: tuple[str, str], content_type: str
) -> None:
    """text/plain, JSON with parameters and no Content-Type at all are all accepted."""
    response = post(
        f"{api_url}/v2/events", make_batch(), web_auth, headers={"Content-Type": content_type}
    )
    assert response.status_code == 202


def test_a_sane_request_id_is_echoed_and_others_are_replaced(
    api_url: str, web_auth: tuple[str, str]
) -> None:
    """X-Request-Id is echoed when it is safe, and a fresh unique id is made otherwise."""
    sane = post(f"{api_url}/v2/events", make_batch(), web_auth, headers={"X-Request-Id": "a.b-1"})
    assert sane.headers["x-request-id"] == "a.b-1"
    unsafe = post(
        f"{api_url}/v2/events", make_batch(), web_auth, headers={"X-Request-Id": "x y<script>"}
    )
    absent = post(f"{api_url}/v2/events", make_batch(), None)
    generated = [r.headers["x-request-id"] for r in (unsafe, absent)]
    for request_id in generated:
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", request_id), request_id
    assert generated[0] != generated[1]


def test_received_at_is_the_time_of_the_request(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """The intake gets a wall-clock receive time taken while the request was served."""
    import time

    before = time.time()
    post(f"{api_url}/v2/events", make_batch(), web_auth)
    after = time.time()
    assert before <= intake.submitted[0].received_at <= after


def test_too_many_batches_in_bulk_gets_413(
    start_api: Callable[..., str], intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """More batches than max_batches_per_request is refused with 413 and nothing is stored."""
    url = start_api(max_batches_per_request=3)
    response = post(f"{url}/v2/bulkevents", [make_batch() for _ in range(4)], web_auth)
    assert response.status_code == 413
    assert errors_of(response)[0]["code"] == "PAYLOAD_TOO_LARGE"
    assert intake.submitted == []
