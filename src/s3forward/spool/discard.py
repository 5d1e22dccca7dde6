"""Letting go of what the spool holds for a connection that is no longer configured.

A connection removed from the config keeps its open windows, sealed windows and undelivered
files in the spool: nothing accepted is ever dropped silently, and configuring a connection of
that name again forwards them. Until then they count against ``spool.max_bytes``. ``discard``
is the operator's explicit way to let them go (``s3forward spool discard``): one transaction
that releases every window of the connection (and each batch no other connection's window still
refers to) and deletes its undelivered files. Delivered history is kept.

The caller decides whether the connection may be discarded (the CLI refuses a configured one);
this module only does it, all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3forward.spool.base import FileState, Spool, SpoolView

_ALL = 2**62
"""A limit that lists everything (the views take a limit)."""


@dataclass(frozen=True, slots=True)
class Held:
    """What the spool holds for one connection."""

    connection: str
    open_windows: int = 0
    sealed_windows: int = 0
    pending_files: int = 0
    file_bytes: int = 0
    """Stored bytes of the undelivered files."""

    @property
    def empty(self) -> bool:
        return not (self.open_windows or self.sealed_windows or self.pending_files)

    def describe(self) -> str:
        return (
            f"connection {self.connection!r}: {self.open_windows} open and "
            f"{self.sealed_windows} sealed windows, {self.pending_files} undelivered files "
            f"({self.file_bytes} bytes)"
        )


def held_by(view: SpoolView, connection: str) -> Held:
    """What ``view`` holds for ``connection``; read-only."""
    files, file_bytes = view.pending_by_connection().get(connection, (0, 0))
    return Held(
        connection=connection,
        open_windows=view.open_windows_by_connection().get(connection, 0),
        sealed_windows=len(view.sealed_windows(_ALL, [connection])),
        pending_files=files,
        file_bytes=file_bytes,
    )


def connections_held(view: SpoolView) -> set[str]:
    """Every connection the spool holds open windows or undelivered files for."""
    return set(view.open_windows_by_connection()) | set(view.pending_by_connection())


def discard(spool: Spool, connection: str) -> Held:
    """Release every window and delete every undelivered file of ``connection``, in one
    transaction (a crash leaves all of it or none). Returns what was discarded."""
    opened = [w for w in spool.open_windows() if w.connection == connection]
    sealed = spool.sealed_windows(_ALL, [connection])
    files = [f for f in spool.files(FileState.PENDING, _ALL) if f.connection == connection]
    held = Held(
        connection=connection,
        open_windows=len(opened),
        sealed_windows=len(sealed),
        pending_files=len(files),
        file_bytes=sum(f.stored_bytes for f in files),
    )
    if held.empty:
        return held
    with spool.write(f"discarding the data of connection {connection!r}") as txn:
        for window in opened + sealed:
            txn.drop_window(window.window_id)
        for file in files:
            txn.discard_file(file.file_id)
    return held


__all__ = ["Held", "connections_held", "discard", "held_by"]
