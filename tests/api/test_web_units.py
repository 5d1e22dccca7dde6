"""Fast tests of the web input's pure parts: MPID hashing, the origin policy, rate limits and
quotas on an injected clock, and the promotion-action normalisation."""

from __future__ import annotations

import pytest

from s3forward.api.cors import PREFLIGHT_MAX_AGE, OriginPolicy
from s3forward.api.identity import (
    MpidIssuer,
    identify_answer,
    issued_mpids,
    known_identities,
    modify_answer,
)
from s3forward.api.ratelimit import HourlyQuota, TokenBucketLimiter, retry_after_seconds
from s3forward.errors import BatchValidationError
from s3forward.mparticle import Limits, parse_events_request, read_batches
from s3forward.mparticle.normalise import normalise_batch

KEY = b"a-long-identity-key-for-tests"

# ------------------------------------------------------------------------------ identity


def test_mpid_is_a_stable_signed_int64_for_one_device() -> None:
    issuer = MpidIssuer(KEY)
    mpid = issuer.for_device("das-1")
    assert mpid == MpidIssuer(KEY).for_device("das-1")
    assert -(2**63) <= mpid < 2**63
    assert mpid != 0
    assert issuer.for_device("das-2") != mpid


def test_mpid_depends_on_the_key_so_nobody_can_compute_it_from_an_email() -> None:
    email = "alice@example.com"
    assert MpidIssuer(KEY).for_identity("email", email) != MpidIssuer(b"other-key").for_identity(
        "email", email
    )


def test_device_and_identity_namespaces_never_collide_for_the_same_text() -> None:
    issuer = MpidIssuer(KEY)
    assert issuer.for_device("x") != issuer.for_identity("customerid", "x")
    assert issuer.for_identity("customerid", "x") != issuer.for_identity("other", "x")


def test_emails_are_compared_trimmed_and_lower_cased() -> None:
    issuer = MpidIssuer(KEY)
    assert issuer.for_identity("email", " Alice@Example.COM ") == issuer.for_identity(
        "email", "alice@example.com"
    )


def test_customerid_wins_over_email_and_logged_in_ignores_the_device() -> None:
    issuer = MpidIssuer(KEY)
    both = {"customerid": "c-1", "email": "a@b.c", "device_application_stamp": "d1"}
    mpid, logged_in = issuer.identify(both)
    assert (mpid, logged_in) == (issuer.for_identity("customerid", "c-1"), True)
    assert issuer.identify({**both, "device_application_stamp": "d2"})[0] == mpid
    assert issuer.identify({"email": "a@b.c"})[0] == issuer.for_identity("email", "a@b.c")
    assert issuer.identify({"other2": "z", "other": "y"})[0] == issuer.for_identity("other", "y")


def test_only_a_device_stamp_is_anonymous_and_nothing_at_all_is_an_error() -> None:
    issuer = MpidIssuer(KEY)
    assert issuer.identify({"device_application_stamp": "d1"}) == (issuer.for_device("d1"), False)
    with pytest.raises(BatchValidationError, match="device_application_stamp"):
        issuer.identify({})


def test_identify_answer_has_the_shape_the_web_sdk_reads() -> None:
    body = {
        "known_identities": {"email": "a@b.c", "customerid": None, "device_application_stamp": "d"}
    }
    answer = identify_answer(MpidIssuer(KEY), body)
    assert answer["mpid"] == str(MpidIssuer(KEY).for_identity("email", "a@b.c"))
    assert answer["is_logged_in"] is True
    assert answer["matched_identities"] == {"email": "a@b.c"}
    assert answer["is_ephemeral"] is False
    assert answer["context"] is None


def test_known_identities_must_be_strings() -> None:
    with pytest.raises(BatchValidationError) as caught:
        known_identities({"known_identities": {"email": 5, "customerid": "x" * 2000}})
    where = [p.where for p in caught.value.problems]
    assert where == ["known_identities.email", "known_identities.customerid"]
    with pytest.raises(BatchValidationError):
        known_identities([])


def test_modify_keeps_the_mpid() -> None:
    answer = modify_answer(7, {"identity_changes": [{"identity_type": "email"}]})
    assert answer == {"change_results": [{"identity_type": "email", "modified_mpid": "7"}]}
    with pytest.raises(BatchValidationError):
        modify_answer(7, {"identity_changes": "no"})


def test_issued_mpids_of_a_batch_are_its_device_and_user_mpids() -> None:
    issuer = MpidIssuer(KEY)
    batch = {
        "mp_deviceid": "d1",
        "user_identities": {"customer_id": "c-1", "email": "A@b.c", "other": "o"},
    }
    assert issued_mpids(issuer, batch) == {
        issuer.for_device("d1"),
        issuer.for_identity("customerid", "c-1"),
        issuer.for_identity("email", "a@b.c"),
    }
    outbound = {"user_identities": [{"identity_type": "customer_id", "identity": "c-1"}]}
    assert issued_mpids(issuer, outbound) == {issuer.for_identity("customerid", "c-1")}
    assert issued_mpids(issuer, {"user_identities": "junk", "mp_deviceid": 5}) == set()


def test_an_empty_identity_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        MpidIssuer(b"")


# ------------------------------------------------------------------------------ CORS


def test_allowed_origin_is_echoed_and_vary_is_always_set() -> None:
    policy = OriginPolicy(["https://www.example.com"])
    assert policy.answer_headers(b"https://www.example.com") == [
        (b"access-control-allow-origin", b"https://www.example.com"),
        (b"vary", b"Origin"),
    ]
    assert policy.answer_headers(b"https://evil.example") == [(b"vary", b"Origin")]
    assert policy.answer_headers(None) == [(b"vary", b"Origin")]


def test_origins_match_exactly_scheme_host_and_port() -> None:
    policy = OriginPolicy(["https://www.example.com"])
    assert policy.allows(b"HTTPS://WWW.EXAMPLE.COM")
    assert not policy.allows(b"http://www.example.com")
    assert not policy.allows(b"https://www.example.com:8443")
    assert not policy.allows(b"https://www.example.com.evil.test")
    assert not policy.allows(b"null")


def test_preflight_allows_the_sdk_headers_for_allowed_origins_only() -> None:
    policy = OriginPolicy(["https://www.example.com"])
    headers = dict(policy.preflight_headers(b"https://www.example.com"))
    assert headers[b"access-control-allow-headers"] == b"content-type, x-mp-key"
    assert b"POST" in headers[b"access-control-allow-methods"]
    assert headers[b"access-control-max-age"] == str(PREFLIGHT_MAX_AGE).encode()
    assert policy.preflight_headers(b"https://evil.example") == []


# ------------------------------------------------------------------------------ rate limits


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    limiter = TokenBucketLimiter(per_minute=60, burst=3)
    assert [limiter.take("ip", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("ip", 100.0) == pytest.approx(1.0)
    assert limiter.take("ip", 100.5) == pytest.approx(0.5)
    assert limiter.take("ip", 101.0) == 0.0
    assert limiter.take("other", 101.0) == 0.0


def test_token_bucket_refills_only_up_to_the_burst() -> None:
    limiter = TokenBucketLimiter(per_minute=60, burst=2)
    limiter.take("k", 0.0)
    assert [limiter.take("k", 1000.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take("k", 1000.0) > 0


def test_token_bucket_memory_is_bounded() -> None:
    limiter = TokenBucketLimiter(per_minute=1, burst=1, max_keys=3)
    for n in range(10):
        limiter.take(f"k{n}", 0.0)
    assert len(limiter) == 3


def test_a_clock_going_backwards_never_adds_tokens() -> None:
    limiter = TokenBucketLimiter(per_minute=60, burst=1)
    limiter.take("k", 10.0)
    assert limiter.take("k", 5.0) > 0


def test_hourly_quota_counts_batches_and_bytes_and_resets_each_hour() -> None:
    quota = HourlyQuota(batches=2, max_bytes=0)
    assert [quota.take(1, 10, 3600.0 * 5 + 10) for _ in range(2)] == [0.0, 0.0]
    assert quota.take(1, 10, 3600.0 * 5 + 100) == pytest.approx(3500.0)
    assert quota.take(1, 10, 3600.0 * 6) == 0.0
    by_bytes = HourlyQuota(batches=0, max_bytes=100)
    assert by_bytes.take(1, 60, 0.0) == 0.0
    assert by_bytes.take(1, 60, 1.0) > 0
    assert by_bytes.take(1, 40, 1.0) == 0.0


def test_no_quota_means_unlimited() -> None:
    quota = HourlyQuota(0, 0)
    assert all(quota.take(100, 10**9, 1.0) == 0.0 for _ in range(100))


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_seconds(0.01) == 1
    assert retry_after_seconds(2.1) == 3


# ------------------------------------------------------------------------------ normalisation


def _promotion(action: object) -> dict[str, object]:
    return {
        "events": [
            {"event_type": "commerce_event", "data": {"promotion_action": {"action": action}}}
        ]
    }


@pytest.mark.parametrize(("sent", "stored"), [(1, "view"), (2, "click"), ("view", "view")])
def test_promotion_action_numbers_become_the_events_api_enum(sent: object, stored: str) -> None:
    batches = parse_events_request(_promotion(sent), limits=Limits())
    assert batches[0]["events"][0]["data"]["promotion_action"]["action"] == stored


@pytest.mark.parametrize("sent", [0, 3, True, "1"])
def test_other_promotion_actions_are_still_refused(sent: object) -> None:
    with pytest.raises(BatchValidationError, match=r"promotion_action\.action"):
        parse_events_request(_promotion(sent), limits=Limits())


def test_normalisation_applies_to_files_read_by_forward_too() -> None:
    batches = read_batches(
        b'{"events":[{"event_type":"commerce_event","data":{"promotion_action":{"action":2}}}]}',
        source="f.json",
        limits=Limits(),
    )
    assert batches[0]["events"][0]["data"]["promotion_action"]["action"] == "click"


def test_normalise_leaves_non_batches_to_validation() -> None:
    for value in (None, [], {"events": "x"}, {"events": [1, {"event_type": "commerce_event"}]}):
        normalise_batch(value)
