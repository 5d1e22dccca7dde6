"""`s3forward check`: does each connection have what forwarding needs? Said in plain words.

For an S3 connection the steps are, in order:

1. **credentials**: they resolve, and whose they are (STS GetCallerIdentity). STS being
   unreachable or not allowed is only a warning: forwarding does not need it.
2. **bucket**: it exists and is in ``aws_region_endpoint`` (GetBucketLocation).
3. **list**: ListBucket works.
4. **write**: a verification object ``[folder/]mParticle_Bucket_Verification_yyyyMMdd-hhmmss.txt``
   holding ``{}`` is written with the connection's exact options (SSE, ACL, storage class, tags,
   ``If-None-Match``), as mParticle writes its own verification file when settings are saved.
   The name is mParticle's, so pipelines that already skip mParticle's file skip this one.

Role-based mode: the seed's bucket policy grants only PutObject and PutObjectAcl, so a denied
location or list is skipped with a note, not failed. A step is ``ok``, ``warn`` (forwarding still
works), ``skip`` (not tried, or not allowed by design) or ``fail``. A connection passes when no
step failed, which is exactly when forwarding would work. A localdir connection has one step:
its directory is writable.
"""

from __future__ import annotations

import enum
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from s3forward.config import ConnectionSettings, Destination
from s3forward.layout import encode_object, sanitize_folder
from s3forward.sinks.s3 import ProbeResult, S3Probe, access_problem

VERIFICATION_PREFIX = "mParticle_Bucket_Verification_"


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    SKIP = "skip"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Step:
    """One verified thing: what was found, and how to fix it when it is wrong."""

    name: str
    status: Status
    message: str
    fix: str = ""
    code: str = ""


@dataclass(frozen=True)
class CheckReport:
    """Every step checked for one connection."""

    connection: str
    target: str
    steps: tuple[Step, ...]

    @property
    def ok(self) -> bool:
        """True when forwarding would work: no step failed."""
        return all(step.status is not Status.FAIL for step in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "target": self.target,
            "ok": self.ok,
            "steps": [
                {
                    "name": s.name,
                    "status": s.status.value,
                    "message": s.message,
                    "fix": s.fix,
                    "code": s.code,
                }
                for s in self.steps
            ],
        }


ProbeFactory = Callable[[ConnectionSettings], S3Probe]


def check_connection(
    settings: ConnectionSettings,
    *,
    now: datetime | None = None,
    write: bool = True,
    probe_factory: ProbeFactory = S3Probe,
) -> CheckReport:
    """Verify what forwarding through ``settings`` needs. Never raises for AWS problems.

    ``write=False`` leaves out the verification object (``serve`` at start: the first delivery
    proves the write, and a restart should not leave a file behind each time).
    """
    if settings.destination is Destination.LOCALDIR:
        root = settings.local_path or Path(settings.s3_bucket_name or settings.name)
        return CheckReport(settings.name, str(root), (_check_directory(root),))
    mode = "role-based" if settings.role_based else "user-based"
    target = f"s3://{settings.s3_bucket_name} ({settings.aws_region_endpoint}, {mode})"
    if settings.endpoint_url:
        target += f" at {settings.endpoint_url}"
    probe = probe_factory(settings)
    try:
        steps = _s3_steps(settings, probe, now or datetime.now(UTC), write=write)
    finally:
        probe.close()
    return CheckReport(settings.name, target, tuple(_scrub(s, settings) for s in steps))


def _s3_steps(
    settings: ConnectionSettings, probe: S3Probe, now: datetime, *, write: bool
) -> list[Step]:
    steps = [_identity_step(settings, probe.caller_identity())]
    if steps[0].status is Status.FAIL and steps[0].code in _STOP_CODES:
        return [*steps, *_not_tried(("bucket", "list", "write"), "the credentials do not work")]
    steps.append(_region_step(settings, probe.bucket_region()))
    if steps[-1].code in _STOP_CODES:
        return [*steps, *_not_tried(("list", "write"), steps[-1].message)]
    steps.append(_list_step(settings, probe.list_bucket(sanitize_folder(settings.folder_name))))
    if write:
        steps.append(_write_step(settings, probe, now))
    return steps


# Errors after which further calls can only repeat the same failure.
_STOP_CODES = frozenset(
    {
        "NoSuchBucket",
        "ConnectionFailed",
        "Timeout",
        "NoCredentials",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "AssumeRole",
    }
)


def _not_tried(names: Iterable[str], why: str) -> list[Step]:
    return [Step(name, Status.SKIP, f"not tried: {why}") for name in names]


# ------------------------------------------------------------------------------- steps


def _identity_step(settings: ConnectionSettings, answer: ProbeResult) -> Step:
    if answer.ok:
        who = answer.value
        return Step(
            "credentials", Status.OK, f"AWS account {who['account']}, identity {who['arn']}"
        )
    if answer.operation == "AssumeRole":
        return Step(
            "credentials",
            Status.FAIL,
            f"could not assume role {settings.role_arn} ({answer.code}): {answer.message}",
            fix=(
                "the role's trust policy must allow the identity s3forward starts with to call "
                "sts:AssumeRole, with the same external_id when the policy requires one"
            ),
            code="AssumeRole",
        )
    failed = _credential_failure("credentials", settings, answer)
    if failed is not None:
        return failed
    return Step(
        "credentials",
        Status.WARN,
        f"credentials found, but STS GetCallerIdentity could not say whose they are "
        f"({answer.code}); forwarding does not need STS",
        code=answer.code,
    )


def _region_step(settings: ConnectionSettings, answer: ProbeResult) -> Step:
    bucket, region = settings.s3_bucket_name, settings.aws_region_endpoint
    if answer.ok:
        if answer.value == region:
            return Step("bucket", Status.OK, f"bucket {bucket} exists in {region}")
        return _wrong_region("bucket", settings, answer.value)
    return _failure("bucket", settings, answer, optional="GetBucketLocation")


def _list_step(settings: ConnectionSettings, answer: ProbeResult) -> Step:
    if answer.ok:
        return Step("list", Status.OK, f"listing bucket {settings.s3_bucket_name} works")
    return _failure("list", settings, answer, optional="ListBucket")


def _write_step(settings: ConnectionSettings, probe: S3Probe, now: datetime) -> Step:
    folder = sanitize_folder(settings.folder_name)
    name = f"{VERIFICATION_PREFIX}{now.astimezone(UTC):%Y%m%d-%H%M%S}.txt"
    key = f"{folder}/{name}" if folder else name
    obj = encode_object(key, b"{}", compress=False)
    answer = probe.put(obj)
    if answer.ok or answer.code in ("PreconditionFailed", "HTTP412"):
        # 412: a verification file of this very second exists; the write itself was allowed.
        return Step("write", Status.OK, f"wrote {key} with {_options(settings)}")
    if answer.code == "AccessDenied" and settings.canned_acl:
        # Tell a missing s3:PutObjectAcl from a missing s3:PutObject: try once without the ACL.
        if access_problem(answer.code, answer.message) == "KMS":
            return _failure("write", settings, answer)
        if probe.put(obj, with_acl=False).ok:
            return _access_denied_acl(settings)
    return _failure("write", settings, answer)


def _options(settings: ConnectionSettings) -> str:
    parts = [f"SSE {settings.server_side_encryption_method.value}"]
    if settings.sse_kms_key_id:
        parts.append(f"KMS key {settings.sse_kms_key_id}")
    parts.append(f"ACL {settings.canned_acl or 'none'}")
    parts.append(f"storage class {settings.storage_class or 'STANDARD'}")
    if settings.object_tags:
        parts.append(f"{len(settings.object_tags)} tags")
    return ", ".join(parts)


# ------------------------------------------------------------------------ error messages


def _failure(
    step: str, settings: ConnectionSettings, answer: ProbeResult, *, optional: str = ""
) -> Step:
    """The Step for a failed call; ``optional`` names a permission forwarding does not need."""
    bucket, region = settings.s3_bucket_name, settings.aws_region_endpoint
    code = answer.code
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"):
        return _wrong_region(step, settings, answer.bucket_region or _expected(answer.message))
    if code == "NoSuchBucket":
        return Step(
            step,
            Status.FAIL,
            f"bucket {bucket} does not exist"
            + (f" at {settings.endpoint_url}" if settings.endpoint_url else ""),
            fix=f"create bucket {bucket} in {region}, or fix s3_bucket_name",
            code=code,
        )
    failed = _credential_failure(step, settings, answer)
    if failed is not None:
        return failed
    if code in ("AccessDenied", "AllAccessDisabled") or code.startswith("KMS"):
        return _access_denied(step, settings, answer, optional=optional)
    if code in ("ConnectionFailed", "Timeout"):
        where = settings.endpoint_url or f"S3 in {region}"
        return Step(
            step,
            Status.FAIL,
            f"cannot reach {where}: {answer.message}",
            fix="check the network, proxy and firewall, and endpoint_url / aws_region_endpoint",
            code=code,
        )
    if code in ("NotImplemented", "InvalidArgument") and "if-none-match" in answer.message.lower():
        return Step(
            step,
            Status.FAIL,
            f"the store does not support conditional writes (If-None-Match): {answer.message}",
            fix="set conditional_writes = false for this connection",
            code=code,
        )
    if code == "InvalidStorageClass":
        return Step(
            step,
            Status.FAIL,
            f"the store rejects storage class {settings.storage_class}",
            fix="choose another storage_class or remove it",
            code=code,
        )
    if code == "AccessControlListNotSupported":
        return Step(
            step,
            Status.FAIL,
            f"bucket {bucket} does not accept ACLs, and role-based mode sends "
            "ACL bucket-owner-full-control",
            fix="set the bucket's Object Ownership to 'Bucket owner preferred', or use "
            "user-based keys",
            code=code,
        )
    return Step(
        step,
        Status.FAIL,
        f"S3 answered {answer.status or '-'} {code}: {answer.message}".rstrip(": "),
        fix="see the AWS error code above",
        code=code,
    )


def _credential_failure(
    step: str, settings: ConnectionSettings, answer: ProbeResult
) -> Step | None:
    code = answer.code
    keys = "access_key_id and secret_access_key"
    source = keys if not settings.role_based else "the default credential chain's source"
    messages = {
        "NoCredentials": (
            "no AWS credentials were found",
            f"set {keys}, or provide credentials to the default chain (environment, "
            "profile, web identity, container or instance role)",
        ),
        "CredentialRetrieval": (
            f"AWS credentials could not be fetched: {answer.message}",
            "check the profile, web identity token, container or instance role",
        ),
        "InvalidAccessKeyId": (
            "AWS does not know this access key id",
            f"fix access_key_id (is the key deleted or inactive?), or {source}",
        ),
        "InvalidClientTokenId": (
            "AWS does not know this access key id",
            f"fix access_key_id (is the key deleted or inactive?), or {source}",
        ),
        "SignatureDoesNotMatch": (
            "the secret access key does not match the access key id",
            "fix secret_access_key (copy it again from the IAM user's key pair)",
        ),
        "ExpiredToken": (
            "the session credentials have expired",
            "refresh the credentials' source; with role_arn, s3forward renews them itself",
        ),
        "InvalidToken": ("the session token is malformed", f"fix {source}"),
        "RequestTimeTooSkewed": (
            "this machine's clock is wrong by minutes",
            "synchronise the clock (NTP)",
        ),
    }
    if code not in messages:
        return None
    message, fix = messages[code]
    return Step(step, Status.FAIL, message, fix=fix, code=code)


def _access_denied(
    step: str, settings: ConnectionSettings, answer: ProbeResult, *, optional: str
) -> Step:
    bucket = settings.s3_bucket_name
    if access_problem(answer.code, answer.message) == "KMS":
        key = settings.sse_kms_key_id or "the bucket's default KMS key"
        return Step(
            step,
            Status.FAIL,
            f"the KMS key cannot be used ({answer.code}): {answer.message}".rstrip(": "),
            fix=f"allow kms:GenerateDataKey and kms:Decrypt on {key} for these credentials "
            "(`s3forward policy ... --kms-key-arn ARN`), check the key is enabled and in "
            f"{settings.aws_region_endpoint}",
            code="KMS",
        )
    if optional:
        note = (
            f"{optional} is denied; the seed's bucket policy for role-based mode does not grant "
            "it, and forwarding does not need it"
            if settings.role_based
            else f"{optional} is denied; the seed's IAM policy grants it, forwarding does not "
            "need it"
        )
        status = Status.SKIP if settings.role_based else Status.WARN
        fix = "" if settings.role_based else f"`s3forward policy --user --bucket {bucket}`"
        return Step(step, status, note, fix=fix, code=answer.code)
    if settings.role_based:
        fix = (
            f"allow s3:PutObject and s3:PutObjectAcl on arn:aws:s3:::{bucket}/* for the role "
            f"(`s3forward policy --bucket {bucket} --role-arn ROLE_ARN`)"
        )
    else:
        fix = (
            f"allow s3:PutObject on arn:aws:s3:::{bucket}/* in the IAM user's policy "
            f"(`s3forward policy --user --bucket {bucket}`)"
        )
    return Step(
        step,
        Status.FAIL,
        f"AccessDenied on s3:PutObject: these credentials may not write to bucket {bucket}",
        fix=fix,
        code="AccessDenied",
    )


def _access_denied_acl(settings: ConnectionSettings) -> Step:
    bucket = settings.s3_bucket_name
    return Step(
        "write",
        Status.FAIL,
        f"AccessDenied on s3:PutObjectAcl: writing to bucket {bucket} works without an ACL, "
        f"but role-based mode writes every object with ACL {settings.canned_acl}",
        fix=f"allow s3:PutObjectAcl on arn:aws:s3:::{bucket}/* for the role "
        f"(`s3forward policy --bucket {bucket} --role-arn ROLE_ARN`)",
        code="PutObjectAcl",
    )


def _wrong_region(step: str, settings: ConnectionSettings, actual: str | None) -> Step:
    bucket, region = settings.s3_bucket_name, settings.aws_region_endpoint
    where = f"is in {actual}" if actual else "is in another region"
    return Step(
        step,
        Status.FAIL,
        f"bucket {bucket} {where}, but aws_region_endpoint is {region}",
        fix=f'set aws_region_endpoint = "{actual}"'
        if actual
        else "set aws_region_endpoint to the bucket's region (S3 console, bucket properties)",
        code="WrongRegion",
    )


def _expected(message: str) -> str | None:
    """The region in "the region 'us-east-1' is wrong; expecting 'eu-west-1'"."""
    marker = "expecting '"
    start = message.find(marker)
    if start < 0:
        return None
    rest = message[start + len(marker) :]
    return rest.split("'", 1)[0] or None


def _scrub(step: Step, settings: ConnectionSettings) -> Step:
    """Remove any secret value an error message might echo back."""
    secrets = [s.reveal() for s in (settings.secret_access_key, settings.external_id) if s]
    message, fix = step.message, step.fix
    for secret in secrets:
        if secret:
            message, fix = message.replace(secret, "****"), fix.replace(secret, "****")
    return Step(step.name, step.status, message, fix, step.code)


# ------------------------------------------------------------------------------ localdir


def _check_directory(root: Path) -> Step:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".s3forward-check-", dir=root)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return Step(
            "directory",
            Status.FAIL,
            f"cannot write in {root}: {exc.strerror}",
            fix=f"create {root} and let the user running s3forward write to it",
            code="DirectoryNotWritable",
        )
    return Step("directory", Status.OK, f"{root} is writable")


# ------------------------------------------------------------------------------- output

_LABELS = {Status.OK: "OK", Status.WARN: "WARN", Status.SKIP: "SKIP", Status.FAIL: "FAIL"}


def render_text(reports: Iterable[CheckReport]) -> str:
    """One block per connection, a line per step, then the fixes: fit to paste in a ticket."""
    lines: list[str] = []
    for report in reports:
        lines.append(f"connection {report.connection!r}: {report.target}")
        width = max(len(s.name) for s in report.steps)
        for step in report.steps:
            lines.append(f"  {_LABELS[step.status]:<4}  {step.name:<{width}}  {step.message}")
        fixes = [s for s in report.steps if s.fix and s.status in (Status.FAIL, Status.WARN)]
        for step in fixes:
            lines.append(f"  fix {step.name}: {step.fix}")
        verdict = "forwarding will work" if report.ok else "forwarding will FAIL"
        lines.append(f"  result: {verdict}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def first_failure(report: CheckReport) -> Step | None:
    """The first failed step, used to say why a connection is unhealthy."""
    return next((s for s in report.steps if s.status is Status.FAIL), None)


__all__ = [
    "VERIFICATION_PREFIX",
    "CheckReport",
    "Status",
    "Step",
    "check_connection",
    "first_failure",
    "render_text",
]
