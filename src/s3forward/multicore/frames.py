"""The frames between HTTP worker processes and the engine, and their codec (issue 10).

Each worker has one connected Unix socket pair with the engine (``socket.socketpair``, the
worker's end inherited through ``pass_fds``: no path in the file system, so no other user can
reach it). A frame is a 4-byte big-endian length and a msgspec MessagePack body, one of the
tagged structs below. Requests carry an ``id`` the answer repeats; a worker has many requests in
flight on its one socket and the engine answers them in whatever order their commits finish.

Worker -> engine: ``Submit`` (prepared batches to store), ``Forward`` (a whole HTTP request for
the engine's own app: /readyz, /metrics, the status page, the admin endpoints), ``Stats`` (the
worker's counter increments and latency observations since the last one) and ``ConfigApplied``.
Engine -> worker: ``Accepted``, ``Refused`` (a typed error), ``Answer`` (the forwarded request's
response), ``UseConfig`` (the config file's bytes to serve with, at start and on reload) and
``FlushStats`` (send your counts now).

Nothing is pickled. ``UseConfig`` may carry secrets written literally in the config file; it
only travels on the private socket pair and is never logged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgspec

from s3forward.errors import (
    EngineInternalError,
    FrameError,
    PayloadTooLargeError,
    Problem,
    SpoolFullError,
    SpoolUnavailableError,
    StoppingError,
)
from s3forward.pipeline.prepared import PreparedBatch

MAX_FRAME_BYTES = 256 * 1024 * 1024
"""A frame above this is a protocol error (requests are bounded far below it)."""
_LENGTH = struct.Struct(">I")


# ------------------------------------------------------------------------- worker -> engine


class Submit(msgspec.Struct, tag="submit", array_like=True):
    id: int
    input_name: str
    modes: list[str]
    """The batching modes ``batches`` were prepared for (``prepared.modes_for``)."""
    received_at: float
    batches: list[PreparedBatch]


class Forward(msgspec.Struct, tag="forward", array_like=True):
    id: int
    method: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    client: tuple[str, int] | None
    scheme: str


class Stats(msgspec.Struct, tag="stats", array_like=True):
    counters: list[tuple[str, dict[str, str], float]]
    """``(counter family name, label values, increment)``."""
    observations: list[tuple[str, float]]
    """``ingest_seconds`` observations: ``(endpoint, seconds)``."""
    flushed: int = 0
    """The ``FlushStats`` this answers (0: sent on the worker's own schedule)."""


class ConfigApplied(msgspec.Struct, tag="config_applied", array_like=True):
    generation: int
    problem: str | None = None
    """None: the worker serves with this generation now."""


WorkerFrame = Submit | Forward | Stats | ConfigApplied

# ------------------------------------------------------------------------- engine -> worker


class Accepted(msgspec.Struct, tag="accepted", array_like=True):
    id: int
    stored: int
    duplicates: int


class Refused(msgspec.Struct, tag="refused", array_like=True):
    id: int
    kind: str
    """``spool_full``, ``unavailable``, ``stopping``, ``too_large`` or ``internal``."""
    message: str
    retry_after: int = 0
    problems: list[tuple[str, str]] = msgspec.field(default_factory=list)


class Answer(msgspec.Struct, tag="answer", array_like=True):
    id: int
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class UseConfig(msgspec.Struct, tag="use_config", array_like=True):
    generation: int
    source: str
    text: bytes | None
    """The config file's bytes; None: the embedded development configuration."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    """The certificate to load into the live TLS context (on reload; None at start)."""


class FlushStats(msgspec.Struct, tag="flush_stats", array_like=True):
    """Send your counts now (answered by a ``Stats`` with ``flushed`` = ``id``): the engine
    asks every worker before it answers /metrics or the status page, so that they count every
    request answered before they were asked."""

    id: int


EngineFrame = Accepted | Refused | Answer | UseConfig | FlushStats

# ------------------------------------------------------------------------------ the codec

_encoder = msgspec.msgpack.Encoder()


def encode(frame: WorkerFrame | EngineFrame) -> bytes:
    """One frame, length prefix included, ready to write."""
    body = _encoder.encode(frame)
    return _LENGTH.pack(len(body)) + body


class FrameBuffer:
    """Splits a byte stream into frames of type ``kind``; ``feed`` returns the complete ones.

    Raises ``FrameError`` for an oversized length or a body that does not decode.
    """

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(kind)
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        frames: list[Any] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"a frame of {length} bytes, over {MAX_FRAME_BYTES}")
            if end - offset - 4 < length:
                break
            start = offset + 4
            try:
                frames.append(self._decoder.decode(memoryview(buffer)[start : start + length]))
            except msgspec.DecodeError as exc:
                raise FrameError(f"an undecodable frame: {exc}") from None
            offset = start + length
        if offset:
            del buffer[:offset]
        return frames


def worker_frames() -> FrameBuffer:
    """The engine's reader of what workers send."""
    return FrameBuffer(WorkerFrame)


def engine_frames() -> FrameBuffer:
    """A worker's reader of what the engine sends."""
    return FrameBuffer(EngineFrame)


# --------------------------------------------------------------------- errors, both ways

_REFUSALS: dict[str, Callable[[Refused], Exception]] = {
    "spool_full": lambda r: SpoolFullError(r.message, retry_after=r.retry_after),
    "unavailable": lambda r: SpoolUnavailableError(r.message),
    "stopping": lambda r: StoppingError(r.message),
    "too_large": lambda r: PayloadTooLargeError(
        [Problem(where, message) for where, message in r.problems] or [Problem("body", r.message)]
    ),
}


def refusal_for(request_id: int, exc: BaseException) -> Refused:
    """The frame that carries ``exc`` back to the worker whose request raised it."""
    match exc:
        case SpoolFullError():
            return Refused(request_id, "spool_full", str(exc), exc.retry_after)
        case SpoolUnavailableError():
            return Refused(request_id, "unavailable", str(exc))
        case StoppingError():
            return Refused(request_id, "stopping", str(exc))
        case PayloadTooLargeError():
            problems = [(p.where, p.message) for p in exc.problems]
            return Refused(request_id, "too_large", str(exc), problems=problems)
        case _:
            return Refused(request_id, "internal", "the engine failed on this request")


def error_of(refused: Refused) -> Exception:
    """The exception a refusal stands for, as ``responses.rejection_for`` maps it."""
    make = _REFUSALS.get(refused.kind)
    return make(refused) if make is not None else EngineInternalError(refused.message)


__all__ = [
    "MAX_FRAME_BYTES",
    "Accepted",
    "Answer",
    "ConfigApplied",
    "EngineFrame",
    "EngineInternalError",
    "FlushStats",
    "Forward",
    "FrameBuffer",
    "FrameError",
    "Refused",
    "Stats",
    "Submit",
    "UseConfig",
    "WorkerFrame",
    "encode",
    "engine_frames",
    "error_of",
    "refusal_for",
    "worker_frames",
]
