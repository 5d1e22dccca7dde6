"""Building one S3 object from a sealed window's batches (files.build_file, with_new_digits)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import random
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from s3forward.config import ConnectionSettings, DateFolders
from s3forward.files import FileItem, build_file, with_new_digits

SDK_EXAMPLE = Path(__file__).parent / "fixtures" / "sdk-example-batch.json"
SEALED_AT = datetime(2017, 10, 17, 17, 9, 11, 644493, tzinfo=UTC).timestamp()
RECEIVED_MS = 1_800_000_000_000  # 2027-01-15 UTC


def settings(**overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "name": "x",
        "inputs": ("web",),
        "s3_bucket_name": "mp-forwarding-files",
        "store_data_in_folders_by_date": DateFolders.NONE,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


def example() -> dict[str, Any]:
    batch: dict[str, Any] = orjson.loads(SDK_EXAMPLE.read_bytes())
    return batch


def item(batch: dict[str, Any] | None = None, **kwargs: Any) -> FileItem:
    values: dict[str, Any] = {"received_ms": RECEIVED_MS, "batch_id": 42}
    values.update(kwargs)
    return FileItem(batch if batch is not None else example(), **values)


def lines(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in body.splitlines()]


def build(items: list[FileItem], seed: int = 1, **overrides: Any) -> Any:
    return build_file(
        items,
        settings(**overrides),
        app_name="mPTravel",
        sealed_at=SEALED_AT,
        digits=seed,
    )


def test_key_has_the_seed_shape_with_the_sealed_time() -> None:
    """The key is <App>_<sealed UTC time, microseconds>_<5 digits>.txt."""
    built = build([item()])
    assert re.fullmatch(r"mPTravel_20171017170911644493_\d{5}\.txt", built.obj.key)


def test_same_inputs_and_digits_give_the_same_key_and_bytes() -> None:
    """A file is deterministic given its items, seal time and digits (retries rewrite it)."""
    first, second = build([item(), item()], seed=7), build([item(), item()], seed=7)
    assert first.obj.key == second.obj.key
    assert first.obj.body == second.obj.body
    assert first.obj.sha256 == hashlib.sha256(first.obj.body).hexdigest()


def test_each_item_is_one_outbound_line() -> None:
    """Two items give two NDJSON lines with the outbound envelope and distinct message ids."""
    built = build([item(batch_id=1), item(batch_id=2)])
    body = built.obj.body
    assert body.endswith(b"\n")
    first, second = lines(body)
    assert (first["batch_id"], second["batch_id"]) == (1, 2)
    for line in (first, second):
        assert line["schema_version"] == 2
        assert line["message_type"] == "events"
        assert line["timestamp_unixtime_ms"] == RECEIVED_MS
        assert uuid.UUID(line["message_id"]).version == 5
    assert first["message_id"] != second["message_id"]
    assert (built.batches, built.events, built.raw_bytes) == (2, 10, len(body))


def test_inbound_batch_id_is_kept() -> None:
    """A batch that arrives with a batch_id keeps it over the generated one."""
    batch = {**example(), "batch_id": 9_007_199_254_740_993}
    (line,) = lines(build([item(batch, batch_id=5)]).obj.body)
    assert line["batch_id"] == 9_007_199_254_740_993


def test_per_event_item_holds_only_its_event() -> None:
    """An item with event_index writes the batch envelope with that one event."""
    (line,) = lines(build([item(event_index=2)]).obj.body)
    assert [e["event_type"] for e in line["events"]] == ["screen_view"]
    assert line["mpid"] == 1234567890123456789


def test_filters_apply_and_filtered_events_are_counted() -> None:
    """Events dropped by the connection's filters are counted per event type."""
    built = build([item(), item()], send_screen_views=False, send_commerce_events=False)
    assert built.events == 6
    assert dict(built.filtered_out) == {"screen_view": 2, "commerce_event": 2}
    assert all(
        e["event_type"] not in ("screen_view", "commerce_event")
        for line in lines(built.obj.body)
        for e in line["events"]
    )


def test_unique_id_is_written_on_every_line() -> None:
    """The connection's Unique ID is on each line."""
    built = build([item(), item()], unique_id="shop-1")
    assert [line["unique_id"] for line in lines(built.obj.body)] == ["shop-1", "shop-1"]


def test_items_are_not_mutated() -> None:
    """Building a file leaves the inbound batches untouched (a retry rebuilds the same file)."""
    batch = example()
    before = copy.deepcopy(batch)
    build([item(batch)], include_metadata=False, include_user_identities=False)
    assert batch == before


def test_compressed_file_is_gzip_of_the_ndjson() -> None:
    """With use_compression the body gunzips to the same lines and the key ends .txt.gz."""
    plain = build([item()], seed=3)
    packed = build([item()], seed=3, use_compression=True)
    assert packed.obj.key == plain.obj.key + ".gz"
    assert packed.obj.content_encoding == "gzip"
    assert gzip.decompress(packed.obj.body) == plain.obj.body
    assert packed.raw_bytes == len(plain.obj.body)


@pytest.mark.parametrize(
    ("mode", "folder"),
    [
        (DateFolders.EVENT_TIME, "2023-11-14/"),
        (DateFolders.UPLOAD_TIME, "2027-01-15/"),
        (DateFolders.EVENT_TIME_OR_UPLOAD_TIME, "2023-11-14/"),
        (DateFolders.NONE, ""),
    ],
)
def test_date_folder_follows_the_mode(mode: DateFolders, folder: str) -> None:
    """Event time is the first event's date; upload time the first batch's receive date."""
    built = build([item()], store_data_in_folders_by_date=mode, folder_name="f")
    assert built.obj.key.startswith(f"f/{folder}mPTravel_")
    assert built.first_event_ms == 1700000000000
    assert built.first_received_ms == RECEIVED_MS


def test_event_time_or_upload_time_without_events_uses_upload_time() -> None:
    """A file with no events at all falls back to the upload date."""
    built = build(
        [item({**example(), "events": []})],
        store_data_in_folders_by_date=DateFolders.EVENT_TIME_OR_UPLOAD_TIME,
    )
    assert built.first_event_ms is None
    assert built.obj.key.startswith("2027-01-15/")


def test_event_time_comes_from_the_first_batch_only() -> None:
    """A first batch without events gives no event date, even when a later batch has one."""
    empty_first = [item({**example(), "events": []}), item()]
    built = build(empty_first, store_data_in_folders_by_date=DateFolders.EVENT_TIME)
    assert built.first_event_ms is None
    assert built.obj.key.startswith("mPTravel_"), "no date folder in event_time mode"
    fallback = build(
        empty_first, store_data_in_folders_by_date=DateFolders.EVENT_TIME_OR_UPLOAD_TIME
    )
    assert fallback.obj.key.startswith("2027-01-15/"), "the upload date, not the second batch's"


def test_empty_window_is_refused() -> None:
    """build_file needs at least one item."""
    with pytest.raises(ValueError, match="at least one batch"):
        build([])


# ---------------------------------------------------------------------------- with_new_digits


@pytest.mark.parametrize(
    "key",
    [
        "App_20171017170911644493_34523.txt",
        "f/2023-11-14/App_20171017170911644493_34523.txt.gz",
        "App_1_2_20171017170911644493_00000.txt",
    ],
)
def test_with_new_digits_changes_only_the_five_digits(key: str) -> None:
    """The new key differs only in its last five digits, and always differs."""
    for seed in range(20):
        new = with_new_digits(key, random.Random(seed))
        assert new != key
        prefix, _, rest = key.rpartition("_")
        new_prefix, _, new_rest = new.rpartition("_")
        assert new_prefix == prefix
        assert re.fullmatch(r"\d{5}\.txt(\.gz)?", new_rest)
        assert new_rest[5:] == rest[5:]


class _Repeating(random.Random):
    """A random source whose first draws repeat a value, then count up."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = values

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return self.values.pop(0)


def test_with_new_digits_draws_again_when_it_gets_the_same_digits() -> None:
    """A draw equal to the current digits is never used."""
    rng = _Repeating([34523, 34523, 7])
    assert with_new_digits("App_20171017170911644493_34523.txt", rng).endswith("_00007.txt")


def test_with_new_digits_refuses_a_key_that_is_not_ours() -> None:
    """A key without the _<5 digits>.txt ending is a ValueError naming it."""
    with pytest.raises(ValueError, match="not an s3forward object key"):
        with_new_digits("some/other.json", random.Random(0))
