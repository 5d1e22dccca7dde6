"""Names of streams, subjects and buckets, and the partition of a batch. Pure."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from s3forward.config import ClusterSettings


def partition_of(input_name: str, device: str, partitions: int) -> int:
    """The partition of a device's batches: crc32, stable across processes and versions.

    (Python's ``hash()`` of a str is salted per process, so it must never be used here.)
    """
    return zlib.crc32(f"{input_name}\x1f{device}".encode()) % partitions


@dataclass(frozen=True, slots=True)
class ClusterNames:
    """Every JetStream name cluster mode uses, derived from ``[cluster] name``."""

    prefix: str
    partitions: int
    streams: int

    @classmethod
    def of(cls, settings: ClusterSettings) -> ClusterNames:
        return cls(settings.name, settings.partitions, settings.streams)

    def data_subject(self, partition: int) -> str:
        return f"{self.prefix}.in.{partition}"

    def data_stream(self, partition: int) -> str:
        """Partitions are spread round-robin over several streams: one Raft leader each."""
        return f"{self.prefix}_IN_{partition % self.streams}"

    def data_streams(self) -> dict[str, list[str]]:
        """Each data stream's name and the subjects it holds."""
        out: dict[str, list[str]] = {}
        for p in range(self.partitions):
            out.setdefault(self.data_stream(p), []).append(self.data_subject(p))
        return out

    @property
    def seal_stream(self) -> str:
        return f"{self.prefix}_SEALS"

    def seal_subject(self, partition: int) -> str:
        return f"{self.prefix}.seal.{partition}"

    @property
    def seal_subjects(self) -> str:
        return f"{self.prefix}.seal.*"

    @property
    def lease_bucket(self) -> str:
        return f"{self.prefix}_leases"

    @property
    def request_bucket(self) -> str:
        return f"{self.prefix}_requests"
