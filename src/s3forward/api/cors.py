"""CORS for the Web SDK's endpoints (issue 13): which page origins may read our answers.

A browser only lets a page read an answer (and only then counts an upload as done) when the
answer's ``Access-Control-Allow-Origin`` names the page's origin. So an allow-listed origin is
echoed on *every* answer, errors included: a 422 or 429 the page cannot read looks like a network
failure, and the Web SDK would re-send the batch forever. ``Vary: Origin`` goes on every answer
so that caches never hand one origin's answer to another.

The identity and alias calls send ``Content-Type: application/json`` (and ``x-mp-key``), so the
browser asks first with a preflight ``OPTIONS``; uploads are ``text/plain`` and need none.
An allow-list binds browsers only: any other client can send any ``Origin`` it likes.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

VARY = (b"vary", b"Origin")
PREFLIGHT_MAX_AGE = 7200
"""Seconds a browser may cache a preflight answer (Chromium's own cap is 2 hours)."""
ALLOWED_METHODS = b"GET, POST, OPTIONS"
ALLOWED_HEADERS = b"content-type, x-mp-key"


class OriginPolicy:
    """An allow-list of page origins (``scheme://host[:port]``, compared exactly)."""

    def __init__(self, origins: Iterable[str]) -> None:
        self._origins = frozenset(o.lower().encode("latin-1") for o in origins)

    def allows(self, origin: bytes | None) -> bool:
        return origin is not None and origin.lower() in self._origins

    def answer_headers(self, origin: bytes | None) -> Headers:
        """Headers for every answer to ``origin``: the echo when allowed, always ``Vary``."""
        if self.allows(origin):
            assert origin is not None
            return [(b"access-control-allow-origin", origin), VARY]
        return [VARY]

    def preflight_headers(self, origin: bytes | None) -> Headers:
        """Headers of a successful preflight answer (empty when ``origin`` is not allowed)."""
        if not self.allows(origin):
            return []
        assert origin is not None
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
            VARY,
        ]


__all__ = ["ALLOWED_HEADERS", "PREFLIGHT_MAX_AGE", "VARY", "OriginPolicy"]
