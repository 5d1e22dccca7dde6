"""Shared fixtures: a real moto S3 server on loopback, clients and buckets for it.

- ``moto_server`` (session): the server's URL, ``http://127.0.0.1:PORT``.
- ``moto_reset`` (function): a callable that wipes all moto state (buckets, IAM, STS...).
- ``s3_client`` (function): a boto3 S3 client for the server (us-east-1, path style).
- ``bucket`` (function): a fresh ``mp-forwarding-...`` bucket; moto is reset after the test.
- ``s3_connection`` (function): a factory ``(bucket, **overrides) -> ConnectionSettings``
  pointing at the server with user-based keys ``testing``/``testing``.
- ``start_service`` (function): a factory ``(*, endpoint=None, bucket_name=None, **sections)
  -> ServiceProcess`` running ``s3forward serve`` on ``bucket`` (sections as in
  ``servicekit.service_config``); killed after the test.
- ``fault_proxy`` (function): a ``FaultProxy`` in front of moto, up.

``pytest --workers N`` starts every service with ``[server] workers = N`` (issue 10), so the
e2e tiers can be run against the multi-process mode as well.

Every test runs with fake AWS credentials in the environment and no shared config files, so no
test can reach a real AWS account by accident.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from s3forward.config import ConnectionSettings, DateFolders, Secret

sys.path.insert(0, str(Path(__file__).resolve().parent / "e2e"))

import servicekit
from servicekit import (
    FaultProxy,
    ServiceProcess,
    loopback_listener,
    port_of,
    run_moto,
    service_config,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MOTO_REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": MOTO_REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_STARTUP_TIMEOUT = 30.0
_SERVER_FIXTURES = {"moto_server", "start_service", "fault_proxy"}
_SERVER_DIRS = {"e2e", "aws", "ops", "operating", "cluster", "web"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--workers",
        type=int,
        default=1,
        help="[server] workers of the services the e2e tests start (issue 10; default 1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    servicekit.WORKERS = int(config.getoption("workers"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a server process (moto, s3forward) with ``server``, so
    that ``make test-fast`` (``-m "not server"``) runs the in-process tiers only."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        in_server_dir = _SERVER_DIRS & set(Path(str(item.path)).parts)
        if fixtures & _SERVER_FIXTURES or in_server_dir:
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session", autouse=True)
def _fake_aws_environment() -> Iterator[None]:
    """Fake credentials for the whole session; real ones in the environment are hidden."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="session")
def moto_server(
    _fake_aws_environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A moto S3/IAM/STS server on loopback for the whole session; yields its URL."""
    with run_moto(tmp_path_factory.mktemp("moto") / "moto_server.log") as url:
        yield url


def reset_moto(url: str) -> None:
    """Wipe all of moto's state (every bucket, object, IAM user and role)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture
def moto_reset(moto_server: str) -> Callable[[], None]:
    """A callable that wipes all of moto's state."""
    return lambda: reset_moto(moto_server)


def moto_client(url: str, service: str = "s3", **kwargs: Any) -> Any:
    """A boto3 client for ``service`` on the moto server (fake keys, us-east-1, path style)."""
    from botocore.config import Config

    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=url,
        region_name=MOTO_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
        **kwargs,
    )


@pytest.fixture
def s3_client(moto_server: str) -> Iterator[S3Client]:
    """A boto3 S3 client for the moto server."""
    client = moto_client(moto_server)
    yield client
    client.close()


@pytest.fixture
def bucket(moto_server: str, s3_client: S3Client) -> Iterator[str]:
    """A fresh, uniquely named ``mp-forwarding-...`` bucket; moto is wiped after the test."""
    name = f"mp-forwarding-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    reset_moto(moto_server)


@pytest.fixture
def s3_connection(moto_server: str) -> Callable[..., ConnectionSettings]:
    """A factory ``(bucket, **overrides) -> ConnectionSettings`` for the moto server."""

    def make(bucket: str, **overrides: Any) -> ConnectionSettings:
        return s3_connection_settings(moto_server, bucket, **overrides)

    return make


def s3_connection_settings(moto_url: str, bucket: str, **overrides: Any) -> ConnectionSettings:
    """User-based (``testing``/``testing``) settings writing to ``bucket`` on ``moto_url``."""
    values: dict[str, Any] = {
        "name": "test",
        "inputs": ("in",),
        "s3_bucket_name": bucket,
        "access_key_id": Secret("testing"),
        "secret_access_key": Secret("testing"),
        "aws_region_endpoint": MOTO_REGION,
        "endpoint_url": moto_url,
        "force_path_style": True,
        "store_data_in_folders_by_date": DateFolders.NONE,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


@pytest.fixture
def start_service(
    tmp_path: Path, moto_server: str, bucket: str
) -> Iterator[Callable[..., ServiceProcess]]:
    """A factory that writes a config for ``bucket`` (or another) and starts the service."""
    started: list[ServiceProcess] = []

    def start(
        *, endpoint: str | None = None, bucket_name: str | None = None, **sections: str
    ) -> ServiceProcess:
        listener = loopback_listener()
        workdir = tmp_path / f"service-{len(started)}"
        workdir.mkdir()
        text = service_config(
            port=port_of(listener),
            spool=workdir / "spool" / "spool.db",
            bucket=bucket_name or bucket,
            endpoint=endpoint or moto_server,
            **sections,
        )
        service = ServiceProcess(workdir, text, listener)
        service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.release_port()  # one never started still holds its socket
        if service.alive():
            service.kill9()


@pytest.fixture
def fault_proxy(moto_server: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto, up and passing everything through."""
    proxy = FaultProxy(moto_server)
    proxy.up()
    yield proxy
    proxy.down()
