"""Object keys, date folders, NDJSON and gzip: what a sealed file looks like in the bucket.

Everything here is pure. A key has the seed's shape::

    [<folder>/][<YYYY-MM-DD>/]<App Name>_<UTC yyyyMMddHHmmssffffff>_<5 digits>.txt[.gz]

App names and folders come from configuration, and are sanitised by the one rule in
``names.py`` so that no key can escape its folder. Lengths are capped in UTF-8 bytes as well as
characters, so that a key always fits S3's 1024-byte limit and every path segment fits a
255-byte file-system name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from s3forward.config import DateFolders
from s3forward.names import clean_app_name, clean_folder

CONTENT_TYPE = "text/plain; charset=utf-8"
GZIP_ENCODING = "gzip"
FALLBACK_APP_NAME = "app"
MAX_DIGITS = 99_999
# isal level 2 is its default: much faster than zlib level 6 at a similar ratio for JSON.
ISAL_LEVEL = 2
STDLIB_GZIP_LEVEL = 6

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sanitize_app_name(name: str) -> str:
    """Make an App Name safe for use in a file name (the rule in ``names.py``).

    At most 100 characters and 200 UTF-8 bytes. Configuration refuses a name that cleans to
    nothing; should one reach here anyway, it becomes ``"app"``.
    """
    return clean_app_name(name) or FALLBACK_APP_NAME


def sanitize_folder(folder: str) -> str:
    """Make a Folder Name safe as a key prefix (the rule in ``names.py``); ``""`` is the root.

    Split on ``/``; each segment is cleaned like an App Name and at most 255 bytes; segments
    that clean to nothing are dropped; the whole is at most 512 UTF-8 bytes.
    """
    return clean_folder(folder)


def file_name(app_name: str, sealed_at: datetime, digits: int, *, compressed: bool) -> str:
    """``<App>_<UTC yyyyMMddHHmmssffffff>_<5 digits>.txt`` (``.txt.gz`` when compressed).

    ``sealed_at`` must be timezone-aware (a naive time would silently use the host's zone);
    ``digits`` must be 0..99999. ``app_name`` is sanitised here.
    """
    if sealed_at.tzinfo is None or sealed_at.utcoffset() is None:
        raise ValueError(f"sealed_at must be timezone-aware, got naive {sealed_at.isoformat()}")
    if not 0 <= digits <= MAX_DIGITS:
        raise ValueError(f"digits must be from 0 to {MAX_DIGITS}, got {digits}")
    stamp = sealed_at.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    suffix = ".txt.gz" if compressed else ".txt"
    return f"{sanitize_app_name(app_name)}_{stamp}_{digits:05d}{suffix}"


def _utc_date(unix_ms: int) -> str | None:
    """``YYYY-MM-DD`` in UTC, or None when the timestamp is outside the calendar's range."""
    try:
        return (_EPOCH + timedelta(milliseconds=unix_ms)).strftime("%Y-%m-%d")
    except OverflowError:
        return None


def date_folder(
    mode: DateFolders, *, first_event_ms: int | None, first_received_ms: int
) -> str | None:
    """The ``YYYY-MM-DD`` (UTC) folder for a file, or None for no date folder.

    ``first_event_ms`` is the timestamp of the first event of the first batch in the file (None
    when it has none); ``first_received_ms`` is when the first batch was received. An event time
    outside years 1..9999 counts as no event time.
    """
    event_date = _utc_date(first_event_ms) if first_event_ms is not None else None
    if mode is DateFolders.NONE:
        return None
    if mode is DateFolders.EVENT_TIME:
        return event_date
    if mode is DateFolders.UPLOAD_TIME:
        return _utc_date(first_received_ms)
    if mode is DateFolders.EVENT_TIME_OR_UPLOAD_TIME:
        return event_date or _utc_date(first_received_ms)
    raise ValueError(f"store_data_in_folders_by_date must be chosen, got {mode.value!r}")


def object_key(
    *,
    folder_name: str,
    date_folders: DateFolders,
    app_name: str,
    sealed_at: datetime,
    digits: int,
    first_event_ms: int | None,
    first_received_ms: int,
    compressed: bool,
) -> str:
    """The full key ``[folder/][date/]file``; see ``file_name`` and ``date_folder``."""
    parts = [
        sanitize_folder(folder_name),
        date_folder(
            date_folders, first_event_ms=first_event_ms, first_received_ms=first_received_ms
        ),
        file_name(app_name, sealed_at, digits, compressed=compressed),
    ]
    return "/".join(p for p in parts if p)


def encode_ndjson(records: Iterable[dict[str, Any]]) -> bytes:
    """One compact JSON object per line, each line ending in ``\\n``, keys in their given order.

    Raises ``TypeError`` (orjson.JSONEncodeError) for values JSON cannot hold, such as integers
    beyond 64 bits or non-string keys.
    """
    return b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records)


def gzip_compress(data: bytes) -> bytes:
    """Standard gzip (RFC 1952) with mtime 0, so the same input gives the same bytes."""
    try:
        from isal import igzip  # noqa: PLC0415 - optional accelerator, checked at call time
    except ImportError:  # pragma: no cover - isal is a declared dependency
        import gzip  # noqa: PLC0415

        return gzip.compress(data, compresslevel=STDLIB_GZIP_LEVEL, mtime=0)
    compressed: bytes = igzip.compress(data, compresslevel=ISAL_LEVEL, mtime=0)
    return compressed


@dataclass(frozen=True, slots=True)
class EncodedObject:
    """A file ready for a sink: its key, exact bytes and the headers stored with it."""

    key: str
    body: bytes
    content_type: str
    content_encoding: str | None
    sha256: str

    def __repr__(self) -> str:  # the body can be megabytes: keep logs readable
        return (
            f"EncodedObject(key={self.key!r}, size={len(self.body)}, "
            f"content_encoding={self.content_encoding!r}, sha256={self.sha256[:12]}...)"
        )


def encode_object(key: str, lines: bytes, *, compress: bool) -> EncodedObject:
    """Wrap NDJSON ``lines`` for ``key``, gzipping them when ``compress`` is set.

    The key's suffix must agree with ``compress`` (``.txt.gz`` iff compressed), so that a
    reader can trust the name.
    """
    if compress != key.endswith(".gz"):
        raise ValueError(f"key {key!r} does not match compress={compress}")
    body = gzip_compress(lines) if compress else lines
    return EncodedObject(
        key=key,
        body=body,
        content_type=CONTENT_TYPE,
        content_encoding=GZIP_ENCODING if compress else None,
        sha256=hashlib.sha256(body).hexdigest(),
    )


__all__ = [
    "CONTENT_TYPE",
    "GZIP_ENCODING",
    "EncodedObject",
    "date_folder",
    "encode_ndjson",
    "encode_object",
    "file_name",
    "gzip_compress",
    "object_key",
    "sanitize_app_name",
    "sanitize_folder",
]
