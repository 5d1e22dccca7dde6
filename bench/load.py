"""End-to-end load benchmark: concurrent clients on 127.0.0.1 against a real ``s3forward serve``.

    python bench/load.py [--seconds 10] [--clients 32] [--per-request N] [--devices 100000]
                         [--workers 1,2]

For each request shape (single-batch ``/v2/events`` and bulk-of-10 ``/v2/bulkevents``, or only
``--per-request N``), in one run on this machine:

1. **null app**: the reference. ``bench/nullapp.py`` on the same HTTP stack (uvicorn, uvloop,
   httptools, s3forward's front-door protocol) reads each body and answers 202 with nothing
   else; ``--clients`` connections post the same requests as fast as it answers.
2. **max rate**: the service (console script, TOML config, SQLite spool with fsync, a
   LocalDirSink under a temporary folder) under the same load; every 202 is durable.
3. **half rate**: the same clients paced at half the rate reached, to read the latency a
   service running below its limit gives.
4. **delivered**: ``s3forward drain`` seals and delivers everything; every accepted batch must
   be in the files exactly once (counted by its unique ``source_request_id``).

Steps 2-4 run once per value of ``--workers`` (``[server] workers``: 1, N or auto; a list such
as ``1,2`` puts them side by side), CPU time counting the HTTP worker processes too.

Then **open windows**: ``--devices`` distinct devices each send one batch into an hour-long
window, and the service's resident memory is read with all of them open; and the single-core
cost of parse + outbound + encode for the same data (``bench/core.py``).

Each row prints requests/s, events/s, p50/p99 time to 202, the server's CPU time per request
(the whole process tree, from /proc) and the ratio to the null app. Batches are about 10 events
(about 4 KB) of mixed types, each with a fresh ``source_request_id``. Servers get a loopback
socket bound here; traffic goes only to 127.0.0.1 and every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import itertools
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen

KEY, SECRET = "bench-key", "bench-secret"
MAX_REQUESTS_PER_CLIENT = 2_000_000
CLIENT_PROCESSES = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants (and the children they have
    reaped), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            stats[int(entry)] = text.rsplit(")", 1)[1].split()
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        fields = stats.get(current)
        if fields is None:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        stack.extend(children.get(current, []))
    return total / ticks


class ServerProcess:
    """A server subprocess on a loopback socket bound here and handed over as ``{fd}``."""

    def __init__(self, workdir: Path, argv: list[str]) -> None:
        from s3forward.api.listen import bind_listener

        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        sock = bind_listener("127.0.0.1", 0)
        self.port = int(sock.getsockname()[1])
        self.log = (workdir / "server.log").open("wb")
        try:
            self.proc = subprocess.Popen(
                [arg.format(fd=sock.fileno()) for arg in argv],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),),
            )
        finally:
            sock.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"{argv[0]} did not start; see {workdir / 'server.log'}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class NullApp(ServerProcess):
    def __init__(self, workdir: Path) -> None:
        script = Path(__file__).resolve().parent / "nullapp.py"
        super().__init__(workdir, [sys.executable, str(script), "{fd}"])


def config_text(port: int, workdir: Path, batch_window: str, workers: str = "1") -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
workers = {'"auto"' if workers == "auto" else workers}

[spool]
path = "{workdir}/spool/spool.db"
max_bytes = "8GiB"

[inputs.bench]
api_key = "{KEY}"
api_secret = "{SECRET}"
app_name = "Bench"

[connections.local]
inputs = ["bench"]
destination = "localdir"
local_path = "{workdir}/bucket"
store_data_in_folders_by_date = "upload_time"
use_compression = true
batch_window = "{batch_window}"
"""


class Service(ServerProcess):
    def __init__(self, workdir: Path, batch_window: str, workers: str = "1") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "bench.toml"
        # The listen address is only what `drain --config` reads; the socket comes by --fd.
        path.write_text(config_text(free_port(), workdir, batch_window, workers))
        exe = Path(sys.executable).parent / "s3forward"
        argv = [str(exe), "serve", "--config", str(path), "--fd", "{fd}", "--log-level", "warning"]
        super().__init__(workdir, argv)

    def rss(self) -> tuple[int, int]:
        """(current, peak) resident memory in bytes, from /proc."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount, _unit = line.split()
                values[name] = int(amount) * 1024
        return values["VmRSS:"], values["VmHWM:"]

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_until_idle(self, quiet_for: str = "", timeout: float = 120.0) -> None:
        """Until every window is sealed, built and delivered (bounded by ``timeout``).

        With windows longer than ``timeout`` nothing seals during a run; then it only waits
        for files already sealed."""
        deadline = time.monotonic() + timeout
        if quiet_for.endswith(("m", "h")):
            while time.monotonic() < deadline and self.metric("s3forward_spool_files") > 0:
                time.sleep(0.5)
            return
        while time.monotonic() < deadline:
            if (
                self.metric("s3forward_windows_open") == 0
                and self.metric("s3forward_spool_files") == 0
            ):
                return
            time.sleep(0.5)

    def drain(self) -> None:
        """``s3forward drain`` on the stopped service's spool: seal and deliver everything."""
        exe = Path(sys.executable).parent / "s3forward"
        subprocess.run(
            [str(exe), "drain", "--config", str(self.workdir / "bench.toml")],
            check=True,
            capture_output=True,
            timeout=600,
        )


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    accepted_requests: int = 0
    accepted_batches: int = 0
    accepted_events: int = 0
    other_status: dict[int, int] = field(default_factory=dict)


_ID_MARK = b"s3f-bench-" + b"0" * 16
_serials = itertools.count(1)


@dataclass
class RawRequest:
    """A pre-encoded request whose batches get fresh source_request_ids at every send, so the
    service stores every batch instead of answering repeats as duplicates."""

    raw: bytes
    batches: int
    events: int
    id_offsets: list[int]

    def fresh(self) -> bytes:
        data = bytearray(self.raw)
        serial = next(_serials)
        for index, offset in enumerate(self.id_offsets):
            start = offset + 10
            # Unique across client processes too: the pid is in the top bits.
            data[start : start + 16] = b"%016x" % ((os.getpid() << 40) | (serial << 8) | index)
        return bytes(data)


def build_requests(batches: list[dict[str, Any]], per_request: int, port: int) -> list[RawRequest]:
    """Raw HTTP/1.1 requests with room for unique source_request_ids."""
    token = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    out = []
    path = "/v2/events" if per_request == 1 else "/v2/bulkevents"
    for original in datagen.chunks(batches, per_request):
        group = [{**b, "source_request_id": _ID_MARK.decode()} for b in original]
        body = datagen.encode_request(group) if per_request > 1 else datagen.orjson.dumps(group[0])
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        events = sum(len(b.get("events") or ()) for b in group)
        raw = head + body
        offsets = []
        position = raw.find(_ID_MARK)
        while position != -1:
            offsets.append(position)
            position = raw.find(_ID_MARK, position + 1)
        out.append(RawRequest(raw, len(group), events, offsets))
    return out


async def client(
    port: int,
    requests: list[RawRequest],
    offset: int,
    stop_at: float,
    tally: Tally,
    interval: float | None,
    phase: float | None = None,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = offset
    next_send = time.perf_counter() + (phase or 0.0)
    try:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            now = time.perf_counter()
            if now >= stop_at:
                break
            if interval is not None:
                if now < next_send:
                    await asyncio.sleep(next_send - now)
                next_send += interval
            request = requests[index % len(requests)]
            index += 1
            raw, batches, events = request.fresh(), request.batches, request.events
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            tally.latencies.append(time.perf_counter() - started)
            if status == 202:
                tally.accepted_requests += 1
                tally.accepted_batches += batches
                tally.accepted_events += events
            else:
                tally.other_status[status] = tally.other_status.get(status, 0) + 1
                await asyncio.sleep(0.01)
    finally:
        writer.close()


async def run_clients(
    port: int,
    requests: list[RawRequest],
    clients: int,
    seconds: float,
    rate: float | None,
    first: int = 0,
) -> Tally:
    """``clients`` connections in this process; paced ones are spread over each interval,
    like independent senders, rather than firing together."""
    tally = Tally()
    interval = None if rate is None else clients / rate
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(
        *(
            client(
                port,
                requests,
                (first + i) * 97,
                stop_at,
                tally,
                interval,
                None if interval is None else interval * i / clients,
            )
            for i in range(clients)
        )
    )
    return tally


def _client_process(args: tuple[int, list[RawRequest], int, float, float | None, int]) -> Tally:
    port, requests, clients, seconds, rate, first = args
    return asyncio.run(run_clients(port, requests, clients, seconds, rate, first))


def run_phase(
    port: int,
    requests: list[RawRequest],
    clients: int,
    seconds: float,
    rate: float | None,
    processes: int = CLIENT_PROCESSES,
) -> tuple[Tally, float]:
    """The clients split over ``processes`` processes, so that one client event loop does not
    add its own queueing to the latencies it measures."""
    processes = max(1, min(processes, clients))
    share = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    jobs = [
        (port, requests, n, seconds, None if rate is None else rate * n / clients, sum(share[:i]))
        for i, n in enumerate(share)
    ]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        tallies = pool.map(_client_process, jobs)
    total = Tally()
    for tally in tallies:
        total.latencies.extend(tally.latencies)
        total.accepted_requests += tally.accepted_requests
        total.accepted_batches += tally.accepted_batches
        total.accepted_events += tally.accepted_events
        for status, count in tally.other_status.items():
            total.other_status[status] = total.other_status.get(status, 0) + count
    return total, seconds  # every client process sends for exactly ``seconds``


def bucket_totals(root: Path) -> tuple[int, int, int, int]:
    """(files, bytes as stored, NDJSON lines, distinct source_request_ids) under a localdir
    bucket."""
    files = stored = lines = 0
    ids: set[bytes] = set()
    for path in root.rglob("*.txt*"):
        data = path.read_bytes()
        files += 1
        stored += len(data)
        for line in (gzip.decompress(data) if path.suffix == ".gz" else data).splitlines():
            if line:
                lines += 1
                ids.add(datagen.orjson.loads(line).get("source_request_id", "").encode())
    return files, stored, lines, len(ids)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


HEADER = (
    f"{'':<34} {'req/s':>8} {'events/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'CPU us/req':>10} {'vs null':>7}"
)


def describe(
    label: str,
    tally: Tally,
    elapsed: float,
    cpu_seconds: float | None = None,
    reference: dict[str, float] | None = None,
) -> dict[str, float]:
    requests = tally.accepted_requests
    result = {
        "events_per_s": tally.accepted_events / elapsed,
        "batches_per_s": tally.accepted_batches / elapsed,
        "requests_per_s": requests / elapsed,
        "p50_ms": percentile(tally.latencies, 0.50) * 1000,
        "p99_ms": percentile(tally.latencies, 0.99) * 1000,
        "cpu_us": cpu_seconds / requests * 1e6 if requests and cpu_seconds else float("nan"),
    }
    ratio = (
        f"{result['requests_per_s'] / reference['requests_per_s']:7.2f}"
        if reference is not None and reference["requests_per_s"]
        else f"{'':>7}"
    )
    print(
        f"{label:<34} {result['requests_per_s']:>8,.0f} {result['events_per_s']:>10,.0f} "
        f"{result['p50_ms']:>7.2f} {result['p99_ms']:>7.2f} {result['cpu_us']:>10,.0f} {ratio}"
        + (f"  non-202: {tally.other_status}" if tally.other_status else "")
    )
    return result


def measured(
    server: ServerProcess,
    requests: list[RawRequest],
    clients: int,
    seconds: float,
    rate: float | None,
) -> tuple[Tally, float, float]:
    """One phase against ``server``: the tally, its length and the server's CPU seconds."""
    before = server.cpu_seconds()
    tally, elapsed = run_phase(server.port, requests, clients, seconds, rate)
    return tally, elapsed, server.cpu_seconds() - before


def shape_rows(
    workdir: Path, batches: list[dict[str, Any]], per_request: int, args: argparse.Namespace
) -> dict[str, float]:
    """The null app, then s3forward at max and half rate, then drain and count: one shape,
    once per ``--workers`` value."""
    shape = "single-batch" if per_request == 1 else f"bulk of {per_request}"
    null = NullApp(workdir / f"null-{per_request}")
    try:
        requests = build_requests(batches, per_request, null.port)
        tally, elapsed, cpu = measured(null, requests, args.clients, args.seconds, None)
        reference = describe(f"{shape}: null app", tally, elapsed, cpu)
    finally:
        null.stop()
    tops = [
        service_rows(workdir, batches, per_request, args, workers.strip(), reference)
        for workers in args.workers.split(",")
    ]
    return max(tops, key=lambda top: top["events_per_s"])


def service_rows(
    workdir: Path,
    batches: list[dict[str, Any]],
    per_request: int,
    args: argparse.Namespace,
    workers: str,
    reference: dict[str, float],
) -> dict[str, float]:
    """s3forward with ``[server] workers``: max rate, half rate, then drain and count."""
    shape = "single-batch" if per_request == 1 else f"bulk of {per_request}"
    if args.workers != "1":
        shape += f", workers={workers}"
    service = Service(workdir / f"run-{per_request}-{workers}", args.window, workers)
    try:
        requests = build_requests(batches, per_request, service.port)
        tally, elapsed, cpu = measured(service, requests, args.clients, args.seconds, None)
        top = describe(f"{shape}: s3forward max rate", tally, elapsed, cpu, reference)
        accepted = tally.accepted_batches
        service.wait_until_idle(quiet_for=args.window)  # no backlog into the next phase
        half = top["requests_per_s"] / 2
        tally, elapsed, cpu = measured(service, requests, args.clients, args.seconds, half)
        describe(f"{shape}: s3forward half rate", tally, elapsed, cpu)
        accepted += tally.accepted_batches
        _, peak_load = service.rss()
    finally:
        service.stop()
    started = time.perf_counter()
    service.drain()
    files, stored, lines, distinct = bucket_totals(service.workdir / "bucket")
    verdict = "exactly once" if lines == distinct == accepted else "MISMATCH"
    print(
        f"{'  delivered (after drain)':<34} {lines:,} batches ({distinct:,} distinct) for "
        f"{accepted:,} accepted: {verdict}; {files:,} files, {stored / 1e6:,.1f} MB gzip, "
        f"drain {time.perf_counter() - started:.1f} s, peak RSS under load "
        f"{peak_load / 2**20:,.0f} MiB"
    )
    return top


def open_windows_phase(devices: int, workdir: Path) -> tuple[int, int, float]:
    """RSS with ``devices`` open windows (one batch each, hour-long window)."""
    service = Service(workdir, batch_window="1h")
    try:
        batches = datagen.make_batches(devices, seed=7, events_per_batch=2, devices=devices)
        for index, batch in enumerate(batches):
            # One batch per device: give each its own device application stamp.
            batch["mp_deviceid"] = f"00000000-0000-4000-8000-{index:012d}"
        requests = build_requests(batches, 50, service.port)

        async def send_all() -> None:
            queue = list(requests)

            async def worker() -> None:
                reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
                while queue:
                    writer.write(queue.pop().fresh())
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                writer.close()

            await asyncio.gather(*(worker() for _ in range(8)))

        asyncio.run(send_all())
        time.sleep(1.0)
        open_windows = service.metric("s3forward_windows_open")
        current, peak = service.rss()
        return current, peak, open_windows
    finally:
        service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--per-request",
        type=int,
        default=0,
        help="only this many batches per request (1 posts to /v2/events); "
        "default: single-batch and bulk of 10",
    )
    parser.add_argument("--batches", type=int, default=4000, help="distinct batches generated")
    parser.add_argument(
        "--devices",
        type=int,
        default=100_000,
        help="devices with open windows in the memory phase (0 skips it)",
    )
    parser.add_argument(
        "--window", default="10m", help="batch_window of the service (the product default is 10m)"
    )
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument(
        "--workers",
        default="1",
        help="[server] workers of the service: N, auto, or a list to compare such as 1,2",
    )
    args = parser.parse_args(argv)

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    workdir = Path(tempfile.mkdtemp(prefix="s3forward-load-"))
    try:
        batches = datagen.make_batches(args.batches, seed=1, devices=max(1, args.batches // 4))
        mean_events = sum(len(b["events"]) for b in batches) / len(batches)
        print(
            f"s3forward load benchmark: {args.clients} clients on 127.0.0.1, "
            f"{mean_events:.1f} events/batch, "
            f"{os.cpu_count()} cores, {args.seconds:g} s per phase"
        )
        print(HEADER)
        shapes = [args.per_request] if args.per_request else [1, 10]
        top = {n: shape_rows(workdir, batches, n, args) for n in shapes}
        if args.devices:
            current, peak, open_windows = open_windows_phase(args.devices, workdir / "windows")
            print(
                f"{'open windows':<26} {open_windows:,.0f} devices holding open windows: "
                f"RSS {current / 2**20:,.0f} MiB (peak {peak / 2**20:,.0f} MiB)"
            )
        if not args.skip_core:
            import core

            report = core.measure_core(batches[:2000], seconds=1.0, repeats=2)
            for name, result in report["results"].items():
                print(
                    f"{'core: ' + name:<26} {result['batches_per_s'] * mean_events:>10,.0f} "
                    f"events/s on one core ({result['batches_per_s']:,.0f} batches/s)"
                )
            best = (
                max(
                    r["batches_per_s"]
                    for name, r in report["results"].items()
                    if name.startswith("s3forward")  # the references are no pipeline of ours
                )
                * mean_events
            )
            fastest = max(row["events_per_s"] for row in top.values())
            print(
                f"{'service / core ratio':<26} {fastest / best:.2f} "
                "(service on 2 cores incl. HTTP, auth, fsync vs. one core of pure pipeline)"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
