"""How a batch body is stored: as JSON, or compressed (issue 10).

Ingest compresses each batch's JSON before it queues the batch for the writer (on the thread
that already holds the GIL for validation), the spool stores the bytes with their codec, and
reads (``window_items``, ``replay``) hand back the JSON: the build worker pays for the
decompression, the writer thread never touches it. Rows stored before compression (codec
``JSON``) stay readable as they are.
"""

from __future__ import annotations

from enum import IntEnum

from isal import isal_zlib

COMPRESSION_LEVEL = 0
"""isal's fastest level: about 6 µs for a 4 KB batch, to 44% of its size (level 1: twice the
time, 35%). Small rows fit a page whole; the disk traffic stays under the JSON's size."""


class BodyCodec(IntEnum):
    """The stored form of a batch body; the numbers are what the spool records."""

    JSON = 0
    """The batch's compact JSON as is."""
    ZLIB = 1
    """The JSON as one zlib stream (RFC 1950; any zlib reads it)."""


def compress_body(body: bytes) -> bytes:
    """``body`` in the ``ZLIB`` codec."""
    compressed: bytes = isal_zlib.compress(body, COMPRESSION_LEVEL)
    return compressed


def body_json(codec: int, stored: bytes) -> bytes:
    """The JSON of a stored body. Raises ValueError for a codec this release does not know."""
    if codec == BodyCodec.JSON:
        return stored
    if codec == BodyCodec.ZLIB:
        data: bytes = isal_zlib.decompress(stored)
        return data
    raise ValueError(f"unknown batch body codec {codec}")


__all__ = ["COMPRESSION_LEVEL", "BodyCodec", "body_json", "compress_body"]
