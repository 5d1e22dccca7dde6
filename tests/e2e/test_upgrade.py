"""Upgrade from the previous release's spool: stop, upgrade, start; the spool migrates itself.

The fixture is a spool written by s3forward at 471c56f (schema without a version) holding a
delivered file, pending files, sealed windows not yet built and open windows, for a per-device
and a per-event connection. The new release's `drain` (a real process) migrates it and delivers
everything that was not delivered yet, once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from s3forward.spool.sqlite import SCHEMA_VERSION

FIXTURE = Path(__file__).parent.parent / "fixtures" / "spool-v0.db"
EXE = Path(sys.executable).parent / "s3forward"


def config_for(tmp: Path) -> Path:
    path = tmp / "s3forward.toml"
    path.write_text(
        f"""
[inputs.app]
api_key = "key"
api_secret = "secret-secret"
app_name = "App"

[connections.local]
inputs = ["app"]
destination = "localdir"
local_path = "{tmp}/local"
store_data_in_folders_by_date = "none"

[connections.events]
inputs = ["app"]
destination = "localdir"
local_path = "{tmp}/events"
store_data_in_folders_by_date = "none"
send_as_batch = false

[spool]
path = "{tmp}/spool.db"
"""
    )
    return path


def event_names(folder: Path) -> list[str]:
    names = []
    for file in folder.iterdir():
        for line in file.read_bytes().splitlines():
            names += [e["data"]["event_name"] for e in orjson.loads(line)["events"]]
    return sorted(names)


def test_the_previous_releases_spool_is_migrated_and_everything_undelivered_lands_once(
    tmp_path: Path,
) -> None:
    """Pending files, sealed and open windows of the old spool all land, exactly once; the
    file delivered before the upgrade is not sent again; status shows the new schema."""
    shutil.copy(FIXTURE, tmp_path / "spool.db")
    config = config_for(tmp_path)
    done = subprocess.run(
        [EXE, "drain", "--config", config], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert event_names(tmp_path / "local") == [
        "delivered-one",  # pending in this connection (delivered only in "events")
        "open-a",
        "open-a2",
        "open-b",
        "pending-one",
        "sealed-unbuilt",
    ]
    assert event_names(tmp_path / "events") == [
        "open-a",
        "open-a2",
        "open-b",
        "pending-one",
        "sealed-unbuilt",
    ], "the file delivered before the upgrade is not sent again"
    status = subprocess.run(
        [EXE, "status", "--config", config], check=False, capture_output=True, text=True, timeout=60
    )
    assert f"schema v{SCHEMA_VERSION}" in status.stdout + status.stderr
