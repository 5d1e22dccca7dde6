"""The nesting-depth limit: 400 naming the path of the first level too deep, never a crash."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from s3forward.errors import BatchValidationError
from s3forward.mparticle import Limits, decode_body, parse_bulk_request, parse_events_request

BATCH: dict[str, Any] = {"environment": "development", "mp_deviceid": "d", "events": []}


def deep_body(levels: int, key: str = "x") -> bytes:
    """A batch whose ``key`` holds ``levels`` nested arrays (the batch itself is one more)."""
    deep = b"[" * levels + b"1" + b"]" * levels
    return orjson.dumps({**BATCH, key: "@"}).replace(b'"@"', deep)


def messages(body: bytes, limits: Limits, *, bulk: bool = False) -> list[str]:
    payload = decode_body(
        b"[" + body + b"]" if bulk else body, content_encoding=None, limits=limits
    )
    parse = parse_bulk_request if bulk else parse_events_request
    with pytest.raises(BatchValidationError) as caught:
        parse(payload, limits=limits)
    return [str(p) for p in caught.value.problems]


def test_a_batch_at_the_depth_limit_passes_with_its_bytes_kept() -> None:
    """max_json_depth levels (the batch is level 1) are allowed and the batch keeps its JSON."""
    batches = parse_events_request(orjson.loads(deep_body(7)), limits=Limits(max_json_depth=8))
    assert batches.encoded == [orjson.dumps(orjson.loads(deep_body(7)))]


@pytest.mark.parametrize("levels", [8, 100, 252, 253, 254, 500, 1022])
def test_a_batch_past_the_depth_limit_names_the_path_of_the_first_level_too_deep(
    levels: int,
) -> None:
    """Past the limit, including past orjson's writing limit of 254 levels, the answer is a
    BatchValidationError naming the path (it used to be a 500 from orjson.dumps)."""
    found = messages(deep_body(levels), Limits(max_json_depth=8))
    assert found == [
        "batch.x[0][0][0][0][0][0][0]: is nested more than 8 levels deep; "
        "the limit is 8 levels per batch"
    ]


def test_the_depth_path_in_a_bulk_request_names_the_batch_index_and_quotes_odd_keys() -> None:
    """Keys that are not identifiers are quoted in the path."""
    found = messages(deep_body(20, key="a b"), Limits(max_json_depth=8), bulk=True)
    assert found[0].startswith('batch[0]["a b"][0][0][0][0][0][0][0]: is nested more than 8')


def test_many_brackets_inside_strings_do_not_count_as_depth() -> None:
    """The bracket count only decides whether to look; strings full of brackets still pass."""
    batch = {**BATCH, "note": "[{" * 500}
    assert len(parse_events_request(batch, limits=Limits(max_json_depth=8))) == 1
