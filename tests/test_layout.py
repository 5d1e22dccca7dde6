"""Object keys, date folders and encoding (s3forward.layout)."""

from __future__ import annotations

import gzip
import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3forward.config import DateFolders
from s3forward.layout import (
    CONTENT_TYPE,
    date_folder,
    encode_ndjson,
    encode_object,
    file_name,
    gzip_compress,
    object_key,
    sanitize_app_name,
    sanitize_folder,
)

SEALED = datetime(2017, 10, 17, 17, 9, 11, 644493, tzinfo=UTC)
# 2024-02-29T23:59:59.999Z and 2024-03-01T00:00:00.000Z
LEAP_LAST_MS = 1_709_251_199_999
MARCH_FIRST_MS = 1_709_251_200_000


def _key(**overrides: object) -> str:
    args: dict[str, object] = {
        "folder_name": "",
        "date_folders": DateFolders.NONE,
        "app_name": "mPTravel",
        "sealed_at": SEALED,
        "digits": 34523,
        "first_event_ms": None,
        "first_received_ms": MARCH_FIRST_MS,
        "compressed": False,
    }
    args.update(overrides)
    return object_key(**args)  # type: ignore[arg-type]


def test_file_name_matches_the_seed_example() -> None:
    """The seed's example mPTravel_20171017170911644493_34523.txt is reproduced exactly."""
    assert file_name("mPTravel", SEALED, 34523, compressed=False) == (
        "mPTravel_20171017170911644493_34523.txt"
    )


def test_file_name_zero_pads_digits_and_adds_gz_when_compressed() -> None:
    """Small random numbers are padded to five digits and compression appends .gz."""
    assert file_name("A", SEALED, 7, compressed=True) == "A_20171017170911644493_00007.txt.gz"


def test_file_name_uses_utc_for_aware_times_in_other_zones() -> None:
    """A sealed time in UTC+2 is written as its UTC equivalent."""
    local = SEALED.astimezone(timezone(timedelta(hours=2)))
    assert file_name("A", local, 1, compressed=False) == "A_20171017170911644493_00001.txt"


def test_file_name_refuses_naive_times_and_out_of_range_digits() -> None:
    """A naive datetime or a number outside 0..99999 is a programming error."""
    with pytest.raises(ValueError, match="timezone-aware"):
        file_name("A", SEALED.replace(tzinfo=None), 1, compressed=False)
    with pytest.raises(ValueError, match="digits"):
        file_name("A", SEALED, 100_000, compressed=False)
    with pytest.raises(ValueError, match="digits"):
        file_name("A", SEALED, -1, compressed=False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mPTravel", "mPTravel"),
        ("my app/v2", "my_app_v2"),
        ("../../etc/passwd", "_._etc_passwd"),
        ("...hidden", "hidden"),
        ("a..b", "a.b"),
        ("tab\there\nnl", "tab_here_nl"),
        ("Café-東京_1.0", "Café-東京_1.0"),
        ("", "app"),
        ("...", "app"),
        ("a\\b", "a_b"),
        ("my app", "my_app"),
    ],
)
def test_sanitize_app_name_neutralises_unsafe_characters(raw: str, expected: str) -> None:
    """Slashes, dot runs, leading dots and control characters cannot survive in an App Name."""
    assert sanitize_app_name(raw) == expected


def test_sanitize_app_name_caps_length_in_characters_and_bytes() -> None:
    """A 2 KB name is cut to 100 characters, and multi-byte names to 200 UTF-8 bytes."""
    assert sanitize_app_name("x" * 2048) == "x" * 100
    cut = sanitize_app_name("東" * 100)
    assert len(cut.encode()) <= 200
    assert cut == "東" * 66


def test_sanitize_app_name_composes_decomposed_accents() -> None:
    """An accent typed as a combining mark is kept as the composed letter, not replaced."""
    assert sanitize_app_name("Cafe\u0301") == "Café"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ""),
        ("/", ""),
        ("exports", "exports"),
        ("/a//b/", "a/b"),
        ("a/./b/../c", "a/b/c"),
        ("..\\..\\windows", "_._windows"),
        ("team data/raw events", "team_data/raw_events"),
        (" . /x", "x"),
        ("a\x00b/c\x7fd", "a_b/c_d"),
        ("a/.../b", "a/b"),
        ("q?x=1#frag", "q_x_1_frag"),
    ],
)
def test_sanitize_folder_drops_traversal_and_cleans_segments(raw: str, expected: str) -> None:
    """Empty, '.' and '..' segments vanish and each segment keeps only safe characters; a
    backslash and a space are unsafe characters like any other (the App Name's rule)."""
    assert sanitize_folder(raw) == expected


def test_sanitize_folder_caps_total_length() -> None:
    """A very long folder is cut to 512 bytes without a trailing slash."""
    cut = sanitize_folder("/".join(["abcdefghij"] * 200))
    assert len(cut.encode()) <= 512
    assert not cut.endswith("/")


@pytest.mark.parametrize(
    ("mode", "event_ms", "expected"),
    [
        (DateFolders.NONE, LEAP_LAST_MS, None),
        (DateFolders.EVENT_TIME, LEAP_LAST_MS, "2024-02-29"),
        (DateFolders.EVENT_TIME, None, None),
        (DateFolders.UPLOAD_TIME, LEAP_LAST_MS, "2024-03-01"),
        (DateFolders.UPLOAD_TIME, None, "2024-03-01"),
        (DateFolders.EVENT_TIME_OR_UPLOAD_TIME, LEAP_LAST_MS, "2024-02-29"),
        (DateFolders.EVENT_TIME_OR_UPLOAD_TIME, None, "2024-03-01"),
    ],
)
def test_date_folder_follows_the_chosen_mode_in_utc(
    mode: DateFolders, event_ms: int | None, expected: str | None
) -> None:
    """Each mode picks the event time, the receive time, or neither, as a UTC date."""
    assert date_folder(mode, first_event_ms=event_ms, first_received_ms=MARCH_FIRST_MS) == expected


def test_date_folder_treats_impossible_event_times_as_missing() -> None:
    """An event time beyond year 9999 gives no folder, or the upload date as a fallback."""
    huge = 10**18
    assert date_folder(DateFolders.EVENT_TIME, first_event_ms=huge, first_received_ms=0) is None
    fallback = date_folder(
        DateFolders.EVENT_TIME_OR_UPLOAD_TIME, first_event_ms=huge, first_received_ms=0
    )
    assert fallback == "1970-01-01"


def test_date_folder_refuses_unselected() -> None:
    """UNSELECTED never reaches layout; if it does, it is an error rather than a guess."""
    with pytest.raises(ValueError, match="UNSELECTED"):
        date_folder(DateFolders.UNSELECTED, first_event_ms=None, first_received_ms=0)


def test_object_key_joins_folder_date_and_file() -> None:
    """The key is folder/date/file with each part present only when configured."""
    assert _key() == "mPTravel_20171017170911644493_34523.txt"
    assert _key(folder_name="/exports/", date_folders=DateFolders.UPLOAD_TIME) == (
        "exports/2024-03-01/mPTravel_20171017170911644493_34523.txt"
    )
    assert _key(date_folders=DateFolders.EVENT_TIME, compressed=True) == (
        "mPTravel_20171017170911644493_34523.txt.gz"
    )


def test_object_key_keeps_hostile_names_inside_the_folder() -> None:
    """A traversal attempt in both folder and App Name stays below the configured folder."""
    key = _key(folder_name="../../x", app_name="../../../etc/passwd")
    assert key == "x/_._._etc_passwd_20171017170911644493_34523.txt"


@given(
    folder=st.text(),
    app=st.text(),
    compressed=st.booleans(),
    mode=st.sampled_from([m for m in DateFolders if m is not DateFolders.UNSELECTED]),
    event_ms=st.none() | st.integers(min_value=-(10**17), max_value=10**17),
    digits=st.integers(min_value=0, max_value=99_999),
)
def test_any_input_gives_a_safe_key(
    folder: str, app: str, compressed: bool, mode: DateFolders, event_ms: int | None, digits: int
) -> None:
    """Whatever the folder and App Name, the key stays relative, clean and within S3's limit."""
    key = _key(
        folder_name=folder,
        app_name=app,
        compressed=compressed,
        date_folders=mode,
        first_event_ms=event_ms,
        digits=digits,
    )
    assert ".." not in key
    assert "//" not in key
    assert not key.startswith(("/", "."))
    assert "\\" not in key
    assert not any(unicodedata.category(ch).startswith("C") for ch in key)
    assert key.endswith(".txt.gz" if compressed else ".txt")
    assert len(key.encode()) <= 1024
    assert all(0 < len(segment.encode()) <= 255 for segment in key.split("/"))
    assert all(not segment.startswith(".") for segment in key.split("/"))


def test_encode_ndjson_writes_one_line_per_record_and_keeps_big_integers() -> None:
    """Each record is one compact line ending in newline; int64 values stay exact."""
    records = [{"b": 1, "a": 2**63 - 1}, {"x": "é\n"}]
    data = encode_ndjson(records)
    lines = data.split(b"\n")
    assert data.endswith(b"\n") and lines[-1] == b""
    assert lines[0] == b'{"b":1,"a":9223372036854775807}'
    assert [orjson.loads(line) for line in lines[:-1]] == records


def test_encode_ndjson_of_nothing_is_empty() -> None:
    """No records give no bytes (not a lone newline)."""
    assert encode_ndjson([]) == b""


def test_gzip_compress_is_standard_and_deterministic() -> None:
    """The output is readable by the stdlib and identical for identical input."""
    data = b'{"a":1}\n' * 1000
    assert gzip.decompress(gzip_compress(data)) == data
    assert gzip_compress(data) == gzip_compress(data)


def test_encode_object_compresses_and_hashes_the_body() -> None:
    """A compressed object carries gzip bytes, the gzip encoding and the body's sha256."""
    lines = b'{"a":1}\n'
    obj = encode_object("x/A_1_00001.txt.gz", lines, compress=True)
    assert gzip.decompress(obj.body) == lines
    assert obj.content_encoding == "gzip"
    assert obj.content_type == CONTENT_TYPE
    assert obj.sha256 == hashlib.sha256(obj.body).hexdigest()


def test_encode_object_keeps_plain_text_as_is() -> None:
    """An uncompressed object's body is the NDJSON itself, with no content encoding."""
    obj = encode_object("A_1_00001.txt", b"{}\n", compress=False)
    assert (obj.body, obj.content_encoding) == (b"{}\n", None)
    assert obj.sha256 == hashlib.sha256(b"{}\n").hexdigest()


def test_encode_object_refuses_a_suffix_that_contradicts_compression() -> None:
    """A .txt key with gzip bytes (or the reverse) would mislead readers, so it is refused."""
    with pytest.raises(ValueError, match="does not match"):
        encode_object("A.txt", b"{}\n", compress=True)
    with pytest.raises(ValueError, match="does not match"):
        encode_object("A.txt.gz", b"{}\n", compress=False)


def test_encoded_object_repr_hides_the_body() -> None:
    """Logging an object shows its key and size, not megabytes of data."""
    obj = encode_object("A.txt", b"secret-ish payload\n", compress=False)
    assert "payload" not in repr(obj)
    assert "size=19" in repr(obj)
