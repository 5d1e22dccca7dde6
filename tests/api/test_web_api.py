"""The Web SDK's endpoints over real sockets (uvicorn on 127.0.0.1), with a recording intake.

Covers both URL layouts and a path prefix, key-only auth, CORS on every answer (preflight,
errors included), identity answers, answer codes chosen for the SDK's retry rules, rate limits
with Retry-After, quotas, size limits, alias hand-off, the static config and the refusal metrics.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from s3forward.api.app import IngestApp
from s3forward.api.identity import MpidIssuer
from s3forward.api.server import make_uvicorn_server
from s3forward.config import (
    Config,
    InputSettings,
    Secret,
    ServerSettings,
    SpoolSettings,
    WebInputSettings,
)
from s3forward.errors import SpoolFullError
from s3forward.metrics import Metrics

KEY = "site-key"
ORIGIN = "http://shop.example.test:8000"
OTHER_ORIGIN = "http://evil.example.test"
IDENTITY_KEY = "0123456789abcdef-identity-key"
DAS = "220d020f-1bea-4882-5e9f-07395ac54588"


def web_config(server: dict[str, Any] | None = None, **web: Any) -> Config:
    settings = WebInputSettings(allowed_origins=(ORIGIN,), identity_key=Secret(IDENTITY_KEY), **web)
    return Config(
        inputs={
            "site": InputSettings("site", KEY, Secret(""), "Site", web=settings),
            "server": InputSettings("server", "srv-key", Secret("srv-secret"), "Srv"),
        },
        connections={},
        server=ServerSettings(**(server or {})),
        spool=SpoolSettings(retry_after=7),
    )


class Client:
    """One HTTP/1.1 request per call to a base URL; returns (status, headers, body)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        origin: str | None = ORIGIN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            sent = dict(headers or {})
            if origin is not None:
                sent["Origin"] = origin
            data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            payload = response.read()
            answer: Any = payload
            if payload and response.getheader("content-type", "").startswith("application/json"):
                answer = orjson.loads(payload)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
        finally:
            conn.close()

    def upload(self, batch: Any, path: str = f"/v3/JS/{KEY}/events", **kw: Any) -> Any:
        kw.setdefault("headers", {"Content-Type": "text/plain;charset=UTF-8"})
        return self.request("POST", path, batch, **kw)

    def identity(self, call: str, known: dict[str, Any], path: str = "/v1", **kw: Any) -> Any:
        headers = {"Content-Type": "application/json", "x-mp-key": KEY}
        headers.update(kw.pop("headers", {}))
        body = {"client_sdk": {"platform": "web"}, "known_identities": known}
        return self.request("POST", f"{path}/{call}", body, headers=headers, **kw)


def sdk_batch(n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "source_request_id": f"req-{n}",
        "mpid": "-7198921477532863498",
        "mp_deviceid": DAS,
        "environment": "production",
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": f"e{n}", "custom_event_type": "navigation"},
            }
        ],
        **extra,
    }


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` on uvicorn in a thread on a free loopback port (as tests/api/conftest.py does)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_uvicorn_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def start_web(intake: Any) -> Iterator[Callable[..., tuple[Client, Any, Metrics, list[Any]]]]:
    """A factory ``(server settings, **web input settings) -> (client, intake, metrics,
    aliases)``; ``intake`` is tests/api/conftest.py's recording double."""
    with ExitStack() as stack:

        def start(
            server: dict[str, Any] | None = None, **web: Any
        ) -> tuple[Client, Any, Metrics, list[Any]]:
            metrics, aliases = Metrics(), []

            async def on_alias(input_name: str, alias: dict[str, Any]) -> None:
                aliases.append((input_name, alias))

            app = IngestApp(web_config(server, **web), intake, metrics, on_alias=on_alias)
            return Client(stack.enter_context(serve(app))), intake, metrics, aliases

        yield start


def rejected(metrics: Metrics, reason: str, input_name: str = "site") -> float:
    value = metrics.registry.get_sample_value(
        "s3forward_requests_rejected_total", {"input": input_name, "reason": reason}
    )
    return value or 0.0


# ------------------------------------------------------------------------------ uploads


@pytest.mark.parametrize("path", [f"/v3/JS/{KEY}/events", f"/webevents/v3/JS/{KEY}/events"])
def test_text_plain_upload_reaches_the_intake_with_cors_echo(start_web: Any, path: str) -> None:
    client, intake, metrics, _ = start_web()
    status, headers, body = client.upload(sdk_batch(), path=path)
    assert (status, body) == (202, {})
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["vary"] == "Origin"
    assert intake.submitted[0].input_name == "site"
    assert intake.batches[0]["events"][0]["data"]["event_name"] == "e0"
    assert (
        metrics.registry.get_sample_value("s3forward_batches_received_total", {"input": "site"})
        == 1
    )


def test_beacon_style_upload_without_content_type_is_accepted(start_web: Any) -> None:
    client, intake, _, _ = start_web()
    status, _, _ = client.upload(sdk_batch(), headers={})
    assert status == 202
    assert len(intake.batches) == 1


def test_path_prefix_serves_the_endpoints_only_under_it(start_web: Any) -> None:
    client, intake, _, _ = start_web(server={"web_path_prefix": "/mp"})
    assert client.upload(sdk_batch(), path=f"/mp/webevents/v3/JS/{KEY}/events")[0] == 202
    assert (
        client.identity("identify", {"device_application_stamp": DAS}, "/mp/identity/v1")[0] == 200
    )
    assert client.upload(sdk_batch(1))[0] == 404
    assert len(intake.batches) == 1


def test_promotion_action_numbers_are_normalised(start_web: Any) -> None:
    client, intake, _, _ = start_web()
    batch = sdk_batch()
    batch["events"] = [
        {"event_type": "commerce_event", "data": {"promotion_action": {"action": 1}}},
        {"event_type": "commerce_event", "data": {"promotion_action": {"action": 2}}},
    ]
    assert client.upload(batch)[0] == 202
    actions = [e["data"]["promotion_action"]["action"] for e in intake.batches[0]["events"]]
    assert actions == ["view", "click"]


def test_a_batch_that_can_never_be_accepted_is_422_not_400(start_web: Any) -> None:
    """The SDK retries a 400 forever and queues the page behind it; it drops a 422."""
    client, intake, metrics, _ = start_web()
    batch = sdk_batch()
    batch["events"][0]["event_type"] = "no_such_type"
    status, headers, body = client.upload(batch)
    assert status == 422
    assert headers["access-control-allow-origin"] == ORIGIN
    assert body["errors"][0]["code"] == "UNPROCESSABLE_ENTITY"
    assert "batch.events[0].event_type" in body["errors"][0]["message"]
    assert client.upload(raw=b"{not json", batch=None)[0] == 422
    assert intake.batches == []
    assert rejected(metrics, "unprocessable") == 2


def test_an_upload_over_max_batch_bytes_is_413_with_cors(start_web: Any) -> None:
    client, intake, metrics, _ = start_web(max_batch_bytes=2048)
    batch = sdk_batch(attrs={"pad": "x" * 4000})
    status, headers, _ = client.upload(batch)
    assert status == 413
    assert headers["access-control-allow-origin"] == ORIGIN
    assert intake.batches == []
    assert rejected(metrics, "too_large") == 1


def test_require_issued_mpid_refuses_forged_mpids_with_422(start_web: Any) -> None:
    client, intake, metrics, _ = start_web(require_issued_mpid=True)
    issuer = MpidIssuer(IDENTITY_KEY.encode())
    _, _, identified = client.identity("identify", {"device_application_stamp": DAS})
    anonymous = sdk_batch(1, mpid=identified["mpid"])
    assert client.upload(anonymous)[0] == 202
    user = issuer.for_identity("customerid", "c-9")
    logged_in = sdk_batch(2, mpid=str(user), user_identities={"customer_id": "c-9"})
    assert client.upload(logged_in)[0] == 202
    status, _, body = client.upload(sdk_batch(3, mpid="12345"))
    assert status == 422
    assert "require_issued_mpid" in body["errors"][0]["message"]
    claimed = sdk_batch(4, mpid=str(user), user_identities={"customer_id": "someone-else"})
    assert client.upload(claimed)[0] == 422
    assert len(intake.batches) == 2
    assert rejected(metrics, "unprocessable") == 2


def test_a_full_spool_answers_429_which_the_sdk_retries(start_web: Any) -> None:
    client, intake, _, _ = start_web()
    intake.error = SpoolFullError("full", retry_after=9)
    status, headers, _ = client.upload(sdk_batch())
    assert status == 429
    assert headers["retry-after"] == "9"
    assert headers["access-control-allow-origin"] == ORIGIN


def test_unknown_key_is_403_and_server_keys_do_not_work_here(start_web: Any) -> None:
    client, intake, metrics, _ = start_web()
    status, headers, _ = client.upload(sdk_batch(), path="/v3/JS/nope/events")
    assert status == 403
    # Readable by a page on an allowed origin, so that the SDK drops the batch.
    assert headers["access-control-allow-origin"] == ORIGIN
    assert (
        "access-control-allow-origin"
        not in client.upload(sdk_batch(), path="/v3/JS/nope/events", origin=OTHER_ORIGIN)[1]
    )
    assert client.upload(sdk_batch(), path="/v3/JS/srv-key/events")[0] == 403
    assert intake.batches == []
    assert rejected(metrics, "forbidden", "-") == 3


def test_a_web_key_never_authenticates_on_the_events_api(start_web: Any) -> None:
    client, intake, _, _ = start_web()
    import base64

    token = base64.b64encode(f"{KEY}:".encode()).decode()
    status, _, _ = client.request(
        "POST", "/v2/events", sdk_batch(), headers={"Authorization": f"Basic {token}"}
    )
    assert status == 403
    assert intake.batches == []


# ------------------------------------------------------------------------------ origins / CORS


def test_origin_outside_the_allow_list_is_refused_without_cors(start_web: Any) -> None:
    client, intake, metrics, _ = start_web()
    status, headers, _ = client.upload(sdk_batch(), origin=OTHER_ORIGIN)
    assert status == 403
    assert "access-control-allow-origin" not in headers
    assert headers["vary"] == "Origin"
    assert client.upload(sdk_batch(), origin=None)[0] == 403
    assert intake.batches == []
    assert rejected(metrics, "origin_not_allowed") == 2


@pytest.mark.parametrize(
    "path", ["/v1/identify", "/identity/v1/login", f"/v1/identity/{KEY}/Alias"]
)
def test_preflight_allows_content_type_and_x_mp_key(start_web: Any, path: str) -> None:
    client, _, _, _ = start_web()
    status, headers, _ = client.request(
        "OPTIONS",
        path,
        headers={
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-mp-key",
        },
    )
    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "x-mp-key" in headers["access-control-allow-headers"]
    assert "content-type" in headers["access-control-allow-headers"]
    assert "POST" in headers["access-control-allow-methods"]
    assert int(headers["access-control-max-age"]) > 0
    assert headers["vary"] == "Origin"


def test_preflight_from_another_origin_is_refused(start_web: Any) -> None:
    client, _, _, _ = start_web()
    status, headers, _ = client.request("OPTIONS", "/v1/identify", origin=OTHER_ORIGIN)
    assert status == 403
    assert "access-control-allow-origin" not in headers


# ------------------------------------------------------------------------------ identity


def test_identify_answers_the_anonymous_mpid_of_the_device(start_web: Any) -> None:
    client, _, _, _ = start_web()
    status, headers, body = client.identity("identify", {"device_application_stamp": DAS})
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    expected = MpidIssuer(IDENTITY_KEY.encode()).for_device(DAS)
    assert body == {
        "context": None,
        "mpid": str(expected),
        "is_logged_in": False,
        "matched_identities": {},
        "is_ephemeral": False,
    }


def test_login_gives_the_same_mpid_on_two_devices_and_logout_the_device_one(
    start_web: Any,
) -> None:
    client, _, _, _ = start_web()
    known = {"customerid": "cust-123", "email": "a@example.com"}
    _, _, first = client.identity("login", {**known, "device_application_stamp": DAS})
    _, _, second = client.identity("login", {**known, "device_application_stamp": "other"})
    assert first["mpid"] == second["mpid"]
    assert first["is_logged_in"] is True
    assert first["matched_identities"] == known
    _, _, anonymous = client.identity("logout", {"device_application_stamp": DAS})
    _, _, identified = client.identity("identify", {"device_application_stamp": DAS})
    assert anonymous["mpid"] == identified["mpid"] != first["mpid"]


def test_identity_needs_a_web_key_and_a_known_identity(start_web: Any) -> None:
    client, _, _, _ = start_web()
    status, _, _ = client.identity(
        "identify", {"device_application_stamp": DAS}, headers={"x-mp-key": "nope"}
    )
    assert status == 403
    status, headers, body = client.identity("identify", {})
    assert status == 400
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "device_application_stamp" in body["errors"][0]["message"]
    status, _, _ = client.request("POST", "/v1/identify", raw=b"[", headers={"x-mp-key": KEY})
    assert status == 400


def test_modify_is_acknowledged_with_the_same_mpid(start_web: Any) -> None:
    client, _, _, _ = start_web()
    body = {"identity_changes": [{"identity_type": "email", "old_value": None, "new_value": "x"}]}
    status, headers, answer = client.request(
        "POST", "/identity/v1/-42/modify", body, headers={"x-mp-key": KEY}
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert answer == {"change_results": [{"identity_type": "email", "modified_mpid": "-42"}]}


# ------------------------------------------------------------------------------ alias, config


@pytest.mark.parametrize(
    "path", [f"/v1/identity/{KEY}/Alias", f"/webevents/v1/identity/{KEY}/Alias"]
)
def test_alias_is_answered_202_and_handed_to_the_pipeline(start_web: Any, path: str) -> None:
    """The alias request's own fields reach the pipeline (not the public key, nor anything a
    caller adds); a malformed one is 422, which the SDK drops instead of retrying forever."""
    client, intake, _, aliases = start_web()
    alias = {
        "request_id": "r1",
        "request_type": "alias",
        "environment": "production",
        "api_key": KEY,
        "extra": "x" * 100,
        "data": {"destination_mpid": "5", "source_mpid": "-6", "scope": "device", "evil": 1},
    }
    status, headers, body = client.request(
        "POST", path, alias, headers={"Content-Type": "application/json"}
    )
    assert (status, body) == (202, {})
    assert headers["access-control-allow-origin"] == ORIGIN
    assert aliases == [
        (
            "site",
            {
                "request_type": "alias",
                "request_id": "r1",
                "environment": "production",
                "data": {"source_mpid": "-6", "destination_mpid": "5", "scope": "device"},
            },
        )
    ]
    assert intake.batches == []
    status, _, body = client.request("POST", path, {"data": {"source_mpid": "x"}})
    assert status == 422
    assert len(aliases) == 1


def test_a_web_alias_call_is_stored_like_an_events_api_alias_request(intake: Any) -> None:
    """Without a test hook the app hands the Web SDK's alias to the intake, validated as
    ``POST /v1/identity/alias`` validates (so connections with send_alias_requests write it)."""
    app = IngestApp(web_config(None), intake, Metrics())
    with serve(app) as url:
        client = Client(url)
        alias = {
            "request_id": "r1",
            "request_type": "alias",
            "environment": "production",
            "api_key": KEY,
            "data": {"destination_mpid": "5", "source_mpid": "-6", "scope": "device"},
        }
        status, _, body = client.request(
            "POST", f"/v1/identity/{KEY}/Alias", alias, headers={"Content-Type": "application/json"}
        )
        assert (status, body) == (202, {})
        (submission,) = intake.submitted
        assert submission.input_name == "site"
        (stored,) = submission.batches
        assert stored["request_type"] == "alias"
        assert stored["data"]["destination_mpid"] in (5, "5")


def test_static_config_serves_the_configured_flags(start_web: Any) -> None:
    client, _, _, _ = start_web(sdk_flags={"eventBatchingIntervalMillis": "5000"})
    for path in (f"/JS/v2/{KEY}/config?env=0", f"/tags/JS/v2/{KEY}/config"):
        status, headers, body = client.request("GET", path)
        assert status == 200
        assert headers["access-control-allow-origin"] == ORIGIN
        assert body == {"flags": {"eventBatchingIntervalMillis": "5000"}}


def test_wrong_method_on_a_web_path_is_405_with_cors(start_web: Any) -> None:
    client, _, _, _ = start_web()
    status, headers, _ = client.request("GET", f"/v3/JS/{KEY}/events")
    assert status == 405
    assert "POST" in headers["allow"]


# ------------------------------------------------------------------------------ limits


def test_per_device_limit_answers_429_with_retry_after(start_web: Any) -> None:
    client, intake, metrics, _ = start_web(per_device_burst=2, per_device_requests_per_minute=6)
    answers = [client.upload(sdk_batch(n)) for n in range(3)]
    assert [a[0] for a in answers] == [202, 202, 429]
    headers = answers[2][1]
    assert 1 <= int(headers["retry-after"]) <= 10
    assert headers["access-control-allow-origin"] == ORIGIN
    assert len(intake.batches) == 2
    other_device = sdk_batch(9, mp_deviceid="another-device")
    assert client.upload(other_device)[0] == 202
    assert rejected(metrics, "rate_limited") == 1


def test_per_ip_limit_counts_every_call_of_one_address(start_web: Any) -> None:
    client, _, metrics, _ = start_web(per_ip_burst=2, per_ip_requests_per_minute=1)
    assert client.identity("identify", {"device_application_stamp": DAS})[0] == 200
    assert client.upload(sdk_batch())[0] == 202
    status, headers, _ = client.upload(sdk_batch(1))
    assert status == 429
    assert int(headers["retry-after"]) >= 30
    assert rejected(metrics, "rate_limited") == 1


def test_client_ip_header_names_the_address_behind_a_proxy(start_web: Any) -> None:
    client, _, _, _ = start_web(
        server={"client_ip_header": "x-forwarded-for"},
        per_ip_burst=1,
        per_ip_requests_per_minute=1,
    )
    for n, address in enumerate(["10.0.0.1", "10.0.0.2"]):
        forwarded = {"X-Forwarded-For": f"1.2.3.4, {address}", "Content-Type": "text/plain"}
        assert client.upload(sdk_batch(n), headers=forwarded)[0] == 202
    assert client.upload(sdk_batch(5), headers={"X-Forwarded-For": "10.0.0.1"})[0] == 429


def test_hourly_quota_answers_429_until_the_next_hour(start_web: Any) -> None:
    client, intake, metrics, _ = start_web(quota_batches_per_hour=2)
    assert [client.upload(sdk_batch(n))[0] for n in range(3)] == [202, 202, 429]
    status, headers, body = client.upload(sdk_batch(4))
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 3600
    assert "quota" in body["errors"][0]["message"]
    assert len(intake.batches) == 2
    assert rejected(metrics, "quota_exceeded") == 2
