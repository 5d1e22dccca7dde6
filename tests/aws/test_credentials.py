"""Credentials for a connection, and the object options that land, against the session's moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from s3forward.config import ConnectionSettings, Encryption, Secret
from s3forward.credentials import build_session
from s3forward.layout import encode_object
from s3forward.sinks.s3 import S3Sink

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MakeSettings = Callable[..., ConnectionSettings]
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
}


def _role(moto_server: str) -> str:
    iam = boto3.client("iam", endpoint_url=moto_server, region_name="us-east-1")
    return str(
        iam.create_role(RoleName="w", AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    )


def _base(moto_server: str) -> tuple[boto3.Session, list[dict[str, Any]]]:
    """A default-chain session whose AssumeRole calls are recorded (observed, not changed)."""
    base = boto3.Session(region_name="us-east-1")
    seen: list[dict[str, Any]] = []
    base.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **_: seen.append(dict(params))
    )
    return base, seen


def test_user_keys_sign_requests_and_never_show(s3_connection: MakeSettings) -> None:
    """User-based keys are the session's credentials; the settings' repr hides the secret."""
    settings = s3_connection("mp-forwarding-x", secret_access_key=Secret("s3cr3t-value"))
    creds = build_session(settings.access).get_credentials()
    assert creds is not None and creds.get_frozen_credentials().secret_key == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)


def test_role_is_assumed_with_external_id_and_session_name(
    bucket: str, moto_server: str, s3_connection: MakeSettings
) -> None:
    """role_arn is assumed through STS on the endpoint with external_id and role_session_name."""
    role_arn = _role(moto_server)
    settings = s3_connection(
        bucket,
        access_key_id=None,
        secret_access_key=None,
        role_arn=role_arn,
        external_id=Secret("ext-1"),
        role_session_name="fwd-test",
    )
    base, seen = _base(moto_server)
    session = build_session(settings.access, base_session=base)
    sts = session.client("sts", endpoint_url=moto_server)
    assert sts.get_caller_identity()["Arn"].endswith(":assumed-role/w/fwd-test")
    assert seen == [
        {
            "RoleArn": role_arn,
            "RoleSessionName": "fwd-test",
            "DurationSeconds": 3600,
            "ExternalId": "ext-1",
        }
    ]
    creds = session.get_credentials()
    assert creds is not None and creds.method == "s3forward-assume-role"
    assert creds.get_frozen_credentials().access_key != "testing"


def test_role_credentials_are_refreshed_before_they_expire(
    bucket: str, moto_server: str, s3_connection: MakeSettings
) -> None:
    """Credentials within botocore's refresh window are renewed through a new AssumeRole."""
    settings = s3_connection(
        bucket, access_key_id=None, secret_access_key=None, role_arn=_role(moto_server)
    )
    base, seen = _base(moto_server)
    # 900 s is inside botocore's 15-minute advisory window: every use asks for a refresh.
    creds = build_session(settings.access, base_session=base, role_duration=900).get_credentials()
    assert creds is not None
    first = creds.get_frozen_credentials().access_key
    second = creds.get_frozen_credentials().access_key
    assert len(seen) == 2 and first != second


@pytest.mark.parametrize(
    ("method", "key_id"),
    [
        (Encryption.AES256, None),
        (Encryption.KMS, "arn:aws:kms:us-east-1:123456789012:key/abc"),
        (Encryption.KMS_DSSE, None),
    ],
)
def test_encryption_storage_class_and_tags_land_on_the_object(
    bucket: str,
    s3_client: S3Client,
    s3_connection: MakeSettings,
    method: Encryption,
    key_id: str | None,
) -> None:
    """SSE method (and KMS key), storage class and tags are on the object that lands."""
    settings = s3_connection(
        bucket,
        server_side_encryption_method=method,
        sse_kms_key_id=key_id,
        storage_class="STANDARD_IA",
        object_tags={"team": "data", "env": "prod"},
    )
    obj = encode_object("A_20240301000000000000_00001.txt", b"{}\n", compress=False)
    sink = S3Sink(settings)
    try:
        sink.write(obj)
    finally:
        sink.close()
    head = s3_client.head_object(Bucket=bucket, Key=obj.key)
    assert head["ServerSideEncryption"] == method.value
    if key_id:
        assert head["SSEKMSKeyId"] == key_id
    assert head["StorageClass"] == "STANDARD_IA"
    tags = s3_client.get_object_tagging(Bucket=bucket, Key=obj.key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"team": "data", "env": "prod"}
