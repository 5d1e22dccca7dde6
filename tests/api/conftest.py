"""Fixtures for the HTTP layer: a recording Intake double and a real uvicorn server.

- ``intake`` (function): a ``RecordingIntake`` that records every submit; set ``error`` to make
  ``submit`` raise it, ``duplicates`` to report duplicates, ``not_ready`` to make ``ready()`` no.
- ``metrics`` (function): a fresh ``Metrics``.
- ``start_api`` (function): a factory ``(*, extra_routes, readiness, **server_settings) ->
  base URL`` that runs an ``IngestApp`` over ``intake`` and ``metrics`` on uvicorn (uvloop +
  httptools) in a background thread on a free 127.0.0.1 port; it stops after the test.
- ``api_url`` (function): ``start_api()`` with default settings.
- ``web_auth`` / ``ios_auth``: ``(api_key, api_secret)`` of the two configured inputs.
- ``serve_app(app)``: the context manager behind ``start_api``, for any ASGI app.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from s3forward.api.app import IngestApp
from s3forward.api.server import make_uvicorn_server
from s3forward.config import Config, InputSettings, Secret, ServerSettings, SpoolSettings
from s3forward.intake import SubmitResult
from s3forward.metrics import Metrics

WEB_KEY, WEB_SECRET = "key-web", "secret-web"
IOS_KEY, IOS_SECRET = "key-ios", "secret-ios"
_STARTUP_TIMEOUT = 10.0


@dataclass
class Submission:
    input_name: str
    batches: list[dict[str, Any]]
    received_at: float


@dataclass
class RecordingIntake:
    """An Intake that keeps what it is given, or raises ``error`` when one is set."""

    submitted: list[Submission] = field(default_factory=list)
    error: BaseException | None = None
    duplicates: int = 0
    not_ready: str | None = None

    async def submit(
        self, input_name: str, batches: list[dict[str, Any]], *, received_at: float
    ) -> SubmitResult:
        if self.error is not None:
            raise self.error
        self.submitted.append(Submission(input_name, batches, received_at))
        return SubmitResult(stored=len(batches) - self.duplicates, duplicates=self.duplicates)

    def ready(self) -> tuple[bool, str]:
        return (self.not_ready is None, self.not_ready or "")

    @property
    def batches(self) -> list[dict[str, Any]]:
        return [b for s in self.submitted for b in s.batches]


def api_config(**server: Any) -> Config:
    """A Config with inputs ``web`` and ``ios`` and the given server settings."""
    return Config(
        inputs={
            "web": InputSettings("web", WEB_KEY, Secret(WEB_SECRET), "WebApp"),
            "ios": InputSettings("ios", IOS_KEY, Secret(IOS_SECRET), "IosApp"),
        },
        connections={},
        server=ServerSettings(**server),
        spool=SpoolSettings(retry_after=7),
    )


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread; yield ``http://127.0.0.1:PORT``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_uvicorn_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn test server did not start")
        time.sleep(0.01)  # waiting for another thread's event loop: no clock to inject
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def intake() -> RecordingIntake:
    """A fresh recording Intake double."""
    return RecordingIntake()


@pytest.fixture
def metrics() -> Metrics:
    """A fresh Metrics with its own registry."""
    return Metrics()


@pytest.fixture
def start_api(intake: RecordingIntake, metrics: Metrics) -> Iterator[Callable[..., str]]:
    """A factory ``(**server_settings) -> base URL``; every server stops after the test."""
    with ExitStack() as stack:

        def start(*, extra_routes: Any = None, readiness: Any = None, **server: Any) -> str:
            app = IngestApp(
                api_config(**server),
                intake,
                metrics,
                extra_routes=extra_routes,
                readiness=readiness,
            )
            return stack.enter_context(serve_app(app))

        yield start


@pytest.fixture
def api_url(start_api: Callable[..., str]) -> str:
    """The base URL of an API server with default settings."""
    return start_api()


@pytest.fixture
def web_auth() -> tuple[str, str]:
    """The key and secret of the ``web`` input."""
    return (WEB_KEY, WEB_SECRET)


@pytest.fixture
def ios_auth() -> tuple[str, str]:
    """The key and secret of the ``ios`` input."""
    return (IOS_KEY, IOS_SECRET)
