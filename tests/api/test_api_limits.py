"""Body limits and timeouts, driven over raw sockets to control exactly what the client sends."""

from __future__ import annotations

import base64
import http.client
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson
import requests

if TYPE_CHECKING:
    from conftest import RecordingIntake  # tests/api/conftest.py

LIMIT = 4096
BATCH = orjson.dumps({"environment": "development", "mp_deviceid": "d", "events": []})


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    return socket.create_connection((parts.hostname, parts.port or 80), timeout=5)


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


def head(path: str, auth: str | None, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if auth:
        lines.append(f"Authorization: {auth}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[http.client.HTTPResponse, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response, response.read()


def test_declared_length_over_limit_gets_413_before_the_body_is_sent(
    start_api: Callable[..., str], intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A Content-Length over max_request_bytes is refused at once and the connection closed."""
    url = start_api(max_request_bytes=LIMIT)
    with connect(url) as sock:
        sock.sendall(head("/v2/events", basic(*web_auth), Content_Length=str(LIMIT + 1)))
        response, body = read_response(sock)
    assert response.status == 413
    assert response.getheader("connection") == "close"
    assert orjson.loads(body)["errors"][0]["code"] == "PAYLOAD_TOO_LARGE"
    assert intake.submitted == []


def test_chunked_body_over_limit_gets_413(
    start_api: Callable[..., str], intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A chunked body without a length is cut off with 413 once it passes the limit."""
    url = start_api(max_request_bytes=LIMIT)
    chunk = b" " * 1000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5))
    with connect(url) as sock:
        sock.sendall(head("/v2/events", basic(*web_auth), Transfer_Encoding="chunked") + chunks)
        response, body = read_response(sock)
    assert response.status == 413
    assert b"over the limit of 4096 bytes" in body
    assert intake.submitted == []


def test_body_exactly_at_the_limit_is_read(
    start_api: Callable[..., str], intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A body of exactly max_request_bytes is accepted (the limit is inclusive)."""
    url = start_api(max_request_bytes=LIMIT)
    body = BATCH + b" " * (LIMIT - len(BATCH))
    response = requests.post(f"{url}/v2/events", data=body, auth=web_auth, timeout=10)
    assert response.status_code == 202
    assert len(intake.submitted) == 1


def test_credentials_are_checked_before_a_huge_body(
    start_api: Callable[..., str], intake: RecordingIntake
) -> None:
    """Without credentials a request announcing a huge body gets 401 without sending it."""
    url = start_api(max_request_bytes=LIMIT)
    with connect(url) as sock:
        sock.sendall(head("/v2/events", None, Content_Length=str(10**9)))
        response, body = read_response(sock)
    assert response.status == 401
    assert response.getheader("connection") == "close"
    assert orjson.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert intake.submitted == []


def test_stalled_body_gets_408_and_the_server_keeps_serving(
    start_api: Callable[..., str], intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A client that stops sending its body is answered 408 within body_timeout."""
    url = start_api(body_timeout=0.5)
    with connect(url) as sock:
        sock.sendall(head("/v2/events", basic(*web_auth), Content_Length=str(len(BATCH))))
        sock.sendall(BATCH[:10])
        started = time.monotonic()
        response, body = read_response(sock)
        waited = time.monotonic() - started
    assert response.status == 408
    assert orjson.loads(body)["errors"][0]["code"] == "REQUEST_TIMEOUT"
    assert response.getheader("connection") == "close"
    assert 0.4 <= waited < 3.0
    ok = requests.post(f"{url}/v2/events", data=BATCH, auth=web_auth, timeout=10)
    assert ok.status_code == 202
    assert len(intake.submitted) == 1
