"""Issue 11: mParticle's current S3 connection settings and edges, checked on what lands in moto.

Each test runs ``s3forward forward`` (the same core the service uses) against the session's moto
server with the settings matrix's harness, and asserts on the objects in the bucket.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_settings_matrix import (
    BIG_MPID,
    EXAMPLE_EVENT_DATE,
    Harness,
    example_batch,
    in_session,
    key_pattern,
    only,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SESSION_A = "aaaaaaaa-0000-4000-8000-000000000001"
SESSION_B = "bbbbbbbb-0000-4000-8000-000000000002"


@pytest.fixture
def harness(tmp_path: Path, moto_server: str, bucket: str, s3_client: S3Client) -> Harness:
    """The settings matrix's harness, on a fresh bucket of the session's moto server."""
    return Harness(tmp_path, moto_server, bucket, s3_client)


def with_device(batch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(batch)
    out["mp_deviceid"] = "das-1234"
    out["device_info"]["device"] = "Alice's iPhone"
    return out


def no_events(batch: dict[str, Any]) -> dict[str, Any]:
    return {**batch, "events": []}


def alias_request() -> dict[str, Any]:
    return {
        "request_type": "alias",
        "request_id": "req-1",
        "environment": "production",
        "api_key": "web-key",
        "data": {
            "source_mpid": 111,
            "destination_mpid": "222",
            "start_unixtime_ms": 1700000000000,
            "end_unixtime_ms": 1700000500000,
        },
    }


# ------------------------------------------------------------------- send_batches_without_events


def test_batches_without_events_are_written_by_default(harness: Harness) -> None:
    """Send Batches without Events defaults to on: an event-less batch is a line of its own."""
    landed = only(harness.run(no_events(example_batch()), example_batch()))
    assert [len(line["events"]) for line in landed.lines] == [0, 5]


def test_send_batches_without_events_off_drops_batches_left_without_events(
    harness: Harness,
) -> None:
    """Off: a batch with no events, or none left after filters, is not written; others are."""
    screen_only = example_batch()
    screen_only["events"] = [e for e in screen_only["events"] if e["event_type"] == "screen_view"]
    landed = only(
        harness.run(
            no_events(example_batch()),
            screen_only,
            example_batch(),
            send_batches_without_events=False,
            send_screen_views=False,
        )
    )
    assert [len(line["events"]) for line in landed.lines] == [4]


def test_send_batches_without_events_off_writes_no_file_for_event_less_batches(
    harness: Harness,
) -> None:
    """Off, and nothing but event-less batches: no object lands at all."""
    assert harness.run(no_events(example_batch()), send_batches_without_events=False) == []


# ------------------------------------------------------------------------- include_mp_deviceid


def test_mp_deviceid_is_removed_by_default(harness: Harness) -> None:
    """Include MP DeviceId defaults to off (mParticle's default): no line carries mp_deviceid."""
    landed = only(harness.run(with_device(example_batch())))
    assert "mp_deviceid" not in landed.lines[0]


def test_include_mp_deviceid_on_keeps_it(harness: Harness) -> None:
    """On: mp_deviceid is written as it came."""
    landed = only(harness.run(with_device(example_batch()), include_mp_deviceid=True))
    assert landed.lines[0]["mp_deviceid"] == "das-1234"


def test_mp_deviceid_still_groups_devices_when_it_is_not_written(harness: Harness) -> None:
    """Windows use mp_deviceid either way: two devices give two files even though it is removed."""
    first = with_device(example_batch())
    second = {**with_device(example_batch()), "mp_deviceid": "das-5678"}
    landed = harness.run(first, second)
    assert len(landed) == 2
    assert all("mp_deviceid" not in line for o in landed for line in o.lines)


# -------------------------------------------------------------------- metadata_field_exclusion


def test_metadata_field_exclusion_drops_ip_address_and_device_name(harness: Harness) -> None:
    """ "ip_address" removes the batch's ip; "device_name" removes device_info.device only."""
    landed = only(
        harness.run(
            with_device(example_batch()), metadata_field_exclusion=["ip_address", "device_name"]
        )
    )
    line = landed.lines[0]
    assert "ip" not in line
    assert "device" not in line["device_info"]
    assert line["device_info"]["ios_idfv"] == "1c2b3a4d-0000-4000-8000-00000000abcd"


def test_metadata_is_kept_without_exclusions(harness: Harness) -> None:
    """By default nothing is excluded: ip and the device name are written."""
    line = only(harness.run(with_device(example_batch()))).lines[0]
    assert line["ip"] == "203.0.113.7"
    assert line["device_info"]["device"] == "Alice's iPhone"


def test_metadata_field_exclusion_accepts_mparticle_labels(harness: Harness) -> None:
    """mParticle's UI labels ("IP Address") are read as the snake_case choices."""
    line = only(harness.run(example_batch(), metadata_field_exclusion=["IP Address"])).lines[0]
    assert "ip" not in line


def test_unknown_metadata_field_is_a_config_error(harness: Harness) -> None:
    """Anything but the documented choices is refused with the list of choices; nothing lands."""
    result = harness.forward(
        harness.config(metadata_field_exclusion=["user_agent"]), harness.batches(example_batch())
    )
    assert result.exit_code == 2
    assert "'device_name', 'ip_address'" in result.stderr
    assert "user_agent" in result.stderr
    assert harness.landed() == []


# ------------------------------------------------------------------------- send_alias_requests


def test_alias_requests_are_not_written_by_default(harness: Harness) -> None:
    """Send Alias Requests defaults to off: an alias request is accepted but not forwarded."""
    landed = only(harness.run(alias_request(), example_batch()))
    assert [line["message_type"] for line in landed.lines] == ["events"]


def test_send_alias_requests_on_writes_the_documented_alias_line(harness: Harness) -> None:
    """On: the alias request lands as one line in the documented form (no api_key)."""
    landed = only(harness.run(alias_request(), send_alias_requests=True))
    [line] = landed.lines
    assert line["message_type"] == "alias"
    assert line["schema_version"] == 2
    assert line["request_type"] == "alias"
    assert line["request_id"] == "req-1"
    assert line["data"] == {
        "source_mpid": 111,
        "destination_mpid": 222,
        "start_unixtime_ms": 1700000000000,
        "end_unixtime_ms": 1700000500000,
    }
    assert "api_key" not in line
    assert isinstance(line["message_id"], str)
    assert isinstance(line["timestamp_unixtime_ms"], int)


def test_only_alias_requests_with_the_setting_off_write_no_file(harness: Harness) -> None:
    """A window holding only alias requests, on a connection that does not send them: no file."""
    assert harness.run(alias_request()) == []


# ------------------------------------------------------------------------------ raw_data_feed


def test_raw_data_feed_writes_the_inbound_form(harness: Harness) -> None:
    """Raw Data Feed: identities stay a map and none of the outbound fields are added."""
    line = only(harness.run(example_batch(), raw_data_feed=True)).lines[0]
    assert line["user_identities"] == {"customerid": "cust-42", "email": "user@example.com"}
    for added in ("batch_id", "message_id", "message_type", "schema_version"):
        assert added not in line
    assert line["events"] == example_batch()["events"]


def test_raw_data_feed_still_applies_the_connection_filters(harness: Harness) -> None:
    """Filters are connection settings and still apply in the inbound form."""
    line = only(harness.run(example_batch(), raw_data_feed=True, send_screen_views=False)).lines[0]
    assert "screen_view" not in {e["event_type"] for e in line["events"]}


def test_outbound_form_is_the_default(harness: Harness) -> None:
    """Without Raw Data Feed the same batch gets the outbound form."""
    line = only(harness.run(example_batch())).lines[0]
    assert line["user_identities"][0] == {"identity_type": "customer_id", "identity": "cust-42"}
    assert line["message_type"] == "events"


# ------------------------------------------------------------------------- the outbound form


def test_every_event_gets_event_start_unixtime_ms_and_the_batch_system_notifications(
    harness: Harness,
) -> None:
    """Each event's event_start_unixtime_ms equals its timestamp; system_notifications is []."""
    line = only(harness.run(example_batch())).lines[0]
    for event in line["events"]:
        assert event["data"]["event_start_unixtime_ms"] == event["data"]["timestamp_unixtime_ms"]
    assert line["system_notifications"] == []


def test_numeric_strings_in_int64_fields_are_written_as_numbers(harness: Harness) -> None:
    """ "mpid": "123" and a string event timestamp land as JSON numbers."""
    batch = example_batch()
    batch["mpid"] = str(BIG_MPID)
    batch["events"][0]["data"]["timestamp_unixtime_ms"] = "1700000000000"
    landed = only(harness.run(batch))
    assert f'"mpid":{BIG_MPID}'.encode() in landed.ndjson
    assert landed.lines[0]["events"][0]["data"]["timestamp_unixtime_ms"] == 1700000000000


def test_a_string_event_timestamp_dates_the_folder_like_a_number(harness: Harness) -> None:
    """The date folder reads the same value that is written: a string timestamp counts."""
    batch = example_batch()
    batch["events"][0]["data"]["timestamp_unixtime_ms"] = "1700000000000"
    landed = only(harness.run(batch, store_data_in_folders_by_date="event_time"))
    assert key_pattern(date=EXAMPLE_EVENT_DATE).match(landed.key), landed.key


def test_null_events_and_null_data_are_written_as_empty(harness: Harness) -> None:
    """ "events": null lands as [] and an event's "data": null as {} (null counts as absent)."""
    null_events = {**example_batch(), "events": None}
    null_data = example_batch()
    null_data["events"] = [{"event_type": "uninstall", "data": None}]
    landed = only(harness.run(null_events, null_data))
    assert landed.lines[0]["events"] == []
    assert landed.lines[1]["events"] == [{"event_type": "uninstall", "data": {}}]


# ------------------------------------------------------------------------ sessions and names


def test_wait_for_complete_batch_splits_a_batch_of_two_sessions(harness: Harness) -> None:
    """A batch holding events of two sessions lands in two files, one per session."""
    batch = in_session(example_batch(), SESSION_A)
    for event in batch["events"][3:]:
        event["data"]["session_uuid"] = SESSION_B
    landed = harness.run(batch, wait_for_complete_batch=True)
    assert len(landed) == 2
    sessions = sorted(
        sorted({e["data"]["session_uuid"] for e in o.lines[0]["events"]}) for o in landed
    )
    assert sessions == [[SESSION_A], [SESSION_B]]
    assert sorted(len(o.lines[0]["events"]) for o in landed) == [2, 3]
    assert len({o.lines[0]["batch_id"] for o in landed}) == 1


def test_a_folder_name_that_sanitises_to_nothing_is_a_config_error(harness: Harness) -> None:
    """folder_name = "..." would put files at the bucket root: refused, nothing lands."""
    result = harness.forward(harness.config(folder_name="..."), harness.batches(example_batch()))
    assert result.exit_code == 2
    assert "folder_name" in result.stderr
    assert "no character left after sanitising" in result.stderr
    assert harness.landed() == []


def test_folder_and_app_name_follow_one_rule(harness: Harness) -> None:
    """A space becomes "_" in both the folder and the App Name; a backslash is not a separator."""
    landed = only(harness.run(example_batch(), folder_name="team data\\raw", app_name="Demo App"))
    assert landed.key.startswith("team_data_raw/Demo_App_"), landed.key


@pytest.mark.parametrize("app_name", ["..", "...", " "])
def test_an_app_name_that_sanitises_to_nothing_is_a_config_error(
    harness: Harness, app_name: str
) -> None:
    """An App Name with nothing safe in it is refused instead of silently becoming "app"."""
    result = harness.forward(harness.config(app_name=app_name), harness.batches(example_batch()))
    assert result.exit_code == 2
    assert "app_name" in result.stderr
    assert harness.landed() == []


def test_customerid_and_a_different_customer_id_are_refused(harness: Harness) -> None:
    """Two different customer ids in one batch cannot both be kept: the input is refused."""
    batch = example_batch()
    batch["user_identities"]["customer_id"] = "someone-else"
    result = harness.forward(harness.config(), harness.batches(batch))
    assert result.exit_code != 0
    assert "customerid" in result.output + result.stderr
    assert harness.landed() == []


def test_customerid_equal_to_customer_id_lands_once(harness: Harness) -> None:
    """The same customer id under both spellings is written once, as customer_id."""
    batch = example_batch()
    batch["user_identities"]["customer_id"] = "cust-42"
    identities = only(harness.run(batch)).lines[0]["user_identities"]
    assert [i for i in identities if i["identity_type"] == "customer_id"] == [
        {"identity_type": "customer_id", "identity": "cust-42"}
    ]
