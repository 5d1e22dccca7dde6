"""LocalDirSink: atomic, never-overwriting writes under a root directory."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from s3forward.config import ConnectionSettings, DateFolders, Destination
from s3forward.errors import KeyTakenError, PermanentSinkError, SinkError, TransientSinkError
from s3forward.layout import encode_object
from s3forward.sinks import WriteOutcome, make_sink
from s3forward.sinks.localdir import LocalDirSink, _translate


def _sink(tmp_path: Path) -> LocalDirSink:
    return LocalDirSink(tmp_path / "bucket", "local")


def test_write_creates_the_file_with_its_folders(tmp_path: Path) -> None:
    """A new key becomes a file holding exactly the body, creating missing folders."""
    sink = _sink(tmp_path)
    obj = encode_object("exports/2024-03-01/A_1_00001.txt", b'{"a":1}\n', compress=False)
    assert sink.write(obj) is WriteOutcome.CREATED
    assert (tmp_path / "bucket/exports/2024-03-01/A_1_00001.txt").read_bytes() == b'{"a":1}\n'


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    """After a write (created or refused) only final files remain in the folder."""
    sink = _sink(tmp_path)
    sink.write(encode_object("f/A.txt", b"1\n", compress=False))
    with pytest.raises(KeyTakenError):
        sink.write(encode_object("f/A.txt", b"2\n", compress=False))
    assert sorted(p.name for p in (tmp_path / "bucket/f").iterdir()) == ["A.txt"]


def test_same_object_twice_is_already_present(tmp_path: Path) -> None:
    """Retrying a write of the same bytes to the same key reports it as already there."""
    sink = _sink(tmp_path)
    obj = encode_object("A.txt.gz", b'{"a":1}\n', compress=True)
    assert sink.write(obj) is WriteOutcome.CREATED
    assert sink.write(obj) is WriteOutcome.ALREADY_PRESENT


def test_different_object_under_a_taken_key_is_refused_and_not_overwritten(
    tmp_path: Path,
) -> None:
    """A different body for an existing key raises KeyTakenError and the first bytes remain."""
    sink = _sink(tmp_path)
    sink.write(encode_object("A.txt", b"first\n", compress=False))
    with pytest.raises(KeyTakenError) as caught:
        sink.write(encode_object("A.txt", b"second\n", compress=False))
    assert caught.value.key == "A.txt"
    assert (tmp_path / "bucket/A.txt").read_bytes() == b"first\n"


@pytest.mark.parametrize("key", ["../escape.txt", "/abs.txt", "a//b.txt", "a/./b.txt", "a\\b.txt"])
def test_keys_that_could_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    """Traversal, absolute and empty-segment keys fail permanently and write nothing."""
    sink = _sink(tmp_path)
    with pytest.raises(PermanentSinkError) as caught:
        sink.write(encode_object(key, b"x\n", compress=False))
    assert caught.value.code == "InvalidKey"
    assert not (tmp_path / "escape.txt").exists()


def test_a_symlink_inside_the_root_cannot_lead_writes_outside(tmp_path: Path) -> None:
    """A folder symlinked to elsewhere is refused rather than followed."""
    (tmp_path / "bucket").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "bucket/link").symlink_to(tmp_path / "outside")
    with pytest.raises(PermanentSinkError):
        _sink(tmp_path).write(encode_object("link/A.txt", b"x\n", compress=False))
    assert list((tmp_path / "outside").iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_root_is_a_permanent_error(tmp_path: Path) -> None:
    """A directory this process may not write to is reported as PermissionDenied."""
    root = tmp_path / "bucket"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(PermanentSinkError) as caught:
            LocalDirSink(root, "local").write(encode_object("A.txt", b"x\n", compress=False))
        assert caught.value.code == "PermissionDenied"
    finally:
        root.chmod(0o700)


def test_a_file_where_a_folder_should_be_is_a_permanent_error(tmp_path: Path) -> None:
    """When a path segment is an existing file, the write fails permanently with a clear code."""
    root = tmp_path / "bucket"
    root.mkdir()
    (root / "f").write_bytes(b"")
    with pytest.raises(PermanentSinkError) as caught:
        LocalDirSink(root, "local").write(encode_object("f/A.txt", b"x\n", compress=False))
    assert caught.value.code == "NotADirectory"


def test_concurrent_writes_of_one_object_create_it_once(tmp_path: Path) -> None:
    """Eight threads writing the same object: one CREATED, the rest ALREADY_PRESENT."""
    sink = _sink(tmp_path)
    obj = encode_object("d/e/A.txt", b"same\n" * 1000, compress=False)
    outcomes: list[WriteOutcome] = []
    lock = threading.Lock()

    def write() -> None:
        outcome = sink.write(obj)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(WriteOutcome.CREATED) == 1
    assert outcomes.count(WriteOutcome.ALREADY_PRESENT) == 7
    assert (tmp_path / "bucket/d/e/A.txt").read_bytes() == obj.body


def test_make_sink_builds_a_local_sink_for_localdir_connections(tmp_path: Path) -> None:
    """A localdir connection gets a LocalDirSink writing under its local_path."""
    settings = ConnectionSettings(
        name="local",
        inputs=("in",),
        s3_bucket_name="",
        destination=Destination.LOCALDIR,
        local_path=tmp_path / "out",
        store_data_in_folders_by_date=DateFolders.NONE,
    )
    sink = make_sink(settings)
    assert isinstance(sink, LocalDirSink)
    assert sink.name == "local"
    sink.write(encode_object("A.txt", b"x\n", compress=False))
    sink.close()
    assert (tmp_path / "out/A.txt").read_bytes() == b"x\n"


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (errno.ENOSPC, TransientSinkError, "DiskFull"),
        (errno.EDQUOT, TransientSinkError, "DiskFull"),
        (errno.EACCES, PermanentSinkError, "PermissionDenied"),
        (errno.EROFS, PermanentSinkError, "ReadOnlyFileSystem"),
        (errno.EIO, TransientSinkError, "IOError"),
    ],
)
def test_os_errors_map_to_transient_or_permanent(
    tmp_path: Path, error: int, kind: type[SinkError], code: str
) -> None:
    """A full disk is retried soon; permissions and read-only disks need an operator."""
    translated = _translate(OSError(error, os.strerror(error), str(tmp_path)), tmp_path)
    assert type(translated) is kind
    assert translated.code == code
    assert str(tmp_path) in str(translated)
