"""Discarding what a removed connection left in the spool (``spool discard``), on both backends
and through the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3forward.cli import main
from s3forward.spool.base import FileState, NewFile, Spool
from s3forward.spool.discard import connections_held, discard, held_by
from s3forward.spool.memory import MemorySpool
from s3forward.spool.sqlite import SqliteSpool

NOW = 1_800_000_000.0


def a_file(connection: str, window_id: int) -> NewFile:
    return NewFile(
        connection=connection,
        window_id=window_id,
        key=f"{connection}/file-{window_id}.txt",
        body=b'{"events":[]}\n',
        sha256="0" * 64,
        content_type="text/plain",
        content_encoding=None,
        raw_bytes=14,
        batches=1,
        events=0,
        sealed_at=NOW,
        first_received_ms=int(NOW * 1000),
    )


def fill(spool: Spool) -> dict[str, int]:
    """Two connections reading one input. "gone" has an open window, a sealed window and a
    built file; "kept" has an open window on the same batch as "gone"'s open window."""
    with spool.write("test") as txn:
        shared = txn.append_batch("app", int(NOW * 1000), 1, b'{"a":1}', refs=2)
        only_gone = txn.append_batch("app", int(NOW * 1000), 2, b'{"b":2}', refs=2)
        for window_id, connection, position in [
            (1, "gone", shared),
            (2, "kept", shared),
            (3, "gone", only_gone),
            (4, "gone", only_gone),
        ]:
            txn.open_window(window_id, connection, f"g{window_id}", "app", NOW)
            txn.add_item(window_id, 0, position, None, 100, NOW)
        txn.seal_window(3, NOW, "window_time", 12345)
        txn.seal_window(4, NOW, "window_time", 54321)
    with spool.write("test") as txn:
        txn.store_file(a_file("gone", 4))
    return {"shared": shared, "only_gone": only_gone}


@pytest.fixture(params=["sqlite", "memory"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spool]:
    if request.param == "memory":
        yield MemorySpool()
        return
    store = SqliteSpool.open(tmp_path / "spool.db")
    yield store
    store.close()


def test_what_a_connection_holds_is_counted_without_changing_anything(spool: Spool) -> None:
    fill(spool)
    held = held_by(spool, "gone")
    assert (held.open_windows, held.sealed_windows, held.pending_files) == (1, 1, 1)
    assert held.file_bytes > 0
    assert connections_held(spool) == {"gone", "kept"}
    assert held_by(spool, "gone") == held  # reading changed nothing


def test_discarding_releases_every_window_and_file_of_the_connection_only(spool: Spool) -> None:
    positions = fill(spool)
    done = discard(spool, "gone")
    assert (done.open_windows, done.sealed_windows, done.pending_files) == (1, 1, 1)
    assert held_by(spool, "gone").empty
    assert [w.connection for w in spool.open_windows()] == ["kept"]
    assert spool.sealed_windows(100) == []
    assert spool.files(FileState.PENDING, 100) == []
    # The batch "kept" still refers to stays; the one only "gone" referred to is released.
    stored = [batch.position for batch in spool.replay(0)]
    assert stored == [positions["shared"]]
    assert [item.position for item in spool.window_items(2)] == [positions["shared"]]


def test_discarding_twice_or_an_unknown_connection_changes_nothing(spool: Spool) -> None:
    fill(spool)
    discard(spool, "gone")
    assert discard(spool, "gone").empty
    assert discard(spool, "never-there").empty
    assert connections_held(spool) == {"kept"}


# ------------------------------------------------------------------------------ the CLI


def config_without_gone(tmp_path: Path) -> Path:
    path = tmp_path / "s3forward.toml"
    path.write_text(
        f'[spool]\npath = "{tmp_path / "spool.db"}"\n'
        '[inputs.app]\napi_key = "k"\napi_secret = "s"\napp_name = "App"\n'
        '[connections.kept]\ninputs = ["app"]\ndestination = "localdir"\n'
        f'local_path = "{tmp_path / "bucket"}"\n'
        'store_data_in_folders_by_date = "none"\n'
    )
    return path


@pytest.fixture
def filled_config(tmp_path: Path) -> Path:
    store = SqliteSpool.open(tmp_path / "spool.db")
    fill(store)
    store.close()
    return config_without_gone(tmp_path)


def spool_discard(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["spool", "discard", "--config", str(config), *args])
    return result.exit_code, result.output


def open_held(config: Path) -> tuple[int, int]:
    store = SqliteSpool.open(config.parent / "spool.db")
    try:
        held = held_by(store, "gone")
        return held.open_windows + held.sealed_windows, held.pending_files
    finally:
        store.close()


def test_spool_discard_without_yes_only_says_what_it_would_discard(filled_config: Path) -> None:
    code, output = spool_discard(filled_config, "--connection", "gone")
    assert code == 0
    assert "would discard connection 'gone': 1 open and 1 sealed windows, 1 undelivered" in output
    assert "add --yes" in output
    assert open_held(filled_config) == (2, 1)


def test_spool_discard_with_yes_discards_the_removed_connection(filled_config: Path) -> None:
    code, output = spool_discard(filled_config, "--connection", "gone", "--yes")
    assert code == 0, output
    assert "discarded connection 'gone'" in output
    assert open_held(filled_config) == (0, 0)


def test_spool_discard_refuses_a_configured_connection(filled_config: Path) -> None:
    code, output = spool_discard(filled_config, "--connection", "kept", "--yes")
    assert code == 2
    assert "connection 'kept' is configured" in output


def test_spool_discard_refuses_while_another_process_holds_the_spool(
    filled_config: Path,
) -> None:
    holder = SqliteSpool.open(filled_config.parent / "spool.db")  # as a running server does
    try:
        code, output = spool_discard(filled_config, "--connection", "gone", "--yes")
    finally:
        holder.close()
    assert code == 1
    assert "in use by another s3forward process" in output
    assert "stop the server" in output
    assert open_held(filled_config) == (2, 1)


def test_spool_discard_of_a_connection_with_nothing_names_what_is_held(
    filled_config: Path,
) -> None:
    code, output = spool_discard(filled_config, "--connection", "typo", "--yes")
    assert code == 0
    assert "holds nothing for connection 'typo'; it holds data of: gone" in output


def test_spool_discard_without_a_spool_says_so(tmp_path: Path) -> None:
    code, output = spool_discard(config_without_gone(tmp_path), "--connection", "gone")
    assert code == 1
    assert "there is no spool at" in output
    assert not (tmp_path / "spool.db").exists()


def test_status_names_what_a_removed_connection_left_and_how_to_let_it_go(
    filled_config: Path,
) -> None:
    from s3forward.config import load_config
    from s3forward.status import plain_lines, snapshot_from_spool

    snap = snapshot_from_spool(load_config(filled_config))
    assert snap["spool"]["unconfigured"] == [
        {"name": "gone", "pending_files": 1, "pending_bytes": 14, "open_windows": 1}
    ]
    text = "\n".join(plain_lines(snap))
    assert "held for connection gone (no longer configured): 1 files" in text
    assert "s3forward spool discard --connection gone" in text
    spool_discard(filled_config, "--connection", "gone", "--yes")
    assert snapshot_from_spool(load_config(filled_config))["spool"]["unconfigured"] == []
