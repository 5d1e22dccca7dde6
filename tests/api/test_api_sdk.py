"""The official mParticle Python SDK talks to the API as it would to mParticle."""

from __future__ import annotations

from typing import TYPE_CHECKING

import mparticle
import pytest
from mparticle.rest import ApiException

if TYPE_CHECKING:
    from conftest import RecordingIntake  # tests/api/conftest.py


def sdk(api_url: str, key: str, secret: str) -> mparticle.EventsApi:
    config = mparticle.Configuration()
    config.api_key = key
    config.api_secret = secret
    config.host = f"{api_url}/v2"
    return mparticle.EventsApi(config)


def sdk_batch(customer: str) -> mparticle.Batch:
    batch = mparticle.Batch()
    batch.environment = "development"
    identities = mparticle.UserIdentities()
    identities.customerid = customer
    batch.user_identities = identities
    event = mparticle.AppEvent(event_name="Button Clicked", custom_event_type="navigation")
    event.custom_attributes = {"button": "buy", "count": 2}
    screen = mparticle.ScreenViewEvent()
    screen.screen_name = "Checkout"
    batch.events = [mparticle.SessionStartEvent(), event, screen]
    return batch


def test_sdk_upload_events_is_accepted_and_recorded(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """``EventsApi.upload_events`` succeeds and the batch arrives as the SDK serialised it."""
    sdk(api_url, *web_auth).upload_events(sdk_batch("alice"))
    [submission] = intake.submitted
    assert submission.input_name == "web"
    [batch] = submission.batches
    assert batch["environment"] == "development"
    assert batch["user_identities"] == {"customerid": "alice"}
    assert [e["event_type"] for e in batch["events"]] == [
        "session_start",
        "custom_event",
        "screen_view",
    ]
    custom = batch["events"][1]["data"]
    assert custom["event_name"] == "Button Clicked"
    assert custom["custom_attributes"] == {"button": "buy", "count": 2}


def test_sdk_bulk_upload_events_is_accepted_in_order(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """``EventsApi.bulk_upload_events`` delivers both batches in one submit, in order."""
    sdk(api_url, *web_auth).bulk_upload_events([sdk_batch("b1"), sdk_batch("b2")])
    [submission] = intake.submitted
    assert [b["user_identities"]["customerid"] for b in submission.batches] == ["b1", "b2"]


def test_sdk_sees_403_for_a_wrong_secret(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """A wrong secret surfaces in the SDK as an ApiException with status 403."""
    with pytest.raises(ApiException) as raised:
        sdk(api_url, web_auth[0], "wrong").upload_events(sdk_batch("eve"))
    assert raised.value.status == 403
    assert intake.submitted == []
