"""Fixtures of the operating tests (issue 12); the helpers live in ``opskit``."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from opskit import OpsService
from servicekit import loopback_listener, port_of, service_config


@pytest.fixture
def ops_service(
    tmp_path: Path, moto_server: str, bucket: str
) -> Iterator[Callable[..., OpsService]]:
    """A factory: ``ops_service(args=..., env=..., ssl_context=..., **config sections)``."""
    started: list[OpsService] = []

    def start(
        *,
        args: tuple[str, ...] = ("--grace", "5"),
        env: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        endpoint: str | None = None,
        start: bool = True,
        **sections: Any,
    ) -> OpsService:
        listener = loopback_listener()
        workdir = tmp_path / f"ops-{len(started)}"
        workdir.mkdir()
        text = service_config(
            port=port_of(listener),
            spool=workdir / "spool" / "spool.db",
            bucket=bucket,
            endpoint=endpoint or moto_server,
            **sections,
        )
        service = OpsService(workdir, text, listener, args=args, env=env, ssl_context=ssl_context)
        started.append(service)
        if start:
            service.start()
        return service

    yield start
    for service in started:
        service.release_port()  # one never started still holds its socket
        if service.alive():
            service.kill9()
