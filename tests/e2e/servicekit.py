"""Running the real service as a subprocess, and a fault-injecting proxy in front of moto.

``ServiceProcess`` starts ``s3forward serve`` exactly as users do (console script, TOML config),
talks to it over real sockets, and can stop it with SIGTERM or kill it with SIGKILL.
``FaultProxy`` sits between the service and the S3 server on 127.0.0.1 and can refuse every
connection (an outage), answer 503 SlowDown, or reset connections some of the time.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from s3forward.api.listen import bind_listener

API_KEY = "test-key"
API_SECRET = "test-secret-value"

WORKERS = 1
"""``[server] workers`` of every service these helpers start (``pytest --workers N``), unless a
test's ``server`` section sets its own."""


def loopback_listener(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1, bound now (port 0: a free one the kernel picks).

    Servers started by the tests get the socket itself (``s3forward serve --fd``), so nothing
    can take the port between choosing it and serving on it.
    """
    return bind_listener("127.0.0.1", port)


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def spawn_on(sock: socket.socket, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` with ``sock`` inherited as the descriptor its ``{fd}`` argument names,
    then close this process's copy (the child owns the socket from now on)."""
    fd = sock.fileno()
    try:
        return subprocess.Popen([arg.format(fd=fd) for arg in argv], pass_fds=(fd,), **popen)
    finally:
        sock.close()


def unused_port() -> int:
    """A port nothing listens on now (bound and closed at once): for "connection refused"
    cases, and for servers that cannot inherit a socket (nats-server, see ``natskit``)."""
    with loopback_listener() as sock:
        return port_of(sock)


MOTO_ON_FD = Path(__file__).resolve().parent / "moto_on_fd.py"


@contextmanager
def run_moto(log: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A moto server (S3, IAM, STS) on a loopback socket bound here; yields its URL, stops it
    after."""
    sock = loopback_listener()
    url = f"http://127.0.0.1:{port_of(sock)}"
    with log.open("wb") as out:
        process = spawn_on(
            sock,
            [sys.executable, str(MOTO_ON_FD), "{fd}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
        )

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
                return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    try:
        wait_for(answers, 30, f"moto_server on {url} (log: {log})")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def unique_batch(device: int, seq: int, events: int = 3) -> dict[str, Any]:
    """A batch whose events carry ids unique across the test: (device, seq, index)."""
    return {
        "source_request_id": f"req-{device}-{seq}",
        "environment": "production",
        "mpid": 1000 + device,
        "device_info": {"android_uuid": f"device-{device}"},
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "tick",
                    "custom_event_type": "other",
                    "event_id": device * 1_000_000 + seq * 100 + index,
                    "timestamp_unixtime_ms": 1_700_000_000_000 + seq,
                },
            }
            for index in range(events)
        ],
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def service_config(
    *,
    port: int,
    spool: Path,
    bucket: str,
    endpoint: str,
    connection: str = "",
    server: str = "",
    spool_extra: str = "",
    delivery: str = "",
    batch_window: str = "0.5s",
) -> str:
    """A TOML config: one input, one S3 connection to ``endpoint`` (moto or the proxy)."""
    if WORKERS > 1 and "workers" not in server:
        server = f"workers = {WORKERS}\n{server}"
    return f"""
[server]
listen = "127.0.0.1:{port}"
{server}

[spool]
path = "{spool}"
{spool_extra}

[delivery]
backoff_base = "0.05s"
backoff_cap = "0.5s"
permanent_retry_interval = "1s"
unhealthy_after = "1s"
{delivery}

[inputs.app]
api_key = "{API_KEY}"
api_secret = "${{S3F_TEST_SECRET}}"
app_name = "TestApp"

[connections.s3]
inputs = ["app"]
s3_bucket_name = "{bucket}"
endpoint_url = "{endpoint}"
force_path_style = true
access_key_id = "testing"
secret_access_key = "testing"
store_data_in_folders_by_date = "upload_time"
batch_window = "{batch_window}"
{connection}
"""


class ServiceProcess:
    """``s3forward serve --config FILE --fd N`` in a subprocess, on the socket ``listener``.

    The first start serves on ``listener``; a restart binds the same port again (the earlier
    process is gone, so the port is free) and hands that socket over the same way.
    """

    def __init__(self, workdir: Path, config_text: str, listener: socket.socket) -> None:
        self.workdir = workdir
        self.port = port_of(listener)
        self._listener: socket.socket | None = listener
        self.config_path = workdir / "s3forward.toml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release_port(self) -> None:
        """Close the socket held for the first start, for a test of a server that binds the
        port of its config itself."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def start(self, timeout: float = 20.0) -> None:
        self._spawn(("--grace", "5"), {**os.environ, "S3F_TEST_SECRET": API_SECRET})
        wait_for(self._answers, timeout, f"the service on port {self.port} (log: {self.log_path})")

    def _spawn(self, args: tuple[str, ...], env: Mapping[str, str], **popen: Any) -> None:
        sock = self._listener or loopback_listener(self.port)
        self._listener = None
        self.starts += 1
        executable = Path(sys.executable).parent / "s3forward"
        argv = [str(executable), "serve", "--config", str(self.config_path), "--fd", "{fd}"]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            self.process = spawn_on(
                sock,
                [*argv, *args],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                **popen,
            )

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited early: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill9(self) -> None:
        assert self.process is not None
        workers = self.http_workers() if self.process.poll() is None else []
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        # HTTP workers (issue 10) exit once they see the engine gone; until then they hold
        # the listening port that a restart binds again.
        wait_for(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
            10,
            f"the HTTP workers {workers} to exit",
        )

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def http_workers(self) -> list[int]:
        """The pids of the HTTP worker processes (``[server] workers`` > 1), by index."""
        assert self.process is not None
        found: dict[int, int] = {}
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"s3forward.multicore.worker" in argv:
                    found[int(argv[argv.index(b"--index") + 1])] = int(child)
        return [found[i] for i in sorted(found)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -------------------------------------------------------------- HTTP

    def post(
        self,
        path: str,
        payload: Any,
        *,
        auth: tuple[str, str] | None = (API_KEY, API_SECRET),
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], Any]:
        body = raw if raw is not None else orjson.dumps(payload)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            if auth is not None:
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                all_headers["Authorization"] = f"Basic {token}"
            conn.request("POST", path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            parsed = orjson.loads(data) if data else None
            return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
        finally:
            conn.close()

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()


def bucket_lines(s3: Any, bucket: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Every object key in ``bucket`` and every NDJSON line of every object, parsed."""
    import gzip

    keys: list[str] = []
    lines: list[dict[str, Any]] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            keys.append(item["Key"])
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if item["Key"].endswith(".gz"):
                body = gzip.decompress(body)
            lines.extend(orjson.loads(line) for line in body.splitlines() if line)
    return keys, lines


# ------------------------------------------------------------------------------ fault proxy


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` that injects S3 failures.

    ``down()`` closes the listening socket (connection refused, like a network outage) and
    ``up()`` opens it again on the same port. ``slowdown`` and ``reset`` are the probabilities
    that a request is answered with 503 SlowDown or has its connection reset instead of being
    forwarded. Only requests that are forwarded reach the S3 server.
    """

    def __init__(self, upstream: str, *, seed: int = 7) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self._listener: socket.socket | None = loopback_listener()
        self.port = port_of(self._listener)
        self.slowdown = 0.0
        self.reset = 0.0
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"forwarded": 0, "slowdown": 0, "reset": 0}
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    roll = proxy.rng.random()
                    if roll < proxy.reset:
                        fault = "reset"
                    elif roll < proxy.reset + proxy.slowdown:
                        fault = "slowdown"
                    else:
                        fault = "forwarded"
                    proxy.counts[fault] += 1
                if fault == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "slowdown":
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    headers["Host"] = f"{proxy.upstream[0]}:{proxy.upstream[1]}"
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        # First up: on the socket bound at construction; after a down(): the same port again.
        sock = self._listener or loopback_listener(self.port)
        self._listener = None
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", self.port), Handler, bind_and_activate=False
        )
        server.socket.close()
        server.socket = sock
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
