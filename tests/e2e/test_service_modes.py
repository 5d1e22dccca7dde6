"""The running service, driven by the official mParticle SDK, lands each batching mode's files."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import mparticle
from servicekit import API_KEY, API_SECRET, ServiceProcess, bucket_lines, wait_for


def sdk_api(service: ServiceProcess) -> Any:
    config = mparticle.Configuration()
    config.api_key = API_KEY
    config.api_secret = API_SECRET
    config.host = f"{service.url}/v2"
    return mparticle.EventsApi(config)


DEVICES = {
    "device-a": "00000000-0000-4000-8000-00000000000a",
    "device-b": "00000000-0000-4000-8000-00000000000b",
}


def sdk_batch(device: str, events: list[Any], *, request_id: str | None = None) -> Any:
    batch = mparticle.Batch()
    batch.environment = "development"
    batch.source_request_id = request_id or str(uuid.uuid4())
    device_info = mparticle.DeviceInformation()
    device_info.ios_idfv = DEVICES[device]
    batch.device_info = device_info
    identities = mparticle.UserIdentities()
    identities.customerid = f"customer-{device}"
    batch.user_identities = identities
    batch.mpid = 1234567890123456789
    batch.events = events
    return batch


def custom_event(name: str, session: str = "s-1") -> Any:
    event = mparticle.AppEvent(event_name=name, custom_event_type="navigation")
    event.session_uuid = session
    event.timestamp_unixtime_ms = 1_700_000_000_000
    return event


def test_sdk_batches_are_grouped_per_device_into_one_file_each(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """Two devices posting through the SDK give one file per device, batches in arrival order."""
    service = start_service()
    api = sdk_api(service)
    api.upload_events(sdk_batch("device-a", [custom_event("a1")]))
    api.bulk_upload_events(
        [sdk_batch("device-b", [custom_event("b1")]), sdk_batch("device-a", [custom_event("a2")])]
    )
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[0]) == 2, 20, "two files")
    keys, lines = bucket_lines(s3_client, bucket)
    for key in keys:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}/TestApp_\d{20}_\d{5}\.txt", key), key
    names = [[e["data"]["event_name"] for e in line["events"]] for line in lines]
    assert sorted(names) == [["a1"], ["a2"], ["b1"]]
    a_lines = [n for n in names if n[0].startswith("a")]
    assert a_lines == [["a1"], ["a2"]], "a device's batches keep their arrival order"
    for line in lines:
        assert line["mpid"] == 1234567890123456789
        assert line["user_identities"][0]["identity_type"] == "customer_id"
        assert line["message_type"] == "events"
        assert line["schema_version"] == 2


def test_send_as_batch_off_writes_one_file_per_event(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """With send_as_batch off, each event becomes its own one-event batch in its own file."""
    service = start_service(connection="send_as_batch = false")
    sdk_api(service).upload_events(
        sdk_batch("device-a", [custom_event("e1"), custom_event("e2"), custom_event("e3")])
    )
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[0]) == 3, 20, "three files")
    _, lines = bucket_lines(s3_client, bucket)
    assert sorted(line["events"][0]["data"]["event_name"] for line in lines) == ["e1", "e2", "e3"]
    assert all(len(line["events"]) == 1 for line in lines)
    assert all(line["device_info"]["ios_idfv"] == DEVICES["device-a"] for line in lines)


def test_wait_for_complete_batch_seals_a_session_at_its_session_end(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """A session's batches share one file, sealed as soon as its session_end arrives."""
    service = start_service(connection='wait_for_complete_batch = true\nsession_timeout = "1h"')
    api = sdk_api(service)
    api.upload_events(sdk_batch("device-a", [custom_event("first", session="s-1")]))
    api.upload_events(sdk_batch("device-a", [custom_event("other", session="s-2")]))
    end = mparticle.SessionEndEvent()
    end.session_uuid = "s-1"
    end.session_duration_ms = 60_000
    api.upload_events(sdk_batch("device-a", [custom_event("second", session="s-1"), end]))
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[0]) == 1, 20, "the session's file")
    _, lines = bucket_lines(s3_client, bucket)
    assert [line["events"][0]["data"]["event_name"] for line in lines] == ["first", "second"]
    assert lines[1]["events"][1]["event_type"] == "session_end"


def test_a_retried_request_is_accepted_and_forwarded_once(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """The same source_request_id posted twice gets 202 both times and lands once."""
    service = start_service()
    api = sdk_api(service)
    batch = sdk_batch("device-a", [custom_event("once")], request_id="retry-me")
    api.upload_events(batch)
    api.upload_events(batch)
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[0]) == 1, 20, "one file")
    _, lines = bucket_lines(s3_client, bucket)
    assert len(lines) == 1
    status, body = service.get("/metrics")
    assert status == 200
    assert b's3forward_batches_deduplicated_total{input="app"} 1.0' in body


def test_a_bulk_request_with_one_bad_batch_stores_nothing(
    start_service: Callable[..., ServiceProcess], s3_client: Any, bucket: str
) -> None:
    """One invalid batch rejects the whole bulk request with its index, and nothing is stored."""
    service = start_service()
    good = {
        "events": [
            {
                "event_type": "custom_event",
                "data": {"event_name": "ok", "custom_event_type": "other"},
            }
        ]
    }
    bad = {"events": [{"event_type": "no_such_type", "data": {}}]}
    status, _, body = service.post("/v2/bulkevents", [good, bad, good])
    assert status == 400
    messages = [e["message"] for e in body["errors"]]
    assert any("batch[1]" in m and "no_such_type" in m for m in messages), messages
    status, _, _ = service.post("/v2/events", good)
    assert status == 202
    wait_for(lambda: len(bucket_lines(s3_client, bucket)[1]) >= 1, 20, "the good batch")
    _, lines = bucket_lines(s3_client, bucket)
    assert len(lines) == 1, "only the separately posted good batch landed"
