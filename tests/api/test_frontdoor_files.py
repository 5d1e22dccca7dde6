"""The open-files check at start: raise the soft RLIMIT_NOFILE, warn when it stays too low."""

from __future__ import annotations

import resource
import subprocess
import sys

from s3forward.api.frontdoor import FILES_RESERVE, raise_open_files_limit


class FakeLimits:
    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.soft, self.hard = limits


def test_the_soft_limit_is_raised_to_what_max_connections_needs() -> None:
    """A low soft limit under a high hard limit goes up to max_connections + the reserve."""
    limits = FakeLimits(1024, 1_048_576)
    warning = raise_open_files_limit(2000, getrlimit=limits.get, setrlimit=limits.set)
    assert warning is None
    assert limits.soft == 2000 + FILES_RESERVE
    assert limits.hard == 1_048_576


def test_a_hard_limit_below_the_need_gives_a_warning_naming_both_numbers() -> None:
    """The soft limit goes up to the hard limit and the warning says what to change."""
    limits = FakeLimits(256, 1024)
    warning = raise_open_files_limit(1024, getrlimit=limits.get, setrlimit=limits.set)
    assert limits.soft == 1024
    assert warning is not None
    assert "is 1024 (hard limit 1024)" in warning
    assert "server.max_connections = 1024 needs about 1280" in warning


def test_a_high_enough_soft_limit_is_left_alone() -> None:
    limits = FakeLimits(65536, 65536)
    assert raise_open_files_limit(1024, getrlimit=limits.get, setrlimit=limits.set) is None
    assert limits.soft == 65536


def test_the_real_limit_of_a_process_is_raised_and_checked() -> None:
    """With the real system calls, in a child whose hard limit is lowered to 600."""
    script = (
        "import resource\n"
        "from s3forward.api.frontdoor import raise_open_files_limit\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 600))\n"
        "print(raise_open_files_limit(300))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))\n"
        "print(raise_open_files_limit(1000))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "None"
    assert out[1] == "(556, 600)"
    assert out[2].startswith("the open-files limit (RLIMIT_NOFILE) is 600 (hard limit 600)")
