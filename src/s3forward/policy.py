"""The seed's two AWS policies, with the bucket filled in.

Option 1 (role-based): a bucket policy that lets the role s3forward runs as write objects and
set their ACL. Option 2 (user-based): an IAM policy for the IAM user whose keys s3forward uses.
With SSE-KMS, the writer also needs ``kms:GenerateDataKey`` (and ``kms:Decrypt`` for multipart
uploads and for reading objects back) on the key.
"""

from __future__ import annotations

from typing import Any


def bucket_policy(bucket: str, role_arn: str, *, kms_key_arn: str | None = None) -> dict[str, Any]:
    """The seed's "AWS S3 Bucket Policy Template" for the role s3forward runs as."""
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Principal": {"AWS": role_arn},
            "Action": ["s3:PutObject", "s3:PutObjectAcl"],
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
    ]
    policy: dict[str, Any] = {"Version": "2012-10-17", "Statement": statements}
    if kms_key_arn:
        # A bucket policy cannot grant KMS permissions: they belong in the key policy.
        policy = {
            "bucket_policy": policy,
            "key_policy_statement": _kms_statement(kms_key_arn, principal=role_arn),
        }
    return policy


def iam_user_policy(bucket: str, *, kms_key_arn: str | None = None) -> dict[str, Any]:
    """The seed's "AWS IAM Policy Template" for an IAM user."""
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["s3:ListAllMyBuckets"],
            "Resource": ["arn:aws:s3:::*"],
        },
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
        },
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket", "s3:PutObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/*"],
        },
    ]
    if kms_key_arn:
        statements.append(_kms_statement(kms_key_arn, principal=None))
    return {"Version": "2012-10-17", "Statement": statements}


def _kms_statement(kms_key_arn: str, *, principal: str | None) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
        "Resource": [kms_key_arn] if principal is None else "*",
    }
    if principal is not None:
        statement = {"Sid": "AllowS3forwardToEncrypt", "Principal": {"AWS": principal}, **statement}
    return statement
