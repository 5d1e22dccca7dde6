"""AWS credentials for a connection: the seed's two authentication options.

- **User-based** (both ``access_key_id`` and ``secret_access_key`` set): the IAM user's keys.
- **Role-based** (both blank): boto3's default provider chain (environment, shared config and
  profile, web identity, container and instance roles). With ``role_arn`` set, the chain's
  credentials are only used to call STS ``AssumeRole`` (with ``external_id`` and
  ``role_session_name``); the connection then writes as the role.

Assumed-role credentials are ``DeferredRefreshableCredentials``: botocore calls the refresher
when fewer than 15 minutes remain (advisory, by one thread) and blocks on it when fewer than 10
remain, so a service running for weeks never signs a request with an expired token. The STS
client uses the connection's ``endpoint_url`` when it is set (moto and some S3-compatible stores
serve STS there) and the regional STS endpoint otherwise.

Secrets never leave this module as text: ``Secret.reveal()`` is called only to hand keys to
botocore, and nothing here logs or formats credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config as BotocoreConfig
from botocore.credentials import CredentialProvider, DeferredRefreshableCredentials

from s3forward.config import BucketAccess

if TYPE_CHECKING:
    from mypy_boto3_sts import STSClient

ASSUME_ROLE_METHOD = "s3forward-assume-role"
DEFAULT_ROLE_DURATION = 3600  # seconds; STS allows 900 up to the role's maximum session length

Refresher = Callable[[], dict[str, str]]


def build_session(
    access: BucketAccess,
    *,
    base_session: boto3.Session | None = None,
    role_duration: int = DEFAULT_ROLE_DURATION,
) -> boto3.Session:
    """A boto3 session holding the connection's credentials, in its configured region.

    ``base_session`` is where role-based mode finds the credentials that call AssumeRole (the
    default provider chain when None). ``role_duration`` is the assumed role's session length.
    """
    region = access.region
    if access.access_key_id is not None and access.secret_access_key is not None:
        return boto3.Session(
            aws_access_key_id=access.access_key_id.reveal(),
            aws_secret_access_key=access.secret_access_key.reveal(),
            region_name=region,
        )
    base = base_session or boto3.Session(region_name=region)
    if not access.role_arn:
        return base
    refresher = assume_role_refresher(access, base, duration=role_duration)
    core = botocore.session.Session()
    resolver = core.get_component("credential_provider")
    # First in the chain, so ambient credentials (env, instance role) never sign S3 requests.
    resolver.insert_before("env", _AssumeRoleProvider(refresher))
    return boto3.Session(botocore_session=core, region_name=region)


def sts_client(
    access: BucketAccess, session: boto3.Session, *, config: BotocoreConfig | None = None
) -> STSClient:
    """An STS client for ``session`` on the connection's endpoint (or the regional one)."""
    region = access.region
    endpoint = access.endpoint_url or f"https://sts.{region}.amazonaws.com"
    return session.client("sts", region_name=region, endpoint_url=endpoint, config=config)


def assume_role_refresher(
    access: BucketAccess, base: boto3.Session, *, duration: int = DEFAULT_ROLE_DURATION
) -> Refresher:
    """A function that assumes ``access.role_arn`` and returns botocore's credential dict.

    The STS client is built once, lazily, and reused by every refresh.
    """
    if not access.role_arn:
        raise ValueError(f"connection {access.connection!r} has no role_arn to assume")
    role_arn = access.role_arn
    client: list[STSClient] = []

    def refresh() -> dict[str, str]:
        if not client:
            client.append(sts_client(access, base))
        kwargs: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": access.role_session_name,
            "DurationSeconds": duration,
        }
        if access.external_id is not None:
            kwargs["ExternalId"] = access.external_id.reveal()
        answer = client[0].assume_role(**kwargs)["Credentials"]
        return {
            "access_key": answer["AccessKeyId"],
            "secret_key": answer["SecretAccessKey"],
            "token": answer["SessionToken"],
            "expiry_time": answer["Expiration"].isoformat(),
        }

    return refresh


class _AssumeRoleProvider(CredentialProvider):
    """Hands botocore credentials that assume the role on first use and before expiry."""

    METHOD = ASSUME_ROLE_METHOD
    CANONICAL_NAME = "s3forward-assume-role"

    def __init__(self, refresher: Refresher) -> None:
        super().__init__()
        self._refresher = refresher

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(refresh_using=self._refresher, method=self.METHOD)


__all__ = [
    "ASSUME_ROLE_METHOD",
    "DEFAULT_ROLE_DURATION",
    "assume_role_refresher",
    "build_session",
    "sts_client",
]
