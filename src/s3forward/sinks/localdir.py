"""A directory on local disk as a bucket: the embedded default, and handy for tests.

Each key becomes a file under ``root``. A write is atomic and durable: the body goes to a
temporary file in the target directory, is fsync'd, then hard-linked to its final name (which
fails if the name exists, so nothing is ever overwritten), and the directory is fsync'd. A crash
can leave a ``.s3forward-*.tmp`` file behind, never a partial object.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from s3forward.errors import KeyTakenError, PermanentSinkError, SinkError, TransientSinkError
from s3forward.layout import EncodedObject
from s3forward.sinks.base import WriteOutcome

_TMP_PREFIX = ".s3forward-"
_TMP_SUFFIX = ".tmp"
_CHUNK = 1024 * 1024

# Why each errno is (or is not) worth retrying soon.
_PERMANENT_ERRNOS = {
    errno.EACCES: "PermissionDenied",  # an operator must fix ownership or modes
    errno.EPERM: "PermissionDenied",
    errno.EROFS: "ReadOnlyFileSystem",
    errno.ENAMETOOLONG: "NameTooLong",
    errno.ENOTDIR: "NotADirectory",  # a file sits where a folder should be
    errno.EEXIST: "NotADirectory",  # the same, met while creating the folder
}
_TRANSIENT_ERRNOS = {
    errno.ENOSPC: "DiskFull",  # space may be freed; the data is safe in the spool meanwhile
    errno.EDQUOT: "DiskFull",
}


class LocalDirSink:
    """Writes each object as ``root/<key>``. Keys resolving outside ``root`` are refused."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self._root = Path(os.path.abspath(root))

    def write(self, obj: EncodedObject) -> WriteOutcome:
        """See ``Sink.write``; compares an existing file's content hash with ``obj.sha256``."""
        try:
            target = self._target(obj.key)
            self._ensure_dir(target.parent)
            tmp = self._write_temp(target.parent, obj.body)
            try:
                created = self._link(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            if not created:
                outcome = self._compare_existing(target, obj)
                # An earlier attempt may have linked the file and failed before its directory
                # entry was made durable: make sure now, before it counts as delivered.
                _fsync_dir(target.parent)
                return outcome
            _fsync_dir(target.parent)
        except OSError as exc:
            raise _translate(exc, self._root) from exc
        return WriteOutcome.CREATED

    def close(self) -> None:
        """Nothing to release: every write opens and closes its own files."""

    def _target(self, key: str) -> Path:
        """The file for ``key``; refuses anything that could land outside ``root``."""
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or "\x00" in key
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise PermanentSinkError(
                f"refusing object key {key!r}: it is empty, absolute or has empty, '.' or '..' "
                f"segments, so it could land outside {self._root}",
                code="InvalidKey",
            )
        target = self._root.joinpath(*parts)
        # Defence in depth: a symlink inside root must not lead the write elsewhere.
        if not target.parent.resolve().is_relative_to(self._root.resolve()):
            raise PermanentSinkError(
                f"refusing object key {key!r}: its folder resolves outside {self._root}",
                code="InvalidKey",
            )
        return target

    def _ensure_dir(self, directory: Path) -> None:
        """Create ``directory`` and its missing parents, fsyncing each new entry's parent."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue  # another thread made it
            _fsync_dir(path.parent)

    @staticmethod
    def _write_temp(directory: Path, body: bytes) -> Path:
        fd, name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=directory)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    @staticmethod
    def _link(tmp: Path, target: Path) -> bool:
        """Give ``tmp`` its final name; False when the name is already taken."""
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True

    @staticmethod
    def _compare_existing(target: Path, obj: EncodedObject) -> WriteOutcome:
        digest = hashlib.sha256()
        with target.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() == obj.sha256:
            return WriteOutcome.ALREADY_PRESENT
        raise KeyTakenError(obj.key)


def _fsync_dir(directory: Path) -> None:
    """Make a directory entry (a new file or folder inside it) survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate(exc: OSError, root: Path) -> SinkError:
    """The one place OS errors become sink errors."""
    reason = exc.strerror or type(exc).__name__
    where = exc.filename or root
    if exc.errno in _TRANSIENT_ERRNOS:
        code = _TRANSIENT_ERRNOS[exc.errno]
        return TransientSinkError(
            f"cannot write under {root}: {reason} ({where}); free some space", code=code
        )
    if exc.errno in _PERMANENT_ERRNOS:
        code = _PERMANENT_ERRNOS[exc.errno]
        return PermanentSinkError(
            f"cannot write under {root}: {reason} ({where}); check that the directory exists, "
            "is writable by this process and is not on a read-only file system",
            code=code,
        )
    return TransientSinkError(f"cannot write under {root}: {reason} ({where})", code="IOError")


__all__ = ["LocalDirSink"]
