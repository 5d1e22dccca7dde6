"""Configuration: one TOML file -> validated, frozen settings.

Setting names are the seed's names in snake_case. Every problem is collected (not just the first)
and reported with the file, the table and the key, what was given and what is allowed. Values of
the form ``${NAME}`` are read from the environment. Unknown keys are errors, so that a typo never
silently becomes a default.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from s3forward.errors import ConfigError, Problem
from s3forward.names import clean_app_name, clean_folder

UNSELECTED_MESSAGE = "Store Data in Folders by Date must be set to a value other than 'UNSELECTED'."
FORWARDING_PREFIX = "mp-forwarding-"
ROLE_MODE_ACL = "bucket-owner-full-control"

T = TypeVar("T")


class Secret:
    """A string that never shows itself in repr, str, logs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    def __str__(self) -> str:
        return "****"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class DateFolders(StrEnum):
    """Store Data In Folders By Date."""

    UNSELECTED = "UNSELECTED"
    NONE = "none"
    EVENT_TIME = "event_time"
    UPLOAD_TIME = "upload_time"
    EVENT_TIME_OR_UPLOAD_TIME = "event_time_or_upload_time"


class Encryption(StrEnum):
    """Server Side Encryption Method."""

    NONE = "None"
    AES256 = "AES256"
    KMS = "aws:kms"
    KMS_DSSE = "aws:kms:dsse"


class BatchingMode(StrEnum):
    """How batches are grouped into files (derived from Send as Batch / Wait for Complete Batch)."""

    PER_DEVICE = "per_device"
    PER_EVENT = "per_event"
    PER_SESSION = "per_session"


class MetadataField(StrEnum):
    """Metadata Field Exclusion: the choices mParticle's docs name ("Device Name or IP Address")."""

    DEVICE_NAME = "device_name"
    IP_ADDRESS = "ip_address"


class Destination(StrEnum):
    S3 = "s3"
    LOCALDIR = "localdir"


# Issue 13: web inputs, for browsers running the mParticle Web SDK. A web input has a public API
# key and no secret; its requests are limited by origin, rate, quota and size instead.


class InputKind(StrEnum):
    SERVER = "server"
    WEB = "web"


@dataclass(frozen=True)
class WebInputSettings:
    """What a web input allows: page origins, rates, quotas, sizes, and the MPID hash key."""

    allowed_origins: tuple[str, ...]
    identity_key: Secret
    per_ip_requests_per_minute: int = 600
    per_ip_burst: int = 120
    per_device_requests_per_minute: int = 120
    per_device_burst: int = 30
    quota_batches_per_hour: int = 0
    """0: no quota."""
    quota_bytes_per_hour: int = 0
    """0: no quota."""
    max_batch_bytes: int = 128 * 1024
    sdk_flags: Mapping[str, str] = field(default_factory=dict)
    require_issued_mpid: bool = False


@dataclass(frozen=True)
class InputSettings:
    """A source of batches: its Basic-auth key and secret, and the App Name used in file names.

    A web input (issue 13) has ``web`` set and an empty ``api_secret`` that never authenticates.
    """

    name: str
    api_key: str
    api_secret: Secret
    app_name: str
    web: WebInputSettings | None = None

    @property
    def kind(self) -> InputKind:
        return InputKind.SERVER if self.web is None else InputKind.WEB


@dataclass(frozen=True)
class ConnectionSettings:
    """One S3 destination with the seed's configuration and connection settings.

    Defaults are the seed's defaults; batching caps and object options are s3forward's own.
    """

    name: str
    inputs: tuple[str, ...]
    s3_bucket_name: str
    destination: Destination = Destination.S3
    local_path: Path | None = None
    # Configuration settings (seed table 1).
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    aws_region_endpoint: str = "us-east-1"
    # Role-based authentication and S3-compatible stores.
    role_arn: str | None = None
    external_id: Secret | None = None
    role_session_name: str = "s3forward"
    require_forwarding_prefix: bool = True
    endpoint_url: str | None = None
    force_path_style: bool = False
    # Connection settings (seed table 2).
    folder_name: str = ""
    server_side_encryption_method: Encryption = Encryption.NONE
    sse_kms_key_id: str | None = None
    unique_id: str | None = None
    send_lifecycle_events: bool = True
    send_screen_views: bool = True
    send_crash_events: bool = True
    send_network_performance_events: bool = True
    send_custom_events: bool = True
    send_push_registrations_and_receipts: bool = True
    send_as_batch: bool = True
    wait_for_complete_batch: bool = False
    include_location_information: bool = True
    include_event_batch_location: bool = False
    include_user_identities: bool = True
    send_profile_change_events: bool = True
    send_commerce_events: bool = True
    store_data_in_folders_by_date: DateFolders = DateFolders.UNSELECTED
    use_compression: bool = False
    include_consent_state: bool = False
    include_metadata: bool = True
    include_user_attribute_change_events: bool = False
    include_user_identity_change_events: bool = False
    # Issue 11: mParticle's current connection settings, with mParticle's defaults.
    send_batches_without_events: bool = True
    include_mp_deviceid: bool = False
    metadata_field_exclusion: tuple[MetadataField, ...] = ()
    send_alias_requests: bool = False
    raw_data_feed: bool = False
    # Batching windows and early-seal caps (seconds / bytes / counts).
    batch_window: float = 600.0
    session_timeout: float = 1800.0
    max_session_age: float = 86400.0
    max_file_bytes: int = 16 * 1024 * 1024
    max_open_windows: int = 250_000
    max_open_bytes: int = 1024 * 1024 * 1024
    # Object options.
    storage_class: str | None = None
    object_tags: Mapping[str, str] = field(default_factory=dict)
    conditional_writes: bool = True

    @property
    def role_based(self) -> bool:
        """True when no access keys are configured (the seed's Option 1)."""
        return self.access_key_id is None and self.secret_access_key is None

    @property
    def canned_acl(self) -> str | None:
        """Role-based mode writes every object with ``bucket-owner-full-control``, as the seed."""
        return ROLE_MODE_ACL if self.role_based and self.destination is Destination.S3 else None

    # Issue 8: each part of the pipeline gets only its slice of these settings.

    @property
    def access(self) -> BucketAccess:
        """Where the bucket is and how to reach it (sinks, credentials, `check`)."""
        return BucketAccess(
            connection=self.name,
            destination=self.destination,
            bucket=self.s3_bucket_name,
            local_path=self.local_path,
            region=self.aws_region_endpoint,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            role_arn=self.role_arn,
            external_id=self.external_id,
            role_session_name=self.role_session_name,
            endpoint_url=self.endpoint_url,
            force_path_style=self.force_path_style,
        )

    @property
    def objects(self) -> ObjectOptions:
        """How each object is written (the sink)."""
        return ObjectOptions(
            encryption=self.server_side_encryption_method,
            kms_key_id=self.sse_kms_key_id,
            storage_class=self.storage_class,
            tags=dict(self.object_tags),
            conditional_writes=self.conditional_writes,
            canned_acl=self.canned_acl,
        )

    @property
    def file_settings(self) -> FileSettings:
        """What building this connection's files needs (filters, outbound form, key layout):
        no secret and nothing about the bucket; this is what is pickled to the build worker."""
        return FileSettings(**{name: getattr(self, name) for name in FileSettings.FIELDS})

    @property
    def batching_mode(self) -> BatchingMode:
        if self.wait_for_complete_batch:
            return BatchingMode.PER_SESSION
        return BatchingMode.PER_DEVICE if self.send_as_batch else BatchingMode.PER_EVENT


@dataclass(frozen=True, slots=True)
class BucketAccess:
    """Where a connection's bucket is and how to reach it. Holds secrets: never logged (Secret)
    and never sent to another process."""

    connection: str
    destination: Destination
    bucket: str
    local_path: Path | None
    region: str
    access_key_id: Secret | None
    secret_access_key: Secret | None
    role_arn: str | None
    external_id: Secret | None
    role_session_name: str
    endpoint_url: str | None
    force_path_style: bool

    def __post_init__(self) -> None:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                f"connection {self.connection!r}: set both access_key_id and "
                "secret_access_key (user-based), or neither (role-based)"
            )
        if self.destination is Destination.S3 and not self.bucket:
            raise ValueError(f"connection {self.connection!r}: s3_bucket_name is required")

    @property
    def role_based(self) -> bool:
        return self.access_key_id is None


_KMS = frozenset({Encryption.KMS, Encryption.KMS_DSSE})


@dataclass(frozen=True, slots=True)
class ObjectOptions:
    """How each object of a connection is written: encryption, class, tags, ACL."""

    encryption: Encryption
    kms_key_id: str | None
    storage_class: str | None
    tags: Mapping[str, str]
    conditional_writes: bool
    canned_acl: str | None

    def __post_init__(self) -> None:
        if self.kms_key_id and self.encryption not in _KMS:
            raise ValueError(
                f"sse_kms_key_id needs server_side_encryption_method aws:kms or aws:kms:dsse, "
                f"not {self.encryption.value}"
            )


@dataclass(frozen=True, slots=True)
class FileSettings:
    """A connection's file-building rules: event filters, the outbound form, the key layout.

    The same names as ``ConnectionSettings``, so filters and file building read either."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "name",
        "send_lifecycle_events",
        "send_screen_views",
        "send_crash_events",
        "send_network_performance_events",
        "send_custom_events",
        "send_push_registrations_and_receipts",
        "send_profile_change_events",
        "send_commerce_events",
        "include_user_attribute_change_events",
        "include_user_identity_change_events",
        "include_location_information",
        "include_event_batch_location",
        "include_user_identities",
        "include_consent_state",
        "include_metadata",
        "send_batches_without_events",
        "include_mp_deviceid",
        "metadata_field_exclusion",
        "send_alias_requests",
        "raw_data_feed",
        "unique_id",
        "folder_name",
        "store_data_in_folders_by_date",
        "use_compression",
    )

    name: str
    send_lifecycle_events: bool
    send_screen_views: bool
    send_crash_events: bool
    send_network_performance_events: bool
    send_custom_events: bool
    send_push_registrations_and_receipts: bool
    send_profile_change_events: bool
    send_commerce_events: bool
    include_user_attribute_change_events: bool
    include_user_identity_change_events: bool
    include_location_information: bool
    include_event_batch_location: bool
    include_user_identities: bool
    include_consent_state: bool
    include_metadata: bool
    send_batches_without_events: bool
    include_mp_deviceid: bool
    metadata_field_exclusion: tuple[MetadataField, ...]
    send_alias_requests: bool
    raw_data_feed: bool
    unique_id: str | None
    folder_name: str
    store_data_in_folders_by_date: DateFolders
    use_compression: bool

    def __post_init__(self) -> None:
        bad = [f for f in self.metadata_field_exclusion if not isinstance(f, MetadataField)]
        if bad:
            raise ValueError(f"metadata_field_exclusion: unknown fields {bad!r}")


BuildRules = ConnectionSettings | FileSettings
"""What filters and file building read: a connection's settings or their file slice."""


MAX_JSON_DEPTH = 200
"""Issue 10: the deepest ``server.max_json_depth`` allowed; orjson cannot write past 254 levels
and stored forms wrap a batch in a few more."""


@dataclass(frozen=True)
class ServerSettings:
    """The Events API endpoint and its limits."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_bytes: int = 128 * 1024
    max_request_bytes: int = 256 * 1024
    max_batches_per_request: int = 100
    body_timeout: float = 30.0
    status_page: bool = True
    # Issue 13: the Web SDK's endpoints.
    web_path_prefix: str = ""
    client_ip_header: str | None = None
    # Issue 10 (hardening the front door): limits on hostile or broken clients.
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    keep_alive_timeout: float = 15.0
    max_connections: int = 1024
    max_json_depth: int = 64
    # Issue 12: TLS on ingest (both or neither; re-read on reload).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Issue 10 (ingest on every core): HTTP worker processes in front of the one spool writer.
    workers: int = 1
    """HTTP processes; 1 serves in the engine's own process (no worker processes)."""

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


@dataclass(frozen=True)
class SpoolSettings:
    """The durable local buffer."""

    path: Path = Path("s3forward-data/spool.db")
    max_bytes: int = 2 * 1024 * 1024 * 1024
    dedup_window: float = 7 * 86400.0
    retry_after: int = 5


@dataclass(frozen=True)
class DeliverySettings:
    """How sealed files are written to their destination."""

    workers_per_connection: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    permanent_retry_interval: float = 300.0
    unhealthy_after: float = 120.0
    # Issue 12: bounded S3 requests, and readiness when nothing is delivered for too long.
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 10.0
    stalled_after: float = 60.0


# ---- Cluster mode on NATS JetStream (issue 9) ---------------------------------------------


class ClusterRole(StrEnum):
    """What an s3forward process does in cluster mode."""

    INGEST = "ingest"  # the Events API: publish batches to JetStream, 202 after the ack
    WORKER = "worker"  # own partitions: windows, seal log, files, delivery


@dataclass(frozen=True)
class ClusterSettings:
    """The ``[cluster]`` section: where JetStream is and how s3forward lays itself out there."""

    servers: tuple[str, ...]
    name: str = "s3f"
    roles: tuple[ClusterRole, ...] = (ClusterRole.INGEST, ClusterRole.WORKER)
    partitions: int = 32
    streams: int = 4
    replicas: int = 3
    token: Secret | None = None
    user: str | None = None
    password: Secret | None = None
    credentials_file: str | None = None
    ack_timeout: float = 2.0
    max_stream_bytes: int = 8 * 1024**3
    outage_budget: float = 86400.0
    duplicate_window: float = 600.0
    lease_ttl: float = 10.0
    tick_interval: float = 1.0
    watermark_interval: float = 5.0
    worker_id: str | None = None
    monitor_urls: tuple[str, ...] = ()
    """The servers' HTTP monitoring URLs, so that ``check`` can verify ``sync_interval``."""


def _read_cluster(table: _Table) -> ClusterSettings:
    d = ClusterSettings
    servers = table.string_list("servers")
    if not servers:
        table.problem(
            "servers", "list at least one NATS server URL, such as 'nats://10.0.0.1:4222'"
        )
    for url in servers:
        if not re.match(r"^(nats|tls)://[^\s/]+$", url):
            table.problem("servers", f"expected nats://HOST:PORT or tls://HOST:PORT, got {url!r}")
    name = table.string("name", d.name) or d.name
    if not re.match(r"^[A-Za-z0-9_-]{1,32}$", name):
        table.problem("name", f"use letters, digits, '_' or '-' (at most 32), got {name!r}")
    roles: list[ClusterRole] = []
    for role in table.string_list("roles") if table.has("roles") else [r.value for r in d.roles]:
        try:
            roles.append(ClusterRole(role))
        except ValueError:
            table.problem("roles", f"expected 'ingest' and/or 'worker', got {role!r}")
    if not roles:
        table.problem("roles", "name at least one role: 'ingest', 'worker'")
    partitions = table.integer("partitions", d.partitions, minimum=1, maximum=4096)
    streams = table.integer("streams", d.streams, minimum=1, maximum=256)
    if streams > partitions:
        table.problem("streams", f"cannot exceed partitions ({partitions}), got {streams}")
    password = _secret(table, "password")
    user = table.string("user")
    if (user is None) != (password is None):
        table.problem("password" if user else "user", "user and password go together")
    settings = ClusterSettings(
        servers=tuple(servers),
        name=name,
        roles=tuple(dict.fromkeys(roles)),
        partitions=partitions,
        streams=streams,
        replicas=table.integer("replicas", d.replicas, minimum=1, maximum=5),
        token=_secret(table, "token"),
        user=user,
        password=password,
        credentials_file=table.string("credentials_file"),
        ack_timeout=table.duration("ack_timeout", d.ack_timeout, minimum=0.05),
        max_stream_bytes=table.size("max_stream_bytes", d.max_stream_bytes, minimum=1024 * 1024),
        outage_budget=table.duration("outage_budget", d.outage_budget, minimum=0),
        duplicate_window=table.duration("duplicate_window", d.duplicate_window, minimum=1),
        lease_ttl=table.duration("lease_ttl", d.lease_ttl, minimum=1),
        tick_interval=table.duration("tick_interval", d.tick_interval, minimum=0.05),
        watermark_interval=table.duration("watermark_interval", d.watermark_interval, minimum=0.1),
        worker_id=table.string("worker_id"),
        monitor_urls=tuple(table.string_list("monitor_urls")),
    )
    table.finish()
    return settings


# ---- end of issue 9 settings --------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration."""

    inputs: Mapping[str, InputSettings]
    connections: Mapping[str, ConnectionSettings]
    server: ServerSettings = field(default_factory=ServerSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    source: str = "<embedded default>"
    cluster: ClusterSettings | None = None  # issue 9: cluster mode when [cluster] is present
    text: bytes | None = field(default=None, repr=False, compare=False)
    """The file's bytes as read (None for the embedded default): HTTP worker processes parse
    the same bytes, so they never see a file changed since the service read it."""

    def connections_for_input(self, input_name: str) -> list[ConnectionSettings]:
        return [c for c in self.connections.values() if input_name in c.inputs]


# --------------------------------------------------------------------------------------------
# Loading


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_FILE_BYTES = (1024**3, "1GiB: a file is built and uploaded whole, in memory")
"""The largest ``max_file_bytes``: a file is built in memory and sent in one PUT."""

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    None: 1,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
)


class _Table:
    """Reads one TOML table, remembering which keys were used and every problem met."""

    def __init__(
        self, data: Mapping[str, Any], where: str, problems: list[Problem], env: Mapping[str, str]
    ) -> None:
        self.data = data
        self.where = where
        self.problems = problems
        self.env = env
        self.used: set[str] = set()
        # Every key asked for, present or not: "did you mean" must suggest absent keys too.
        self.known: set[str] = set()

    def _loc(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self._loc(key), message))

    def _raw(self, key: str) -> Any:
        self.used.add(key)
        value = self.data.get(key)
        if isinstance(value, str):
            value = self._expand(key, value)
        return value

    def _expand(self, key: str, value: str) -> str | None:
        missing = [m.group(1) for m in _ENV_REF.finditer(value) if m.group(1) not in self.env]
        if missing:
            names = ", ".join(missing)
            self.problem(key, f"environment variable {names} is not set (referenced as ${{...}})")
            return None
        return _ENV_REF.sub(lambda m: self.env[m.group(1)], value)

    def _absent(self, key: str) -> bool:
        self.known.add(key)
        return key not in self.data

    def has(self, key: str) -> bool:
        return not self._absent(key)

    def string(
        self, key: str, default: str | None = None, *, required: bool = False, secret: bool = False
    ) -> str | None:
        if self._absent(key):
            if required:
                self.problem(key, "is required (a string)")
            return default
        value = self._raw(key)
        if value is None:  # failed ${ENV} expansion, already reported
            return default
        if not isinstance(value, str):
            shown = "a value that is not shown (it is a secret)" if secret else _describe(value)
            self.problem(key, f"expected a string, got {shown}")
            return default
        return value

    def optional_string(self, key: str, *, secret: bool = False) -> str | None:
        value = self.string(key, secret=secret)
        return value if value else None

    def boolean(self, key: str, default: bool) -> bool:
        if self._absent(key):
            return default
        value = self._raw(key)
        if isinstance(value, bool):
            return value
        self.problem(key, f"expected true or false, got {_describe(value)}")
        return default

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int = 2**63) -> int:
        if self._absent(key):
            return default
        value = self._raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"expected a whole number, got {_describe(value)}")
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"expected a number from {minimum} to {maximum}, got {value}")
            return default
        return value

    def size(
        self, key: str, default: int, *, minimum: int = 1, maximum: tuple[int, str] | None = None
    ) -> int:
        """A size in bytes; ``maximum`` is the largest allowed and why."""
        if self._absent(key):
            return default
        value = self._raw(key)
        parsed: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            parsed = value
        elif isinstance(value, str) and (m := _SIZE.match(value)):
            unit = m.group(2).lower() if m.group(2) else None
            parsed = int(m.group(1)) * _SIZE_UNITS[unit]
        if parsed is None:
            self.problem(
                key, f'expected a size in bytes such as 1048576 or "64MiB", got {_describe(value)}'
            )
            return default
        if parsed < minimum:
            self.problem(key, f"expected at least {minimum} bytes, got {parsed}")
            return default
        if maximum is not None and parsed > maximum[0]:
            self.problem(key, f"expected at most {maximum[0]} bytes ({maximum[1]}), got {parsed}")
            return default
        return parsed

    def duration(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        if self._absent(key):
            return default
        value = self._raw(key)
        parsed: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            parsed = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            parsed = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        if parsed is None:
            self.problem(
                key,
                f'expected seconds or a duration such as "10m", "30s", "24h", '
                f"got {_describe(value)}",
            )
            return default
        if parsed < minimum:
            self.problem(key, f"expected at least {minimum:g} seconds, got {parsed:g}")
            return default
        return parsed

    def choice(self, key: str, enum: type[T], default: T) -> T:
        if self._absent(key):
            return default
        value = self._raw(key)
        allowed = [m.value for m in enum]  # type: ignore[attr-defined]
        if isinstance(value, str):
            for member in enum:  # type: ignore[attr-defined]
                if member.value == value or member.value.lower() == value.lower():
                    return member  # type: ignore[no-any-return]
        shown = ", ".join(repr(a) for a in allowed)
        self.problem(key, f"expected one of {shown}, got {_describe(value)}")
        return default

    def string_list(self, key: str) -> list[str]:
        if self._absent(key):
            return []
        value = self._raw(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        self.problem(key, f"expected a list of names, got {_describe(value)}")
        return []

    def string_map(self, key: str) -> dict[str, str]:
        if self._absent(key):
            return {}
        value = self._raw(key)
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return dict(value)
        self.problem(key, f"expected a table of string values, got {_describe(value)}")
        return {}

    def finish(self, allowed_extra: tuple[str, ...] = ()) -> None:
        for key in self.data:
            if key not in self.used and key not in allowed_extra:
                hint = _closest(key, self.known | self.used | set(allowed_extra))
                suffix = f" (did you mean {hint!r}?)" if hint else ""
                self.problem(key, f"unknown setting{suffix}")


def _closest(key: str, known: set[str]) -> str | None:
    matches = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return matches[0] if matches else None


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _read_input(name: str, table: _Table) -> InputSettings:
    if table.choice("kind", InputKind, InputKind.SERVER) is InputKind.WEB:
        return _read_web_input(name, table)
    api_key = table.string("api_key", required=True) or ""
    api_secret = table.string("api_secret", required=True, secret=True) or ""
    app_name = table.string("app_name", name) or name
    if not app_name.strip():
        table.problem("app_name", "must not be empty")
    elif not clean_app_name(app_name):  # issue 11: one sanitising rule (names.py)
        table.problem(
            "app_name",
            f"{app_name!r} has no character left after sanitising (letters, digits and "
            "- _ . ! * ' ( ) are kept; leading dots are dropped); choose a name with letters "
            "or digits",
        )
    table.finish()
    return InputSettings(
        name=name, api_key=api_key, api_secret=Secret(api_secret), app_name=app_name
    )


# Issue 13: web inputs.
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:\d{1,5})?$|^https?://\[[0-9a-f:.]+\](:\d{1,5})?$")
_MIN_IDENTITY_KEY = 16


def _read_web_input(name: str, table: _Table) -> InputSettings:
    d = WebInputSettings
    api_key = table.string("api_key", required=True) or ""
    if table.has("api_secret"):
        table.problem(
            "api_secret",
            'is not used by a kind = "web" input: a browser cannot keep a secret, so the key '
            "is public and requests are limited by origin, rate and quota; remove it",
        )
        table.used.add("api_secret")
    app_name = table.string("app_name", name) or name
    if not app_name.strip():
        table.problem("app_name", "must not be empty")
    origins = [o.strip().rstrip("/") for o in table.string_list("allowed_origins")]
    if not origins:
        table.problem(
            "allowed_origins",
            'is required for a web input: the page origins allowed, e.g. ["https://www.example.com"]',
        )
    for origin in origins:
        if not _ORIGIN.match(origin):
            table.problem(
                "allowed_origins",
                f"{origin!r} is not an origin; expected scheme://host[:port] in lower case with "
                "no path, e.g. 'https://www.example.com'",
            )
    identity_key = table.string("identity_key", required=True, secret=True) or ""
    if identity_key and len(identity_key) < _MIN_IDENTITY_KEY:
        table.problem(
            "identity_key",
            f"must be at least {_MIN_IDENTITY_KEY} characters (a random secret, e.g. from "
            "`openssl rand -hex 32`, given as ${ENV_VAR})",
        )
    web = WebInputSettings(
        allowed_origins=tuple(dict.fromkeys(origins)),
        identity_key=Secret(identity_key),
        per_ip_requests_per_minute=table.integer(
            "per_ip_requests_per_minute", d.per_ip_requests_per_minute, minimum=1
        ),
        per_ip_burst=table.integer("per_ip_burst", d.per_ip_burst, minimum=1),
        per_device_requests_per_minute=table.integer(
            "per_device_requests_per_minute", d.per_device_requests_per_minute, minimum=1
        ),
        per_device_burst=table.integer("per_device_burst", d.per_device_burst, minimum=1),
        quota_batches_per_hour=table.integer("quota_batches_per_hour", 0, minimum=0),
        quota_bytes_per_hour=table.size("quota_bytes_per_hour", 0, minimum=0),
        max_batch_bytes=table.size("max_batch_bytes", d.max_batch_bytes, minimum=1024),
        sdk_flags=table.string_map("sdk_flags"),
        require_issued_mpid=table.boolean("require_issued_mpid", d.require_issued_mpid),
    )
    table.finish()
    return InputSettings(
        name=name, api_key=api_key, api_secret=Secret(""), app_name=app_name, web=web
    )


def _secret(table: _Table, key: str) -> Secret | None:
    value = table.optional_string(key, secret=True)
    return Secret(value) if value else None


def _read_connection(name: str, table: _Table, input_names: set[str]) -> ConnectionSettings:
    d = ConnectionSettings  # defaults come from the dataclass
    inputs = table.string_list("inputs")
    if not inputs:
        table.problem("inputs", "is required: the names of the inputs this connection forwards")
    for input_name in inputs:
        if input_name not in input_names:
            known = ", ".join(sorted(input_names)) or "none defined"
            table.problem("inputs", f"names unknown input {input_name!r} (inputs: {known})")
    destination = table.choice("destination", Destination, Destination.S3)
    local_path_str = table.optional_string("local_path")
    if destination is Destination.LOCALDIR and not local_path_str:
        table.problem("local_path", 'is required when destination = "localdir"')
    bucket = table.string("s3_bucket_name", "") or ""
    if destination is Destination.S3:
        if not bucket:
            table.problem("s3_bucket_name", "is required")
        elif not _BUCKET.match(bucket) or ".." in bucket:
            table.problem(
                "s3_bucket_name",
                f"{bucket!r} is not a valid bucket name (3-63 characters: lower-case letters, "
                "digits, '.' and '-', starting and ending with a letter or digit)",
            )
    access_key_id = _secret(table, "access_key_id")
    secret_access_key = _secret(table, "secret_access_key")
    if (access_key_id is None) != (secret_access_key is None):
        given, missing = (
            ("access_key_id", "secret_access_key")
            if access_key_id
            else ("secret_access_key", "access_key_id")
        )
        table.problem(
            missing,
            f"is empty but {given} is set: set both for user-based authentication, "
            "or leave both blank for role-based authentication",
        )
    region = table.string("aws_region_endpoint", d.aws_region_endpoint) or d.aws_region_endpoint
    if not _REGION.match(region):
        table.problem(
            "aws_region_endpoint", f"expected an AWS region such as 'us-east-1', got {region!r}"
        )
    role_arn = table.optional_string("role_arn")
    if role_arn and not role_arn.startswith("arn:"):
        table.problem(
            "role_arn",
            f"expected an ARN such as 'arn:aws:iam::123456789012:role/name', got {role_arn!r}",
        )
    require_prefix = table.boolean("require_forwarding_prefix", d.require_forwarding_prefix)
    role_based = access_key_id is None and secret_access_key is None
    if (
        destination is Destination.S3
        and role_based
        and require_prefix
        and bucket
        and not bucket.startswith(FORWARDING_PREFIX)
    ):
        table.problem(
            "s3_bucket_name",
            f"{bucket!r} must begin with {FORWARDING_PREFIX!r} for role-based authentication "
            "(no access keys set); rename the bucket, set access_key_id and secret_access_key, "
            "or set require_forwarding_prefix = false",
        )
    encryption = table.choice("server_side_encryption_method", Encryption, Encryption.NONE)
    kms_key = table.optional_string("sse_kms_key_id")
    if kms_key and encryption not in (Encryption.KMS, Encryption.KMS_DSSE):
        table.problem(
            "sse_kms_key_id",
            'is only used with server_side_encryption_method = "aws:kms" or "aws:kms:dsse"',
        )
    date_folders = _date_folders(table)
    storage_class = table.optional_string("storage_class")
    if storage_class and storage_class not in _STORAGE_CLASSES:
        table.problem(
            "storage_class", f"expected one of {', '.join(_STORAGE_CLASSES)}, got {storage_class!r}"
        )
    tags = table.string_map("object_tags")
    if len(tags) > 10:
        table.problem("object_tags", f"S3 allows at most 10 tags per object, got {len(tags)}")
    endpoint_url = table.optional_string("endpoint_url")
    if endpoint_url and not re.match(r"^https?://", endpoint_url):
        table.problem("endpoint_url", f"expected an http:// or https:// URL, got {endpoint_url!r}")
    bools = {
        key: table.boolean(key, getattr(d, key))
        for key in (
            "force_path_style",
            "send_lifecycle_events",
            "send_screen_views",
            "send_crash_events",
            "send_network_performance_events",
            "send_custom_events",
            "send_push_registrations_and_receipts",
            "send_as_batch",
            "wait_for_complete_batch",
            "include_location_information",
            "include_event_batch_location",
            "include_user_identities",
            "send_profile_change_events",
            "send_commerce_events",
            "use_compression",
            "include_consent_state",
            "include_metadata",
            "include_user_attribute_change_events",
            "include_user_identity_change_events",
            "conditional_writes",
            # issue 11
            "send_batches_without_events",
            "include_mp_deviceid",
            "send_alias_requests",
            "raw_data_feed",
        )
    }
    settings = ConnectionSettings(
        name=name,
        inputs=tuple(inputs),
        s3_bucket_name=bucket,
        destination=destination,
        local_path=Path(local_path_str) if local_path_str else None,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        aws_region_endpoint=region,
        role_arn=role_arn,
        external_id=_secret(table, "external_id"),
        role_session_name=table.string("role_session_name", d.role_session_name)
        or d.role_session_name,
        require_forwarding_prefix=require_prefix,
        endpoint_url=endpoint_url,
        folder_name=_folder_name(table),
        server_side_encryption_method=encryption,
        sse_kms_key_id=kms_key,
        unique_id=table.optional_string("unique_id"),
        store_data_in_folders_by_date=date_folders,
        batch_window=table.duration("batch_window", d.batch_window, minimum=0.001),
        session_timeout=table.duration("session_timeout", d.session_timeout, minimum=0.001),
        max_session_age=table.duration("max_session_age", d.max_session_age, minimum=0.001),
        max_file_bytes=table.size(
            "max_file_bytes", d.max_file_bytes, minimum=1024, maximum=MAX_FILE_BYTES
        ),
        max_open_windows=table.integer("max_open_windows", d.max_open_windows, minimum=1),
        max_open_bytes=table.size("max_open_bytes", d.max_open_bytes, minimum=1024),
        storage_class=storage_class,
        object_tags=tags,
        metadata_field_exclusion=_metadata_field_exclusion(table),
        **bools,
    )
    table.finish()
    return settings


# Issue 11: readers for the date-folder choice, the folder name and Metadata Field Exclusion.

_DATE_FOLDER_CHOICES = tuple(m.value for m in DateFolders if m is not DateFolders.UNSELECTED)


def _date_folders(table: _Table) -> DateFolders:
    """One error per mistake: an unknown value lists only the values a user may choose, and
    the seed's UNSELECTED sentence is reserved for a setting left (or set) at UNSELECTED."""
    key = "store_data_in_folders_by_date"
    if not table.has(key):
        table.problem(key, UNSELECTED_MESSAGE)
        return DateFolders.UNSELECTED
    value = table._raw(key)
    if value is None:  # a failed ${ENV} expansion, already reported
        return DateFolders.UNSELECTED
    if isinstance(value, str):
        if value.lower() == DateFolders.UNSELECTED.value.lower():
            table.problem(key, UNSELECTED_MESSAGE)
            return DateFolders.UNSELECTED
        for member in DateFolders:
            if member is not DateFolders.UNSELECTED and member.value.lower() == value.lower():
                return member
    shown = ", ".join(repr(c) for c in _DATE_FOLDER_CHOICES)
    table.problem(key, f"expected one of {shown}, got {_describe(value)}")
    return DateFolders.UNSELECTED


def _folder_name(table: _Table) -> str:
    folder = table.string("folder_name", "") or ""
    if folder and not clean_folder(folder):
        table.problem(
            "folder_name",
            f"{folder!r} has no character left after sanitising, so files would land in the "
            "bucket's root; remove folder_name for the root, or use letters or digits "
            "(segments '.', '..' and unsafe characters are dropped)",
        )
    return folder


def _metadata_field_exclusion(table: _Table) -> tuple[MetadataField, ...]:
    key = "metadata_field_exclusion"
    chosen: list[MetadataField] = []
    allowed = ", ".join(repr(m.value) for m in MetadataField)
    for value in table.string_list(key):
        try:
            field_ = MetadataField(value.strip().lower().replace(" ", "_"))
        except ValueError:
            table.problem(key, f"expected a list of {allowed}, got {_describe(value)} in it")
            continue
        if field_ not in chosen:
            chosen.append(field_)
    return tuple(chosen)


def _read_server(table: _Table) -> ServerSettings:
    d = ServerSettings
    listen = table.string("listen")
    host, port = d.host, d.port
    if listen is not None:
        parsed = parse_listen(listen)
        if parsed is None:
            table.problem("listen", f"expected HOST:PORT such as '127.0.0.1:8080', got {listen!r}")
        else:
            host, port = parsed
    tls = _read_tls(table)
    settings = ServerSettings(
        host=host,
        port=port,
        max_batch_bytes=table.size("max_batch_bytes", d.max_batch_bytes, minimum=1024),
        max_request_bytes=table.size("max_request_bytes", d.max_request_bytes, minimum=1024),
        max_batches_per_request=table.integer(
            "max_batches_per_request", d.max_batches_per_request, minimum=1, maximum=10_000
        ),
        body_timeout=table.duration("body_timeout", d.body_timeout, minimum=0.1),
        status_page=table.boolean("status_page", d.status_page),
        web_path_prefix=_web_path_prefix(table),
        client_ip_header=_client_ip_header(table),
        # Issue 10 (hardening the front door).
        max_header_bytes=table.size("max_header_bytes", d.max_header_bytes, minimum=1024),
        header_timeout=table.duration("header_timeout", d.header_timeout, minimum=0.1),
        keep_alive_timeout=table.duration("keep_alive_timeout", d.keep_alive_timeout, minimum=0.1),
        max_connections=table.integer(
            "max_connections", d.max_connections, minimum=1, maximum=1_000_000
        ),
        max_json_depth=table.integer(
            "max_json_depth", d.max_json_depth, minimum=8, maximum=MAX_JSON_DEPTH
        ),
        tls_cert_file=tls[0],
        tls_key_file=tls[1],
        workers=_workers(table),
    )
    table.finish()
    return settings


MAX_WORKERS = 64


def _workers(table: _Table, cpu_count: Callable[[], int | None] = os.cpu_count) -> int:
    """``[server] workers``: a whole number of HTTP processes, or ``"auto"`` (one per core)."""
    if not table.has("workers"):
        return ServerSettings.workers
    if table._raw("workers") == "auto":
        return max(1, min(MAX_WORKERS, cpu_count() or 1))
    if isinstance(table._raw("workers"), str):
        table.problem(
            "workers", f'expected a whole number or "auto", got {table._raw("workers")!r}'
        )
        return ServerSettings.workers
    return table.integer("workers", ServerSettings.workers, minimum=1, maximum=MAX_WORKERS)


# Issue 13: where the Web SDK's endpoints live, and who the client is behind a proxy.
_PATH_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _web_path_prefix(table: _Table) -> str:
    value = (table.string("web_path_prefix", "") or "").rstrip("/")
    if value and not _PATH_PREFIX.match(value):
        table.problem(
            "web_path_prefix",
            f"expected a path such as '/mp' (letters, digits, '.', '_', '~', '-' between "
            f"slashes), got {value!r}",
        )
        return ""
    return value


def _client_ip_header(table: _Table) -> str | None:
    value = table.optional_string("client_ip_header")
    if value and not _HEADER_NAME.match(value):
        table.problem(
            "client_ip_header", f"expected a header name such as 'X-Forwarded-For', got {value!r}"
        )
        return None
    return value.lower() if value else None


def _read_tls(table: _Table) -> tuple[Path | None, Path | None]:
    """Issue 12: ``tls_cert_file`` and ``tls_key_file`` (PEM), both or neither, readable."""
    paths: dict[str, Path | None] = {}
    for key in ("tls_cert_file", "tls_key_file"):
        value = table.optional_string(key)
        path = Path(value) if value else None
        if path is not None and not os.access(path, os.R_OK):
            table.problem(key, f"cannot read {str(path)!r}: give the path of a readable PEM file")
        paths[key] = path
    if (paths["tls_cert_file"] is None) != (paths["tls_key_file"] is None):
        given, missing = (
            ("tls_cert_file", "tls_key_file")
            if paths["tls_cert_file"]
            else ("tls_key_file", "tls_cert_file")
        )
        table.problem(missing, f"is required when {given} is set (TLS needs both)")
    return paths["tls_cert_file"], paths["tls_key_file"]


def parse_listen(listen: str) -> tuple[str, int] | None:
    """Parse ``HOST:PORT`` (IPv6 as ``[::1]:8080``); None when malformed."""
    m = re.match(r"^\[?([^\]]*?)\]?:(\d{1,5})$", listen.strip())
    if not m or not m.group(1) or int(m.group(2)) > 65535:
        return None
    return m.group(1), int(m.group(2))


def _read_spool(table: _Table) -> SpoolSettings:
    d = SpoolSettings
    path = table.string("path")
    settings = SpoolSettings(
        path=Path(path) if path else d.path,
        max_bytes=table.size("max_bytes", d.max_bytes, minimum=1024 * 1024),
        dedup_window=table.duration("dedup_window", d.dedup_window, minimum=0),
        retry_after=table.integer("retry_after", d.retry_after, minimum=1, maximum=3600),
    )
    table.finish()
    return settings


def _read_delivery(table: _Table) -> DeliverySettings:
    d = DeliverySettings
    settings = DeliverySettings(
        workers_per_connection=table.integer(
            "workers_per_connection", d.workers_per_connection, minimum=1, maximum=256
        ),
        backoff_base=table.duration("backoff_base", d.backoff_base, minimum=0.001),
        backoff_cap=table.duration("backoff_cap", d.backoff_cap, minimum=0.001),
        permanent_retry_interval=table.duration(
            "permanent_retry_interval", d.permanent_retry_interval, minimum=0.001
        ),
        unhealthy_after=table.duration("unhealthy_after", d.unhealthy_after, minimum=0.001),
        # Issue 12.
        s3_connect_timeout=table.duration("s3_connect_timeout", d.s3_connect_timeout, minimum=0.1),
        s3_read_timeout=table.duration("s3_read_timeout", d.s3_read_timeout, minimum=0.1),
        stalled_after=table.duration("stalled_after", d.stalled_after, minimum=0.1),
    )
    table.finish()
    return settings


def _subtables(
    root: _Table, key: str, problems: list[Problem]
) -> list[tuple[str, Mapping[str, Any]]]:
    if key not in root.data:
        return []
    root.used.add(key)
    value = root.data[key]
    if not isinstance(value, dict):
        root.problem(key, f"expected a table of named [{key}.NAME] tables, got {_describe(value)}")
        return []
    out: list[tuple[str, Mapping[str, Any]]] = []
    for name, sub in value.items():
        where = f"{root._loc(key)}.{name}"
        if not _NAME.match(name):
            problems.append(
                Problem(where, "names may use letters, digits, '_', '.', '-' (at most 63)")
            )
        if not isinstance(sub, dict):
            problems.append(Problem(where, f"expected a table, got {_describe(sub)}"))
            continue
        out.append((name, sub))
    return out


def _section(root: _Table, key: str, reader: Callable[[_Table], T], problems: list[Problem]) -> T:
    root.used.add(key)
    value = root.data.get(key, {})
    if not isinstance(value, dict):
        root.problem(key, f"expected a table, got {_describe(value)}")
        value = {}
    return reader(_Table(value, root._loc(key), problems, root.env))


def config_from_mapping(
    data: Mapping[str, Any], *, source: str, env: Mapping[str, str] | None = None
) -> Config:
    """Validate a parsed TOML document. Raises ConfigError listing every problem."""
    problems: list[Problem] = []
    environment = os.environ if env is None else env
    root = _Table(data, "", problems, environment)
    inputs: dict[str, InputSettings] = {}
    for name, sub in _subtables(root, "inputs", problems):
        inputs[name] = _read_input(name, _Table(sub, f"inputs.{name}", problems, environment))
    if not inputs and "inputs" not in data:
        problems.append(Problem("inputs", "at least one [inputs.NAME] table is required"))
    keys = [i.api_key for i in inputs.values()]
    for key in {k for k in keys if keys.count(k) > 1 and k}:
        names = ", ".join(sorted(i.name for i in inputs.values() if i.api_key == key))
        problems.append(Problem("inputs", f"inputs {names} share one api_key; each needs its own"))
    connections: dict[str, ConnectionSettings] = {}
    for name, sub in _subtables(root, "connections", problems):
        table = _Table(sub, f"connections.{name}", problems, environment)
        connections[name] = _read_connection(name, table, set(inputs))
    if not connections:
        problems.append(Problem("connections", "at least one [connections.NAME] table is required"))
    else:
        routed = {name for c in connections.values() for name in c.inputs}
        for name in sorted(set(inputs) - routed):
            # Accepting batches that no connection forwards would be a 202 for data that
            # never reaches a bucket.
            problems.append(
                Problem(
                    f"inputs.{name}",
                    "is not forwarded by any connection; add it to a connection's inputs "
                    "or remove it",
                )
            )
    server = _section(root, "server", _read_server, problems)
    spool = _section(root, "spool", _read_spool, problems)
    delivery = _section(root, "delivery", _read_delivery, problems)
    # issue 9: cluster mode only when the section is present
    cluster = _section(root, "cluster", _read_cluster, problems) if "cluster" in data else None
    root.finish()
    if problems:
        raise ConfigError([Problem(f"{source}: {p.where}", p.message) for p in problems])
    return Config(
        inputs=inputs,
        connections=connections,
        server=server,
        spool=spool,
        delivery=delivery,
        source=source,
        cluster=cluster,
    )


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(str(path), f"is not UTF-8 text (byte {exc.start})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), f"is not valid TOML: {exc}")]) from None
    return replace(config_from_mapping(data, source=str(path), env=env), text=raw)


def config_from_text(raw: bytes, *, source: str) -> Config:
    """A config from a file's bytes already read (what HTTP worker processes are sent)."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem(source, f"cannot be parsed again: {exc}")]) from None
    return replace(config_from_mapping(data, source=source), text=raw)


# Issue 12: where commands look for the config when --config is not given.
CONFIG_ENV = "S3FORWARD_CONFIG"
DEFAULT_CONFIG_PATH = Path("/etc/s3forward/s3forward.toml")


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``$S3FORWARD_CONFIG`` when set, else /etc/s3forward/s3forward.toml when it exists."""
    environment = os.environ if env is None else env
    if environment.get(CONFIG_ENV):
        return Path(environment[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


DEV_API_KEY = "dev-key"
DEV_API_SECRET = "dev-secret"  # noqa: S105 - printed development credentials, loopback only


def embedded_default(data_dir: Path = Path("s3forward-data")) -> Config:
    """The configuration `s3forward serve` uses with no --config: loopback, local files."""
    return Config(
        inputs={
            "default": InputSettings(
                name="default",
                api_key=DEV_API_KEY,
                api_secret=Secret(DEV_API_SECRET),
                app_name="s3forward-dev",
            )
        },
        connections={
            "local": ConnectionSettings(
                name="local",
                inputs=("default",),
                s3_bucket_name="",
                destination=Destination.LOCALDIR,
                local_path=data_dir / "bucket",
                store_data_in_folders_by_date=DateFolders.UPLOAD_TIME,
                batch_window=60.0,
            )
        },
        spool=SpoolSettings(path=data_dir / "spool.db"),
        source="<embedded default>",
    )


def describe_config(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain data, secrets masked. Used by validate-config."""

    def plain(value: Any) -> Any:
        if isinstance(value, Secret):
            return "****"
        if isinstance(value, WebInputSettings):  # issue 13
            return obj(value)
        if isinstance(value, StrEnum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    def obj(instance: Any) -> dict[str, Any]:
        return {f.name: plain(getattr(instance, f.name)) for f in fields(instance)}

    return {
        "source": config.source,
        "server": obj(config.server),
        "spool": obj(config.spool),
        "delivery": obj(config.delivery),
        "inputs": {name: obj(i) for name, i in config.inputs.items()},
        "connections": {
            name: {
                **obj(c),
                "authentication": "role-based" if c.role_based else "user-based",
                "batching_mode": c.batching_mode.value,
                "canned_acl": c.canned_acl,
            }
            for name, c in config.connections.items()
        },
        # issue 9: cluster mode
        **({"cluster": obj(config.cluster)} if config.cluster is not None else {}),
    }


__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "FORWARDING_PREFIX",
    "MAX_JSON_DEPTH",
    "ROLE_MODE_ACL",
    "UNSELECTED_MESSAGE",
    "BatchingMode",
    "Config",
    "ConnectionSettings",
    "DateFolders",
    "DeliverySettings",
    "Destination",
    "Encryption",
    "InputKind",
    "InputSettings",
    "MetadataField",
    "Secret",
    "ServerSettings",
    "SpoolSettings",
    "WebInputSettings",
    "config_from_mapping",
    "default_config_path",
    "describe_config",
    "embedded_default",
    "load_config",
    "parse_listen",
]
