"""Single-core throughput of s3forward's core pipeline, next to a plain-stdlib reference.

    python bench/core.py [--batches N] [--seconds S] [--per-request K] [--json] [--profile]

The same generated batches (bench/datagen.py) are cut into ``/v2/bulkevents`` bodies of K
batches and pushed, one body at a time, through:

- s3forward: ``decode_body`` + ``parse_bulk_request`` (parse+validate) -> ``apply_filters``
  (filter) -> ``new_batch_id`` / message id / ``to_outbound`` (outbound) -> one orjson line per
  batch, joined, then ``layout.gzip_compress`` or not (encode). One file per request body.
- stdlib reference: ``json.loads`` of the body (parse) -> ``json.dumps`` of each batch, joined
  (encode) -> ``gzip.compress`` level 6 or not. No validation, no filters, no outbound form:
  it is the floor a naive implementation would start from.

Everything runs in this one thread (orjson and isal do not start threads). Each configuration
gets a warm-up pass, then 3 repetitions of about S seconds each; the fastest repetition is
reported, with its per-stage split. MB are 10**6 bytes of inbound (uncompressed) JSON. The
garbage collector stays on, but the generated data set is frozen out of its sight (gc.freeze).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import gzip
import json
import math
import os
import platform
import pstats
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

# Run as a script: make bench/ importable for datagen (and for bench/load.py importing us).
sys.path.insert(0, str(Path(__file__).parent))

from isal import igzip

import datagen
from s3forward.config import ConnectionSettings, DateFolders
from s3forward.files import FileItem, build_file
from s3forward.filters import apply_filters
from s3forward.layout import gzip_compress
from s3forward.mparticle import (
    Limits,
    decode_body,
    new_batch_id,
    parse_bulk_request,
    to_outbound,
)
from s3forward.spool.codec import body_json, compress_body

STAGES = ("parse", "filter", "outbound", "encode")
STAGE_TITLES = ("parse+validate", "filter", "outbound", "encode")
# Large enough that the benchmark's bodies are never refused; the size checks still run.
LIMITS = Limits(max_batch_bytes=1024 * 1024, max_request_bytes=256 * 1024 * 1024, max_batches=10**6)
# A connection with a few filters on: network performance events dropped, event locations
# removed (and copied to context.location), plus the defaults that already drop consent_state
# and user attribute / identity change events.
SETTINGS = ConnectionSettings(
    name="bench",
    inputs=("default",),
    s3_bucket_name="mp-forwarding-bench",
    store_data_in_folders_by_date=DateFolders.UPLOAD_TIME,
    send_network_performance_events=False,
    include_location_information=False,
    include_event_batch_location=True,
    unique_id="bench-unique-id",
)
RECEIVED_AT_MS = datagen.START_MS + 3_600_000
STDLIB_GZIP_LEVEL = 6  # gzip.compress defaults to 9, which no one would ship for a hot path
MB = 1_000_000
# "wall" is what a server sees; "cpu" (this process's CPU time) stays honest on a shared,
# busy machine, where wall time also counts the time other processes held the core.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Run:
    """Seconds spent per stage over some passes, and what they produced."""

    clock: Callable[[], float] = time.perf_counter
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    batches: int = 0
    output_bytes: int = 0
    # CPU seconds / wall seconds of the whole repetition: below ~0.9 means other processes
    # took this core part of the time, and the rates are understated.
    cpu_share: float = 1.0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


Pipeline = Callable[[list[bytes], bool, Run], None]
PLAIN_GZIP_LEVEL = 1  # the reference: isal level 1
SEALED_AT = RECEIVED_AT_MS / 1000 + 600


def _message_id(rng: random.Random) -> str:
    # As s3forward.files does for each line.
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def s3forward_pass(bodies: list[bytes], compress: bool, run: Run) -> None:
    """One pass of s3forward's core over ``bodies``, adding stage times to ``run``."""
    rng = random.Random(7)
    clock = run.clock
    seconds = run.seconds
    unique_id = SETTINGS.unique_id
    for body in bodies:
        t0 = clock()
        payload = decode_body(body, content_encoding=None, limits=LIMITS)
        batches = parse_bulk_request(payload, limits=LIMITS)
        t1 = clock()
        kept = [apply_filters(batch, SETTINGS) for batch in batches]
        t2 = clock()
        outbound = [
            to_outbound(
                batch,
                received_at_ms=RECEIVED_AT_MS,
                batch_id=new_batch_id(rng),
                message_id=_message_id(rng),
                unique_id=unique_id,
            )
            for batch in kept
        ]
        t3 = clock()
        data = b"".join(orjson.dumps(b, option=orjson.OPT_APPEND_NEWLINE) for b in outbound)
        if compress:
            data = gzip_compress(data)
        t4 = clock()
        seconds["parse"] += t1 - t0
        seconds["filter"] += t2 - t1
        seconds["outbound"] += t3 - t2
        seconds["encode"] += t4 - t3
        run.batches += len(batches)
        run.output_bytes += len(data)


def stdlib_pass(bodies: list[bytes], compress: bool, run: Run) -> None:
    """One pass of the plain reference: json.loads, json.dumps per batch, join, gzip."""
    clock = run.clock
    seconds = run.seconds
    for body in bodies:
        t0 = clock()
        batches = json.loads(body)
        t1 = clock()
        text = "".join(json.dumps(b, separators=(",", ":")) + "\n" for b in batches)
        data = text.encode("utf-8")
        if compress:
            data = gzip.compress(data, compresslevel=STDLIB_GZIP_LEVEL, mtime=0)
        t2 = clock()
        seconds["parse"] += t1 - t0
        seconds["encode"] += t2 - t1
        run.batches += len(batches)
        run.output_bytes += len(data)


_STORED: dict[int, list[list[bytes]]] = {}


def _stored(bodies: list[bytes]) -> list[list[bytes]]:
    """Each request's batches as the spool holds them: compact JSON, compressed (made once)."""
    key = id(bodies)
    if key not in _STORED:
        _STORED.clear()
        _STORED[key] = [
            [compress_body(orjson.dumps(b)) for b in orjson.loads(body)] for body in bodies
        ]
    return _STORED[key]


def build_pass(bodies: list[bytes], compress: bool, run: Run) -> None:
    """One pass of the build path: what the build worker does with a sealed window's stored
    batches (decompress, ``orjson.loads``; ``files.build_file``: filters, outbound with the
    deterministic message ids, NDJSON, key, gzip). One window per request body."""
    clock = run.clock
    seconds = run.seconds
    settings = _GZIP_ON if compress else SETTINGS
    for window, stored in enumerate(_stored(bodies)):
        t0 = clock()
        items = [
            FileItem(
                batch=orjson.loads(body_json(1, body)),
                received_ms=RECEIVED_AT_MS,
                batch_id=position + 1,
                position=position,
                input="default",
            )
            for position, body in enumerate(stored, start=window * 1000)
        ]
        t1 = clock()
        built = build_file(items, settings, app_name="bench", sealed_at=SEALED_AT, digits=window)
        t2 = clock()
        seconds["parse"] += t1 - t0
        seconds["encode"] += t2 - t1  # filter + outbound + NDJSON + gzip, in build_file
        run.batches += len(items)
        run.output_bytes += len(built.obj.body) if built is not None else 0


def plain_pass(bodies: list[bytes], compress: bool, run: Run) -> None:
    """The issue's reference loop: ``orjson.loads``, a plain transform (a copy of each batch
    with the four outbound fields set), one orjson line per batch, isal level 1."""
    clock = run.clock
    seconds = run.seconds
    rng = random.Random(7)
    for body in bodies:
        t0 = clock()
        batches = orjson.loads(body)
        t1 = clock()
        lines = b"".join(
            orjson.dumps(
                {
                    **batch,
                    "message_id": _message_id(rng),
                    "message_type": "events",
                    "schema_version": 2,
                    "timestamp_unixtime_ms": RECEIVED_AT_MS,
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for batch in batches
        )
        data = igzip.compress(lines, compresslevel=PLAIN_GZIP_LEVEL, mtime=0) if compress else lines
        t2 = clock()
        seconds["parse"] += t1 - t0
        seconds["encode"] += t2 - t1
        run.batches += len(batches)
        run.output_bytes += len(data)


_GZIP_ON = dataclasses.replace(SETTINGS, use_compression=True)

PIPELINES: dict[str, tuple[str, Pipeline, bool]] = {
    "s3forward_gzip_off": ("s3forward core, gzip off", s3forward_pass, False),
    "s3forward_gzip_on": ("s3forward core, gzip on", s3forward_pass, True),
    "build_gzip_on": ("s3forward build path, gzip on", build_pass, True),
    "plain_gzip_on": ("plain loop (issue 10's reference)", plain_pass, True),
    "stdlib_gzip_off": ("stdlib reference, gzip off", stdlib_pass, False),
    "stdlib_gzip_on": ("stdlib reference, gzip on", stdlib_pass, True),
}
RATIOS = (
    ("build path / plain loop (target >= 0.75)", "build_gzip_on", "plain_gzip_on"),
    ("core with validation / plain loop", "s3forward_gzip_on", "plain_gzip_on"),
)


def _repetition(
    bodies: list[bytes], pipeline: Pipeline, compress: bool, passes: int, clock: str
) -> Run:
    run = Run(clock=CLOCKS[clock])
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(passes):
        pipeline(bodies, compress, run)
    run.cpu_share = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)
    return run


def _measure_all(
    bodies: list[bytes], *, seconds: float, repeats: int, clock: str
) -> dict[str, Run]:
    """The fastest of ``repeats`` repetitions (about ``seconds`` each) of every pipeline.

    Each pipeline first gets a warm-up pass, which also sizes its repetitions. Repetitions
    are interleaved (A B C D, A B C D, ...) so that a busy moment on the machine does not
    favour one pipeline over another.
    """
    passes: dict[str, int] = {}
    for key, (_, pipeline, compress) in PIPELINES.items():
        started = time.perf_counter()
        pipeline(bodies, compress, Run())
        passes[key] = max(1, math.ceil(seconds / max(time.perf_counter() - started, 1e-9)))
    best: dict[str, Run] = {}
    for _ in range(repeats):
        for key, (_, pipeline, compress) in PIPELINES.items():
            run = _repetition(bodies, pipeline, compress, passes[key], clock)
            if key not in best or run.total < best[key].total:
                best[key] = run
    return best


def _result(run: Run, inbound_bytes_per_pass: int, batches_per_pass: int) -> dict[str, Any]:
    passes = run.batches // batches_per_pass
    us = {stage: run.seconds[stage] / run.batches * 1e6 for stage in STAGES}
    return {
        "batches_per_s": run.batches / run.total,
        "mb_per_s": inbound_bytes_per_pass * passes / run.total / MB,
        "us_per_batch": {**us, "total": run.total / run.batches * 1e6},
        "output_bytes": run.output_bytes // passes,
        "seconds": run.total,
        "passes": passes,
        "cpu_share": run.cpu_share,
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def measure_core(
    batches: list[dict[str, Any]],
    *,
    per_request: int = 50,
    seconds: float = 1.0,
    repeats: int = 3,
    clock: str = "wall",
) -> dict[str, Any]:
    """Single-core throughput of each pipeline in ``PIPELINES`` over ``batches``.

    Returns plain data (JSON-ready): the input's size, the versions, and per pipeline
    ``batches_per_s``, ``mb_per_s`` (inbound JSON, 10**6 bytes), ``us_per_batch`` per stage
    plus ``total``, ``output_bytes`` (one pass), ``seconds`` and ``passes`` measured, and
    ``cpu_share`` (CPU time / wall time: well below 1 means the machine was busy).
    """
    if not batches:
        raise ValueError("measure_core needs at least one batch")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    bodies = datagen.encode_requests(batches, per_request)
    inbound = sum(len(b) for b in bodies)
    # The caller's batches (hundreds of thousands of live dicts) are a benchmark artefact: left
    # in the collected generations, every full GC would scan them and add ~30 % to the core's
    # cost. Freezing moves them out of the collector's sight; the pipelines' own garbage is
    # still collected as usual.
    gc.collect()
    gc.freeze()
    try:
        runs = _measure_all(bodies, seconds=seconds, repeats=repeats, clock=clock)
    finally:
        gc.unfreeze()
    results = {key: _result(run, inbound, len(batches)) for key, run in runs.items()}
    ratios = {
        title: results[num]["batches_per_s"] / results[den]["batches_per_s"]
        for title, num, den in RATIOS
    }
    return {
        "batches": len(batches),
        "events": sum(len(b.get("events") or ()) for b in batches),
        "requests": len(bodies),
        "per_request": per_request,
        "inbound_bytes": inbound,
        "mean_batch_bytes": inbound / len(batches),
        "seconds_per_repeat": seconds,
        "repeats": repeats,
        "clock": clock,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
        "versions": {name: _version(name) for name in ("orjson", "isal")},
        "results": results,
        "ratios": ratios,
    }


# --------------------------------------------------------------------------------------------
# Report


def _table(report: dict[str, Any]) -> str:
    events_per_batch = report["events"] / report["batches"]
    lines = [
        f"core pipeline, one thread: {report['batches']:,} batches ({events_per_batch:.1f} events"
        f" each, mean {report['mean_batch_bytes']:,.0f} B), {report['requests']:,} bulk requests"
        f" of {report['per_request']}, {report['inbound_bytes'] / MB:.1f} MB of JSON",
        f"Python {report['python']}, orjson {report['versions']['orjson']}, isal"
        f" {report['versions']['isal']}; fastest of {report['repeats']} runs of"
        f" ~{report['seconds_per_repeat']:g} s after a warm-up, {report['clock']} clock",
        "",
    ]
    width = max(len(title) for title, _, _ in PIPELINES.values()) + 1
    for key, (title, _, _) in PIPELINES.items():
        r = report["results"][key]
        lines.append(
            f"{title + ':':<{width}} {r['batches_per_s']:>9,.0f} batches/s"
            f"  {r['batches_per_s'] * events_per_batch:>10,.0f} events/s"
            f"  {r['mb_per_s']:>6.1f} MB/s (inbound JSON)"
            f"  -> {r['output_bytes'] / MB:5.2f} MB out"
        )
    lines += ["", f"{'per stage, µs/batch':<{width}}" + "".join(f"{t:>16}" for t in STAGE_TITLES)]
    lines[-1] += f"{'total':>10}"
    for key, (title, _, _) in PIPELINES.items():
        us = report["results"][key]["us_per_batch"]
        cells = "".join(f"{'—' if us[s] == 0 else f'{us[s]:.1f}':>16}" for s in STAGES)
        lines.append(f"{title:<{width}}{cells}{us['total']:>10.1f}")
    lines.append("")
    lines += [f"{title}: {ratio:.2f}" for title, ratio in report["ratios"].items()]
    share = min(r["cpu_share"] for r in report["results"].values())
    if share < 0.9 and report["clock"] == "wall":
        lines += [
            "",
            f"note: the machine was busy (1-min load average {report['load_average']:.1f});"
            f" this process got as little as {share:.0%} of a core, so wall-clock rates are"
            " understated (try --clock cpu)",
        ]
    return "\n".join(lines)


def _profile(batches: list[dict[str, Any]], per_request: int) -> None:
    """cProfile one gzip-off pass of the s3forward pipeline and one gzip-on pass of the build
    path; print the top functions of each."""
    bodies = datagen.encode_requests(batches, per_request)
    gc.collect()
    gc.freeze()  # as in measure_core
    for title, pipeline, compress in (
        ("s3forward core, gzip off", s3forward_pass, False),
        ("s3forward build path, gzip on", build_pass, True),
    ):
        pipeline(bodies, compress, Run())  # warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        pipeline(bodies, compress, Run())
        profiler.disable()
        print(f"== {title}")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5000, help="batches to generate")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one repetition")
    parser.add_argument("--per-request", type=int, default=50, help="batches per bulk request")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions; the best counts")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed")
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall", help="wall (perf_counter) or cpu time"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", action="store_true", help="cProfile the s3forward pass")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.per_request < 1 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--batches, --per-request, --repeats and --seconds must be positive")
    batches = datagen.make_batches(args.batches, seed=args.seed)
    if args.profile:
        _profile(batches, args.per_request)
        return 0
    report = measure_core(
        batches,
        per_request=args.per_request,
        seconds=args.seconds,
        repeats=args.repeats,
        clock=args.clock,
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
