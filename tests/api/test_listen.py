"""The listening socket: bound by s3forward, or inherited with ``serve --fd`` and checked."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3forward.api.listen import bind_listener, inherited_listener, url_of
from s3forward.cli import main
from s3forward.errors import ConfigError


def test_a_bound_listener_takes_connections_before_anyone_accepts() -> None:
    with bind_listener("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # queued in the backlog: not refused although nothing accepted yet


def test_binding_a_port_in_use_raises_oserror() -> None:
    with (
        bind_listener("127.0.0.1", 0) as first,
        pytest.raises(OSError, match="in use"),
    ):
        bind_listener("127.0.0.1", first.getsockname()[1])


def test_a_restarted_server_binds_the_port_its_predecessor_served_on() -> None:
    first = bind_listener("127.0.0.1", 0)
    port = first.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=2)
    accepted, _ = first.accept()
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT
    client.close()
    first.close()
    with bind_listener("127.0.0.1", port) as again:
        assert again.getsockname()[1] == port


def test_an_inherited_listener_is_the_same_socket() -> None:
    with bind_listener("127.0.0.1", 0) as original:
        inherited = inherited_listener(os.dup(original.fileno()))
        try:
            assert inherited.getsockname() == original.getsockname()
            assert url_of(inherited) == f"http://127.0.0.1:{original.getsockname()[1]}"
        finally:
            inherited.close()


def test_an_ipv6_listener_url_brackets_the_address() -> None:
    try:
        sock = bind_listener("::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with sock:
        assert url_of(sock, "https") == f"https://[::1]:{sock.getsockname()[1]}"


def test_a_descriptor_that_is_not_open_is_refused_by_number() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(ConfigError, match=rf"--fd {fd}: is not an open socket"):
        inherited_listener(fd)


def test_a_file_descriptor_is_refused_and_left_open(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "file", os.O_CREAT | os.O_RDWR)
    try:
        with pytest.raises(ConfigError, match=rf"--fd {fd}: is not"):
            inherited_listener(fd)
        os.fstat(fd)  # still open: not ours to close
    finally:
        os.close(fd)


def test_a_socket_that_is_not_listening_is_refused_and_left_open() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(ConfigError, match="is not listening"):
            inherited_listener(sock.fileno())
        assert sock.fileno() >= 0


def test_a_udp_socket_is_refused() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        pytest.raises(ConfigError, match="is not a TCP"),
    ):
        inherited_listener(sock.fileno())


def test_a_unix_socket_is_refused(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(tmp_path / "s"))
        sock.listen()
        with pytest.raises(ConfigError, match="is not an IPv4 or IPv6 socket"):
            inherited_listener(sock.fileno())


def test_serve_refuses_a_bad_fd_with_usage_exit_and_the_reason() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        result = CliRunner().invoke(main, ["serve", "--fd", str(fd)])
    finally:
        os.close(fd)
    assert result.exit_code == 2
    assert f"--fd {fd}: is not" in result.output


def test_serve_refuses_listen_and_fd_together() -> None:
    result = CliRunner().invoke(main, ["serve", "--listen", "127.0.0.1:1", "--fd", "3"])
    assert result.exit_code == 2
    assert "give --listen or --fd, not both" in result.output
