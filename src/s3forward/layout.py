"""Object keys, date folders, NDJSON and gzip: what a sealed file looks like in the bucket.

Everything here is pure. A key has the seed's shape::

    [<folder>/][<YYYY-MM-DD>/]<App Name>_<UTC yyyyMMddHHmmssffffff>_<5 digits>.txt[.gz]

App names and folders come from configuration, but they are still sanitised so that no key can
escape its folder: ``/``, ``\\``, ``..``, control characters and other characters S3 asks users to
avoid are replaced or dropped. Lengths are capped in UTF-8 bytes as well as characters, so that a
key always fits S3's 1024-byte limit and every path segment fits a 255-byte file-system name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from s3forward.config import DateFolders

CONTENT_TYPE = "text/plain; charset=utf-8"
GZIP_ENCODING = "gzip"
FALLBACK_APP_NAME = "app"
MAX_APP_NAME_CHARS = 100
# 200 bytes of app name + "_" + 20 + "_" + 5 + ".txt.gz" stays under a 255-byte file name.
MAX_APP_NAME_BYTES = 200
MAX_FOLDER_BYTES = 512
MAX_SEGMENT_BYTES = 255
MAX_DIGITS = 99_999
# isal level 2 is its default: much faster than zlib level 6 at a similar ratio for JSON.
ISAL_LEVEL = 2
STDLIB_GZIP_LEVEL = 6

_APP_NAME_EXTRA = frozenset("-_.")
# S3's "safe characters" (plus a space inside a folder segment, which S3 allows).
_FOLDER_EXTRA = frozenset("-_.!*'() ")
_DOT_RUNS = re.compile(r"\.{2,}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _clean(text: str, extra: frozenset[str]) -> str:
    """Keep letters, digits and ``extra``; every other character becomes ``_``."""
    normal = unicodedata.normalize("NFC", text)
    kept = "".join(ch if ch.isalnum() or ch in extra else "_" for ch in normal)
    # ".." anywhere could read as a parent directory; a leading dot hides files.
    return _DOT_RUNS.sub(".", kept).lstrip(".")


def _truncate(text: str, *, max_chars: int, max_bytes: int) -> str:
    """Cut ``text`` to both limits without splitting a character."""
    text = text[:max_chars]
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_app_name(name: str) -> str:
    """Make an App Name safe for use in a file name.

    Letters and digits (any script), ``-``, ``_`` and ``.`` are kept; anything else, including
    ``/`` and control characters, becomes ``_``. Runs of dots collapse to one and leading dots
    are dropped. The result is at most 100 characters and 200 UTF-8 bytes; an empty result is
    ``"app"``.
    """
    cleaned = _truncate(
        _clean(name, _APP_NAME_EXTRA), max_chars=MAX_APP_NAME_CHARS, max_bytes=MAX_APP_NAME_BYTES
    )
    return cleaned or FALLBACK_APP_NAME


def _sanitize_segment(segment: str) -> str:
    # Spaces may shield a leading dot from _clean, so strip both again once spaces are gone.
    cleaned = _clean(segment, _FOLDER_EXTRA).strip(" ").lstrip(". ")
    return _truncate(cleaned, max_chars=MAX_SEGMENT_BYTES, max_bytes=MAX_SEGMENT_BYTES).rstrip(" ")


def sanitize_folder(folder: str) -> str:
    """Make a Folder Name safe as a key prefix; ``""`` means the bucket's root.

    The folder is split on ``/`` and ``\\``; empty, ``.`` and ``..`` segments are dropped and each
    remaining segment is cleaned like an App Name (S3's safe punctuation ``!*'()`` and inner
    spaces are also kept). Segments are rejoined with ``/`` with no leading or trailing slash.
    The result is at most 512 UTF-8 bytes, each segment at most 255.
    """
    segments = (
        _sanitize_segment(s) for s in re.split(r"[/\\]", folder) if s not in ("", ".", "..")
    )
    joined = "/".join(s for s in segments if s)
    return _truncate(joined, max_chars=MAX_FOLDER_BYTES, max_bytes=MAX_FOLDER_BYTES).strip("/ ")


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
