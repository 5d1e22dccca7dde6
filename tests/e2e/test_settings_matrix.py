"""The settings matrix: every setting of the seed's two tables, checked in a real moto bucket.

Each test writes a TOML config, runs ``s3forward forward`` (click's CliRunner, in process) against
the session's moto server, and asserts on what actually landed: keys, bytes and the headers S3
reports with ``head_object``. Secrets reach the config through ``${TEST_SECRET}``.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import orjson
import pytest
from botocore.config import Config as BotocoreConfig
from click.testing import CliRunner, Result
from servicekit import run_moto

from s3forward.cli import main
from s3forward.config import UNSELECTED_MESSAGE, load_config
from s3forward.sinks.s3 import build_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SDK_EXAMPLE = Path(__file__).parents[1] / "fixtures" / "sdk-example-batch.json"
APP = "DemoApp"
SECRET_ENV = "TEST_SECRET"
EXAMPLE_EVENT_DATE = "2023-11-14"  # 1700000000000 ms, UTC
BIG_MPID = 1234567890123456789
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# The product spec's filter table, restated here so that the tests do not trust filters.py.
GOVERNED_TYPES: dict[str, tuple[str, ...]] = {
    "send_lifecycle_events": (
        "session_start",
        "session_end",
        "application_state_transition",
        "first_run",
    ),
    "send_screen_views": ("screen_view",),
    "send_crash_events": ("crash_report",),
    "send_network_performance_events": ("network_performance",),
    "send_custom_events": ("custom_event",),
    "send_push_registrations_and_receipts": ("push_registration", "push_message", "push_reaction"),
    "send_commerce_events": ("commerce_event",),
    "send_profile_change_events": ("profile",),
    "include_user_attribute_change_events": ("user_attribute_change",),
    "include_user_identity_change_events": ("user_identity_change",),
}
ALWAYS_PASS = ("opt_out", "breadcrumb", "uninstall", "pre_attribution")
ALL_TYPES = (*ALWAYS_PASS, *(t for types in GOVERNED_TYPES.values() for t in types))


def key_pattern(folder: str | None = None, date: str | None = None) -> re.Pattern[str]:
    """The seed's key shape: ``[<folder>/][<date>/]<App>_<20 digits>_<5 digits>.txt[.gz]``."""
    prefix = "".join(f"{re.escape(part)}/" for part in (folder, date) if part)
    return re.compile(rf"^{prefix}{APP}_\d{{20}}_\d{{5}}\.txt(\.gz)?$")


def toml_value(value: Any) -> str:
    """A TOML literal for a str, bool, number or list (JSON string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def example_batch() -> dict[str, Any]:
    """A fresh copy of the mParticle SDK example batch (5 events, one device, one session)."""
    data: dict[str, Any] = orjson.loads(SDK_EXAMPLE.read_bytes())
    return data


def every_type_batch() -> dict[str, Any]:
    """The example envelope with one event of each of the 19 event types."""
    batch = example_batch()
    batch["events"] = [
        {
            "event_type": event_type,
            "data": {"timestamp_unixtime_ms": 1700000000000 + index, "event_name": event_type},
        }
        for index, event_type in enumerate(ALL_TYPES)
    ]
    return batch


def on_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """``batch`` as if sent by another device (a different ``mp_deviceid``)."""
    return {**batch, "mp_deviceid": device}


def in_session(batch: dict[str, Any], session_uuid: str) -> dict[str, Any]:
    """A copy of ``batch`` whose events all belong to ``session_uuid``."""
    out = copy.deepcopy(batch)
    for event in out["events"]:
        event["data"]["session_uuid"] = session_uuid
    return out


@dataclass(frozen=True)
class Landed:
    """One object as the bucket holds it."""

    key: str
    body: bytes
    head: dict[str, Any]

    @property
    def ndjson(self) -> bytes:
        """The NDJSON content (gunzipped when the key says so)."""
        return gzip.decompress(self.body) if self.key.endswith(".gz") else self.body

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.ndjson.splitlines()]

    @property
    def event_types(self) -> set[str]:
        return {e["event_type"] for line in self.lines for e in line.get("events", [])}


class Harness:
    """Writes configs and inputs in ``tmp_path``, runs ``forward``, reads back the bucket."""

    def __init__(self, tmp_path: Path, moto_url: str, bucket: str, s3: S3Client) -> None:
        self.tmp_path = tmp_path
        self.moto_url = moto_url
        self.bucket = bucket
        self.s3 = s3
        self._count = 0

    def config(self, *, app_name: str = APP, **settings: Any) -> Path:
        """A config with one input and connection ``x``; a setting given as None is left out."""
        connection: dict[str, Any] = {
            "inputs": ["web"],
            "s3_bucket_name": self.bucket,
            "endpoint_url": self.moto_url,
            "force_path_style": True,
            "access_key_id": "testing",
            "secret_access_key": "${" + SECRET_ENV + "}",
            "store_data_in_folders_by_date": "none",
            **settings,
        }
        lines = [
            "[inputs.web]",
            'api_key = "web-key"',
            'api_secret = "web-secret"',
            f"app_name = {toml_value(app_name)}",
            "",
            "[connections.x]",
            *(f"{k} = {toml_value(v)}" for k, v in connection.items() if v is not None),
        ]
        self._count += 1
        path = self.tmp_path / f"config{self._count}.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def batches(self, *batches: dict[str, Any]) -> Path:
        """A JSON-array input file holding ``batches``."""
        self._count += 1
        path = self.tmp_path / f"input{self._count}.json"
        path.write_bytes(orjson.dumps(list(batches)))
        return path

    def forward(self, config: Path, *inputs: Path, secret: str = "testing") -> Result:
        """Run ``s3forward forward --config CONFIG INPUTS...`` with ``TEST_SECRET=secret``."""
        return CliRunner().invoke(
            main,
            ["forward", "--config", str(config), *map(str, inputs)],
            env={SECRET_ENV: secret},
        )

    def run(self, *batches: dict[str, Any], **settings: Any) -> list[Landed]:
        """Forward ``batches`` with ``settings``; the run must succeed. Returns what landed."""
        result = self.forward(self.config(**settings), self.batches(*batches))
        assert result.exit_code == 0, (result.output, result.exception)
        return self.landed()

    def landed(self, bucket: str | None = None) -> list[Landed]:
        """Every object in the bucket, by key, with its bytes and ``head_object`` answer."""
        name = bucket or self.bucket
        listing = self.s3.list_objects_v2(Bucket=name)
        out = []
        for entry in listing.get("Contents", []):
            key = entry["Key"]
            body = self.s3.get_object(Bucket=name, Key=key)["Body"].read()
            head = dict(self.s3.head_object(Bucket=name, Key=key))
            out.append(Landed(key, body, head))
        return sorted(out, key=lambda o: o.key)


@pytest.fixture
def harness(tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client) -> Harness:
    """A harness writing to a fresh bucket on the session's moto server."""
    return Harness(tmp_path, moto_server, bucket, s3_client)


def only(objects: list[Landed]) -> Landed:
    """The single object that landed (fails when there are 0 or several)."""
    assert len(objects) == 1, [o.key for o in objects]
    return objects[0]


def utc_today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


# ----------------------------------------------------------------------------- the content


def test_landed_file_is_ndjson_one_batch_per_line_with_the_outbound_envelope(
    harness: Harness,
) -> None:
    """Three batches of one device land as three NDJSON lines with the outbound fields."""
    landed = only(harness.run(example_batch(), example_batch(), example_batch()))
    assert key_pattern().match(landed.key), landed.key
    raw = landed.ndjson
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 3
    lines = landed.lines
    assert len(lines) == 3
    for line in lines:
        assert line["schema_version"] == 2
        assert line["message_type"] == "events"
        assert type(line["batch_id"]) is int
        assert UUID_RE.match(line["message_id"])
        assert len(line["events"]) == 5
    assert len({line["message_id"] for line in lines}) == 3


def test_int64_mpid_survives_exactly(harness: Harness) -> None:
    """An mpid beyond 2**53 is written with all its digits, never as a float."""
    landed = only(harness.run(example_batch()))
    assert f'"mpid":{BIG_MPID}'.encode() in landed.ndjson
    assert landed.lines[0]["mpid"] == BIG_MPID


def test_object_headers_are_plain_text_with_no_encryption_or_encoding_by_default(
    harness: Harness,
) -> None:
    """By default the object is text/plain, not gzip-encoded and not server-side encrypted."""
    landed = only(harness.run(example_batch()))
    assert landed.head["ContentType"].startswith("text/plain")
    assert "ContentEncoding" not in landed.head
    assert "ServerSideEncryption" not in landed.head
    assert landed.key.endswith(".txt")


# ------------------------------------------------------------------ bucket, folder, unique id


def test_s3_bucket_name_selects_the_bucket_that_receives_files(
    harness: Harness, s3_client: S3Client
) -> None:
    """Files land in the configured bucket and no other."""
    other = f"mp-forwarding-other-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=other)
    landed = harness.run(example_batch(), s3_bucket_name=other)
    assert landed == []
    assert len(harness.landed(other)) == 1


def test_folder_name_prefixes_every_key(harness: Harness) -> None:
    """Folder Name becomes the key prefix, nested folders included."""
    landed = only(harness.run(example_batch(), folder_name="exports/mparticle"))
    assert key_pattern("exports/mparticle").match(landed.key), landed.key


def test_hostile_folder_name_cannot_escape_its_folder(harness: Harness) -> None:
    """A folder of "../x" is neutralised to "x": no key segment is "..", none starts with "/"."""
    landed = only(harness.run(example_batch(), folder_name="../x"))
    assert key_pattern("x").match(landed.key), landed.key
    assert ".." not in landed.key.split("/")


def test_unique_id_is_on_every_line(harness: Harness) -> None:
    """Unique ID is written into every batch line."""
    landed = only(harness.run(example_batch(), example_batch(), unique_id="my-app-7"))
    assert [line["unique_id"] for line in landed.lines] == ["my-app-7", "my-app-7"]


def test_without_unique_id_lines_have_none(harness: Harness) -> None:
    """Unique ID left unset writes no ``unique_id`` field."""
    assert "unique_id" not in only(harness.run(example_batch())).lines[0]


# --------------------------------------------------------------------------------- encryption


def test_aes256_encryption_is_applied_to_the_object(harness: Harness) -> None:
    """server_side_encryption_method = "AES256" makes S3 report AES256 for the object."""
    landed = only(harness.run(example_batch(), server_side_encryption_method="AES256"))
    assert landed.head["ServerSideEncryption"] == "AES256"


def test_kms_encryption_uses_the_configured_key(harness: Harness) -> None:
    """aws:kms with sse_kms_key_id makes S3 report aws:kms and that key (moto echoes it)."""
    key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    landed = only(
        harness.run(
            example_batch(), server_side_encryption_method="aws:kms", sse_kms_key_id=key_arn
        )
    )
    assert landed.head["ServerSideEncryption"] == "aws:kms"
    assert landed.head["SSEKMSKeyId"] == key_arn


# ------------------------------------------------------------------------------ event filters


@pytest.mark.parametrize("setting", sorted(GOVERNED_TYPES))
@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_event_type_setting_governs_its_event_types(
    harness: Harness, setting: str, enabled: bool
) -> None:
    """Each event-type setting drops exactly its governed types when off and keeps them when on."""
    landed = only(harness.run(every_type_batch(), **{setting: enabled}))
    governed = set(GOVERNED_TYPES[setting])
    present = landed.event_types
    if enabled:
        assert governed <= present
    else:
        assert not governed & present
    # Every other setting is at its seed default: the two off-by-default ones drop their types.
    off_by_default = {
        t
        for name in ("include_user_attribute_change_events", "include_user_identity_change_events")
        if name != setting
        for t in GOVERNED_TYPES[name]
    }
    assert present == set(ALL_TYPES) - off_by_default - (set() if enabled else governed)


def test_batch_whose_events_are_all_filtered_is_still_written(harness: Harness) -> None:
    """A batch left with no events by the filters still lands as a line with an empty list."""
    batch = example_batch()
    batch["events"] = [e for e in batch["events"] if e["event_type"] == "screen_view"]
    landed = only(harness.run(batch, send_screen_views=False))
    assert landed.lines[0]["events"] == []


# ---------------------------------------------------------------------------- batching modes


def test_send_as_batch_on_writes_one_file_per_device(harness: Harness) -> None:
    """With Send as Batch (default) a device's batches share one file; two devices, two files."""
    first, second = on_device(example_batch(), "dev-1"), on_device(example_batch(), "dev-2")
    # include_mp_deviceid: the lines carry the device id only when asked (issue 11).
    landed = harness.run(first, second, first, include_mp_deviceid=True)
    assert len(landed) == 2
    by_device = sorted(
        (len(o.lines), {line["mp_deviceid"] for line in o.lines}.pop()) for o in landed
    )
    assert by_device == [(1, "dev-2"), (2, "dev-1")]


def test_send_as_batch_off_writes_one_file_per_event(harness: Harness) -> None:
    """Without Send as Batch each of the 5 events lands alone, inside the batch's envelope."""
    landed = harness.run(example_batch(), send_as_batch=False)
    assert len(landed) == 5
    for obj in landed:
        (line,) = obj.lines
        assert len(line["events"]) == 1
        assert line["mpid"] == BIG_MPID
    assert sorted(t for o in landed for t in o.event_types) == sorted(
        e["event_type"] for e in example_batch()["events"]
    )


def test_wait_for_complete_batch_writes_one_file_per_session(harness: Harness) -> None:
    """Wait for Complete Batch splits one device's two sessions into two files."""
    session_a = in_session(example_batch(), "aaaaaaaa-0000-4000-8000-000000000001")
    session_b = in_session(example_batch(), "bbbbbbbb-0000-4000-8000-000000000002")
    landed = harness.run(session_a, session_b, wait_for_complete_batch=True, send_as_batch=False)
    assert len(landed) == 2
    sessions = sorted(o.lines[0]["events"][0]["data"]["session_uuid"] for o in landed)
    assert sessions == [
        "aaaaaaaa-0000-4000-8000-000000000001",
        "bbbbbbbb-0000-4000-8000-000000000002",
    ]


def test_without_wait_for_complete_batch_two_sessions_share_the_device_file(
    harness: Harness,
) -> None:
    """The control for the test above: per device, the same two sessions land in one file."""
    session_a = in_session(example_batch(), "aaaaaaaa-0000-4000-8000-000000000001")
    session_b = in_session(example_batch(), "bbbbbbbb-0000-4000-8000-000000000002")
    assert len(only(harness.run(session_a, session_b)).lines) == 2


# ------------------------------------------------------------------------- removed or kept


def located_batch() -> dict[str, Any]:
    """The example batch with a location on its custom event."""
    batch = example_batch()
    batch["events"][1]["data"]["location"] = {"latitude": 40.7, "longitude": -74.0}
    return batch


def test_include_location_information_keeps_event_locations(harness: Harness) -> None:
    """Include Location Information on (default) keeps ``data.location`` on events."""
    line = only(harness.run(located_batch())).lines[0]
    assert line["events"][1]["data"]["location"] == {"latitude": 40.7, "longitude": -74.0}


def test_include_location_information_off_removes_event_locations(harness: Harness) -> None:
    """Include Location Information off removes ``data.location`` from every event."""
    line = only(harness.run(located_batch(), include_location_information=False)).lines[0]
    assert all("location" not in e["data"] for e in line["events"])
    assert line["events"][1]["data"]["event_name"] == "Button Clicked"


def test_include_event_batch_location_sets_context_location(harness: Harness) -> None:
    """Include Event Batch Location on fills ``context.location`` from the first event's."""
    line = only(harness.run(located_batch(), include_event_batch_location=True)).lines[0]
    assert line["context"]["location"] == {"latitude": 40.7, "longitude": -74.0}


def test_include_event_batch_location_off_removes_context_location(harness: Harness) -> None:
    """Include Event Batch Location off (default) removes an inbound ``context.location``."""
    batch = located_batch()
    batch["context"] = {"location": {"latitude": 1.0, "longitude": 2.0}, "data_plan": {"x": 1}}
    line = only(harness.run(batch)).lines[0]
    assert line["context"] == {"data_plan": {"x": 1}}


def test_include_user_identities_on_forwards_them_as_an_array(harness: Harness) -> None:
    """Include User Identities on (default) writes the outbound identity array."""
    line = only(harness.run(example_batch())).lines[0]
    assert line["user_identities"] == [
        {"identity_type": "customer_id", "identity": "cust-42"},
        {"identity_type": "email", "identity": "user@example.com"},
    ]


def test_include_user_identities_off_removes_them(harness: Harness) -> None:
    """Include User Identities off removes ``user_identities`` (and ``partner_identities``)."""
    batch = {**example_batch(), "partner_identities": {"p": "1"}}
    line = only(harness.run(batch, include_user_identities=False)).lines[0]
    assert "user_identities" not in line
    assert "partner_identities" not in line


@pytest.mark.parametrize("enabled", [True, False], ids=["on", "off"])
def test_include_consent_state_governs_consent_state(harness: Harness, enabled: bool) -> None:
    """Include Consent State forwards ``consent_state`` when on and removes it when off."""
    consent = {"gdpr": {"analytics": {"consented": True, "timestamp_unixtime_ms": 1}}}
    batch = {**example_batch(), "consent_state": consent}
    line = only(harness.run(batch, include_consent_state=enabled)).lines[0]
    assert (line.get("consent_state") == consent) is enabled
    assert ("consent_state" in line) is enabled


def test_include_metadata_on_keeps_application_device_and_source_info(harness: Harness) -> None:
    """Include Metadata on (default) forwards application_info, device_info and source_info."""
    batch = {**example_batch(), "source_info": {"channel": "native"}}
    line = only(harness.run(batch)).lines[0]
    assert line["application_info"] == example_batch()["application_info"]
    assert line["device_info"]["ios_idfv"] == "1c2b3a4d-0000-4000-8000-00000000abcd"
    assert line["source_info"] == {"channel": "native"}


def test_include_metadata_off_removes_metadata_but_keeps_the_package(harness: Harness) -> None:
    """Include Metadata off removes the three metadata objects, keeping the package name."""
    batch = {**example_batch(), "source_info": {"channel": "native"}}
    line = only(harness.run(batch, include_metadata=False)).lines[0]
    assert line["application_info"] == {"package": "com.example.demo"}
    assert "device_info" not in line
    assert "source_info" not in line


# ------------------------------------------------------------------------------ date folders


def test_date_folders_none_puts_no_date_in_the_key(harness: Harness) -> None:
    """store_data_in_folders_by_date = "none": the file sits directly in the folder."""
    landed = only(harness.run(example_batch(), folder_name="f"))
    assert key_pattern("f").match(landed.key), landed.key


def test_date_folders_by_event_time_use_the_first_event_date(harness: Harness) -> None:
    """event_time: the folder is the UTC date of the first event of the first batch."""
    landed = only(
        harness.run(example_batch(), folder_name="f", store_data_in_folders_by_date="event_time")
    )
    assert key_pattern("f", EXAMPLE_EVENT_DATE).match(landed.key), landed.key


def test_date_folders_by_event_time_without_events_have_no_date(harness: Harness) -> None:
    """event_time with a batch that has no events: no date folder (product spec)."""
    batch = {**example_batch(), "events": []}
    landed = only(harness.run(batch, store_data_in_folders_by_date="event_time"))
    assert key_pattern().match(landed.key), landed.key


def test_date_folders_by_upload_time_use_the_receive_date(harness: Harness) -> None:
    """upload_time: the folder is today's UTC date, not the (2023) event date."""
    before = utc_today()
    landed = only(harness.run(example_batch(), store_data_in_folders_by_date="upload_time"))
    after = utc_today()
    assert any(key_pattern(None, d).match(landed.key) for d in {before, after}), landed.key


@pytest.mark.parametrize("has_events", [True, False], ids=["events", "no-events"])
def test_date_folders_by_event_or_upload_time_fall_back_to_upload(
    harness: Harness, has_events: bool
) -> None:
    """event_time_or_upload_time: the event date, or the upload date when there are no events."""
    batch = example_batch() if has_events else {**example_batch(), "events": []}
    before = utc_today()
    landed = only(harness.run(batch, store_data_in_folders_by_date="event_time_or_upload_time"))
    after = utc_today()
    dates = {EXAMPLE_EVENT_DATE} if has_events else {before, after}
    assert any(key_pattern(None, d).match(landed.key) for d in dates), landed.key


@pytest.mark.parametrize("value", [None, "UNSELECTED"], ids=["left-out", "explicit"])
def test_unselected_date_folders_are_refused_and_nothing_is_written(
    harness: Harness, value: str | None
) -> None:
    """A connection left at UNSELECTED is refused with the seed's exact message; no file lands."""
    config = harness.config(store_data_in_folders_by_date=value)
    result = harness.forward(config, harness.batches(example_batch()))
    assert result.exit_code == 2
    assert UNSELECTED_MESSAGE in result.stderr
    assert harness.landed() == []


# ------------------------------------------------------------------------------- compression


def test_use_compression_writes_gzip_with_content_encoding(harness: Harness) -> None:
    """Use Compression: key ends .txt.gz, Content-Encoding gzip, and the body gunzips to NDJSON."""
    landed = only(harness.run(example_batch(), example_batch(), use_compression=True))
    assert landed.key.endswith(".txt.gz")
    assert key_pattern().match(landed.key)
    assert landed.head["ContentEncoding"] == "gzip"
    assert landed.body[:2] == b"\x1f\x8b"
    text = gzip.decompress(landed.body)
    assert text.endswith(b"\n")
    assert [orjson.loads(line)["mpid"] for line in text.splitlines()] == [BIG_MPID, BIG_MPID]


# ---------------------------------------------------------------------- region and identity


def test_aws_region_endpoint_writes_to_a_bucket_in_that_region(
    harness: Harness, s3_client: S3Client, tmp_path: Path
) -> None:
    """aws_region_endpoint = eu-west-1 reaches an eu-west-1 bucket with an eu-west-1 client."""
    eu_bucket = f"mp-forwarding-eu-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(
        Bucket=eu_bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    config = harness.config(s3_bucket_name=eu_bucket, aws_region_endpoint="eu-west-1")
    result = harness.forward(config, harness.batches(example_batch()))
    assert result.exit_code == 0, result.output
    assert len(harness.landed(eu_bucket)) == 1
    assert s3_client.get_bucket_location(Bucket=eu_bucket)["LocationConstraint"] == "eu-west-1"
    settings = load_config(config, env={SECRET_ENV: "testing"}).connections["x"]
    client = build_client(settings.access)
    try:
        assert client.meta.region_name == "eu-west-1"
    finally:
        client.close()


def test_region_defaults_to_us_east_1(harness: Harness) -> None:
    """Without aws_region_endpoint the client signs for us-east-1, the seed's default."""
    config = harness.config()
    settings = load_config(config, env={SECRET_ENV: "testing"}).connections["x"]
    client = build_client(settings.access)
    try:
        assert client.meta.region_name == "us-east-1"
    finally:
        client.close()


def test_role_based_mode_writes_with_the_default_credential_chain(
    harness: Harness,
) -> None:
    """With both keys blank, forward uses the environment's credentials and the object lands."""
    landed = harness.run(example_batch(), access_key_id=None, secret_access_key=None)
    assert len(landed) == 1


# Moto accepts any key unless IAM enforcement is on, so the credential tests run their own
# moto server with INITIAL_NO_AUTH_ACTION_COUNT: the first 3 actions (creating an IAM user, its
# policy and its access key) are free, everything after is authenticated and signature-checked.
_FREE_ACTIONS = 3


@dataclass(frozen=True)
class AuthMoto:
    url: str
    access_key_id: str
    secret_access_key: str
    bucket: str


@pytest.fixture(scope="module")
def auth_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMoto]:
    """A moto server that enforces IAM, with one user allowed s3:* and a bucket."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_FREE_ACTIONS)}
    with run_moto(tmp_path_factory.mktemp("auth-moto") / "moto.log", env) as url:
        common = {"endpoint_url": url, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="x", **common)
        iam.create_user(UserName="forwarder")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(
            UserName="forwarder", PolicyName="s3", PolicyDocument=json.dumps(policy)
        )
        key = iam.create_access_key(UserName="forwarder")["AccessKey"]
        iam.close()
        s3 = boto3.client(
            "s3",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            config=BotocoreConfig(s3={"addressing_style": "path"}),
            **common,
        )
        name = f"mp-forwarding-auth-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=name)
        s3.close()
        yield AuthMoto(url, key["AccessKeyId"], key["SecretAccessKey"], name)


def _auth_objects(auth: AuthMoto) -> list[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=auth.url,
        region_name="us-east-1",
        aws_access_key_id=auth.access_key_id,
        aws_secret_access_key=auth.secret_access_key,
        config=BotocoreConfig(s3={"addressing_style": "path"}),
    )
    try:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=auth.bucket).get("Contents", [])]
    finally:
        s3.close()


def _auth_config(tmp_path: Path, auth: AuthMoto, access_key_id: str) -> Path:
    path = tmp_path / "auth.toml"
    path.write_text(
        "[inputs.web]\n"
        'api_key = "k"\napi_secret = "s"\n'
        f'app_name = "{APP}"\n'
        "[connections.x]\n"
        'inputs = ["web"]\n'
        f's3_bucket_name = "{auth.bucket}"\n'
        f'endpoint_url = "{auth.url}"\n'
        "force_path_style = true\n"
        f'access_key_id = "{access_key_id}"\n'
        f'secret_access_key = "${{{SECRET_ENV}}}"\n'
        'store_data_in_folders_by_date = "none"\n',
        encoding="utf-8",
    )
    return path


def test_access_keys_from_the_environment_authenticate(tmp_path: Path, auth_moto: AuthMoto) -> None:
    """The right access key id and ${ENV} secret are accepted by an IAM-enforcing S3."""
    before = _auth_objects(auth_moto)
    input_file = tmp_path / "in.json"
    input_file.write_bytes(SDK_EXAMPLE.read_bytes())
    result = CliRunner().invoke(
        main,
        [
            "forward",
            "--config",
            str(_auth_config(tmp_path, auth_moto, auth_moto.access_key_id)),
            str(input_file),
        ],
        env={SECRET_ENV: auth_moto.secret_access_key},
    )
    assert result.exit_code == 0, result.output
    assert len(_auth_objects(auth_moto)) == len(before) + 1


@pytest.mark.parametrize("wrong", ["secret", "key-id"])
def test_wrong_credentials_fail_clearly_without_printing_the_secret(
    tmp_path: Path, auth_moto: AuthMoto, wrong: str
) -> None:
    """A wrong secret or unknown key id stops forward (exit 1) naming the setting to fix."""
    bad_secret = "wrong-secret-" + uuid.uuid4().hex
    key_id = auth_moto.access_key_id if wrong == "secret" else "AKIAUNKNOWNKEY000000"
    secret = bad_secret if wrong == "secret" else auth_moto.secret_access_key
    before = _auth_objects(auth_moto)
    input_file = tmp_path / "in.json"
    input_file.write_bytes(SDK_EXAMPLE.read_bytes())
    result = CliRunner().invoke(
        main,
        ["forward", "--config", str(_auth_config(tmp_path, auth_moto, key_id)), str(input_file)],
        env={SECRET_ENV: secret},
    )
    assert result.exit_code == 1, result.output
    expected = "secret_access_key" if wrong == "secret" else "access_key_id"
    assert expected in result.stderr
    assert "forwarding stopped" in result.stderr
    assert secret not in result.output
    assert auth_moto.secret_access_key not in result.output
    assert _auth_objects(auth_moto) == before
