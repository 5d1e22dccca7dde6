"""SpoolUsage: how much of ``spool.max_bytes`` the spool uses, kept by the writer thread.

Three parts, so that the cap bounds everything the spool holds, overheads included:

- ``measured``: the spool's real footprint after the last commit (``SpoolView.footprint_bytes``:
  for SQLite, the database pages in use, so page slack, indexes and rows all count);
- ``unbuilt``: the projected size of every file still to be built: its windows' items (the
  outbound line of each batch, or of each event in per-event mode, rounded up to whole pages);
- ``added``: what operations of the commit in progress have added since ``measured``.

Changed only on the writer thread; other threads read a recent value.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE = 4096
_PACKED = 1024
"""Rows smaller than this share pages; larger ones take whole pages, as SQLite stores them."""


def on_disk(size: int) -> int:
    """An upper estimate of the bytes a stored row of ``size`` bytes takes."""
    if size < _PACKED:
        return size + 64
    return -(-(size + 64) // (PAGE - 36)) * PAGE


@dataclass(slots=True)
class SpoolUsage:
    measured: int = 0
    unbuilt: int = 0
    added: int = 0

    @property
    def bytes(self) -> int:
        return self.measured + self.unbuilt + self.added

    def committed(self, footprint: int) -> None:
        """After a commit: the real footprint replaces the running estimate."""
        self.measured = footprint
        self.added = 0
