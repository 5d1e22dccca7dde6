"""`check` against a scripted S3/STS stub on 127.0.0.1: the answers moto cannot give.

moto ignores bucket policies, KMS key policies and PutObjectAcl, and never answers a wrong region
with 301. The stub answers like AWS does and records what s3forward sent, so these tests pin
both the request (ACL, SSE headers) and the message each answer becomes.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3forward.checks import Status, check_connection, render_text
from s3forward.cli import main
from s3forward.config import ConnectionSettings, DateFolders, Destination, Encryption, Secret

NOW = datetime(2024, 3, 1, 12, 30, 45, tzinfo=UTC)
IDENTITY = (
    b"<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:iam::111122223333:user/u"
    b"</Arn><UserId>AID</UserId><Account>111122223333</Account></GetCallerIdentityResult>"
    b"</GetCallerIdentityResponse>"
)


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def s3_error(status: int, code: str, message: str = "", **headers: str) -> Answer:
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return Answer(status, body, headers)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


Script = Callable[[Recorded], Answer | None]


class Stub:
    """Answers STS and S3 requests; ``script`` may override any answer."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: Script = lambda _r: None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
                )
                stub.requests.append(rec)
                answer = stub.script(rec) or stub.default(rec, body)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_PUT = do_POST = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def default(self, rec: Recorded, body: bytes) -> Answer:
        if rec.method == "POST":
            return Answer(200, IDENTITY)
        if "location" in rec.path:
            return Answer(200, b"<LocationConstraint/>")
        if rec.method == "GET":
            return Answer(200, b"<ListBucketResult><KeyCount>0</KeyCount></ListBucketResult>")
        return Answer(200)

    def puts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PUT"]


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    """A stub S3/STS server on loopback for the module."""
    server = Stub()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(autouse=True)
def _fresh(stub: Stub) -> None:
    stub.requests.clear()
    stub.script = lambda _r: None


def settings(stub: Stub, *, role: bool = False, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "name": "main",
        "inputs": ("in",),
        "s3_bucket_name": "mp-forwarding-stub",
        "endpoint_url": stub.url,
        "force_path_style": True,
        "store_data_in_folders_by_date": DateFolders.NONE,
        "folder_name": "exports",
    }
    if not role:
        values["access_key_id"] = Secret("AKIDEXAMPLE")
        values["secret_access_key"] = Secret("super-secret-key-value")
    values.update(overrides)
    return ConnectionSettings(**values)


def _put_answer(answer: Answer, *, only_with_acl: bool = False) -> Script:
    def script(rec: Recorded) -> Answer | None:
        if rec.method != "PUT":
            return None
        if only_with_acl and "x-amz-acl" not in rec.headers:
            return None
        return answer

    return script


def _failed(report: Any) -> Any:
    return next(s for s in report.steps if s.status is Status.FAIL)


# --------------------------------------------------------------------------------------------


def test_verification_object_is_written_with_the_exact_options(stub: Stub) -> None:
    """The verification PUT carries SSE-KMS with its key, the role ACL, storage class and tags."""
    report = check_connection(
        settings(
            stub,
            role=True,
            server_side_encryption_method=Encryption.KMS,
            sse_kms_key_id="arn:aws:kms:us-east-1:111122223333:key/k1",
            storage_class="STANDARD_IA",
            object_tags={"team": "data"},
        ),
        now=NOW,
    )
    assert report.ok, render_text([report])
    (put,) = stub.puts()
    assert (
        put.path == "/mp-forwarding-stub/exports/mParticle_Bucket_Verification_20240301-123045.txt"
    )
    assert put.headers["x-amz-server-side-encryption"] == "aws:kms"
    assert put.headers["x-amz-server-side-encryption-aws-kms-key-id"].endswith("key/k1")
    assert put.headers["x-amz-acl"] == "bucket-owner-full-control"
    assert put.headers["x-amz-storage-class"] == "STANDARD_IA"
    assert put.headers["x-amz-tagging"] == "team=data"
    assert put.headers["if-none-match"] == "*"


def test_user_mode_sends_no_acl_and_dsse_when_asked(stub: Stub) -> None:
    """User-based mode sends no ACL header; aws:kms:dsse is sent as such."""
    check_connection(settings(stub, server_side_encryption_method=Encryption.KMS_DSSE), now=NOW)
    (put,) = stub.puts()
    assert "x-amz-acl" not in put.headers
    assert put.headers["x-amz-server-side-encryption"] == "aws:kms:dsse"


def test_missing_put_object_acl_is_told_apart_from_missing_put_object(stub: Stub) -> None:
    """A PUT denied only with the ACL header is reported as a missing s3:PutObjectAcl."""
    stub.script = _put_answer(s3_error(403, "AccessDenied", "Access Denied"), only_with_acl=True)
    report = check_connection(settings(stub, role=True), now=NOW)
    failed = _failed(report)
    assert failed.code == "PutObjectAcl"
    assert "AccessDenied on s3:PutObjectAcl" in failed.message
    assert "s3:PutObjectAcl on arn:aws:s3:::mp-forwarding-stub/*" in failed.fix
    assert not report.ok


def test_role_mode_denied_put_is_a_missing_put_object(stub: Stub) -> None:
    """A PUT denied with and without the ACL is a missing s3:PutObject, with the policy command."""
    stub.script = _put_answer(s3_error(403, "AccessDenied", "Access Denied"))
    failed = _failed(check_connection(settings(stub, role=True), now=NOW))
    assert "AccessDenied on s3:PutObject:" in failed.message
    assert "s3forward policy --bucket mp-forwarding-stub --role-arn" in failed.fix


def test_role_mode_skips_denied_location_and_list(stub: Stub) -> None:
    """Role mode: a denied GetBucketLocation or ListBucket is skipped, not failed."""
    stub.script = lambda r: s3_error(403, "AccessDenied") if r.method == "GET" else None
    report = check_connection(settings(stub, role=True), now=NOW)
    assert [s.status for s in report.steps] == [Status.OK, Status.SKIP, Status.SKIP, Status.OK]
    assert report.ok


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (s3_error(400, "KMS.NotFoundException", "Invalid keyId k1"), "KMS"),
        (
            s3_error(
                403,
                "AccessDenied",
                "User: arn:aws:iam::1:user/u is not authorized to perform: kms:GenerateDataKey",
            ),
            "KMS",
        ),
        (s3_error(403, "KMSAccessDenied", "denied"), "KMS"),
    ],
)
def test_kms_refusals_get_the_kms_message(stub: Stub, answer: Answer, code: str) -> None:
    """KMS.* codes and denials naming kms: become the KMS message with the key and its fix."""
    stub.script = _put_answer(answer)
    failed = _failed(
        check_connection(
            settings(stub, server_side_encryption_method=Encryption.KMS, sse_kms_key_id="k1"),
            now=NOW,
        )
    )
    assert failed.code == code
    assert "KMS key cannot be used" in failed.message
    assert "kms:GenerateDataKey" in failed.fix and "k1" in failed.fix


def test_permanent_redirect_names_the_buckets_real_region(stub: Stub) -> None:
    """A 301 PermanentRedirect says which region the bucket is in and what to set."""
    stub.script = lambda r: (
        s3_error(
            301,
            "PermanentRedirect",
            "use the other endpoint",
            **{"x-amz-bucket-region": "ap-south-1"},
        )
        if r.method != "POST"
        else None
    )
    failed = _failed(check_connection(settings(stub), now=NOW))
    assert failed.code == "WrongRegion"
    assert "is in ap-south-1, but aws_region_endpoint is us-east-1" in failed.message
    assert failed.fix == 'set aws_region_endpoint = "ap-south-1"'


def test_authorization_header_malformed_reads_the_expected_region(stub: Stub) -> None:
    """AuthorizationHeaderMalformed's "expecting 'eu-central-1'" becomes the fix."""
    message = "the region 'us-east-1' is wrong; expecting 'eu-central-1'"
    stub.script = lambda r: (
        s3_error(400, "AuthorizationHeaderMalformed", message) if r.method != "POST" else None
    )
    failed = _failed(check_connection(settings(stub), now=NOW))
    assert failed.fix == 'set aws_region_endpoint = "eu-central-1"'


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("InvalidAccessKeyId", "AWS does not know this access key id"),
        ("InvalidClientTokenId", "AWS does not know this access key id"),
        ("SignatureDoesNotMatch", "secret access key does not match"),
        ("ExpiredToken", "session credentials have expired"),
    ],
)
def test_credential_errors_stop_the_check_with_their_message(
    stub: Stub, code: str, words: str
) -> None:
    """Each credential error from STS fails the credentials step and skips the rest."""
    body = f"<ErrorResponse><Error><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>"
    stub.script = lambda r: Answer(403, body.encode()) if r.method == "POST" else None
    report = check_connection(settings(stub), now=NOW)
    assert report.steps[0].status is Status.FAIL and words in report.steps[0].message
    assert [s.status for s in report.steps[1:]] == [Status.SKIP] * 3
    assert stub.puts() == []


def test_sts_denied_is_only_a_warning(stub: Stub) -> None:
    """STS answering AccessDenied warns but the connection still passes."""
    body = b"<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>"
    stub.script = lambda r: Answer(403, body) if r.method == "POST" else None
    report = check_connection(settings(stub), now=NOW)
    assert report.steps[0].status is Status.WARN
    assert report.ok


def test_unreachable_endpoint_is_a_connection_failure() -> None:
    """Nothing listening: the check fails with "cannot reach" and the endpoint, quickly."""
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    conn = ConnectionSettings(
        name="x",
        inputs=("in",),
        s3_bucket_name="mp-forwarding-x",
        access_key_id=Secret("a"),
        secret_access_key=Secret("b"),
        endpoint_url=url,
        store_data_in_folders_by_date=DateFolders.NONE,
    )
    report = check_connection(conn, now=NOW)
    failed = _failed(report)
    assert failed.code == "ConnectionFailed"
    assert f"cannot reach {url}" in failed.message


def test_localdir_check_reports_an_unwritable_directory(tmp_path: Path) -> None:
    """A localdir connection passes on a writable directory and fails under a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    good = ConnectionSettings(
        name="l",
        inputs=("in",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=tmp_path / "out",
    )
    assert check_connection(good).ok
    bad = ConnectionSettings(
        name="l",
        inputs=("in",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=blocker / "out",
    )
    report = check_connection(bad)
    assert not report.ok and _failed(report).code == "DirectoryNotWritable"


def test_cli_json_and_text_output_and_exit_codes(stub: Stub, tmp_path: Path) -> None:
    """`check` prints a line per step and fixes, or JSON with --json; exit 1 on any failure."""
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[inputs.app]
api_key = "k"
api_secret = "s"
app_name = "A"
[connections.ok]
inputs = ["app"]
s3_bucket_name = "mp-forwarding-ok"
endpoint_url = "{stub.url}"
force_path_style = true
access_key_id = "AKID"
secret_access_key = "very-secret-value-1"
store_data_in_folders_by_date = "none"
[connections.bad]
inputs = ["app"]
s3_bucket_name = "mp-forwarding-bad"
endpoint_url = "{stub.url}"
force_path_style = true
access_key_id = "AKID"
secret_access_key = "very-secret-value-1"
store_data_in_folders_by_date = "none"
"""
    )
    stub.script = lambda r: (
        s3_error(404, "NoSuchBucket", "nope") if "mp-forwarding-bad" in r.path else None
    )
    runner = CliRunner()
    only_ok = runner.invoke(main, ["check", "--config", str(config), "--connection", "ok"])
    assert only_ok.exit_code == 0, only_ok.output
    assert "result: forwarding will work" in only_ok.output
    both = runner.invoke(main, ["check", "--config", str(config), "--json"])
    assert both.exit_code == 1
    document = json.loads(both.output)
    assert document["ok"] is False
    assert [c["ok"] for c in document["connections"]] == [True, False]
    assert "very-secret-value-1" not in both.output
