"""Hostile and broken clients against the running service, over raw sockets on 127.0.0.1.

Each test starts ``s3forward serve`` (a subprocess, as users run it) with small limits under
``[server]`` and checks the documented outcome: 431 for a huge head, 408 and a close for a slow
head, a close for an idle keep-alive connection, 503 above the connection cap, 400 naming the
path for deep nesting, and an answer for a client that half-closes after its request.
"""

from __future__ import annotations

import base64
import http.client
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from servicekit import API_KEY, API_SECRET, ServiceProcess, bucket_lines, wait_for

AUTH = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
MIB = 1024 * 1024


def batch(seq: int, **extra: Any) -> dict[str, Any]:
    return {
        "source_request_id": f"front-door-{seq}",
        "environment": "production",
        "mpid": 1000 + seq % 7,
        "device_info": {"android_uuid": f"device-{seq % 7}"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "tick",
                    "custom_event_type": "other",
                    "event_id": seq,
                    "timestamp_unixtime_ms": 1_700_000_000_000 + seq,
                },
            }
        ],
        **extra,
    }


def connect(service: ServiceProcess, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=timeout)


def request(body: bytes, *, path: str = "/v2/events", pad: int = 0) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: {AUTH}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if pad:
        head.append("X-Pad: " + "p" * pad)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket) -> tuple[int, http.client.HTTPResponse, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response, response.read()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed: EOF (or a reset) instead of data."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def held_connections(service: ServiceProcess, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections, each proven accepted (and counted) by one 202."""
    held = []
    for seq in range(count):
        sock = connect(service)
        held.append(sock)
        sock.sendall(request(orjson.dumps(batch(1000 + seq))))
        assert read_answer(sock)[0] == 202
    return held


def proc_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


# ------------------------------------------------------------------------------ head size


def test_a_100_mb_header_is_refused_with_431_within_a_second_and_memory_stays_bounded(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """The service answers 431 once the head passes max_header_bytes, without buffering it."""
    service = start_service()
    assert service.process is not None
    pid = service.process.pid
    rss_before = proc_kib(pid, "VmRSS")
    sock = connect(service)
    chunk = b"a" * MIB

    def send_huge_header() -> None:
        try:
            sock.sendall(b"POST /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            for _ in range(100):
                sock.sendall(chunk)
        except OSError:
            pass  # the server closed the connection: expected

    sender = threading.Thread(target=send_huge_header, daemon=True)
    started = time.monotonic()
    sender.start()
    status, _, body = read_answer(sock)
    elapsed = time.monotonic() - started
    assert status == 431
    assert orjson.loads(body)["errors"][0]["code"] == "REQUEST_HEADER_FIELDS_TOO_LARGE"
    assert elapsed < 1.0, f"the 431 took {elapsed:.2f} s"
    sender.join(30)
    assert not sender.is_alive(), "the server never closed the connection"
    sock.close()
    grown_mib = (proc_kib(pid, "VmHWM") - max(rss_before, 0)) / 1024
    assert grown_mib < 30, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert service.post("/v2/events", batch(1))[0] == 202


def test_a_head_within_the_limit_followed_by_its_body_in_one_write_is_accepted(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """Head and a 100 KB body arriving together are split correctly at the head limit."""
    service = start_service(server='max_header_bytes = "4KiB"')
    body = orjson.dumps(batch(2, padding="x" * 100_000))
    with connect(service) as sock:
        sock.sendall(request(body, pad=3000))
        status, _, _ = read_answer(sock)
    assert status == 202


def test_a_head_just_over_the_limit_gets_431(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """One header line that takes the head past max_header_bytes is refused with 431."""
    service = start_service(server='max_header_bytes = "4KiB"')
    with connect(service) as sock:
        sock.sendall(request(orjson.dumps(batch(3)), pad=4200))
        status, response, body = read_answer(sock)
    assert status == 431
    assert response.getheader("connection") == "close"
    assert b"over 4096 bytes" in body


def test_pipelined_requests_in_one_write_are_each_answered(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """Three requests sent back to back in one write get three 202s, in order."""
    service = start_service(server='max_header_bytes = "4KiB"')
    requests = b"".join(request(orjson.dumps(batch(20 + n)), pad=2000) for n in range(3))
    with connect(service) as sock:
        sock.sendall(requests)
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"{}"):
            assert time.monotonic() < deadline, received
            chunk = sock.recv(65536)
            assert chunk, f"closed early after {received!r}"
            received += chunk
    assert received.count(b"HTTP/1.1 ") == received.count(b"HTTP/1.1 202 ") == 3


def test_bytes_that_are_not_http_get_a_json_400_naming_the_parser_error(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """A malformed request line is answered like every other bad request, then closed."""
    service = start_service()
    with connect(service) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, response, body = read_answer(sock)
        assert status == 400
        assert response.getheader("connection") == "close"
        error = orjson.loads(body)["errors"][0]
        assert error["code"] == "BAD_REQUEST"
        assert error["message"].startswith("the request is not valid HTTP/1.1: ")
        assert closed_by_server(sock)


# ------------------------------------------------------------------------------ timeouts


def test_a_slowloris_head_gets_408_and_is_closed_after_header_timeout(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """A client trickling its headers is cut off header_timeout after its first byte."""
    service = start_service(server='header_timeout = "1s"')
    sock = connect(service)
    stop = threading.Event()

    def trickle() -> None:
        try:
            sock.sendall(b"POST /v2/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            for _ in range(100):  # at most 20 s
                if stop.wait(0.2):
                    return
                sock.sendall(b"s")
        except OSError:
            pass

    sender = threading.Thread(target=trickle, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        status, _, body = read_answer(sock)
        elapsed = time.monotonic() - started
        assert status == 408
        assert b"request head was not received within 1 seconds" in body
        assert 0.9 <= elapsed < 10, f"closed after {elapsed:.2f} s"
        assert closed_by_server(sock)
    finally:
        stop.set()
        sender.join(10)
        sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_header_timeout(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """A silent new connection gets 408 and EOF once header_timeout passes."""
    service = start_service(server='header_timeout = "1s"')
    with connect(service) as sock:
        started = time.monotonic()
        status, _, _ = read_answer(sock)
        assert status == 408
        assert 0.9 <= time.monotonic() - started < 10
        assert closed_by_server(sock)


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """After its answer, a connection left idle is closed by keep_alive_timeout."""
    service = start_service(server='keep_alive_timeout = "1s"\nheader_timeout = "30s"')
    with connect(service) as sock:
        sock.sendall(request(orjson.dumps(batch(4))))
        status, response, _ = read_answer(sock)
        assert status == 202
        assert response.getheader("connection") != "close"
        answered = time.monotonic()
        assert closed_by_server(sock)
        # Well under uvicorn's own default of 5 s, so the setting is what closed it.
        assert 0.9 <= time.monotonic() - answered < 4


# ------------------------------------------------------------------------------ connection cap
# The cap is per HTTP process: with [server] workers > 1 each worker counts its own connections
# and the kernel decides which worker gets the next one, so these tests pin one process
# (``workers = 1``) even when the suite runs with ``pytest --workers N``.


def test_the_connection_cap_refuses_with_503_and_valid_clients_get_202_once_below_it(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """At max_connections, new clients get a clean 503 + Retry-After; after some close, 202."""
    service = start_service(server='workers = 1\nmax_connections = 8\nkeep_alive_timeout = "60s"')
    idle = held_connections(service, 8)
    try:
        # Every refusal is an HTTP answer (not a reset), and the refusals leave no trace.
        for seq in range(20):
            status, headers, body = service.post("/v2/events", batch(100 + seq))
            assert status == 503
            assert headers["retry-after"] == "1"
            assert body["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
        for sock in idle[:4]:
            sock.close()
        wait_for(
            lambda: service.post("/v2/events", batch(5))[0] == 202,
            10,
            "a 202 once below the connection cap",
            step=0.1,
        )
        # The connections that stayed open were never disturbed.
        idle[4].sendall(request(orjson.dumps(batch(6))))
        assert read_answer(idle[4])[0] == 202
    finally:
        for sock in idle:
            sock.close()


def test_a_flood_of_connections_over_the_cap_does_not_hold_open_files(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """600 connections at once over a cap of 4, all kept open by the client: the service closes
    its side of every refused one within the linger time (its open files drop back to the 4
    it serves), keeps running, and answers 202 once below the cap."""
    service = start_service(server='workers = 1\nmax_connections = 4\nkeep_alive_timeout = "60s"')
    assert service.process is not None
    fd_dir = f"/proc/{service.process.pid}/fd"
    files_before = len(os.listdir(fd_dir))
    held = held_connections(service, 4)
    flood: list[socket.socket] = []
    try:
        flood.extend(connect(service) for _ in range(600))
        wait_for(
            lambda: len(os.listdir(fd_dir)) <= files_before + 4 + 5,
            15,
            "the refused connections' files closed by the service",
            step=0.1,
        )
        assert service.alive()
        for sock in held:
            sock.close()
        wait_for(
            lambda: service.post("/v2/events", batch(14))[0] == 202,
            10,
            "a 202 once the flood is over",
            step=0.1,
        )
    finally:
        for sock in held + flood:
            sock.close()


# ------------------------------------------------------------------------------ nesting


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def with_nested(document: Any, levels: int) -> bytes:
    """``document`` as JSON with its ``"@nested"`` string replaced by ``levels`` of arrays
    (orjson cannot write more than 254 levels itself)."""
    deep = b"[" * levels + b"1" + b"]" * levels
    return orjson.dumps(document).replace(b'"@nested"', deep)


def test_nesting_at_the_depth_limit_is_accepted(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """A batch exactly max_json_depth (64) levels deep is stored."""
    service = start_service()
    assert service.post("/v2/events", batch(7, x=nested(63)))[0] == 202


def test_nesting_past_the_limit_gets_400_naming_the_path_never_500(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """65, 253, 254, 300 and 1,001 levels all get 400 with the path of the first level too deep."""
    service = start_service()
    path = "batch.x" + "[0]" * 63
    for levels in (64, 252, 253, 299, 1000):
        raw = with_nested(batch(8, x="@nested"), levels)
        status, _, body = service.post("/v2/events", None, raw=raw)
        assert status == 400, levels
        message = body["errors"][0]["message"]
        assert message.startswith(f"{path}: is nested more than 64 levels deep"), message
    raw = with_nested([batch(9), batch(10, x="@nested")], 300)
    status, _, body = service.post("/v2/bulkevents", None, raw=raw)
    assert status == 400
    assert body["errors"][0]["message"].startswith("batch[1].x" + "[0]" * 63 + ": is nested")


def test_nesting_past_the_json_parser_limit_gets_400(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """More than 1,024 levels stop the JSON parser itself: 400 naming the body and column."""
    service = start_service()
    raw = b'{"events": [], "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    status, _, body = service.post("/v2/events", None, raw=raw)
    assert status == 400
    assert "body: is not valid JSON: depth limit exceeded" in body["errors"][0]["message"]


# ------------------------------------------------------------------------------ half-close


def test_a_client_that_half_closes_after_its_request_still_gets_its_answer(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """shutdown(SHUT_WR) after a whole request: 202, then the server closes; the batch lands."""
    service = start_service()
    with connect(service) as sock:
        sock.sendall(request(orjson.dumps(batch(11))))
        sock.shutdown(socket.SHUT_WR)
        status, response, _ = read_answer(sock)
        assert status == 202
        assert response.getheader("connection") == "close"
        assert closed_by_server(sock)
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[1]) == 1, 20, "the batch in the bucket")


def test_a_half_close_in_the_middle_of_the_body_closes_without_an_answer(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """An incomplete request cannot be answered: the server closes, nothing is stored."""
    service = start_service()
    body = orjson.dumps(batch(12))
    with connect(service) as sock:
        sock.sendall(request(body)[: -len(body) // 2])
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_server(sock)
    status, metrics = service.get("/metrics")
    assert status == 200
    assert b's3forward_batches_received_total{input="app"} 1.0' not in metrics


# ------------------------------------------------------------------------------ open files


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= 1_000_256,
    reason="the hard open-files limit here is high enough for a million connections",
)
def test_the_service_warns_at_start_when_the_open_files_limit_is_too_low(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """max_connections above what RLIMIT_NOFILE allows is logged as a warning at start."""
    service = start_service(server="max_connections = 1000000")
    wait_for(lambda: "open-files limit too low" in service.log(), 10, "the warning")
    assert "server.max_connections = 1000000 needs about 1000256" in service.log()
    assert service.post("/v2/events", batch(13))[0] == 202
