"""TLS on ingest (issue 12) with certificates the test makes: HTTPS ingest, renewal on SIGHUP,
a bad renewal keeps the served certificate, and the warning for a clear-text public listen."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opskit import OpsService
from servicekit import API_KEY, API_SECRET, wait_for

pytestmark = pytest.mark.slow


def make_certificate(directory: Path, name: str) -> tuple[Path, Path, int]:
    """A self-signed certificate for 127.0.0.1/localhost: (cert path, key path, serial)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, serial


def served_serial(port: int) -> int:
    """The serial number of the certificate the server presents now (not verified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def post_https(port: int, context: ssl.SSLContext, body: dict[str, object]) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        token = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        conn.request(
            "POST",
            "/v2/events",
            body=orjson.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        return conn.getresponse().status
    finally:
        conn.close()


BATCH = {
    "environment": "production",
    "device_info": {"android_uuid": "d"},
    "events": [
        {"event_type": "custom_event", "data": {"event_name": "e", "custom_event_type": "other"}}
    ],
}


def test_https_ingest_and_a_renewed_certificate_is_served_after_sighup(
    tmp_path: Path, ops_service: Callable[..., OpsService]
) -> None:
    cert, key, first_serial = make_certificate(tmp_path, "first")
    context = ssl.create_default_context(cafile=str(cert))
    service = ops_service(
        ssl_context=context,
        server=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"',
    )
    assert post_https(service.port, context, BATCH) == 202
    assert served_serial(service.port) == first_serial
    # Clear-text HTTP to the TLS port gets no answer from the Events API.
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
        plain.request("GET", "/healthz")
        status = plain.getresponse().status
        plain.close()
        assert status != 200
        raise ConnectionError("answered")
    # Renewal: new files at the same paths, then SIGHUP.
    renewed_cert, renewed_key, renewed_serial = make_certificate(tmp_path, "renewed")
    cert.write_bytes(renewed_cert.read_bytes())
    key.write_bytes(renewed_key.read_bytes())
    service.signal(signal.SIGHUP)
    wait_for(lambda: '"tls_reloaded": true' in service.log(), 60, "the TLS reload")
    assert served_serial(service.port) == renewed_serial
    renewed_context = ssl.create_default_context(cafile=str(renewed_cert))
    assert post_https(service.port, renewed_context, BATCH) == 202
    # A broken renewal (key of another certificate) is rejected; the served one stays.
    _, other_key, _ = make_certificate(tmp_path, "other")
    key.write_bytes(other_key.read_bytes())
    result = service.reload_command()
    assert result.returncode == 2, result.stderr
    assert "tls_cert_file" in result.stderr
    assert served_serial(service.port) == renewed_serial
    assert post_https(service.port, renewed_context, BATCH) == 202


def test_a_tls_config_with_only_a_certificate_is_refused_at_start(tmp_path: Path) -> None:
    import subprocess

    from opskit import EXECUTABLE

    cert, _, _ = make_certificate(tmp_path, "lonely")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\ntls_cert_file = "{cert}"\n[inputs.a]\napi_key = "k"\napi_secret = "s"\n'
        'app_name = "A"\n[connections.c]\ninputs = ["a"]\ndestination = "localdir"\n'
        f'local_path = "{tmp_path}/b"\nstore_data_in_folders_by_date = "none"\n'
    )
    done = subprocess.run(
        [str(EXECUTABLE), "validate-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "tls_key_file" in done.stderr and "TLS needs both" in done.stderr


def test_a_non_loopback_listen_without_tls_warns_at_start(
    ops_service: Callable[..., OpsService],
) -> None:
    service = ops_service(start=False)
    text = service.config_path.read_text()
    service.config_path.write_text(text.replace('listen = "127.0.0.1:', 'listen = "0.0.0.0:'))
    service.start()
    wait_for(lambda: "without TLS" in service.log(), 30, "the clear-text warning")
    loopback = ops_service()
    assert "without TLS" not in loopback.log()


def test_status_reaches_a_tls_server_through_its_config(
    tmp_path: Path, ops_service: Callable[..., OpsService]
) -> None:
    import os
    import subprocess

    from opskit import EXECUTABLE

    cert, key, _ = make_certificate(tmp_path, "status")
    service = ops_service(
        ssl_context=ssl.create_default_context(cafile=str(cert)),
        server=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"',
    )
    done = subprocess.run(
        [str(EXECUTABLE), "status", "--config", str(service.config_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "S3F_TEST_SECRET": API_SECRET},
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["source"] == "server"


def test_turning_tls_off_by_reload_needs_a_restart_and_keeps_serving_https(
    tmp_path: Path, ops_service: Callable[..., OpsService]
) -> None:
    cert, key, serial = make_certificate(tmp_path, "kept")
    context = ssl.create_default_context(cafile=str(cert))
    tls_lines = f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'
    service = ops_service(ssl_context=context, server=tls_lines)
    service.config_path.write_text(service.config_path.read_text().replace(tls_lines, ""))
    result = service.reload_command()
    assert result.returncode == 0, result.stderr
    assert "server.tls" in result.stderr and "next restart" in result.stderr
    assert served_serial(service.port) == serial
    assert post_https(service.port, context, BATCH) == 202
