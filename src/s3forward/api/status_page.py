"""The status page: ``GET /`` (HTML), ``GET /status.js`` (its script) and ``GET /status.json``.

The page is one static HTML file and one script shipped inside the package (no build step, no
external requests); the script polls ``/status.json`` and draws small SVG charts. The JSON holds
no secret and no event payload (see ``s3forward.status``).

Access: when the server listens on a loopback address, anyone who can reach it is on this
machine and the page is open. On any other address the page and its JSON require the HTTP Basic
credentials (API key and secret) of any configured input, like the Events API itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from importlib import resources

from s3forward.api.app import Handler, Request
from s3forward.api.auth import Authenticator, BadCredentials, MissingCredentials
from s3forward.api.responses import Headers, Response, json_response
from s3forward.config import Config
from s3forward.status import Snapshot

_STATIC = resources.files("s3forward.api") / "static"
_SECURITY_HEADERS: Headers = [
    # Everything the page needs comes from this server; nothing may be framed or fetched elsewhere.
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_CHALLENGE: Headers = [(b"www-authenticate", b'Basic realm="s3forward status", charset="UTF-8"')]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _static(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


def status_routes(
    config: Config, snapshot: Callable[[], Snapshot]
) -> dict[tuple[str, str], Handler]:
    """The routes of the status page, to pass as ``IngestApp(extra_routes=...)``.

    ``snapshot`` is called in a worker thread (it reads the spool) for every ``/status.json``.
    Returns no routes when ``[server] status_page = false``.
    """
    if not config.server.status_page:
        return {}
    auth = None if is_loopback(config.server.host) else Authenticator(config.inputs)
    page = _static("status.html")
    script = _static("status.js")

    def allowed(request: Request) -> Response | None:
        """None when the request may see the page, else the 401/403 answer."""
        if auth is None:
            return None
        try:
            auth.authenticate(request.headers.get(b"authorization"))
        except MissingCredentials:
            return json_response(401, {"error": "credentials required"}, _CHALLENGE)
        except BadCredentials:
            return json_response(403, {"error": "invalid credentials"}, _CHALLENGE)
        return None

    async def html(request: Request) -> Response:
        denied = allowed(request)
        if denied is not None:
            return denied
        return Response(200, page, b"text/html; charset=utf-8", list(_SECURITY_HEADERS))

    async def js(request: Request) -> Response:
        denied = allowed(request)
        if denied is not None:
            return denied
        return Response(200, script, b"text/javascript; charset=utf-8", list(_SECURITY_HEADERS))

    async def status_json(request: Request) -> Response:
        denied = allowed(request)
        if denied is not None:
            return denied
        data = await asyncio.to_thread(snapshot)
        return json_response(200, data, [(b"cache-control", b"no-store")])

    return {("GET", "/"): html, ("GET", "/status.js"): js, ("GET", "/status.json"): status_json}


__all__ = ["is_loopback", "status_routes"]
