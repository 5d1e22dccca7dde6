"""The seed's two AWS policies, filled in for a bucket (and optionally a KMS key)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from s3forward.policy import bucket_policy, iam_user_policy

SEED = Path(__file__).parent / "fixtures" / "seed-amazon-s3-event-integration.md"
SEED_ROLE = "arn:aws:iam::338661164609:role/Prod-Role-DG12-Default"
BUCKET = "mp-forwarding-shop"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def seed_template(heading: str, bucket: str) -> Any:
    """The JSON block that follows ``heading`` in the seed page, with {bucket} replaced."""
    text = SEED.read_text(encoding="utf-8")
    after = text[text.index(heading) :]
    match = re.search(r"~~~json\n(.*?)~~~", after, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1).replace("{bucket}", bucket))


def test_bucket_policy_is_the_seed_template() -> None:
    """With the seed's role ARN, the bucket policy is exactly the seed's template."""
    expected = seed_template("AWS S3 Bucket Policy Template", BUCKET)
    assert bucket_policy(BUCKET, SEED_ROLE) == expected


def test_bucket_policy_grants_the_given_role() -> None:
    """The principal is the role s3forward runs as, with PutObject and PutObjectAcl."""
    role = "arn:aws:iam::111122223333:role/s3forward"
    (statement,) = bucket_policy(BUCKET, role)["Statement"]
    assert statement["Principal"] == {"AWS": role}
    assert statement["Action"] == ["s3:PutObject", "s3:PutObjectAcl"]
    assert statement["Resource"] == f"arn:aws:s3:::{BUCKET}/*"


def test_iam_user_policy_is_the_seed_template() -> None:
    """The IAM user policy is exactly the seed's template for the bucket."""
    expected = seed_template("AWS IAM Policy Template", BUCKET)
    assert iam_user_policy(BUCKET) == expected


def test_iam_user_policy_with_kms_adds_one_key_statement() -> None:
    """With a KMS key the user policy gains GenerateDataKey and Decrypt on that key only."""
    policy = iam_user_policy(BUCKET, kms_key_arn=KMS_KEY)
    assert policy["Statement"][:3] == seed_template("AWS IAM Policy Template", BUCKET)["Statement"]
    assert policy["Statement"][3] == {
        "Effect": "Allow",
        "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
        "Resource": [KMS_KEY],
    }


def test_bucket_policy_with_kms_adds_a_key_policy_statement_for_the_role() -> None:
    """With a KMS key the role gets a separate key-policy statement (bucket policies cannot)."""
    role = "arn:aws:iam::111122223333:role/s3forward"
    out = bucket_policy(BUCKET, role, kms_key_arn=KMS_KEY)
    assert out["bucket_policy"] == bucket_policy(BUCKET, role)
    statement = out["key_policy_statement"]
    assert statement["Principal"] == {"AWS": role}
    assert statement["Action"] == ["kms:GenerateDataKey", "kms:Decrypt"]
    assert statement["Resource"] == "*"  # in a key policy, "*" means this key
