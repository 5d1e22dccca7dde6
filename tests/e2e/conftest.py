"""Fixtures for whole-service scenarios: a running ``s3forward serve`` against moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servicekit import FaultProxy, ServiceProcess, free_port, service_config


@pytest.fixture
def start_service(
    tmp_path: Path, moto_server: str, bucket: str
) -> Iterator[Callable[..., ServiceProcess]]:
    """A factory that writes a config for ``bucket`` and starts the service on it."""
    started: list[ServiceProcess] = []

    def start(*, endpoint: str | None = None, **sections: str) -> ServiceProcess:
        port = free_port()
        text = service_config(
            port=port,
            spool=tmp_path / "spool" / "spool.db",
            bucket=bucket,
            endpoint=endpoint or moto_server,
            **sections,
        )
        service = ServiceProcess(tmp_path, text, port)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        if service.alive():
            service.kill9()


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto, up and passing everything through."""
    proxy = FaultProxy(moto_server)
    proxy.up()
    yield proxy
    proxy.down()
