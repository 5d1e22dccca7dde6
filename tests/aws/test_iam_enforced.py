"""Against a moto server of this module's own with IAM enforcement switched on.

Users, policies, the role and the buckets are created first with moto's unchecked default keys;
then ``POST /moto-api/reset-auth`` with ``0`` makes moto check every later request against IAM.
moto evaluates identity policies (users, roles) but ignores bucket policies, KMS key policies and
PutObjectAcl: those cases live in test_check.py as tests of what s3forward sends.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3forward.cli import main
from s3forward.policy import iam_user_policy

sys.path.insert(0, str(Path(__file__).parent.parent / "e2e"))

from servicekit import (
    API_KEY,
    API_SECRET,
    ServiceProcess,
    loopback_listener,
    port_of,
    run_moto,
    wait_for,
)

BUCKET = "mp-forwarding-iam-ok"
EU_BUCKET = "mp-forwarding-iam-eu"
LATER_BUCKET = "mp-forwarding-iam-later"  # created only in the serve test
EXTERNAL_ID = "ext-4242"
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
BATCH = {
    "events": [
        {"event_type": "custom_event", "data": {"event_name": "hi", "custom_event_type": "other"}}
    ],
    "environment": "development",
    "mpid": 42,
}


class World:
    """The enforced moto server and the keys of the users created on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str, tuple[str, str]] = {}
        self.role_arn = ""

    def client(self, service: str, user: str = "admin", region: str = "us-east-1") -> Any:
        key, secret = self.keys[user]
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=None,
            config=Config(s3={"addressing_style": "path"}),
        )


def _user(iam: Any, world: World, name: str, policy: dict[str, Any]) -> None:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    world.keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])


def _set_up(world: World) -> None:
    unchecked = World(world.url)
    unchecked.keys["admin"] = ("testing", "testing")  # any keys pass before enforcement
    iam = unchecked.client("iam")
    unchecked.client("s3").create_bucket(Bucket=BUCKET)
    unchecked.client("s3", region="eu-west-1").create_bucket(
        Bucket=EU_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    _user(iam, world, "admin", ADMIN_POLICY)
    _user(iam, world, "forwarder", iam_user_policy(BUCKET))
    no_put = iam_user_policy(BUCKET)
    no_put["Statement"][2]["Action"] = ["s3:GetObject", "s3:ListBucket"]
    _user(iam, world, "noput", no_put)
    assume = {
        "Version": "2012-10-17",
        # moto matches sts:AssumeRole against "*" only
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    _user(iam, world, "assumer", assume)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                # moto compares the caller's ARN literally (not the account root)
                "Principal": {"AWS": "arn:aws:iam::123456789012:user/assumer"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
            }
        ],
    }
    role = iam.create_role(RoleName="writer", AssumeRolePolicyDocument=json.dumps(trust))
    world.role_arn = role["Role"]["Arn"]
    writes = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:PutObjectAcl"],
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
        ],
    }
    iam.put_role_policy(RoleName="writer", PolicyName="w", PolicyDocument=json.dumps(writes))
    request = urllib.request.Request(
        f"{world.url}/moto-api/reset-auth",
        data=b"0",
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A moto server of its own with users, a role and buckets, then IAM enforcement on."""
    with run_moto(tmp_path_factory.mktemp("moto-iam") / "moto.log") as url:
        world = World(url)
        _set_up(world)
        yield world


def _connection_toml(
    world: World, name: str, bucket: str, user: str | None, extra: str = ""
) -> str:
    keys = ""
    if user is not None:
        key, secret = world.keys[user]
        keys = f'access_key_id = "{key}"\nsecret_access_key = "{secret}"\n'
    return f"""
[connections.{name}]
inputs = ["app"]
s3_bucket_name = "{bucket}"
endpoint_url = "{world.url}"
force_path_style = true
store_data_in_folders_by_date = "none"
batch_window = "0.2s"
{keys}{extra}
"""


def _config(tmp_path: Path, *connections: str, head: str = "") -> Path:
    path = tmp_path / f"s3forward-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f"""{head}
[inputs.app]
api_key = "{API_KEY}"
api_secret = "{API_SECRET}"
app_name = "IamApp"
"""
        + "".join(connections)
    )
    return path


def _check(config: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["check", "--config", str(config), *args])


# --------------------------------------------------------------------------------------------


def test_seed_iam_policy_user_can_forward_and_check_passes(world: World, tmp_path: Path) -> None:
    """A user holding exactly the seed's IAM policy passes every check step and can forward."""
    config = _config(tmp_path, _connection_toml(world, "main", BUCKET, "forwarder"))
    result = _check(config)
    assert result.exit_code == 0, result.output
    for step in ("credentials", "bucket", "list", "write"):
        assert f"OK    {step}" in result.output
    assert "user/forwarder" in result.output
    batch_file = tmp_path / "batch.json"
    batch_file.write_text(json.dumps(BATCH))
    forwarded = CliRunner().invoke(main, ["forward", "--config", str(config), str(batch_file)])
    assert forwarded.exit_code == 0, forwarded.output
    key = forwarded.output.split("\t")[0]
    body = world.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert json.loads(body)["mpid"] == 42


def test_user_without_put_object_fails_check_with_access_denied(
    world: World, tmp_path: Path
) -> None:
    """A user whose policy lacks s3:PutObject fails the write step with exit code 1."""
    result = _check(_config(tmp_path, _connection_toml(world, "main", BUCKET, "noput")))
    assert result.exit_code == 1, result.output
    assert "FAIL  write" in result.output
    assert "AccessDenied on s3:PutObject" in result.output
    assert "fix write: allow s3:PutObject on arn:aws:s3:::mp-forwarding-iam-ok/*" in result.output


def test_wrong_secret_is_reported_as_signature_mismatch(world: World, tmp_path: Path) -> None:
    """A wrong secret key is named as such, with the fix, and the secret is never printed."""
    key, _ = world.keys["forwarder"]
    extra = f'access_key_id = "{key}"\nsecret_access_key = "not-the-secret-0123"\n'
    config = _config(tmp_path, _connection_toml(world, "main", BUCKET, None, extra))
    result = _check(config, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    failed = [s for s in report["connections"][0]["steps"] if s["status"] == "fail"]
    assert failed[0]["code"] == "SignatureDoesNotMatch"
    assert "secret access key does not match" in failed[0]["message"]
    assert "not-the-secret-0123" not in result.output


def test_missing_bucket_is_reported_as_no_such_bucket(world: World, tmp_path: Path) -> None:
    """A bucket that does not exist fails the check with the NoSuchBucket message and fix."""
    config = _config(tmp_path, _connection_toml(world, "main", "mp-forwarding-nope", "admin"))
    result = _check(config)
    assert result.exit_code == 1, result.output
    assert "bucket mp-forwarding-nope does not exist" in result.output
    assert "fix bucket: create bucket mp-forwarding-nope in us-east-1" in result.output


def test_bucket_in_another_region_is_reported_with_its_region(world: World, tmp_path: Path) -> None:
    """A bucket in eu-west-1 checked as us-east-1 fails and the fix names eu-west-1."""
    result = _check(_config(tmp_path, _connection_toml(world, "main", EU_BUCKET, "admin")))
    assert result.exit_code == 1, result.output
    assert "is in eu-west-1, but aws_region_endpoint is us-east-1" in result.output
    assert 'set aws_region_endpoint = "eu-west-1"' in result.output


def test_role_is_assumed_with_external_id_and_writes_as_the_role(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Role mode assumes role_arn from the default chain's user; S3 calls are signed as the role."""
    key, secret = world.keys["assumer"]  # may only call sts:AssumeRole: S3 needs the role
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.delenv("AWS_SECURITY_TOKEN")
    extra = f'role_arn = "{world.role_arn}"\nexternal_id = "{EXTERNAL_ID}"\n'
    config = _config(tmp_path, _connection_toml(world, "main", BUCKET, None, extra))
    result = _check(config)
    assert result.exit_code == 0, result.output
    assert "assumed-role/writer/s3forward" in result.output
    assert "OK    write" in result.output
    assert "SKIP  list" in result.output  # the role may only write, as the seed's bucket policy


def test_wrong_external_id_fails_with_the_assume_role_message(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trust policy requiring another external id fails the credentials step with its fix."""
    key, secret = world.keys["assumer"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.delenv("AWS_SECURITY_TOKEN")
    extra = f'role_arn = "{world.role_arn}"\nexternal_id = "wrong-id-77"\n'
    result = _check(_config(tmp_path, _connection_toml(world, "main", BUCKET, None, extra)))
    assert result.exit_code == 1, result.output
    assert "could not assume role arn:aws:iam::123456789012:role/writer" in result.output
    assert "with the same external_id" in result.output
    assert "wrong-id-77" not in result.output


def test_serve_keeps_data_of_a_failing_connection_and_reports_it_unhealthy(
    world: World, tmp_path: Path
) -> None:
    """serve marks a broken connection unhealthy at start, delivers the other, keeps the data."""
    listener = loopback_listener()
    head = f'[server]\nlisten = "127.0.0.1:{port_of(listener)}"\n'
    head += f'[spool]\npath = "{tmp_path}/spool.db"\n'
    head += '[delivery]\npermanent_retry_interval = "0.5s"\nbackoff_base = "0.05s"\n'
    config = _config(
        tmp_path,
        _connection_toml(world, "good", BUCKET, "forwarder"),
        _connection_toml(world, "broken", LATER_BUCKET, "admin"),
        head=head,
    )
    service = ServiceProcess(tmp_path, config.read_text(), listener)
    service.start()
    try:

        def broken_reported() -> bool:
            status, body = service.get("/readyz")
            return status == 503 and "'broken'" in body.decode()

        wait_for(broken_reported, 20, "/readyz to name the broken connection")
        _status, body = service.get("/readyz")
        reasons = json.loads(body)["reasons"]
        assert any("broken" in r and "does not exist" in r for r in reasons), reasons
        assert service.post("/v2/events", {**BATCH, "source_request_id": "r1"})[0] == 202
        admin = world.client("s3")

        def landed(bucket: str) -> bool:
            return admin.list_objects_v2(Bucket=bucket).get("KeyCount", 0) > 0

        wait_for(lambda: landed(BUCKET), 20, "the good connection to deliver")
        admin.create_bucket(Bucket=LATER_BUCKET)  # the operator fixes the problem
        wait_for(lambda: landed(LATER_BUCKET), 20, "the kept data to reach the fixed bucket")
    finally:
        service.terminate()
