"""Request bodies, size limits, files, and the routing fields read from a batch."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.errors import BatchValidationError, PayloadTooLargeError
from s3forward.mparticle import (
    Limits,
    decode_body,
    device_key,
    ends_session,
    first_event_time_ms,
    parse_bulk_request,
    parse_events_request,
    read_batches,
    session_key,
    split_events,
)

LIMITS = Limits()
EXAMPLE = Path(__file__).parents[1] / "fixtures" / "sdk-example-batch.json"


def small_batch(**envelope: Any) -> dict[str, Any]:
    return {
        "events": [
            {"data": {"timestamp_unixtime_ms": 1_700_000_000_000}, "event_type": "first_run"}
        ],
        "environment": "production",
        **envelope,
    }


def gzip_zeros(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes, built without holding them all in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join([*parts, compressor.flush()])


# --- decode_body ---------------------------------------------------------------------------


def test_plain_json_body_is_decoded() -> None:
    """An uncompressed JSON body decodes to the same object."""
    batch = small_batch()
    assert decode_body(orjson.dumps(batch), content_encoding=None, limits=LIMITS) == batch


def test_gzip_body_is_decoded_by_header() -> None:
    """A body sent with Content-Encoding: gzip is decompressed before parsing."""
    batch = small_batch()
    body = gzip.compress(orjson.dumps(batch))
    assert decode_body(body, content_encoding="gzip", limits=LIMITS) == batch


def test_gzip_body_is_decoded_by_magic_bytes_without_header() -> None:
    """A gzip body is recognised by its magic bytes even without Content-Encoding."""
    batch = small_batch()
    body = gzip.compress(orjson.dumps(batch))
    assert decode_body(body, content_encoding=None, limits=LIMITS) == batch


def test_multi_member_gzip_body_is_decoded() -> None:
    """Concatenated gzip members decode as one stream, as gzip(1) would."""
    text = orjson.dumps(small_batch())
    body = gzip.compress(text[:10]) + gzip.compress(text[10:])
    assert decode_body(body, content_encoding="gzip", limits=LIMITS) == small_batch()


def test_broken_gzip_is_a_validation_error() -> None:
    """Corrupt gzip data is rejected as malformed, naming the body."""
    body = gzip.compress(orjson.dumps(small_batch()))
    broken = body[:10] + b"\xff" * 8 + body[18:]
    with pytest.raises(BatchValidationError) as caught:
        decode_body(broken, content_encoding="gzip", limits=LIMITS)
    assert str(caught.value).startswith("body: is not valid gzip: ")


def test_truncated_gzip_is_a_validation_error() -> None:
    """A gzip body cut short is rejected as truncated."""
    body = gzip.compress(orjson.dumps(small_batch()))[:-12]
    with pytest.raises(BatchValidationError) as caught:
        decode_body(body, content_encoding="gzip", limits=LIMITS)
    assert str(caught.value) == "body: is not valid gzip: the gzip data is truncated"


def test_gzip_bomb_is_rejected_without_decompressing_it() -> None:
    """50 MB of compressed zeros is refused as too large while allocating about the limit only."""
    bomb = gzip_zeros(50 * 1024 * 1024)
    assert len(bomb) < LIMITS.max_request_bytes
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError) as caught:
            decode_body(bomb, content_encoding="gzip", limits=LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * LIMITS.max_request_bytes
    assert str(caught.value) == (
        "body: is more than 262144 bytes after gzip decompression; "
        "the limit is 262144 bytes per request"
    )


def test_oversized_request_body_is_rejected() -> None:
    """A body over max_request_bytes is refused before parsing."""
    body = b" " * 2000 + orjson.dumps(small_batch())
    with pytest.raises(PayloadTooLargeError) as caught:
        decode_body(body, content_encoding=None, limits=Limits(max_request_bytes=1024))
    assert str(caught.value) == f"body: is {len(body)} bytes; the limit is 1024 bytes per request"


def test_invalid_json_names_line_and_column() -> None:
    """Malformed JSON is reported with orjson's reason and its position."""
    with pytest.raises(BatchValidationError) as caught:
        decode_body(b'{"a": x}', content_encoding=None, limits=LIMITS)
    assert str(caught.value) == (
        "body: is not valid JSON: unexpected character, expected a JSON value at line 1 column 7"
    )


def test_empty_body_is_rejected() -> None:
    """An empty body is malformed, and says so."""
    with pytest.raises(BatchValidationError) as caught:
        decode_body(b"  \n", content_encoding=None, limits=LIMITS)
    assert str(caught.value) == "body: is empty; expected JSON"


def test_unsupported_content_encoding_is_rejected() -> None:
    """Only gzip (or identity) bodies are accepted; others are named."""
    with pytest.raises(BatchValidationError) as caught:
        decode_body(b"{}", content_encoding="br", limits=LIMITS)
    assert str(caught.value) == (
        "Content-Encoding: 'br' is not supported; send gzip or an uncompressed body"
    )


def test_int64_extremes_round_trip_exactly() -> None:
    """int64 max and min survive decode -> validate -> encode bit for bit, as integers."""
    text = (
        b'{"mpid":9223372036854775807,"events":[{"event_type":"first_run",'
        b'"data":{"event_id":-9223372036854775808,"session_id":"9223372036854775807"}}]}'
    )
    [batch] = parse_events_request(
        decode_body(text, content_encoding=None, limits=LIMITS), limits=LIMITS
    )
    assert batch["mpid"] == 2**63 - 1
    assert batch["events"][0]["data"]["event_id"] == -(2**63)
    assert orjson.dumps(batch) == text


# --- size limits ---------------------------------------------------------------------------


def test_oversized_batch_is_rejected_with_its_size() -> None:
    """A batch whose compact JSON is over max_batch_bytes is refused with its size."""
    batch = small_batch(user_attributes={"blob": "x" * 2000})
    size = len(orjson.dumps(batch))
    with pytest.raises(PayloadTooLargeError) as caught:
        parse_events_request(batch, limits=Limits(max_batch_bytes=1024))
    assert str(caught.value) == f"batch: is {size} bytes; the limit is 1024 bytes per batch"


def test_oversized_batch_in_bulk_names_its_index() -> None:
    """In a bulk request the oversized batch is named by its index."""
    big = small_batch(user_attributes={"blob": "x" * 2000})
    with pytest.raises(PayloadTooLargeError) as caught:
        parse_bulk_request([small_batch(), big], limits=Limits(max_batch_bytes=1024))
    [problem] = caught.value.problems
    assert problem.where == "batch[1]"


def test_bulk_request_over_batch_count_is_rejected() -> None:
    """More than max_batches batches in one request is too large."""
    with pytest.raises(PayloadTooLargeError) as caught:
        parse_bulk_request([small_batch()] * 3, limits=Limits(max_batches=2))
    assert str(caught.value) == "body: holds 3 batches; the limit is 2 per request"


def test_bulk_request_must_be_an_array() -> None:
    """POST /v2/bulkevents needs a JSON array."""
    with pytest.raises(BatchValidationError) as caught:
        parse_bulk_request(small_batch(), limits=LIMITS)
    assert str(caught.value) == "body: expected an array of batches, got an object"


def test_bulk_request_returns_the_same_batch_objects() -> None:
    """Accepted batches are returned as the very objects decoded, in order."""
    batches = [small_batch(mpid=1), small_batch(mpid=2)]
    returned = parse_bulk_request(batches, limits=LIMITS)
    assert all(a is b for a, b in zip(returned, batches, strict=True))


def test_example_batch_from_the_reference_is_accepted() -> None:
    """The shared SDK example batch decodes and validates."""
    body = EXAMPLE.read_bytes()
    [batch] = parse_events_request(
        decode_body(body, content_encoding=None, limits=LIMITS), limits=LIMITS
    )
    assert batch["mpid"] == 1234567890123456789
    assert len(batch["events"]) == 5


# --- read_batches --------------------------------------------------------------------------


def test_file_with_one_batch_is_read() -> None:
    """A pretty-printed single batch file gives one batch."""
    batches = read_batches(EXAMPLE.read_bytes(), source="x.json", limits=LIMITS)
    assert len(batches) == 1


def test_file_with_array_of_batches_is_read() -> None:
    """A JSON array file gives its batches in order."""
    data = orjson.dumps([small_batch(mpid=1), small_batch(mpid=2)])
    assert [b["mpid"] for b in read_batches(data, source="x", limits=LIMITS)] == [1, 2]


def test_gzipped_ndjson_file_is_read_skipping_blank_lines() -> None:
    """Gzipped NDJSON gives one batch per non-blank line."""
    lines = [orjson.dumps(small_batch(mpid=n)) for n in (1, 2, 3)]
    data = gzip.compress(lines[0] + b"\n\n" + lines[1] + b"\r\n" + lines[2] + b"\n")
    assert [b["mpid"] for b in read_batches(data, source="x", limits=LIMITS)] == [1, 2, 3]


def test_ndjson_problems_name_source_and_line() -> None:
    """Every problem in an NDJSON file names the file and the line."""
    data = b"\n".join(
        [orjson.dumps(small_batch()), b"", orjson.dumps(small_batch(mpid="x")), b'{"a": x}']
    )
    with pytest.raises(BatchValidationError) as caught:
        read_batches(data, source="in.ndjson", limits=LIMITS)
    assert [str(p) for p in caught.value.problems] == [
        "in.ndjson:4: is not valid JSON: unexpected character, expected a JSON value "
        "at line 1 column 7",
    ]
    with pytest.raises(BatchValidationError) as caught:
        read_batches(data.rsplit(b"\n", 1)[0], source="in.ndjson", limits=LIMITS)
    assert [p.where for p in caught.value.problems] == ["in.ndjson:3:batch.mpid"]


def test_array_file_problems_name_the_index() -> None:
    """Problems in a JSON array file name the array index."""
    data = orjson.dumps([small_batch(), small_batch(environment="x")])
    with pytest.raises(BatchValidationError) as caught:
        read_batches(data, source="a.json", limits=LIMITS)
    assert [p.where for p in caught.value.problems] == ["a.json:batch[1].environment"]


def test_file_batches_still_obey_the_batch_size_limit() -> None:
    """Files have no request limit, but each batch must fit max_batch_bytes."""
    big = orjson.dumps(small_batch(user_attributes={"b": "x" * 2000}))
    data = b"\n".join([orjson.dumps(small_batch())] * 10 + [big])
    with pytest.raises(PayloadTooLargeError) as caught:
        read_batches(data, source="f", limits=Limits(max_batch_bytes=1024))
    assert [p.where for p in caught.value.problems] == ["f:11:batch"]


def test_empty_file_has_no_batches() -> None:
    """An empty (or whitespace-only) file holds no batches."""
    assert read_batches(b"\n \n", source="f", limits=LIMITS) == []


def test_file_that_is_not_json_is_rejected() -> None:
    """A file that is neither JSON nor NDJSON names the source."""
    with pytest.raises(BatchValidationError) as caught:
        read_batches(b"hello", source="f.txt", limits=LIMITS)
    assert str(caught.value).startswith("f.txt: is not valid JSON: ")


# --- routing fields ------------------------------------------------------------------------


def test_device_key_prefers_mp_deviceid() -> None:
    """The DAS (mp_deviceid) is the device key when present."""
    batch = small_batch(mp_deviceid="das-1", device_info={"ios_idfv": "v"}, mpid=5)
    assert device_key(batch) == "das:das-1"


def test_device_key_uses_device_identifiers_in_fixed_order() -> None:
    """Without a DAS, the first device identifier in the fixed order is used, with its kind."""
    info = {"android_advertising_id": "gaid", "android_uuid": "uuid", "amp_id": "amp"}
    assert device_key(small_batch(device_info=info, mpid=5)) == "android_uuid:uuid"
    assert device_key(small_batch(device_info={"amp_id": "amp"})) == "amp_id:amp"


def test_device_key_skips_zeroed_advertising_ids() -> None:
    """An all-zero advertising id (limit ad tracking) is not used as a device key."""
    info = {"ios_advertising_id": "00000000-0000-0000-0000-000000000000"}
    assert device_key(small_batch(device_info=info, mpid="77")) == "mpid:77"


def test_device_key_falls_back_to_mpid_then_unknown() -> None:
    """With no device identifiers the mpid is used (numeric strings normalised), else unknown."""
    assert device_key(small_batch(mpid="0042")) == "mpid:42"
    assert device_key(small_batch(mpid=42)) == "mpid:42"
    assert device_key(small_batch(device_info={})) == "unknown"


def test_session_key_uses_uuid_then_session_id() -> None:
    """The first session_uuid of any event wins; else the first session_id; else None."""
    events = [
        {"event_type": "first_run", "data": {"session_id": 7}},
        {"event_type": "first_run", "data": {"session_uuid": "u-1", "session_id": 8}},
    ]
    assert session_key({"events": events}) == "u-1"
    assert session_key({"events": events[:1]}) == "session_id:7"
    assert session_key({"events": [{"event_type": "first_run"}]}) is None
    assert session_key({}) is None


def test_ends_session_only_for_the_batch_session() -> None:
    """A session_end counts when it belongs to the batch's session or names none."""
    start = {"event_type": "session_start", "data": {"session_uuid": "a"}}
    end_a = {"event_type": "session_end", "data": {"session_uuid": "a"}}
    end_b = {"event_type": "session_end", "data": {"session_uuid": "b"}}
    end_anon = {"event_type": "session_end", "data": {}}
    assert ends_session({"events": [start, end_a]})
    assert not ends_session({"events": [start, end_b]})
    assert ends_session({"events": [start, end_anon]})
    assert not ends_session({"events": [start]})


def test_first_event_time_reads_the_first_event_only() -> None:
    """The first event's timestamp is returned as an int; numeric strings are accepted."""
    first = {"event_type": "first_run", "data": {"timestamp_unixtime_ms": "1700000000123"}}
    later = {"event_type": "first_run", "data": {"timestamp_unixtime_ms": 5}}
    assert first_event_time_ms({"events": [first, later]}) == 1700000000123
    assert first_event_time_ms({"events": [{"event_type": "first_run"}, later]}) is None
    assert first_event_time_ms({"events": []}) is None


def test_split_events_gives_one_batch_per_event_with_the_envelope() -> None:
    """Each event becomes its own batch carrying the envelope; the input is unchanged."""
    batch = orjson.loads(EXAMPLE.read_bytes())
    snapshot = orjson.dumps(batch)
    parts = split_events(batch)
    assert [p["events"] for p in parts] == [[e] for e in batch["events"]]
    for part in parts:
        assert {k: v for k, v in part.items() if k != "events"} == {
            k: v for k, v in batch.items() if k != "events"
        }
    assert orjson.dumps(batch) == snapshot


def test_split_events_keeps_a_batch_without_events() -> None:
    """A batch with no events is returned as the only element."""
    batch = {"mpid": 1, "events": []}
    assert split_events(batch) == [batch]
