"""The loopback admin endpoint (issue 12): ``POST /admin/reload`` re-reads the config.

``AdminApp`` wraps the HTTP application. Only requests from a loopback address that carry the
admin token (``Authorization: Bearer TOKEN``) reach the reload; from any other address the path
does not exist (404, answered by the wrapped app). The token is random per start and written,
readable by the service's user only, next to the spool (``<spool path>.admin-token``), so whoever
may read the spool directory may reload: that is what ``s3forward reload`` reads. The wrapped
application can be replaced while serving (``app``): a request keeps the application it started
with, so a reload never cuts a request in flight.
"""

from __future__ import annotations

import hmac
import os
import secrets
import ssl
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from s3forward.api.status_page import is_loopback

RELOAD_PATH = "/admin/reload"
TOKEN_SUFFIX = ".admin-token"  # noqa: S105 - a file name suffix, not a secret

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did, or why it kept the running configuration."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    tls_reloaded: bool = False
    restart_needed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_path(spool_path: Path) -> Path:
    return spool_path.with_name(spool_path.name + TOKEN_SUFFIX)


def write_token(path: Path) -> str:
    """A new random token in ``path`` (mode 0600, replaced atomically)."""
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    temporary.replace(path)
    return token


class AdminApp:
    """ASGI wrapper: the admin route on loopback, everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, token: str, reload: Callable[[], Awaitable[ReloadResult]]
    ) -> None:
        self.app = app
        self._token = token.encode()
        self._reload = reload

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        app = self.app  # this request keeps this application even if a reload swaps it
        if scope.get("type") != "http" or scope.get("path", "").rstrip("/") != RELOAD_PATH:
            await app(scope, receive, send)
            return
        client = scope.get("client") or ("", 0)
        if not is_loopback(str(client[0])):
            await app(scope, receive, send)  # off loopback the route does not exist
            return
        status, body, headers = await self._answer(scope)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if scope.get("method") != "POST":
            return 405, _error("use POST"), [(b"allow", b"POST")]
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            challenge = [(b"www-authenticate", b'Bearer realm="s3forward admin"')]
            return 401, _error("the admin token is required (Authorization: Bearer)"), challenge
        if not hmac.compare_digest(given.strip(), self._token):
            return 403, _error("wrong admin token"), []
        result = await self._reload()
        return (200 if result.ok else 422), orjson.dumps(result.as_dict()), []


def _error(message: str) -> bytes:
    return orjson.dumps({"ok": False, "problems": [message]})


def request_reload(base_url: str, token: str, *, timeout: float = 60.0) -> tuple[int, Any]:
    """POST the reload to a server on this machine; ``(HTTP status, parsed answer)``.

    Over https the certificate is not verified: the request goes to a loopback address and the
    token, not the certificate, authenticates both ends' intent.
    """
    request = urllib.request.Request(  # noqa: S310 - the URL is built from http(s) and loopback
        base_url.rstrip("/") + RELOAD_PATH,
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    context = None
    if base_url.startswith("https://"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return int(response.status), orjson.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return int(exc.code), orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return int(exc.code), {"ok": False, "problems": [body.decode(errors="replace")]}


__all__ = [
    "RELOAD_PATH",
    "AdminApp",
    "ReloadResult",
    "request_reload",
    "token_path",
    "write_token",
]
