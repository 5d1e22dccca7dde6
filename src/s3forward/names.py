"""One sanitising rule for every name that becomes part of an object key (issue 11).

App Names and Folder Names come from configuration, and both end up in S3 keys, so both are
cleaned by the same rule, segment by segment:

1. surrounding whitespace is removed, and the text is put in Unicode NFC form;
2. letters and digits (any script) and S3's safe punctuation ``- _ . ! * ' ( )`` are kept;
   every other character (spaces, ``\\``, ``/`` inside an App Name, control characters, ``?``,
   ``#`` ...) becomes ``_``;
3. runs of dots collapse to one and leading dots are dropped (no ``..``, no hidden names);
4. the result is cut to a byte limit without splitting a character.

A Folder Name is split on ``/`` (the only separator; a backslash is an ordinary unsafe
character) and each segment is cleaned alone; segments that clean to nothing (``""``, ``.``,
``..``) are dropped. A name or folder that cleans to nothing at all is refused when the
configuration loads (``config.py``), so files never land somewhere the user did not ask for.

Pure, and free of imports from the rest of the package, so that both ``config`` and ``layout``
can use it.
"""

from __future__ import annotations

import re
import unicodedata

SAFE_PUNCTUATION = frozenset("-_.!*'()")
MAX_APP_NAME_CHARS = 100
# 200 bytes of app name + "_" + 20 + "_" + 5 + ".txt.gz" stays under a 255-byte file name.
MAX_APP_NAME_BYTES = 200
MAX_FOLDER_BYTES = 512
MAX_SEGMENT_BYTES = 255

_DOT_RUNS = re.compile(r"\.{2,}")


def truncate(text: str, *, max_chars: int, max_bytes: int) -> str:
    """Cut ``text`` to both limits without splitting a character."""
    text = text[:max_chars]
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def clean_segment(text: str) -> str:
    """Steps 1-3 of the rule for one segment (no length limit)."""
    normal = unicodedata.normalize("NFC", text.strip())
    kept = "".join(ch if ch.isalnum() or ch in SAFE_PUNCTUATION else "_" for ch in normal)
    return _DOT_RUNS.sub(".", kept).lstrip(".")


def clean_app_name(name: str) -> str:
    """The App Name as used in file names; ``""`` when nothing safe is left."""
    return truncate(clean_segment(name), max_chars=MAX_APP_NAME_CHARS, max_bytes=MAX_APP_NAME_BYTES)


def clean_folder(folder: str) -> str:
    """The Folder Name as a key prefix without leading or trailing ``/``; ``""`` for the root."""
    segments = (
        truncate(clean_segment(s), max_chars=MAX_SEGMENT_BYTES, max_bytes=MAX_SEGMENT_BYTES)
        for s in folder.split("/")
    )
    joined = "/".join(s for s in segments if s)
    return truncate(joined, max_chars=MAX_FOLDER_BYTES, max_bytes=MAX_FOLDER_BYTES).strip("/")
