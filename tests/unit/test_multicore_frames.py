"""The frame codec between HTTP worker processes and the engine (issue 10)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3forward.api.responses import rejection_for
from s3forward.errors import (
    PayloadTooLargeError,
    Problem,
    SpoolFullError,
    SpoolUnavailableError,
    StoppingError,
)
from s3forward.multicore.frames import (
    MAX_FRAME_BYTES,
    Accepted,
    Answer,
    ConfigApplied,
    EngineInternalError,
    FlushStats,
    Forward,
    FrameError,
    Refused,
    Stats,
    UseConfig,
    encode,
    engine_frames,
    error_of,
    refusal_for,
    worker_frames,
)

_bytes = st.binary(max_size=64)
_forward = st.builds(
    Forward,
    id=st.integers(0, 2**40),
    method=st.sampled_from(["GET", "POST"]),
    path=st.text(max_size=20),
    raw_path=_bytes,
    query_string=_bytes,
    headers=st.lists(st.tuples(_bytes, _bytes), max_size=4),
    body=st.binary(max_size=5000),
    client=st.one_of(st.none(), st.tuples(st.text(max_size=10), st.integers(0, 65535))),
    scheme=st.sampled_from(["http", "https"]),
)
_stats = st.builds(
    Stats,
    counters=st.lists(
        st.tuples(
            st.text(max_size=10),
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
            st.floats(0, 1e6),
        ),
        max_size=3,
    ),
    observations=st.lists(st.tuples(st.text(max_size=5), st.floats(0, 10)), max_size=3),
)
_worker_frame = st.one_of(
    _forward,
    _stats,
    st.builds(Stats, st.just([]), st.just([]), st.integers(0, 9)),
    st.builds(ConfigApplied, st.integers(0, 99), st.none() | st.text()),
)
_engine_frame = st.one_of(
    st.builds(Accepted, st.integers(0, 2**40), st.integers(0, 100), st.integers(0, 100)),
    st.builds(Answer, st.integers(0, 9), st.integers(100, 599), st.just([]), _bytes),
    st.builds(UseConfig, st.integers(0, 9), st.text(max_size=9), st.none() | _bytes),
    st.builds(Refused, st.integers(0, 9), st.sampled_from(["stopping", "x"]), st.text()),
    st.builds(FlushStats, st.integers(1, 2**40)),
)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(_worker_frame, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 99)))
def test_frames_come_out_whole_and_in_order_however_the_stream_is_cut(
    frames: list[object], cuts: list[int]
) -> None:
    """A socket delivers bytes in arbitrary pieces; the reader yields each frame once, whole."""
    stream = b"".join(encode(f) for f in frames)  # type: ignore[arg-type]
    points = sorted({min(c * len(stream) // 100, len(stream)) for c in cuts} | {len(stream)})
    reader = worker_frames()
    out: list[object] = []
    start = 0
    for point in points:
        out += reader.feed(stream[start:point])
        start = point
    assert out == frames


@settings(max_examples=100, deadline=None)
@given(frame=_engine_frame)
def test_every_engine_frame_round_trips(frame: object) -> None:
    """What the engine sends, a worker decodes to the same value."""
    assert engine_frames().feed(encode(frame)) == [frame]  # type: ignore[arg-type]


def test_a_frame_longer_than_the_limit_is_a_protocol_error_before_it_is_buffered() -> None:
    """A corrupt length must not make the reader wait for (or allocate) gigabytes."""
    with pytest.raises(FrameError, match="over"):
        worker_frames().feed(struct.pack(">I", MAX_FRAME_BYTES + 1) + b"x")


def test_bytes_that_are_not_a_frame_are_a_protocol_error() -> None:
    """A body that is no known frame closes the channel rather than being guessed at."""
    with pytest.raises(FrameError, match="undecodable"):
        worker_frames().feed(struct.pack(">I", 3) + b"\x93\x01\x02")
    with pytest.raises(FrameError):  # an engine frame is not a worker frame
        worker_frames().feed(encode(Accepted(1, 1, 0)))


@pytest.mark.parametrize(
    ("error", "status", "header"),
    [
        (SpoolFullError("full", retry_after=7), 429, (b"retry-after", b"7")),
        (SpoolUnavailableError("disk"), 503, (b"retry-after", b"5")),
        (StoppingError("stopping"), 503, (b"retry-after", b"5")),
        (PayloadTooLargeError([Problem("body", "too big")]), 413, None),
        (RuntimeError("bug"), 500, None),
    ],
)
def test_an_engine_error_is_answered_by_the_worker_as_the_engine_would_answer_it(
    error: Exception, status: int, header: tuple[bytes, bytes] | None
) -> None:
    """The error travels as a typed refusal and becomes the same HTTP answer as in one
    process (429 + Retry-After, 503, 413 with its problems, 500)."""
    direct = rejection_for(error, retry_after=5).response
    (refused,) = engine_frames().feed(encode(refusal_for(3, error)))
    relayed = rejection_for(error_of(refused), retry_after=5).response
    assert refused.id == 3
    assert relayed.status == direct.status == status
    assert relayed.body == direct.body
    assert relayed.headers == direct.headers
    if header is not None:
        assert header in (relayed.headers or [])


def test_an_unknown_refusal_is_an_internal_error_not_a_success() -> None:
    """A refusal kind this worker does not know (a newer engine) still fails the request."""
    assert isinstance(error_of(Refused(1, "something_new", "?")), EngineInternalError)
