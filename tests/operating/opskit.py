"""Real-process helpers for the operating tests (issue 12): the service with extra arguments and
environment, over HTTP or HTTPS, and a /metrics reader. (Not in conftest.py: several test
directories have a conftest module, so ``from conftest import`` would be ambiguous.)"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from servicekit import API_SECRET, ServiceProcess, wait_for

EXECUTABLE = Path(sys.executable).parent / "s3forward"


class OpsService(ServiceProcess):
    """``s3forward serve`` with extra CLI arguments and environment, in its own session."""

    def __init__(
        self,
        workdir: Path,
        config_text: str,
        listener: socket.socket,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(workdir, config_text, listener)
        self.args = args
        self.extra_env = env or {}
        self.ssl_context = ssl_context

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "S3F_TEST_SECRET": API_SECRET, **self.extra_env}
        self._spawn(self.args, env, start_new_session=True)
        wait_for(self._answers, timeout, f"the service on port {self.port} (log: {self.log_path})")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the service exited early: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(
                f"{self.url}/healthz", timeout=1, context=self.ssl_context
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
            return False

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"{self.url}{path}", timeout=timeout, context=self.ssl_context
            ) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def reload_command(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "S3F_TEST_SECRET": API_SECRET, **self.extra_env}
        return subprocess.run(
            [str(EXECUTABLE), "reload", "--config", str(self.config_path)],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.get("/metrics")
        assert status == 200
        return sum(
            s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            assert self.process is not None
            self.process.wait(30)
