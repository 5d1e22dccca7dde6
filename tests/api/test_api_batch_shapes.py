"""Issue 11: what is (not) an Events API batch, and alias requests, as HTTP answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
import requests

if TYPE_CHECKING:
    from conftest import RecordingIntake  # tests/api/conftest.py


def post(url: str, body: Any, auth: tuple[str, str]) -> requests.Response:
    return requests.post(
        url,
        data=orjson.dumps(body),
        auth=auth,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def messages(response: requests.Response) -> list[str]:
    return [e["message"] for e in response.json()["errors"]]


ALIAS = {
    "request_type": "alias",
    "request_id": "r-1",
    "environment": "production",
    "data": {"source_mpid": 1, "destination_mpid": 2, "start_unixtime_ms": 5},
}


def test_an_empty_object_is_refused_with_what_a_batch_needs(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """``{}`` gets 400 saying a batch needs events or user/device fields; nothing is stored."""
    response = post(f"{api_url}/v2/events", {}, web_auth)
    assert response.status_code == 400
    [message] = messages(response)
    assert message.startswith("batch: is an empty object; expected an Events API batch")
    assert '"events"' in message
    assert intake.submitted == []


def test_envelope_fields_alone_are_not_a_batch(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """Only environment and source_request_id: refused, naming the keys received."""
    body = {"environment": "production", "source_request_id": "r"}
    response = post(f"{api_url}/v2/events", body, web_auth)
    assert response.status_code == 400
    assert "keys: environment, source_request_id" in messages(response)[0]


def test_the_mobile_sdk_internal_format_is_refused_by_name(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """``{"dt": "h", "msgs": [...]}`` gets 400 naming the mobile SDKs' internal format."""
    body = {"dt": "h", "id": "x", "ct": 1700000000000, "msgs": [{"dt": "e", "n": "click"}]}
    response = post(f"{api_url}/v2/events", body, web_auth)
    assert response.status_code == 400
    [message] = messages(response)
    assert "mobile SDKs' internal upload format" in message
    assert "expected an Events API batch" in message
    assert intake.submitted == []


def test_an_idsync_request_is_refused_by_name(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """An IDSync identify body is named as such."""
    body = {"client_sdk": {"platform": "web"}, "known_identities": {"email": "a@b.c"}}
    response = post(f"{api_url}/v2/events", body, web_auth)
    assert response.status_code == 400
    assert "IDSync identity request" in messages(response)[0]


def test_one_non_batch_in_a_bulk_request_rejects_it_all(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """Bulk stays all-or-nothing: the empty second item is named by its index."""
    good = {"events": [{"event_type": "uninstall", "data": {}}]}
    response = post(f"{api_url}/v2/bulkevents", [good, {}], web_auth)
    assert response.status_code == 400
    assert messages(response)[0].startswith("batch[1]: is an empty object")
    assert intake.submitted == []


@pytest.mark.parametrize(
    "batch",
    [
        {"events": []},
        {"user_attributes": {"plan": "pro"}},
        {"mpid": 7},
        {"events": [{"event_type": "uninstall", "data": None}]},
    ],
    ids=["empty-events", "attributes-only", "mpid-only", "null-data"],
)
def test_minimal_batches_are_accepted(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str], batch: dict[str, Any]
) -> None:
    """An events array (even empty) or one user/device field makes a batch."""
    assert post(f"{api_url}/v2/events", batch, web_auth).status_code == 202
    assert intake.batches == [batch]


def test_null_events_alone_are_not_a_batch(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """``"events": null`` counts as absent, so on its own it is refused like ``{}``."""
    response = post(f"{api_url}/v2/events", {"events": None}, web_auth)
    assert response.status_code == 400


def test_two_different_customer_ids_are_refused(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """customerid and a different customer_id: 400 at user_identities.customerid."""
    body = {"user_identities": {"customerid": "a", "customer_id": "b"}}
    response = post(f"{api_url}/v2/events", body, web_auth)
    assert response.status_code == 400
    [message] = messages(response)
    assert message.startswith("batch.user_identities.customerid:")
    assert "send one of the two" in message


def test_alias_requests_are_accepted_on_the_identity_alias_endpoint(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """``POST /v1/identity/alias`` takes an alias request (202) and hands it on as received."""
    response = post(f"{api_url}/v1/identity/alias", ALIAS, web_auth)
    assert response.status_code == 202
    assert intake.batches == [ALIAS]


def test_alias_requests_are_recognised_on_the_events_endpoint(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """An alias request sent to /v2/events is accepted as an alias request, not refused."""
    assert post(f"{api_url}/v2/events", ALIAS, web_auth).status_code == 202
    assert intake.batches == [ALIAS]


def test_an_alias_request_without_mpids_is_refused(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """source_mpid and destination_mpid are required int64s."""
    body = {"request_type": "alias", "data": {"source_mpid": "x"}}
    response = post(f"{api_url}/v1/identity/alias", body, web_auth)
    assert response.status_code == 400
    found = messages(response)
    assert any(m.startswith("alias.data.source_mpid: expected an int64") for m in found)
    assert "alias.data.destination_mpid: is required (an int64 MPID)" in found


def test_a_batch_sent_to_the_alias_endpoint_is_refused(
    api_url: str, intake: RecordingIntake, web_auth: tuple[str, str]
) -> None:
    """The alias endpoint says what it expects when given an events batch."""
    response = post(f"{api_url}/v1/identity/alias", {"events": []}, web_auth)
    assert response.status_code == 400
    assert messages(response)[0].startswith("body: expected an alias request")
