"""S3Sink against a real moto S3 server, and against a scripted HTTP stub for error answers."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from s3forward.config import ConnectionSettings, Encryption, Secret
from s3forward.errors import KeyTakenError, PermanentSinkError, TransientSinkError
from s3forward.layout import CONTENT_TYPE, encode_object
from s3forward.sinks import WriteOutcome, make_sink
from s3forward.sinks.s3 import S3Sink

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MakeSettings = Callable[..., ConnectionSettings]
SECRET_KEY = "wJalrXUtnFEMI-very-secret-value"
LINES = b'{"batch":1}\n{"batch":2}\n'


def _obj(key: str = "exports/A_20240301000000000000_00001.txt", body: bytes = LINES) -> Any:
    return encode_object(key, body, compress=key.endswith(".gz"))


def _write(settings: ConnectionSettings, obj: Any, **kwargs: Any) -> WriteOutcome:
    sink = S3Sink(settings, **kwargs)
    try:
        return sink.write(obj)
    finally:
        sink.close()


# --------------------------------------------------------------------------------------------
# What lands in moto


def test_write_puts_the_exact_bytes_with_type_and_hash(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """A new object lands under its key with its bytes, text content type and sha256 metadata."""
    obj = _obj()
    assert _write(s3_connection(bucket), obj) is WriteOutcome.CREATED
    got = s3_client.get_object(Bucket=bucket, Key=obj.key)
    assert got["Body"].read() == LINES
    assert got["ContentType"] == CONTENT_TYPE
    assert "ContentEncoding" not in got
    assert got["Metadata"] == {"s3forward-sha256": obj.sha256}
    assert "ServerSideEncryption" not in got


def test_compressed_object_is_gzip_with_content_encoding(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """A .txt.gz object holds gzip bytes and is stored with Content-Encoding: gzip."""
    obj = _obj("A_20240301000000000000_00001.txt.gz")
    _write(s3_connection(bucket, use_compression=True), obj)
    got = s3_client.get_object(Bucket=bucket, Key=obj.key)
    assert got["ContentEncoding"] == "gzip"
    assert gzip.decompress(got["Body"].read()) == LINES


def test_aes256_encryption_is_requested(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """AES256 server-side encryption is set on the stored object."""
    obj = _obj()
    _write(s3_connection(bucket, server_side_encryption_method=Encryption.AES256), obj)
    assert s3_client.head_object(Bucket=bucket, Key=obj.key)["ServerSideEncryption"] == "AES256"


def test_kms_encryption_uses_the_configured_key(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """aws:kms encryption is stored with the configured KMS key id."""
    key_id = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = s3_connection(
        bucket, server_side_encryption_method=Encryption.KMS, sse_kms_key_id=key_id
    )
    obj = _obj()
    _write(settings, obj)
    head = s3_client.head_object(Bucket=bucket, Key=obj.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_id


def test_storage_class_and_tags_are_applied(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """The configured storage class and object tags (with spaces, '=' and '+') are stored."""
    tags = {"team": "data eng", "source": "mparticle=s3+forward/x:y"}
    obj = _obj()
    _write(s3_connection(bucket, storage_class="STANDARD_IA", object_tags=tags), obj)
    assert s3_client.head_object(Bucket=bucket, Key=obj.key)["StorageClass"] == "STANDARD_IA"
    tag_set = s3_client.get_object_tagging(Bucket=bucket, Key=obj.key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tag_set} == tags


def test_role_based_mode_writes_with_the_default_credential_chain(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """With no access keys the sink finds credentials through the default chain and writes."""
    settings = s3_connection(bucket, access_key_id=None, secret_access_key=None)
    assert settings.canned_acl == "bucket-owner-full-control"
    obj = _obj()
    assert _write(settings, obj) is WriteOutcome.CREATED
    assert s3_client.get_object(Bucket=bucket, Key=obj.key)["Body"].read() == LINES


# --------------------------------------------------------------------------------------------
# Never overwrite


def test_retrying_the_same_object_is_already_present(
    bucket: str, s3_connection: MakeSettings
) -> None:
    """A second write of identical bytes to the same key is recognised as our own."""
    settings = s3_connection(bucket)
    obj = _obj()
    assert _write(settings, obj) is WriteOutcome.CREATED
    assert _write(settings, obj) is WriteOutcome.ALREADY_PRESENT


@pytest.mark.parametrize("conditional", [True, False])
def test_different_object_under_a_taken_key_is_refused(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings, conditional: bool
) -> None:
    """A different body for an existing key raises KeyTakenError and the original remains."""
    settings = s3_connection(bucket, conditional_writes=conditional)
    first = _obj()
    _write(settings, first)
    with pytest.raises(KeyTakenError) as caught:
        _write(settings, _obj(body=b'{"other":true}\n'))
    assert caught.value.key == first.key
    assert s3_client.get_object(Bucket=bucket, Key=first.key)["Body"].read() == LINES


def test_an_object_written_by_someone_else_is_never_claimed(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """An existing object without our hash metadata counts as taken, even with equal bytes."""
    obj = _obj()
    s3_client.put_object(Bucket=bucket, Key=obj.key, Body=obj.body)
    with pytest.raises(KeyTakenError):
        _write(s3_connection(bucket), obj)


def test_without_conditional_writes_a_retry_is_still_already_present(
    bucket: str, s3_connection: MakeSettings
) -> None:
    """The HEAD-before-PUT path also recognises our own earlier write."""
    settings = s3_connection(bucket, conditional_writes=False)
    obj = _obj()
    assert _write(settings, obj) is WriteOutcome.CREATED
    assert _write(settings, obj) is WriteOutcome.ALREADY_PRESENT


def test_concurrent_writes_of_one_object_never_fail_and_leave_its_bytes(
    bucket: str, s3_connection: MakeSettings, s3_client: Any
) -> None:
    """Several threads sharing a sink and writing one object: none fails, at least one
    created it, and the key holds exactly those bytes.

    (S3 evaluates If-None-Match atomically, so exactly one would be CREATED there; moto's
    check-then-put can let two concurrent writers both see the key free under load. Both then
    wrote the same bytes, which is what the sink promises.)"""
    sink = S3Sink(s3_connection(bucket))
    obj = _obj()
    outcomes: list[WriteOutcome] = []
    lock = threading.Lock()

    def write() -> None:
        outcome = sink.write(obj)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()
    assert len(outcomes) == 6
    assert WriteOutcome.CREATED in outcomes
    assert set(outcomes) <= {WriteOutcome.CREATED, WriteOutcome.ALREADY_PRESENT}
    assert s3_client.get_object(Bucket=bucket, Key=obj.key)["Body"].read() == obj.body


# --------------------------------------------------------------------------------------------
# Failures


def test_missing_bucket_is_a_permanent_error_naming_it(
    moto_server: str, s3_connection: MakeSettings
) -> None:
    """Writing to a bucket that does not exist fails permanently with code NoSuchBucket."""
    with pytest.raises(PermanentSinkError) as caught:
        _write(s3_connection("mp-forwarding-does-not-exist"), _obj())
    assert caught.value.code == "NoSuchBucket"
    assert "mp-forwarding-does-not-exist" in str(caught.value)


def test_unreachable_endpoint_is_a_transient_error(s3_connection: MakeSettings) -> None:
    """A closed port (server down) gives a TransientSinkError, not a crash."""
    from servicekit import unused_port  # tests/e2e, on the path via tests/conftest.py

    settings = s3_connection("mp-forwarding-x", endpoint_url=f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(TransientSinkError) as caught:
        _write(settings, _obj(), max_attempts=1)
    assert caught.value.code == "EndpointConnection"


@dataclass
class StubS3:
    """A scripted S3 stand-in: answers by HTTP method and records every request's headers."""

    url: str
    answers: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def answer(self, method: str, status: int, body: str = "", **headers: str) -> None:
        self.answers[method] = (status, headers, body.encode())


def _error_xml(code: str, message: str = "scripted") -> str:
    return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"


@pytest.fixture
def stub_s3() -> Iterator[StubS3]:
    """A loopback HTTP server answering S3 requests as scripted by the test."""
    stub = StubS3(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _drain(self) -> None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    self.rfile.read(size + 2)
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
            else:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _respond(self) -> None:
            self._drain()
            stub.requests.append((self.command, {k.lower(): v for k, v in self.headers.items()}))
            status, headers, body = stub.answers.get(self.command, (200, {}, b""))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_PUT = do_HEAD = do_GET = _respond

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()
    thread.join()


def _stub_settings(stub: StubS3, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "name": "stub",
        "inputs": ("in",),
        "s3_bucket_name": "mp-forwarding-stub",
        "access_key_id": Secret("AKIAEXAMPLE"),
        "secret_access_key": Secret(SECRET_KEY),
        "endpoint_url": stub.url,
        "force_path_style": True,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


def test_put_sends_if_none_match_and_the_role_mode_acl(stub_s3: StubS3) -> None:
    """In role-based mode the PUT carries x-amz-acl bucket-owner-full-control and If-None-Match."""
    settings = _stub_settings(stub_s3, access_key_id=None, secret_access_key=None)
    assert _write(settings, _obj(), max_attempts=1) is WriteOutcome.CREATED
    method, headers = stub_s3.requests[-1]
    assert method == "PUT"
    assert headers["x-amz-acl"] == "bucket-owner-full-control"
    assert headers["if-none-match"] == "*"


def test_user_based_mode_sends_no_acl(stub_s3: StubS3) -> None:
    """With access keys the PUT carries no canned ACL (the bucket owner writes directly)."""
    _write(_stub_settings(stub_s3), _obj(), max_attempts=1)
    assert "x-amz-acl" not in stub_s3.requests[-1][1]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, "SlowDown"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
        (400, "RequestTimeout"),
        (429, "TooManyRequests"),
    ],
)
def test_throttling_and_server_errors_are_transient(
    stub_s3: StubS3, status: int, code: str
) -> None:
    """5xx, SlowDown, RequestTimeout and 429 answers become TransientSinkError with S3's code."""
    stub_s3.answer("PUT", status, _error_xml(code))
    with pytest.raises(TransientSinkError) as caught:
        _write(_stub_settings(stub_s3), _obj(), max_attempts=1)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("status", "code", "hint"),
    [
        (403, "AccessDenied", "s3:PutObject"),
        (403, "InvalidAccessKeyId", "access_key_id"),
        (403, "SignatureDoesNotMatch", "secret_access_key"),
        (400, "ExpiredToken", "expired"),
        (400, "KMS.NotFoundException", "sse_kms_key_id"),
        (400, "InvalidBucketName", "s3_bucket_name"),
        (400, "SomethingNew", "SomethingNew"),
    ],
)
def test_credential_and_permission_errors_are_permanent_and_say_what_to_fix(
    stub_s3: StubS3, status: int, code: str, hint: str
) -> None:
    """Operator-fixable errors are permanent, name the bucket and the fix, and hide secrets."""
    stub_s3.answer("PUT", status, _error_xml(code))
    with pytest.raises(PermanentSinkError) as caught:
        _write(_stub_settings(stub_s3), _obj(), max_attempts=1)
    assert caught.value.code == code
    message = str(caught.value)
    assert hint in message
    assert "mp-forwarding-stub" in message
    assert SECRET_KEY not in message


def test_wrong_region_names_the_bucket_region(stub_s3: StubS3) -> None:
    """A 301 PermanentRedirect is permanent and tells which region the bucket is in."""
    stub_s3.answer(
        "PUT", 301, _error_xml("PermanentRedirect"), **{"x-amz-bucket-region": "eu-west-1"}
    )
    with pytest.raises(PermanentSinkError) as caught:
        _write(_stub_settings(stub_s3), _obj(), max_attempts=1)
    assert caught.value.code == "PermanentRedirect"
    assert "eu-west-1" in str(caught.value)
    assert "aws_region_endpoint" in str(caught.value)


def test_precondition_failed_with_forbidden_head_counts_as_already_present(
    stub_s3: StubS3,
) -> None:
    """When the key exists but HEAD is forbidden (role mode), the write is taken as ours."""
    stub_s3.answer("PUT", 412, _error_xml("PreconditionFailed"))
    stub_s3.answer("HEAD", 403)
    assert _write(_stub_settings(stub_s3), _obj(), max_attempts=1) is WriteOutcome.ALREADY_PRESENT
    assert [method for method, _ in stub_s3.requests] == ["PUT", "HEAD"]


def test_conditional_request_conflict_is_transient(stub_s3: StubS3) -> None:
    """S3's 409 ConditionalRequestConflict (a racing write) is retried, not reported."""
    stub_s3.answer("PUT", 409, _error_xml("ConditionalRequestConflict"))
    with pytest.raises(TransientSinkError) as caught:
        _write(_stub_settings(stub_s3), _obj(), max_attempts=1)
    assert caught.value.code == "ConditionalRequestConflict"


def test_make_sink_builds_an_s3_sink_for_s3_connections(
    bucket: str, s3_client: S3Client, s3_connection: MakeSettings
) -> None:
    """An s3 connection gets an S3Sink named after the connection that writes to its bucket."""
    sink = make_sink(s3_connection(bucket))
    assert isinstance(sink, S3Sink)
    assert sink.name == "test"
    sink.write(_obj())
    sink.close()
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
