"""10,000+ malformed bodies against the running service: never a 5xx, valid batches land once.

The malformed bodies are generated from a seeded random source (the same run every time):
every field of two template batches replaced by every wrong type and by literals JSON parsers
trip on (huge numbers, 1e400, lone surrogates, invalid UTF-8), truncations at every cut, random
bytes, random byte mutations, broken gzip, wrong top-level types and deep nesting. Between them,
every 50th request is a valid batch with its own ``source_request_id``; each of those must be in
the bucket exactly once afterwards. A second test puts odd bytes into every request header.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import random
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from servicekit import API_KEY, API_SECRET, ServiceProcess, bucket_lines, wait_for

MALFORMED = 10_000
VALID_EVERY = 50
VALID_IDS = 5_000_000
HOLE = "@@fuzz@@"
WRONG_VALUES: list[bytes] = [
    b"null",
    b"true",
    b"0",
    b"-1",
    b"1.5",
    b'"text"',
    b'""',
    b"[]",
    b"{}",
    b"[1, [2]]",
    b'{"a": {"b": 1}}',
    b"1" * 400,
    b"1e400",
    b"-1e400",
    b"18446744073709551616",
    b"-9223372036854775809",
    b'"\\ud800"',
    b'"x\\udc00y"',
    b'"\\ud800\\u0041"',
    b'"\xff\xfe"',
    b'"\xed\xa0\x80"',
    b'"\xc3"',
    b"[" * 300 + b"]" * 300,
]


def template(event_id: int) -> dict[str, Any]:
    return {
        "source_request_id": "fuzz",
        "environment": "production",
        "mpid": 42,
        "timestamp_unixtime_ms": 1_700_000_000_000,
        "ip": "127.0.0.1",
        "device_info": {"android_uuid": "fuzz-device", "platform": "Android"},
        "application_info": {"application_name": "fuzz"},
        "user_identities": {"customer_id": "c-1", "email": "a@example.invalid"},
        "user_attributes": {"tier": "gold", "score": 3, "tags": ["a", "b"]},
        "consent_state": {"gdpr": {"analytics": {"consented": True}}},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "tap",
                    "custom_event_type": "navigation",
                    "event_id": event_id,
                    "timestamp_unixtime_ms": 1_700_000_000_001,
                    "session_uuid": "s-1",
                    "custom_attributes": {"k": "v", "n": 1},
                },
            },
            {
                "event_type": "screen_view",
                "data": {"screen_name": "home", "event_id": event_id + 1},
            },
            {
                "event_type": "session_end",
                "data": {"session_duration_ms": 1000, "event_id": event_id + 2},
            },
        ],
    }


def holes(value: Any) -> Iterator[tuple[Any, ...]]:
    """Every path (tuple of keys and indexes) inside ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        yield (key,)
        if isinstance(child, dict | list):
            for rest in holes(child):
                yield (key, *rest)


def with_value_at(document: Any, path: tuple[Any, ...], literal: bytes) -> bytes:
    copy = orjson.loads(orjson.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = HOLE
    return orjson.dumps(copy).replace(orjson.dumps(HOLE), literal, 1)


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        match rng.randrange(3):
            case 0:
                data[at] = rng.randrange(256)
            case 1:
                del data[at]
            case _:
                data[at:at] = bytes([rng.randrange(256)])
    return bytes(data)


def malformed_bodies(rng: random.Random) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """``(path, body, extra headers)``, at least MALFORMED of them, deterministic for ``rng``."""
    count = 0
    base = template(9_000_000)
    encoded = orjson.dumps(base)
    for path in holes(base):
        for literal in WRONG_VALUES:
            body = with_value_at(base, path, literal)
            yield "/v2/events", body, {}
            yield "/v2/bulkevents", b"[" + encoded + b"," + body + b"]", {}
            count += 2
    for cut in range(0, len(encoded), 3):
        yield "/v2/events", encoded[:cut], {}
        count += 1
    for top in (b"[]", b"[1]", b'"batch"', b"42", b"null", b"[[]]", b"[{}, 1]", b"{}"):
        yield "/v2/events", top, {}
        yield "/v2/bulkevents", top, {}
        count += 2
    compressed = gzip.compress(encoded)
    for cut in (1, 2, 10, len(compressed) // 2, len(compressed) - 4):
        yield "/v2/events", compressed[:cut], {"Content-Encoding": "gzip"}
        count += 1
    yield "/v2/events", b"\x1f\x8b" + rng.randbytes(200), {}
    count += 1
    while count < MALFORMED:
        match rng.randrange(3):
            case 0:
                yield "/v2/events", rng.randbytes(rng.randrange(1, 2000)), {}
            case 1:
                yield "/v2/events", mutate(rng, encoded), {}
            case _:
                yield "/v2/bulkevents", b"[" + mutate(rng, encoded) + b"]", {}
        count += 1


class Client:
    """One keep-alive connection; reopened when the server closes it after an answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        token = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        self.conn.request("POST", path, body=body, headers={**self.headers, **headers})
        response = self.conn.getresponse()
        response.read()
        if response.will_close:
            self.conn.close()
        return response.status

    def close(self) -> None:
        self.conn.close()


def test_ten_thousand_malformed_bodies_get_no_5xx_and_valid_batches_land_once(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """Every malformed body gets a 4xx (or a 202 when it happens to be valid); no 5xx, no reset;
    the valid batches sent between them are each delivered exactly once."""
    service = start_service(batch_window="0.3s")
    client = Client(service.port)
    statuses: Counter[int] = Counter()
    server_errors: list[tuple[int, bytes]] = []
    valid_ids: list[int] = []
    sent = 0
    try:
        for path, body, headers in malformed_bodies(random.Random(10)):
            status = client.post(path, body, headers)
            statuses[status] += 1
            if status >= 500:
                server_errors.append((status, body[:200]))
            sent += 1
            if sent % VALID_EVERY == 0:
                event_id = VALID_IDS + len(valid_ids)
                valid = template(event_id)
                valid["source_request_id"] = f"valid-{event_id}"
                valid["events"] = valid["events"][:1]
                assert client.post("/v2/events", orjson.dumps(valid), {}) == 202
                valid_ids.append(event_id)
    finally:
        client.close()
    assert sent >= MALFORMED
    assert not server_errors, f"{len(server_errors)} 5xx answers, e.g. {server_errors[:3]}"
    assert statuses[400] > MALFORMED // 2, statuses

    def delivered() -> Counter[int]:
        _, lines = bucket_lines(s3_client, bucket)
        # Only the valid batches' lines: fuzzed bodies that happened to be valid land too.
        ids = (
            line["events"][0]["data"]["event_id"]
            for line in lines
            if str(line.get("source_request_id", "")).startswith("valid-")
        )
        return Counter(ids)

    wait_for(lambda: set(delivered()) >= set(valid_ids), 60, "every valid batch", step=0.5)
    counts = delivered()
    assert sorted(counts) == valid_ids
    assert set(counts.values()) == {1}, "a valid batch was delivered more than once"


ODD_HEADER_VALUES: list[bytes] = [
    b"",
    b"\xff\xfe",
    b"\xc3",
    b"Basic",
    b"Basic \xff",
    b"Basic ====",
    b"Basic " + base64.b64encode(b"\xff:\xfe"),
    b"Basic " + base64.b64encode(b"no-colon"),
    b"x" * 8000,
    b"gzip, \xff",
    b"application/json; charset=\xff",
    b"\x01\x02",
    b"-1",
    b"99999999999999999999999",
]
HEADER_NAMES = [
    b"Authorization",
    b"Content-Type",
    b"Content-Encoding",
    b"X-Request-Id",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Expect",
    b"Connection",
    b"Host",
]


def test_odd_values_in_every_header_get_an_answer_and_never_a_5xx(
    start_service: Callable[..., ServiceProcess],
) -> None:
    """Each header set to bytes clients should never send: always a 4xx or a 202, never a 5xx
    or a connection closed without an answer."""
    service = start_service()
    token = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode())
    body = orjson.dumps(template(9_500_000))
    unanswered: list[tuple[bytes, bytes, bytes]] = []
    for name in HEADER_NAMES:
        for value in ODD_HEADER_VALUES:
            headers = {
                b"Host": b"127.0.0.1",
                b"Authorization": b"Basic " + token,
                b"Content-Type": b"application/json",
                b"Content-Length": str(len(body)).encode(),
                name: value,
            }
            head = b"".join(k + b": " + v + b"\r\n" for k, v in headers.items())
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
                sock.sendall(b"POST /v2/events HTTP/1.1\r\n" + head + b"\r\n" + body)
                answer = sock.recv(65536)
            if not answer.startswith(b"HTTP/1.1 ") or answer[9:10] == b"5":
                unanswered.append((name, value[:20], answer[:100]))
    assert not unanswered
