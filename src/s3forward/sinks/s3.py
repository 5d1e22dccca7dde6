"""Amazon S3 (or any S3-compatible store) as a sink, through boto3.

This is the only module that imports botocore exceptions; ``_translate`` maps every one of them
onto ``errors.SinkError``. botocore retries a few times itself (standard mode); the delivery layer
retries forever above it, so attempts here are kept few and timeouts bounded.

Never overwriting: with ``conditional_writes`` (the default) every PUT carries
``If-None-Match: *``, which S3 answers with 412 when the key exists; the key is then read with
HEAD and its ``s3forward-sha256`` metadata decides between ``ALREADY_PRESENT`` (our own earlier
attempt) and ``KeyTakenError``. When HEAD is forbidden (role-based policies grant only PutObject
and PutObjectAcl) the object is taken to be our own earlier attempt: a clash of a microsecond
timestamp and 5 random digits with someone else's object is far less likely than a retry after a
lost response. Without ``conditional_writes`` (stores that reject the header) the sink checks
with HEAD before the PUT, which is best effort: two writers racing on one key could both PUT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from botocore.config import Config as BotocoreConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from s3forward import __version__
from s3forward.config import BucketAccess, ConnectionSettings, Encryption, ObjectOptions
from s3forward.credentials import build_session, sts_client
from s3forward.errors import KeyTakenError, PermanentSinkError, SinkError, TransientSinkError
from s3forward.layout import EncodedObject
from s3forward.sinks.base import SHA256_METADATA, WriteOutcome

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

DEFAULT_MAX_ATTEMPTS = 3
# Defaults of [delivery] s3_connect_timeout / s3_read_timeout (issue 12): a hung request gives
# up after at most about DEFAULT_MAX_ATTEMPTS * READ_TIMEOUT seconds.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
MAX_POOL_CONNECTIONS = 16

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "OperationAborted",
        "ConditionalRequestConflict",
        "KMS.ThrottlingException",
        "KMS.KMSInternalException",
    }
)

# code -> what to fix, in plain words. ``{bucket}`` and ``{region}`` are filled in.
_PERMANENT_ADVICE: Mapping[str, str] = {
    "AccessDenied": (
        "access to bucket {bucket} was denied: grant s3:PutObject (and s3:PutObjectAcl in "
        "role-based mode) on arn:aws:s3:::{bucket}/* to these credentials"
    ),
    "AllAccessDisabled": "all access to bucket {bucket} is disabled; contact its owner",
    "NoSuchBucket": ("bucket {bucket} does not exist in {region}: create it or fix s3_bucket_name"),
    "InvalidAccessKeyId": (
        "the access key id is not known to AWS: fix access_key_id for bucket {bucket}"
    ),
    "SignatureDoesNotMatch": (
        "the secret access key does not match the access key id: fix secret_access_key"
    ),
    "ExpiredToken": "the session credentials have expired: refresh them or their source",
    "InvalidToken": "the session token is malformed: fix the credentials' source",
    "PermanentRedirect": (
        "bucket {bucket} is not in {region}{actual}: set aws_region_endpoint to its region"
    ),
    "AuthorizationHeaderMalformed": (
        "bucket {bucket} is not in {region}{actual}: set aws_region_endpoint to its region"
    ),
    "InvalidBucketName": "{bucket!r} is not a valid bucket name: fix s3_bucket_name",
    "AccessControlListNotSupported": (
        "bucket {bucket} does not accept ACLs: set its Object Ownership to "
        "'Bucket owner preferred' or 'Bucket owner enforced'"
    ),
    "InvalidStorageClass": "the store rejects this storage_class: choose another",
    "RequestTimeTooSkewed": "this machine's clock is wrong by minutes: synchronise it (NTP)",
    "PutObjectAcl": (
        "these credentials may write to bucket {bucket} but not set the object's ACL: grant "
        "s3:PutObjectAcl on arn:aws:s3:::{bucket}/* (role-based mode writes every object with "
        "ACL bucket-owner-full-control)"
    ),
    "NoCredentials": (
        "no AWS credentials were found: set access_key_id and secret_access_key, or provide "
        "credentials to the default chain (environment, profile, instance or container role)"
    ),
    "KMS": (
        "the KMS key for bucket {bucket} cannot be used: check sse_kms_key_id, that the key is "
        "enabled, in {region}, and that these credentials may use it (kms:GenerateDataKey)"
    ),
}

# Codes whose message may reveal that the KMS key, not S3, refused.
_KMS_HINT_CODES = frozenset({"AccessDenied", "InvalidArgument", "InvalidRequest"})

# HEAD and some errors carry no body: only the status code tells what happened.
_STATUS_CODES = {301: "PermanentRedirect", 403: "AccessDenied", 404: "NoSuchKey"}


def build_client(
    access: BucketAccess,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> S3Client:
    """An S3 client with bounded timeouts and few retries, for the connection's bucket."""
    config = _client_config(
        access,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    return build_session(access).client("s3", endpoint_url=access.endpoint_url, config=config)


def _client_config(
    access: BucketAccess,
    *,
    max_attempts: int,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
) -> BotocoreConfig:
    return BotocoreConfig(
        region_name=access.region,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        user_agent_extra=f"s3forward/{__version__}",
        s3={"addressing_style": "path"} if access.force_path_style else None,
    )


def put_object_args(bucket: str, options: ObjectOptions, obj: EncodedObject) -> dict[str, Any]:
    """The PutObject parameters for ``obj`` in ``bucket`` with ``options``."""
    args: dict[str, Any] = {
        "Bucket": bucket,
        "Key": obj.key,
        "Body": obj.body,
        "ContentType": obj.content_type,
        "Metadata": {SHA256_METADATA: obj.sha256},
    }
    if obj.content_encoding:
        args["ContentEncoding"] = obj.content_encoding
    if options.encryption is not Encryption.NONE:
        args["ServerSideEncryption"] = options.encryption.value
        if options.kms_key_id:
            args["SSEKMSKeyId"] = options.kms_key_id
    if options.canned_acl:
        args["ACL"] = options.canned_acl
    if options.storage_class:
        args["StorageClass"] = options.storage_class
    if options.tags:
        args["Tagging"] = urlencode(dict(options.tags))
    if options.conditional_writes:
        args["IfNoneMatch"] = "*"
    return args


class S3Sink:
    """Writes objects to a connection's bucket. See the module docstring for overwrites.

    Keeps only its two slices of the connection's settings: ``BucketAccess`` (where and how)
    and ``ObjectOptions`` (how each object is written)."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        client: S3Client | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.name = settings.name
        self._access = settings.access
        self._objects = settings.objects
        self._owns_client = client is None
        self._client = client or build_client(
            self._access,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def write(self, obj: EncodedObject) -> WriteOutcome:
        """See ``Sink.write``."""
        if not self._objects.conditional_writes:
            existing = self._existing_outcome(obj, forbidden_means_present=False)
            if existing is not None:
                return existing
        try:
            self._client.put_object(**put_object_args(self._access.bucket, self._objects, obj))
        except ClientError as exc:
            if _status(exc) != 412 and _code(exc) != "PreconditionFailed":
                raise self._translate(exc) from exc
        except BotoCoreError as exc:
            raise self._translate(exc) from exc
        else:
            return WriteOutcome.CREATED
        outcome = self._existing_outcome(obj, forbidden_means_present=True)
        if outcome is None:  # deleted between our PUT and HEAD: the next attempt will PUT
            raise TransientSinkError(
                f"object {obj.key!r} in bucket {self._access.bucket} existed, then "
                "vanished; retrying",
                code="KeyVanished",
            )
        return outcome

    def close(self) -> None:
        """Release the client's connection pool (only a client this sink built)."""
        if self._owns_client:
            self._client.close()

    def _existing_outcome(
        self, obj: EncodedObject, *, forbidden_means_present: bool
    ) -> WriteOutcome | None:
        """What the object already under ``obj.key`` means: None when there is none."""
        try:
            head = self._client.head_object(Bucket=self._access.bucket, Key=obj.key)
        except ClientError as exc:
            status = _status(exc)
            if status == 404:
                return None
            if status == 403:
                # Role-based policies need not grant GetObject: we cannot look, see module doc.
                return WriteOutcome.ALREADY_PRESENT if forbidden_means_present else None
            raise self._translate(exc) from exc
        except BotoCoreError as exc:
            raise self._translate(exc) from exc
        if head.get("Metadata", {}).get(SHA256_METADATA) == obj.sha256:
            return WriteOutcome.ALREADY_PRESENT
        raise KeyTakenError(obj.key)

    def _translate(self, exc: Exception) -> SinkError:
        return _translate(exc, bucket=self._access.bucket, region=self._access.region)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _translate(exc: Exception, *, bucket: str, region: str) -> SinkError:
    """The one place botocore and HTTP errors become ``TransientSinkError``/``PermanentSinkError``.

    Messages name the bucket and region and say what to fix; they never contain credentials.
    """
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, bucket=bucket, region=region)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return _permanent("NoCredentials", bucket=bucket, region=region)
    if isinstance(exc, CredentialRetrievalError):
        return TransientSinkError(f"could not fetch AWS credentials: {exc}", code="Credentials")
    if isinstance(exc, ConnectionError | HTTPClientError | IncompleteReadError):
        kind = type(exc).__name__.removesuffix("Error")
        return TransientSinkError(
            f"network problem talking to S3 for bucket {bucket} in {region}: {exc}", code=kind
        )
    return TransientSinkError(
        f"unexpected error writing to bucket {bucket} in {region}: {type(exc).__name__}: {exc}",
        code="Unknown",
    )


def _translate_client_error(exc: ClientError, *, bucket: str, region: str) -> SinkError:
    status = _status(exc)
    code = _code(exc)
    if not code or code.isdigit():  # HEAD answers carry only a status such as "403"
        code = _STATUS_CODES.get(status, f"HTTP{status}")
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientSinkError(
            f"S3 answered {status} {code} for bucket {bucket} in {region}; retrying", code=code
        )
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    actual = headers.get("x-amz-bucket-region")
    message = str(exc.response.get("Error", {}).get("Message") or "")
    advice_key = access_problem(code, message)
    if advice_key in _PERMANENT_ADVICE:
        return _permanent(code, bucket=bucket, region=region, actual=actual, advice=advice_key)
    return PermanentSinkError(
        f"S3 answered {status} {code} for bucket {bucket} in {region}: {message}".rstrip(": "),
        code=code,
    )


def access_problem(code: str, message: str) -> str:
    """Which permission a denial is about: ``KMS``, ``PutObjectAcl``, or ``code`` itself.

    AWS names the missing action in most AccessDenied messages ("... is not authorized to
    perform: kms:GenerateDataKey ..."); KMS failures also come as ``KMS.*`` codes.
    """
    lowered = message.lower()
    if code.startswith("KMS") or (code in _KMS_HINT_CODES and "kms" in lowered):
        return "KMS"
    if code == "AccessDenied" and "putobjectacl" in lowered:
        return "PutObjectAcl"
    return code


def _permanent(
    code: str, *, bucket: str, region: str, actual: str | None = None, advice: str | None = None
) -> PermanentSinkError:
    template = _PERMANENT_ADVICE[advice or code]
    actual_text = f" (it is in {actual})" if actual else ""
    advice_text = template.format(bucket=bucket, region=region, actual=actual_text)
    return PermanentSinkError(
        f"cannot write to bucket {bucket} in {region} ({code}): {advice_text}", code=code
    )


# --------------------------------------------------------------------------------------------
# Probing a connection for `s3forward check`: each call answers a ProbeResult, never raises.


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one AWS call answered, reduced to what a check needs (no secrets, no botocore).

    ``code`` is AWS's error code (``AccessDenied``, ``NoSuchBucket``...) or one of s3forward's
    own: ``NoCredentials``, ``CredentialRetrieval``, ``ConnectionFailed``, ``Timeout``,
    ``Unknown``. ``operation`` names the call that failed, which is ``AssumeRole`` when the
    role could not be assumed. ``bucket_region`` comes from ``x-amz-bucket-region`` when S3
    sent it.
    """

    ok: bool
    value: Any = None
    code: str = ""
    status: int = 0
    message: str = ""
    operation: str = ""
    bucket_region: str | None = None


def normalize_location(constraint: str | None) -> str:
    """GetBucketLocation's answer as a region: empty means us-east-1 and ``EU`` eu-west-1."""
    if not constraint:
        return "us-east-1"
    return "eu-west-1" if constraint == "EU" else constraint


class S3Probe:
    """The calls `s3forward check` makes, with the connection's own session and endpoint."""

    def __init__(self, settings: ConnectionSettings, *, max_attempts: int = 2) -> None:
        self._access = settings.access
        self._objects = settings.objects
        self._session = build_session(self._access)
        config = _client_config(self._access, max_attempts=max_attempts)
        self._s3: S3Client = self._session.client(
            "s3", endpoint_url=self._access.endpoint_url, config=config
        )
        self._sts: STSClient = sts_client(self._access, self._session, config=config)

    def close(self) -> None:
        self._s3.close()
        self._sts.close()

    def caller_identity(self) -> ProbeResult:
        """STS GetCallerIdentity: ``value`` is ``{"account": ..., "arn": ...}``."""

        def call() -> dict[str, str]:
            answer = self._sts.get_caller_identity()
            return {"account": answer["Account"], "arn": answer["Arn"]}

        return _probe(call)

    def bucket_region(self) -> ProbeResult:
        """GetBucketLocation: ``value`` is the bucket's region, normalised."""

        def call() -> str:
            answer = self._s3.get_bucket_location(Bucket=self._access.bucket)
            return normalize_location(answer.get("LocationConstraint"))

        return _probe(call)

    def list_bucket(self, prefix: str) -> ProbeResult:
        """ListObjectsV2 for at most one key under ``prefix``."""
        bucket = self._access.bucket
        return _probe(lambda: self._s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1))

    def put(self, obj: EncodedObject, *, with_acl: bool = True) -> ProbeResult:
        """PutObject exactly as ``S3Sink.write`` sends it (optionally without the ACL)."""
        args = put_object_args(self._access.bucket, self._objects, obj)
        if not with_acl:
            args.pop("ACL", None)
        return _probe(lambda: self._s3.put_object(**args))


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _probe(call: Callable[[], Any]) -> ProbeResult:
    try:
        return ProbeResult(ok=True, value=call())
    except ClientError as exc:
        error = exc.response.get("Error", {})
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        status = _status(exc)
        code = _code(exc)
        if not code or code.isdigit():
            code = _STATUS_CODES.get(status, f"HTTP{status}")
        return ProbeResult(
            ok=False,
            code=code,
            status=status,
            message=str(error.get("Message") or ""),
            operation=exc.operation_name,
            bucket_region=headers.get("x-amz-bucket-region") or _str_or_none(error.get("Region")),
        )
    except (NoCredentialsError, PartialCredentialsError):
        return ProbeResult(ok=False, code="NoCredentials")
    except CredentialRetrievalError as exc:
        return ProbeResult(ok=False, code="CredentialRetrieval", message=str(exc))
    except (ConnectTimeoutError, ReadTimeoutError) as exc:
        return ProbeResult(ok=False, code="Timeout", message=str(exc))
    except (ConnectionError, HTTPClientError) as exc:
        return ProbeResult(ok=False, code="ConnectionFailed", message=str(exc))
    except BotoCoreError as exc:
        return ProbeResult(ok=False, code="Unknown", message=f"{type(exc).__name__}: {exc}")


__all__ = [
    "ProbeResult",
    "S3Probe",
    "S3Sink",
    "access_problem",
    "build_client",
    "build_session",
    "normalize_location",
    "put_object_args",
]
